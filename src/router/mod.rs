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
//!
//! Files, one concern each:
//! - `mod.rs`: the [`Router`] of one shard, its realms and configuration,
//!   replies to sessions, introspection for tests;
//! - `messages.rs`: what shards send each other ([`ShardMsg`]) and how a
//!   router reaches them ([`ShardLink`]);
//! - `tables.rs`: replication of the routing tables through home shards,
//!   router-scope IDs, acknowledgements;
//! - `session.rs`: connections and sessions on this shard, HELLO to
//!   GOODBYE/ABORT, the dispatch of every message a session sends;
//! - `broker.rs`, `dealer.rs`: subscriptions and PUBLISH, registrations and
//!   CALL;
//! - `options.rs`: the type checks of predefined options; `trie.rs`: the URI
//!   index.

mod auth;
mod broker;
mod builtins;
mod calls;
mod cluster;
mod dealer;
mod gather;
mod messages;
mod options;
mod reconfig;
mod session;
mod tables;
mod timers;
pub mod trie;

use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;
use tracing::warn;

use crate::codec::encode;
use crate::config::{Limits, RealmConfig, SlowConsumerPolicy};
use crate::metrics::ShardStats;
use crate::wamp::message::Serializer;
use crate::wamp::uri::{UriCheck, UriError, UriLimits};
use crate::wamp::{self, uris, Dict, Id, MatchPolicy, Value};

pub use auth::TlsInfo;
pub use broker::{EventExtras, RetainMsg, Retained, Subscription};
pub use dealer::Registration;
pub use gather::{Answer, Query, QueryMsg};
pub use messages::{CallChunk, CallDone, Concerns, EventMsg, InterruptMsg, InvokeMsg, ShardLink, ShardMsg, TableChange};
pub use options::CancelMode;
pub use options::InvokePolicy;
pub use options::Receivers;
pub use reconfig::Reconfigured;
use session::{Conn, LocalSession};
pub use session::{SessionIdentity, TransportInfo, TransportKind};
use tables::PendingAck;
pub use timers::Clock;

/// A connection on this shard.
pub type ConnId = u64;

/// Index of a realm; the same on every shard (realms come from the config).
pub type RealmIdx = u32;

/// A realm's replicated routing tables.
#[derive(Debug, Default)]
pub struct Realm {
    pub name: Arc<str>,
    /// In the configuration now: a realm removed by a reload keeps its
    /// index (other shards' messages may still name it) but takes no
    /// sessions; one added stays out of `realm_names` until every shard has
    /// it ([`Router::open_realms`]).
    pub present: bool,
    /// When callers are named to callees (`realm.caller_disclosure`).
    pub caller_disclosure: crate::config::CallerDisclosure,
    /// When publishers are named to subscribers (`realm.publisher_disclosure`).
    pub publisher_disclosure: crate::config::CallerDisclosure,
    /// Who may call the router's read-only meta procedures, and the ones
    /// that act on other sessions (`realm.meta_roles`, `meta_admin_roles`).
    pub meta_roles: Vec<String>,
    pub meta_admin_roles: Vec<String>,
    /// Who may log in, and how; the roles and what they may do.
    pub auth: Arc<crate::auth::RealmAuth>,
    pub roles: Arc<crate::auth::Roles>,
    /// Dynamic authentication and authorization: the procedures to ask.
    pub authenticator: Option<Arc<auth::Dynamic>>,
    pub authorizer: Option<Arc<auth::Dynamic>>,
    /// Event retention: on or off, and this shard's share of the bounds.
    pub retention: bool,
    pub max_retained_events: usize,
    pub max_retained_bytes: usize,
    /// The retained events of the topics whose home is this shard, with
    /// when they were published.
    pub(crate) retained: AHashMap<Arc<str>, broker::Stored>,
    pub(crate) retained_bytes: usize,
    /// Event history: the rules (policy, pattern, events per topic, max
    /// age in ms), the kept events of the topics whose home is this shard,
    /// and this shard's share of the bound.
    pub history_rules: Vec<(MatchPolicy, String, usize, u64)>,
    pub(crate) history: AHashMap<Arc<str>, std::collections::VecDeque<broker::Stored>>,
    pub(crate) history_bytes: usize,
    pub max_history_bytes: usize,
    /// Subscriptions (entries) to `wamp.` topics in this replica: meta
    /// events are built only when there is one.
    pub(crate) meta_subscriptions: usize,
    pub(crate) sub_index: trie::UriIndex<Id>,
    pub(crate) subscriptions: AHashMap<Id, Subscription>,
    pub(crate) reg_index: trie::UriIndex<Id>,
    pub(crate) registrations: AHashMap<Id, Registration>,
    /// What its sessions send, by message type (`/metrics`).
    pub(crate) counters: Arc<crate::metrics::RealmCounters>,
    /// Who may use the HTTP bridge on this realm.
    pub bridge_keys: Arc<Vec<BridgeKey>>,
    /// The subscriptions of other cluster nodes: per (policy, URI) the
    /// nodes that have one; how many entries, and how many of `wamp.`
    /// topics (meta events are built for those too).
    pub(crate) cluster_index: trie::UriIndex<RemoteEntry>,
    pub(crate) cluster_interests: usize,
    pub(crate) cluster_meta: usize,
    /// The other nodes' subscription entries by their IDs (the meta API
    /// takes any node's subscription ID).
    pub(crate) cluster_subs: AHashMap<Id, RemoteSub>,
}

