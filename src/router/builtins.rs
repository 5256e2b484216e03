//! The router's own procedures: CALLs to them are served by the router (the
//! caller's shard) instead of a callee, in the caller's realm, with what the
//! shards know gathered over the mesh (`router/gather.rs`). Their URIs are
//! in the `wamp.` namespace, which clients may not register.
//!
//! - `wamp.session.count([authroles])`, `wamp.session.list([authroles])`,
//!   `wamp.session.get(session)`: the session meta procedures (the meta
//!   events and `wamp.session.kill*` come with the meta API);
//! - `wamp.registration.remove_callee(registration, session, [reason])`
//!   (also `reason` in kwargs): removes a callee from a registration, the
//!   router side of registration revocation (as Crossbar names it).
//!
//! Per realm, `meta_roles` (default: every role) may call the read-only
//! ones and `meta_admin_roles` (default: none) the ones that act on other
//! sessions; others get `wamp.error.not_authorized`.

use std::sync::atomic::Ordering;

use super::gather::{Answer, KillTarget, Query, Reply};
use super::options::{self, PublishOptions};
use super::session::{LocalSession, Phase, Testament, TransportKind};
use super::{EventExtras, RealmIdx, Router};
use crate::codec::{self, encode};
use crate::config::CallerDisclosure;
use crate::metrics::ShardStats;
use crate::wamp::uri::UriCheck;
use crate::wamp::{self, uris, Dict, Id, MessageType, Payload, Value};

/// A procedure the router serves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Builtin {
    SessionCount,
    SessionList,
    SessionGet,
    SessionKill,
    SessionKillByAuthid,
    SessionKillByAuthrole,
    SessionKillAll,
    AddTestament,
    FlushTestaments,
    RemoveCallee,
}

/// Who may call a procedure of the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Every session: it acts on the caller's own session (testaments).
    Own,
    /// `realm.meta_roles`: it only reads.
    Read,
    /// `realm.meta_admin_roles`: it acts on other sessions.
    Admin,
}

impl Builtin {
    fn access(self) -> Access {
        match self {
            Builtin::AddTestament | Builtin::FlushTestaments => Access::Own,
            Builtin::SessionCount | Builtin::SessionList | Builtin::SessionGet => Access::Read,
            Builtin::SessionKill
            | Builtin::SessionKillByAuthid
            | Builtin::SessionKillByAuthrole
            | Builtin::SessionKillAll
            | Builtin::RemoveCallee => Access::Admin,
        }
    }

    pub(super) fn parse(procedure: &str) -> Option<Self> {
        match procedure {
            "wamp.session.count" => Some(Builtin::SessionCount),
            "wamp.session.list" => Some(Builtin::SessionList),
            "wamp.session.get" => Some(Builtin::SessionGet),
            "wamp.session.kill" => Some(Builtin::SessionKill),
            "wamp.session.kill_by_authid" => Some(Builtin::SessionKillByAuthid),
            "wamp.session.kill_by_authrole" => Some(Builtin::SessionKillByAuthrole),
            "wamp.session.kill_all" => Some(Builtin::SessionKillAll),
            "wamp.session.add_testament" => Some(Builtin::AddTestament),
            "wamp.session.flush_testaments" => Some(Builtin::FlushTestaments),
            "wamp.registration.remove_callee" => Some(Builtin::RemoveCallee),
            _ => None,
        }
    }
}

