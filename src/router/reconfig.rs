//! Live reconfiguration: a reload's realms, roles, principals, limits and
//! history settings taken over by a running router, sessions kept.
//!
//! Every shard applies the same new configuration in two steps, so that all
//! agree on every realm's index: [`Router::reconfigure`] takes the new
//! settings (a new realm gets the next index but no session yet; a removed
//! one keeps its index and closes its sessions), and once every shard has
//! done so, [`Router::open_realms`] lets sessions join the new realms. No
//! shard can hear of a realm before it has it.

use ahash::AHashMap;

use super::gather::KillTarget;
use super::{link_dynamic, Realm, RealmIdx, ReloadRequest, Router, RouterConfig};
use crate::codec::{self, encode};
use crate::wamp::{uris, Dict, Id, MessageType, Value};

/// What a reload changed on one shard.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconfigured {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Sessions of removed realms this shard closed.
    pub closed: usize,
}

impl Router {
    /// Takes over `cfg` (already validated): realms are matched by name.
    /// Existing realms keep their tables, retained events and history and
    /// take the new settings; their sessions' roles are looked up again and
    /// every cached authorization decision is forgotten, so changed roles
    /// apply to each session's next action. Principals apply to the next
    /// login. Sessions of realms the new configuration lacks get GOODBYE
    /// `wamp.close.close_realm`.
    pub fn reconfigure(&mut self, cfg: &RouterConfig) -> Reconfigured {
        let mut out = Reconfigured::default();
        let mut all: AHashMap<String, RealmIdx> = self
            .realms
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.to_string(), i as RealmIdx))
            .collect();
        let mut wanted = ahash::AHashSet::new();
        for c in &cfg.realms {
            wanted.insert(c.name.as_str());
            let fresh = Realm::from_config(c, self.nshards);
            match all.get(&c.name) {
                Some(&i) => {
                    let r = &mut self.realms[i as usize];
                    if !r.present {
                        out.added.push(c.name.clone());
                    }
                    r.take_settings(fresh);
                }
                None => {
                    let i = self.realms.len() as RealmIdx;
                    let mut fresh = fresh;
                    fresh.counters = self.stats.realms.get(&fresh.name);
                    self.realms.push(fresh);
                    all.insert(c.name.clone(), i);
                    out.added.push(c.name.clone());
                }
            }
        }
        for i in 0..self.realms.len() {
            let r = &mut self.realms[i];
            if wanted.contains(&*r.name) || !r.present {
                continue;
            }
            r.present = false;
            r.authenticator = None;
            r.authorizer = None;
            // what it kept goes with it (a realm added again starts empty)
            let kept = r.retained.len() as i64;
            self.stats.retained_events.fetch_sub(kept, std::sync::atomic::Ordering::Relaxed);
            r.retained.clear();
            r.retained_bytes = 0;
            r.history.clear();
            r.history_bytes = 0;
            let name = r.name.to_string();
            let message = format!("realm '{name}' was removed from the router's configuration");
            self.realm_names.remove(&name);
            out.closed += self
                .kill_local(i as RealmIdx, &KillTarget::All, 0, "wamp.close.close_realm", Some(&message))
                .len();
            out.removed.push(name);
        }
        // the authenticator and authorizer links need every realm's index
        let cfgs: Vec<_> = cfg.realms.iter().filter(|c| all.contains_key(&c.name)).cloned().collect();
        link_dynamic(&mut self.realms, &cfgs, &all);
        for r in &mut self.realms {
            if !r.retention {
                let n = r.retained.len() as i64;
                self.stats.retained_events.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
                r.retained.clear();
                r.retained_bytes = 0;
            }
        }
        for s in self.sessions.values_mut() {
            s.role = self.realms[s.realm as usize].roles.index(&s.identity.authrole);
        }
        self.authz_cache.clear();
        self.dyn_cache.clear();
        self.authz_cached = 0;
        self.authorizer_any = self.realms.iter().any(|r| r.authorizer.is_some());
        self.authz_any = self.authorizer_any || self.realms.iter().any(|r| r.roles.enforced());
        self.uri_limits = cfg.limits.uri_limits();
        self.slow_consumer = cfg.limits.slow_consumer;
        self.limits = cfg.limits.clone();
        out
    }

    /// After every shard has taken the new configuration: sessions may join
    /// the realms it added.
    pub fn open_realms(&mut self) {
        self.realm_names = self
            .realms
            .iter()
            .enumerate()
            .filter(|(_, r)| r.present)
            .map(|(i, r)| (r.name.to_string(), i as RealmIdx))
            .collect();
    }

    /// Lets sessions call `switchyard.router.reload`: their requests go to
    /// `control`.
    pub fn set_control(&mut self, control: flume::Sender<ReloadRequest>) {
        self.control = Some(control);
    }

    /// Answers a `switchyard.router.reload` call: RESULT with what changed
    /// (one dictionary: `{realms, added, removed, sessions_closed,
    /// restart_needed}`), or ERROR `switchyard.error.bad_config`
    /// naming the key and the problem.
    pub fn reload_answer(&mut self, session: Id, request: Id, outcome: Result<Dict, String>) {
        let Some(s) = self.sessions.get_mut(&session) else { return };
        s.builtin_calls = s.builtin_calls.saturating_sub(1);
        match outcome {
            Ok(summary) => self.session_reply(session, |ser| {
                let payload = codec::payload_from(ser, &[Value::Dict(summary.clone())]);
                encode::result(ser, request, &Dict::new(), &payload)
            }),
            Err(problem) => self.error_reply(session, MessageType::Call, request, uris::BAD_CONFIG, &problem),
        }
    }

    /// The HTTP bridge's keys of realm `name` (`None`: no such realm).
    pub fn bridge_keys(&self, name: &str) -> Option<std::sync::Arc<Vec<super::BridgeKey>>> {
        let &i = self.realm_names.get(name)?;
        Some(self.realms[i as usize].bridge_keys.clone())
    }

    /// Opens a session on `conn` in realm `name` for an HTTP bridge client
    /// the bridge has authenticated (or a webhook): no HELLO, no
    /// authentication exchange; WELCOME is queued as for any session. `None`
    /// when the realm does not exist (or the router is shutting down).
    pub fn open_trusted(&mut self, conn: super::ConnId, name: &str, authid: &str, authrole: &str, authmethod: &str) -> Option<Id> {
        if self.shutting_down {
            return None;
        }
        let &realm = self.realm_names.get(name)?;
        let sid = crate::wamp::random_id();
        let identity = super::SessionIdentity {
            realm: self.realms[realm as usize].name.clone(),
            authid: authid.into(),
            authrole: authrole.into(),
            authmethod: authmethod.into(),
            authprovider: "static".into(),
        };
        let features = |names: &[&str]| {
            let mut f = Dict::new();
            for n in names {
                f = f.with(*n, Value::Bool(true));
            }
            Value::Dict(Dict::new().with("features", Value::Dict(f)))
        };
        let roles = Dict::new()
            .with("publisher", features(&["publisher_exclusion", "publisher_identification"]))
            .with("subscriber", features(&["pattern_based_subscription", "publisher_identification"]))
            .with("caller", features(&["progressive_call_results", "call_timeout", "call_canceling"]));
        let details = Dict::new().with("roles", Value::Dict(roles));
        self.establish(conn, realm, sid, identity, details, Dict::new());
        Some(sid)
    }

    /// The names of the realms sessions may join now.
    pub fn realm_list(&self) -> Vec<String> {
        let mut v: Vec<String> = self.realm_names.keys().cloned().collect();
        v.sort();
        v
    }
}
