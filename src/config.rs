//! Configuration: TOML with an embedded default, command-line overrides and
//! validation that names the offending key.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// The configuration served when none is given.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub router: RouterSection,
    #[serde(default, rename = "realm")]
    pub realms: Vec<RealmConfig>,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default)]
    pub limits: Limits,
    /// `[cluster]`: join other nodes over NATS (none: a single node).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: this node joins the other Switchyard nodes of `name` over
/// NATS, and together they are one router (docs/CLUSTER.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS server(s), comma separated: `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// The cluster: nodes of one name form one router.
    #[serde(default = "default_cluster_name")]
    pub name: String,
    /// This node, unique in the cluster (empty: host name and process ID).
    #[serde(default)]
    pub node: String,
    /// NATS credentials: user and password, a token, or a `.creds` file.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub creds_file: Option<String>,
    /// How often this node tells the others it is alive, in ms.
    #[serde(default = "default_cluster_heartbeat")]
    pub heartbeat_ms: u64,
    /// A node not heard from for this long is taken as gone, in ms.
    #[serde(default = "default_cluster_node_timeout")]
    pub node_timeout_ms: u64,
    /// Messages each queue between the shards and the NATS thread holds;
    /// events past it are dropped (`cluster_events_dropped`).
    #[serde(default = "default_cluster_queue")]
    pub queue: usize,
    /// Subscription entries, callees and sessions of other nodes this node
    /// keeps track of, at most (whole sets being received count too); more
    /// are refused (`cluster_interests_refused`).
    #[serde(default = "default_cluster_interests")]
    pub max_remote_interests: usize,
}

fn default_cluster_name() -> String {
    "switchyard".into()
}
fn default_cluster_heartbeat() -> u64 {
    500
}
fn default_cluster_node_timeout() -> u64 {
    3000
}
fn default_cluster_queue() -> usize {
    65536
}
fn default_cluster_interests() -> usize {
    1_000_000
}

impl ClusterConfig {
    /// Checks every value, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let token = |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if self.nats_url.split(',').any(|u| {
            let u = u.trim();
            !(u.starts_with("nats://") || u.starts_with("tls://")) || u.len() <= 7
        }) {
            return Err(invalid(
                "cluster.nats_url",
                format!("'{}' is not a list of nats:// or tls:// URLs", self.nats_url),
            ));
        }
        if !token(&self.name) {
            return Err(invalid("cluster.name", "must be 1 to 64 letters, digits, '-' or '_'"));
        }
        if !self.node.is_empty() && !token(&self.node) {
            return Err(invalid("cluster.node", "must be 1 to 64 letters, digits, '-' or '_'"));
        }
        if self.password.is_some() != self.user.is_some() {
            return Err(invalid("cluster.password", "user and password go together"));
        }
        if [self.user.is_some(), self.token.is_some(), self.creds_file.is_some()]
            .iter()
            .filter(|x| **x)
            .count()
            > 1
        {
            return Err(invalid("cluster.token", "give one of user and password, token, creds_file"));
        }
        if let Some(f) = &self.creds_file {
            if !Path::new(f).is_file() {
                return Err(invalid("cluster.creds_file", format!("'{f}' is not a readable file")));
            }
        }
        if self.heartbeat_ms == 0 {
            return Err(invalid("cluster.heartbeat_ms", "must be positive"));
        }
        if self.node_timeout_ms < 2 * self.heartbeat_ms {
            return Err(invalid("cluster.node_timeout_ms", "must be at least twice heartbeat_ms"));
        }
        if self.queue == 0 || self.max_remote_interests == 0 {
            return Err(invalid("cluster.queue", "queue and max_remote_interests must be positive"));
        }
        Ok(())
    }

    /// This node's name: the configured one, or host name and process ID.
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String = host
            .trim()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .take(40)
            .collect();
        format!("{}-{}", if host.is_empty() { "node" } else { &host }, std::process::id())
    }
}

/// `[router]`: shards and their tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterSection {
    /// Number of shards; 0 = one per CPU in `cpus` (or per usable CPU).
    pub shards: usize,
    /// CPUs to pin shards to, e.g. "0-3,6"; empty = all usable CPUs.
    pub cpus: String,
    /// Capacity of each cross-shard queue, in messages.
    pub mesh_queue_capacity: usize,
    /// Unix-socket connections shard 0 may have handed to one shard and
    /// not yet taken up; past it shard 0 serves them itself.
    pub unix_handover_queue: usize,
    /// Long-poll requests one shard may have passed to another's transport
    /// and not yet answered; past it they get HTTP 503.
    pub longpoll_call_queue: usize,
    /// Messages a shard takes from one peer queue before yielding.
    pub mesh_batch: usize,
    /// How long a drained peer queue is polled before its task parks, in µs.
    pub mesh_spin_us: u64,
    /// How long an idle shard spins before it sleeps in the kernel, in µs.
    pub spin_before_park_us: u64,
    /// Longest a shard runs tasks before it polls its sockets again, in µs.
    pub preempt_timer_us: u64,
    /// Entries of each shard's io_uring submission queues. The kernel sizes
    /// the table it searches on every cancellation by it (a shard cancels a
    /// timer at every park, and each idle connection keeps a poll in that
    /// table), so a shallow ring makes every park cost more as connections
    /// grow. At most 32768.
    pub ring_depth: usize,
    /// How often every shard's thread is woken from its kernel wait, in ms
    /// (a safety net against missed wake-ups); 0 disables.
    pub wake_interval_ms: u64,
    /// How long shutdown waits for clients to answer GOODBYE, in ms.
    pub shutdown_grace_ms: u64,
    /// Messages that may wait for room in one full cross-shard queue; past
    /// it, events for that shard are dropped (counted). Every shard stops
    /// reading from its clients while any such wait is non-empty.
    pub mesh_overflow_limit: usize,
    /// Log filter (tracing syntax), e.g. "info" or "switchyard=debug".
    pub log: String,
    /// `text` (for people) or `json` (one object per line, for log
    /// collectors).
    pub log_format: String,
    /// Directory of the durable event history (`history.redb`); empty: the
    /// history lives in memory only.
    pub history_path: String,
    /// Writes the durable history's queue holds at most (a full queue drops
    /// them, counted as `history_store_dropped`).
    pub history_queue: usize,
    /// Threads that run costly authentication checks (password hashes,
    /// signatures) away from the shards.
    pub auth_threads: usize,
    /// Checks that may wait for those threads; more fail their login.
    pub auth_queue: usize,
    /// CPUs to pin those threads to, e.g. "6-7"; empty = not pinned.
    pub auth_cpus: String,
}

impl Default for RouterSection {
    fn default() -> Self {
        RouterSection {
            shards: 0,
            cpus: String::new(),
            mesh_queue_capacity: 8192,
            unix_handover_queue: 1024,
            longpoll_call_queue: 4096,
            mesh_batch: 256,
            mesh_spin_us: 20,
            spin_before_park_us: 0,
            preempt_timer_us: 500,
            ring_depth: 4096,
            wake_interval_ms: 10,
            shutdown_grace_ms: 2000,
            mesh_overflow_limit: 65536,
            log: "info".into(),
            log_format: "text".into(),
            history_path: String::new(),
            history_queue: 65_536,
            auth_threads: 2,
            auth_queue: 4096,
            auth_cpus: String::new(),
        }
    }
}

