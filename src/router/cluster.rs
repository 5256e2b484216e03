//! The router's side of a cluster (`crate::cluster`): other nodes'
//! subscriptions in each realm's `cluster_index`, publications sent to the
//! nodes with a match, and those from other nodes routed here.

use std::sync::Arc;

use tracing::debug;

use super::broker::{extras_from_wire, extras_to_wire};
use super::{EventExtras, RealmIdx, Router};
use crate::cluster::{wire, ClusterLink, FromNode, NodeMask, OutEvent};
use crate::metrics::ShardStats;
use crate::wamp::uri::{self, UriCheck};
use crate::wamp::{Dict, Id, MatchPolicy, Payload, Value};

impl Router {
    /// Joins this shard to the node's cluster.
    pub fn set_cluster(&mut self, link: ClusterLink) {
        self.cluster = Some(link);
    }

    /// A subscription entry of this node was made or is gone (on its URI's
    /// home shard): the node thread tells the other nodes.
    pub(super) fn tell_cluster(&self, realm: RealmIdx, policy: MatchPolicy, uri: &Arc<str>, add: bool) {
        if let Some(link) = &self.cluster {
            link.interest(&self.realms[realm as usize].name, policy, uri, add);
        }
    }

    /// Sends a publication routed here to the other nodes with a matching
    /// subscription, once to each.
    pub(super) fn forward_publication(
        &mut self,
        realm: RealmIdx,
        topic: &str,
        id: Id,
        payload: &Payload,
        extras: Option<&EventExtras>,
    ) {
        let Some(link) = &self.cluster else { return };
        let r = &self.realms[realm as usize];
        let mut nodes: NodeMask = 0;
        r.cluster_index.for_each_match(topic, |_, m| nodes |= *m);
        if nodes == 0 {
            return;
        }
        let mut options = Dict::new().with("realm", Value::Str(r.name.to_string()));
        if let Some(e) = extras {
            extras_to_wire(e, &mut options);
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
            FromNode::Interest { node, add, interest } => {
                let Some(&realm) = self.realm_names.get(&*interest.realm) else {
                    // a realm this node does not serve: nobody here publishes to it
                    return;
                };
                let bit: NodeMask = 1 << (node as u32 % 64);
                let r = &mut self.realms[realm as usize];
                let meta = interest.uri.starts_with("wamp.");
                if add {
                    let m = r.cluster_index.get_or_insert_with(interest.policy, &interest.uri, || 0);
                    if *m == 0 {
                        r.cluster_interests += 1;
                        r.cluster_meta += usize::from(meta);
                    }
                    *m |= bit;
                } else if let Some(m) = r.cluster_index.get_mut(interest.policy, &interest.uri) {
                    *m &= !bit;
                    if *m == 0 {
                        r.cluster_index.remove(interest.policy, &interest.uri);
                        r.cluster_interests -= 1;
                        r.cluster_meta -= usize::from(meta);
                    }
                }
            }
            FromNode::Event(frame) => {
                let Some(ev) = wire::read_event(&frame) else {
                    ShardStats::inc(&self.stats.cluster_malformed);
                    return;
                };
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
                self.route_publication_as(realm, &ev.topic, &ev.payload, extras, 0, ev.publication, false);
            }
        }
    }
}
