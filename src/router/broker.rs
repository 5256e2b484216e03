//! The Broker: subscriptions and the path of a PUBLISH.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;
use tracing::debug;

use super::gather::{Answer, Query, Reply};
use super::options::{InvokePolicy, PublishOptions, Receivers, SubscribeOptions};
use super::session::LocalSession;
use super::tables::AckThen;
use super::{EventMsg, RealmIdx, Router, ShardMsg, TableChange};
use crate::codec::{self, encode};
use crate::config::{CallerDisclosure, SlowConsumerPolicy};
use crate::metrics::ShardStats;
use crate::session::outbox::{CloseReason, Outgoing};
use crate::wamp::message::Serializer;
use crate::wamp::uri::UriCheck;
use crate::wamp::{self, uris, Dict, Id, MatchPolicy, MessageType, Payload, Value};

/// One subscription (topic + match policy) in a shard's replica.
#[derive(Debug)]
pub struct Subscription {
    pub id: Id,
    pub policy: MatchPolicy,
    pub uri: Arc<str>,
    /// Subscribers on this shard.
    pub local: Vec<Id>,
    /// Number of subscribers on each shard (this one's entry unused).
    pub remote: Box<[u32]>,
    /// When it was created (ms since the Unix epoch, the home shard's clock).
    pub created_ms: u64,
    /// Local subscribers whose live events are held until their retained
    /// events are delivered (`broker::Held`); while 0, delivery never looks.
    pub held: u32,
}

/// The live events of one subscription held back for one session while its
/// retained events (`get_retained`) are gathered from the shards: they are
/// delivered first, so a subscriber never gets a retained event after a
/// live one, and one whose topic got a live event meanwhile (newer) is left
/// out. Bounded in bytes by `limits.max_outbound_bytes`, like the outbox.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) subscription: Id,
    /// The fetch it waits for (`LocalSession::fetches`).
    fetch: u64,
    frames: Vec<Bytes>,
    /// The topics of the held events.
    topics: ahash::AHashSet<Box<str>>,
    bytes: usize,
    cap: usize,
}

impl LocalSession {
    /// Holds `frame` if this session waits for the retained events of
    /// `subscription`; false if it does not (deliver it now). Past the
    /// bound the event is dropped (counted).
    fn hold(&self, subscription: Id, topic: &str, frame: &Bytes, stats: &ShardStats) -> bool {
        let mut held = self.held.borrow_mut();
        let Some(h) = held.iter_mut().find(|h| h.subscription == subscription) else {
            return false;
        };
        let bytes = frame.len() + if h.topics.contains(topic) { 0 } else { topic.len() };
        if h.bytes + bytes > h.cap {
            ShardStats::inc(&stats.events_dropped);
            return true;
        }
        h.bytes += bytes;
        if !h.topics.contains(topic) {
            h.topics.insert(topic.into());
        }
        h.frames.push(frame.clone());
        true
    }
}

impl Subscription {
    fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.iter().all(|&n| n == 0)
    }
}

/// Per-publication caches: the payload in each serializer, converted at most
/// once.
struct PayloadCache<'a> {
    original: &'a Payload,
    converted: [Option<Option<Payload>>; Serializer::COUNT],
}

impl<'a> PayloadCache<'a> {
    fn new(original: &'a Payload) -> Self {
        PayloadCache {
            original,
            converted: [None, None, None],
        }
    }

    fn get(&mut self, ser: Serializer, stats: &ShardStats) -> Option<&Payload> {
        if ser == self.original.serializer {
            return Some(self.original);
        }
        let slot = &mut self.converted[ser.index()];
        if slot.is_none() {
            ShardStats::inc(&stats.transcodes);
            *slot = Some(codec::transcode(self.original, ser).ok());
        }
        slot.as_ref().and_then(Option::as_ref)
    }
}

/// What a publication carries beyond its payload, for the few that do (one
/// pointer, `None`, for the others).
#[derive(Debug, Clone, Default)]
pub struct EventExtras {
    /// Payload passthru attributes, forwarded in EVENT.Details.
    pub ppt: Option<Box<Dict>>,
    /// The publisher named to the subscribers: session, authid, authrole.
    pub publisher: Option<(Id, Arc<str>, Arc<str>)>,
    /// Subscriber black- and whitelists.
    pub receivers: Option<Box<Receivers>>,
}

impl EventExtras {
    /// About the memory they take (for the byte bounds of what keeps them).
    pub fn bytes(&self) -> usize {
        let ppt = self
            .ppt
            .as_ref()
            .map_or(0, |d| d.0.iter().map(|(k, v)| k.len() + value_bytes(v)).sum());
        let publisher = self.publisher.as_ref().map_or(0, |(_, a, r)| a.len() + r.len() + 8);
        64 + ppt + publisher + self.receivers.as_ref().map_or(0, |r| r.bytes())
    }
}

/// About the memory a value takes.
fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Str(s) => s.len() + 24,
        Value::Bytes(b) => b.len() + 24,
        Value::List(l) => 24 + l.iter().map(value_bytes).sum::<usize>(),
        Value::Dict(d) => 24 + d.0.iter().map(|(k, v)| k.len() + value_bytes(v)).sum::<usize>(),
        _ => 16,
    }
}

/// EVENT.Details a publication's extras give (passthru attributes, the
/// publisher); the topic and `retained` are added by the caller.
pub(super) fn event_details(extras: Option<&EventExtras>) -> Dict {
    let mut details = Dict::new();
    if let Some(e) = extras {
        if let Some(ppt) = &e.ppt {
            details.0.extend(ppt.0.iter().cloned());
        }
        if let Some((id, authid, authrole)) = &e.publisher {
            details.insert("publisher", Value::UInt(*id));
            details.insert("publisher_authid", Value::Str(authid.to_string()));
            details.insert("publisher_authrole", Value::Str(authrole.to_string()));
        }
    }
    details
}