/// A subscription entry of other cluster nodes: the nodes, and the entry's
/// ID on each (they differ per node).
#[derive(Debug, Default)]
pub(crate) struct RemoteEntry {
    pub nodes: crate::cluster::NodeMask,
    pub ids: Vec<Id>,
}

/// Another node's subscription entry, found by its ID.
#[derive(Debug, Clone)]
pub(crate) struct RemoteSub {
    pub policy: MatchPolicy,
    pub uri: Arc<str>,
    pub created_ms: u64,
}

/// A client of the HTTP bridge (`[[realm.bridge_key]]`).
#[derive(Debug, Clone)]
pub struct BridgeKey {
    pub authid: Arc<str>,
    pub role: Arc<str>,
    /// SHA-256 of its bearer token.
    pub token_sha256: Option<[u8; 32]>,
    /// The key its signed requests are signed with.
    pub hmac_secret: Option<Vec<u8>>,
}

impl Realm {
    /// A realm's settings from its configuration (empty tables; its
    /// authenticator and authorizer are linked by [`link_dynamic`]).
    fn from_config(r: &RealmConfig, nshards: usize) -> Realm {
        Realm {
            name: r.name.as_str().into(),
            present: true,
            caller_disclosure: r.caller_disclosure,
            publisher_disclosure: r.publisher_disclosure,
            meta_roles: r.meta_roles.clone(),
            meta_admin_roles: r.meta_admin_roles.clone(),
            auth: Arc::new(crate::auth::RealmAuth::compile(r, 0).unwrap_or_else(|e| {
                warn!(realm = %r.name, error = %e, "realm's principals refused: nobody can log in with a credential");
                crate::auth::RealmAuth {
                    anonymous: r.anonymous.then(|| r.anonymous_role.as_str().into()),
                    ..Default::default()
                }
            })),
            roles: Arc::new(crate::auth::Roles::compile(r, 0).unwrap_or_else(|e| {
                warn!(realm = %r.name, error = %e, "realm's roles refused: its sessions may do nothing");
                crate::auth::Roles {
                    roles: Some(AHashMap::new()),
                    list: Vec::new(),
                }
            })),
            retention: r.retention,
            cluster_index: Default::default(),
            cluster_interests: 0,
            cluster_meta: 0,
            cluster_subs: AHashMap::new(),
            history_rules: r
                .history
                .iter()
                .map(|h| {
                    let policy = h.policy.as_deref().and_then(MatchPolicy::parse).unwrap_or(MatchPolicy::Exact);
                    (policy, h.uri.clone(), h.limit, h.max_age_ms)
                })
                .collect(),
            max_history_bytes: r.max_history_bytes.div_ceil(nshards.max(1)),
            max_retained_events: r.max_retained_events.div_ceil(nshards.max(1)),
            max_retained_bytes: r.max_retained_bytes.div_ceil(nshards.max(1)),
            bridge_keys: Arc::new(
                r.bridge_keys
                    .iter()
                    .map(|k| BridgeKey {
                        authid: k.authid.as_str().into(),
                        role: k.role.as_str().into(),
                        token_sha256: k
                            .token_sha256
                            .as_deref()
                            .and_then(|t| hex::decode(t).ok())
                            .and_then(|t| <[u8; 32]>::try_from(t).ok()),
                        hmac_secret: k.hmac_secret.as_ref().map(|s| s.as_bytes().to_vec()),
                    })
                    .collect(),
            ),
            ..Realm::default()
        }
    }

