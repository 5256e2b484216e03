//! Several Switchyard nodes as one router, over NATS (`[cluster]`,
//! docs/CLUSTER.md).
//!
//! Each node runs one more thread, the *node thread*: a single-threaded
//! tokio runtime with an `async-nats` client. The shards never wait on it:
//! they hand it encoded frames over bounded flume queues ([`ClusterLink`])
//! and read what it passes back from a queue of their own ([`FromNode`]),
//! in a task like the mesh drains. NATS carries two kinds of traffic under
//! `switchyard.<cluster>.`:
//!
//! - `ctl`, which every node subscribes to: who is alive (hello, beat, bye)
//!   and which subscriptions each node has (its *interests*: realm, match
//!   policy and URI of every subscription entry with a subscriber there);
//! - `node.<name>`, one per node: publications for that node's subscribers.
//!
//! So interest is propagated, not flooded: a shard that routes a
//! publication matches it against the other nodes' interests (a URI index
//! per realm, [`NodeMask`] per entry) and sends it once, to the nodes that
//! have a match, whatever the number of their subscribers. The receiving
//! node routes it as its own shards would (local subscribers, then the
//! mesh), but never on to other nodes.

mod node;
pub mod wire;

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::router::InvokePolicy;
use crate::wamp::{Id, MatchPolicy};

pub use node::{start, NodeThread};

/// The most nodes a node keeps track of (the others are ignored, and said
/// so in the log): a node is one bit of a [`NodeMask`].
pub const MAX_NODES: usize = 64;

/// A set of other nodes, one bit each (the node thread's numbering).
pub type NodeMask = u64;

/// One subscription entry of a node, or one callee of a registration, as
/// the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Interest {
    pub realm: Arc<str>,
    pub policy: MatchPolicy,
    pub uri: Arc<str>,
    /// For a callee: the registration's invocation policy, the callee
    /// session and its shard on its node (none: a subscription entry).
    pub callee: Option<CalleeOf>,
    /// For a session of the node (its `uri` empty): who it is, so that the
    /// other nodes can tell of its leave if the node dies.
    pub session: Option<SessionOf>,
    /// For a subscription entry: its ID on its node and when it was made
    /// (ms since the Unix epoch), for the meta API of the other nodes.
    pub sub: Option<(Id, u64)>,
}

/// What an interest of a URI is.
#[derive(Debug, Clone, Copy)]
pub enum InterestOf {
    /// A subscription entry: its ID here and when it was made (ms).
    Subscription { id: Id, created_ms: u64 },
    /// A callee of the registration.
    Callee(CalleeOf),
}

/// A session of a node, as the other nodes know it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionOf {
    pub id: Id,
    pub authid: Arc<str>,
    pub authrole: Arc<str>,
}

/// A callee of a registration on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CalleeOf {
    pub invoke: InvokePolicy,
    pub session: Id,
    pub shard: u16,
}

/// Shards a node may have, at most, in a cluster: a shard of another node
/// is known here as a *pseudo shard*, `shards + node * SHARD_SLOTS +
/// shard`, so that a callee elsewhere is a `(shard, session)` like any
/// other and the dealer's paths (calls, cancels, timeouts, progressive
/// results, rerouting) reach it through `Router::send_to`.
pub const SHARD_SLOTS: usize = 1024;

/// The pseudo shard, on a node of `nshards` shards, of `shard` on node
/// `node`.
pub fn pseudo_shard(nshards: usize, node: u8, shard: usize) -> usize {
    nshards + node as usize * SHARD_SLOTS + shard
}

/// The node and its shard a pseudo shard names (`None` for a shard of
/// this node).
pub fn split_pseudo(nshards: usize, shard: usize) -> Option<(u8, usize)> {
    let p = shard.checked_sub(nshards)?;
    Some(((p / SHARD_SLOTS) as u8, p % SHARD_SLOTS))
}

