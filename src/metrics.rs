//! Per-shard counters. Each shard writes only its own (relaxed atomics, one
//! cache line each so shards never share a line); anyone may read them, which
//! is how `/metrics` gathers the whole router without a message round.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crossbeam::utils::CachePadded;

macro_rules! stats {
    ($( $(#[doc = $doc:literal])* $name:ident : $kind:ident ),* $(,)?) => {
        /// Counters of one shard.
        #[derive(Debug, Default)]
        pub struct ShardStats {
            $( $(#[doc = $doc])* pub $name: CachePadded<$kind>, )*
            /// Call round trips at the dealer (CALL in, RESULT or ERROR
            /// out), one call in [`CALL_SAMPLE`] timed.
            pub call_latency: Histogram,
            /// Per realm, the messages its sessions sent, by type.
            pub realms: RealmRegistry,
        }

        impl ShardStats {
            /// Every series of every shard in Prometheus text format: each
            /// family per shard (label `shard`), then summed over shards
            /// (`switchyard_router_<name>`), each with `# HELP` and `# TYPE`.
            pub fn render(shards: &[std::sync::Arc<ShardStats>]) -> String {
                let mut out = String::with_capacity(64 * 1024);
                $(
                    let help = help_text(&[$($doc),*]);
                    let kind = kind_name(stringify!($kind));
                    let name = stringify!($name);
                    let _ = writeln!(out, "# HELP switchyard_{name} {help}");
                    let _ = writeln!(out, "# TYPE switchyard_{name} {kind}");
                    let mut sum: i128 = 0;
                    for (i, s) in shards.iter().enumerate() {
                        let v = s.$name.load(Ordering::Relaxed);
                        sum += v as i128;
                        let _ = writeln!(out, "switchyard_{name}{{shard=\"{i}\"}} {v}");
                    }
                    let _ = writeln!(out, "# HELP switchyard_router_{name} {} (all shards).", help.trim_end_matches('.'));
                    let _ = writeln!(out, "# TYPE switchyard_router_{name} {kind}");
                    let _ = writeln!(out, "switchyard_router_{name} {sum}");
                )*
                render_histograms(&mut out, shards);
                render_realms(&mut out, shards);
                out
            }
        }
    };
}

/// One `# HELP` line's text from a field's doc comment.
fn help_text(lines: &[&str]) -> String {
    let text: Vec<&str> = lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
    text.join(" ").replace('\\', "\\\\").replace('\n', "\\n")
}

fn kind_name(kind: &str) -> &'static str {
    if kind == "AtomicI64" {
        "gauge"
    } else {
        "counter"
    }
}

/// One call in this many is timed for `call_latency` (the others cost
/// nothing; a timed one costs two clock reads).
pub const CALL_SAMPLE: u64 = 16;

/// Upper bounds of the latency buckets, in µs (the last bucket, +Inf, is
/// implied).
pub const LATENCY_BUCKETS_US: [u64; 20] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

/// A latency histogram one shard writes (relaxed, single writer) and
/// anyone reads.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last is +Inf.
    counts: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Adds one observation (only the owning shard calls this).
    pub fn record(&self, d: std::time::Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = LATENCY_BUCKETS_US.partition_point(|&b| b < us);
        bump(&self.counts[i]);
        let s = &self.sum_us;
        s.store(s.load(Ordering::Relaxed).wrapping_add(us), Ordering::Relaxed);
    }

    /// The observations so far: per bucket (not cumulative) and the sum in µs.
    pub fn read(&self) -> ([u64; LATENCY_BUCKETS_US.len() + 1], u64) {
        let mut c = [0; LATENCY_BUCKETS_US.len() + 1];
        for (o, a) in c.iter_mut().zip(&self.counts) {
            *o = a.load(Ordering::Relaxed);
        }
        (c, self.sum_us.load(Ordering::Relaxed))
    }
}

/// Adds one to a counter only this thread writes: a plain load and store,
/// no locked instruction.
#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// The message types counted per realm (what sessions send).
pub const REALM_MESSAGE_TYPES: [(u64, &str); 10] = [
    (6, "GOODBYE"),
    (8, "ERROR"),
    (16, "PUBLISH"),
    (32, "SUBSCRIBE"),
    (34, "UNSUBSCRIBE"),
    (48, "CALL"),
    (49, "CANCEL"),
    (64, "REGISTER"),
    (66, "UNREGISTER"),
    (70, "YIELD"),
];

/// One realm's counters on one shard.
#[derive(Debug, Default)]
pub struct RealmCounters {
    by_type: [AtomicU64; REALM_MESSAGE_TYPES.len()],
}

impl RealmCounters {
    /// Counts one message of WAMP type `code` (only the owning shard
    /// calls this); types not in [`REALM_MESSAGE_TYPES`] are not counted.
    #[inline]
    pub fn count(&self, code: u64) {
        let i = match code {
            6 => 0,
            8 => 1,
            16 => 2,
            32 => 3,
            34 => 4,
            48 => 5,
            49 => 6,
            64 => 7,
            66 => 8,
            70 => 9,
            _ => return,
        };
        bump(&self.by_type[i]);
    }
}

/// The realms' counters of one shard, by realm name: taken when a realm is
/// made (start, reload), read by `/metrics`.
#[derive(Debug, Default)]
pub struct RealmRegistry {
    realms: std::sync::Mutex<Vec<(std::sync::Arc<str>, std::sync::Arc<RealmCounters>)>>,
}

impl RealmRegistry {
    /// The counters of realm `name` (made at the first ask).
    pub fn get(&self, name: &std::sync::Arc<str>) -> std::sync::Arc<RealmCounters> {
        let mut v = self.realms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = v.iter().find(|(n, _)| n == name) {
            return c.clone();
        }
        let c = std::sync::Arc::new(RealmCounters::default());
        v.push((name.clone(), c.clone()));
        c
    }
}

fn render_histograms(out: &mut String, shards: &[std::sync::Arc<ShardStats>]) {
    let name = "switchyard_call_duration_seconds";
    let mut total = ([0u64; LATENCY_BUCKETS_US.len() + 1], 0u64);
    let _ = writeln!(
        out,
        "# HELP {name} Round trip of routed calls at the dealer, CALL received to RESULT or ERROR queued (one call in {CALL_SAMPLE} timed)."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    let write = |out: &mut String, labels: &str, (counts, sum): &([u64; LATENCY_BUCKETS_US.len() + 1], u64), name: &str| {
        let mut acc = 0u64;
        for (i, c) in counts.iter().enumerate() {
            acc += c;
            let le = LATENCY_BUCKETS_US
                .get(i)
                .map_or("+Inf".to_string(), |b| format!("{}", *b as f64 / 1e6));
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {acc}");
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.trim_end_matches(','))
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", *sum as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {acc}");
    };
    for (i, s) in shards.iter().enumerate() {
        let h = s.call_latency.read();
        for (t, c) in total.0.iter_mut().zip(h.0) {
            *t += c;
        }
        total.1 += h.1;
        write(out, &format!("shard=\"{i}\","), &h, name);
    }
    let all = "switchyard_router_call_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {all} Round trip of routed calls at the dealer (all shards, one call in {CALL_SAMPLE} timed)."
    );
    let _ = writeln!(out, "# TYPE {all} histogram");
    write(out, "", &total, all);
}

fn render_realms(out: &mut String, shards: &[std::sync::Arc<ShardStats>]) {
    let name = "switchyard_realm_messages";
    let _ = writeln!(out, "# HELP {name} WAMP messages the realm's sessions sent, by type (all shards).");
    let _ = writeln!(out, "# TYPE {name} counter");
    let mut sums: Vec<(std::sync::Arc<str>, [u64; REALM_MESSAGE_TYPES.len()])> = Vec::new();
    for s in shards {
        let realms = s.realms.realms.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (realm, c) in realms {
            let i = match sums.iter().position(|(n, _)| *n == realm) {
                Some(i) => i,
                None => {
                    sums.push((realm, [0; REALM_MESSAGE_TYPES.len()]));
                    sums.len() - 1
                }
            };
            for (t, a) in sums[i].1.iter_mut().zip(&c.by_type) {
                *t += a.load(Ordering::Relaxed);
            }
        }
    }
    sums.sort_by(|a, b| a.0.cmp(&b.0));
    for (realm, counts) in sums {
        let realm = realm.replace('\\', "\\\\").replace('"', "\\\"");
        for ((_, t), n) in REALM_MESSAGE_TYPES.iter().zip(counts) {
            let _ = writeln!(out, "{name}{{realm=\"{realm}\",type=\"{t}\"}} {n}");
        }
    }
}

stats! {
    /// Open connections.
    connections: AtomicI64,
    /// Established sessions.
    sessions: AtomicI64,
    /// WAMP messages received from clients.
    messages_in: AtomicU64,
    /// WAMP messages queued to clients.
    messages_out: AtomicU64,
    /// Messages sent to other shards.
    mesh_sent: AtomicU64,
    /// Messages received from other shards.
    mesh_received: AtomicU64,
    /// Times a cross-shard queue was found full.
    mesh_full: AtomicU64,
    /// Publications accepted.
    publications: AtomicU64,
    /// EVENTs delivered to local sessions.
    events_delivered: AtomicU64,
    /// CALLs routed.
    calls: AtomicU64,
    /// Payload conversions between serializers.
    transcodes: AtomicU64,
    /// Sessions aborted for protocol violations.
    protocol_violations: AtomicU64,
    /// Events dropped because a subscriber's outbound queue was full.
    events_dropped: AtomicU64,
    /// Sessions disconnected because their outbound queue was full.
    slow_consumers_disconnected: AtomicU64,
    /// Calls refused because the callee had too many pending invocations.
    invocations_refused: AtomicU64,
    /// Connections refused by the connection limits.
    connections_refused: AtomicU64,
    /// Connections closed because their handshake did not finish in time.
    handshake_timeouts: AtomicU64,
    /// TLS handshakes that failed (bad client hello, refused or missing client certificate).
    tls_handshakes_failed: AtomicU64,
    /// Connections closed after an unanswered ping.
    idle_closed: AtomicU64,
    /// Tasks that panicked (and were contained): connections, mesh drains, timers.
    panics: AtomicU64,
    /// URIs refused for exceeding limits.max_uri_length or max_uri_components.
    uris_refused: AtomicU64,
    /// SUBSCRIBEs refused by limits.max_subscriptions_per_session.
    subscriptions_refused: AtomicU64,
    /// REGISTERs refused by limits.max_registrations_per_session.
    registrations_refused: AtomicU64,
    /// CALLs refused by limits.max_pending_calls.
    calls_refused: AtomicU64,
    /// Calls canceled by their caller (CANCEL).
    calls_canceled: AtomicU64,
    /// Calls that reached their CALL.Options.timeout.
    calls_timed_out: AtomicU64,
    /// Further chunks of progressive call invocations routed.
    call_chunks: AtomicU64,
    /// Progressive CALL chunks discarded: they continued a call already completed.
    call_chunks_discarded: AtomicU64,
    /// Calls routed to another callee after one answered wamp.error.unavailable.
    calls_rerouted: AtomicU64,
    /// Callees removed from registrations by the router (registration revocation).
    registrations_revoked: AtomicU64,
    /// Subscribers removed from subscriptions by the router (subscription revocation).
    subscriptions_revoked: AtomicU64,
    /// Retained events not kept: the realm's share of max_retained_events or max_retained_bytes was full.
    retained_refused: AtomicU64,
    /// Retained events (topics) this shard keeps.
    retained_events: AtomicI64,
    /// Events kept in an event history.
    history_events: AtomicU64,
    /// Events not kept in history: the realm's share of max_history_bytes was full.
    history_dropped: AtomicU64,
    /// History writes to the durable store dropped: its queue was full.
    history_store_dropped: AtomicU64,
    /// Meta events the router published (session joins and leaves, ...).
    meta_events: AtomicU64,
    /// Sessions closed by the kill meta procedures.
    sessions_killed: AtomicU64,
    /// Testaments published for sessions that left.
    testaments_published: AtomicU64,
    /// wamp.session.add_testament calls refused by limits.max_testament_bytes.
    testaments_refused: AtomicU64,
    /// Events dropped because a full cross-shard queue's overflow was at router.mesh_overflow_limit.
    mesh_events_dropped: AtomicU64,
    /// Messages waiting for room in full cross-shard queues.
    mesh_overflow: AtomicI64,
    /// Subscriptions in this shard's replica.
    subscriptions: AtomicI64,
    /// Registrations in this shard's replica.
    registrations: AtomicI64,
    /// Calls delivered to this shard's callees and not answered yet.
    pending_invocations: AtomicI64,
    /// Calls of this shard's callers waiting for their result.
    pending_calls: AtomicI64,
    /// Logins that succeeded with a credential (every method but anonymous).
    auth_successes: AtomicU64,
    /// Logins that failed: wrong or unknown credentials, no AUTHENTICATE in time.
    auth_failures: AtomicU64,
    /// HELLOs refused at once: their peer address failed too often (backoff).
    auth_backoff_refused: AtomicU64,
    /// Peer addresses not tracked for backoff: limits.max_auth_backoff_peers was full.
    auth_backoff_untracked: AtomicU64,
    /// Logins failed because the authentication threads' queue was full.
    auth_queue_full: AtomicU64,
    /// Actions refused by the session's role (ERROR wamp.error.not_authorized).
    authorization_denied: AtomicU64,
    /// Unacknowledged PUBLISHes dropped because the role may not publish there.
    publications_denied: AtomicU64,
    /// Authorization decisions answered from the shard's cache.
    authorization_cache_hits: AtomicU64,
    /// Authorization decisions computed (and cached).
    authorization_cache_misses: AtomicU64,
    /// Calls to realms' authorizer procedures.
    authorizer_calls: AtomicU64,
    /// Messages parked while their session waited for the authorizer.
    authorization_parked: AtomicU64,
    /// Connections on Unix listeners this shard serves (accepted by shard 0, most handed over).
    unix_accepted: AtomicU64,
    /// Estimated bytes of permessage-deflate state of this shard's connections.
    deflate_memory: AtomicI64,
    /// WebSocket connections not offered permessage-deflate: limits.max_deflate_memory was spent.
    deflate_declined: AtomicU64,
    /// Messages sent compressed (permessage-deflate).
    deflate_messages: AtomicU64,
    /// HTTP long-poll transports open on this shard.
    longpoll_transports: AtomicI64,
    /// Long-poll transports closed because no request came within the listener's session_timeout_ms.
    longpoll_expired: AtomicU64,
    /// Long-poll requests this shard passed to the shard that owns their transport.
    longpoll_forwarded: AtomicU64,
    /// Long-poll requests refused (503): router.longpoll_call_queue to their transport's shard was full.
    longpoll_refused: AtomicU64,
    /// Unix-socket connections shard 0 kept because router.unix_handover_queue to the chosen shard was full.
    unix_handover_full: AtomicU64,
    /// HTTP bridge requests served (publish and call).
    bridge_requests: AtomicU64,
    /// HTTP bridge requests refused for missing or wrong credentials (401).
    bridge_unauthorized: AtomicU64,
    /// Signed HTTP bridge requests refused as replays: a used nonce, or a timestamp outside the window.
    bridge_replays: AtomicU64,
    /// Signed HTTP bridge requests refused (503): limits.max_bridge_nonces was full.
    bridge_nonces_full: AtomicU64,
    /// Events webhooks POSTed (a 2xx answer).
    webhook_delivered: AtomicU64,
    /// Webhook POSTs tried again after a failure.
    webhook_retries: AtomicU64,
    /// Events webhooks gave up on: refused (4xx) or failed every try.
    webhook_failed: AtomicU64,
    /// Events not queued for a webhook: its queue was full.
    webhook_dropped: AtomicU64,
    /// Publications this shard sent to other cluster nodes (one each,
    /// however many nodes it went to).
    cluster_events_sent: AtomicU64,
    /// Publications from other cluster nodes this shard routed.
    cluster_events_received: AtomicU64,
    /// Publications to or from other nodes dropped: a queue between a shard
    /// and the NATS thread was full, or NATS was unreachable.
    cluster_events_dropped: AtomicU64,
    /// Other cluster nodes alive (the NATS thread's view, on shard 0).
    cluster_nodes: AtomicI64,
    /// Subscription entries and callees of other nodes known here (on
    /// shard 0).
    cluster_remote_interests: AtomicI64,
    /// Sessions of other nodes known here (on shard 0).
    cluster_remote_sessions: AtomicI64,
    /// Subscription entries, callees and sessions of other nodes not
    /// taken: past `cluster.max_remote_interests` (on shard 0).
    cluster_interests_refused: AtomicU64,
    /// Times the connection to NATS was (re)established (on shard 0).
    cluster_nats_connects: AtomicU64,
    /// Messages from NATS that did not read as a cluster message (on
    /// shard 0, or the shard that decoded them).
    cluster_malformed: AtomicU64,
}

impl ShardStats {
    /// Adds one to a counter.
    #[inline]
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}