    /// Takes over the settings of `fresh` (made by [`Realm::from_config`]),
    /// keeping the routing tables and what the realm holds.
    fn take_settings(&mut self, fresh: Realm) {
        self.present = true;
        self.caller_disclosure = fresh.caller_disclosure;
        self.publisher_disclosure = fresh.publisher_disclosure;
        self.meta_roles = fresh.meta_roles;
        self.meta_admin_roles = fresh.meta_admin_roles;
        self.auth = fresh.auth;
        self.roles = fresh.roles;
        self.retention = fresh.retention;
        self.history_rules = fresh.history_rules;
        self.max_history_bytes = fresh.max_history_bytes;
        self.max_retained_events = fresh.max_retained_events;
        self.max_retained_bytes = fresh.max_retained_bytes;
        self.bridge_keys = fresh.bridge_keys;
    }
}

/// Links each realm to the realm of its authenticator and authorizer
/// procedures (its own unless the config names another).
fn link_dynamic(realms: &mut [Realm], cfgs: &[RealmConfig], names: &AHashMap<String, RealmIdx>) {
    for c in cfgs {
        let Some(&i) = names.get(&c.name) else { continue };
        let on = |other: &Option<String>| other.as_ref().and_then(|n| names.get(n).copied()).unwrap_or(i);
        let r = &mut realms[i as usize];
        r.authenticator = c.authenticator.as_ref().map(|a| {
            Arc::new(auth::Dynamic {
                procedure: a.procedure.clone(),
                realm: on(&a.realm),
                timeout: std::time::Duration::from_millis(a.timeout_ms),
                methods: a.methods.iter().filter_map(|m| crate::auth::Method::parse(m)).collect(),
                ttl: std::time::Duration::ZERO,
            })
        });
        r.authorizer = c.authorizer.as_ref().map(|a| {
            Arc::new(auth::Dynamic {
                procedure: a.procedure.clone(),
                realm: on(&a.realm),
                timeout: std::time::Duration::from_millis(a.timeout_ms),
                methods: Vec::new(),
                ttl: std::time::Duration::from_millis(a.cache_ttl_ms),
            })
        });
    }
}

/// A session's call to `switchyard.router.reload`, for the process; the
/// outcome comes back through [`Router::reload_answer`].
#[derive(Debug, Clone, Copy)]
pub struct ReloadRequest {
    pub shard: usize,
    pub session: Id,
    pub request: Id,
}

/// Static facts every shard's router needs.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub realms: Vec<RealmConfig>,
    /// The `[limits]` section: what one session may hold and send.
    pub limits: Limits,
}