/// An optional list of authroles (the filter of session.count and list).
fn authroles(arg: Option<&Value>) -> Result<Option<Vec<String>>, ()> {
    match arg {
        None | Some(Value::Null) => Ok(None),
        Some(Value::List(l)) => l
            .iter()
            .map(|v| match v {
                Value::Str(s) => Ok(s.clone()),
                _ => Err(()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(()),
    }
}

fn id_arg(arg: Option<&Value>) -> Option<Id> {
    match arg {
        Some(Value::UInt(id)) if *id > 0 => Some(*id),
        _ => None,
    }
}

impl Router {
    /// A CALL to one of the router's own procedures.
    pub(super) fn builtin_call(&mut self, sid: Id, request: Id, procedure: Builtin, payload: Payload) {
        let Some(s) = self.sessions.get(&sid) else { return };
        let realm = s.realm;
        let r = &self.realms[realm as usize];
        let roles = match procedure.access() {
            Access::Own => None,
            Access::Read => Some(("meta_roles", &r.meta_roles)),
            Access::Admin => Some(("meta_admin_roles", &r.meta_admin_roles)),
        };
        if let Some((key, roles)) = roles {
            if !roles.iter().any(|role| role == "*" || **role == *s.identity.authrole) {
                let m = format!("the realm's {key} does not include the role '{}'", s.identity.authrole);
                return self.error_reply(sid, MessageType::Call, request, uris::NOT_AUTHORIZED, &m);
            }
        }
        let max = self.limits.max_pending_calls;
        if s.builtin_calls >= max {
            ShardStats::inc(&self.stats.calls_refused);
            let m = format!("this session has {max} calls to the router's procedures waiting (limits.max_pending_calls)");
            return self.error_reply(sid, MessageType::Call, request, uris::LIMIT_EXCEEDED, &m);
        }
        let invalid = |router: &Router, m: &str| router.error_reply(sid, MessageType::Call, request, uris::INVALID_ARGUMENT, m);
        let Ok(values) = codec::payload_values(&payload) else {
            return invalid(self, "the arguments cannot be read");
        };
        let args: &[Value] = match values.first() {
            Some(Value::List(l)) => l,
            _ => &[],
        };
        let kwargs = match values.get(1) {
            Some(Value::Dict(d)) => d.clone(),
            _ => Dict::new(),
        };
        let reply = Reply::Call {
            caller: sid,
            request,
            procedure,
        };
        let every: Vec<usize> = (0..self.nshards).collect();
        match procedure {
            Builtin::SessionCount | Builtin::SessionList => {
                let Ok(authroles) = authroles(args.first()) else {
                    return invalid(self, "filter_authroles must be a list of strings");
                };
                let query = if procedure == Builtin::SessionCount {
                    Query::SessionCount { authroles }
                } else {
                    Query::SessionList { authroles }
                };
                self.scatter(reply, realm, query, &every);
            }
            Builtin::SessionGet => {
                let Some(session) = id_arg(args.first()) else {
                    return invalid(self, "wamp.session.get takes a session ID");
                };
                self.scatter(reply, realm, Query::SessionGet { session }, &every);
            }
            Builtin::SessionKill | Builtin::SessionKillByAuthid | Builtin::SessionKillByAuthrole | Builtin::SessionKillAll => {
                let reason = match kwargs.get("reason") {
                    None | Some(Value::Null) => uris::CLOSE_KILLED.to_owned(),
                    Some(Value::Str(r)) if wamp::uri::validate(r, UriCheck::Concrete, &self.uri_limits).is_ok() => r.clone(),
                    Some(_) => {
                        return self.error_reply(
                            sid,
                            MessageType::Call,
                            request,
                            uris::INVALID_URI,
                            "the reason must be a valid, non-empty URI",
                        )
                    }
                };
                let message = match kwargs.get("message") {
                    None | Some(Value::Null) => None,
                    Some(Value::Str(m)) => Some(m.clone()),
                    Some(_) => return invalid(self, "the message must be a string"),
                };
                let target = match (procedure, args.first()) {
                    (Builtin::SessionKill, arg) => match id_arg(arg) {
                        Some(session) => KillTarget::Session(session),
                        None => return invalid(self, "wamp.session.kill takes a session ID"),
                    },
                    (Builtin::SessionKillByAuthid, Some(Value::Str(a))) => KillTarget::Authid(a.clone()),
                    (Builtin::SessionKillByAuthrole, Some(Value::Str(a))) => KillTarget::Authrole(a.clone()),
                    (Builtin::SessionKillAll, _) => KillTarget::All,
                    _ => return invalid(self, "an authid or authrole (a string) is needed"),
                };
                let query = Query::Kill {
                    target,
                    except: sid,
                    reason,
                    message,
                };
                self.scatter(reply, realm, query, &every);
            }
            Builtin::AddTestament | Builtin::FlushTestaments => {
                let result = if procedure == Builtin::AddTestament {
                    self.add_testament(sid, args, &kwargs)
                } else {
                    self.flush_testaments(sid, &kwargs)
                };
                match result {
                    Ok(()) => self.session_reply(sid, |ser| encode::result(ser, request, &Dict::new(), &Payload::empty(ser))),
                    Err((error, message)) => self.error_reply(sid, MessageType::Call, request, error, &message),
                }
            }
            Builtin::RemoveCallee => {
                let (Some(registration), Some(session)) = (id_arg(args.first()), id_arg(args.get(1))) else {
                    return invalid(self, "wamp.registration.remove_callee takes a registration ID and a session ID");
                };
                let reason = match args.get(2).or_else(|| kwargs.get("reason")) {
                    None | Some(Value::Null) => None,
                    Some(Value::Str(r)) => Some(r.clone()),
                    Some(_) => return invalid(self, "the reason must be a string"),
                };
                // the registration's replica here says where the callee is
                let Some(reg) = self.realms[realm as usize].registrations.get(&registration) else {
                    return self.error_reply(sid, MessageType::Call, request, uris::NO_SUCH_REGISTRATION, "no such registration");
                };
                let Some(&(shard, _)) = reg.callees.iter().find(|(_, s)| *s == session) else {
                    return self.error_reply(
                        sid,
                        MessageType::Call,
                        request,
                        uris::NO_SUCH_SESSION,
                        "the session is not a callee of the registration",
                    );
                };
                let query = Query::RemoveCallee {
                    registration,
                    session,
                    reason,
                };
                self.scatter(reply, realm, query, &[shard]);
            }
        }
    }

    /// What this shard answers to a query about `realm`.
    pub(super) fn answer(&mut self, realm: RealmIdx, query: Query) -> Answer {
        let in_realm = |s: &&super::LocalSession, roles: &Option<Vec<String>>| {
            s.realm == realm && roles.as_ref().is_none_or(|r| r.iter().any(|x| **x == *s.identity.authrole))
        };
        match query {
            Query::SessionCount { authroles } => Answer::Count(self.sessions.values().filter(|s| in_realm(s, &authroles)).count() as u64),
            Query::SessionList { authroles } => Answer::Ids(
                self.sessions
                    .iter()
                    .filter(|(_, s)| in_realm(s, &authroles))
                    .map(|(id, _)| *id)
                    .collect(),
            ),
            Query::SessionGet { session } => Answer::Session(
                self.sessions
                    .get(&session)
                    .filter(|s| s.realm == realm)
                    .map(|s| session_details(session, s)),
            ),
            Query::RemoveCallee {
                registration,
                session,
                reason,
            } => Answer::Removed(self.revoke(realm, registration, session, reason)),
            Query::Kill {
                target,
                except,
                reason,
                message,
            } => Answer::Killed(self.kill_local(realm, &target, except, &reason, message.as_deref())),
        }
    }

    /// Removes the local callee `session` from `registration` on every
    /// shard; a callee that announced `registration_revocation` is told
    /// with `[UNREGISTERED, 0, {registration, reason}]`. Its pending
    /// invocations stay: it may still answer them.
    fn revoke(&mut self, realm: RealmIdx, registration: Id, session: Id, reason: Option<String>) -> Result<(), &'static str> {
        let Some(s) = self.sessions.get_mut(&session) else {
            return Err(uris::NO_SUCH_SESSION);
        };
        if s.realm != realm {
            return Err(uris::NO_SUCH_SESSION);
        }
        let Some(key) = s.regs.remove(&registration) else {
            return Err(uris::NO_SUCH_REGISTRATION);
        };
        s.disclose_caller.remove(&key);
        if s.features.revocation {
            let mut details = Dict::new().with("registration", Value::UInt(registration));
            if let Some(r) = reason {
                details.insert("reason", Value::Str(r));
            }
            s.outbox.push(encode::unregistered_revoked(s.ser, &details));
            ShardStats::inc(&self.stats.messages_out);
        }
        self.stats.registrations_revoked.fetch_add(1, Ordering::Relaxed);
        self.drop_callee(realm, key.0, key.1, session, 0);
        Ok(())
    }

    /// All answers of a gather are in (`complete`), or its deadline came:
    /// the caller gets its RESULT or ERROR.
    pub(super) fn gathered(&mut self, reply: Reply, answers: Vec<Answer>, complete: bool) {
        let Reply::Call {
            caller,
            request,
            procedure,
        } = reply;
        let Some(s) = self.sessions.get_mut(&caller) else {
            return; // the caller left meanwhile
        };
        s.builtin_calls = s.builtin_calls.saturating_sub(1);
        let ser = s.ser;
        let found = answers.iter().find_map(|a| match a {
            Answer::Session(Some(d)) => Some(d.clone()),
            _ => None,
        });
        let result = if let Some(details) = found {
            Ok(vec![Value::Dict(details)])
        } else if !complete {
            Err((uris::TIMEOUT, "not every shard answered in time"))
        } else {
            match answers.first() {
                Some(Answer::Count(_)) => Ok(vec![Value::UInt(
                    answers.iter().map(|a| if let Answer::Count(n) = a { *n } else { 0 }).sum(),
                )]),
                Some(Answer::Ids(_)) => Ok(vec![Value::List(
                    answers
                        .into_iter()
                        .flat_map(|a| if let Answer::Ids(ids) = a { ids } else { Vec::new() })
                        .map(Value::UInt)
                        .collect(),
                )]),
                Some(Answer::Session(None)) => Err((uris::NO_SUCH_SESSION, "no session with this ID in the realm")),
                Some(Answer::Removed(Ok(()))) => Ok(Vec::new()),
                Some(Answer::Killed(_)) => {
                    let killed: Vec<Id> = answers
                        .into_iter()
                        .flat_map(|a| if let Answer::Killed(ids) = a { ids } else { Vec::new() })
                        .collect();
                    match procedure {
                        Builtin::SessionKill if killed.is_empty() => {
                            Err((uris::NO_SUCH_SESSION, "no other session with this ID in the realm"))
                        }
                        Builtin::SessionKill => Ok(Vec::new()),
                        Builtin::SessionKillByAuthid => Ok(vec![Value::List(killed.into_iter().map(Value::UInt).collect())]),
                        _ => Ok(vec![Value::UInt(killed.len() as u64)]),
                    }
                }
                Some(Answer::Removed(Err(e))) => Err((*e, "the callee could not be removed")),
                Some(Answer::Session(Some(_))) | None => Err((uris::CANCELED, "no shard answered")),
            }
        };
        match result {
            Ok(args) => {
                let payload = if args.is_empty() {
                    Payload::empty(ser)
                } else {
                    codec::payload_from(ser, &args)
                };
                self.session_reply(caller, |ser| encode::result(ser, request, &Dict::new(), &payload));
            }
            Err((error, message)) => self.error_reply(caller, MessageType::Call, request, error, message),
        }
    }
}

impl Router {
    /// On each shard: closes the local sessions of `realm` that `target`
    /// names (never `except`, the caller) with GOODBYE `reason`; each leaves
    /// at once (its testaments and `on_leave` too, except for `kill_all`),
    /// and its connection waits for the client's GOODBYE reply.
    fn kill_local(&mut self, realm: RealmIdx, target: &KillTarget, except: Id, reason: &str, message: Option<&str>) -> Vec<Id> {
        let hit: Vec<Id> = self
            .sessions
            .iter()
            .filter(|(id, s)| {
                **id != except
                    && s.realm == realm
                    && match target {
                        KillTarget::Session(x) => **id == *x,
                        KillTarget::Authid(a) => *s.identity.authid == **a,
                        KillTarget::Authrole(a) => *s.identity.authrole == **a,
                        KillTarget::All => true,
                    }
            })
            .map(|(id, _)| *id)
            .collect();
        let details = match message {
            Some(m) => Dict::new().with("message", Value::Str(m.to_owned())),
            None => Dict::new(),
        };
        for sid in &hit {
            let Some(s) = self.sessions.get(sid) else { continue };
            s.outbox.push(encode::goodbye(s.ser, &details, reason));
            ShardStats::inc(&self.stats.messages_out);
            ShardStats::inc(&self.stats.sessions_killed);
            if let Some(c) = self.conns.get_mut(&s.conn) {
                c.phase = Phase::Closing;
            }
            self.leave_with(*sid, *target != KillTarget::All);
        }
        hit
    }

    /// `wamp.session.add_testament(topic, args, kwargs, publish_options=,
    /// scope=)`.
    fn add_testament(&mut self, sid: Id, args: &[Value], kwargs: &Dict) -> Result<(), (&'static str, String)> {
        let invalid = |m: &str| Err((uris::INVALID_ARGUMENT, m.to_owned()));
        let Some(Value::Str(topic)) = args.first() else {
            return invalid("wamp.session.add_testament takes a topic");
        };
        if let Err(e) = wamp::uri::validate(topic, UriCheck::Concrete, &self.uri_limits) {
            return Err((uris::INVALID_URI, format!("invalid topic URI: {e}")));
        }
        let event_args = match args.get(1) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::List(l)) => l.clone(),
            Some(_) => return invalid("the event's args must be a list"),
        };
        let event_kwargs = match args.get(2) {
            None | Some(Value::Null) => None,
            Some(Value::Dict(d)) => Some(d.clone()),
            Some(_) => return invalid("the event's kwargs must be a dictionary"),
        };
        let options = match kwargs.get("publish_options") {
            None | Some(Value::Null) => Dict::new(),
            Some(Value::Dict(d)) => d.clone(),
            Some(_) => return invalid("publish_options must be a dictionary"),
        };
        if let Err(e) = options::check_publish(&options) {
            return invalid(&e);
        }
        let detached = scope(kwargs)?;
        let max = self.limits.max_testament_bytes;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return Ok(());
        };
        let payload = codec::payload_of(s.ser, &event_args, event_kwargs.as_ref());
        let bytes = topic.len() + payload.raw.len();
        if s.testament_bytes + bytes > max {
            ShardStats::inc(&self.stats.testaments_refused);
            return Err((
                uris::LIMIT_EXCEEDED,
                format!("this session's testaments would exceed {max} bytes (limits.max_testament_bytes)"),
            ));
        }
        s.testament_bytes += bytes;
        s.testaments.push(Testament {
            topic: topic.clone(),
            payload,
            options: PublishOptions::read(&options),
            detached,
        });
        Ok(())
    }

    /// `wamp.session.flush_testaments(scope=)`.
    fn flush_testaments(&mut self, sid: Id, kwargs: &Dict) -> Result<(), (&'static str, String)> {
        let detached = scope(kwargs)?;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.testaments.retain(|t| t.detached != detached);
            s.testament_bytes = s.testaments.iter().map(|t| t.topic.len() + t.payload.raw.len()).sum();
        }
        Ok(())
    }

    /// Publishes a leaving session's testaments: the `detached` ones, then
    /// the `destroyed` ones, each in the order added (this router has no
    /// session resumption, so a session is detached and destroyed at once).
    pub(super) fn publish_testaments(&mut self, sid: Id, s: &mut LocalSession) {
        if s.testaments.is_empty() {
            return;
        }
        let mut testaments = std::mem::take(&mut s.testaments);
        testaments.sort_by_key(|t| !t.detached);
        let disclosure = self.realms[s.realm as usize].publisher_disclosure;
        for t in testaments {
            let publisher = ((t.options.disclose_me && disclosure != CallerDisclosure::Never) || disclosure == CallerDisclosure::Always)
                .then(|| (sid, s.identity.authid.clone(), s.identity.authrole.clone()));
            let extras = (publisher.is_some() || t.options.receivers.is_some()).then(|| {
                Box::new(EventExtras {
                    ppt: None,
                    publisher,
                    receivers: t.options.receivers,
                })
            });
            ShardStats::inc(&self.stats.testaments_published);
            self.route_publication(s.realm, &t.topic, &t.payload, extras, 0);
        }
    }
}

