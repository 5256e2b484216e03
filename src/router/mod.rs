//! The per-shard routing core: realms with their replicated routing tables,
//! the sessions this shard owns, the Broker and the Dealer. It does no I/O:
//! it pushes encoded messages into session outboxes and envelopes into the
//! mesh, so it can be driven and tested without sockets.
//!
//! Every shard holds a full replica of every realm's subscriptions and
//! registrations. A change to one URI's entry is ordered by the URI's home
//! shard ([`Router::home_of`]), which assigns the router-scope ID and
//! broadcasts the change; the shard that asked answers its client only once
//! every shard has applied it (see ARCHITECTURE.md).

mod broker;
mod dealer;
mod options;
pub mod trie;

use std::rc::Rc;
use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;
use tracing::{debug, warn};

use crate::codec::encode;
use crate::config::{Limits, SlowConsumerPolicy};
use crate::metrics::ShardStats;
use crate::session::outbox::{Outbox, Outgoing};
use crate::shard::mesh::Mesh;
use crate::wamp::message::Serializer;
use crate::wamp::uri::{UriCheck, UriError, UriLimits};
use crate::wamp::{self, uris, Dict, Id, IdSeq, MatchPolicy, Message, Payload, Value};

pub use broker::Subscription;
pub use dealer::Registration;

/// A connection on this shard.
pub type ConnId = u64;

/// Index of a realm; the same on every shard (realms come from the config).
pub type RealmIdx = u32;