impl RouterConfig {
    /// One realm, the default limits.
    pub fn single_realm(name: &str) -> Self {
        RouterConfig {
            realms: vec![RealmConfig::named(name)],
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
    sessions: AHashMap<Id, Box<LocalSession>>,
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
    timers: timers::Timers,
    clock: Clock,
    /// Scatter/gathers this shard started and waits on.
    gathers: AHashMap<u64, gather::Gather>,
    /// Publications to keep this shard has sent, in order (ties of equal
    /// timestamps in a history).
    keep_seq: u64,
    /// Where kept history events are written through (a durable history).
    history_store: Option<crate::history_store::StoreHandle>,
    /// Where costly authentication checks go (none: they run inline).
    auth_pool: Option<crate::auth::pool::Submitter>,
    /// Failed logins per peer address (bounded by `limits.max_auth_backoff_peers`).
    backoff: AHashMap<std::net::IpAddr, auth::Backoff>,
    /// Authorization decisions, and how many (bounded by `limits.authorization_cache`).
    authz_cache: auth::AuthzCache,
    /// The authorizers' answers (counted in `authz_cached` too).
    dyn_cache: auth::DynCache,
    authz_cached: usize,
    /// Whether any realm has roles or an authorizer, and an authorizer: a
    /// router without pays nothing for authorization per message.
    authz_any: bool,
    authorizer_any: bool,
    /// The router's own calls (to authenticators and authorizers).
    router_calls: calls::RouterCalls,
    /// Where `switchyard.router.reload` asks the process to reload.
    control: Option<flume::Sender<ReloadRequest>>,
    /// This node's link to the other nodes of its cluster (none: alone).
    cluster: Option<crate::cluster::ClusterLink>,
    /// The other nodes by their number here (`crate::cluster::FromNode::NodeUp`).
    node_names: Vec<Option<Arc<str>>>,
    /// Their shard counts (for the session meta procedures' scatter).
    node_shards: Vec<usize>,
    pub(crate) stats: Arc<ShardStats>,
}

/// The wall-clock time in ms since the Unix epoch (for the `created` of
/// the meta API; timers use the core's `Clock`).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The wall-clock time in seconds since the Unix epoch.
pub fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The wall-clock time in µs since the Unix epoch (the order of kept events).
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// ms since the Unix epoch as an ISO 8601 (RFC 3339) UTC time.
pub(crate) fn iso_time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

impl Router {
    /// A router for shard `me` of `nshards`, reaching the others over `link`.
    pub fn new(me: usize, nshards: usize, cfg: &RouterConfig, link: ShardLink, stats: Arc<ShardStats>) -> Self {
        let mut realms: Vec<Realm> = cfg.realms.iter().map(|r| Realm::from_config(r, nshards)).collect();
        for r in &mut realms {
            r.counters = stats.realms.get(&r.name);
        }
        let realm_names: AHashMap<String, RealmIdx> = cfg
            .realms
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i as RealmIdx))
            .collect();
        link_dynamic(&mut realms, &cfg.realms, &realm_names);
        let authorizer_any = realms.iter().any(|r| r.authorizer.is_some());
        let authz_any = authorizer_any || realms.iter().any(|r| r.roles.enforced());
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
            timers: timers::Timers::default(),
            clock: Clock::System,
            gathers: AHashMap::new(),
            keep_seq: 0,
            history_store: None,
            auth_pool: None,
            backoff: AHashMap::new(),
            authz_cache: AHashMap::new(),
            dyn_cache: AHashMap::new(),
            authz_cached: 0,
            authz_any,
            authorizer_any,
            router_calls: calls::RouterCalls::default(),
            control: None,
            cluster: None,
            node_names: Vec::new(),
            node_shards: Vec::new(),
            stats,
        }
    }

    /// Makes the history durable: kept events are written through `store`.
    pub fn set_history_store(&mut self, store: crate::history_store::StoreHandle) {
        self.history_store = Some(store);
    }

    /// Takes back the events a durable history kept, those of the topics
    /// whose home is this shard, under today's rules and limits (what no
    /// longer fits is removed from the store too).
    pub fn load_history<'a>(&mut self, events: impl IntoIterator<Item = &'a crate::history_store::StoredEvent>) {
        let mut events: Vec<&crate::history_store::StoredEvent> = events.into_iter().collect();
        events.sort_by_key(|e| (e.at_us, e.seq));
        for e in events {
            let Some(&realm) = self.realm_names.get(&e.realm) else { continue };
            if self.home_of(realm, &e.topic) != self.me {
                continue;
            }
            let event = broker::Retained {
                publication: e.publication,
                payload: e.payload.clone(),
                extras: e.extras.as_ref().map(broker::extras_from_dict),
                exclude: 0,
            };
            self.keep_history(realm, e.topic.as_str().into(), e.at_us, e.seq, event, false);
        }
    }

    /// Runs costly authentication checks through `pool` (their verdicts
    /// come back through [`Router::auth_verdict`]).
    pub fn set_auth_pool(&mut self, pool: crate::auth::pool::Submitter) {
        self.auth_pool = Some(pool);
    }

    /// Replaces the clock the core reads (tests and fuzzing move time by hand).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// When the next timer of this shard is due, if any.
    pub fn next_deadline(&self) -> Option<std::time::Instant> {
        self.timers.next_deadline()
    }

    /// The shard's timer task, woken when an earlier deadline is set.
    pub fn set_timer_waker(&mut self, waker: &std::task::Waker) {
        self.timers.set_waker(waker);
    }

    /// Runs every timer due at `now` (call timeouts).
    pub fn on_time(&mut self, now: std::time::Instant) {
        while let Some(due) = self.timers.pop_due(now) {
            match due {
                timers::Due::CallTimeout { caller, request } => self.call_timed_out(caller, request),
                timers::Due::Gather { id } => self.gather_timed_out(id),
                timers::Due::AuthTimeout { conn } => self.auth_timed_out(conn),
                timers::Due::RouterCall { request } => self.router_call_timed_out(request),
                timers::Due::Closing { conn } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.closing_timer = None;
                        if c.phase == session::Phase::Closing {
                            c.outbox.close(Some(crate::session::outbox::Outgoing::close(
                                crate::session::outbox::CloseReason::Normal,
                                "killed",
                            )));
                        }
                    }
                }
            }
        }
    }

    /// This shard's index.
    pub fn shard(&self) -> usize {
        self.me
    }

    /// Sends to shard `to`, or handles it at once when `to` is this shard.
    pub(crate) fn send_to(&mut self, to: usize, msg: ShardMsg) {
        if to >= self.nshards {
            // a shard of another cluster node
            return self.send_to_node(to, msg);
        }
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
        note("timers", self.timers.len());
        note("gathers", self.gathers.len());
        note("router calls (authenticator, authorizer)", self.router_calls.len());
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

    /// The calls this shard's sessions wait on, as (caller shard, caller,
    /// CALL request ID, callee shard, callee): with the pending invocations
    /// of every shard, the call table can be checked router-wide.
    pub fn calls_in_flight(&self) -> Vec<(usize, Id, Id, usize, Id)> {
        let mut out = Vec::new();
        for (sid, s) in &self.sessions {
            for (request, c) in &s.calls {
                out.push((self.me, *sid, *request, c.callee_shard, c.callee));
            }
        }
        out
    }

    /// The invocations this shard's callees owe, as (caller shard, caller,
    /// CALL request ID, callee shard, callee).
    pub fn invocations_pending(&self) -> Vec<(usize, Id, Id, usize, Id)> {
        let mut out = Vec::new();
        for (sid, s) in &self.sessions {
            for inv in s.invocations.values() {
                out.push((inv.caller_shard, inv.caller, inv.call_request, self.me, *sid));
            }
        }
        out
    }

    /// True if session `sid` is on this shard.
    pub fn has_session(&self, sid: Id) -> bool {
        self.sessions.contains_key(&sid)
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
}
