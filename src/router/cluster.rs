//! The router's side of a cluster (`crate::cluster`): other nodes'
//! subscriptions in each realm's `cluster_index`, publications sent to the
//! nodes with a match, and those from other nodes routed here.

use std::sync::Arc;

use tracing::debug;

use super::broker::{extras_from_wire, extras_to_wire, Keep, KeptFrom, Retained};
use super::gather::KillTarget;
use super::messages::{CallChunk, CallDone, InterruptMsg, InvokeMsg};
use super::options::{CancelMode, InvokePolicy};
use super::{Answer, EventExtras, Query, QueryMsg, RealmIdx, RemoteEntry, RemoteSub, Router, ShardMsg, TableChange};
use crate::cluster::{pseudo_shard, split_pseudo, wire, CalleeOf, ClusterLink, FromNode, InterestOf, NodeMask, OutEvent};
use crate::codec;
use crate::metrics::ShardStats;
use crate::wamp::message::Serializer;
use crate::wamp::uri::{self, UriCheck};
use crate::wamp::{uris, Dict, Id, MatchPolicy, Payload, Value};

impl Router {
    /// Joins this shard to the node's cluster.
    pub fn set_cluster(&mut self, link: ClusterLink) {
        self.cluster = Some(link);
    }

    /// A subscription entry of this node was made or is gone (on its URI's
    /// home shard): the node thread tells the other nodes.
    pub(super) fn tell_cluster(&self, realm: RealmIdx, policy: MatchPolicy, uri: &Arc<str>, (id, created_ms): (Id, u64), add: bool) {
        if let Some(link) = &self.cluster {
            let what = InterestOf::Subscription { id, created_ms };
            link.interest(&self.realms[realm as usize].name, policy, uri, what, add);
        }
    }

    /// A callee of this node joined (`add`) or left a registration (on the
    /// URI's home shard): the other nodes add it to their replicas.
    pub(super) fn tell_cluster_callee(&self, change: &TableChange, invoke: InvokePolicy, add: bool) {
        let Some(link) = &self.cluster else { return };
        if change.shard >= self.nshards {
            return; // a callee of another node: that node tells
        }
        let callee = CalleeOf {
            invoke,
            session: change.session,
            shard: change.shard as u16,
        };
        link.interest(
            &self.realms[change.realm as usize].name,
            change.policy,
            &change.uri,
            InterestOf::Callee(callee),
            add,
        );
    }

    /// A session of this node joined (`add`) or left: the other nodes keep
    /// who it is, to tell of its leave should this node die.
    pub(super) fn tell_cluster_session(&self, realm: RealmIdx, session: Id, authid: &Arc<str>, authrole: &Arc<str>, add: bool) {
        if let Some(link) = &self.cluster {
            let s = crate::cluster::SessionOf {
                id: session,
                authid: authid.clone(),
                authrole: authrole.clone(),
            };
            link.session(&self.realms[realm as usize].name, s, add);
        }
    }