/// The extras of a kept event that outlive its session, as the durable
/// history writes them.
pub(super) fn extras_to_dict(e: &EventExtras) -> Dict {
    let strs = |l: &[String]| Value::List(l.iter().map(|s| Value::Str(s.clone())).collect());
    let mut d = Dict::new();
    if let Some(ppt) = &e.ppt {
        d.insert("ppt", Value::Dict((**ppt).clone()));
    }
    if let Some((id, authid, authrole)) = &e.publisher {
        d.insert("publisher", Value::UInt(*id));
        d.insert("publisher_authid", Value::Str(authid.to_string()));
        d.insert("publisher_authrole", Value::Str(authrole.to_string()));
    }
    if let Some(r) = &e.receivers {
        if let Some(l) = &r.eligible_authid {
            d.insert("eligible_authid", strs(l));
        }
        if let Some(l) = &r.eligible_authrole {
            d.insert("eligible_authrole", strs(l));
        }
        d.insert("exclude_authid", strs(&r.exclude_authid));
        d.insert("exclude_authrole", strs(&r.exclude_authrole));
    }
    d
}

/// The extras of a publication for another cluster node, as PUBLISH
/// options (`wire::event`): passthru attributes, the disclosed publisher,
/// every receiver list.
pub(super) fn extras_to_wire(e: &EventExtras, d: &mut Dict) {
    if let Some(ppt) = &e.ppt {
        for (k, v) in &ppt.0 {
            d.insert(k.as_str(), v.clone());
        }
    }
    if let Some((id, authid, authrole)) = &e.publisher {
        d.insert("publisher", Value::UInt(*id));
        d.insert("publisher_authid", Value::Str(authid.to_string()));
        d.insert("publisher_authrole", Value::Str(authrole.to_string()));
    }
    if let Some(r) = &e.receivers {
        let strs = |l: &[String]| Value::List(l.iter().map(|s| Value::Str(s.clone())).collect());
        let ids = |l: &[Id]| Value::List(l.iter().map(|s| Value::UInt(*s)).collect());
        d.insert("exclude", ids(&r.exclude));
        if let Some(l) = &r.eligible {
            d.insert("eligible", ids(l));
        }
        d.insert("exclude_authid", strs(&r.exclude_authid));
        if let Some(l) = &r.eligible_authid {
            d.insert("eligible_authid", strs(l));
        }
        d.insert("exclude_authrole", strs(&r.exclude_authrole));
        if let Some(l) = &r.eligible_authrole {
            d.insert("eligible_authrole", strs(l));
        }
    }
}

/// [`extras_to_wire`] read back (`None` for a plain publication).
pub(super) fn extras_from_wire(d: &Dict) -> Option<Box<EventExtras>> {
    let publisher = match (d.get("publisher"), d.get_str("publisher_authid"), d.get_str("publisher_authrole")) {
        (Some(Value::UInt(id)), Some(a), Some(r)) => Some((*id, a.into(), r.into())),
        _ => None,
    };
    let e = EventExtras {
        ppt: super::options::passthru(d),
        publisher,
        receivers: Receivers::read(d),
    };
    (e.ppt.is_some() || e.publisher.is_some() || e.receivers.is_some()).then(|| Box::new(e))
}

/// [`extras_to_dict`] read back.
pub(super) fn extras_from_dict(d: &Dict) -> Box<EventExtras> {
    let publisher = match (d.get("publisher"), d.get_str("publisher_authid"), d.get_str("publisher_authrole")) {
        (Some(Value::UInt(id)), Some(a), Some(r)) => Some((*id, a.into(), r.into())),
        _ => None,
    };
    Box::new(EventExtras {
        ppt: match d.get("ppt") {
            Some(Value::Dict(p)) => Some(Box::new(p.clone())),
            _ => None,
        },
        publisher,
        // written under the PUBLISH options' names
        receivers: Receivers::read(d),
    })
}

/// A topic's retained event, kept on the topic's home shard.
#[derive(Debug, Clone)]
pub struct Retained {
    pub publication: Id,
    /// A copy (it holds no read buffer).
    pub payload: Payload,
    pub extras: Option<Box<EventExtras>>,
    /// The publisher, when it excluded itself (it does not get it either).
    pub exclude: Id,
}

/// An event to keep, on its way to its topic's home shard: as the topic's
/// retained event, in its history, or both.
#[derive(Debug)]
pub struct RetainMsg {
    pub realm: RealmIdx,
    pub topic: Arc<str>,
    pub event: Retained,
    pub retain: bool,
    pub history: bool,
    /// When it was published (µs since the Unix epoch), and its place among
    /// the publishing shard's kept ones.
    pub at_us: u64,
    pub seq: (u64, usize),
    /// An acknowledged PUBLISH (session, request): its PUBLISHED is sent
    /// once the home shard kept the event, so that a history read or a
    /// retained-event subscription after it finds the event.
    pub ack: Option<(Id, Id)>,
    /// Where it comes from: a session here, or another node.
    pub from: KeptFrom,
}

/// What to keep of an event (as the topic's retained event, in its
/// history), when it was published (µs since the Unix epoch, on the
/// publisher's node), and where it comes from. Another node is told in the
/// publication's frame; `KeptFrom::Sync` there: a copy for a node that
/// joined, kept and not delivered.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    pub retain: bool,
    pub history: bool,
    pub at_us: u64,
    pub from: KeptFrom,
}