/// `[[realm]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealmConfig {
    pub name: String,
    /// When callers are named to callees (INVOCATION.Details.caller).
    #[serde(default)]
    pub caller_disclosure: CallerDisclosure,
    /// When publishers are named to subscribers (EVENT.Details.publisher):
    /// the same three settings, for PUBLISH `disclose_me`.
    #[serde(default)]
    pub publisher_disclosure: CallerDisclosure,
    /// Authroles whose sessions may call the router's read-only meta
    /// procedures (`wamp.session.count`, ...); `"*"` is every role.
    #[serde(default = "every_role")]
    pub meta_roles: Vec<String>,
    /// Authroles whose sessions may call the meta procedures that act on
    /// other sessions (`wamp.registration.remove_callee`); none by default.
    #[serde(default)]
    pub meta_admin_roles: Vec<String>,
    /// Whether PUBLISH `retain` keeps the topic's last event.
    #[serde(default = "yes")]
    pub retention: bool,
    /// Retained events (topics) and their payload bytes the realm keeps, at
    /// most (each shard keeps its share: this divided by the shard count).
    #[serde(default = "default_retained_events")]
    pub max_retained_events: usize,
    #[serde(default = "default_retained_bytes")]
    pub max_retained_bytes: usize,
    /// Topics whose events are kept for `wamp.subscription.get_events`.
    #[serde(default)]
    pub history: Vec<HistoryRule>,
    /// Bytes of events the realm's history keeps at most (each shard keeps
    /// its share); past it a topic's oldest events go first, then new ones
    /// are not kept.
    #[serde(default = "default_history_bytes")]
    pub max_history_bytes: usize,
    /// Whether sessions may join without credentials (WAMP anonymous
    /// authentication), and the authrole they get.
    #[serde(default = "yes")]
    pub anonymous: bool,
    #[serde(default = "anonymous_role")]
    pub anonymous_role: String,
    /// Who may authenticate, and how (`[[realm.principal]]`).
    #[serde(default, rename = "principal")]
    pub principals: Vec<PrincipalConfig>,
    /// Roles and what they may do (`[[realm.role]]`); a realm without roles
    /// lets every session do everything.
    #[serde(default, rename = "role")]
    pub roles: Vec<RoleConfig>,
    /// Dynamic authentication: a procedure that vouches for logins.
    #[serde(default)]
    pub authenticator: Option<AuthenticatorConfig>,
    /// Dynamic authorization: a procedure that decides what sessions may do.
    #[serde(default)]
    pub authorizer: Option<AuthorizerConfig>,
    /// Who may publish and call over the HTTP bridge (`[[realm.bridge_key]]`).
    #[serde(default, rename = "bridge_key")]
    pub bridge_keys: Vec<BridgeKeyConfig>,
    /// Subscriptions whose events are POSTed to an HTTP URL (`[[realm.webhook]]`).
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<WebhookConfig>,
}

/// `[[realm.webhook]]`: a subscription of the router's own (a session of
/// `authid` and `role` on shard 0) whose events are POSTed as JSON to `url`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub topic: String,
    /// "exact" (default), "prefix" or "wildcard".
    #[serde(default, rename = "match")]
    pub policy: Option<String>,
    /// `http://` or `https://` URL.
    pub url: String,
    #[serde(default = "default_webhook_authid")]
    pub authid: String,
    /// The session's authrole (default: the realm's `anonymous_role`).
    #[serde(default)]
    pub role: Option<String>,
    /// Events waiting for delivery, at most; more are dropped (counted in
    /// `webhook_dropped`).
    #[serde(default = "default_webhook_queue")]
    pub queue: usize,
    /// Further tries of a failed POST (connection error, 5xx, 429), with
    /// the wait doubling from `retry_initial_ms` up to `retry_max_ms`.
    #[serde(default = "default_webhook_retries")]
    pub max_retries: u32,
    #[serde(default = "default_webhook_retry_initial")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_webhook_retry_max")]
    pub retry_max_ms: u64,
    /// How long one POST may take, in ms.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_ms: u64,
    /// When set, each POST is signed as bridge requests are
    /// (`X-Switchyard-Timestamp`, `-Nonce`, `-Signature`).
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// `https://` only: a PEM file of the CAs to trust (instead of the
    /// public roots), for receivers with a private CA.
    #[serde(default)]
    pub ca: Option<String>,
}

fn default_webhook_authid() -> String {
    "webhook".into()
}

fn default_webhook_queue() -> usize {
    1024
}

fn default_webhook_retries() -> u32 {
    5
}

fn default_webhook_retry_initial() -> u64 {
    500
}

fn default_webhook_retry_max() -> u64 {
    30_000
}

fn default_webhook_timeout() -> u64 {
    5_000
}

/// `[[realm.bridge_key]]`: an HTTP bridge client. Its requests act as a
/// session with `authid` and `role`, so the realm's roles govern them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeKeyConfig {
    pub authid: String,
    pub role: String,
    /// Hex SHA-256 of a bearer token (`Authorization: Bearer <token>`);
    /// `switchyard secret bearer` derives it.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// The key of HMAC-SHA256 signed requests (`X-Switchyard-Key: authid`,
    /// `-Timestamp`, `-Nonce`, `-Signature`).
    #[serde(default)]
    pub hmac_secret: Option<String>,
}

/// `realm[i].authenticator`: the router calls `procedure` (registered on
/// `realm`, default this realm) with `(realm, authid, details)` to log in
/// sessions with the `methods` it lists.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticatorConfig {
    pub procedure: String,
    #[serde(default)]
    pub realm: Option<String>,
    /// Any of "ticket", "wampcra", "cryptosign", "wamp-scram", "scram".
    pub methods: Vec<String>,
    /// How long the router waits for its answer, in ms.
    #[serde(default = "default_dynamic_timeout")]
    pub timeout_ms: u64,
}

/// `realm[i].authorizer`: the router calls `procedure` with `(session,
/// uri, action)` for actions the realm's roles do not decide, and caches
/// each answer per (role, URI, action).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizerConfig {
    pub procedure: String,
    #[serde(default)]
    pub realm: Option<String>,
    #[serde(default = "default_dynamic_timeout")]
    pub timeout_ms: u64,
    /// How long an answer is kept, in ms.
    #[serde(default = "default_authorizer_ttl")]
    pub cache_ttl_ms: u64,
}

fn default_dynamic_timeout() -> u64 {
    5_000
}

fn default_authorizer_ttl() -> u64 {
    60_000
}