/// This node's interests as the home shards keep them (under a mutex: they
/// change on subscription entries made and gone, not per message), and the
/// changes the node thread has not announced yet.
#[derive(Debug, Default)]
struct LocalInterests {
    set: ahash::AHashSet<Interest>,
    changes: Vec<(Interest, bool)>,
    /// More changes came than [`MAX_PENDING_CHANGES`]: the node thread
    /// announces the whole set instead.
    overflowed: bool,
}

/// Interest changes kept for the node thread, at most; past it they are
/// replaced by one announcement of the whole set.
const MAX_PENDING_CHANGES: usize = 65_536;

/// What every shard shares with the node thread.
#[derive(Debug)]
struct Shared {
    interests: Mutex<LocalInterests>,
    /// Rung (capacity 1) when `interests` has changes.
    bell: flume::Sender<()>,
}

/// A shard's end of the cluster: where it sends publications for other
/// nodes and tells its home entries' changes.
#[derive(Debug, Clone)]
pub struct ClusterLink {
    out: flume::Sender<OutEvent>,
    shared: Arc<Shared>,
    /// This node's name (publications carry it).
    pub node: Arc<str>,
}

/// A publication for other nodes: the nodes, and the frame for them
/// ([`wire::event`]).
#[derive(Debug)]
pub struct OutEvent {
    pub nodes: NodeMask,
    pub frame: Bytes,
}

/// What the node thread passes to a shard.
#[derive(Debug)]
pub enum FromNode {
    /// A node joined: its number here, and how many shards it has.
    NodeUp { node: u8, name: Arc<str>, shards: usize },
    /// A node has (`add`) or no longer has a subscription entry or callee.
    Interest { node: u8, add: bool, interest: Interest },
    /// A node is gone (after its interests were withdrawn): calls waiting
    /// on it end.
    NodeGone { node: u8 },
    /// The sessions a node that went had in `realm` (to shard 0, which
    /// publishes their `wamp.session.on_leave` here).
    Left { realm: Arc<str>, sessions: Vec<SessionOf> },
    /// A publication, or a message about a call, from another node
    /// ([`wire`]).
    Frame(Bytes),
}

impl ClusterLink {
    /// A subscription entry of this node was made (`add`) or is gone: on
    /// its URI's home shard, in the order of that URI's changes.
    /// `sub`: a subscription entry's ID and creation time; `callee`: a
    /// callee of a registration instead.
    pub fn interest(&self, realm: &Arc<str>, policy: MatchPolicy, uri: &Arc<str>, what: InterestOf, add: bool) {
        let (callee, sub) = match what {
            InterestOf::Subscription { id, created_ms } => (None, Some((id, created_ms))),
            InterestOf::Callee(c) => (Some(c), None),
        };
        let interest = Interest {
            realm: realm.clone(),
            policy,
            uri: uri.clone(),
            callee,
            session: None,
            sub,
        };
        self.change(interest, add);
    }

    /// A session of this node joined (`add`) or left `realm`.
    pub fn session(&self, realm: &Arc<str>, session: SessionOf, add: bool) {
        let interest = Interest {
            realm: realm.clone(),
            policy: MatchPolicy::Exact,
            uri: "".into(),
            callee: None,
            session: Some(session),
            sub: None,
        };
        self.change(interest, add);
    }

    fn change(&self, interest: Interest, add: bool) {
        {
            let mut i = self.shared.interests.lock().unwrap_or_else(|e| e.into_inner());
            let changed = if add {
                i.set.insert(interest.clone())
            } else {
                i.set.remove(&interest)
            };
            if !changed {
                return;
            }
            if i.overflowed || i.changes.len() >= MAX_PENDING_CHANGES {
                i.overflowed = true;
                i.changes.clear();
            } else {
                i.changes.push((interest, add));
            }
        }
        let _ = self.shared.bell.try_send(());
    }

    /// Hands a publication to the node thread; false when its queue is full
    /// (the caller counts the drop).
    pub fn send(&self, ev: OutEvent) -> bool {
        self.out.try_send(ev).is_ok()
    }
}
