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
use std::sync::Arc;

use super::broker::Stored;
use super::gather::{Answer, KillTarget, Query, Reply};
use super::options::{self, PublishOptions};
use super::session::{LocalSession, Phase, Testament};
use super::{EventExtras, RealmIdx, Router};
use crate::codec::{self, encode};
use crate::config::CallerDisclosure;
use crate::metrics::ShardStats;
use crate::wamp::uri::UriCheck;
use crate::wamp::{self, uris, Dict, Id, MatchPolicy, MessageType, Payload, Value};

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
    SubscriptionList,
    SubscriptionLookup,
    SubscriptionMatch,
    SubscriptionGet,
    SubscriptionListSubscribers,
    SubscriptionCountSubscribers,
    SubscriptionRemoveSubscriber,
    RegistrationList,
    RegistrationLookup,
    RegistrationMatch,
    RegistrationGet,
    RegistrationListCallees,
    RegistrationCountCallees,
    RemoveCallee,
    GetEvents,
    /// `switchyard.router.reload`: reads the configuration file again.
    RouterReload,
}

/// The filters of `wamp.subscription.get_events` (times in ms since the
/// Unix epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub reverse: bool,
    pub limit: Option<usize>,
    pub from_time: Option<u64>,
    pub after_time: Option<u64>,
    pub before_time: Option<u64>,
    pub until_time: Option<u64>,
    pub from_publication: Option<Id>,
    pub after_publication: Option<Id>,
    pub before_publication: Option<Id>,
    pub until_publication: Option<Id>,
}