/// `realm[i].principal[j]`: one authid, its role and its credentials (each
/// method it may use has its entry).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    pub authid: String,
    pub role: String,
    /// WAMP-Ticket: a PHC password hash (`$argon2id$...` or
    /// `$pbkdf2-sha256$...`), as `switchyard secret ticket` prints it.
    #[serde(default)]
    pub ticket: Option<String>,
    /// WAMP-CRA with a plain shared secret (the method needs the secret).
    #[serde(default)]
    pub wampcra_secret: Option<String>,
    /// WAMP-CRA with a salted secret: the PBKDF2 parameters and the derived
    /// key (base64), as `switchyard secret wampcra` prints them.
    #[serde(default)]
    pub wampcra: Option<SaltedCra>,
    /// WAMP-Cryptosign: the Ed25519 public keys (hex) this authid signs with.
    #[serde(default)]
    pub cryptosign_keys: Vec<String>,
    /// WAMP-SCRAM: salt, KDF and the stored and server keys (base64), as
    /// `switchyard secret scram` prints them.
    #[serde(default)]
    pub scram: Option<ScramConfig>,
    /// TLS client certificates whose subject common name is this authid
    /// authenticate it (`authmethod` "tls").
    #[serde(default)]
    pub tls: bool,
}

/// `realm[i].principal[j].wampcra`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaltedCra {
    pub salt: String,
    pub iterations: u32,
    pub keylen: u32,
    pub key: String,
}

/// `realm[i].principal[j].scram`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScramConfig {
    /// "argon2id13" or "pbkdf2".
    pub kdf: String,
    pub salt: String,
    pub iterations: u32,
    /// Argon2 only: memory in KiB.
    #[serde(default)]
    pub memory: Option<u32>,
    pub stored_key: String,
    pub server_key: String,
}

/// `realm[i].role[j]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: String,
    #[serde(default, rename = "permission")]
    pub permissions: Vec<PermissionConfig>,
}

/// `realm[i].role[j].permission[k]`: what the role may do on the URIs this
/// matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionConfig {
    pub uri: String,
    /// "exact" (default), "prefix" or "wildcard".
    #[serde(default, rename = "match")]
    pub policy: Option<String>,
    /// Any of "call", "register", "publish", "subscribe".
    #[serde(default)]
    pub allow: Vec<String>,
    /// Callers and publishers of this role are named to callees and
    /// subscribers on these URIs (caller / publisher identification).
    #[serde(default)]
    pub disclose: bool,
}

fn anonymous_role() -> String {
    "anonymous".into()
}

/// `realm[i].history[j]`: events of the topics this matches are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRule {
    pub uri: String,
    /// "exact" (default), "prefix" or "wildcard".
    #[serde(default, rename = "match")]
    pub policy: Option<String>,
    /// Events kept per topic.
    #[serde(default = "default_history_limit")]
    pub limit: usize,
    /// Events older than this are dropped (0: kept until the limit).
    #[serde(default)]
    pub max_age_ms: u64,
}

fn default_history_limit() -> usize {
    100
}

fn default_history_bytes() -> usize {
    64 * 1024 * 1024
}

fn yes() -> bool {
    true
}

fn default_retained_events() -> usize {
    10_000
}

fn default_retained_bytes() -> usize {
    16 * 1024 * 1024
}

fn every_role() -> Vec<String> {
    vec!["*".into()]
}

/// `realm[i].caller_disclosure`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerDisclosure {
    /// When the caller asks (`disclose_me`: session, authid, authrole) or
    /// the registration does (`disclose_caller`: the session).
    #[default]
    OnRequest,
    /// Every caller, with session, authid and authrole (as routers that
    /// configure disclosure per role do).
    Always,
    /// Nobody; `disclose_me` gets ERROR `wamp.error.disclose_me.not_allowed`.
    Never,
}

impl RealmConfig {
    /// A realm with the default settings.
    pub fn named(name: &str) -> Self {
        RealmConfig {
            name: name.to_owned(),
            caller_disclosure: CallerDisclosure::OnRequest,
            publisher_disclosure: CallerDisclosure::OnRequest,
            meta_roles: every_role(),
            meta_admin_roles: Vec::new(),
            retention: true,
            max_retained_events: default_retained_events(),
            max_retained_bytes: default_retained_bytes(),
            history: Vec::new(),
            max_history_bytes: default_history_bytes(),
            anonymous: true,
            anonymous_role: anonymous_role(),
            principals: Vec::new(),
            roles: Vec::new(),
            authenticator: None,
            authorizer: None,
            bridge_keys: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

/// Kind of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    Websocket,
    Rawsocket,
    /// One port for every client: RawSocket (first octet 0x7F), WebSocket
    /// and plain HTTP told apart by the first bytes a client sends.
    Universal,
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Tcp(SocketAddr),
    /// A Unix domain socket at this path (`bind = "unix:/path"`).
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Tcp(a) => write!(f, "{a}"),
            Bind::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Bind {
    /// The TCP address, if this is one.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            Bind::Tcp(a) => Some(*a),
            Bind::Unix(_) => None,
        }
    }
}

/// `[[listener]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(rename = "type")]
    pub kind: ListenerKind,
    /// `host:port`, or `unix:/path` for a Unix domain socket.
    pub bind: String,
    /// Unix sockets only: the socket file's permission bits, in octal
    /// (e.g. "660"); default: as the process umask leaves them.
    #[serde(default)]
    pub mode: Option<String>,
    /// WebSocket only: the HTTP path of the WAMP endpoint.
    #[serde(default = "default_path")]
    pub path: String,
    /// WebSocket only: serve `GET /metrics` (Prometheus text) on this listener.
    #[serde(default = "default_true")]
    pub metrics: bool,
    /// TLS on this listener (`wss://`, RawSocket over TLS).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// WebSocket compression (permessage-deflate), offered when present.
    #[serde(default)]
    pub deflate: Option<DeflateConfig>,
    /// The HTTP long-poll transport, served when present.
    #[serde(default)]
    pub longpoll: Option<LongPollConfig>,
    /// The HTTP bridge (publish and call with plain HTTP), served when present.
    #[serde(default)]
    pub bridge: Option<BridgeConfig>,
    /// TCP only: the shards that accept on this listener (default: every
    /// shard). A listener per shard places each client on a known shard.
    #[serde(default)]
    pub shards: Option<Vec<usize>>,
}

impl ListenerConfig {
    /// Whether shard `me` accepts on this listener.
    pub fn served_by(&self, me: usize) -> bool {
        self.shards.as_ref().is_none_or(|s| s.contains(&me))
    }
}

/// `listener[i].bridge`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The base path: `POST <path>/<realm>/publish`, `POST <path>/<realm>/call`.
    #[serde(default = "default_bridge_path")]
    pub path: String,
    /// How long a call waits for its result when its options name no
    /// `timeout`, in ms.
    #[serde(default = "default_bridge_call_timeout")]
    pub call_timeout_ms: u64,
    /// How far a signed request's timestamp may be from the router's clock,
    /// in seconds; its nonce is remembered as long.
    #[serde(default = "default_replay_window")]
    pub replay_window_s: u64,
}

fn default_bridge_path() -> String {
    "/http".into()
}

fn default_bridge_call_timeout() -> u64 {
    30_000
}

