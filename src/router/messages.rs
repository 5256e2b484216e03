//! The messages shards send each other over the mesh, and how a router
//! reaches the other shards.

use std::rc::Rc;
use std::sync::Arc;

use super::options::{CancelMode, InvokePolicy};
use super::RealmIdx;
use crate::shard::mesh::Mesh;
use crate::wamp::{Dict, Id, MatchPolicy, Payload};

/// Messages between shards.
#[derive(Debug)]
pub enum ShardMsg {
    /// To the home shard: add a subscriber.
    SubscribeReq(TableChange),
    /// To the home shard: remove a subscriber.
    UnsubscribeReq(TableChange),
    /// From the home shard to all: add a subscriber to entry `id`.
    SubscriptionAdd(TableChange, Id),
    /// From the home shard to all: remove a subscriber.
    SubscriptionRemove(TableChange),
    /// To the home shard: add a callee.
    RegisterReq(TableChange),
    /// To the home shard: remove a callee.
    UnregisterReq(TableChange),
    /// From the home shard to all: add a callee to entry `id`.
    RegistrationAdd(TableChange, Id),
    /// From the home shard to all: remove a callee.
    RegistrationRemove(TableChange),
    /// From the home shard to the origin: the registration was refused.
    RegisterRefused { token: u64, error: &'static str },
    /// From every shard to the origin of a change: applied.
    Applied { token: u64, id: Id },
    /// A publication for subscriptions with subscribers on the receiving shard.
    Event(Box<EventMsg>),
    /// A call for a callee on the receiving shard.
    Invoke(Box<InvokeMsg>),
    /// A callee's answer for a caller on the receiving shard.
    CallDone(Box<CallDone>),
    /// Close this local session (WebSocket 1011): handling a message about
    /// it panicked on another shard.
    CloseSession(Id),
    /// To the callee's shard: the caller canceled a call, it timed out, or
    /// its caller left.
    Interrupt(InterruptMsg),
    /// To the callee's shard: a further chunk of a progressive call
    /// invocation.
    InvokeMore(Box<CallChunk>),
    /// Back to the caller's shard: the callee answered
    /// `wamp.error.unavailable`; route the call to another callee of the
    /// shared registration (`tried` names those that declined).
    Reroute(Box<InvokeMsg>),
    /// To a topic's home shard: keep this event as the topic's retained one.
    Retain(Box<super::RetainMsg>),
    /// Back to the publisher's shard: the home shard kept the event of an
    /// acknowledged PUBLISH; send its PUBLISHED.
    Kept { session: Id, request: Id, publication: Id },
    /// A scatter/gather's question for the receiving shard.
    Query(Box<super::QueryMsg>),
    /// Its answer, back to the shard that asked.
    Answer { gather: u64, answer: super::Answer },
}

/// Whom a cross-shard message concerns on the shard that handles it: the
/// sessions to close (and the call to answer) if handling it panics.
#[derive(Debug, Clone, Copy)]
pub enum Concerns {
    /// No session in particular (an event, an acknowledgement).
    Nobody,
    /// One session, on the shard named.
    Session { shard: usize, session: Id },
    /// One session of the receiving shard.
    Here(Id),
    /// A call for a callee; its caller is told the call failed.
    Invocation {
        callee: Id,
        caller_shard: usize,
        caller: Id,
        call_request: Id,
    },
}

impl ShardMsg {
    /// Whom this message concerns (see [`Concerns`]).
    pub fn concerns(&self) -> Concerns {
        match self {
            ShardMsg::SubscriptionAdd(c, _)
            | ShardMsg::SubscriptionRemove(c)
            | ShardMsg::RegistrationAdd(c, _)
            | ShardMsg::RegistrationRemove(c)
            | ShardMsg::SubscribeReq(c)
            | ShardMsg::UnsubscribeReq(c)
            | ShardMsg::RegisterReq(c)
            | ShardMsg::UnregisterReq(c) => Concerns::Session {
                shard: c.shard,
                session: c.session,
            },
            ShardMsg::Invoke(inv) => Concerns::Invocation {
                callee: inv.callee,
                caller_shard: inv.caller_shard,
                caller: inv.caller,
                call_request: inv.call_request,
            },
            // handled on the caller's shard, which is the receiving one
            ShardMsg::CallDone(done) => Concerns::Here(done.caller),
            ShardMsg::CloseSession(sid) => Concerns::Here(*sid),
            ShardMsg::Interrupt(i) => Concerns::Here(i.callee),
            ShardMsg::InvokeMore(c) => Concerns::Here(c.callee),
            ShardMsg::Reroute(inv) => Concerns::Here(inv.caller),
            ShardMsg::Kept { session, .. } => Concerns::Here(*session),
            ShardMsg::RegisterRefused { .. }
            | ShardMsg::Applied { .. }
            | ShardMsg::Event(_)
            | ShardMsg::Query(_)
            | ShardMsg::Retain(_)
            | ShardMsg::Answer { .. } => Concerns::Nobody,
        }
    }
}

impl crate::shard::mesh::MeshMessage for ShardMsg {
    fn droppable(&self) -> bool {
        matches!(self, ShardMsg::Event(_))
    }
}

/// How a router reaches the other shards.
#[derive(Debug)]
pub enum ShardLink {
    /// The cross-shard queues (a running router).
    Mesh(Mesh<ShardMsg>),
    /// Messages for other shards are collected, in order, as (shard, message):
    /// for driving several routers by hand (tests, the router fuzz target).
    Collect(Rc<std::cell::RefCell<std::collections::VecDeque<(usize, ShardMsg)>>>),
    /// A single shard without peers.
    None,
}

/// A change to one URI's table entry, as it travels to the home shard and
/// from there to every shard.
#[derive(Debug, Clone)]
pub struct TableChange {
    pub realm: RealmIdx,
    pub policy: MatchPolicy,
    pub uri: Arc<str>,
    /// The shard of the session the change is about.
    pub shard: usize,
    pub session: Id,
    /// The shard to notify with `Applied` (and its token; 0 = no notice).
    pub origin: usize,
    pub token: u64,
    /// A registration's invocation policy (`Single` for anything else).
    pub invoke: InvokePolicy,
    /// When the home shard created the entry (ms since the Unix epoch; 0
    /// until then), so that every replica tells the same time.
    pub created_ms: u64,
    /// For a callee's removal: whether its own shard's replica held it
    /// (true for anything else).
    pub member: bool,
}

/// A publication on its way to another shard.
#[derive(Debug)]
pub struct EventMsg {
    pub realm: RealmIdx,
    pub subscriptions: Vec<Id>,
    pub publication: Id,
    pub topic: Arc<str>,
    pub payload: Payload,
    /// The publisher, when it excluded itself (0 = none).
    pub exclude: Id,
    /// Passthru attributes, the publisher's identity, receiver lists.
    pub extras: Option<Box<super::EventExtras>>,
}

/// A call on its way to the callee's shard.
#[derive(Debug)]
pub struct InvokeMsg {
    pub realm: RealmIdx,
    pub registration: Id,
    pub callee: Id,
    pub caller_shard: usize,
    pub caller: Id,
    pub call_request: Id,
    /// The concrete procedure, for pattern-based registrations.
    pub procedure: Option<Arc<str>>,
    /// The caller asked for progressive results.
    pub receive_progress: bool,
    /// The caller's authid and authrole, when it asked to be disclosed
    /// (its session ID travels in `caller` anyway).
    pub disclose: Option<(Arc<str>, Arc<str>)>,
    /// The first chunk of a progressive call invocation: more follow.
    pub progress: bool,
    /// Payload passthru attributes for INVOCATION.Details.
    pub ppt: Option<Box<Dict>>,
    /// The caller announced payload passthru mode (a passthru YIELD may go
    /// to it).
    pub caller_ppt: bool,
    /// The registration is shared with other callees: the call may be
    /// rerouted (a callee at its limits or answering
    /// `wamp.error.unavailable`).
    pub shared: bool,
    /// Callees that declined this call already (unavailable, or at their
    /// limits).
    pub tried: Vec<(usize, Id)>,
    pub payload: Payload,
}

/// A further chunk of a progressive call invocation, on its way to the
/// callee's shard: the call is named by its router-wide key.
#[derive(Debug)]
pub struct CallChunk {
    pub callee: Id,
    pub caller_shard: usize,
    pub caller: Id,
    pub call_request: Id,
    /// More chunks follow.
    pub progress: bool,
    pub payload: Payload,
}

/// A canceled call on its way to its callee's shard, named by the call's
/// router-wide key (caller's shard, caller, CALL request ID).
#[derive(Debug, Clone, Copy)]
pub struct InterruptMsg {
    pub callee: Id,
    pub caller_shard: usize,
    pub caller: Id,
    pub call_request: Id,
    pub mode: CancelMode,
}

/// The outcome of a call on its way back to the caller's shard.
#[derive(Debug)]
pub struct CallDone {
    pub caller: Id,
    pub call_request: Id,
    /// `None` for a result, the error URI for an error.
    pub error: Option<String>,
    /// A progressive result: the call goes on.
    pub progress: bool,
    pub details: Dict,
    pub payload: Payload,
}
