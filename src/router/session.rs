//! Sessions and connections on this shard: HELLO to WELCOME, GOODBYE and
//! ABORT, a session leaving (everything it holds disposed of on every
//! shard), and the dispatch of every message a session sends.

use std::rc::Rc;
use std::sync::Arc;

use ahash::AHashMap;
use tracing::debug;

use super::dealer::{OutgoingCall, PendingInvocation};
use super::options::CancelMode;
use super::{options, CallDone, Concerns, ConnId, RealmIdx, Router, ShardMsg};
use crate::auth::{Action, Decision};
use crate::codec::encode;
use crate::metrics::ShardStats;
use crate::session::outbox::{CloseReason, Outbox, Outgoing};
use crate::wamp::message::Serializer;
use crate::wamp::uri::{UriCheck, UriError};
use crate::wamp::{self, uris, Dict, Id, IdSeq, MatchPolicy, Message, MessageType, Value};

/// Who a session is: what WELCOME said, kept for the features that tell
/// others (caller and publisher identification, the session meta API) and
/// for authorization.
#[derive(Debug, Clone)]
pub struct SessionIdentity {
    pub realm: Arc<str>,
    pub authid: Arc<str>,
    pub authrole: Arc<str>,
    pub authmethod: Arc<str>,
    pub authprovider: Arc<str>,
}

/// The transport a connection came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    WebSocket,
    RawSocket,
    /// The HTTP long-poll transport.
    LongPoll,
    /// A request to the HTTP bridge (or a webhook's subscription).
    Http,
}

/// What the router knows of a connection's transport (for the session meta
/// API and logs).
#[derive(Debug, Clone)]
pub struct TransportInfo {
    pub kind: TransportKind,
    pub serializer: Serializer,
    /// The peer's address, when the socket could tell it.
    pub peer: Option<std::net::SocketAddr>,
    /// Over TLS: what the handshake established.
    pub tls: Option<Arc<super::auth::TlsInfo>>,
    /// WAMP-over-Batched-WebSocket, or a batched long-poll protocol.
    pub batched: bool,
    /// permessage-deflate was negotiated.
    pub compressed: bool,
}

impl TransportInfo {
    /// A transport without a known peer (tests, the fuzz harness, benches).
    pub fn local(kind: TransportKind, serializer: Serializer) -> Self {
        TransportInfo {
            kind,
            serializer,
            peer: None,
            tls: None,
            batched: false,
            compressed: false,
        }
    }

    /// The transport as WELCOME, `wamp.session.get` and the authenticator
    /// describe it: `type` (websocket, rawsocket, longpoll), `serializer`,
    /// `protocol` (the subprotocol, WebSocket and long-poll), `compression`
    /// (when negotiated), `tls`, and `peer` (host:port; absent on a Unix
    /// socket).
    pub fn details(&self) -> Dict {
        let kind = match self.kind {
            TransportKind::WebSocket => "websocket",
            TransportKind::RawSocket => "rawsocket",
            TransportKind::LongPoll => "longpoll",
            TransportKind::Http => "http",
        };
        let mut d = Dict::new()
            .with("type", Value::Str(kind.into()))
            .with("serializer", Value::Str(self.serializer.name().into()));
        if self.kind != TransportKind::RawSocket {
            let protocol = crate::transport::websocket::subprotocol_name(self.serializer, self.batched);
            d.insert("protocol", Value::Str(protocol.into()));
        }
        if self.compressed {
            d.insert("compression", Value::Str("permessage-deflate".into()));
        }
        d.insert("tls", Value::Bool(self.tls.is_some()));
        if let Some(peer) = self.peer {
            d.insert("peer", Value::Str(peer.to_string()));
        }
        d
    }
}

/// Where a connection's session stands. The spec's lifecycle is HELLO →
/// [CHALLENGE → AUTHENTICATE] → WELCOME → GOODBYE / ABORT; anonymous
/// sessions go from `Idle` to `Established` at once (authentication adds
/// its states between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// No session: the next message must be HELLO (again after GOODBYE).
    Idle,
    /// CHALLENGE was sent: the next message must be AUTHENTICATE.
    Challenged,
    /// AUTHENTICATE is being checked on the authentication threads.
    Verifying,
    /// WELCOME was sent: the session with this ID is open.
    Established(Id),
    /// The router closed the session with GOODBYE (a kill): it has left,
    /// and the client's GOODBYE reply ends the connection; anything else
    /// it sends meanwhile is ignored.
    Closing,
}

/// An event a session left to be published when it goes
/// (`wamp.session.add_testament`).
#[derive(Debug)]
pub(super) struct Testament {
    pub(super) topic: String,
    pub(super) payload: crate::wamp::Payload,
    pub(super) options: options::PublishOptions,
    /// `detached` (true) or `destroyed`.
    pub(super) detached: bool,
}

impl Testament {
    /// About the memory it takes: topic, payload, and the receiver lists
    /// and passthru attributes of its options.
    pub(super) fn bytes(&self) -> usize {
        let ppt = self.options.ppt.as_ref().map_or(0, |d| d.0.iter().map(|(k, _)| k.len() + 64).sum());
        self.topic.len() + self.payload.raw.len() + self.options.receivers.as_ref().map_or(0, |r| r.bytes()) + ppt
    }
}