/// Messages between shards.
#[derive(Debug)]
pub enum ShardMsg {
    /// To the home shard: add a subscriber.
    SubscribeReq(TableChange),
    /// To the home shard: remove a subscriber.
    UnsubscribeReq(TableChange),
    /// From the home shard to all: add a subscriber to entry `id`.
    SubscriptionAdd(TableChange, Id),
    /// From the home shard to all: remove a subscriber.
    SubscriptionRemove(TableChange),
    /// To the home shard: add a callee.
    RegisterReq(TableChange),
    /// To the home shard: remove a callee.
    UnregisterReq(TableChange),
    /// From the home shard to all: add a callee to entry `id`.
    RegistrationAdd(TableChange, Id),
    /// From the home shard to all: remove a callee.
    RegistrationRemove(TableChange),
    /// From the home shard to the origin: the registration was refused.
    RegisterRefused { token: u64, error: &'static str },
    /// From every shard to the origin of a change: applied.
    Applied { token: u64, id: Id },
    /// A publication for subscriptions with subscribers on the receiving shard.
    Event(Box<EventMsg>),
    /// A call for a callee on the receiving shard.
    Invoke(Box<InvokeMsg>),
    /// A callee's answer for a caller on the receiving shard.
    CallDone(Box<CallDone>),
    /// Close this local session (WebSocket 1011): handling a message about
    /// it panicked on another shard.
    CloseSession(Id),
}

/// Whom a cross-shard message concerns on the shard that handles it: the
/// sessions to close (and the call to answer) if handling it panics.
#[derive(Debug, Clone, Copy)]
pub enum Concerns {
    /// No session in particular (an event, an acknowledgement).
    Nobody,
    /// One session, on the shard named.
    Session { shard: usize, session: Id },
    /// One session of the receiving shard.
    Here(Id),
    /// A call for a callee; its caller is told the call failed.
    Invocation {
        callee: Id,
        caller_shard: usize,
        caller: Id,
        call_request: Id,
    },
}

impl ShardMsg {
    /// Whom this message concerns (see [`Concerns`]).
    pub fn concerns(&self) -> Concerns {
        match self {
            ShardMsg::SubscriptionAdd(c, _)
            | ShardMsg::SubscriptionRemove(c)
            | ShardMsg::RegistrationAdd(c, _)
            | ShardMsg::RegistrationRemove(c)
            | ShardMsg::SubscribeReq(c)
            | ShardMsg::UnsubscribeReq(c)
            | ShardMsg::RegisterReq(c)
            | ShardMsg::UnregisterReq(c) => Concerns::Session {
                shard: c.shard,
                session: c.session,
            },
            ShardMsg::Invoke(inv) => Concerns::Invocation {
                callee: inv.callee,
                caller_shard: inv.caller_shard,
                caller: inv.caller,
                call_request: inv.call_request,
            },
            // handled on the caller's shard, which is the receiving one
            ShardMsg::CallDone(done) => Concerns::Here(done.caller),
            ShardMsg::CloseSession(sid) => Concerns::Here(*sid),
            ShardMsg::RegisterRefused { .. } | ShardMsg::Applied { .. } | ShardMsg::Event(_) => Concerns::Nobody,
        }
    }
}

impl crate::shard::mesh::MeshMessage for ShardMsg {
    fn droppable(&self) -> bool {
        matches!(self, ShardMsg::Event(_))
    }
}

/// How a router reaches the other shards.
#[derive(Debug)]
pub enum ShardLink {
    /// The cross-shard queues (a running router).
    Mesh(Mesh<ShardMsg>),
    /// Messages for other shards are collected, in order, as (shard, message):
    /// for driving several routers by hand (tests, the router fuzz target).
    Collect(Rc<std::cell::RefCell<std::collections::VecDeque<(usize, ShardMsg)>>>),
    /// A single shard without peers.
    None,
}

/// A change to one URI's table entry, as it travels to the home shard and
/// from there to every shard.
#[derive(Debug, Clone)]
pub struct TableChange {
    pub realm: RealmIdx,
    pub policy: MatchPolicy,
    pub uri: Arc<str>,
    /// The shard of the session the change is about.
    pub shard: usize,
    pub session: Id,
    /// The shard to notify with `Applied` (and its token; 0 = no notice).
    pub origin: usize,
    pub token: u64,
}

/// A publication on its way to another shard.
#[derive(Debug)]
pub struct EventMsg {
    pub realm: RealmIdx,
    pub subscriptions: Vec<Id>,
    pub publication: Id,
    pub topic: Arc<str>,
    pub payload: Payload,
    /// The publisher, when it excluded itself (0 = none).
    pub exclude: Id,
}

/// A call on its way to the callee's shard.
#[derive(Debug)]
pub struct InvokeMsg {
    pub realm: RealmIdx,
    pub registration: Id,
    pub callee: Id,
    pub caller_shard: usize,
    pub caller: Id,
    pub call_request: Id,
    /// The concrete procedure, for pattern-based registrations.
    pub procedure: Option<Arc<str>>,
    pub payload: Payload,
}

/// The outcome of a call on its way back to the caller's shard.
#[derive(Debug)]
pub struct CallDone {
    pub caller: Id,
    pub call_request: Id,
    /// `None` for a result, the error URI for an error.
    pub error: Option<String>,
    pub details: Dict,
    pub payload: Payload,
}

/// What an `Applied` notice completes on the origin shard.
#[derive(Debug)]
enum AckThen {
    Subscribed {
        session: Id,
        request: Id,
        key: (MatchPolicy, Arc<str>),
    },
    Unsubscribed {
        session: Id,
        request: Id,
    },
    Registered {
        session: Id,
        request: Id,
        key: (MatchPolicy, Arc<str>),
    },
    Unregistered {
        session: Id,
        request: Id,
    },
}

#[derive(Debug)]
struct PendingAck {
    remaining: usize,
    id: Id,
    then: AckThen,
}

/// A realm's replicated routing tables.
#[derive(Debug, Default)]
pub struct Realm {
    pub name: Arc<str>,
    pub(crate) sub_index: trie::UriIndex<Id>,
    pub(crate) subscriptions: AHashMap<Id, Subscription>,
    pub(crate) reg_index: trie::UriIndex<Id>,
    pub(crate) registrations: AHashMap<Id, Registration>,
}

/// A call this shard delivered to a local callee and awaits the answer of.
#[derive(Debug)]
struct PendingInvocation {
    caller_shard: usize,
    caller: Id,
    call_request: Id,
}

/// What a local session holds.
#[derive(Debug)]
struct LocalSession {
    realm: RealmIdx,
    outbox: Rc<Outbox>,
    ser: Serializer,
    /// Subscriptions by pattern; `None` while the change is in flight.
    subs: AHashMap<(MatchPolicy, Arc<str>), Option<Id>>,
    sub_ids: AHashMap<Id, (MatchPolicy, Arc<str>)>,
    /// Requests that wait for an in-flight subscribe of the same pattern.
    sub_waiters: Vec<((MatchPolicy, Arc<str>), Id)>,
    regs: AHashMap<Id, (MatchPolicy, Arc<str>)>,
    regs_pending: AHashMap<(MatchPolicy, Arc<str>), Id>,
    invocations: AHashMap<Id, PendingInvocation>,
    invocation_ids: IdSeq,
    /// Calls this session made that wait for their RESULT or ERROR.
    calls_pending: usize,
    goodbye_sent: bool,
}

#[derive(Debug)]
struct Conn {
    outbox: Rc<Outbox>,
    ser: Serializer,
    session: Option<Id>,
}

/// Static facts every shard's router needs.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub realms: Vec<String>,
    /// The `[limits]` section: what one session may hold and send.
    pub limits: Limits,
}