fn default_replay_window() -> u64 {
    300
}

impl BridgeConfig {
    /// The bridge's settings.
    pub fn settings(&self) -> crate::session::bridge::Settings {
        crate::session::bridge::Settings {
            path: self.path.trim_end_matches('/').to_owned(),
            call_timeout: std::time::Duration::from_millis(self.call_timeout_ms),
            replay_window: std::time::Duration::from_secs(self.replay_window_s),
        }
    }
}

/// `listener[i].longpoll`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongPollConfig {
    /// The base path: `<path>/open`, `<path>/<transport>/send|receive|close`.
    #[serde(default = "default_longpoll_path")]
    pub path: String,
    /// How long a `receive` waits for a message before it answers 204.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_ms: u64,
    /// A transport no request touched for this long is closed.
    #[serde(default = "default_session_timeout")]
    pub session_timeout_ms: u64,
}

fn default_longpoll_path() -> String {
    "/longpoll".into()
}

fn default_poll_timeout() -> u64 {
    10_000
}

fn default_session_timeout() -> u64 {
    30_000
}

impl LongPollConfig {
    /// The transport's settings.
    pub fn settings(&self) -> crate::transport::longpoll::Settings {
        crate::transport::longpoll::Settings {
            path: self.path.clone(),
            poll_timeout: std::time::Duration::from_millis(self.poll_timeout_ms),
            session_timeout: std::time::Duration::from_millis(self.session_timeout_ms),
        }
    }
}

/// `listener[i].deflate`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeflateConfig {
    /// Messages shorter than this many bytes are sent uncompressed.
    #[serde(default = "default_deflate_threshold")]
    pub threshold: usize,
    /// The largest LZ77 window, in bits (9..=15), the router compresses
    /// with and lets a client compress with.
    #[serde(default = "default_window_bits")]
    pub max_window_bits: u8,
    /// false: every message is compressed on its own, either way
    /// (`server_no_context_takeover`, `client_no_context_takeover`).
    #[serde(default = "default_true")]
    pub context_takeover: bool,
    /// zlib's compression level, 1 (fastest, and at 1 zlib-rs's static
    /// Huffman codes barely shrink text without repeats) to 9.
    #[serde(default = "default_deflate_level")]
    pub level: u32,
}

fn default_deflate_level() -> u32 {
    2
}

fn default_deflate_threshold() -> usize {
    256
}

fn default_window_bits() -> u8 {
    15
}

impl DeflateConfig {
    /// The transport's settings.
    pub fn settings(&self) -> crate::transport::deflate::Settings {
        crate::transport::deflate::Settings {
            threshold: self.threshold,
            max_window_bits: self.max_window_bits,
            context_takeover: self.context_takeover,
            level: self.level,
        }
    }
}

/// `listener[i].tls`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub certificate: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// PEM file with the CAs that sign client certificates: clients are
    /// asked for one (mutual TLS, `authmethod` "tls").
    #[serde(default)]
    pub client_ca: Option<String>,
    /// With `client_ca`: refuse clients without a certificate.
    #[serde(default)]
    pub require_client_certificate: bool,
}

fn default_path() -> String {
    "/ws".into()
}

fn default_true() -> bool {
    true
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest WAMP message accepted, in bytes (WebSocket: close 1009 above
    /// it; RawSocket: announced in the handshake, connection closed above it).
    pub max_message_size: usize,
    /// Bytes queued to one session beyond which its events are dropped.
    pub max_outbound_bytes: usize,
    /// Time a new connection has to complete its transport handshake, in ms.
    pub handshake_timeout_ms: u64,
    /// What happens to a session whose queued bytes reach
    /// `max_outbound_bytes`: its events are dropped, or it is disconnected.
    pub slow_consumer: SlowConsumerPolicy,
    /// Invocations one callee may have pending; further calls to it get
    /// ERROR `wamp.error.no_available_callee` at once.
    pub max_pending_invocations: usize,
    /// Progressive call invocations a caller's session remembers after they
    /// ended early, so that their late chunks are discarded.
    pub max_finished_streams: usize,
    /// Bytes (topics and payloads) of the testaments one session may leave
    /// (`wamp.session.add_testament`); more are refused.
    pub max_testament_bytes: usize,
    /// Connections the whole router accepts at once (0 = no limit).
    pub max_connections: usize,
    /// Connections one shard accepts at once (0 = no limit).
    pub max_connections_per_shard: usize,
    /// A connection silent this long gets a ping (WebSocket or RawSocket); one
    /// still silent after another such period is closed. 0 = never.
    pub ping_interval_ms: u64,
    /// Longest URI (topic, procedure, realm) accepted, in bytes.
    pub max_uri_length: usize,
    /// Most components (dot-separated parts) in one URI.
    pub max_uri_components: usize,
    /// Subscriptions one session may hold (in flight included).
    pub max_subscriptions_per_session: usize,
    /// Registrations one session may hold (in flight included).
    pub max_registrations_per_session: usize,
    /// Calls one caller may have waiting for their result.
    pub max_pending_calls: usize,
    /// Failed logins from one peer address before it is refused for a
    /// while (1 s, doubling with each further failure).
    pub auth_failures_before_backoff: u32,
    /// Longest such refusal, in ms.
    pub auth_backoff_max_ms: u64,
    /// Peer addresses one shard tracks for that backoff.
    pub max_auth_backoff_peers: usize,
    /// Authorization decisions one shard caches (per role and URI).
    pub authorization_cache: usize,
    /// Bytes of permessage-deflate state (compressors and decompressors)
    /// the whole router keeps; past it, new WebSocket connections go
    /// uncompressed.
    pub max_deflate_memory: usize,
    /// Nonces of signed HTTP bridge requests remembered for the replay
    /// window, router-wide; past it signed requests get 503 until some expire.
    pub max_bridge_nonces: usize,
}

impl Limits {
    /// The URI bounds of this configuration.
    pub fn uri_limits(&self) -> crate::wamp::uri::UriLimits {
        crate::wamp::uri::UriLimits {
            max_len: self.max_uri_length,
            max_components: self.max_uri_components,
        }
    }
}

/// `limits.slow_consumer`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumerPolicy {
    /// Drop the events that do not fit (counted per session and in total).
    Drop,
    /// Close the connection (WebSocket close 1008).
    Disconnect,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 16 * 1024 * 1024,
            max_outbound_bytes: 16 * 1024 * 1024,
            handshake_timeout_ms: 10_000,
            slow_consumer: SlowConsumerPolicy::Drop,
            max_pending_invocations: 1024,
            max_testament_bytes: 65_536,
            max_finished_streams: 64,
            max_connections: 100_000,
            max_connections_per_shard: 0,
            ping_interval_ms: 30_000,
            max_uri_length: crate::wamp::uri::UriLimits::DEFAULT.max_len,
            max_uri_components: crate::wamp::uri::UriLimits::DEFAULT.max_components,
            max_subscriptions_per_session: 10_000,
            max_registrations_per_session: 10_000,
            max_pending_calls: 1024,
            auth_failures_before_backoff: 5,
            auth_backoff_max_ms: 60_000,
            max_auth_backoff_peers: 10_000,
            authorization_cache: 65_536,
            max_deflate_memory: 256 * 1024 * 1024,
            max_bridge_nonces: 100_000,
        }
    }
}