impl Keep {
    /// Its `keep` and `at` options in a publication's frame for another
    /// node (`from`: Sync, or a live publication).
    pub fn write_wire(self, options: &mut Dict) {
        let sync = self.from == KeptFrom::Sync;
        let flags = u64::from(self.retain) | u64::from(self.history) << 1 | u64::from(sync) << 2;
        options.insert("keep", Value::UInt(flags));
        options.insert("at", Value::UInt(self.at_us));
    }

    /// What a frame from another node asks to keep (`None`: nothing).
    pub fn from_wire(options: &Dict) -> Option<Keep> {
        let Some(Value::UInt(flags)) = options.get("keep") else {
            return None;
        };
        let at_us = match options.get("at") {
            Some(Value::UInt(t)) => *t,
            _ => super::now_us(),
        };
        Some(Keep {
            retain: flags & 1 != 0,
            history: flags & 2 != 0,
            at_us,
            from: if flags & 4 == 0 { KeptFrom::Node } else { KeptFrom::Sync },
        })
    }
}

/// Where an event to keep comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptFrom {
    /// A publication of a session of this node.
    Here,
    /// A publication of another node (every node keeps a copy of what the
    /// cluster publishes, so that it outlives its publisher's node): kept
    /// in history once (it may come again from a node's sync).
    Node,
    /// Another node's copy, sent when this node joined: a retained event
    /// replaces only an older one, and a history event is kept once.
    Sync,
}

/// One event of a topic's history, kept on the topic's home shard.
#[derive(Debug, Clone)]
pub struct Stored {
    /// When it was published (µs since the Unix epoch).
    pub at_us: u64,
    /// Its place among its publishing shard's kept events (sequence,
    /// shard): with the time, the order of a history.
    pub seq: (u64, usize),
    pub event: Retained,
}

impl Stored {
    fn bytes(&self, topic: &str) -> usize {
        topic.len() + self.event.bytes()
    }
}

impl Retained {
    /// About the memory it takes: payload, extras and bookkeeping.
    pub fn bytes(&self) -> usize {
        64 + self.payload.raw.len() + self.extras.as_ref().map_or(0, |e| e.bytes())
    }
}

/// What every EVENT of one publication shares.
struct Publication<'a> {
    id: Id,
    topic: &'a str,
    /// The publisher, when it excluded itself (0 = none).
    exclude: Id,
    extras: Option<&'a EventExtras>,
}

/// Delivers one publication to the local subscribers of `sub`, encoding one
/// EVENT per serializer and sharing it among all of them.
fn deliver_local(
    sessions: &AHashMap<Id, Box<LocalSession>>,
    stats: &ShardStats,
    policy: SlowConsumerPolicy,
    sub: &Subscription,
    publication: &Publication<'_>,
    cache: &mut PayloadCache<'_>,
) {
    let mut frames: [Option<Bytes>; Serializer::COUNT] = [None, None, None];
    let mut delivered = 0u64;
    for sid in &sub.local {
        if *sid == publication.exclude {
            continue;
        }
        let Some(s) = sessions.get(sid) else { continue };
        if let Some(e) = publication.extras {
            if e.receivers
                .as_deref()
                .is_some_and(|r| !r.admit(*sid, &s.identity.authid, &s.identity.authrole))
            {
                continue;
            }
            // a passthru payload (maybe not even an Arguments list) only to
            // subscribers that announced the mode
            if e.ppt.is_some() && !s.features.ppt_subscriber {
                continue;
            }
        }
        let slot = &mut frames[s.ser.index()];
        if slot.is_none() {
            let Some(payload) = cache.get(s.ser, stats) else { continue };
            if publication.extras.is_none() && sub.policy == MatchPolicy::Exact {
                // nearly every EVENT: empty Details, nothing to build
                *slot = Some(encode::event(s.ser, sub.id, publication.id, codec::empty_dict(s.ser), payload));
            } else {
                let mut details = event_details(publication.extras);
                if sub.policy != MatchPolicy::Exact {
                    details.insert("topic", Value::Str(publication.topic.to_owned()));
                }
                let details = codec::encode_dict(s.ser, &details);
                *slot = Some(encode::event(s.ser, sub.id, publication.id, &details, payload));
            }
        }
        if let Some(frame) = slot {
            if sub.held > 0 && s.hold(sub.id, publication.topic, frame, stats) {
                continue;
            }
            if s.outbox.push_event(frame.clone()) {
                delivered += 1;
            } else if !s.outbox.is_closing() {
                ShardStats::inc(&stats.events_dropped);
                if policy == SlowConsumerPolicy::Disconnect {
                    ShardStats::inc(&stats.slow_consumers_disconnected);
                    tracing::info!(session = sid, "slow consumer disconnected");
                    s.outbox
                        .abort(Outgoing::close(CloseReason::PolicyViolation, "slow consumer: outbound queue full"));
                }
            }
        }
    }
    stats.events_delivered.fetch_add(delivered, Ordering::Relaxed);
}

impl Router {
    pub(super) fn subscribe(&mut self, sid: Id, request: Id, options: SubscribeOptions, topic: String) {
        let policy = options.policy;
        if !self.uri_ok(sid, MessageType::Subscribe, request, &topic, UriCheck::Pattern(policy), true) {
            return;
        }
        let max = self.limits.max_subscriptions_per_session;
        let Some(s) = self.sessions.get_mut(&sid) else { return };
        let realm = s.realm;
        let key: (MatchPolicy, Arc<str>) = (policy, topic.into());
        match s.subs.get(&key) {
            Some(Some(id)) => {
                let id = *id;
                self.session_reply(sid, |ser| encode::subscribed(ser, request, id));
                if options.get_retained {
                    self.fetch_retained(sid, id, key);
                }
                return;
            }
            Some(None) if s.subs.len() + s.sub_waiters.len() < max => {
                s.sub_waiters.push((key, request, options.get_retained));
                return;
            }
            Some(None) => {}
            None => {}
        }
        if s.subs.len() + s.sub_waiters.len() >= max {
            ShardStats::inc(&self.stats.subscriptions_refused);
            let m = format!("this session holds {max} subscriptions (limits.max_subscriptions_per_session)");
            return self.error_reply(sid, MessageType::Subscribe, request, uris::LIMIT_EXCEEDED, &m);
        }
        s.subs.insert(key.clone(), None);
        let token = self.expect_acks(AckThen::Subscribed {
            session: sid,
            request,
            key: key.clone(),
            get_retained: options.get_retained,
        });
        self.request_change(realm, (policy, key.1), sid, token, InvokePolicy::Single, ShardMsg::SubscribeReq);
    }

