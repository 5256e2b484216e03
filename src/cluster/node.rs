//! The node thread: the NATS client, who is alive, and what each node has.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::{AHashMap, AHashSet};
use bytes::Bytes;
use futures_lite::StreamExt;
use tracing::{debug, info, warn};

use super::wire::{self, Body, Ctl};
use super::{ClusterLink, FromNode, Interest, LocalInterests, OutEvent, Shared, MAX_NODES};
use crate::config::ClusterConfig;
use crate::metrics::ShardStats;

/// Interests per control message, at most (NATS' default payload limit is
/// 1 MiB; a URI is at most a few KiB).
const INTERESTS_PER_MESSAGE: usize = 256;

/// The running node thread.
#[derive(Debug)]
pub struct NodeThread {
    stop: Arc<AtomicBool>,
    wake: flume::Sender<()>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl NodeThread {
    /// Says goodbye to the other nodes and ends the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.try_send(());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Each shard's link, the queue each shard reads, and the thread.
pub type Started = (Vec<ClusterLink>, Vec<flume::Receiver<FromNode>>, NodeThread);

/// Starts the node thread for `shards` shards: each shard's link and the
/// queue it reads. `stats` are shard 0's (the thread's own counters go
/// there).
pub fn start(cfg: &ClusterConfig, shards: usize, stats: Vec<Arc<ShardStats>>) -> Result<Started, String> {
    if shards > super::SHARD_SLOTS {
        return Err(format!("a cluster node has at most {} shards", super::SHARD_SLOTS));
    }
    let node: Arc<str> = cfg.node_name().into();
    let (out_tx, out_rx) = flume::bounded::<OutEvent>(cfg.queue);
    let (bell_tx, bell_rx) = flume::bounded::<()>(1);
    let shared = Arc::new(Shared {
        interests: Mutex::new(LocalInterests::default()),
        bell: bell_tx.clone(),
    });
    let links = (0..shards)
        .map(|_| ClusterLink {
            out: out_tx.clone(),
            shared: shared.clone(),
            node: node.clone(),
        })
        .collect();
    let (to_shards, from_node): (Vec<_>, Vec<_>) = (0..shards).map(|_| flume::bounded::<FromNode>(cfg.queue)).unzip();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = Thread {
        cfg: cfg.clone(),
        me: node.to_string(),
        incarnation: crate::wamp::random_id(),
        shared,
        out_rx,
        bell_rx,
        to_shards,
        stats,
        stop: stop.clone(),
        nodes: std::array::from_fn(|_| None),
        by_name: AHashMap::new(),
        remote_interests: 0,
        last_hello: None,
    };
    let handle = std::thread::Builder::new()
        .name("cluster".into())
        .spawn(move || thread.run())
        .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
    info!(node = %node, cluster = %cfg.name, nats = %cfg.nats_url, "cluster node starting");
    Ok((
        links,
        from_node,
        NodeThread {
            stop,
            wake: bell_tx,
            handle: Some(handle),
        },
    ))
}

/// Another node as this one knows it.
#[derive(Debug)]
struct Remote {
    name: String,
    incarnation: u64,
    last_seen: Instant,
    interests: AHashSet<Interest>,
    /// A snapshot being received (its parts so far).
    incoming: Option<AHashSet<Interest>>,
}

struct Thread {
    cfg: ClusterConfig,
    me: String,
    incarnation: u64,
    shared: Arc<Shared>,
    out_rx: flume::Receiver<OutEvent>,
    bell_rx: flume::Receiver<()>,
    to_shards: Vec<flume::Sender<FromNode>>,
    stats: Vec<Arc<ShardStats>>,
    stop: Arc<AtomicBool>,
    nodes: [Option<Remote>; MAX_NODES],
    by_name: AHashMap<String, u8>,
    remote_interests: usize,
    last_hello: Option<Instant>,
}

impl Thread {
    fn run(mut self) {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                warn!(error = %e, "cannot start the cluster thread's runtime; this node runs alone");
                return;
            }
        };
        rt.block_on(self.serve());
    }

    fn ctl(&self, body: Body) -> Ctl {
        Ctl {
            node: self.me.clone(),
            incarnation: self.incarnation,
            shards: self.to_shards.len() as u16,
            body,
        }
    }

    fn subject(&self, what: &str) -> String {
        format!("switchyard.{}.{what}", self.cfg.name)
    }