/// What a local session holds.
#[derive(Debug)]
pub(super) struct LocalSession {
    pub(super) realm: RealmIdx,
    /// The connection the session is on.
    pub(super) conn: ConnId,
    pub(super) identity: SessionIdentity,
    /// Its role among the realm's roles (`None`: the realm has no role of
    /// that name; with roles configured it may do nothing).
    pub(super) role: Option<u32>,
    pub(super) transport: TransportInfo,
    pub(super) outbox: Rc<Outbox>,
    pub(super) ser: Serializer,
    /// Subscriptions by pattern; `None` while the change is in flight.
    pub(super) subs: AHashMap<(MatchPolicy, Arc<str>), Option<Id>>,
    pub(super) sub_ids: AHashMap<Id, (MatchPolicy, Arc<str>)>,
    /// Requests that wait for an in-flight subscribe of the same pattern
    /// (and whether each asked for the retained events).
    pub(super) sub_waiters: Vec<((MatchPolicy, Arc<str>), Id, bool)>,
    pub(super) regs: AHashMap<Id, (MatchPolicy, Arc<str>)>,
    pub(super) regs_pending: AHashMap<(MatchPolicy, Arc<str>), Id>,
    pub(super) invocations: AHashMap<Id, PendingInvocation>,
    /// What the session's HELLO announced.
    pub(super) features: Features,
    /// Its registrations (by pattern) that asked for callers to be disclosed.
    pub(super) disclose_caller: ahash::AHashSet<(MatchPolicy, Arc<str>)>,
    pub(super) invocation_ids: IdSeq,
    /// Calls this session made that wait for their RESULT or ERROR, by CALL
    /// request ID.
    pub(super) calls: AHashMap<Id, OutgoingCall>,
    /// As a callee: its progressive call invocations still taking chunks,
    /// by the call's router-wide key, to (INVOCATION request ID,
    /// registration). Only such calls are indexed.
    pub(super) streams: AHashMap<super::dealer::CallKey, (Id, Id)>,
    /// As a caller: request IDs of its progressive call invocations that
    /// ended before their final chunk (bounded, see `forget_call`).
    pub(super) finished_streams: std::collections::VecDeque<Id>,
    /// Its bound, `limits.max_finished_streams`.
    pub(super) finished_cap: usize,
    /// Its CALLs to the router's own procedures still being answered
    /// (bounded by `limits.max_pending_calls` like its other calls).
    pub(super) builtin_calls: usize,
    /// Messages waiting for the realm's authorizer to answer about the
    /// first of them (bounded by `limits.max_pending_calls`).
    pub(super) parked: std::collections::VecDeque<(ConnId, Message)>,
    /// About the bytes they hold (bounded by `limits.max_outbound_bytes`).
    pub(super) parked_bytes: usize,
    /// The authorizer's answer for the first parked message, when it may
    /// not be kept in the cache.
    pub(super) authz_once: Option<(super::auth::AuthzKey, Decision)>,
    /// Its testaments, published when it leaves (`detached` first, then
    /// `destroyed`), and their bytes (bounded by `limits.max_testament_bytes`).
    pub(super) testaments: Vec<Testament>,
    /// Live events held back until the retained events of a new
    /// subscription are delivered (one entry per `get_retained` in flight).
    pub(super) held: std::cell::RefCell<Vec<super::broker::Held>>,
    /// Numbers the retained-event fetches of this session.
    pub(super) fetches: u64,
    pub(super) testament_bytes: usize,
    pub(super) goodbye_sent: bool,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) outbox: Rc<Outbox>,
    pub(super) ser: Serializer,
    pub(super) transport: TransportInfo,
    pub(super) phase: Phase,
    /// In `Closing`: the timer that ends the connection if the client does
    /// not answer GOODBYE.
    pub(super) closing_timer: Option<super::timers::TimerKey>,
    /// In `Challenged` and `Verifying`: the login under way.
    pub(super) auth: Option<Box<super::auth::PendingAuth>>,
    /// Once established: the counters of the session's realm.
    pub(super) counters: Option<Arc<crate::metrics::RealmCounters>>,
}

impl Conn {
    /// The session open on this connection, if any.
    pub(super) fn session(&self) -> Option<Id> {
        match self.phase {
            Phase::Established(sid) => Some(sid),
            Phase::Idle | Phase::Challenged | Phase::Verifying | Phase::Closing => None,
        }
    }
}

/// About the memory a parked message takes: its URI and payload, and a
/// little for the rest.
fn parked_bytes(msg: &Message) -> usize {
    128 + match msg {
        Message::Publish { topic, payload, .. } => topic.len() + payload.raw.len(),
        Message::Call { procedure, payload, .. } => procedure.len() + payload.raw.len(),
        Message::Subscribe { topic, .. } => topic.len(),
        Message::Register { procedure, .. } => procedure.len(),
        _ => 0,
    }
}

/// Whether HELLO announced one of `names` as a feature of `role` (call
/// canceling also goes by its older spelling `call_cancelling`).
fn role_feature(details: &Dict, role: &str, names: &[&str]) -> bool {
    let Some(Value::Dict(roles)) = details.get("roles") else {
        return false;
    };
    let Some(Value::Dict(role)) = roles.get(role) else {
        return false;
    };
    let Some(Value::Dict(features)) = role.get("features") else {
        return false;
    };
    names.iter().any(|f| features.get_bool(f) == Some(true))
}