impl RouterConfig {
    /// One realm, the default limits.
    pub fn single_realm(name: &str) -> Self {
        RouterConfig {
            realms: vec![name.to_owned()],
            limits: Limits::default(),
        }
    }
}

/// One shard's router.
#[derive(Debug)]
pub struct Router {
    me: usize,
    nshards: usize,
    realms: Vec<Realm>,
    realm_names: AHashMap<String, RealmIdx>,
    sessions: AHashMap<Id, LocalSession>,
    conns: AHashMap<ConnId, Conn>,
    next_conn: ConnId,
    pending: AHashMap<u64, PendingAck>,
    next_token: u64,
    next_router_id: u64,
    limits: Limits,
    uri_limits: UriLimits,
    slow_consumer: SlowConsumerPolicy,
    shutting_down: bool,
    link: ShardLink,
    pub(crate) stats: Arc<ShardStats>,
}

fn welcome_details(realm: &str, authid: &str) -> Dict {
    let features = |pairs: &[&str]| Value::Dict(pairs.iter().fold(Dict::new(), |d, f| d.with(*f, Value::Bool(true))));
    Dict::new()
        .with("realm", realm.into())
        .with("authid", authid.into())
        .with("authrole", "anonymous".into())
        .with("authmethod", "anonymous".into())
        .with("authprovider", "static".into())
        .with(
            "roles",
            Value::Dict(
                Dict::new()
                    .with(
                        "broker",
                        Value::Dict(Dict::new().with("features", features(&["pattern_based_subscription", "publisher_exclusion"]))),
                    )
                    .with(
                        "dealer",
                        Value::Dict(Dict::new().with("features", features(&["pattern_based_registration"]))),
                    ),
            ),
        )
}

impl Router {
    /// A router for shard `me` of `nshards`, reaching the others over `link`.
    pub fn new(me: usize, nshards: usize, cfg: &RouterConfig, link: ShardLink, stats: Arc<ShardStats>) -> Self {
        let realms: Vec<Realm> = cfg
            .realms
            .iter()
            .map(|n| Realm {
                name: n.as_str().into(),
                ..Realm::default()
            })
            .collect();
        let realm_names = cfg.realms.iter().enumerate().map(|(i, n)| (n.clone(), i as RealmIdx)).collect();
        Router {
            me,
            nshards,
            realms,
            realm_names,
            sessions: AHashMap::new(),
            conns: AHashMap::new(),
            next_conn: 1,
            pending: AHashMap::new(),
            next_token: 1,
            next_router_id: 0,
            uri_limits: cfg.limits.uri_limits(),
            slow_consumer: cfg.limits.slow_consumer,
            limits: cfg.limits.clone(),
            shutting_down: false,
            link,
            stats,
        }
    }

    /// This shard's index.
    pub fn shard(&self) -> usize {
        self.me
    }

    /// The home shard of a URI pattern: a pure function of realm and URI.
    pub fn home_of(&self, realm: RealmIdx, uri: &str) -> usize {
        if self.nshards == 1 {
            return 0;
        }
        let mut h: u64 = 0xcbf29ce484222325 ^ realm as u64;
        for b in uri.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        (h % self.nshards as u64) as usize
    }

