//! Per-shard counters. Each shard writes only its own (relaxed atomics, one
//! cache line each so shards never share a line); anyone may read them, which
//! is how `/metrics` gathers the whole router without a message round.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crossbeam::utils::CachePadded;

macro_rules! stats {
    ($( $(#[$doc:meta])* $name:ident : $kind:ident ),* $(,)?) => {
        /// Counters of one shard.
        #[derive(Debug, Default)]
        pub struct ShardStats {
            $( $(#[$doc])* pub $name: CachePadded<$kind>, )*
        }

        impl ShardStats {
            /// Appends every counter of every shard in Prometheus text format.
            pub fn render(shards: &[std::sync::Arc<ShardStats>]) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# TYPE switchyard_{} {}", stringify!($name), kind_name(stringify!($kind)));
                    for (i, s) in shards.iter().enumerate() {
                        let _ = writeln!(out, "switchyard_{}{{shard=\"{}\"}} {}", stringify!($name), i, s.$name.load(Ordering::Relaxed));
                    }
                )*
                out
            }
        }
    };
}

fn kind_name(kind: &str) -> &'static str {
    if kind == "AtomicI64" {
        "gauge"
    } else {
        "counter"
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
}

impl ShardStats {
    /// Adds one to a counter.
    #[inline]
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}