/// Command-line overrides.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub shards: Option<usize>,
    pub cpus: Option<String>,
    pub websocket: Option<String>,
    pub rawsocket: Option<String>,
    pub log: Option<String>,
}

impl Config {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// The embedded default.
    pub fn embedded() -> Config {
        // The embedded default is checked by a unit test.
        Config::parse(DEFAULT_CONFIG, "embedded default").unwrap_or_else(|e| panic!("embedded default config: {e}"))
    }

    /// Applies command-line overrides.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(n) = o.shards {
            self.router.shards = n;
        }
        if let Some(c) = &o.cpus {
            self.router.cpus = c.clone();
        }
        if let Some(l) = &o.log {
            self.router.log = l.clone();
        }
        for (addr, kind) in [(&o.websocket, ListenerKind::Websocket), (&o.rawsocket, ListenerKind::Rawsocket)] {
            let Some(addr) = addr else { continue };
            match self.listeners.iter_mut().find(|l| l.kind == kind) {
                Some(l) => l.bind = addr.clone(),
                None => self.listeners.push(ListenerConfig {
                    kind,
                    bind: addr.clone(),
                    mode: None,
                    path: default_path(),
                    metrics: true,
                    tls: None,
                    deflate: None,
                    longpoll: None,
                    bridge: None,
                    shards: None,
                }),
            }
        }
    }

    /// Checks every value; `usable_cpus` are the CPUs this process may use.
    pub fn validate(&self, usable_cpus: &[usize]) -> Result<Validated, ConfigError> {
        if self.realms.is_empty() {
            return Err(invalid("realm", "at least one [[realm]] is required"));
        }
        for (i, r) in self.realms.iter().enumerate() {
            if !crate::wamp::uri::is_valid(&r.name, crate::wamp::UriCheck::Concrete) {
                return Err(invalid(format!("realm[{i}].name"), format!("'{}' is not a valid WAMP URI", r.name)));
            }
            for (j, h) in r.history.iter().enumerate() {
                let policy = h.policy.as_deref().unwrap_or("exact");
                let Some(policy) = crate::wamp::MatchPolicy::parse(policy) else {
                    return Err(invalid(
                        format!("realm[{i}].history[{j}].match"),
                        format!("'{policy}' is not exact, prefix or wildcard"),
                    ));
                };
                if !crate::wamp::uri::is_valid(&h.uri, crate::wamp::UriCheck::Pattern(policy)) {
                    return Err(invalid(
                        format!("realm[{i}].history[{j}].uri"),
                        format!("'{}' is not a valid {} pattern", h.uri, policy.as_str()),
                    ));
                }
                if h.limit == 0 {
                    return Err(invalid(format!("realm[{i}].history[{j}].limit"), "must be positive"));
                }
            }
            crate::auth::RealmAuth::compile(r, i)?;
            for (key, procedure, realm, timeout) in [
                r.authenticator
                    .as_ref()
                    .map(|a| ("authenticator", &a.procedure, &a.realm, a.timeout_ms)),
                r.authorizer.as_ref().map(|a| ("authorizer", &a.procedure, &a.realm, a.timeout_ms)),
            ]
            .into_iter()
            .flatten()
            {
                if !crate::wamp::uri::is_valid(procedure, crate::wamp::UriCheck::Concrete) {
                    return Err(invalid(
                        format!("realm[{i}].{key}.procedure"),
                        format!("'{procedure}' is not a valid URI"),
                    ));
                }
                if let Some(other) = realm {
                    if !self.realms.iter().any(|o| &o.name == other) {
                        return Err(invalid(format!("realm[{i}].{key}.realm"), format!("no realm named '{other}'")));
                    }
                }
                if timeout == 0 {
                    return Err(invalid(format!("realm[{i}].{key}.timeout_ms"), "must be positive"));
                }
            }
            if let Some(a) = &r.authenticator {
                for (k, m) in a.methods.iter().enumerate() {
                    let ok = matches!(
                        crate::auth::Method::parse(m),
                        Some(
                            crate::auth::Method::Ticket
                                | crate::auth::Method::WampCra
                                | crate::auth::Method::Cryptosign
                                | crate::auth::Method::Scram
                                | crate::auth::Method::ScramDraft
                        )
                    );
                    if !ok {
                        return Err(invalid(
                            format!("realm[{i}].authenticator.methods[{k}]"),
                            format!("'{m}' is not ticket, wampcra, cryptosign, wamp-scram or scram"),
                        ));
                    }
                }
            }
            crate::auth::Roles::compile(r, i)?;
            for (k, w) in r.webhooks.iter().enumerate() {
                let key = |f: &str| format!("realm[{i}].webhook[{k}].{f}");
                let policy = w.policy.as_deref().unwrap_or("exact");
                let Some(policy) = crate::wamp::MatchPolicy::parse(policy) else {
                    return Err(invalid(key("match"), format!("'{policy}' is not exact, prefix or wildcard")));
                };
                if !crate::wamp::uri::is_valid(&w.topic, crate::wamp::UriCheck::Pattern(policy)) {
                    return Err(invalid(
                        key("topic"),
                        format!("'{}' is not a valid {} pattern", w.topic, policy.as_str()),
                    ));
                }
                let rest = w.url.strip_prefix("http://").or_else(|| w.url.strip_prefix("https://"));
                if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                    return Err(invalid(key("url"), format!("'{}' is not an http:// or https:// URL", w.url)));
                }
                if let Some(ca) = &w.ca {
                    if !w.url.starts_with("https://") {
                        return Err(invalid(key("ca"), "applies to https:// URLs only"));
                    }
                    let k = key("ca");
                    crate::transport::tls::client_trusting(&k, ca)
                        .map_err(|e| invalid(&k, e.trim_start_matches(&format!("{k}: ")).to_owned()))?;
                }
                if w.queue == 0 || w.timeout_ms == 0 || w.retry_initial_ms == 0 || w.retry_max_ms < w.retry_initial_ms {
                    return Err(invalid(
                        key("queue"),
                        "queue, timeout_ms and retry_initial_ms must be positive, retry_max_ms at least retry_initial_ms",
                    ));
                }
            }
            for (k, b) in r.bridge_keys.iter().enumerate() {
                let key = |f: &str| format!("realm[{i}].bridge_key[{k}].{f}");
                if b.token_sha256.is_none() && b.hmac_secret.is_none() {
                    return Err(invalid(key("token_sha256"), "a bridge key needs token_sha256, hmac_secret or both"));
                }
                if let Some(t) = &b.token_sha256 {
                    if t.len() != 64 || hex::decode(t).is_err() {
                        return Err(invalid(key("token_sha256"), "must be 64 hex digits (a SHA-256)"));
                    }
                }
                if b.hmac_secret.as_ref().is_some_and(|s| s.len() < 16) {
                    return Err(invalid(key("hmac_secret"), "must have at least 16 bytes"));
                }
                if r.bridge_keys[..k].iter().any(|o| o.authid == b.authid) {
                    return Err(invalid(key("authid"), format!("'{}' is defined twice", b.authid)));
                }
                if b.authid.is_empty() || b.role.is_empty() {
                    return Err(invalid(key("authid"), "authid and role must not be empty"));
                }
            }
            if self.realms[..i].iter().any(|o| o.name == r.name) {
                return Err(invalid(format!("realm[{i}].name"), format!("realm '{}' is defined twice", r.name)));
            }
        }
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        if self.listeners.is_empty() {
            return Err(invalid("listener", "at least one [[listener]] is required"));
        }
        let mut listeners = Vec::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let bind = match l.bind.strip_prefix("unix:") {
                Some(path) => {
                    // sun_path holds 108 bytes, the terminating NUL included
                    if path.is_empty() || path.len() > 107 {
                        return Err(invalid(
                            format!("listener[{i}].bind"),
                            "a Unix socket path must have 1 to 107 bytes",
                        ));
                    }
                    Bind::Unix(path.into())
                }
                None => Bind::Tcp(l.bind.parse().map_err(|_| {
                    invalid(
                        format!("listener[{i}].bind"),
                        format!("'{}' is not an address like 127.0.0.1:8080 or unix:/path", l.bind),
                    )
                })?),
            };
            if let Some(mode) = &l.mode {
                if !matches!(bind, Bind::Unix(_)) {
                    return Err(invalid(
                        format!("listener[{i}].mode"),
                        "applies to Unix sockets (bind = \"unix:/path\") only",
                    ));
                }
                if u32::from_str_radix(mode, 8).map_or(true, |m| m > 0o777) {
                    return Err(invalid(
                        format!("listener[{i}].mode"),
                        format!("'{mode}' is not octal permission bits like 660"),
                    ));
                }
            }
            if let Some(d) = &l.deflate {
                if l.kind == ListenerKind::Rawsocket {
                    return Err(invalid(
                        format!("listener[{i}].deflate"),
                        "applies to WebSocket (websocket and universal listeners) only",
                    ));
                }
                if !(9..=15).contains(&d.max_window_bits) {
                    return Err(invalid(
                        format!("listener[{i}].deflate.max_window_bits"),
                        "must be between 9 and 15",
                    ));
                }
                if !(1..=9).contains(&d.level) {
                    return Err(invalid(format!("listener[{i}].deflate.level"), "must be between 1 and 9"));
                }
            }
            if let Some(lp) = &l.longpoll {
                if l.kind == ListenerKind::Rawsocket {
                    return Err(invalid(
                        format!("listener[{i}].longpoll"),
                        "applies to HTTP (websocket and universal listeners) only",
                    ));
                }
                if !lp.path.starts_with('/') || lp.path.trim_end_matches('/') == l.path.trim_end_matches('/') {
                    return Err(invalid(
                        format!("listener[{i}].longpoll.path"),
                        "must start with '/' and differ from the WebSocket path",
                    ));
                }
                if lp.poll_timeout_ms == 0 || lp.session_timeout_ms <= lp.poll_timeout_ms {
                    return Err(invalid(
                        format!("listener[{i}].longpoll.session_timeout_ms"),
                        "poll_timeout_ms must be positive and session_timeout_ms longer than it",
                    ));
                }
            }
            if let Some(b) = &l.bridge {
                if l.kind == ListenerKind::Rawsocket {
                    return Err(invalid(
                        format!("listener[{i}].bridge"),
                        "applies to HTTP (websocket and universal listeners) only",
                    ));
                }
                let base = b.path.trim_end_matches('/');
                let clash = |p: &str| {
                    let p = p.trim_end_matches('/');
                    p == base || p.starts_with(&format!("{base}/")) || base.starts_with(&format!("{p}/"))
                };
                if !b.path.starts_with('/') || base.is_empty() || clash(&l.path) || l.longpoll.as_ref().is_some_and(|lp| clash(&lp.path)) {
                    return Err(invalid(
                        format!("listener[{i}].bridge.path"),
                        "must start with '/', not be '/', and not overlap the WebSocket or long-poll path",
                    ));
                }
                if b.call_timeout_ms == 0 || b.replay_window_s == 0 {
                    return Err(invalid(
                        format!("listener[{i}].bridge.call_timeout_ms"),
                        "call_timeout_ms and replay_window_s must be positive",
                    ));
                }
            }
            if l.kind != ListenerKind::Rawsocket && !l.path.starts_with('/') {
                return Err(invalid(format!("listener[{i}].path"), "must start with '/'"));
            }
            // (port 0 is a fresh port for each)
            let any_port = bind.tcp().is_some_and(|a| a.port() == 0);
            if let Some(j) = listeners.iter().position(|(_, b)| *b == bind && !any_port) {
                return Err(invalid(
                    format!("listener[{i}].bind"),
                    format!("listener[{j}] binds {bind} already"),
                ));
            }
            listeners.push((l.clone(), bind));
        }
        let lim = &self.limits;
        if !(512..=16 * 1024 * 1024).contains(&lim.max_message_size) {
            return Err(invalid(
                "limits.max_message_size",
                "must be between 512 and 16777216 bytes (the RawSocket maximum)",
            ));
        }
        if lim.max_outbound_bytes < lim.max_message_size {
            return Err(invalid("limits.max_outbound_bytes", "must be at least limits.max_message_size"));
        }
        if lim.handshake_timeout_ms == 0 {
            return Err(invalid("limits.handshake_timeout_ms", "must be positive"));
        }
        for (key, value) in [
            ("limits.max_pending_invocations", lim.max_pending_invocations),
            ("limits.max_subscriptions_per_session", lim.max_subscriptions_per_session),
            ("limits.max_registrations_per_session", lim.max_registrations_per_session),
            ("limits.max_pending_calls", lim.max_pending_calls),
            ("limits.max_finished_streams", lim.max_finished_streams),
            ("limits.max_auth_backoff_peers", lim.max_auth_backoff_peers),
            ("limits.authorization_cache", lim.authorization_cache),
            ("limits.auth_failures_before_backoff", lim.auth_failures_before_backoff as usize),
            ("router.auth_threads", self.router.auth_threads),
            ("router.auth_queue", self.router.auth_queue),
            ("router.history_queue", self.router.history_queue),
            ("limits.max_uri_components", lim.max_uri_components),
            ("router.mesh_overflow_limit", self.router.mesh_overflow_limit),
            ("limits.max_bridge_nonces", lim.max_bridge_nonces),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        if !(64..=lim.max_message_size).contains(&lim.max_uri_length) {
            return Err(invalid(
                "limits.max_uri_length",
                "must be between 64 bytes and limits.max_message_size",
            ));
        }
        for (i, r) in self.realms.iter().enumerate() {
            if crate::wamp::uri::validate(&r.name, crate::wamp::UriCheck::Concrete, &lim.uri_limits()).is_err() {
                return Err(invalid(
                    format!("realm[{i}].name"),
                    "longer than limits.max_uri_length or limits.max_uri_components allow",
                ));
            }
        }
        let r = &self.router;
        if r.mesh_queue_capacity == 0 {
            return Err(invalid("router.mesh_queue_capacity", "must be positive"));
        }
        if r.mesh_batch == 0 {
            return Err(invalid("router.mesh_batch", "must be positive"));
        }
        if r.preempt_timer_us == 0 {
            return Err(invalid("router.preempt_timer_us", "must be positive"));
        }
        if !(1..=32768).contains(&r.ring_depth) {
            return Err(invalid("router.ring_depth", "must be between 1 and 32768"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&r.log) {
            return Err(invalid("router.log", format!("'{}' is not a log filter: {e}", r.log)));
        }
        if !matches!(r.log_format.as_str(), "text" | "json") {
            return Err(invalid("router.log_format", format!("'{}' is not text or json", r.log_format)));
        }
        if r.shards > 256 {
            return Err(invalid("router.shards", "at most 256 shards"));
        }
        let auth_cpus = if r.auth_cpus.trim().is_empty() {
            Vec::new()
        } else {
            parse_cpu_list(&r.auth_cpus).map_err(|p| invalid("router.auth_cpus", p))?
        };
        if let Some(bad) = auth_cpus.iter().find(|c| !usable_cpus.contains(c)) {
            return Err(invalid(
                "router.auth_cpus",
                format!("CPU {bad} is not usable by this process (usable: {usable_cpus:?})"),
            ));
        }
        let mut cpus = if r.cpus.trim().is_empty() {
            usable_cpus.to_vec()
        } else {
            parse_cpu_list(&r.cpus).map_err(|p| invalid("router.cpus", p))?
        };
        if let Some(bad) = cpus.iter().find(|c| !usable_cpus.contains(c)) {
            return Err(invalid(
                "router.cpus",
                format!("CPU {bad} is not usable by this process (usable: {usable_cpus:?})"),
            ));
        }
        let shards = if r.shards == 0 { cpus.len().max(1) } else { r.shards };
        if cpus.is_empty() {
            return Err(invalid("router.cpus", "no CPU to run on"));
        }
        for (i, (l, bind)) in listeners.iter().enumerate() {
            let Some(list) = &l.shards else { continue };
            let key = format!("listener[{i}].shards");
            if matches!(bind, Bind::Unix(_)) {
                return Err(invalid(key, "applies to TCP listeners only (shard 0 accepts on Unix sockets)"));
            }
            if list.is_empty() {
                return Err(invalid(key, "must name at least one shard"));
            }
            if let Some(bad) = list.iter().find(|s| **s >= shards) {
                return Err(invalid(key, format!("shard {bad} does not exist (shards 0 to {})", shards - 1)));
            }
        }
        // More shards than CPUs: shards share CPUs round-robin.
        let placement: Vec<usize> = (0..shards).map(|i| cpus[i % cpus.len()]).collect();
        cpus.truncate(shards);
        let warnings = self
            .realms
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                (!r.principals.is_empty() || r.authenticator.is_some()) && r.anonymous && r.roles.is_empty() && r.authorizer.is_none()
            })
            .map(|(i, r)| {
                format!(
                    "realm[{i}] '{}': anonymous sessions are allowed and the realm has no roles, so they may do all its principals may (set anonymous = false, or add roles)",
                    r.name
                )
            })
            .collect();
        Ok(Validated {
            config: self.clone(),
            listeners,
            shard_cpus: placement,
            auth_cpus,
            warnings,
        })
    }
}