/// The features a session's HELLO announced that change what the router
/// sends it or accepts from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Features {
    /// Callee: call canceling (it may be sent INTERRUPT).
    pub(super) cancels: bool,
    /// Callee: progressive call results.
    pub(super) progressive_results: bool,
    /// Callee: progressive call invocations (INVOCATION chunks).
    pub(super) progressive_invocations: bool,
    /// Caller: progressive call invocations (it may send CALL chunks).
    pub(super) progressive_calls: bool,
    /// Callee: registration revocation (UNREGISTERED with request 0).
    pub(super) revocation: bool,
    /// Subscriber: subscription revocation (UNSUBSCRIBED with request 0).
    pub(super) sub_revocation: bool,
    /// Payload passthru mode, as caller, callee, publisher and subscriber.
    pub(super) ppt_caller: bool,
    pub(super) ppt_callee: bool,
    pub(super) ppt_publisher: bool,
    pub(super) ppt_subscriber: bool,
}

impl Features {
    /// Reads HELLO.Details.roles.
    pub(super) fn read(details: &Dict) -> Self {
        const CANCELING: &[&str] = &["call_canceling", "call_cancelling"];
        // autobahn-python announces its older name for the mode
        const PPT: &[&str] = &["payload_passthru_mode", "payload_transparency"];
        Features {
            cancels: role_feature(details, "callee", CANCELING),
            progressive_results: role_feature(details, "callee", &["progressive_call_results"]),
            progressive_invocations: role_feature(details, "callee", &["progressive_call_invocations"]),
            progressive_calls: role_feature(details, "caller", &["progressive_call_invocations"]),
            revocation: role_feature(details, "callee", &["registration_revocation"]),
            sub_revocation: role_feature(details, "subscriber", &["subscription_revocation"]),
            ppt_caller: role_feature(details, "caller", PPT),
            ppt_callee: role_feature(details, "callee", PPT),
            ppt_publisher: role_feature(details, "publisher", PPT),
            ppt_subscriber: role_feature(details, "subscriber", PPT),
        }
    }
}

/// WELCOME.Details without the feature lists, for peers whose maximum
/// message size is below the full WELCOME.
fn compact_welcome_details(who: &SessionIdentity) -> Dict {
    let s = |v: &Arc<str>| Value::Str(v.to_string());
    let role = || Value::Dict(Dict::new());
    Dict::new()
        .with("realm", s(&who.realm))
        .with("authid", s(&who.authid))
        .with("authrole", s(&who.authrole))
        .with("authmethod", s(&who.authmethod))
        .with("roles", Value::Dict(Dict::new().with("broker", role()).with("dealer", role())))
}

fn welcome_details(who: &SessionIdentity) -> Dict {
    let features = |pairs: &[&str]| Value::Dict(pairs.iter().fold(Dict::new(), |d, f| d.with(*f, Value::Bool(true))));
    let s = |v: &Arc<str>| Value::Str(v.to_string());
    Dict::new()
        .with("realm", s(&who.realm))
        .with("authid", s(&who.authid))
        .with("authrole", s(&who.authrole))
        .with("authmethod", s(&who.authmethod))
        .with("authprovider", s(&who.authprovider))
        .with(
            "roles",
            Value::Dict(
                Dict::new()
                    .with(
                        "broker",
                        Value::Dict(Dict::new().with(
                            "features",
                            features(&[
                                "pattern_based_subscription",
                                "publisher_exclusion",
                                "payload_passthru_mode",
                                "publisher_identification",
                                "subscriber_blackwhite_listing",
                                "session_meta_api",
                                "subscription_meta_api",
                                "subscription_revocation",
                                "event_retention",
                                "event_history",
                            ]),
                        )),
                    )
                    .with(
                        "dealer",
                        Value::Dict(Dict::new().with(
                            "features",
                            features(&[
                                "pattern_based_registration",
                                "call_canceling",
                                "call_timeout",
                                "progressive_call_results",
                                "caller_identification",
                                "shared_registration",
                                "progressive_call_invocations",
                                "call_reroute",
                                "payload_passthru_mode",
                                "registration_revocation",
                                "session_meta_api",
                                "registration_meta_api",
                                "testament_meta_api",
                            ]),
                        )),
                    ),
            ),
        )
}