    pub(super) fn subscribe_done(&mut self, sid: Id, request: Id, key: (MatchPolicy, Arc<str>), get_retained: bool, id: Id) {
        let Some(s) = self.sessions.get_mut(&sid) else { return };
        let Some(slot) = s.subs.get_mut(&key) else { return };
        *slot = Some(id);
        s.sub_ids.insert(id, key.clone());
        let mut requests = vec![(request, get_retained)];
        s.sub_waiters.retain(|(k, r, g)| {
            if *k == key {
                requests.push((*r, *g));
                false
            } else {
                true
            }
        });
        for (r, get_retained) in requests {
            self.session_reply(sid, |ser| encode::subscribed(ser, r, id));
            if get_retained {
                self.fetch_retained(sid, id, key.clone());
            }
        }
    }

    /// After SUBSCRIBED with `get_retained`: asks the shards that keep the
    /// matching topics' retained events (the topic's home for an exact
    /// subscription, every shard for a pattern) to send them.
    fn fetch_retained(&mut self, sid: Id, subscription: Id, (policy, uri): (MatchPolicy, Arc<str>)) {
        let Some(s) = self.sessions.get(&sid) else { return };
        let realm = s.realm;
        if s.builtin_calls >= self.limits.max_pending_calls {
            ShardStats::inc(&self.stats.calls_refused);
            return;
        }
        let shards: Vec<usize> = if policy == MatchPolicy::Exact {
            vec![self.home_of(realm, &uri)]
        } else {
            (0..self.nshards).collect()
        };
        let cap = self.limits.max_outbound_bytes;
        let Some(s) = self.sessions.get_mut(&sid) else { return };
        s.fetches += 1;
        let fetch = s.fetches;
        s.held.get_mut().push(Held {
            subscription,
            fetch,
            frames: Vec::new(),
            topics: ahash::AHashSet::new(),
            bytes: 0,
            cap,
        });
        if let Some(sub) = self.realms[realm as usize].subscriptions.get_mut(&subscription) {
            sub.held += 1;
        }
        let reply = Reply::Retained {
            session: sid,
            subscription,
            policy,
            fetch,
        };
        self.scatter(reply, realm, Query::Retained { policy, uri }, &shards);
    }

    /// Hands an event to keep to its topic's home shard (this one, or over
    /// the mesh). `ack`: a PUBLISH to acknowledge once it is kept; true when
    /// the home shard took it (it acknowledges), false when the caller must.
    pub(super) fn keep_at_home(&mut self, realm: RealmIdx, topic: Arc<str>, event: Retained, what: Keep, ack: Option<(Id, Id)>) -> bool {
        let msg = RetainMsg {
            realm,
            topic,
            event,
            retain: what.retain,
            history: what.history,
            at_us: what.at_us,
            seq: (self.keep_seq, self.me),
            ack: None,
            from: what.from,
        };
        self.keep_seq += 1;
        let home = self.home_of(realm, &msg.topic);
        if home == self.me {
            self.store_retained(msg);
            return false;
        }
        let taken = ack.is_some();
        self.send_to(home, ShardMsg::Retain(Box::new(RetainMsg { ack, ..msg })));
        taken
    }

    /// On a topic's home shard: keeps an event as the topic's retained one,
    /// replacing the one before; a new topic past the realm's share of
    /// `max_retained_events` / `max_retained_bytes` is not kept (counted).
    pub(super) fn store_retained(&mut self, mut msg: RetainMsg) {
        if let Some((session, request)) = msg.ack.take() {
            let kept = ShardMsg::Kept {
                session,
                request,
                publication: msg.event.publication,
            };
            let origin = msg.seq.1;
            self.keep(msg);
            return self.send_to(origin, kept);
        }
        self.keep(msg);
    }