impl HistoryFilter {
    fn read(kwargs: &Dict) -> Result<Self, String> {
        let time = |key: &str| -> Result<Option<u64>, String> {
            match kwargs.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Str(s)) => humantime::parse_rfc3339_weak(s)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| Some(d.as_millis() as u64))
                    .ok_or_else(|| format!("{key} is not an RFC 3339 time")),
                Some(_) => Err(format!("{key} must be an RFC 3339 string")),
            }
        };
        let id = |key: &str| -> Result<Option<Id>, String> {
            match kwargs.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::UInt(u)) => Ok(Some(*u)),
                Some(_) => Err(format!("{key} must be a publication ID")),
            }
        };
        Ok(HistoryFilter {
            reverse: matches!(kwargs.get("reverse"), Some(Value::Bool(true))),
            limit: match kwargs.get("limit") {
                None | Some(Value::Null) => None,
                Some(Value::UInt(n)) if *n > 0 => Some(*n as usize),
                Some(_) => return Err("limit must be a positive integer".into()),
            },
            from_time: time("from_time")?,
            after_time: time("after_time")?,
            before_time: time("before_time")?,
            until_time: time("until_time")?,
            from_publication: id("from_publication")?,
            after_publication: id("after_publication")?,
            before_publication: id("before_publication")?,
            until_publication: id("until_publication")?,
        })
    }

    /// What one shard can apply to its own events (in the order they
    /// occurred) without knowing the others': the time bounds, and the
    /// limit when no publication bound needs the merged order.
    fn apply_here(&self, events: &mut Vec<(Arc<str>, Stored)>) {
        let times = HistoryFilter {
            from_time: self.from_time,
            after_time: self.after_time,
            before_time: self.before_time,
            until_time: self.until_time,
            ..HistoryFilter::default()
        };
        times.apply(events);
        let by_publication = self.from_publication.is_some()
            || self.after_publication.is_some()
            || self.before_publication.is_some()
            || self.until_publication.is_some();
        if let (Some(n), false) = (self.limit, by_publication) {
            if self.reverse {
                let skip = events.len().saturating_sub(n);
                events.drain(..skip);
            } else {
                events.truncate(n);
            }
        }
    }

    /// Applies the filters to events in the order they occurred.
    fn apply(&self, events: &mut Vec<(Arc<str>, Stored)>) {
        events.retain(|(_, e)| {
            let ms = e.at_us / 1000;
            self.from_time.is_none_or(|t| ms >= t)
                && self.after_time.is_none_or(|t| ms > t)
                && self.before_time.is_none_or(|t| ms < t)
                && self.until_time.is_none_or(|t| ms <= t)
        });
        // a publication bound that names no kept event keeps nothing
        let at = |events: &Vec<(Arc<str>, Stored)>, p: Id| events.iter().position(|(_, e)| e.event.publication == p);
        if let Some(p) = self.from_publication {
            let i = at(events, p).unwrap_or(events.len());
            events.drain(..i);
        }
        if let Some(p) = self.after_publication {
            let i = at(events, p).map_or(events.len(), |i| i + 1);
            events.drain(..i);
        }
        if let Some(p) = self.before_publication {
            let i = at(events, p).unwrap_or(0);
            events.truncate(i);
        }
        if let Some(p) = self.until_publication {
            let i = at(events, p).map_or(0, |i| i + 1);
            events.truncate(i);
        }
        if self.reverse {
            events.reverse();
        }
        if let Some(n) = self.limit {
            events.truncate(n);
        }
    }
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
            Builtin::SessionCount
            | Builtin::SessionList
            | Builtin::SessionGet
            | Builtin::SubscriptionList
            | Builtin::SubscriptionLookup
            | Builtin::SubscriptionMatch
            | Builtin::SubscriptionGet
            | Builtin::SubscriptionListSubscribers
            | Builtin::SubscriptionCountSubscribers
            | Builtin::RegistrationList
            | Builtin::RegistrationLookup
            | Builtin::RegistrationMatch
            | Builtin::RegistrationGet
            | Builtin::RegistrationListCallees
            | Builtin::RegistrationCountCallees
            | Builtin::GetEvents => Access::Read,
            Builtin::SubscriptionRemoveSubscriber
            | Builtin::SessionKill
            | Builtin::SessionKillByAuthid
            | Builtin::SessionKillByAuthrole
            | Builtin::SessionKillAll
            | Builtin::RemoveCallee
            | Builtin::RouterReload => Access::Admin,
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
            "wamp.subscription.list" => Some(Builtin::SubscriptionList),
            "wamp.subscription.lookup" => Some(Builtin::SubscriptionLookup),
            "wamp.subscription.match" => Some(Builtin::SubscriptionMatch),
            "wamp.subscription.get" => Some(Builtin::SubscriptionGet),
            "wamp.subscription.list_subscribers" => Some(Builtin::SubscriptionListSubscribers),
            "wamp.subscription.count_subscribers" => Some(Builtin::SubscriptionCountSubscribers),
            "wamp.subscription.remove_subscriber" => Some(Builtin::SubscriptionRemoveSubscriber),
            "wamp.subscription.get_events" => Some(Builtin::GetEvents),
            "wamp.registration.list" => Some(Builtin::RegistrationList),
            "wamp.registration.lookup" => Some(Builtin::RegistrationLookup),
            "wamp.registration.match" => Some(Builtin::RegistrationMatch),
            "wamp.registration.get" => Some(Builtin::RegistrationGet),
            "wamp.registration.list_callees" => Some(Builtin::RegistrationListCallees),
            "wamp.registration.count_callees" => Some(Builtin::RegistrationCountCallees),
            "wamp.registration.remove_callee" => Some(Builtin::RemoveCallee),
            "switchyard.router.reload" => Some(Builtin::RouterReload),
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

/// An optional `reason` string; `Err` for another type.
fn reason_arg(arg: Option<&Value>) -> Result<Option<String>, ()> {
    match arg {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Str(r)) => Ok(Some(r.clone())),
        Some(_) => Err(()),
    }
}

/// The Details of a revocation notice: `{<what>: id, reason}`.
fn revocation(what: &str, id: Id, reason: Option<String>) -> Dict {
    let details = Dict::new().with(what, Value::UInt(id));
    match reason {
        Some(r) => details.with("reason", Value::Str(r)),
        None => details,
    }
}

fn id_arg(arg: Option<&Value>) -> Option<Id> {
    arg.and_then(Value::as_id)
}

