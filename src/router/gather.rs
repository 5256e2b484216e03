//! Scatter/gather over the mesh: one request to some or all shards, their
//! answers gathered on the shard that asked, under a deadline. The router's
//! own procedures (`router/builtins.rs`) stand on it: what no single shard
//! knows (the sessions of a realm) is asked of every shard, and what one
//! other shard owns (a callee's session) is asked of that one.

use super::timers::{Due, TimerKey};
use super::{RealmIdx, Router, ShardMsg};
use std::sync::Arc;

use crate::wamp::{Dict, Id, MatchPolicy};

/// How long a gather waits for the shards' answers. Shards answer within
/// microseconds when they run; one that has not answered after this long is
/// stuck, and the caller is told so rather than kept waiting.
pub(super) const GATHER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// A question for one shard, about one realm.
#[derive(Debug, Clone)]
pub enum Query {
    /// The number of its sessions in the realm (with an authrole of the list,
    /// if given).
    SessionCount { authroles: Option<Vec<String>> },
    /// The IDs of its sessions in the realm (with an authrole of the list).
    SessionList { authroles: Option<Vec<String>> },
    /// The details of a session, if it is there.
    SessionGet { session: Id },
    /// Remove the callee `session` from `registration` (revocation).
    RemoveCallee {
        registration: Id,
        session: Id,
        reason: Option<String>,
    },
    /// The retained events of this shard's topics that match.
    Retained { policy: MatchPolicy, uri: Arc<str> },
    /// The kept events (history) of this shard's topics that match (and
    /// `topic`, if given).
    History {
        policy: MatchPolicy,
        uri: Arc<str>,
        topic: Option<String>,
        /// The caller's filters, applied here as far as one shard can (the
        /// times; the limit when no publication bound is given).
        filter: Box<super::builtins::HistoryFilter>,
        /// Stop past this many payload bytes (the caller's largest message).
        max_bytes: usize,
    },
    /// The local subscribers of the subscription entry `(policy, uri)`
    /// (its ID differs per node).
    Subscribers { policy: MatchPolicy, uri: Arc<str> },
    /// Remove the subscriber `session` from the subscription entry
    /// `(policy, uri)` (revocation).
    RemoveSubscriber {
        policy: MatchPolicy,
        uri: Arc<str>,
        session: Id,
        reason: Option<String>,
    },
    /// Close the sessions `target` names, but never `except` (the caller),
    /// with GOODBYE `reason` (and `message`).
    Kill {
        target: KillTarget,
        except: Id,
        reason: String,
        message: Option<String>,
    },
}

/// Which sessions a kill closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillTarget {
    Session(Id),
    Authid(String),
    Authrole(String),
    All,
}

/// One shard's answer to a [`Query`].
#[derive(Debug)]
pub enum Answer {
    Count(u64),
    Ids(Vec<Id>),
    Session(Option<Dict>),
    /// The callee was removed, or the error URI why not.
    Removed(Result<(), &'static str>),
    /// The sessions closed.
    Killed(Vec<Id>),
    /// Retained events: (topic, the event).
    Retained(Vec<(Arc<str>, super::broker::Retained)>),
    /// History: (topic, the kept event), and whether it stopped at
    /// `max_bytes`.
    History(Vec<(Arc<str>, super::broker::Stored)>, bool),
}

/// A query on its way to a shard.
#[derive(Debug)]
pub struct QueryMsg {
    /// The gather it belongs to, on the shard `origin`.
    pub gather: u64,
    pub origin: usize,
    pub realm: RealmIdx,
    pub query: Query,
}

/// What the asking shard does with the answers once all are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// RESULT or ERROR to this CALL of a local session.
    Call {
        caller: Id,
        request: Id,
        procedure: super::builtins::Builtin,
    },
    /// `wamp.subscription.get_events` of a local session.
    History {
        caller: Id,
        request: Id,
        subscription: Id,
        pattern: bool,
        filter: Box<super::builtins::HistoryFilter>,
    },
    /// The retained events for a new subscription of a local session.
    Retained {
        session: Id,
        subscription: Id,
        policy: MatchPolicy,
        /// Which of the session's fetches (its held events wait for it).
        fetch: u64,
    },
}

impl Reply {
    /// The local session the answer goes to.
    pub(super) fn session(&self) -> Id {
        match self {
            Reply::Call { caller, .. } | Reply::History { caller, .. } => *caller,
            Reply::Retained { session, .. } => *session,
        }
    }
}

/// A gather in progress on the shard that asked.
#[derive(Debug)]
pub(super) struct Gather {
    pub(super) reply: Reply,
    /// Answers still to come.
    pub(super) waiting: usize,
    pub(super) answers: Vec<Answer>,
    pub(super) timer: TimerKey,
}

impl Router {
    /// Sends `query` to `shards` (this one included, handled at once) and
    /// gathers their answers; `Router::gathered` runs when all are in, or at
    /// the deadline with those that came.
    pub(super) fn scatter(&mut self, reply: Reply, realm: RealmIdx, query: Query, shards: &[usize]) {
        let id = self.next_token;
        self.next_token += 1;
        if let Some(s) = self.sessions.get_mut(&reply.session()) {
            s.builtin_calls += 1;
        }
        let timer = self.timers.start(self.clock.now(), GATHER_DEADLINE, Due::Gather { id });
        self.gathers.insert(
            id,
            Gather {
                reply,
                waiting: shards.len(),
                answers: Vec::with_capacity(shards.len()),
                timer,
            },
        );
        for &shard in shards {
            let msg = QueryMsg {
                gather: id,
                origin: self.me,
                realm,
                query: query.clone(),
            };
            self.send_to(shard, ShardMsg::Query(Box::new(msg)));
        }
    }

    /// On any shard: answers a query with what this shard knows.
    pub(super) fn on_query(&mut self, msg: QueryMsg) {
        let answer = self.answer(msg.realm, msg.query);
        self.send_to(
            msg.origin,
            ShardMsg::Answer {
                gather: msg.gather,
                answer,
            },
        );
    }

    /// On the asking shard: one answer in.
    pub(super) fn on_answer(&mut self, gather: u64, answer: Answer) {
        let Some(g) = self.gathers.get_mut(&gather) else {
            return; // past its deadline
        };
        g.answers.push(answer);
        g.waiting -= 1;
        if g.waiting == 0 {
            if let Some(g) = self.gathers.remove(&gather) {
                self.timers.cancel(g.timer);
                self.gathered(g.reply, g.answers, true);
            }
        }
    }

    /// The deadline of a gather: it ends with the answers that came.
    pub(super) fn gather_timed_out(&mut self, gather: u64) {
        if let Some(g) = self.gathers.remove(&gather) {
            self.gathered(g.reply, g.answers, false);
        }
    }
}