    /// Sends a publication routed here to the other nodes with a matching
    /// subscription, once to each; one to keep (`kept`) goes to every node,
    /// or to node `to` only.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_publication(
        &mut self,
        realm: RealmIdx,
        topic: &str,
        id: Id,
        payload: &Payload,
        extras: Option<&EventExtras>,
        kept: Option<Keep>,
        to: Option<u8>,
    ) {
        let Some(link) = &self.cluster else { return };
        let r = &self.realms[realm as usize];
        let mut nodes: NodeMask = 0;
        match (to, kept) {
            (Some(node), _) => nodes = 1 << (node as u32 % 64),
            (None, Some(_)) => nodes = self.live_nodes(),
            (None, None) => r.cluster_index.for_each_match(topic, |_, m| nodes |= m.nodes),
        }
        if nodes == 0 {
            return;
        }
        let mut options = Dict::new().with("realm", Value::Str(r.name.to_string()));
        if let Some(e) = extras {
            extras_to_wire(e, &mut options);
        }
        if let Some(k) = kept {
            k.write_wire(&mut options);
        }
        let frame = wire::event(&link.node, topic, id, payload, &options);
        if link.send(OutEvent { nodes, frame }) {
            ShardStats::inc(&self.stats.cluster_events_sent);
        } else {
            ShardStats::inc(&self.stats.cluster_events_dropped);
        }
    }

    /// What the node thread passes on.
    pub fn on_cluster(&mut self, msg: FromNode) {
        match msg {
            FromNode::NodeUp { node, name, shards } => {
                let i = node as usize;
                if self.node_names.len() <= i {
                    self.node_names.resize(i + 1, None);
                    self.node_shards.resize(i + 1, 0);
                }
                self.node_names[i] = Some(name);
                self.node_shards[i] = shards.min(crate::cluster::SHARD_SLOTS);
                self.sync_joiner(node);
            }
            FromNode::NodeGone { node } => self.node_gone(node),
            FromNode::Left { realm, sessions } => {
                let Some(&realm) = self.realm_names.get(&*realm) else { return };
                // told here only: every node tells its own sessions
                for s in sessions {
                    if self.realms[realm as usize].meta_subscriptions == 0 {
                        break;
                    }
                    let args = vec![
                        Value::UInt(s.id),
                        Value::Str(s.authid.to_string()),
                        Value::Str(s.authrole.to_string()),
                    ];
                    let payload = codec::payload_from(Serializer::Json, &args);
                    ShardStats::inc(&self.stats.meta_events);
                    self.route_publication_as(
                        realm,
                        "wamp.session.on_leave",
                        &payload,
                        None,
                        0,
                        crate::wamp::publication_id(),
                        false,
                    );
                }
            }
            FromNode::Interest { node, add, interest } => {
                let Some(&realm) = self.realm_names.get(&*interest.realm) else {
                    // a realm this node does not serve: nobody here publishes to it
                    return;
                };
                if let Some(c) = interest.callee {
                    return self.remote_callee(realm, node, add, interest.policy, interest.uri, c);
                }
                let bit: NodeMask = 1 << (node as u32 % 64);
                let r = &mut self.realms[realm as usize];
                let meta = interest.uri.starts_with("wamp.");
                if add {
                    let m = r
                        .cluster_index
                        .get_or_insert_with(interest.policy, &interest.uri, RemoteEntry::default);
                    if m.nodes == 0 {
                        r.cluster_interests += 1;
                        r.cluster_meta += usize::from(meta);
                    }
                    m.nodes |= bit;
                    if let Some((id, created_ms)) = interest.sub {
                        if !m.ids.contains(&id) {
                            m.ids.push(id);
                        }
                        let sub = RemoteSub {
                            policy: interest.policy,
                            uri: interest.uri.clone(),
                            created_ms,
                        };
                        r.cluster_subs.insert(id, sub);
                    }
                } else if let Some(m) = r.cluster_index.get_mut(interest.policy, &interest.uri) {
                    m.nodes &= !bit;
                    if let Some((id, _)) = interest.sub {
                        m.ids.retain(|i| *i != id);
                        r.cluster_subs.remove(&id);
                    }
                    if m.nodes == 0 {
                        r.cluster_index.remove(interest.policy, &interest.uri);
                        r.cluster_interests -= 1;
                        r.cluster_meta -= usize::from(meta);
                    }
                }
            }
            FromNode::Frame(frame) => {
                let Some(ev) = wire::read_event(&frame) else {
                    ShardStats::inc(&self.stats.cluster_malformed);
                    return;
                };
                if ev.kind == wire::MESSAGE {
                    return match self.read_message(ev) {
                        Some(m) => self.on_shard_message(m),
                        None => ShardStats::inc(&self.stats.cluster_malformed),
                    };
                }
                let realm = ev.options.get_str("realm").and_then(|n| self.realm_names.get(n)).copied();
                let Some(realm) = realm else {
                    debug!(origin = %ev.origin, "publication for a realm this node does not serve");
                    return;
                };
                if !uri::is_valid(&ev.topic, UriCheck::Concrete) {
                    ShardStats::inc(&self.stats.cluster_malformed);
                    return;
                }
                ShardStats::inc(&self.stats.cluster_events_received);
                let extras = extras_from_wire(&ev.options);
                let kept = Keep::from_wire(&ev.options);
                // a copy for a node that joined is kept, not delivered
                if kept.is_none_or(|k| k.from != KeptFrom::Sync) {
                    self.route_publication_as(realm, &ev.topic, &ev.payload, extras.clone(), 0, ev.publication, false);
                }
                if let Some(k) = kept {
                    self.keep_copy(realm, ev.topic.as_str().into(), ev.publication, &ev.payload, extras, k);
                }
            }
        }
    }

    /// Keeps another node's publication as this node's rules say (retention
    /// on, a history rule matching), on the topic's home shard here.
    fn keep_copy(
        &mut self,
        realm: RealmIdx,
        topic: Arc<str>,
        publication: Id,
        payload: &Payload,
        extras: Option<Box<EventExtras>>,
        asked: Keep,
    ) {
        let retain = asked.retain && self.realms[realm as usize].retention;
        let history = asked.history && self.keeps_history(realm, &topic, extras.as_deref());
        if !retain && !history {
            return;
        }
        let event = Retained {
            publication,
            payload: Payload {
                raw: bytes::Bytes::copy_from_slice(&payload.raw),
                ..*payload
            },
            extras,
            exclude: 0,
        };
        let what = Keep { retain, history, ..asked };
        self.keep_at_home(realm, topic, event, what, None);
    }

    /// The nodes alive, as a mask.
    fn live_nodes(&self) -> NodeMask {
        let mut m: NodeMask = 0;
        for (i, name) in self.node_names.iter().enumerate() {
            if name.is_some() {
                m |= 1 << (i as u32 % 64);
            }
        }
        m
    }

    /// A node joined: if this node comes first by name among those that
    /// were already there, it sends the joiner a copy of what this shard
    /// keeps (retained events, history), so that a restarted node has
    /// them too. (Two nodes may both think so while they learn of each
    /// other; the joiner keeps each event once.)
    fn sync_joiner(&mut self, node: u8) {
        let Some(me) = self.cluster.as_ref().map(|l| l.node.clone()) else {
            return;
        };
        let first = self
            .node_names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != node as usize)
            .filter_map(|(_, n)| n.as_deref())
            .all(|other| *me < *other);
        if !first {
            return;
        }
        let mut copies = Vec::new();
        for (realm, r) in self.realms.iter().enumerate() {
            if !r.present {
                continue;
            }
            for (topic, e) in &r.retained {
                copies.push((realm as RealmIdx, topic.clone(), e.clone(), true));
            }
            for (topic, events) in &r.history {
                for e in events {
                    copies.push((realm as RealmIdx, topic.clone(), e.clone(), false));
                }
            }
        }
        for (realm, topic, e, retain) in copies {
            let kept = Keep {
                retain,
                history: !retain,
                at_us: e.at_us,
                from: KeptFrom::Sync,
            };
            let ev = &e.event;
            self.forward_publication(
                realm,
                &topic,
                ev.publication,
                &ev.payload,
                ev.extras.as_deref(),
                Some(kept),
                Some(node),
            );
        }
    }

    /// A callee of another node joined or left a registration: on the
    /// URI's home shard here it goes into (or out of) the replicas as a
    /// callee on a pseudo shard, as a REGISTER or UNREGISTER would.
    fn remote_callee(&mut self, realm: RealmIdx, node: u8, add: bool, policy: MatchPolicy, uri: Arc<str>, c: CalleeOf) {
        if self.home_of(realm, &uri) != self.me {
            return;
        }
        let change = TableChange {
            realm,
            policy,
            uri,
            shard: pseudo_shard(self.nshards, node, c.shard as usize),
            session: c.session,
            origin: self.me,
            token: 0,
            invoke: c.invoke,
            created_ms: 0,
            member: true,
        };
        if add {
            let r = &self.realms[realm as usize];
            let conflict = r
                .reg_index
                .get(policy, &change.uri)
                .and_then(|id| r.registrations.get(id))
                .is_some_and(|reg| !reg.callees.is_empty() && (reg.invoke == InvokePolicy::Single || reg.invoke != c.invoke));
            if conflict {
                tracing::warn!(
                    procedure = %change.uri,
                    node = ?self.node_names.get(node as usize),
                    "a procedure registered here was registered on another node too (within one round trip): calls go to the callees here"
                );
                return;
            }
            self.home_register(change);
        } else {
            self.home_unregister(change);
        }
    }

    /// A node is gone: the calls of sessions here waiting on its callees
    /// end with `wamp.error.canceled`, and the invocations its callers made
    /// here are dropped (callees that can be interrupted are).
    fn node_gone(&mut self, node: u8) {
        let n = self.nshards;
        let on_node = |shard: usize| split_pseudo(n, shard).is_some_and(|(k, _)| k == node);
        let mut calls = Vec::new();
        let mut invocations = Vec::new();
        for (sid, s) in &self.sessions {
            for (req, c) in &s.calls {
                if on_node(c.callee_shard) {
                    calls.push((*sid, *req));
                }
            }
            for inv in s.invocations.values() {
                if on_node(inv.caller_shard) {
                    invocations.push(InterruptMsg {
                        callee: *sid,
                        caller_shard: inv.caller_shard,
                        caller: inv.caller,
                        call_request: inv.call_request,
                        mode: CancelMode::KillNoWait,
                    });
                }
            }
        }
        for (caller, call_request) in calls {
            self.call_done(canceled(caller, call_request, "the callee's node left the cluster"));
        }
        for m in invocations {
            self.interrupt_local(m);
        }
        if let Some(slot) = self.node_names.get_mut(node as usize) {
            *slot = None;
        }
    }

    /// Every shard of this node and of every other node alive (pseudo
    /// shards), for a scatter that must reach the whole cluster.
    pub(super) fn every_shard(&self) -> Vec<usize> {
        let mut all: Vec<usize> = (0..self.nshards).collect();
        for (node, name) in self.node_names.iter().enumerate() {
            if name.is_some() {
                let n = self.node_shards.get(node).copied().unwrap_or(0);
                all.extend((0..n).map(|s| pseudo_shard(self.nshards, node as u8, s)));
            }
        }
        all
    }

    /// The name and shard a shard number names (this node's, or a pseudo
    /// shard's node), for the wire.
    fn shard_on_wire(&self, shard: usize) -> Option<Value> {
        let (name, s) = match split_pseudo(self.nshards, shard) {
            None => (self.cluster.as_ref()?.node.clone(), shard),
            Some((node, s)) => (self.node_names.get(node as usize)?.clone()?, s),
        };
        Some(Value::List(vec![Value::Str(name.to_string()), Value::UInt(s as u64)]))
    }

    /// [`Router::shard_on_wire`] read back.
    fn shard_from_wire(&self, v: Option<&Value>) -> Option<usize> {
        let Some(Value::List(l)) = v else { return None };
        let (Some(Value::Str(name)), Some(Value::UInt(s))) = (l.first(), l.get(1)) else {
            return None;
        };
        let s = usize::try_from(*s).ok()?;
        if self.cluster.as_ref().is_some_and(|c| *c.node == **name) {
            return (s < self.nshards).then_some(s);
        }
        if s >= crate::cluster::SHARD_SLOTS {
            return None;
        }
        let node = self.node_names.iter().position(|n| n.as_deref() == Some(name.as_str()))?;
        Some(pseudo_shard(self.nshards, node as u8, s))
    }

    /// A message for a shard of another node (a pseudo shard): a call, a
    /// chunk, a cancel, an answer. A call for a node that is gone fails at
    /// once.
    pub(super) fn send_to_node(&mut self, to: usize, msg: ShardMsg) {
        let Some((node, shard)) = split_pseudo(self.nshards, to) else {
            return;
        };
        // a call (or a rerouted one) whose caller must hear if it cannot go
        let call = match &msg {
            ShardMsg::Invoke(inv) | ShardMsg::Reroute(inv) => Some((inv.caller_shard, inv.caller, inv.call_request)),
            _ => None,
        };
        let known = self.node_names.get(node as usize).is_some_and(|n| n.is_some());
        let encoded = if known { self.encode_message(msg) } else { Err(msg) };
        let (header, payload) = match encoded {
            Ok(e) => e,
            Err(other) => {
                if let Some(c) = call {
                    return self.unreachable(c);
                }
                debug!(to, message = ?std::mem::discriminant(&other), "message for a node that is gone, or not sent across nodes, dropped");
                return;
            }
        };
        let Some(link) = &self.cluster else { return };
        // a scheme at the top lets the reader take an opaque payload (a
        // passthru one); the reader takes passthru attributes only where
        // the header says "ppt"
        let mut header = header;
        if header.get_str("ppt_scheme").is_none_or(str::is_empty) {
            header.insert("ppt_scheme", Value::Str("x_switchyard_cluster".into()));
        }
        let frame = wire::envelope(wire::MESSAGE, &link.node, shard as u16, &header, "", 1, &payload);
        if !link.send(OutEvent {
            nodes: 1 << (node as u32 % 64),
            frame,
        }) {
            ShardStats::inc(&self.stats.cluster_events_dropped);
            if let Some(c) = call {
                self.unreachable(c);
            }
        }
    }

    /// A call that cannot reach its callee's node (gone, or the queue to
    /// the node thread full): its caller, `(shard, session, request)`, is
    /// told at once rather than left waiting.
    fn unreachable(&mut self, (caller_shard, caller, call_request): (usize, Id, Id)) {
        if caller_shard < self.nshards {
            let done = canceled(caller, call_request, "the callee's node is not reachable");
            self.send_to(caller_shard, ShardMsg::CallDone(Box::new(done)));
        }
    }

    /// The header and payload of a message for another node; the message
    /// back when it does not cross nodes (or names a node gone).
    fn encode_message(&self, msg: ShardMsg) -> Result<(Dict, Payload), ShardMsg> {
        let s = |v: &str| Value::Str(v.to_owned());
        let mut h = Dict::new();
        match msg {
            ShardMsg::Invoke(inv) => match self.invoke_header(&inv, "invoke", &mut h) {
                Some(()) => Ok((h, inv.payload)),
                None => Err(ShardMsg::Invoke(inv)),
            },
            ShardMsg::Reroute(inv) => match self.invoke_header(&inv, "reroute", &mut h) {
                Some(()) => Ok((h, inv.payload)),
                None => Err(ShardMsg::Reroute(inv)),
            },
            ShardMsg::InvokeMore(c) => {
                let Some(caller_shard) = self.shard_on_wire(c.caller_shard) else {
                    return Err(ShardMsg::InvokeMore(c));
                };
                h.insert("k", s("chunk"));
                h.insert("callee", Value::UInt(c.callee));
                h.insert("caller_shard", caller_shard);
                h.insert("caller", Value::UInt(c.caller));
                h.insert("call_request", Value::UInt(c.call_request));
                h.insert("progress", Value::Bool(c.progress));
                Ok((h, c.payload))
            }
            ShardMsg::Interrupt(m) => {
                let Some(caller_shard) = self.shard_on_wire(m.caller_shard) else {
                    return Err(ShardMsg::Interrupt(m));
                };
                h.insert("k", s("interrupt"));
                h.insert("callee", Value::UInt(m.callee));
                h.insert("caller_shard", caller_shard);
                h.insert("caller", Value::UInt(m.caller));
                h.insert("call_request", Value::UInt(m.call_request));
                h.insert("mode", s(m.mode.as_str()));
                Ok((h, Payload::empty(Serializer::Json)))
            }
            ShardMsg::CallDone(d) => {
                h.insert("k", s("done"));
                h.insert("caller", Value::UInt(d.caller));
                h.insert("call_request", Value::UInt(d.call_request));
                if let Some(e) = &d.error {
                    h.insert("error", s(e));
                }
                h.insert("progress", Value::Bool(d.progress));
                h.insert("details", Value::Dict(d.details));
                Ok((h, d.payload))
            }
            ShardMsg::Query(q) => match self.query_header(&q, &mut h) {
                Some(()) => Ok((h, Payload::empty(Serializer::Json))),
                None => Err(ShardMsg::Query(q)),
            },
            ShardMsg::Answer { gather, answer } => {
                h.insert("k", s("answer"));
                h.insert("gather", Value::UInt(gather));
                let ids = |l: &[Id]| Value::List(l.iter().map(|i| Value::UInt(*i)).collect());
                match &answer {
                    Answer::Count(n) => h.insert("count", Value::UInt(*n)),
                    Answer::Ids(l) => h.insert("ids", ids(l)),
                    Answer::Killed(l) => h.insert("killed", ids(l)),
                    Answer::Session(d) => h.insert("session", d.clone().map_or(Value::Null, Value::Dict)),
                    Answer::Removed(r) => h.insert("removed", r.map_or_else(|e| Value::Str(e.to_owned()), |()| Value::Null)),
                    _ => return Err(ShardMsg::Answer { gather, answer }),
                }
                Ok((h, Payload::empty(Serializer::Json)))
            }
            other => Err(other),
        }
    }

    /// A meta query (sessions, subscribers)'s fields for another node (`None` for the
    /// queries that stay on one node).
    fn query_header(&self, q: &QueryMsg, h: &mut Dict) -> Option<()> {
        let s = |v: &str| Value::Str(v.to_owned());
        let strs = |l: &[String]| Value::List(l.iter().map(|x| s(x)).collect());
        h.insert("k", s("query"));
        h.insert("gather", Value::UInt(q.gather));
        h.insert("origin", self.shard_on_wire(q.origin)?);
        h.insert("realm", s(&self.realms[q.realm as usize].name));
        match &q.query {
            Query::SessionCount { authroles } | Query::SessionList { authroles } => {
                let count = matches!(q.query, Query::SessionCount { .. });
                h.insert("q", s(if count { "count" } else { "list" }));
                if let Some(a) = authroles {
                    h.insert("authroles", strs(a));
                }
            }
            Query::SessionGet { session } => {
                h.insert("q", s("get"));
                h.insert("session", Value::UInt(*session));
            }
            Query::Subscribers { policy, uri } => {
                h.insert("q", s("subscribers"));
                h.insert("match", s(policy.as_str()));
                h.insert("uri", s(uri));
            }
            Query::RemoveSubscriber {
                policy,
                uri,
                session,
                reason,
            } => {
                h.insert("q", s("remove_subscriber"));
                h.insert("match", s(policy.as_str()));
                h.insert("uri", s(uri));
                h.insert("session", Value::UInt(*session));
                if let Some(r) = reason {
                    h.insert("reason", s(r));
                }
            }
            Query::Kill {
                target,
                except,
                reason,
                message,
            } => {
                h.insert("q", s("kill"));
                let t = match target {
                    KillTarget::Session(id) => vec![s("session"), Value::UInt(*id)],
                    KillTarget::Authid(a) => vec![s("authid"), s(a)],
                    KillTarget::Authrole(a) => vec![s("authrole"), s(a)],
                    KillTarget::All => vec![s("all")],
                };
                h.insert("target", Value::List(t));
                h.insert("except", Value::UInt(*except));
                h.insert("reason", s(reason));
                if let Some(m) = message {
                    h.insert("message", s(m));
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// An `InvokeMsg`'s fields for another node (`None` when its caller's
    /// shard or registration cannot be named there).
    fn invoke_header(&self, inv: &InvokeMsg, kind: &str, h: &mut Dict) -> Option<()> {
        let s = |v: &str| Value::Str(v.to_owned());
        let r = &self.realms[inv.realm as usize];
        let reg = r.registrations.get(&inv.registration)?;
        h.insert("k", s(kind));
        h.insert("realm", s(&r.name));
        h.insert("reg", Value::List(vec![s(reg.policy.as_str()), s(&reg.uri)]));
        h.insert("callee", Value::UInt(inv.callee));
        h.insert("caller_shard", self.shard_on_wire(inv.caller_shard)?);
        h.insert("caller", Value::UInt(inv.caller));
        h.insert("call_request", Value::UInt(inv.call_request));
        if let Some(p) = &inv.procedure {
            h.insert("procedure", s(p));
        }
        h.insert("receive_progress", Value::Bool(inv.receive_progress));
        if let Some((authid, authrole)) = &inv.disclose {
            h.insert("caller_authid", s(authid));
            h.insert("caller_authrole", s(authrole));
        }
        h.insert("progress", Value::Bool(inv.progress));
        if let Some(ppt) = &inv.ppt {
            h.insert("ppt", Value::Bool(true));
            for (k, v) in &ppt.0 {
                h.insert(k.as_str(), v.clone());
            }
        }
        h.insert("caller_ppt", Value::Bool(inv.caller_ppt));
        h.insert("shared", Value::Bool(inv.shared));
        let mut tried = Vec::with_capacity(inv.tried.len());
        for (shard, session) in &inv.tried {
            if let Some(Value::List(mut l)) = self.shard_on_wire(*shard) {
                l.push(Value::UInt(*session));
                tried.push(Value::List(l));
            }
        }
        h.insert("tried", Value::List(tried));
        Some(())
    }

    /// A message about a call from another node, its shards and
    /// registration named as this node knows them.
    fn read_message(&self, ev: wire::InEvent) -> Option<ShardMsg> {
        let h = &ev.options;
        let uint = |k: &str| match h.get(k) {
            Some(Value::UInt(u)) => Some(*u),
            _ => None,
        };
        let flag = |k: &str| matches!(h.get(k), Some(Value::Bool(true)));
        let caller_shard = || self.shard_from_wire(h.get("caller_shard"));
        Some(match h.get_str("k")? {
            kind @ ("invoke" | "reroute") => {
                let realm = *self.realm_names.get(h.get_str("realm")?)?;
                let Some(Value::List(reg)) = h.get("reg") else { return None };
                let (Some(Value::Str(policy)), Some(Value::Str(reg_uri))) = (reg.first(), reg.get(1)) else {
                    return None;
                };
                let policy = MatchPolicy::parse(policy)?;
                // this node's ID of the registration (0: none here, which the
                // callee's checks turn into the right error)
                let registration = self.realms[realm as usize].reg_index.get(policy, reg_uri).copied().unwrap_or(0);
                let mut tried = Vec::new();
                if let Some(Value::List(l)) = h.get("tried") {
                    for t in l {
                        let Value::List(t) = t else { continue };
                        let (Some(shard), Some(Value::UInt(session))) = (
                            self.shard_from_wire(Some(&Value::List(t.iter().take(2).cloned().collect()))),
                            t.get(2),
                        ) else {
                            continue;
                        };
                        tried.push((shard, *session));
                    }
                }
                let disclose = match (h.get_str("caller_authid"), h.get_str("caller_authrole")) {
                    (Some(a), Some(r)) => Some((a.into(), r.into())),
                    _ => None,
                };
                let inv = InvokeMsg {
                    realm,
                    registration,
                    callee: uint("callee")?,
                    caller_shard: caller_shard()?,
                    caller: uint("caller")?,
                    call_request: uint("call_request")?,
                    procedure: h.get_str("procedure").map(Arc::from),
                    receive_progress: flag("receive_progress"),
                    disclose,
                    progress: flag("progress"),
                    ppt: if flag("ppt") { super::options::passthru(h) } else { None },
                    caller_ppt: flag("caller_ppt"),
                    shared: flag("shared"),
                    tried,
                    payload: ev.payload,
                };
                if kind == "invoke" {
                    ShardMsg::Invoke(Box::new(inv))
                } else {
                    ShardMsg::Reroute(Box::new(inv))
                }
            }
            "chunk" => ShardMsg::InvokeMore(Box::new(CallChunk {
                callee: uint("callee")?,
                caller_shard: caller_shard()?,
                caller: uint("caller")?,
                call_request: uint("call_request")?,
                progress: flag("progress"),
                payload: ev.payload,
            })),
            "interrupt" => ShardMsg::Interrupt(InterruptMsg {
                callee: uint("callee")?,
                caller_shard: caller_shard()?,
                caller: uint("caller")?,
                call_request: uint("call_request")?,
                mode: CancelMode::parse(h.get_str("mode")?)?,
            }),
            "done" => ShardMsg::CallDone(Box::new(CallDone {
                caller: uint("caller")?,
                call_request: uint("call_request")?,
                error: h.get_str("error").map(str::to_owned),
                progress: flag("progress"),
                details: match h.get("details") {
                    Some(Value::Dict(d)) => d.clone(),
                    _ => Dict::new(),
                },
                payload: ev.payload,
            })),
            "query" => {
                let realm = *self.realm_names.get(h.get_str("realm")?)?;
                let strs = |k: &str| match h.get(k) {
                    Some(Value::List(l)) => Some(
                        l.iter()
                            .filter_map(|v| match v {
                                Value::Str(x) => Some(x.clone()),
                                _ => None,
                            })
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                };
                let query = match h.get_str("q")? {
                    "count" => Query::SessionCount {
                        authroles: strs("authroles"),
                    },
                    "list" => Query::SessionList {
                        authroles: strs("authroles"),
                    },
                    "get" => Query::SessionGet { session: uint("session")? },
                    "subscribers" => Query::Subscribers {
                        policy: MatchPolicy::parse(h.get_str("match")?)?,
                        uri: h.get_str("uri")?.into(),
                    },
                    "remove_subscriber" => Query::RemoveSubscriber {
                        policy: MatchPolicy::parse(h.get_str("match")?)?,
                        uri: h.get_str("uri")?.into(),
                        session: uint("session")?,
                        reason: h.get_str("reason").map(str::to_owned),
                    },
                    "kill" => {
                        let Some(Value::List(t)) = h.get("target") else { return None };
                        let target = match (t.first(), t.get(1)) {
                            (Some(Value::Str(k)), Some(Value::UInt(id))) if k == "session" => KillTarget::Session(*id),
                            (Some(Value::Str(k)), Some(Value::Str(a))) if k == "authid" => KillTarget::Authid(a.clone()),
                            (Some(Value::Str(k)), Some(Value::Str(a))) if k == "authrole" => KillTarget::Authrole(a.clone()),
                            (Some(Value::Str(k)), None) if k == "all" => KillTarget::All,
                            _ => return None,
                        };
                        Query::Kill {
                            target,
                            except: uint("except")?,
                            reason: h.get_str("reason")?.to_owned(),
                            message: h.get_str("message").map(str::to_owned),
                        }
                    }
                    _ => return None,
                };
                ShardMsg::Query(Box::new(QueryMsg {
                    gather: uint("gather")?,
                    origin: self.shard_from_wire(h.get("origin"))?,
                    realm,
                    query,
                }))
            }
            "answer" => {
                let ids = |k: &str| match h.get(k) {
                    Some(Value::List(l)) => Some(
                        l.iter()
                            .filter_map(|v| match v {
                                Value::UInt(u) => Some(*u),
                                _ => None,
                            })
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                };
                let answer = if let Some(n) = uint("count") {
                    Answer::Count(n)
                } else if let Some(l) = ids("ids") {
                    Answer::Ids(l)
                } else if let Some(l) = ids("killed") {
                    Answer::Killed(l)
                } else if let Some(r) = h.get("removed") {
                    Answer::Removed(match r {
                        Value::Null => Ok(()),
                        Value::Str(e) if e == uris::NO_SUCH_SUBSCRIPTION => Err(uris::NO_SUCH_SUBSCRIPTION),
                        _ => Err(uris::NO_SUCH_SESSION),
                    })
                } else {
                    match h.get("session")? {
                        Value::Dict(d) => Answer::Session(Some(d.clone())),
                        _ => Answer::Session(None),
                    }
                };
                ShardMsg::Answer {
                    gather: uint("gather")?,
                    answer,
                }
            }
            _ => return None,
        })
    }
}

/// ERROR `wamp.error.canceled` for a caller's call, saying `why`.
fn canceled(caller: Id, call_request: Id, why: &str) -> CallDone {
    CallDone {
        caller,
        call_request,
        error: Some(uris::CANCELED.into()),
        progress: false,
        details: Dict::new(),
        payload: codec::payload_from(Serializer::Json, &[Value::Str(why.into())]),
    }
}