    fn keep(&mut self, msg: RetainMsg) {
        if msg.history {
            let r = &self.realms[msg.realm as usize];
            // a copy from another node may come twice (live, and in a sync)
            let twice = msg.from != KeptFrom::Here
                && r.history
                    .get(&msg.topic)
                    .is_some_and(|events| events.iter().rev().any(|e| e.event.publication == msg.event.publication));
            if !twice {
                self.keep_history(msg.realm, msg.topic.clone(), msg.at_us, msg.seq, msg.event.clone(), true);
            }
        }
        if !msg.retain {
            return;
        }
        let r = &mut self.realms[msg.realm as usize];
        if msg.from == KeptFrom::Sync && r.retained.get(&msg.topic).is_some_and(|old| old.at_us >= msg.at_us) {
            return;
        }
        let bytes = msg.topic.len() + msg.event.bytes();
        let before = r.retained.get(&msg.topic).map(|old| old.bytes(&msg.topic));
        let count = r.retained.len() + usize::from(before.is_none());
        if count > r.max_retained_events || r.retained_bytes - before.unwrap_or(0) + bytes > r.max_retained_bytes {
            ShardStats::inc(&self.stats.retained_refused);
            // an older event must not stand in for the one refused
            if let Some(old) = before {
                r.retained.remove(&msg.topic);
                r.retained_bytes -= old;
                self.stats.retained_events.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        r.retained_bytes = r.retained_bytes - before.unwrap_or(0) + bytes;
        if before.is_none() {
            self.stats.retained_events.fetch_add(1, Ordering::Relaxed);
        }
        let kept = Stored {
            at_us: msg.at_us,
            seq: msg.seq,
            event: msg.event,
        };
        r.retained.insert(msg.topic, kept);
    }

    /// On a topic's home shard: appends an event to the topic's history,
    /// dropping the topic's events past its rule's limit and age, then its
    /// oldest ones while the realm's share of `max_history_bytes` is
    /// exceeded (a new topic's event that still does not fit is not kept).
    /// `persist`: write it through to the durable store (not for events
    /// read back from it); evicted events are removed from it either way.
    pub(super) fn keep_history(&mut self, realm: RealmIdx, topic: Arc<str>, at_us: u64, seq: (u64, usize), event: Retained, persist: bool) {
        let store = self.history_store.clone();
        let realm_name = self.realms[realm as usize].name.clone();
        let mut lost = 0u64;
        let mut gone = |old: &Stored| {
            if let Some(s) = &store {
                let op = crate::history_store::StoreOp::Remove {
                    realm: realm_name.to_string(),
                    topic: topic.to_string(),
                    at_us: old.at_us,
                    seq: old.seq,
                };
                if !s.send(op) {
                    lost += 1;
                }
            }
        };
        let r = &mut self.realms[realm as usize];
        let Some(&(_, _, limit, max_age)) = r
            .history_rules
            .iter()
            .find(|(p, u, _, _)| wamp::uri::pattern_matches(*p, u, &topic))
        else {
            return;
        };
        let stored = Stored { at_us, seq, event };
        let max_age = max_age * 1000;
        let bytes = stored.bytes(&topic);
        // not kept if even this topic's whole history would not make room
        // (its events are not given up for nothing)
        let own: usize = r.history.get(&topic).map_or(0, |e| e.iter().map(|x| x.bytes(&topic)).sum());
        if r.history_bytes - own + bytes > r.max_history_bytes {
            ShardStats::inc(&self.stats.history_dropped);
            if !persist {
                gone(&stored);
            }
            self.stats.history_store_dropped.fetch_add(lost, Ordering::Relaxed);
            return;
        }
        let events = r.history.entry(topic.clone()).or_default();
        let mut freed = 0;
        while events.len() >= limit || (max_age > 0 && events.front().is_some_and(|e| e.at_us + max_age < at_us)) {
            match events.pop_front() {
                Some(old) => {
                    freed += old.bytes(&topic);
                    gone(&old);
                }
                None => break,
            }
        }
        while r.history_bytes - freed + bytes > r.max_history_bytes {
            match events.pop_front() {
                Some(old) => {
                    freed += old.bytes(&topic);
                    gone(&old);
                }
                None => break,
            }
        }
        r.history_bytes -= freed;
        let fits = r.history_bytes + bytes <= r.max_history_bytes;
        if !fits {
            ShardStats::inc(&self.stats.history_dropped);
            if events.is_empty() {
                r.history.remove(&topic);
            }
            if !persist {
                gone(&stored);
            }
        } else {
            r.history_bytes += bytes;
            if persist {
                if let Some(s) = &store {
                    let op = crate::history_store::StoreOp::Append(Box::new(crate::history_store::StoredEvent {
                        realm: realm_name.to_string(),
                        topic: topic.to_string(),
                        at_us,
                        seq,
                        publication: stored.event.publication,
                        payload: stored.event.payload.clone(),
                        extras: stored.event.extras.as_deref().map(extras_to_dict),
                    }));
                    if !s.send(op) {
                        lost += 1;
                    }
                }
            }
            events.push_back(stored);
            ShardStats::inc(&self.stats.history_events);
        }
        self.stats.history_store_dropped.fetch_add(lost, Ordering::Relaxed);
    }

    /// This shard's kept events of topics that `(policy, uri)` matches
    /// (and `topic`, if given), the expired ones left out.
    pub(super) fn history_matching(&self, realm: RealmIdx, policy: MatchPolicy, uri: &str, topic: Option<&str>) -> Vec<(Arc<str>, Stored)> {
        let r = &self.realms[realm as usize];
        let now = super::now_us();
        let mut out = Vec::new();
        for (t, events) in &r.history {
            if !wamp::uri::pattern_matches(policy, uri, t) || topic.is_some_and(|x| x != &**t) {
                continue;
            }
            let max_age = r
                .history_rules
                .iter()
                .find(|(p, u, _, _)| wamp::uri::pattern_matches(*p, u, t))
                .map_or(0, |rule| rule.3 * 1000);
            for e in events {
                if max_age == 0 || e.at_us + max_age >= now {
                    out.push((t.clone(), e.clone()));
                }
            }
        }
        out
    }

    /// This shard's retained events of topics that `(policy, uri)` matches.
    pub(super) fn retained_matching(&self, realm: RealmIdx, policy: MatchPolicy, uri: &str) -> Vec<(Arc<str>, Retained)> {
        let r = &self.realms[realm as usize];
        if policy == MatchPolicy::Exact {
            return r
                .retained
                .get_key_value(uri)
                .map(|(t, e)| (t.clone(), e.event.clone()))
                .into_iter()
                .collect();
        }
        r.retained
            .iter()
            .filter(|(t, _)| wamp::uri::pattern_matches(policy, uri, t))
            .map(|(t, e)| (t.clone(), e.event.clone()))
            .collect()
    }

    /// The retained events for a new subscription, to its session: each one
    /// it would have received when it was published, with `retained`.
    /// Then the live events held meanwhile follow, and one whose topic got a
    /// live event is left out (that one is newer).
    pub(super) fn deliver_retained(&mut self, sid: Id, subscription: Id, policy: MatchPolicy, fetch: u64, answers: Vec<Answer>) {
        let Some(s) = self.sessions.get_mut(&sid) else { return };
        s.builtin_calls = s.builtin_calls.saturating_sub(1);
        let held = self.release_held(sid, |h| h.subscription == subscription && h.fetch == fetch);
        let Some(s) = self.sessions.get(&sid) else { return };
        if !s.sub_ids.contains_key(&subscription) {
            return; // unsubscribed meanwhile (its held events went out then)
        }
        let newer = |topic: &str| held.iter().any(|h| h.topics.contains(topic));
        for answer in answers {
            let Answer::Retained(events) = answer else { continue };
            for (topic, e) in events {
                if e.exclude == sid || newer(&topic) {
                    continue;
                }
                let extras = e.extras.as_deref();
                if let Some(r) = extras.and_then(|x| x.receivers.as_deref()) {
                    if !r.admit(sid, &s.identity.authid, &s.identity.authrole) {
                        continue;
                    }
                }
                let Ok(payload) = codec::transcode(&e.payload, s.ser) else {
                    continue;
                };
                let mut details = event_details(extras);
                if policy != MatchPolicy::Exact {
                    details.insert("topic", Value::Str(topic.to_string()));
                }
                details.insert("retained", Value::Bool(true));
                let details = codec::encode_dict(s.ser, &details);
                let frame = encode::event(s.ser, subscription, e.publication, &details, &payload);
                // as any event: dropped (counted) past max_outbound_bytes
                if !s.outbox.fits(frame.len()) || !s.outbox.push_event(frame) {
                    ShardStats::inc(&self.stats.events_dropped);
                } else {
                    ShardStats::inc(&self.stats.messages_out);
                }
            }
        }
        self.flush_held(sid, held);
    }

    /// Takes the session's held events that `which` picks, and counts them
    /// off their subscriptions.
    fn release_held(&mut self, sid: Id, which: impl Fn(&Held) -> bool) -> Vec<Held> {
        let Some(s) = self.sessions.get_mut(&sid) else { return Vec::new() };
        let realm = s.realm;
        let list = s.held.get_mut();
        if list.is_empty() {
            return Vec::new();
        }
        let (taken, kept) = std::mem::take(list).into_iter().partition(|h| which(h));
        *list = kept;
        for h in &taken {
            self.unhold(realm, h.subscription);
        }
        taken
    }

    /// One holder fewer on `subscription`.
    pub(super) fn unhold(&mut self, realm: RealmIdx, subscription: Id) {
        if let Some(sub) = self.realms[realm as usize].subscriptions.get_mut(&subscription) {
            sub.held = sub.held.saturating_sub(1);
        }
    }

    /// Sends held live events on, in the order they came.
    fn flush_held(&mut self, sid: Id, held: Vec<Held>) {
        let Some(s) = self.sessions.get(&sid) else { return };
        for frame in held.into_iter().flat_map(|h| h.frames) {
            if s.outbox.push_event(frame) {
                self.stats.events_delivered.fetch_add(1, Ordering::Relaxed);
            } else {
                ShardStats::inc(&self.stats.events_dropped);
            }
        }
    }

    pub(super) fn unsubscribe(&mut self, sid: Id, request: Id, subscription: Id) {
        let Some(s) = self.sessions.get_mut(&sid) else { return };
        let Some(key) = s.sub_ids.remove(&subscription) else {
            return self.error_reply(
                sid,
                MessageType::Unsubscribe,
                request,
                uris::NO_SUCH_SUBSCRIPTION,
                "no such subscription",
            );
        };
        s.subs.remove(&key);
        let realm = s.realm;
        // events held for its retained ones came before UNSUBSCRIBED
        let held = self.release_held(sid, |h| h.subscription == subscription);
        self.flush_held(sid, held);
        let token = self.expect_acks(AckThen::Unsubscribed { session: sid, request });
        self.drop_subscriber(realm, key.0, key.1, sid, token);
    }

    /// Takes `sid` off delivery at once and asks the home shard to remove it
    /// everywhere.
    pub(super) fn drop_subscriber(&mut self, realm: RealmIdx, policy: MatchPolicy, uri: Arc<str>, sid: Id, token: u64) {
        let r = &mut self.realms[realm as usize];
        if let Some(id) = r.sub_index.get(policy, &uri) {
            if let Some(sub) = r.subscriptions.get_mut(id) {
                sub.local.retain(|s| *s != sid);
            }
        }
        self.request_change(realm, (policy, uri), sid, token, InvokePolicy::Single, ShardMsg::UnsubscribeReq);
    }

    /// On the home shard: give the subscription its ID and tell every shard;
    /// then the meta events, here, in the order of the URI's changes.
    pub(super) fn home_subscribe(&mut self, mut change: TableChange) {
        let r = &self.realms[change.realm as usize];
        let (id, created) = match r.sub_index.get(change.policy, &change.uri) {
            Some(id) => (*id, false),
            None => (self.new_router_id(), true),
        };
        if created {
            change.created_ms = super::now_ms();
        }
        let (realm, session, meta) = (change.realm, change.session, !change.uri.starts_with("wamp."));
        if created {
            self.tell_cluster(realm, change.policy, &change.uri, (id, change.created_ms), true);
        }
        self.broadcast(change, |c| ShardMsg::SubscriptionAdd(c, id));
        if meta {
            if created {
                let details = self.realms[realm as usize].subscriptions.get(&id).map(subscription_details);
                if let Some(details) = details {
                    self.meta_event(realm, "wamp.subscription.on_create", || {
                        vec![Value::UInt(session), Value::Dict(details)]
                    });
                }
            }
            self.meta_event(realm, "wamp.subscription.on_subscribe", || {
                vec![Value::UInt(session), Value::UInt(id)]
            });
        }
    }

    /// On the home shard: remove a subscriber everywhere; then
    /// `on_unsubscribe` (and `on_delete` when it was the last).
    pub(super) fn home_unsubscribe(&mut self, change: TableChange) {
        let r = &self.realms[change.realm as usize];
        let id = r.sub_index.get(change.policy, &change.uri).copied();
        let (realm, session, meta) = (change.realm, change.session, !change.uri.starts_with("wamp."));
        let (policy, uri) = (change.policy, change.uri.clone());
        let created_ms = id.and_then(|id| r.subscriptions.get(&id)).map_or(0, |s| s.created_ms);
        self.broadcast(change, ShardMsg::SubscriptionRemove);
        if let Some(id) = id.filter(|id| !self.realms[realm as usize].subscriptions.contains_key(id)) {
            self.tell_cluster(realm, policy, &uri, (id, created_ms), false);
        }
        if let (Some(id), true) = (id, meta) {
            self.meta_event(realm, "wamp.subscription.on_unsubscribe", || {
                vec![Value::UInt(session), Value::UInt(id)]
            });
            if !self.realms[realm as usize].subscriptions.contains_key(&id) {
                self.meta_event(realm, "wamp.subscription.on_delete", || vec![Value::UInt(session), Value::UInt(id)]);
            }
        }
    }

    pub(super) fn apply_subscription_add(&mut self, change: TableChange, id: Id) {
        let n = self.nshards;
        let me = self.me;
        let r = &mut self.realms[change.realm as usize];
        let entry_id = *r.sub_index.get_or_insert_with(change.policy, &change.uri, || id);
        let sub = r.subscriptions.entry(entry_id).or_insert_with(|| {
            self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
            if change.uri.starts_with("wamp.") {
                r.meta_subscriptions += 1;
            }
            Subscription {
                id: entry_id,
                policy: change.policy,
                uri: change.uri.clone(),
                local: Vec::new(),
                remote: vec![0; n].into_boxed_slice(),
                created_ms: change.created_ms,
                held: 0,
            }
        });
        if change.shard == me {
            // A session that left meanwhile is not added back.
            if self.sessions.contains_key(&change.session) && !sub.local.contains(&change.session) {
                sub.local.push(change.session);
            }
        } else {
            sub.remote[change.shard] += 1;
        }
        self.ack(&change, entry_id);
    }

    pub(super) fn apply_subscription_remove(&mut self, change: TableChange) {
        let me = self.me;
        let r = &mut self.realms[change.realm as usize];
        let Some(&id) = r.sub_index.get(change.policy, &change.uri) else {
            return self.ack(&change, 0);
        };
        if let Some(sub) = r.subscriptions.get_mut(&id) {
            if change.shard == me {
                sub.local.retain(|s| *s != change.session);
            } else {
                sub.remote[change.shard] = sub.remote[change.shard].saturating_sub(1);
            }
            if sub.is_empty() {
                r.subscriptions.remove(&id);
                r.sub_index.remove(change.policy, &change.uri);
                self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
                if change.uri.starts_with("wamp.") {
                    r.meta_subscriptions -= 1;
                }
            }
        }
        self.ack(&change, id);
    }

    pub(super) fn publish(&mut self, sid: Id, request: Id, options: PublishOptions, topic: String, payload: Payload) {
        let acknowledge = options.acknowledge;
        if !self.uri_ok(sid, MessageType::Publish, request, &topic, UriCheck::Concrete, acknowledge) {
            return;
        }
        if topic.starts_with("wamp.") {
            // the router's meta events are its own: nobody may forge one
            if acknowledge {
                self.error_reply(
                    sid,
                    MessageType::Publish,
                    request,
                    uris::INVALID_URI,
                    "topics in the wamp. namespace are the router's",
                );
            }
            return;
        }
        let Some(s) = self.sessions.get(&sid) else { return };
        let realm = s.realm;
        // publisher identification: refused where the realm forbids it
        let disclosure = self.realms[realm as usize].publisher_disclosure;
        if options.disclose_me && disclosure == CallerDisclosure::Never {
            if acknowledge {
                self.error_reply(
                    sid,
                    MessageType::Publish,
                    request,
                    uris::OPTION_DISALLOWED_DISCLOSE_ME,
                    "this realm does not disclose publishers",
                );
            }
            return;
        }
        let publisher = (options.disclose_me || disclosure == CallerDisclosure::Always)
            .then(|| (sid, s.identity.authid.clone(), s.identity.authrole.clone()));
        let extras = (options.ppt.is_some() || publisher.is_some() || options.receivers.is_some()).then(|| {
            Box::new(EventExtras {
                ppt: options.ppt,
                publisher,
                receivers: options.receivers,
            })
        });
        let exclude = if options.exclude_me { sid } else { 0 };
        let retain = options.retain && self.realms[realm as usize].retention;
        let history = self.keeps_history(realm, &topic, extras.as_deref());
        let keep = (retain || history).then(|| extras.clone());
        // the clock is read only for a publication that is kept
        let at_us = if keep.is_some() { super::now_us() } else { 0 };
        let id = wamp::publication_id();
        let what = Keep {
            retain,
            history,
            at_us,
            from: KeptFrom::Here,
        };
        if keep.is_some() && self.cluster.is_some() {
            // every node keeps a copy, so that it outlives this node
            self.route_publication_as(realm, &topic, &payload, extras.clone(), exclude, id, false);
            self.forward_publication(realm, &topic, id, &payload, extras.as_deref(), Some(what), None);
        } else {
            self.route_publication_as(realm, &topic, &payload, extras, exclude, id, true);
        }
        let mut acknowledge = acknowledge;
        if let Some(extras) = keep {
            let event = Retained {
                publication: id,
                payload: Payload {
                    raw: Bytes::copy_from_slice(&payload.raw),
                    ..payload
                },
                extras,
                exclude,
            };
            // PUBLISHED once the home shard kept it (ShardMsg::Kept)
            if self.keep_at_home(realm, topic.as_str().into(), event, what, acknowledge.then_some((sid, request))) {
                acknowledge = false;
            }
        }
        if acknowledge {
            self.session_reply(sid, |ser| encode::published(ser, request, id));
        }
    }

    /// Delivers a publication to the subscribers of `topic` on this shard
    /// and sends it to the other shards with subscribers; returns its ID.
    /// Used for the sessions' PUBLISHes and the router's own events (meta
    /// events, testaments).
    pub(super) fn route_publication(
        &mut self,
        realm: RealmIdx,
        topic: &str,
        payload: &Payload,
        extras: Option<Box<EventExtras>>,
        exclude: Id,
    ) -> Id {
        let id = wamp::publication_id();
        self.route_publication_as(realm, topic, payload, extras, exclude, id, true);
        id
    }

    /// [`Router::route_publication`] with its ID given; `forward`: to the
    /// other cluster nodes with a match too (not for one that came from
    /// another node).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn route_publication_as(
        &mut self,
        realm: RealmIdx,
        topic: &str,
        payload: &Payload,
        extras: Option<Box<EventExtras>>,
        exclude: Id,
        id: Id,
        forward: bool,
    ) {
        ShardStats::inc(&self.stats.publications);
        let publication = Publication {
            id,
            topic,
            exclude,
            extras: extras.as_deref(),
        };

        let mut remote: Vec<Vec<Id>> = Vec::new();
        let mut cache = PayloadCache::new(payload);
        let r = &self.realms[realm as usize];
        let me = self.me;
        r.sub_index.for_each_match(topic, |_, id| {
            let Some(sub) = r.subscriptions.get(id) else { return };
            if !sub.local.is_empty() {
                deliver_local(&self.sessions, &self.stats, self.slow_consumer, sub, &publication, &mut cache);
            }
            for (shard, &n) in sub.remote.iter().enumerate() {
                if n > 0 && shard != me {
                    if remote.is_empty() {
                        remote.resize_with(sub.remote.len(), Vec::new);
                    }
                    remote[shard].push(sub.id);
                }
            }
        });
        if !remote.is_empty() {
            let topic: Arc<str> = topic.into();
            for (shard, subscriptions) in remote.into_iter().enumerate() {
                if subscriptions.is_empty() {
                    continue;
                }
                let ev = EventMsg {
                    realm,
                    subscriptions,
                    publication: id,
                    topic: topic.clone(),
                    payload: payload.clone(),
                    exclude,
                    extras: extras.clone(),
                };
                self.send_to(shard, ShardMsg::Event(Box::new(ev)));
            }
        }
        if forward && self.realms[realm as usize].cluster_interests > 0 {
            self.forward_publication(realm, topic, id, payload, extras.as_deref(), None, None);
        }
    }

    /// Whether a publication to `topic` goes into the realm's history: a
    /// rule matches, and (the spec) it was not sent to session-ID lists.
    pub(super) fn keeps_history(&self, realm: RealmIdx, topic: &str, extras: Option<&EventExtras>) -> bool {
        let r = &self.realms[realm as usize];
        !r.history_rules.is_empty()
            && !extras
                .and_then(|e| e.receivers.as_deref())
                .is_some_and(|l| l.eligible.is_some() || !l.exclude.is_empty())
            && r.history_rules.iter().any(|(p, u, _, _)| wamp::uri::pattern_matches(*p, u, topic))
    }

    /// A meta event of the router (`wamp.session.on_join`, ...) with
    /// positional `args`, published in `realm` if anyone there subscribed
    /// to a `wamp.` topic (otherwise nothing is built: one check).
    pub(super) fn meta_event(&mut self, realm: RealmIdx, topic: &str, args: impl FnOnce() -> Vec<Value>) {
        let r = &self.realms[realm as usize];
        if r.meta_subscriptions == 0 && r.cluster_meta == 0 {
            return;
        }
        let payload = codec::payload_from(Serializer::Json, &args());
        ShardStats::inc(&self.stats.meta_events);
        // every node's replicas hold every callee, so each node tells its own
        // sessions of registration changes; the others are this node's alone
        let forward = !topic.starts_with("wamp.registration.");
        self.route_publication_as(realm, topic, &payload, None, 0, wamp::publication_id(), forward);
    }

    pub(super) fn remote_event(&mut self, ev: EventMsg) {
        let r = &self.realms[ev.realm as usize];
        let mut cache = PayloadCache::new(&ev.payload);
        let publication = Publication {
            id: ev.publication,
            topic: &ev.topic,
            exclude: ev.exclude,
            extras: ev.extras.as_deref(),
        };
        for id in &ev.subscriptions {
            match r.subscriptions.get(id) {
                Some(sub) => deliver_local(&self.sessions, &self.stats, self.slow_consumer, sub, &publication, &mut cache),
                None => debug!(subscription = id, "event for a subscription no longer here"),
            }
        }
    }
}

/// `SubscriptionDetails` of the meta API: id, created (ISO 8601), uri,
/// match.
pub(super) fn subscription_details(sub: &Subscription) -> Dict {
    Dict::new()
        .with("id", Value::UInt(sub.id))
        .with("created", Value::Str(super::iso_time(sub.created_ms)))
        .with("uri", Value::Str(sub.uri.to_string()))
        .with("match", Value::Str(sub.policy.as_str().into()))
}