/// A configuration that passed validation, with derived values.
#[derive(Debug, Clone)]
pub struct Validated {
    pub config: Config,
    pub listeners: Vec<(ListenerConfig, Bind)>,
    /// The CPU of each shard.
    pub shard_cpus: Vec<usize>,
    /// The CPUs of the authentication threads (empty: not pinned).
    pub auth_cpus: Vec<usize>,
    /// What is valid but probably not meant (logged at start).
    pub warnings: Vec<String>,
}

/// Parses a CPU list such as "0-3,6".
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: usize = a.parse().map_err(|_| format!("'{part}' is not a CPU number or range"))?;
        let b: usize = b.parse().map_err(|_| format!("'{part}' is not a CPU number or range"))?;
        if a > b {
            return Err(format!("range '{part}' runs backwards"));
        }
        for c in a..=b {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    if out.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let v = Config::embedded().validate(&[0, 1]).unwrap();
        assert_eq!(v.shard_cpus, vec![0, 1]);
        assert_eq!(v.listeners.len(), 2);
        assert_eq!(v.config.realms[0].name, "realm1");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[router]\nshardz = 2\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("shardz"), "{e}");
        let e = Config::parse("[router]\nshards = \"two\"\n", "x.toml").unwrap_err().to_string();
        assert!(e.contains("shards"), "{e}");
        let mut c = Config::embedded();
        c.listeners[0].bind = "nowhere".into();
        let e = c.validate(&[0]).unwrap_err().to_string();
        assert!(e.starts_with("listener[0].bind"), "{e}");
        let mut c = Config::embedded();
        c.router.cpus = "5".into();
        assert!(c.validate(&[0, 1]).unwrap_err().to_string().starts_with("router.cpus"));
        for depth in [0, 32769] {
            let mut c = Config::embedded();
            c.router.ring_depth = depth;
            assert!(
                c.validate(&[0]).unwrap_err().to_string().starts_with("router.ring_depth"),
                "{depth}"
            );
        }
        let mut c = Config::embedded();
        c.router.ring_depth = 32768;
        assert!(c.validate(&[0]).is_ok());
        let mut c = Config::embedded();
        c.limits.max_message_size = 1 << 30;
        assert!(c.validate(&[0]).unwrap_err().to_string().starts_with("limits.max_message_size"));
        let mut c = Config::embedded();
        c.limits.max_pending_calls = 0;
        assert!(c.validate(&[0]).unwrap_err().to_string().starts_with("limits.max_pending_calls"));
        let mut c = Config::embedded();
        c.limits.max_uri_length = 10;
        assert!(c.validate(&[0]).unwrap_err().to_string().starts_with("limits.max_uri_length"));
        let mut c = Config::embedded();
        c.limits.max_uri_components = 2;
        c.realms[0].name = "a.b.c".into();
        assert!(c.validate(&[0]).unwrap_err().to_string().starts_with("realm[0].name"));
        let mut c = Config::embedded();
        c.realms[0].name = "bad realm".into();
        assert!(c.validate(&[0]).unwrap_err().to_string().starts_with("realm[0].name"));
        let mut c = Config::embedded();
        c.router.auth_cpus = "7".into();
        assert!(c.validate(&[0, 1]).unwrap_err().to_string().starts_with("router.auth_cpus"));
    }

    #[test]
    fn anonymous_beside_principals_without_roles_is_warned_about() {
        let base = "[[listener]]\ntype = \"rawsocket\"\nbind = \"127.0.0.1:0\"\n[[realm]]\nname = \"r\"\n";
        let p = "[[realm.principal]]\nauthid = \"a\"\nrole = \"u\"\nwampcra_secret = \"s\"\n";
        let v = Config::parse(&format!("{base}{p}"), "x").unwrap().validate(&[0]).unwrap();
        assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
        assert!(v.warnings[0].starts_with("realm[0] 'r'"), "{:?}", v.warnings);
        let v = Config::parse(&format!("{base}anonymous = false\n{p}"), "x")
            .unwrap()
            .validate(&[0])
            .unwrap();
        assert!(v.warnings.is_empty());
        assert!(Config::embedded().validate(&[0]).unwrap().warnings.is_empty());
    }

    #[test]
    fn cluster_settings_name_their_key() {
        let base = "[[listener]]\ntype = \"rawsocket\"\nbind = \"127.0.0.1:0\"\n[[realm]]\nname = \"r\"\n[cluster]\n";
        let ok = "nats_url = \"nats://127.0.0.1:4222\"\n";
        let v = Config::parse(&format!("{base}{ok}node = \"n-1\""), "x")
            .unwrap()
            .validate(&[0])
            .unwrap();
        let c = v.config.cluster.expect("a [cluster] section");
        assert_eq!(
            (c.name.as_str(), c.node_name(), c.heartbeat_ms, c.node_timeout_ms),
            ("switchyard", "n-1".to_string(), 500, 3000)
        );
        for (extra, key) in [
            ("nats_url = \"http://x\"", "cluster.nats_url"),
            ("nats_url = \"nats://a:1, redis://b\"", "cluster.nats_url"),
            ("nats_url = \"nats://a:1\"\nname = \"a.b\"", "cluster.name"),
            ("nats_url = \"nats://a:1\"\nnode = \"x y\"", "cluster.node"),
            ("nats_url = \"nats://a:1\"\npassword = \"p\"", "cluster.password"),
            (
                "nats_url = \"nats://a:1\"\ntoken = \"t\"\nuser = \"u\"\npassword = \"p\"",
                "cluster.token",
            ),
            (
                "nats_url = \"nats://a:1\"\ncreds_file = \"/nonexistent.creds\"",
                "cluster.creds_file",
            ),
            ("nats_url = \"nats://a:1\"\nheartbeat_ms = 0", "cluster.heartbeat_ms"),
            (
                "nats_url = \"nats://a:1\"\nheartbeat_ms = 500\nnode_timeout_ms = 900",
                "cluster.node_timeout_ms",
            ),
            ("nats_url = \"nats://a:1\"\nqueue = 0", "cluster.queue"),
        ] {
            let e = Config::parse(&format!("{base}{extra}"), "x")
                .unwrap()
                .validate(&[0])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(key), "{extra}: {e}");
        }
        let e = Config::parse(&format!("{base}{ok}nodes = 3"), "x").unwrap_err().to_string();
        assert!(e.contains("nodes"), "{e}");
    }

    #[test]
    fn listener_shards_name_their_key() {
        let realm = "[[realm]]\nname = \"r\"\n[router]\nshards = 2\ncpus = \"0\"\n";
        let tcp = |shards: &str| format!("[[listener]]\ntype = \"rawsocket\"\nbind = \"127.0.0.1:0\"\nshards = {shards}\n{realm}");
        let v = Config::parse(&tcp("[1]"), "x").unwrap().validate(&[0]).unwrap();
        let l = &v.config.listeners[0];
        assert!(!l.served_by(0) && l.served_by(1));
        for (text, why) in [
            (tcp("[]"), "at least one"),
            (tcp("[0, 2]"), "shard 2 does not exist"),
            (
                format!("[[listener]]\ntype = \"rawsocket\"\nbind = \"unix:/tmp/x.sock\"\nshards = [0]\n{realm}"),
                "TCP listeners only",
            ),
        ] {
            let e = Config::parse(&text, "x").unwrap().validate(&[0]).unwrap_err().to_string();
            assert!(e.starts_with("listener[0].shards") && e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn auth_settings_name_their_key() {
        let base = "[[listener]]\ntype = \"rawsocket\"\nbind = \"127.0.0.1:0\"\n[[realm]]\nname = \"r\"\n";
        let check = |extra: &str, key: &str| {
            let c = Config::parse(&format!("{base}{extra}"), "x.toml").unwrap();
            let e = c.validate(&[0]).unwrap_err().to_string();
            assert!(e.starts_with(key), "{extra}: {e}");
        };
        check(
            "[[realm.principal]]\nauthid = \"a\"\nrole = \"u\"\nticket = \"plain\"\n",
            "realm[0].principal[0].ticket",
        );
        check(
            "[[realm.principal]]\nauthid = \"a\"\nrole = \"u\"\ncryptosign_keys = [\"00\"]\n",
            "realm[0].principal[0].cryptosign_keys[0]",
        );
        check(
            "[[realm.principal]]\nauthid = \"a\"\nrole = \"u\"\nscram = { kdf = \"md5\", salt = \"AA==\", iterations = 1, stored_key = \"\", server_key = \"\" }\n",
            "realm[0].principal[0].scram.kdf",
        );
        check(
            "[[realm.principal]]\nauthid = \"a\"\nrole = \"u\"\n[[realm.principal]]\nauthid = \"a\"\nrole = \"v\"\n",
            "realm[0].principal[1].authid",
        );
        check(
            "[realm.authenticator]\nprocedure = \"a.b\"\nmethods = [\"anonymous\"]\n",
            "realm[0].authenticator.methods[0]",
        );
        check(
            "[realm.authorizer]\nprocedure = \"a.b\"\nrealm = \"elsewhere\"\n",
            "realm[0].authorizer.realm",
        );
        check(
            "[[realm.role]]\nname = \"u\"\n[[realm.role.permission]]\nuri = \"a\"\nallow = [\"fly\"]\n",
            "realm[0].role[0].permission[0].allow[0]",
        );
    }

    #[test]
    fn realm_settings_parse_and_name_their_key() {
        let c = Config::parse(
            "[[realm]]\nname = \"a\"\ncaller_disclosure = \"always\"\n[[realm]]\nname = \"b\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.realms[0].caller_disclosure, CallerDisclosure::Always);
        assert_eq!(c.realms[1].caller_disclosure, CallerDisclosure::OnRequest);
        let e = Config::parse("[[realm]]\nname = \"a\"\ncaller_disclosure = \"sometimes\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("caller_disclosure") || e.contains("sometimes"), "{e}");
    }

    #[test]
    fn overrides_and_cpu_lists() {
        assert_eq!(parse_cpu_list("0-2, 5,1").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        let mut c = Config::embedded();
        c.apply(&Overrides {
            shards: Some(3),
            websocket: Some("127.0.0.1:9000".into()),
            ..Default::default()
        });
        let v = c.validate(&[0, 1]).unwrap();
        assert_eq!(v.shard_cpus, vec![0, 1, 0]);
        assert_eq!(v.listeners[0].1.tcp().map(|a| a.port()), Some(9000));
    }
}