impl Router {
    /// A CALL to one of the router's own procedures.
    pub(super) fn builtin_call(&mut self, sid: Id, request: Id, procedure: Builtin, payload: Payload) {
        let Some(s) = self.sessions.get(&sid) else { return };
        let realm = s.realm;
        let r = &self.realms[realm as usize];
        // with roles configured, the role's call rules decided already
        let roles = match procedure.access() {
            _ if r.roles.enforced() => None,
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
        // the session procedures ask every shard of every node
        let every: Vec<usize> = self.every_shard();
        match procedure {
            Builtin::RouterReload => {
                let Some(control) = &self.control else {
                    let m = "this router has no configuration to reload";
                    return self.error_reply(sid, MessageType::Call, request, uris::NO_SUCH_PROCEDURE, m);
                };
                let asked = super::ReloadRequest {
                    shard: self.me,
                    session: sid,
                    request,
                };
                if control.try_send(asked).is_err() {
                    let m = "a reload is under way; try again later";
                    return self.error_reply(sid, MessageType::Call, request, uris::LIMIT_EXCEEDED, m);
                }
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.builtin_calls += 1;
                }
            }
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
            Builtin::GetEvents => {
                let Some(subscription) = id_arg(args.first()) else {
                    return invalid(self, "a subscription ID is needed");
                };
                let filter = match HistoryFilter::read(&kwargs) {
                    Ok(f) => f,
                    Err(e) => return invalid(self, &e),
                };
                let topic = match kwargs.get("topic") {
                    None | Some(Value::Null) => None,
                    Some(Value::Str(t)) => Some(t.clone()),
                    Some(_) => return invalid(self, "topic must be a URI"),
                };
                // any node's ID of the subscription: every node keeps a copy
                let Some((policy, uri)) = self.subscription_key(realm, subscription) else {
                    return self.error_reply(sid, MessageType::Call, request, uris::NO_SUCH_SUBSCRIPTION, "no such subscription");
                };
                // reading a history is reading its events: the caller's role
                // must be allowed that subscription (decided by the roles or
                // a cached answer), and the topic it asks for
                let readable = |me: &mut Self, uri: &str, policy: MatchPolicy| {
                    matches!(
                        me.authz_lookup(sid, crate::auth::Action::Subscribe, uri, policy),
                        super::auth::Lookup::Decided(crate::auth::Decision::Allow { .. })
                    )
                };
                let topic_ok = topic.as_deref().is_none_or(|t| readable(self, t, MatchPolicy::Exact));
                if !readable(self, &uri, policy) || !topic_ok {
                    let m = "the role may not subscribe to what this history holds";
                    return self.error_reply(sid, MessageType::Call, request, uris::NOT_AUTHORIZED, m);
                }
                // every node keeps every node's history: this node's shards
                let shards: Vec<usize> = if policy == MatchPolicy::Exact {
                    vec![self.home_of(realm, &uri)]
                } else {
                    (0..self.nshards).collect()
                };
                let max_bytes = self.sessions.get(&sid).map_or(0, |s| s.outbox.max_message());
                let reply = Reply::History {
                    caller: sid,
                    request,
                    subscription,
                    pattern: policy != MatchPolicy::Exact,
                    filter: Box::new(filter.clone()),
                };
                let query = Query::History {
                    policy,
                    uri,
                    topic,
                    filter: Box::new(filter),
                    max_bytes,
                };
                self.scatter(reply, realm, query, &shards);
            }
            Builtin::SubscriptionListSubscribers | Builtin::SubscriptionCountSubscribers => {
                let Some(subscription) = id_arg(args.first()) else {
                    return invalid(self, "a subscription ID is needed");
                };
                let Some((policy, uri)) = self.subscription_key(realm, subscription) else {
                    return self.error_reply(sid, MessageType::Call, request, uris::NO_SUCH_SUBSCRIPTION, "no such subscription");
                };
                let elsewhere = self.realms[realm as usize].cluster_index.get(policy, &uri).is_some();
                if procedure == Builtin::SubscriptionCountSubscribers && !elsewhere {
                    // this node's replicas count every shard's subscribers
                    return self.table_reply(sid, request, realm, procedure, args);
                }
                let shards = if elsewhere { every } else { (0..self.nshards).collect() };
                self.scatter(reply, realm, Query::Subscribers { policy, uri }, &shards);
            }
            Builtin::SubscriptionRemoveSubscriber => {
                let (Some(subscription), Some(session)) = (id_arg(args.first()), id_arg(args.get(1))) else {
                    return invalid(self, "wamp.subscription.remove_subscriber takes a subscription ID and a session ID");
                };
                let Ok(reason) = reason_arg(args.get(2).or_else(|| kwargs.get("reason"))) else {
                    return invalid(self, "the reason must be a string");
                };
                let Some((policy, uri)) = self.subscription_key(realm, subscription) else {
                    return self.error_reply(sid, MessageType::Call, request, uris::NO_SUCH_SUBSCRIPTION, "no such subscription");
                };
                let query = Query::RemoveSubscriber {
                    policy,
                    uri,
                    session,
                    reason,
                };
                self.scatter(reply, realm, query, &every);
            }
            Builtin::SubscriptionList
            | Builtin::SubscriptionLookup
            | Builtin::SubscriptionMatch
            | Builtin::SubscriptionGet
            | Builtin::RegistrationList
            | Builtin::RegistrationLookup
            | Builtin::RegistrationMatch
            | Builtin::RegistrationGet
            | Builtin::RegistrationListCallees
            | Builtin::RegistrationCountCallees => self.table_reply(sid, request, realm, procedure, args),
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
                let Ok(reason) = reason_arg(args.get(2).or_else(|| kwargs.get("reason"))) else {
                    return invalid(self, "the reason must be a string");
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

    /// Answers a table procedure from this shard's replicas.
    fn table_reply(&self, sid: Id, request: Id, realm: RealmIdx, procedure: Builtin, args: &[Value]) {
        match self.table_meta(realm, procedure, args) {
            Ok(result) => {
                let Some(ser) = self.sessions.get(&sid).map(|s| s.ser) else {
                    return;
                };
                let payload = codec::payload_from(ser, &result);
                self.session_reply(sid, |ser| encode::result(ser, request, &Dict::new(), &payload));
            }
            Err((error, message)) => self.error_reply(sid, MessageType::Call, request, error, message),
        }
    }

    /// The subscription entry of a subscription ID: one of this node, or
    /// (in a cluster) of another node.
    fn subscription_key(&self, realm: RealmIdx, id: Id) -> Option<(MatchPolicy, Arc<str>)> {
        let r = &self.realms[realm as usize];
        match r.subscriptions.get(&id) {
            Some(s) => Some((s.policy, s.uri.clone())),
            None => r.cluster_subs.get(&id).map(|s| (s.policy, s.uri.clone())),
        }
    }

    /// What this shard answers to a query about `realm`.
    pub(super) fn answer(&mut self, realm: RealmIdx, query: Query) -> Answer {
        let in_realm = |s: &super::LocalSession, roles: &Option<Vec<String>>| {
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
            Query::Retained { policy, uri } => Answer::Retained(self.retained_matching(realm, policy, &uri)),
            Query::History {
                policy,
                uri,
                topic,
                filter,
                max_bytes,
            } => {
                let mut events = self.history_matching(realm, policy, &uri, topic.as_deref());
                events.sort_by_key(|(_, e)| (e.at_us, e.seq));
                filter.apply_here(&mut events);
                let mut bytes = 0;
                let keep = events
                    .iter()
                    .position(|(_, e)| {
                        bytes += e.event.payload.raw.len() + 64;
                        bytes > max_bytes
                    })
                    .unwrap_or(events.len());
                let cut = keep < events.len();
                events.truncate(keep);
                Answer::History(events, cut)
            }
            Query::Subscribers { policy, uri } => {
                let r = &self.realms[realm as usize];
                Answer::Ids(
                    r.sub_index
                        .get(policy, &uri)
                        .and_then(|id| r.subscriptions.get(id))
                        .map(|sub| sub.local.clone())
                        .unwrap_or_default(),
                )
            }
            Query::RemoveSubscriber {
                policy,
                uri,
                session,
                reason,
            } => Answer::Removed(self.revoke_subscriber(realm, (policy, uri), session, reason)),
            Query::Kill {
                target,
                except,
                reason,
                message,
            } => Answer::Killed(self.kill_local(realm, &target, except, &reason, message.as_deref())),
        }
    }

    /// The local session `session` of `realm`.
    fn session_in(&mut self, realm: RealmIdx, session: Id) -> Result<&mut LocalSession, &'static str> {
        self.sessions
            .get_mut(&session)
            .map(|s| &mut **s)
            .filter(|s| s.realm == realm)
            .ok_or(uris::NO_SUCH_SESSION)
    }

    /// Removes the local callee `session` from `registration` on every
    /// shard; a callee that announced `registration_revocation` is told
    /// with `[UNREGISTERED, 0, {registration, reason}]`. Its pending
    /// invocations stay: it may still answer them.
    fn revoke(&mut self, realm: RealmIdx, registration: Id, session: Id, reason: Option<String>) -> Result<(), &'static str> {
        let s = self.session_in(realm, session)?;
        let Some(key) = s.regs.remove(&registration) else {
            return Err(uris::NO_SUCH_REGISTRATION);
        };
        s.disclose_caller.remove(&key);
        if s.features.revocation {
            let details = revocation("registration", registration, reason);
            s.outbox.push(encode::revoked(s.ser, MessageType::Unregistered, &details));
            ShardStats::inc(&self.stats.messages_out);
        }
        self.stats.registrations_revoked.fetch_add(1, Ordering::Relaxed);
        self.drop_callee(realm, key.0, key.1, session, 0);
        Ok(())
    }

    /// All answers of a gather are in (`complete`), or its deadline came:
    /// the caller gets its RESULT or ERROR.
    pub(super) fn gathered(&mut self, reply: Reply, answers: Vec<Answer>, complete: bool) {
        let (caller, request, procedure) = match reply {
            Reply::Call {
                caller,
                request,
                procedure,
            } => (caller, request, procedure),
            Reply::Retained {
                session,
                subscription,
                policy,
                fetch,
            } => return self.deliver_retained(session, subscription, policy, fetch, answers),
            Reply::History {
                caller,
                request,
                subscription,
                pattern,
                filter,
            } => return self.history_result(caller, request, subscription, pattern, &filter, answers, complete),
        };
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
                Some(Answer::Ids(_)) if procedure == Builtin::SubscriptionCountSubscribers => Ok(vec![Value::UInt(
                    answers
                        .iter()
                        .map(|a| if let Answer::Ids(l) = a { l.len() as u64 } else { 0 })
                        .sum(),
                )]),
                Some(Answer::Ids(_)) => Ok(vec![Value::List(
                    answers
                        .into_iter()
                        .flat_map(|a| if let Answer::Ids(ids) = a { ids } else { Vec::new() })
                        .map(Value::UInt)
                        .collect(),
                )]),
                Some(Answer::Session(None)) => Err((uris::NO_SUCH_SESSION, "no session with this ID in the realm")),
                // any shard that removed it: done; otherwise the most telling error
                Some(Answer::Removed(_)) if answers.iter().any(|a| matches!(a, Answer::Removed(Ok(())))) => Ok(Vec::new()),
                Some(Answer::Removed(_))
                    if answers
                        .iter()
                        .any(|a| matches!(a, Answer::Removed(Err(e)) if *e == uris::NO_SUCH_SUBSCRIPTION)) =>
                {
                    Err((uris::NO_SUCH_SUBSCRIPTION, "the session is not subscribed to the subscription"))
                }
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
                Some(Answer::Removed(Err(e))) => Err((*e, "it could not be removed")),
                Some(Answer::Removed(Ok(()))) => Ok(Vec::new()),
                Some(Answer::Session(Some(_)) | Answer::Retained(_) | Answer::History(..)) | None => {
                    Err((uris::CANCELED, "no shard answered"))
                }
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
    pub(super) fn kill_local(&mut self, realm: RealmIdx, target: &KillTarget, except: Id, reason: &str, message: Option<&str>) -> Vec<Id> {
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
                // it has as long as a handshake to answer GOODBYE
                let grace = std::time::Duration::from_millis(self.limits.handshake_timeout_ms);
                c.closing_timer = Some(
                    self.timers
                        .start(self.clock.now(), grace, super::timers::Due::Closing { conn: s.conn }),
                );
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
        if topic.starts_with("wamp.") {
            return Err((uris::INVALID_URI, "topics in the wamp. namespace are the router's".into()));
        }
        // a testament is a publication: the role must be allowed it now (an
        // authorizer is not asked when the session is gone, so only a
        // decision the roles or the cache hold counts)
        if let super::auth::Lookup::Ask(_) | super::auth::Lookup::Decided(crate::auth::Decision::Deny) =
            self.authz_lookup(sid, crate::auth::Action::Publish, topic, MatchPolicy::Exact)
        {
            let role = self.sessions.get(&sid).map(|s| s.identity.authrole.to_string()).unwrap_or_default();
            return Err((uris::NOT_AUTHORIZED, format!("the role '{role}' may not publish to '{topic}'")));
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
        let testament = Testament {
            topic: topic.clone(),
            payload: codec::payload_of(s.ser, &event_args, event_kwargs.as_ref()),
            options: PublishOptions::read(&options),
            detached,
        };
        let bytes = testament.bytes();
        if s.testament_bytes + bytes > max {
            ShardStats::inc(&self.stats.testaments_refused);
            return Err((
                uris::LIMIT_EXCEEDED,
                format!("this session's testaments would exceed {max} bytes (limits.max_testament_bytes)"),
            ));
        }
        s.testament_bytes += bytes;
        s.testaments.push(testament);
        Ok(())
    }

    /// `wamp.session.flush_testaments(scope=)`.
    fn flush_testaments(&mut self, sid: Id, kwargs: &Dict) -> Result<(), (&'static str, String)> {
        let detached = scope(kwargs)?;
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.testaments.retain(|t| t.detached != detached);
            s.testament_bytes = s.testaments.iter().map(Testament::bytes).sum();
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

impl Router {
    /// The subscription and registration meta procedures that this shard's
    /// replica answers by itself (the same on every shard).
    fn table_meta(&self, realm: RealmIdx, procedure: Builtin, args: &[Value]) -> Result<Vec<Value>, (&'static str, &'static str)> {
        let r = &self.realms[realm as usize];
        let ids = |ids: Vec<Id>| Value::List(ids.into_iter().map(Value::UInt).collect());
        let uri_arg = || match args.first() {
            Some(Value::Str(s)) => Ok(s.as_str()),
            _ => Err((uris::INVALID_ARGUMENT, "a URI is needed")),
        };
        let policy_arg = || match args.get(1) {
            Some(Value::Dict(o)) => match o.get_str("match") {
                None => Ok(MatchPolicy::Exact),
                Some(m) => MatchPolicy::parse(m).ok_or((uris::INVALID_ARGUMENT, "unknown match policy")),
            },
            None | Some(Value::Null) => Ok(MatchPolicy::Exact),
            Some(_) => Err((uris::INVALID_ARGUMENT, "the options must be a dictionary")),
        };
        let id = || id_arg(args.first()).ok_or((uris::INVALID_ARGUMENT, "an ID is needed"));
        let by_policy = |entries: Vec<(MatchPolicy, Id)>| {
            let list = |p| ids(entries.iter().filter(|(q, _)| *q == p).map(|(_, id)| *id).collect());
            Value::Dict(
                Dict::new()
                    .with("exact", list(MatchPolicy::Exact))
                    .with("prefix", list(MatchPolicy::Prefix))
                    .with("wildcard", list(MatchPolicy::Wildcard)),
            )
        };
        let no_sub = (uris::NO_SUCH_SUBSCRIPTION, "no such subscription");
        let no_reg = (uris::NO_SUCH_REGISTRATION, "no such registration");
        // in a cluster, an entry only other nodes have is named by the
        // lowest of their IDs; one this node has, by its own
        let remote_id = |policy: MatchPolicy, uri: &str| {
            if r.sub_index.get(policy, uri).is_some() {
                return None;
            }
            r.cluster_index.get(policy, uri).and_then(|m| m.ids.iter().min().copied())
        };
        Ok(match procedure {
            Builtin::SubscriptionList => {
                let mut all: Vec<(MatchPolicy, Id)> = r.subscriptions.values().map(|s| (s.policy, s.id)).collect();
                for (id, s) in &r.cluster_subs {
                    if remote_id(s.policy, &s.uri) == Some(*id) {
                        all.push((s.policy, *id));
                    }
                }
                vec![by_policy(all)]
            }
            Builtin::SubscriptionLookup => {
                let (uri, policy) = (uri_arg()?, policy_arg()?);
                let id = r.sub_index.get(policy, uri).copied().or_else(|| remote_id(policy, uri));
                vec![id.map_or(Value::Null, Value::UInt)]
            }
            Builtin::SubscriptionMatch => {
                let uri = uri_arg()?;
                let mut found = Vec::new();
                r.sub_index.for_each_match(uri, |_, id| found.push(*id));
                r.cluster_index.for_each_match(uri, |policy, m| {
                    let here = m
                        .ids
                        .first()
                        .and_then(|id| r.cluster_subs.get(id))
                        .is_some_and(|s| r.sub_index.get(policy, &s.uri).is_some());
                    if let (false, Some(id)) = (here, m.ids.iter().min()) {
                        found.push(*id);
                    }
                });
                vec![if found.is_empty() { Value::Null } else { ids(found) }]
            }
            Builtin::SubscriptionGet => {
                let id = id()?;
                let details = match (r.subscriptions.get(&id), r.cluster_subs.get(&id)) {
                    (Some(sub), _) => super::broker::subscription_details(sub),
                    (None, Some(s)) => Dict::new()
                        .with("id", Value::UInt(id))
                        .with("created", Value::Str(super::iso_time(s.created_ms)))
                        .with("uri", Value::Str(s.uri.to_string()))
                        .with("match", Value::Str(s.policy.as_str().into())),
                    (None, None) => return Err(no_sub),
                };
                vec![Value::Dict(details)]
            }
            Builtin::SubscriptionCountSubscribers => {
                // (only other nodes have it: counted by a scatter instead)
                let sub = r.subscriptions.get(&id()?).ok_or(no_sub)?;
                let others: u64 = sub
                    .remote
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != self.me)
                    .map(|(_, n)| u64::from(*n))
                    .sum();
                vec![Value::UInt(sub.local.len() as u64 + others)]
            }
            Builtin::RegistrationList => vec![by_policy(r.registrations.values().map(|g| (g.policy, g.id)).collect())],
            Builtin::RegistrationLookup => {
                let (uri, policy) = (uri_arg()?, policy_arg()?);
                vec![r.reg_index.get(policy, uri).map_or(Value::Null, |id| Value::UInt(*id))]
            }
            Builtin::RegistrationMatch => vec![r.reg_index.best_match(uri_arg()?).map_or(Value::Null, |(_, id)| Value::UInt(*id))],
            Builtin::RegistrationGet => vec![Value::Dict(super::dealer::registration_details(
                r.registrations.get(&id()?).ok_or(no_reg)?,
            ))],
            Builtin::RegistrationListCallees => {
                let reg = r.registrations.get(&id()?).ok_or(no_reg)?;
                vec![ids(reg.callees.iter().map(|(_, s)| *s).collect())]
            }
            Builtin::RegistrationCountCallees => vec![Value::UInt(r.registrations.get(&id()?).ok_or(no_reg)?.callees.len() as u64)],
            _ => return Err((uris::INVALID_ARGUMENT, "not a table procedure")),
        })
    }

    /// Removes the local subscriber `session` from `subscription` on every
    /// shard; one that announced `subscription_revocation` is told with
    /// `[UNSUBSCRIBED, 0, {subscription, reason}]`.
    fn revoke_subscriber(
        &mut self,
        realm: RealmIdx,
        key: (MatchPolicy, Arc<str>),
        session: Id,
        reason: Option<String>,
    ) -> Result<(), &'static str> {
        let s = self.session_in(realm, session)?;
        // the session's own ID of the entry (another node's differs)
        let Some(&Some(subscription)) = s.subs.get(&key) else {
            return Err(uris::NO_SUCH_SUBSCRIPTION);
        };
        s.subs.remove(&key);
        s.sub_ids.remove(&subscription);
        if s.features.sub_revocation {
            let details = revocation("subscription", subscription, reason);
            s.outbox.push(encode::revoked(s.ser, MessageType::Unsubscribed, &details));
            ShardStats::inc(&self.stats.messages_out);
        }
        ShardStats::inc(&self.stats.subscriptions_revoked);
        self.drop_subscriber(realm, key.0, key.1, session, 0);
        Ok(())
    }
}

impl Router {
    /// `wamp.subscription.get_events`' RESULT: the events the shards kept,
    /// in the order they occurred (or reversed), filtered, as Event
    /// dictionaries; only those the caller would have received (black and
    /// whitelists by authid and authrole).
    #[allow(clippy::too_many_arguments)]
    fn history_result(
        &mut self,
        caller: Id,
        request: Id,
        subscription: Id,
        pattern: bool,
        filter: &HistoryFilter,
        answers: Vec<Answer>,
        complete: bool,
    ) {
        let Some(s) = self.sessions.get_mut(&caller) else { return };
        s.builtin_calls = s.builtin_calls.saturating_sub(1);
        if !complete {
            return self.error_reply(
                caller,
                MessageType::Call,
                request,
                uris::TIMEOUT,
                "not every shard answered in time",
            );
        }
        let Some(s) = self.sessions.get(&caller) else { return };
        let (authid, authrole) = (s.identity.authid.clone(), s.identity.authrole.clone());
        if answers.iter().any(|a| matches!(a, Answer::History(_, true))) {
            return self.error_reply(
                caller,
                MessageType::Call,
                request,
                uris::PAYLOAD_SIZE_EXCEEDED,
                "the events are more than the caller accepts in one message; ask for fewer (limit)",
            );
        }
        let mut events: Vec<(Arc<str>, Stored)> = answers
            .into_iter()
            .flat_map(|a| if let Answer::History(e, _) = a { e } else { Vec::new() })
            .filter(|(_, e)| {
                e.event.extras.as_deref().and_then(|x| x.receivers.as_deref()).is_none_or(|r| {
                    r.eligible_authid.as_ref().is_none_or(|l| l.iter().any(|a| **a == *authid))
                        && r.eligible_authrole.as_ref().is_none_or(|l| l.iter().any(|a| **a == *authrole))
                        && !r.exclude_authid.iter().any(|a| **a == *authid)
                        && !r.exclude_authrole.iter().any(|a| **a == *authrole)
                })
            })
            .collect();
        events.sort_by_key(|(_, e)| (e.at_us, e.seq));
        filter.apply(&mut events);
        let list: Vec<Value> = events
            .iter()
            .map(|(topic, e)| {
                let mut details = super::broker::event_details(e.event.extras.as_deref());
                if pattern {
                    details.insert("topic", Value::Str(topic.to_string()));
                }
                let values = codec::payload_values(&e.event.payload).unwrap_or_default();
                let mut d = Dict::new()
                    .with("timestamp", Value::Str(super::iso_time(e.at_us / 1000)))
                    .with("subscription", Value::UInt(subscription))
                    .with("publication", Value::UInt(e.event.publication))
                    .with("details", Value::Dict(details));
                let mut values = values.into_iter();
                if let Some(args) = values.next() {
                    d.insert("args", args);
                }
                if let Some(kwargs) = values.next() {
                    d.insert("kwargs", kwargs);
                }
                Value::Dict(d)
            })
            .collect();
        let Some(ser) = self.sessions.get(&caller).map(|s| s.ser) else {
            return;
        };
        let payload = codec::payload_from(ser, &[Value::List(list)]);
        let frame = encode::result(ser, request, &Dict::new(), &payload);
        match self.sessions.get(&caller) {
            Some(s) if s.outbox.fits(frame.len()) => {
                s.outbox.push(frame);
                ShardStats::inc(&self.stats.messages_out);
            }
            Some(_) => self.error_reply(
                caller,
                MessageType::Call,
                request,
                uris::PAYLOAD_SIZE_EXCEEDED,
                "the events are more than the caller accepts in one message; ask for fewer (limit)",
            ),
            None => {}
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
    let transport = s.transport.details();
    Dict::new()
        .with("session", Value::UInt(id))
        .with("authid", text(&who.authid))
        .with("authrole", text(&who.authrole))
        .with("authmethod", text(&who.authmethod))
        .with("authprovider", text(&who.authprovider))
        .with("transport", Value::Dict(transport))
}
