//! The narrow handle a connection task holds on its shard: the router core,
//! the shard's counters, the router-wide congestion signal and the limits
//! that apply to connections. The connection code depends on this, not on
//! the shard's plumbing (`shard/mod.rs` builds one per shard and hands it to
//! every connection it accepts).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::ShardStats;
use crate::router::Router;
use crate::shard::mesh::Congestion;

/// The configured limits a connection enforces.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_message_size: usize,
    pub max_outbound_bytes: usize,
    pub handshake_timeout: Duration,
    /// How long a connection waits for its GOODBYE at shutdown.
    pub shutdown_grace: Duration,
    /// Silence after which a connection is pinged (and closed after twice).
    pub ping_interval: Option<Duration>,
    /// Connections allowed on the whole router (0: no limit).
    pub max_connections: usize,
    /// Connections allowed on one shard (0: no limit).
    pub max_connections_per_shard: usize,
    /// Bytes of permessage-deflate state allowed on the whole router.
    pub max_deflate_memory: usize,
}

/// What a connection task needs of its shard.
#[derive(Debug)]
pub struct ConnCtx {
    pub router: Rc<RefCell<Router>>,
    pub stats: Arc<ShardStats>,
    /// Every shard's counters, for `GET /metrics`.
    pub all_stats: Arc<Vec<Arc<ShardStats>>>,
    /// Router-wide mesh congestion (while active, no client is read from).
    pub congestion: Rc<Congestion>,
    /// What a connection may do; a reload replaces it for the
    /// connections that start after it.
    pub limits: std::cell::Cell<ConnLimits>,
    /// Connections open on the whole router (all shards).
    pub open_connections: Arc<AtomicUsize>,
    /// This shard's HTTP long-poll transports.
    pub longpoll: super::longpoll::Hub,
    /// The nonces of signed HTTP bridge requests (router-wide).
    pub bridge_nonces: Arc<super::bridge::Nonces>,
}

impl ConnCtx {
    /// The connection limits now in force.
    pub fn limits(&self) -> ConnLimits {
        self.limits.get()
    }
}