    fn new_router_id(&mut self) -> Id {
        self.next_router_id += 1;
        let id = (self.next_router_id - 1) * self.nshards as u64 + self.me as u64 + 1;
        if id > wamp::MAX_ID {
            self.next_router_id = 1;
            return self.me as u64 + 1;
        }
        id
    }

    fn new_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Sends to shard `to`, or handles it at once when `to` is this shard.
    pub(crate) fn send_to(&mut self, to: usize, msg: ShardMsg) {
        if to == self.me {
            self.on_shard_message(msg);
        } else {
            match &self.link {
                ShardLink::Mesh(mesh) => mesh.send(to, msg),
                ShardLink::Collect(out) => out.borrow_mut().push_back((to, msg)),
                ShardLink::None => warn!(to, "no mesh: message to another shard dropped"),
            }
        }
    }

    /// Registers a new connection; messages for it go to `outbox`.
    pub fn open_connection(&mut self, outbox: Rc<Outbox>, ser: Serializer) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                outbox,
                ser,
                session: None,
            },
        );
        id
    }

    /// Forgets a connection; its session, if any, leaves.
    pub fn close_connection(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(s) = c.session {
                self.leave(s);
            }
        }
    }

    /// What this shard still holds beyond its empty start: sessions,
    /// connections, pending acknowledgements, table entries, gauges. Empty
    /// once every session has left and every cross-shard message has been
    /// handled (the router fuzz target and tests check this).
    pub fn leftovers(&self) -> Vec<String> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut left = Vec::new();
        let mut note = |what: &str, n: usize| {
            if n > 0 {
                left.push(format!("shard {}: {n} {what}", self.me));
            }
        };
        note("sessions", self.sessions.len());
        note("connections", self.conns.len());
        note("pending acknowledgements", self.pending.len());
        for r in &self.realms {
            note("subscription index entries", r.sub_index.len());
            note("subscriptions", r.subscriptions.len());
            note("registration index entries", r.reg_index.len());
            note("registrations", r.registrations.len());
        }
        let s = &self.stats;
        for (what, v) in [
            ("in the sessions gauge", s.sessions.load(Relaxed)),
            ("in the subscriptions gauge", s.subscriptions.load(Relaxed)),
            ("in the registrations gauge", s.registrations.load(Relaxed)),
            ("in the pending_invocations gauge", s.pending_invocations.load(Relaxed)),
            ("in the pending_calls gauge", s.pending_calls.load(Relaxed)),
        ] {
            if v != 0 {
                left.push(format!("shard {}: {v} {what}", self.me));
            }
        }
        left
    }

    /// Checks the replicated tables of this shard against its sessions: every
    /// local subscriber and callee is a session here that holds the entry,
    /// and every index entry has its table entry. Returns the problems found.
    pub fn check_consistency(&self) -> Vec<String> {
        let mut bad = Vec::new();
        for (ri, r) in self.realms.iter().enumerate() {
            for (id, sub) in &r.subscriptions {
                if r.sub_index.get(sub.policy, &sub.uri) != Some(id) {
                    bad.push(format!("shard {}: subscription {id} not indexed under its URI", self.me));
                }
                for sid in &sub.local {
                    let holds = self
                        .sessions
                        .get(sid)
                        .is_some_and(|s| s.realm as usize == ri && s.subs.contains_key(&(sub.policy, sub.uri.clone())));
                    if !holds {
                        bad.push(format!(
                            "shard {}: subscription {id} delivers to session {sid}, which does not hold it",
                            self.me
                        ));
                    }
                }
            }
            for (id, reg) in &r.registrations {
                if r.reg_index.get(reg.policy, &reg.uri) != Some(id) {
                    bad.push(format!("shard {}: registration {id} not indexed under its URI", self.me));
                }
                for (shard, sid) in &reg.callees {
                    if *shard == self.me && !self.sessions.contains_key(sid) {
                        bad.push(format!(
                            "shard {}: registration {id} routes to session {sid}, which is gone",
                            self.me
                        ));
                    }
                }
            }
        }
        bad
    }

    /// Number of connections on this shard.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Sends GOODBYE `wamp.close.system_shutdown` to every session and
    /// closes connections without one.
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
        for c in self.conns.values() {
            match c.session.and_then(|s| self.sessions.get_mut(&s)) {
                Some(s) => {
                    s.goodbye_sent = true;
                    s.outbox.push(encode::goodbye(s.ser, &Dict::new(), uris::SYSTEM_SHUTDOWN));
                }
                None => c.outbox.close(Some(Outgoing::Close {
                    code: crate::transport::websocket::close::GOING_AWAY,
                    reason: "router shutting down",
                })),
            }
        }
    }

    /// Gives back the spare capacity of the session and routing tables, which
    /// never shrink by themselves (after a reconnect storm has gone).
    pub fn shrink_to_fit(&mut self) {
        self.sessions.shrink_to_fit();
        self.conns.shrink_to_fit();
        self.pending.shrink_to_fit();
        for realm in &mut self.realms {
            realm.subscriptions.shrink_to_fit();
            realm.registrations.shrink_to_fit();
            realm.sub_index.shrink_to_fit();
            realm.reg_index.shrink_to_fit();
        }
    }

    /// Ends every connection still open at once (the shutdown grace period
    /// is over); each leaves the tables as its task finishes.
    pub fn kill_all(&mut self) {
        for c in self.conns.values() {
            c.outbox.kill();
        }
    }

    fn abort(&mut self, conn: ConnId, reason: &str, message: &str) {
        self.abort_with(conn, reason, message, crate::transport::websocket::close::NORMAL)
    }

    /// ABORT with `reason`, then the transport close `code` (WebSocket).
    fn abort_with(&mut self, conn: ConnId, reason: &str, message: &str, code: u16) {
        let Some(c) = self.conns.get(&conn) else { return };
        let details = Dict::new().with("message", message.into());
        c.outbox.push(encode::abort(c.ser, &details, reason));
        c.outbox.close(Some(Outgoing::Close {
            code,
            reason: "session aborted",
        }));
        if let Some(s) = c.session {
            self.leave(s);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = None;
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
    fn close_session(&mut self, sid: Id) {
        if let Some(s) = self.sessions.get(&sid) {
            s.outbox.abort(Outgoing::Close {
                code: crate::transport::websocket::close::INTERNAL_ERROR,
                reason: "internal error",
            });
        }
    }

    /// Aborts the session on `conn` with `wamp.error.protocol_violation`.
    pub fn protocol_violation(&mut self, conn: ConnId, message: &str) {
        debug!(conn, message, "protocol violation");
        ShardStats::inc(&self.stats.protocol_violations);
        // WebSocket close 1002 (protocol error), as other routers send.
        self.abort_with(
            conn,
            uris::PROTOCOL_VIOLATION,
            message,
            crate::transport::websocket::close::PROTOCOL_ERROR,
        );
    }

    /// Handles one message received on `conn`.
    pub fn on_message(&mut self, conn: ConnId, msg: Message) {
        ShardStats::inc(&self.stats.messages_in);
        let Some(c) = self.conns.get(&conn) else { return };
        let Some(sid) = c.session else {
            return self.on_message_before_session(conn, msg);
        };
        if let Err(problem) = options::check(&msg) {
            return self.protocol_violation(conn, &problem);
        }
        match msg {
            Message::Hello { .. } => self.protocol_violation(conn, "HELLO received after the session was established"),
            Message::Authenticate { .. } => self.protocol_violation(conn, "AUTHENTICATE received after the session was established"),
            Message::Abort { .. } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.session = None;
                    c.outbox.close(None);
                }
                self.leave(sid);
            }
            Message::Goodbye { .. } => {
                let we_started = self.sessions.get(&sid).is_some_and(|s| s.goodbye_sent);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.session = None;
                    if we_started || self.shutting_down {
                        c.outbox.close(Some(Outgoing::Close {
                            code: crate::transport::websocket::close::NORMAL,
                            reason: "goodbye",
                        }));
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
                self.callee_answer(sid, request, Some(error), details, payload);
            }
            Message::Publish {
                request,
                options,
                topic,
                payload,
            } => self.publish(sid, request, &options, topic, payload),
            Message::Subscribe { request, options, topic } => self.subscribe(sid, request, &options, topic),
            Message::Unsubscribe { request, subscription } => self.unsubscribe(sid, request, subscription),
            Message::Call {
                request,
                options,
                procedure,
                payload,
            } => self.call(sid, request, &options, procedure, payload),
            Message::Cancel { request, .. } => {
                debug!(session = sid, request, "CANCEL ignored: call canceling is not offered");
            }
            Message::Register {
                request,
                options,
                procedure,
            } => self.register(sid, request, &options, procedure),
            Message::Unregister { request, registration } => self.unregister(sid, request, registration),
            Message::Yield { request, payload, .. } => self.callee_answer(sid, request, None, Dict::new(), payload),
        }
    }

    fn on_message_before_session(&mut self, conn: ConnId, msg: Message) {
        match msg {
            Message::Hello { realm, details } => self.hello(conn, realm, details),
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

    fn hello(&mut self, conn: ConnId, realm: String, details: Dict) {
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
        if let Some(Value::List(methods)) = details.get("authmethods") {
            if !methods.iter().any(|m| matches!(m, Value::Str(s) if s == "anonymous")) {
                return self.abort(
                    conn,
                    "wamp.error.no_auth_method",
                    "this router offers anonymous authentication only",
                );
            }
        }
        let Some(&realm_idx) = self.realm_names.get(&realm) else {
            let m = format!("no realm named '{realm}' exists on this router");
            return self.abort(conn, uris::NO_SUCH_REALM, &m);
        };
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let sid = wamp::random_id();
        let authid = details
            .get_str("authid")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("anonymous-{sid}"));
        c.session = Some(sid);
        let outbox = c.outbox.clone();
        let ser = c.ser;
        outbox.push(encode::welcome(ser, sid, &welcome_details(&realm, &authid)));
        self.sessions.insert(
            sid,
            LocalSession {
                realm: realm_idx,
                outbox,
                ser,
                subs: AHashMap::new(),
                sub_ids: AHashMap::new(),
                sub_waiters: Vec::new(),
                regs: AHashMap::new(),
                regs_pending: AHashMap::new(),
                invocations: AHashMap::new(),
                invocation_ids: IdSeq::default(),
                calls_pending: 0,
                goodbye_sent: false,
            },
        );
        self.stats.sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        debug!(session = sid, realm = %realm, shard = self.me, "session joined");
    }

    /// Disposes of everything a session holds.
    fn leave(&mut self, sid: Id) {
        let Some(s) = self.sessions.remove(&sid) else { return };
        self.stats.sessions.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if s.outbox.dropped() > 0 {
            tracing::info!(
                session = sid,
                dropped = s.outbox.dropped(),
                "session left; events were dropped for it (slow consumer)"
            );
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
            .fetch_sub(s.calls_pending as i64, std::sync::atomic::Ordering::Relaxed);
        for (_, inv) in s.invocations {
            let done = CallDone {
                caller: inv.caller,
                call_request: inv.call_request,
                error: Some(uris::CANCELED.to_owned()),
                details: Dict::new(),
                payload: crate::codec::payload_from(Serializer::Json, &[Value::Str("the callee left before answering the call".into())]),
            };
            self.send_to(inv.caller_shard, ShardMsg::CallDone(Box::new(done)));
        }
        debug!(session = sid, shard = self.me, "session left");
    }

    fn session_reply(&self, sid: Id, f: impl FnOnce(Serializer) -> Bytes) {
        if let Some(s) = self.sessions.get(&sid) {
            s.outbox.push(f(s.ser));
            ShardStats::inc(&self.stats.messages_out);
        }
    }

    /// Checks a URI a session sent against the spec's rules and the URI
    /// limits; on failure answers ERROR `wamp.error.invalid_uri` (when the
    /// request wants an answer) and returns false.
    fn uri_ok(&self, sid: Id, request_type: wamp::MessageType, request: Id, uri: &str, check: UriCheck, answer: bool) -> bool {
        let Err(e) = wamp::uri::validate(uri, check, &self.uri_limits) else {
            return true;
        };
        if e != UriError::Invalid {
            ShardStats::inc(&self.stats.uris_refused);
        }
        if answer {
            let what = if matches!(request_type, wamp::MessageType::Publish | wamp::MessageType::Subscribe) {
                "topic"
            } else {
                "procedure"
            };
            self.error_reply(sid, request_type, request, uris::INVALID_URI, &format!("invalid {what} URI: {e}"));
        }
        false
    }

    fn error_reply(&self, sid: Id, request_type: wamp::MessageType, request: Id, error: &str, message: &str) {
        self.session_reply(sid, |ser| {
            let payload = crate::codec::payload_from(ser, &[Value::Str(message.to_owned())]);
            encode::error(ser, request_type, request, &Dict::new(), error, &payload)
        });
    }

    /// Handles a message from another shard (or from this one, direct path).
    pub fn on_shard_message(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::SubscribeReq(c) => self.home_subscribe(c),
            ShardMsg::UnsubscribeReq(c) => self.broadcast(c, ShardMsg::SubscriptionRemove),
            ShardMsg::SubscriptionAdd(c, id) => self.apply_subscription_add(c, id),
            ShardMsg::SubscriptionRemove(c) => self.apply_subscription_remove(c),
            ShardMsg::RegisterReq(c) => self.home_register(c),
            ShardMsg::UnregisterReq(c) => self.broadcast(c, ShardMsg::RegistrationRemove),
            ShardMsg::RegistrationAdd(c, id) => self.apply_registration_add(c, id),
            ShardMsg::RegistrationRemove(c) => self.apply_registration_remove(c),
            ShardMsg::RegisterRefused { token, error } => self.register_refused(token, error),
            ShardMsg::Applied { token, id } => self.applied(token, id),
            ShardMsg::Event(ev) => self.remote_event(*ev),
            ShardMsg::Invoke(inv) => self.invoke_local(*inv),
            ShardMsg::CallDone(done) => self.call_done(*done),
            ShardMsg::CloseSession(sid) => self.close_session(sid),
        }
    }

    /// Sends one change to every shard, this one included (direct path).
    fn broadcast(&mut self, change: TableChange, make: impl Fn(TableChange) -> ShardMsg) {
        for s in 0..self.nshards {
            if s != self.me {
                let m = make(change.clone());
                self.send_to(s, m);
            }
        }
        let m = make(change);
        self.on_shard_message(m);
    }

    fn ack(&mut self, change: &TableChange, id: Id) {
        if change.token != 0 {
            self.send_to(change.origin, ShardMsg::Applied { token: change.token, id });
        }
    }

    /// Asks the home shard of `uri` to apply a change to the replicated
    /// tables on every shard (`make` picks the request), acknowledged under
    /// `token` (0: no acknowledgement wanted).
    fn request_change(
        &mut self,
        realm: RealmIdx,
        policy: MatchPolicy,
        uri: Arc<str>,
        session: Id,
        token: u64,
        make: fn(TableChange) -> ShardMsg,
    ) {
        let home = self.home_of(realm, &uri);
        let change = TableChange {
            realm,
            policy,
            uri,
            shard: self.me,
            session,
            origin: self.me,
            token,
        };
        self.send_to(home, make(change));
    }

    fn expect_acks(&mut self, then: AckThen) -> u64 {
        let token = self.new_token();
        self.pending.insert(
            token,
            PendingAck {
                remaining: self.nshards,
                id: 0,
                then,
            },
        );
        token
    }

    fn applied(&mut self, token: u64, id: Id) {
        let Some(p) = self.pending.get_mut(&token) else { return };
        p.remaining -= 1;
        if id != 0 {
            p.id = id;
        }
        if p.remaining > 0 {
            return;
        }
        let Some(p) = self.pending.remove(&token) else { return };
        match p.then {
            AckThen::Subscribed { session, request, key } => self.subscribe_done(session, request, key, p.id),
            AckThen::Registered { session, request, key } => self.register_done(session, request, key, p.id),
            AckThen::Unsubscribed { session, request } => {
                self.session_reply(session, |ser| encode::unsubscribed(ser, request));
            }
            AckThen::Unregistered { session, request } => {
                self.session_reply(session, |ser| encode::unregistered(ser, request));
            }
        }
    }
}