    async fn connect(&self, events: flume::Sender<async_nats::Event>) -> Result<async_nats::Client, String> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("switchyard {}", self.me))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(1000)))
            .event_callback(move |e| {
                let events = events.clone();
                async move {
                    let _ = events.try_send(e);
                }
            });
        if let (Some(u), Some(p)) = (&self.cfg.user, &self.cfg.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &self.cfg.token {
            opts = opts.token(t.clone());
        }
        if let Some(f) = &self.cfg.creds_file {
            opts = opts.credentials_file(f).await.map_err(|e| format!("cluster.creds_file: {e}"))?;
        }
        let urls: Vec<String> = self.cfg.nats_url.split(',').map(|u| u.trim().to_owned()).collect();
        opts.connect(urls).await.map_err(|e| format!("cannot connect to NATS: {e}"))
    }

    async fn serve(&mut self) {
        let (ev_tx, ev_rx) = flume::bounded::<async_nats::Event>(64);
        let client = match self.connect(ev_tx).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "this node runs alone");
                return;
            }
        };
        let ctl_subject = self.subject("ctl");
        let (mut ctl, mut direct) = match (
            client.subscribe(ctl_subject.clone()).await,
            client.subscribe(self.subject(&format!("node.{}", self.me))).await,
        ) {
            (Ok(c), Ok(d)) => (c, d),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot subscribe on NATS; this node runs alone");
                return;
            }
        };
        let mut beat = tokio::time::interval(Duration::from_millis(self.cfg.heartbeat_ms));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (out_rx, bell_rx) = (self.out_rx.clone(), self.bell_rx.clone());
        while !self.stop.load(Ordering::Relaxed) {
            tokio::select! {
                ev = out_rx.recv_async() => {
                    let Ok(ev) = ev else { break };
                    self.forward(&client, ev).await;
                    // what else is queued, in order
                    for _ in 0..256 {
                        let Ok(ev) = out_rx.try_recv() else { break };
                        self.forward(&client, ev).await;
                    }
                }
                _ = bell_rx.recv_async() => {
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    self.announce_changes(&client).await;
                }
                m = ctl.next() => {
                    let Some(m) = m else { break };
                    match Ctl::decode(&m.payload) {
                        Some(c) => self.on_ctl(&client, c).await,
                        None => ShardStats::inc(&self.stats[0].cluster_malformed),
                    }
                }
                m = direct.next() => {
                    let Some(m) = m else { break };
                    self.deliver(m.payload).await;
                }
                e = ev_rx.recv_async() => {
                    if let Ok(e) = e {
                        match e {
                            async_nats::Event::Connected => {
                                ShardStats::inc(&self.stats[0].cluster_nats_connects);
                                info!(node = %self.me, "connected to NATS: joining the cluster");
                                self.hello(&client).await;
                                self.announce_all(&client).await;
                            }
                            async_nats::Event::Disconnected => warn!("lost the connection to NATS: serving local sessions only until it is back"),
                            other => debug!(event = %other, "NATS"),
                        }
                    }
                }
                _ = beat.tick() => {
                    let _ = client.publish(ctl_subject.clone(), self.ctl(Body::Beat).encode()).await;
                    self.expire(Instant::now()).await;
                }
            }
        }
        let _ = client.publish(ctl_subject, self.ctl(Body::Bye).encode()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
        info!(node = %self.me, "left the cluster");
    }

    /// Publishes a publication to each node it is for.
    async fn forward(&mut self, client: &async_nats::Client, ev: OutEvent) {
        let mut mask = ev.nodes;
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let Some(r) = &self.nodes[i] else { continue };
            let subject = format!("switchyard.{}.node.{}", self.cfg.name, r.name);
            if client.publish(subject, ev.frame.clone()).await.is_err() {
                ShardStats::inc(&self.stats[0].cluster_events_dropped);
            }
        }
    }

    /// A frame from another node: a publication to the shard that takes
    /// every publication of its origin (so that their order holds; dropped
    /// when that shard's queue is full, as a slow subscriber's are), a
    /// message about a call to the shard it names (never dropped: the
    /// thread waits for room).
    async fn deliver(&self, frame: Bytes) {
        let n = self.to_shards.len();
        let shard = match wire::peek(&frame) {
            Some((wire::EVENT, origin, _)) => (ahash_of(origin) % n as u64) as usize,
            Some((_, _, target)) => target as usize % n,
            None => {
                ShardStats::inc(&self.stats[0].cluster_malformed);
                return;
            }
        };
        if frame.first() == Some(&wire::EVENT) {
            if self.to_shards[shard].try_send(FromNode::Frame(frame)).is_err() {
                ShardStats::inc(&self.stats[shard].cluster_events_dropped);
            }
        } else {
            let _ = self.to_shards[shard].send_async(FromNode::Frame(frame)).await;
        }
    }

    async fn hello(&mut self, client: &async_nats::Client) {
        self.last_hello = Some(Instant::now());
        let _ = client.publish(self.subject("ctl"), self.ctl(Body::Hello).encode()).await;
    }

    /// The interest changes the home shards made since the last time.
    async fn announce_changes(&mut self, client: &async_nats::Client) {
        let (changes, overflowed) = {
            let mut i = self.shared.interests.lock().unwrap_or_else(|e| e.into_inner());
            let overflowed = std::mem::take(&mut i.overflowed);
            (std::mem::take(&mut i.changes), overflowed)
        };
        if overflowed {
            return self.announce_all(client).await;
        }
        for part in changes.chunks(INTERESTS_PER_MESSAGE) {
            let c = self.ctl(Body::Interests {
                flags: 0,
                entries: part.iter().map(|(i, add)| (*add, i.clone())).collect(),
            });
            let _ = client.publish(self.subject("ctl"), c.encode()).await;
        }
    }

    /// All of this node's interests, in parts.
    async fn announce_all(&mut self, client: &async_nats::Client) {
        let all: Vec<Interest> = {
            let mut i = self.shared.interests.lock().unwrap_or_else(|e| e.into_inner());
            i.changes.clear();
            i.overflowed = false;
            i.set.iter().cloned().collect()
        };
        let parts: Vec<&[Interest]> = if all.is_empty() {
            vec![&[]]
        } else {
            all.chunks(INTERESTS_PER_MESSAGE).collect()
        };
        let n = parts.len();
        for (k, part) in parts.into_iter().enumerate() {
            let mut flags = wire::SNAPSHOT;
            if k == 0 {
                flags |= wire::FIRST;
            }
            if k + 1 == n {
                flags |= wire::LAST;
            }
            let c = self.ctl(Body::Interests {
                flags,
                entries: part.iter().map(|i| (true, i.clone())).collect(),
            });
            let _ = client.publish(self.subject("ctl"), c.encode()).await;
        }
    }

    async fn on_ctl(&mut self, client: &async_nats::Client, c: Ctl) {
        if c.node == self.me {
            if c.incarnation != self.incarnation && matches!(c.body, Body::Hello | Body::Beat) {
                warn!(node = %self.me, "another process calls itself this node: cluster.node must be unique");
            }
            return;
        }
        let now = Instant::now();
        let known = self.by_name.get(&c.node).copied();
        // a node that restarted is another node: forget the old one first
        let known = match known {
            Some(i) if self.nodes[i as usize].as_ref().is_some_and(|r| r.incarnation != c.incarnation) => {
                self.forget(i, "restarted").await;
                None
            }
            k => k,
        };
        if let Body::Bye = c.body {
            if let Some(i) = known {
                self.forget(i, "left").await;
            }
            return;
        }
        let idx = match known {
            Some(i) => i,
            None => {
                let Some(free) = self.nodes.iter().position(|n| n.is_none()) else {
                    warn!(node = %c.node, max = MAX_NODES, "too many cluster nodes: ignoring this one");
                    return;
                };
                info!(node = %c.node, "cluster node joined");
                self.nodes[free] = Some(Remote {
                    name: c.node.clone(),
                    incarnation: c.incarnation,
                    last_seen: now,
                    interests: AHashSet::new(),
                    incoming: None,
                });
                self.by_name.insert(c.node.clone(), free as u8);
                self.stats[0].cluster_nodes.fetch_add(1, Ordering::Relaxed);
                let name: Arc<str> = c.node.as_str().into();
                for s in &self.to_shards {
                    let _ = s
                        .send_async(FromNode::NodeUp {
                            node: free as u8,
                            name: name.clone(),
                            shards: c.shards as usize,
                        })
                        .await;
                }
                // a node first heard by its beat missed our hello, or we its
                // interests: ask every node for them (at most once a beat)
                if matches!(c.body, Body::Beat) {
                    let due = self
                        .last_hello
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(self.cfg.heartbeat_ms));
                    if due {
                        self.hello(client).await;
                    }
                }
                free as u8
            }
        };
        if let Some(r) = self.nodes[idx as usize].as_mut() {
            r.last_seen = now;
        }
        match c.body {
            Body::Hello => self.announce_all(client).await,
            Body::Interests { flags, entries } => self.take_interests(idx, flags, entries).await,
            Body::Beat | Body::Bye => {}
        }
    }

    async fn take_interests(&mut self, idx: u8, flags: u64, entries: Vec<(bool, Interest)>) {
        if flags & wire::SNAPSHOT == 0 {
            for (add, i) in entries {
                self.change(idx, add, i).await;
            }
            return;
        }
        // a snapshot being received is held whole before it replaces what
        // the node had: all of them, with everything kept, within the bound
        let held_elsewhere: usize = (self.nodes.iter().enumerate())
            .filter(|(k, _)| *k != idx as usize)
            .filter_map(|(_, n)| n.as_ref()?.incoming.as_ref().map(|s| s.len()))
            .sum();
        let Some(r) = self.nodes[idx as usize].as_mut() else { return };
        if flags & wire::FIRST != 0 {
            r.incoming = Some(AHashSet::new());
        }
        let Some(incoming) = r.incoming.as_mut() else { return };
        let others = self.remote_interests - r.interests.len().min(self.remote_interests);
        let cap = self.cfg.max_remote_interests.saturating_sub(others + held_elsewhere);
        for (_, i) in entries {
            if incoming.len() < cap {
                incoming.insert(i);
            } else if !incoming.contains(&i) {
                ShardStats::inc(&self.stats[0].cluster_interests_refused);
            }
        }
        if flags & wire::LAST == 0 {
            return;
        }
        let new = r.incoming.take().unwrap_or_default();
        let gone: Vec<Interest> = r.interests.difference(&new).cloned().collect();
        let added: Vec<Interest> = new.difference(&r.interests).cloned().collect();
        for i in gone {
            self.change(idx, false, i).await;
        }
        for i in added {
            self.change(idx, true, i).await;
        }
    }

    /// One interest of node `idx` made or gone: kept, and told to every
    /// shard (which never drops these: the thread waits for room).
    async fn change(&mut self, idx: u8, add: bool, interest: Interest) {
        let Some(r) = self.nodes[idx as usize].as_mut() else { return };
        if interest.session.is_some() {
            // sessions stay here, for their leaves should the node die
            let stat = &self.stats[0].cluster_remote_sessions;
            if add {
                if self.remote_interests >= self.cfg.max_remote_interests {
                    ShardStats::inc(&self.stats[0].cluster_interests_refused);
                } else if r.interests.insert(interest) {
                    self.remote_interests += 1;
                    stat.fetch_add(1, Ordering::Relaxed);
                }
            } else if r.interests.remove(&interest) {
                self.remote_interests -= 1;
                stat.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        if add {
            if self.remote_interests >= self.cfg.max_remote_interests {
                ShardStats::inc(&self.stats[0].cluster_interests_refused);
                return;
            }
            if !r.interests.insert(interest.clone()) {
                return;
            }
            self.remote_interests += 1;
            self.stats[0].cluster_remote_interests.fetch_add(1, Ordering::Relaxed);
        } else {
            if !r.interests.remove(&interest) {
                return;
            }
            self.remote_interests -= 1;
            self.stats[0].cluster_remote_interests.fetch_sub(1, Ordering::Relaxed);
        }
        for s in &self.to_shards {
            let _ = s
                .send_async(FromNode::Interest {
                    node: idx,
                    add,
                    interest: interest.clone(),
                })
                .await;
        }
    }

    /// Node `idx` is gone: its interests are withdrawn everywhere.
    async fn forget(&mut self, idx: u8, why: &str) {
        let Some(r) = self.nodes[idx as usize].as_mut() else { return };
        info!(node = %r.name, why, "cluster node gone");
        let interests: Vec<Interest> = r.interests.iter().cloned().collect();
        // its sessions' leaves, told here by shard 0, per realm
        let mut left: AHashMap<Arc<str>, Vec<super::SessionOf>> = AHashMap::new();
        for i in &interests {
            if let Some(s) = &i.session {
                left.entry(i.realm.clone()).or_default().push(s.clone());
            }
        }
        for i in interests {
            self.change(idx, false, i).await;
        }
        for (realm, sessions) in left {
            let _ = self.to_shards[0].send_async(FromNode::Left { realm, sessions }).await;
        }
        if let Some(r) = self.nodes[idx as usize].take() {
            self.by_name.remove(&r.name);
            self.stats[0].cluster_nodes.fetch_sub(1, Ordering::Relaxed);
            for s in &self.to_shards {
                let _ = s.send_async(FromNode::NodeGone { node: idx }).await;
            }
        }
    }

    /// Forgets the nodes not heard from for `cluster.node_timeout_ms`.
    async fn expire(&mut self, now: Instant) {
        let timeout = Duration::from_millis(self.cfg.node_timeout_ms);
        let late: Vec<u8> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().filter(|r| now.duration_since(r.last_seen) > timeout).map(|_| i as u8))
            .collect();
        for i in late {
            self.forget(i, "silent past cluster.node_timeout_ms").await;
        }
    }
}

fn ahash_of(b: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // fixed keys: every run (and every node) picks the same shard for a name
    let mut h = ahash::RandomState::with_seeds(1, 2, 3, 4).build_hasher();
    h.write(b);
    h.finish()
}
