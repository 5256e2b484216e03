//! Table replication: every change to a URI's entry is ordered by the URI's
//! home shard, which assigns router-scope IDs and broadcasts the change; the
//! shard that asked answers its client once every shard has acknowledged.

use std::sync::Arc;

use super::options::InvokePolicy;
use super::{RealmIdx, Router, ShardMsg, TableChange};
use crate::codec::encode;
use crate::wamp::{self, Id, MatchPolicy};

/// What an `Applied` notice completes on the origin shard.
#[derive(Debug)]
pub(super) enum AckThen {
    Subscribed {
        session: Id,
        request: Id,
        key: (MatchPolicy, Arc<str>),
        get_retained: bool,
    },
    Unsubscribed {
        session: Id,
        request: Id,
    },
    Registered {
        session: Id,
        request: Id,
        key: (MatchPolicy, Arc<str>),
    },
    Unregistered {
        session: Id,
        request: Id,
    },
}

#[derive(Debug)]
pub(super) struct PendingAck {
    pub(super) remaining: usize,
    pub(super) id: Id,
    pub(super) then: AckThen,
}

impl Router {
    /// The home shard of a URI pattern: a pure function of realm and URI.
    pub fn home_of(&self, realm: RealmIdx, uri: &str) -> usize {
        if self.nshards == 1 {
            return 0;
        }
        let mut h: u64 = 0xcbf29ce484222325 ^ realm as u64;
        for b in uri.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        (h % self.nshards as u64) as usize
    }

    pub(super) fn new_router_id(&mut self) -> Id {
        if self.cluster.is_some() {
            // in a cluster every node makes IDs: random ones (as session IDs
            // are), still this shard's residue so that no two shards here
            // can draw the same, and none in use here
            use rand::Rng;
            let n = self.nshards as u64;
            loop {
                let k = rand::thread_rng().gen_range(0..=(wamp::MAX_ID - self.me as u64 - 1) / n);
                let id = k * n + self.me as u64 + 1;
                if !self
                    .realms
                    .iter()
                    .any(|r| r.subscriptions.contains_key(&id) || r.registrations.contains_key(&id))
                {
                    return id;
                }
            }
        }
        self.next_router_id += 1;
        let id = (self.next_router_id - 1) * self.nshards as u64 + self.me as u64 + 1;
        if id > wamp::MAX_ID {
            self.next_router_id = 1;
            return self.me as u64 + 1;
        }
        id
    }

    pub(super) fn new_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Handles a message from another shard (or from this one, direct path).
    pub fn on_shard_message(&mut self, msg: ShardMsg) {
        match msg {
            ShardMsg::SubscribeReq(c) => self.home_subscribe(c),
            ShardMsg::UnsubscribeReq(c) => self.home_unsubscribe(c),
            ShardMsg::SubscriptionAdd(c, id) => self.apply_subscription_add(c, id),
            ShardMsg::SubscriptionRemove(c) => self.apply_subscription_remove(c),
            ShardMsg::RegisterReq(c) => self.home_register(c),
            ShardMsg::UnregisterReq(c) => self.home_unregister(c),
            ShardMsg::RegistrationAdd(c, id) => self.apply_registration_add(c, id),
            ShardMsg::RegistrationRemove(c) => self.apply_registration_remove(c),
            ShardMsg::RegisterRefused { token, error } => self.register_refused(token, error),
            ShardMsg::Applied { token, id } => self.applied(token, id),
            ShardMsg::Event(ev) => self.remote_event(*ev),
            ShardMsg::Invoke(inv) => self.invoke_local(*inv),
            ShardMsg::CallDone(done) => self.call_done(*done),
            ShardMsg::CloseSession(sid) => self.close_session(sid),
            ShardMsg::Interrupt(msg) => self.interrupt_local(msg),
            ShardMsg::InvokeMore(chunk) => self.invoke_more(*chunk),
            ShardMsg::Reroute(inv) => self.reroute(*inv),
            ShardMsg::Retain(msg) => self.store_retained(*msg),
            ShardMsg::Kept {
                session,
                request,
                publication,
            } => self.session_reply(session, |ser| crate::codec::encode::published(ser, request, publication)),
            ShardMsg::Query(q) => self.on_query(*q),
            ShardMsg::Answer { gather, answer } => self.on_answer(gather, answer),
        }
    }

    /// Sends one change to every shard, this one included (direct path).
    pub(super) fn broadcast(&mut self, change: TableChange, make: impl Fn(TableChange) -> ShardMsg) {
        for s in 0..self.nshards {
            if s != self.me {
                let m = make(change.clone());
                self.send_to(s, m);
            }
        }
        let m = make(change);
        self.on_shard_message(m);
    }

    pub(super) fn ack(&mut self, change: &TableChange, id: Id) {
        if change.token != 0 {
            self.send_to(change.origin, ShardMsg::Applied { token: change.token, id });
        }
    }

    /// Asks the home shard of `uri` to apply a change to the replicated
    /// tables on every shard (`make` picks the request), acknowledged under
    /// `token` (0: no acknowledgement wanted).
    pub(super) fn request_change(
        &mut self,
        realm: RealmIdx,
        (policy, uri): (MatchPolicy, Arc<str>),
        session: Id,
        token: u64,
        invoke: InvokePolicy,
        make: fn(TableChange) -> ShardMsg,
    ) {
        self.request_change_from(realm, (policy, uri), session, token, invoke, true, make)
    }

    /// [`Router::request_change`]; `member` says whether a local callee
    /// being removed held the registration (the home shard fires the meta
    /// event only then, see `home_unregister`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn request_change_from(
        &mut self,
        realm: RealmIdx,
        (policy, uri): (MatchPolicy, Arc<str>),
        session: Id,
        token: u64,
        invoke: InvokePolicy,
        member: bool,
        make: fn(TableChange) -> ShardMsg,
    ) {
        let home = self.home_of(realm, &uri);
        let change = TableChange {
            realm,
            policy,
            uri,
            shard: self.me,
            session,
            origin: self.me,
            token,
            invoke,
            created_ms: 0,
            member,
        };
        self.send_to(home, make(change));
    }

    pub(super) fn expect_acks(&mut self, then: AckThen) -> u64 {
        let token = self.new_token();
        self.pending.insert(
            token,
            PendingAck {
                remaining: self.nshards,
                id: 0,
                then,
            },
        );
        token
    }

    pub(super) fn applied(&mut self, token: u64, id: Id) {
        let Some(p) = self.pending.get_mut(&token) else { return };
        p.remaining -= 1;
        if id != 0 {
            p.id = id;
        }
        if p.remaining > 0 {
            return;
        }
        let Some(p) = self.pending.remove(&token) else { return };
        match p.then {
            AckThen::Subscribed {
                session,
                request,
                key,
                get_retained,
            } => self.subscribe_done(session, request, key, get_retained, p.id),
            AckThen::Registered { session, request, key } => self.register_done(session, request, key, p.id),
            AckThen::Unsubscribed { session, request } => {
                self.session_reply(session, |ser| encode::unsubscribed(ser, request));
            }
            AckThen::Unregistered { session, request } => {
                self.session_reply(session, |ser| encode::unregistered(ser, request));
            }
        }
    }
}