/// The `scope` keyword of the testament procedures: `detached` (true) or
/// `destroyed` (false, the default).
fn scope(kwargs: &Dict) -> Result<bool, (&'static str, String)> {
    match kwargs.get("scope") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Str(s)) if s == "destroyed" => Ok(false),
        Some(Value::Str(s)) if s == "detached" => Ok(true),
        Some(_) => Err((uris::INVALID_ARGUMENT, "scope must be \"detached\" or \"destroyed\"".to_owned())),
    }
}

/// `wamp.session.get`'s answer (and `wamp.session.on_join`'s): who the
/// session is and how it is connected.
pub(super) fn session_details(id: Id, s: &super::LocalSession) -> Dict {
    let who = &s.identity;
    let text = |v: &str| Value::Str(v.to_owned());
    let mut transport = Dict::new()
        .with(
            "type",
            text(match s.transport.kind {
                TransportKind::WebSocket => "websocket",
                TransportKind::RawSocket => "rawsocket",
            }),
        )
        .with("serializer", text(s.transport.serializer.name()));
    if let Some(peer) = s.transport.peer {
        transport.insert("peer", text(&peer.to_string()));
    }
    Dict::new()
        .with("session", Value::UInt(id))
        .with("authid", text(&who.authid))
        .with("authrole", text(&who.authrole))
        .with("authmethod", text(&who.authmethod))
        .with("authprovider", text(&who.authprovider))
        .with("transport", Value::Dict(transport))
}