impl Router {
    /// Registers a new connection; messages for it go to `outbox`.
    pub fn open_connection(&mut self, outbox: Rc<Outbox>, transport: TransportInfo) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                outbox,
                ser: transport.serializer,
                transport,
                phase: Phase::Idle,
                closing_timer: None,
                auth: None,
                counters: None,
            },
        );
        id
    }

    /// Who the session `sid` of this shard is, and how it is connected.
    pub fn session_info(&self, sid: Id) -> Option<(&SessionIdentity, &TransportInfo)> {
        self.sessions.get(&sid).map(|s| (&s.identity, &s.transport))
    }

    /// Forgets a connection; its session, if any, leaves.
    pub fn close_connection(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(key) = c.closing_timer {
                self.timers.cancel(key);
            }
            if let Some(a) = &c.auth {
                self.timers.cancel(a.timer());
            }
            if let Some(s) = c.session() {
                self.leave(s);
            }
        }
    }

    /// Sends GOODBYE `wamp.close.system_shutdown` to every session and
    /// closes connections without one.
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
        for c in self.conns.values() {
            match c.session().and_then(|s| self.sessions.get_mut(&s)) {
                Some(s) => {
                    s.goodbye_sent = true;
                    s.outbox.push(encode::goodbye(s.ser, &Dict::new(), uris::SYSTEM_SHUTDOWN));
                }
                None => c
                    .outbox
                    .close(Some(Outgoing::close(CloseReason::GoingAway, "router shutting down"))),
            }
        }
    }

    /// Ends every connection still open at once (the shutdown grace period
    /// is over); each leaves the tables as its task finishes.
    pub fn kill_all(&mut self) {
        for c in self.conns.values() {
            c.outbox.kill();
        }
    }

    pub(super) fn abort(&mut self, conn: ConnId, reason: &str, message: &str) {
        self.abort_with(conn, reason, message, CloseReason::Normal)
    }

    /// ABORT with `reason`, then the transport's close for `why`.
    pub(super) fn abort_with(&mut self, conn: ConnId, reason: &str, message: &str, why: CloseReason) {
        let Some(c) = self.conns.get(&conn) else { return };
        let details = Dict::new().with("message", message.into());
        c.outbox.push(encode::abort(c.ser, &details, reason));
        c.outbox.close(Some(Outgoing::close(why, "session aborted")));
        if let Some(s) = c.session() {
            self.leave(s);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Idle;
        }
    }

    /// After handling a message panicked: closes the session it concerned,
    /// here or on its own shard (its connection ends, and it leaves the
    /// tables on every shard as usual, which also removes whatever the
    /// failed change left half done), and fails the call it carried.
    pub fn contain_panic(&mut self, hit: Concerns) {
        let session = match hit {
            Concerns::Nobody => None,
            Concerns::Session { shard, session } if shard != self.me => {
                return self.send_to(shard, ShardMsg::CloseSession(session));
            }
            Concerns::Session { session, .. } | Concerns::Here(session) => Some(session),
            Concerns::Invocation {
                callee,
                caller_shard,
                caller,
                call_request,
            } => {
                let done = CallDone {
                    progress: false,
                    caller,
                    call_request,
                    error: Some(uris::CANCELED.to_owned()),
                    details: Dict::new(),
                    payload: crate::codec::payload_from(Serializer::Json, &[Value::Str("the router failed while routing the call".into())]),
                };
                self.send_to(caller_shard, ShardMsg::CallDone(Box::new(done)));
                Some(callee)
            }
        };
        if let Some(sid) = session {
            self.close_session(sid);
        }
    }

    /// Closes a local session's connection at once with WebSocket 1011.
    pub(super) fn close_session(&mut self, sid: Id) {
        if let Some(s) = self.sessions.get(&sid) {
            s.outbox.abort(Outgoing::close(CloseReason::InternalError, "internal error"));
        }
    }

    /// Aborts the session on `conn` with `wamp.error.protocol_violation`.
    pub fn protocol_violation(&mut self, conn: ConnId, message: &str) {
        debug!(conn, message, "protocol violation");
        ShardStats::inc(&self.stats.protocol_violations);
        // the transport's protocol error (WebSocket 1002), as other routers send
        self.abort_with(conn, uris::PROTOCOL_VIOLATION, message, CloseReason::ProtocolError);
    }

    /// Handles one message received on `conn`.
    pub fn on_message(&mut self, conn: ConnId, msg: Message) {
        ShardStats::inc(&self.stats.messages_in);
        let Some(c) = self.conns.get(&conn) else { return };
        let Some(sid) = c.session() else {
            return self.on_message_before_session(conn, msg);
        };
        if let Some(counters) = &c.counters {
            counters.count(msg.message_type().code());
        }
        if let Err(problem) = options::check(&msg) {
            return self.protocol_violation(conn, &problem);
        }
        // behind a message waiting for the realm's authorizer, in order
        let (parked, dynamic) = if !self.authorizer_any {
            (false, false)
        } else {
            match self.sessions.get(&sid) {
                Some(s) => (!s.parked.is_empty(), self.realms[s.realm as usize].authorizer.is_some()),
                None => (false, false),
            }
        };
        // a callee's answers and the session's end do not wait: the
        // authorizer may be this very session
        let waits = !matches!(
            msg,
            Message::Yield { .. } | Message::Error { .. } | Message::Goodbye { .. } | Message::Abort { .. }
        );
        if parked && waits {
            return self.park(conn, sid, msg);
        }
        if dynamic {
            if let Some(key) = self.needs_authorizer(sid, &msg) {
                self.park(conn, sid, msg);
                if !self.ask_authorizer(sid, key) {
                    self.resume_parked(sid);
                }
                return;
            }
        }
        self.dispatch(conn, sid, msg)
    }

    /// The authorizer's key for `msg` when it must be asked before `msg` is
    /// handled.
    fn needs_authorizer(&mut self, sid: Id, msg: &Message) -> Option<super::auth::AuthzKey> {
        let s = self.sessions.get(&sid)?;
        self.realms[s.realm as usize].authorizer.as_ref()?;
        let (action, uri, policy) = match msg {
            Message::Publish { topic, .. } => (Action::Publish, topic, MatchPolicy::Exact),
            Message::Subscribe { topic, options, .. } => (Action::Subscribe, topic, options::SubscribeOptions::read(options).policy),
            Message::Register { procedure, options, .. } => (Action::Register, procedure, options::RegisterOptions::read(options).policy),
            Message::Call { request, procedure, .. } if !s.calls.contains_key(request) => (Action::Call, procedure, MatchPolicy::Exact),
            _ => return None,
        };
        match self.authz_lookup(sid, action, uri, policy) {
            super::auth::Lookup::Ask(key) => Some(key),
            super::auth::Lookup::Decided(_) => None,
        }
    }

    /// Keeps `msg` until the authorizer answered for the one before it
    /// (at most `limits.max_pending_calls` per session).
    fn park(&mut self, conn: ConnId, sid: Id, msg: Message) {
        let (max, max_bytes) = (self.limits.max_pending_calls, self.limits.max_outbound_bytes);
        let Some(s) = self.sessions.get_mut(&sid) else { return };
        let bytes = parked_bytes(&msg);
        if s.parked.len() >= max || s.parked_bytes + bytes > max_bytes {
            let m = format!(
                "more than {max} messages or {max_bytes} bytes wait for the realm's authorizer (limits.max_pending_calls, limits.max_outbound_bytes)"
            );
            return self.abort(conn, uris::LIMIT_EXCEEDED, &m);
        }
        s.parked_bytes += bytes;
        s.parked.push_back((conn, msg));
        ShardStats::inc(&self.stats.authorization_parked);
    }

    /// Handles the parked messages of `sid` in order, until one needs the
    /// authorizer again.
    pub(super) fn resume_parked(&mut self, sid: Id) {
        loop {
            let Some(s) = self.sessions.get_mut(&sid) else { return };
            let Some((conn, msg)) = s.parked.pop_front() else { return };
            s.parked_bytes = s.parked_bytes.saturating_sub(parked_bytes(&msg));
            if let Some(key) = self.needs_authorizer(sid, &msg) {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.parked_bytes += parked_bytes(&msg);
                    s.parked.push_front((conn, msg));
                }
                if self.ask_authorizer(sid, key) {
                    return;
                }
                // not asked (denied, recorded): the loop takes it again
                continue;
            }
            self.dispatch(conn, sid, msg);
        }
    }

    /// Handles one message of the established session `sid` (inlined into
    /// `on_message`: the message is not moved again on the hot path).
    #[inline(always)]
    fn dispatch(&mut self, conn: ConnId, sid: Id, msg: Message) {
        match msg {
            Message::Hello { .. } => self.protocol_violation(conn, "HELLO received after the session was established"),
            Message::Authenticate { .. } => self.protocol_violation(conn, "AUTHENTICATE received after the session was established"),
            Message::Abort { .. } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = Phase::Idle;
                    c.outbox.close(None);
                }
                self.leave(sid);
            }
            Message::Goodbye { .. } => {
                let we_started = self.sessions.get(&sid).is_some_and(|s| s.goodbye_sent);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.phase = Phase::Idle;
                    if we_started || self.shutting_down {
                        c.outbox.close(Some(Outgoing::close(CloseReason::Normal, "goodbye")));
                    } else {
                        c.outbox.push(encode::goodbye(c.ser, &Dict::new(), uris::GOODBYE_AND_OUT));
                    }
                }
                self.leave(sid);
            }
            Message::Error {
                request_type,
                request,
                details,
                error,
                payload,
            } => {
                if request_type != wamp::MessageType::Invocation.code() {
                    return self.protocol_violation(conn, "ERROR with an invalid REQUEST.Type");
                }
                self.callee_answer(sid, request, Some(error), false, details, payload);
            }
            Message::Publish {
                request,
                options,
                topic,
                payload,
            } => {
                let mut options = options::PublishOptions::read(&options);
                if options.ppt.is_some() && !self.sessions.get(&sid).is_some_and(|s| s.features.ppt_publisher) {
                    return self.protocol_violation(
                        conn,
                        "PUBLISH in payload passthru mode, but the publisher did not announce payload_passthru_mode",
                    );
                }
                let ack = options.acknowledge;
                let Some(d) = self.authorized(
                    sid,
                    MessageType::Publish,
                    request,
                    (Action::Publish, MatchPolicy::Exact),
                    &topic,
                    ack,
                ) else {
                    return;
                };
                if d == (Decision::Allow { disclose: true }) {
                    options.disclose_me = true;
                }
                self.publish(sid, request, options, topic, payload)
            }
            Message::Subscribe { request, options, topic } => {
                let options = options::SubscribeOptions::read(&options);
                let policy = options.policy;
                if self
                    .authorized(sid, MessageType::Subscribe, request, (Action::Subscribe, policy), &topic, true)
                    .is_some()
                {
                    self.subscribe(sid, request, options, topic)
                }
            }
            Message::Unsubscribe { request, subscription } => self.unsubscribe(sid, request, subscription),
            Message::Call {
                request,
                options,
                procedure,
                payload,
            } => {
                let mut options = options::CallOptions::read(&options);
                let continues = self.sessions.get(&sid).is_some_and(|s| s.calls.contains_key(&request));
                if !continues {
                    // a progressive call's later chunks were authorized with its first
                    let Some(d) = self.authorized(
                        sid,
                        MessageType::Call,
                        request,
                        (Action::Call, MatchPolicy::Exact),
                        &procedure,
                        true,
                    ) else {
                        return;
                    };
                    if d == (Decision::Allow { disclose: true }) {
                        options.disclose_me = true;
                    }
                }
                if let Err(problem) = self.call(sid, request, options, procedure, payload) {
                    self.protocol_violation(conn, &problem);
                }
            }
            Message::Cancel { request, options } => self.cancel(sid, request, CancelMode::read(&options)),
            Message::Register {
                request,
                options,
                procedure,
            } => {
                let options = options::RegisterOptions::read(&options);
                let policy = options.policy;
                if self
                    .authorized(sid, MessageType::Register, request, (Action::Register, policy), &procedure, true)
                    .is_some()
                {
                    self.register(sid, request, options, procedure)
                }
            }
            Message::Unregister { request, registration } => self.unregister(sid, request, registration),
            Message::Yield { request, options, payload } => {
                let options = options::YieldOptions::read(&options);
                if options.ppt.is_some() && !self.sessions.get(&sid).is_some_and(|s| s.features.ppt_callee) {
                    return self.protocol_violation(
                        conn,
                        "YIELD in payload passthru mode, but the callee did not announce payload_passthru_mode",
                    );
                }
                let ppt = options.ppt.map(|d| *d).unwrap_or_default();
                self.callee_answer(sid, request, None, options.progress, ppt, payload)
            }
        }
    }

    pub(super) fn on_message_before_session(&mut self, conn: ConnId, msg: Message) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.phase == Phase::Closing {
                // after the router's GOODBYE: the reply (or an ABORT) ends
                // the connection, anything else is ignored
                if matches!(msg, Message::Goodbye { .. } | Message::Abort { .. }) {
                    c.phase = Phase::Idle;
                    c.outbox.close(Some(Outgoing::close(CloseReason::Normal, "goodbye")));
                    if let Some(key) = c.closing_timer.take() {
                        self.timers.cancel(key);
                    }
                }
                return;
            }
        }
        let phase = self.conns.get(&conn).map(|c| c.phase);
        match msg {
            Message::Hello { .. } if phase != Some(Phase::Idle) => self.protocol_violation(conn, "HELLO received during authentication"),
            Message::Hello { realm, details } => self.hello(conn, realm, details),
            Message::Authenticate { signature, extra } => self.authenticate(conn, signature, extra),
            Message::Abort { .. } => {
                if let Some(c) = self.conns.get(&conn) {
                    c.outbox.close(None);
                }
            }
            other => {
                let m = format!("{:?} received before the session was established", other.message_type());
                self.protocol_violation(conn, &m)
            }
        }
    }

    pub(super) fn hello(&mut self, conn: ConnId, realm: String, details: Dict) {
        // Test hook, debug builds only: lets the test suite check that a
        // panicking connection task is contained.
        #[cfg(debug_assertions)]
        if realm == "switchyard.test.panic" && std::env::var_os("SWITCHYARD_TEST_PANIC").is_some() {
            panic!("test hook: HELLO asked for a panic");
        }
        if self.shutting_down {
            return self.abort(conn, uris::SYSTEM_SHUTDOWN, "the router is shutting down");
        }
        if let Err(e @ (UriError::TooLong { .. } | UriError::TooManyComponents { .. })) =
            wamp::uri::validate(&realm, UriCheck::Concrete, &self.uri_limits)
        {
            ShardStats::inc(&self.stats.uris_refused);
            return self.abort(conn, uris::INVALID_URI, &format!("realm: {e}"));
        }
        if !matches!(details.get("roles"), Some(Value::Dict(r)) if !r.is_empty()) {
            return self.protocol_violation(conn, "HELLO.Details.roles must be a non-empty dictionary");
        }
        let Some(&realm_idx) = self.realm_names.get(&realm) else {
            let m = format!("no realm named '{realm}' exists on this router");
            return self.abort(conn, uris::NO_SUCH_REALM, &m);
        };
        self.start_auth(conn, realm_idx, details);
    }

    /// Opens the session `sid` on `conn` for `identity`: WELCOME (with
    /// `authextra`), the session's state, `wamp.session.on_join`.
    pub(super) fn establish(
        &mut self,
        conn: ConnId,
        realm_idx: RealmIdx,
        sid: Id,
        identity: SessionIdentity,
        details: Dict,
        authextra: Dict,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let features = Features::read(&details);
        let role = self.realms[realm_idx as usize].roles.index(&identity.authrole);
        c.phase = Phase::Established(sid);
        c.counters = Some(self.realms[realm_idx as usize].counters.clone());
        let outbox = c.outbox.clone();
        let ser = c.ser;
        let transport = c.transport.clone();
        let mut welcome = encode::welcome(
            ser,
            sid,
            &welcome_details(&identity)
                .with("authextra", Value::Dict(authextra))
                .with("transport", Value::Dict(transport.details())),
        );
        if !outbox.fits(welcome.len()) {
            // a peer that takes less than the feature lists (RawSocket
            // allows 512 bytes): the roles without their features
            welcome = encode::welcome(ser, sid, &compact_welcome_details(&identity));
        }
        outbox.push(welcome);
        self.sessions.insert(
            sid,
            Box::new(LocalSession {
                realm: realm_idx,
                conn,
                identity,
                role,
                transport,
                outbox,
                ser,
                subs: AHashMap::new(),
                sub_ids: AHashMap::new(),
                sub_waiters: Vec::new(),
                regs: AHashMap::new(),
                regs_pending: AHashMap::new(),
                invocations: AHashMap::new(),
                features,
                disclose_caller: ahash::AHashSet::new(),
                invocation_ids: IdSeq::default(),
                calls: AHashMap::new(),
                streams: AHashMap::new(),
                finished_streams: std::collections::VecDeque::new(),
                finished_cap: self.limits.max_finished_streams,
                builtin_calls: 0,
                parked: std::collections::VecDeque::new(),
                parked_bytes: 0,
                authz_once: None,
                testaments: Vec::new(),
                held: std::cell::RefCell::new(Vec::new()),
                fetches: 0,
                testament_bytes: 0,
                goodbye_sent: false,
            }),
        );
        self.stats.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = self.sessions.get(&sid) {
            debug!(
                session = sid,
                realm = %self.realms[realm_idx as usize].name,
                authid = %s.identity.authid,
                authrole = %s.identity.authrole,
                peer = ?s.transport.peer,
                "session joined"
            );
        }
        if let Some(s) = self.sessions.get(&sid) {
            let details = super::builtins::session_details(sid, s);
            if self.cluster.is_some() {
                let (authid, authrole) = (s.identity.authid.clone(), s.identity.authrole.clone());
                self.tell_cluster_session(realm_idx, sid, &authid, &authrole, true);
            }
            self.meta_event(realm_idx, "wamp.session.on_join", || vec![Value::Dict(details)]);
        }
    }

    /// Disposes of everything a session holds; its testaments are
    /// published and `wamp.session.on_leave` fires.
    pub(super) fn leave(&mut self, sid: Id) {
        self.leave_with(sid, true)
    }

    /// [`Router::leave`]; `announce` false leaves out the testaments and the
    /// meta event (`wamp.session.kill_all`: nobody would be left to get them).
    pub(super) fn leave_with(&mut self, sid: Id, announce: bool) {
        let Some(mut s) = self.sessions.remove(&sid) else { return };
        if self.cluster.is_some() {
            self.tell_cluster_session(s.realm, sid, &s.identity.authid, &s.identity.authrole, false);
        }
        if announce {
            self.publish_testaments(sid, &mut s);
            let (authid, authrole) = (s.identity.authid.to_string(), s.identity.authrole.to_string());
            self.meta_event(s.realm, "wamp.session.on_leave", || {
                vec![Value::UInt(sid), Value::Str(authid), Value::Str(authrole)]
            });
        }
        self.stats.sessions.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let realm_name = self.realms[s.realm as usize].name.clone();
        if s.outbox.dropped() > 0 {
            tracing::info!(
                session = sid,
                realm = %self.realms[s.realm as usize].name,
                dropped = s.outbox.dropped(),
                "session left; events were dropped for it (slow consumer)"
            );
        }
        for held in s.held.take() {
            self.unhold(s.realm, held.subscription);
        }
        for ((policy, uri), _) in s.subs {
            self.drop_subscriber(s.realm, policy, uri, sid, 0);
        }
        for (_, (policy, uri)) in s.regs {
            self.drop_callee(s.realm, policy, uri, sid, 0);
        }
        for ((policy, uri), _) in s.regs_pending {
            self.drop_callee(s.realm, policy, uri, sid, 0);
        }
        self.stats
            .pending_invocations
            .fetch_sub(s.invocations.len() as i64, std::sync::atomic::Ordering::Relaxed);
        self.stats
            .pending_calls
            .fetch_sub(s.calls.len() as i64, std::sync::atomic::Ordering::Relaxed);
        // its calls: no timeout any more, and their callees need not finish
        for (request, call) in s.calls {
            if let Some(key) = call.timer {
                self.timers.cancel(key);
            }
            self.interrupt(sid, request, call, CancelMode::KillNoWait);
        }
        for (_, inv) in s.invocations {
            let done = CallDone {
                progress: false,
                caller: inv.caller,
                call_request: inv.call_request,
                error: Some(uris::CANCELED.to_owned()),
                details: Dict::new(),
                payload: crate::codec::payload_from(Serializer::Json, &[Value::Str("the callee left before answering the call".into())]),
            };
            self.send_to(inv.caller_shard, ShardMsg::CallDone(Box::new(done)));
        }
        debug!(session = sid, realm = %realm_name, "session left");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::router::{RouterConfig, ShardLink};
    use crate::session::outbox::Outgoing;

    fn welcome(router: &mut Router, conn: ConnId, outbox: &Outbox, hello: &str) -> Value {
        let msg = crate::codec::decode(Serializer::Json, &Bytes::copy_from_slice(hello.as_bytes())).expect("HELLO decodes");
        router.on_message(conn, msg);
        let mut out = Vec::new();
        outbox.take_queued(&mut out);
        match out.pop() {
            Some(Outgoing::Wamp(m)) => crate::codec::parse_value(Serializer::Json, &m).expect("WELCOME parses"),
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    #[test]
    fn a_session_keeps_its_identity_and_transport() {
        let mut router = Router::new(0, 1, &RouterConfig::single_realm("realm1"), ShardLink::None, Arc::default());
        let outbox = Rc::new(Outbox::new(1 << 20));
        let transport = TransportInfo {
            kind: TransportKind::RawSocket,
            serializer: Serializer::Json,
            peer: Some("127.0.0.1:4000".parse().expect("address")),
            tls: None,
            batched: false,
            compressed: false,
        };
        let conn = router.open_connection(outbox.clone(), transport);
        let w = welcome(
            &mut router,
            conn,
            &outbox,
            r#"[1, "realm1", {"roles": {"caller": {}}, "authid": "joe"}]"#,
        );
        let Value::List(w) = w else { panic!("{w:?}") };
        let Some(Value::UInt(sid)) = w.get(1) else { panic!("{w:?}") };
        let Some(Value::Dict(details)) = w.get(2) else { panic!("{w:?}") };
        let (who, how) = router.session_info(*sid).expect("the session is known");
        assert_eq!(&*who.realm, "realm1");
        // an anonymous session's authid is the router's, not the one HELLO asked for
        assert_eq!(&*who.authid, format!("anonymous-{sid}"));
        assert_eq!(&*who.authrole, "anonymous");
        assert_eq!(how.kind, TransportKind::RawSocket);
        assert_eq!(how.peer.map(|p| p.port()), Some(4000));
        let authid = format!("anonymous-{sid}");
        for (key, want) in [
            ("authid", authid.as_str()),
            ("authrole", "anonymous"),
            ("authmethod", "anonymous"),
            ("realm", "realm1"),
        ] {
            assert_eq!(details.get_str(key), Some(want), "WELCOME.Details.{key}");
        }
        // GOODBYE: the connection goes back to Idle, the session is gone
        let bye = crate::codec::decode(Serializer::Json, &Bytes::from_static(br#"[6, {}, "wamp.close.close_realm"]"#)).expect("GOODBYE");
        router.on_message(conn, bye);
        assert!(router.session_info(*sid).is_none());
        assert_eq!(router.conns.get(&conn).map(|c| c.phase), Some(Phase::Idle));
        // and a new HELLO opens a new session on the same connection
        let w = welcome(&mut router, conn, &outbox, r#"[1, "realm1", {"roles": {"caller": {}}}]"#);
        let Value::List(w) = w else { panic!("{w:?}") };
        let Some(Value::UInt(again)) = w.get(1) else { panic!("{w:?}") };
        assert_ne!(again, sid);
        assert!(router
            .session_info(*again)
            .is_some_and(|(who, _)| who.authid.starts_with("anonymous-")));
    }

    fn send(router: &mut Router, conn: ConnId, text: &str) {
        let msg = crate::codec::decode(Serializer::Json, &Bytes::copy_from_slice(text.as_bytes())).expect("decodes");
        router.on_message(conn, msg);
    }

    fn taken(outbox: &Outbox) -> Vec<Value> {
        let mut out = Vec::new();
        outbox.take_queued(&mut out);
        out.into_iter()
            .filter_map(|o| match o {
                Outgoing::Wamp(m) => Some(crate::codec::parse_value(Serializer::Json, &m).expect("parses")),
                _ => None,
            })
            .collect()
    }

    fn code(m: &Value) -> u64 {
        match m {
            Value::List(l) => match l.first() {
                Some(Value::UInt(c)) => *c,
                _ => 0,
            },
            _ => 0,
        }
    }

    /// A call's timeout, driven by a hand-moved clock: nothing happens before
    /// the deadline; at it, ERROR `wamp.error.timeout` to the caller and
    /// INTERRUPT to the callee; no timer is left behind.
    #[test]
    fn call_timeouts_run_on_the_core_clock() {
        let (clock, hand) = crate::router::Clock::manual();
        let mut router = Router::new(0, 1, &RouterConfig::single_realm("realm1"), ShardLink::None, Arc::default());
        router.set_clock(clock);
        let open = |router: &mut Router| {
            let outbox = Rc::new(Outbox::new(1 << 20));
            let conn = router.open_connection(outbox.clone(), TransportInfo::local(TransportKind::WebSocket, Serializer::Json));
            (conn, outbox)
        };
        let (callee, callee_out) = open(&mut router);
        send(
            &mut router,
            callee,
            r#"[1, "realm1", {"roles": {"callee": {"features": {"call_canceling": true}}}}]"#,
        );
        send(&mut router, callee, r#"[64, 1, {}, "com.slow"]"#);
        let (caller, caller_out) = open(&mut router);
        send(&mut router, caller, r#"[1, "realm1", {"roles": {"caller": {}}}]"#);
        taken(&callee_out);
        taken(&caller_out);
        let t0 = hand.get();
        send(&mut router, caller, r#"[48, 7, {"timeout": 500}, "com.slow", []]"#);
        assert_eq!(taken(&callee_out).iter().map(code).collect::<Vec<_>>(), vec![68]);
        assert_eq!(router.next_deadline(), Some(t0 + Duration::from_millis(500)));
        router.on_time(t0 + Duration::from_millis(499));
        assert!(taken(&caller_out).is_empty(), "not before the deadline");
        hand.set(t0 + Duration::from_millis(500));
        router.on_time(hand.get());
        let to_caller = taken(&caller_out);
        assert_eq!(to_caller.len(), 1);
        let Value::List(e) = &to_caller[0] else { panic!() };
        assert_eq!(e.get(4), Some(&Value::Str("wamp.error.timeout".into())));
        assert_eq!(taken(&callee_out).iter().map(code).collect::<Vec<_>>(), vec![69]);
        assert_eq!(router.next_deadline(), None);
        // a call answered in time leaves no timer
        send(&mut router, caller, r#"[48, 8, {"timeout": 500}, "com.slow", []]"#);
        let inv = taken(&callee_out);
        let Some(Value::List(inv)) = inv.first() else { panic!("{inv:?}") };
        let Some(Value::UInt(inv_id)) = inv.get(1) else { panic!() };
        send(&mut router, callee, &format!(r#"[70, {inv_id}, {{}}, []]"#));
        assert_eq!(taken(&caller_out).iter().map(code).collect::<Vec<_>>(), vec![50]);
        assert_eq!(router.next_deadline(), None);
        router.close_connection(caller);
        router.close_connection(callee);
        assert!(router.leftovers().is_empty(), "{:?}", router.leftovers());
    }
}
