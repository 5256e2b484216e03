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

use super::gather::{Answer, Query, Reply};
use super::session::TransportKind;
use super::{RealmIdx, Router};
use crate::codec::{self, encode};
use crate::metrics::ShardStats;
use crate::wamp::{uris, Dict, Id, MessageType, Payload, Value};

/// A procedure the router serves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Builtin {
    SessionCount,
    SessionList,
    SessionGet,
    RemoveCallee,
}

impl Builtin {
    /// Whether the procedure acts on other sessions (`meta_admin_roles`), or
    /// only reads (`meta_roles`).
    fn acts_on_others(self) -> bool {
        matches!(self, Builtin::RemoveCallee)
    }

    pub(super) fn parse(procedure: &str) -> Option<Self> {
        match procedure {
            "wamp.session.count" => Some(Builtin::SessionCount),
            "wamp.session.list" => Some(Builtin::SessionList),
            "wamp.session.get" => Some(Builtin::SessionGet),
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
        let roles = if procedure.acts_on_others() {
            &r.meta_admin_roles
        } else {
            &r.meta_roles
        };
        if !roles.iter().any(|role| role == "*" || **role == *s.identity.authrole) {
            let key = if procedure.acts_on_others() {
                "meta_admin_roles"
            } else {
                "meta_roles"
            };
            let m = format!("the realm's {key} does not include the role '{}'", s.identity.authrole);
            return self.error_reply(sid, MessageType::Call, request, uris::NOT_AUTHORIZED, &m);
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
        let reply = Reply::Call { caller: sid, request };
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
        let Reply::Call { caller, request } = reply;
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

/// `wamp.session.get`'s answer: who the session is and how it is connected.
fn session_details(id: Id, s: &super::LocalSession) -> Dict {
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
