//! Authentication and authorization in the router core.
//!
//! HELLO picks the first of the client's `authmethods` the realm offers
//! (none: ABORT `wamp.error.no_auth_method`). Anonymous and TLS-certificate
//! logins are welcomed at once; the others get a CHALLENGE, and their
//! AUTHENTICATE is checked: cheap checks (HMACs: WAMP-CRA, WAMP-SCRAM) here,
//! costly ones (password hashes, Ed25519 signatures) on the authentication
//! threads ([`crate::auth::pool`]), whose verdict comes back through
//! [`Router::auth_verdict`]. Unknown authids get the same exchange as known
//! ones (a mock challenge), and fail at the end. The whole exchange has
//! `limits.handshake_timeout_ms`; a peer address that keeps failing is
//! refused for a while (`limits.auth_failures_before_backoff`).
//!
//! Authorization: [`Router::authorize`] answers, on the shard where the
//! request arrives, from the realm's roles ([`crate::auth::authz`]) through a
//! bounded per-shard cache.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;

use super::session::{Phase, SessionIdentity};
use super::{ConnId, RealmIdx, Router};
use crate::auth::{self, pool::Check, Action, Decision, Method, ScramExchange, ScramRecord};
use crate::codec::encode;
use crate::metrics::ShardStats;
use crate::wamp::{self, uris, Dict, Id, MessageType, Value};

/// `wamp.error.authentication_failed`
pub(super) const AUTHENTICATION_FAILED: &str = "wamp.error.authentication_failed";
/// `wamp.error.no_auth_method`
pub(super) const NO_AUTH_METHOD: &str = "wamp.error.no_auth_method";

/// What a connection in the middle of a login waits with.
#[derive(Debug)]
pub(super) struct PendingAuth {
    realm: RealmIdx,
    /// The session ID it will get (WAMP-CRA's challenge names it).
    sid: Id,
    method: Method,
    authid: String,
    role: Arc<str>,
    details: Dict,
    state: AuthState,
    timer: super::timers::TimerKey,
}

impl PendingAuth {
    /// Its timeout's timer.
    pub(super) fn timer(&self) -> super::timers::TimerKey {
        self.timer
    }
}

#[derive(Debug)]
enum AuthState {
    /// The PHC hash of the principal's ticket (`None`: unknown authid).
    Ticket(Option<String>),
    Cra {
        challenge: String,
        key: Vec<u8>,
    },
    Cryptosign {
        challenge: [u8; 32],
        channel: Option<[u8; 32]>,
        pubkey: [u8; 32],
    },
    Scram {
        exchange: ScramExchange,
        record: ScramRecord,
        binding: Option<(String, [u8; 32])>,
        known: bool,
    },
    /// On the authentication threads; WELCOME's authextra if they agree.
    Verifying(Dict),
}

/// A peer address's failed logins.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    failures: u32,
    until: Instant,
}

/// What the TLS layer tells the core about a connection.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The subject common name of the client's verified certificate.
    pub client_cn: Option<String>,
    /// RFC 9266 `tls-exporter` channel binding (32 bytes).
    pub exporter: Option<[u8; 32]>,
}

/// The authids of sessions that did not authenticate are the router's.
fn anonymous_authid(sid: Id) -> String {
    format!("anonymous-{sid}")
}

fn hello_methods(details: &Dict) -> Vec<String> {
    match details.get("authmethods") {
        Some(Value::List(l)) if !l.is_empty() => l
            .iter()
            .filter_map(|m| match m {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => vec!["anonymous".into()],
    }
}

fn authextra(details: &Dict) -> Option<&Dict> {
    match details.get("authextra") {
        Some(Value::Dict(d)) => Some(d),
        _ => None,
    }
}

/// A password hash nobody's ticket matches, so that unknown authids cost
/// what known ones do (computed once, on an authentication thread).
fn dummy_ticket_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| auth::hash_ticket(&hex::encode(rand::random::<[u8; 16]>()), None))
}

impl Router {
    /// Starts the login of a HELLO whose realm exists.
    pub(super) fn start_auth(&mut self, conn: ConnId, realm: RealmIdx, details: Dict) {
        let auth = self.realms[realm as usize].auth.clone();
        let Some(c) = self.conns.get(&conn) else { return };
        let tls = c.transport.tls.clone();
        let peer = c.transport.peer.map(|a| a.ip());
        let asked = hello_methods(&details);
        let chosen = asked
            .iter()
            .filter_map(|m| Method::parse(m))
            .find(|&m| auth.offers(m) && (m != Method::Tls || tls.as_ref().is_some_and(|t| t.client_cn.is_some())));
        let Some(method) = chosen else {
            let m = format!(
                "this realm offers none of the authentication methods asked for ({})",
                asked.join(", ")
            );
            return self.abort(conn, NO_AUTH_METHOD, &m);
        };
        let sid = wamp::random_id();
        let hello_authid = details.get_str("authid").map(str::to_owned);
        let provider: Arc<str> = "static".into();
        match method {
            Method::Anonymous => {
                let identity = SessionIdentity {
                    realm: self.realms[realm as usize].name.clone(),
                    authid: anonymous_authid(sid).into(),
                    authrole: auth.anonymous.clone().unwrap_or_else(|| "anonymous".into()),
                    authmethod: "anonymous".into(),
                    authprovider: provider,
                };
                return self.establish(conn, realm, sid, identity, details, Dict::new());
            }
            Method::Tls => {
                let cn = tls.and_then(|t| t.client_cn.clone()).unwrap_or_default();
                let principal = auth.principals.get(&cn).filter(|p| p.tls);
                let matches = hello_authid.as_deref().is_none_or(|a| a == cn);
                return match principal {
                    Some(p) if matches => {
                        ShardStats::inc(&self.stats.auth_successes);
                        let identity = SessionIdentity {
                            realm: self.realms[realm as usize].name.clone(),
                            authid: p.authid.clone(),
                            authrole: p.role.clone(),
                            authmethod: "tls".into(),
                            authprovider: provider,
                        };
                        self.establish(conn, realm, sid, identity, details, Dict::new())
                    }
                    Some(_) => {
                        ShardStats::inc(&self.stats.auth_failures);
                        let m = format!("the client certificate is '{cn}', not the authid HELLO asked for");
                        self.abort(conn, AUTHENTICATION_FAILED, &m)
                    }
                    None => {
                        ShardStats::inc(&self.stats.auth_failures);
                        let m = format!("no principal of this realm authenticates with the certificate of '{cn}'");
                        self.abort(conn, AUTHENTICATION_FAILED, &m)
                    }
                };
            }
            _ => {}
        }
        if let Some(wait) = peer.and_then(|ip| self.backoff_left(ip)) {
            ShardStats::inc(&self.stats.auth_backoff_refused);
            let m = format!("too many failed logins from this address: retry in {} ms", wait.as_millis());
            return self.abort(conn, AUTHENTICATION_FAILED, &m);
        }
        let extra = authextra(&details).cloned().unwrap_or_default();
        let authid = hello_authid.clone().unwrap_or_default();
        let principal = auth.principals.get(&authid).cloned();
        let (state, challenge_extra, authid, role) = match method {
            Method::Ticket => {
                let phc = principal.as_ref().and_then(|p| p.ticket.clone());
                let role = principal.map_or_else(|| "anonymous".into(), |p| p.role.clone());
                (AuthState::Ticket(phc), Dict::new(), authid, role)
            }
            Method::WampCra => {
                // an unknown authid (or one without a CRA secret) is shaped
                // like a known one, and fails at the end
                let (role, cra) = match principal.as_ref().and_then(|p| p.cra.clone().map(|c| (p.role.clone(), c))) {
                    Some(known) => known,
                    None => auth.mock_cra(&authid),
                };
                let nonce = auth::b64(&rand::random::<[u8; 16]>());
                let challenge = Dict::new()
                    .with("authid", Value::Str(authid.clone()))
                    .with("authrole", Value::Str(role.to_string()))
                    .with("authmethod", "wampcra".into())
                    .with("authprovider", "static".into())
                    .with("nonce", Value::Str(nonce))
                    .with("timestamp", Value::Str(super::iso_time(super::now_ms())))
                    .with("session", Value::UInt(sid));
                let mut text = Vec::new();
                crate::codec::json::write_value(&mut text, &Value::Dict(challenge));
                let challenge = String::from_utf8(text).unwrap_or_default();
                let mut extra = Dict::new().with("challenge", Value::Str(challenge.clone()));
                let key = match cra {
                    auth::CraKey::Plain(k) => k,
                    auth::CraKey::Salted {
                        salt,
                        iterations,
                        keylen,
                        key,
                    } => {
                        extra = extra
                            .with("salt", Value::Str(salt))
                            .with("keylen", Value::UInt(keylen.into()))
                            .with("iterations", Value::UInt(iterations.into()));
                        key
                    }
                };
                (AuthState::Cra { challenge, key }, extra, authid, role)
            }
            Method::Cryptosign => {
                let pubkey = extra
                    .get_str("pubkey")
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|b| <[u8; 32]>::try_from(b).ok());
                let Some(pubkey) = pubkey else {
                    return self.abort(
                        conn,
                        AUTHENTICATION_FAILED,
                        "cryptosign needs HELLO.Details.authextra.pubkey (32 bytes, hex)",
                    );
                };
                let holder = auth
                    .by_pubkey
                    .get(&pubkey)
                    .filter(|p| hello_authid.as_deref().is_none_or(|a| a == &*p.authid));
                let Some(holder) = holder.cloned() else {
                    ShardStats::inc(&self.stats.auth_failures);
                    self.note_failure(peer);
                    return self.abort(conn, AUTHENTICATION_FAILED, "this public key is not authorized on this realm");
                };
                let channel = match self.channel_binding(conn, extra.get_str("channel_binding")) {
                    Ok(c) => c,
                    Err(m) => return self.abort(conn, AUTHENTICATION_FAILED, &m),
                };
                let challenge: [u8; 32] = rand::random();
                let mut ce = Dict::new().with("challenge", Value::Str(hex::encode(challenge)));
                ce = ce.with(
                    "channel_binding",
                    if channel.is_some() { "tls-exporter".into() } else { Value::Null },
                );
                let state = AuthState::Cryptosign {
                    challenge,
                    channel,
                    pubkey,
                };
                (state, ce, holder.authid.to_string(), holder.role.clone())
            }
            Method::Scram | Method::ScramDraft => {
                let draft = method == Method::ScramDraft;
                let Some(client_nonce) = extra.get_str("nonce").filter(|n| auth::unb64(n).is_some()) else {
                    return self.abort(conn, AUTHENTICATION_FAILED, "SCRAM needs HELLO.Details.authextra.nonce (base64)");
                };
                let binding = match extra.get_str("channel_binding") {
                    None => None,
                    Some(name) => match self.channel_binding(conn, Some(name)) {
                        Ok(Some(data)) => Some((name.to_owned(), data)),
                        Ok(None) => None,
                        Err(m) => return self.abort(conn, AUTHENTICATION_FAILED, &m),
                    },
                };
                let known = principal.as_ref().is_some_and(|p| p.scram.is_some());
                let (role, record) = match principal.as_ref().and_then(|p| p.scram.clone().map(|r| (p.role.clone(), r))) {
                    Some(known) => known,
                    None => auth.mock_scram(&authid, method),
                };
                let nonce = format!("{client_nonce}{}", auth::b64(&rand::random::<[u8; 16]>()));
                let mut ce = Dict::new()
                    .with("nonce", Value::Str(nonce.clone()))
                    .with("salt", Value::Str(record.salt.clone()))
                    .with("kdf", record.kdf.as_str().into())
                    .with("iterations", Value::UInt(record.iterations.into()));
                if let Some(m) = record.memory.filter(|_| record.kdf != auth::Kdf::Pbkdf2) {
                    ce = ce.with("memory", Value::UInt(m.into()));
                }
                if let Some((name, _)) = &binding {
                    ce = ce.with("channel_binding", Value::Str(name.clone()));
                }
                let exchange = ScramExchange {
                    draft,
                    authid: authid.clone(),
                    client_nonce: client_nonce.to_owned(),
                    nonce,
                    salt: record.salt.clone(),
                    iterations: record.iterations,
                };
                let state = AuthState::Scram {
                    exchange,
                    record,
                    binding,
                    known,
                };
                (state, ce, authid, role)
            }
            Method::Anonymous | Method::Tls => return,
        };
        let now = self.clock.now();
        let timer = self.timers.start(
            now,
            Duration::from_millis(self.limits.handshake_timeout_ms),
            super::timers::Due::AuthTimeout { conn },
        );
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.outbox.push(encode::challenge(c.ser, method.as_str(), &challenge_extra));
        c.phase = Phase::Challenged;
        c.auth = Some(Box::new(PendingAuth {
            realm,
            sid,
            method,
            authid,
            role,
            details,
            state,
            timer,
        }));
    }

    /// The channel binding data for `name` on this connection: `None` when
    /// none is asked for; an error when it cannot be had.
    fn channel_binding(&self, conn: ConnId, name: Option<&str>) -> Result<Option<[u8; 32]>, String> {
        let Some(name) = name else { return Ok(None) };
        let tls = self.conns.get(&conn).and_then(|c| c.transport.tls.clone());
        match (name, tls.and_then(|t| t.exporter)) {
            ("tls-exporter", Some(data)) => Ok(Some(data)),
            ("tls-exporter", None) => Err("channel binding tls-exporter needs a TLS connection".into()),
            ("tls-unique", _) => Err("channel binding tls-unique is not offered (TLS 1.3 has none; use tls-exporter)".into()),
            (other, _) => Err(format!("unknown channel binding '{other}'")),
        }
    }

    /// AUTHENTICATE on `conn`.
    pub(super) fn authenticate(&mut self, conn: ConnId, signature: String, extra: Dict) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.phase != Phase::Challenged {
            return self.protocol_violation(conn, "AUTHENTICATE without a CHALLENGE");
        }
        let Some(mut pending) = c.auth.take() else { return };
        let state = std::mem::replace(&mut pending.state, AuthState::Verifying(Dict::new()));
        match state {
            AuthState::Ticket(phc) => {
                let known = phc.is_some();
                let phc = phc.unwrap_or_default();
                self.offload(
                    conn,
                    pending,
                    Dict::new(),
                    Box::new(move || {
                        if known {
                            auth::verify_ticket(&phc, &signature)
                        } else {
                            // the same cost as a known authid, then no
                            let _ = auth::verify_ticket(dummy_ticket_hash(), &signature);
                            false
                        }
                    }),
                );
            }
            AuthState::Cra { challenge, key } => {
                let ok = auth::verify_cra(&key, &challenge, &signature);
                self.finish(conn, pending, ok, Dict::new());
            }
            AuthState::Cryptosign {
                challenge,
                channel,
                pubkey,
            } => {
                let check: Check = Box::new(move || auth::verify_cryptosign(&pubkey, &challenge, channel.as_ref(), &signature));
                self.offload(conn, pending, Dict::new(), check);
            }
            AuthState::Scram {
                exchange,
                record,
                binding,
                known,
            } => {
                let verdict = scram_check(&exchange, &record, binding.as_ref(), &signature, &extra).filter(|_| known);
                match verdict {
                    Some(sig) => {
                        let sig = auth::b64(&sig);
                        let authextra = Dict::new()
                            .with("verifier", Value::Str(sig.clone()))
                            .with("scram_server_signature", Value::Str(sig));
                        self.finish(conn, pending, true, authextra)
                    }
                    None => self.finish(conn, pending, false, Dict::new()),
                }
            }
            AuthState::Verifying(_) => self.protocol_violation(conn, "AUTHENTICATE received twice"),
        }
    }

    /// Runs `check` on the authentication threads (inline without them).
    fn offload(&mut self, conn: ConnId, mut pending: Box<PendingAuth>, authextra: Dict, check: Check) {
        let Some(pool) = self.auth_pool.clone() else {
            return self.finish(conn, pending, check(), authextra);
        };
        if !pool.submit(conn, check) {
            ShardStats::inc(&self.stats.auth_queue_full);
            self.timers.cancel(pending.timer);
            return self.abort(conn, AUTHENTICATION_FAILED, "the router is busy authenticating others: retry later");
        }
        pending.state = AuthState::Verifying(authextra);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Verifying;
            c.auth = Some(pending);
        }
    }

    /// A verdict of the authentication threads.
    pub fn auth_verdict(&mut self, v: auth::pool::Verdict) {
        let Some(c) = self.conns.get_mut(&v.conn) else { return };
        if c.phase != Phase::Verifying {
            return;
        }
        let Some(mut pending) = c.auth.take() else { return };
        let AuthState::Verifying(authextra) = std::mem::replace(&mut pending.state, AuthState::Ticket(None)) else {
            return;
        };
        self.finish(v.conn, pending, v.ok, authextra);
    }

    /// Ends a login: WELCOME, or ABORT `wamp.error.authentication_failed`.
    fn finish(&mut self, conn: ConnId, pending: Box<PendingAuth>, ok: bool, authextra: Dict) {
        self.timers.cancel(pending.timer);
        let peer = self.conns.get(&conn).and_then(|c| c.transport.peer).map(|a| a.ip());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Idle;
        }
        if !ok {
            ShardStats::inc(&self.stats.auth_failures);
            self.note_failure(peer);
            tracing::info!(conn, method = pending.method.as_str(), authid = %pending.authid, ?peer, "login failed");
            return self.abort(conn, AUTHENTICATION_FAILED, "wrong or unknown credentials");
        }
        ShardStats::inc(&self.stats.auth_successes);
        if let Some(ip) = peer {
            self.backoff.remove(&ip);
        }
        let identity = SessionIdentity {
            realm: self.realms[pending.realm as usize].name.clone(),
            authid: pending.authid.as_str().into(),
            authrole: pending.role.clone(),
            authmethod: pending.method.as_str().into(),
            authprovider: "static".into(),
        };
        self.establish(conn, pending.realm, pending.sid, identity, pending.details, authextra);
    }

    /// The exchange took longer than `limits.handshake_timeout_ms`.
    pub(super) fn auth_timed_out(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if !matches!(c.phase, Phase::Challenged | Phase::Verifying) {
            return;
        }
        c.phase = Phase::Idle;
        c.auth = None;
        ShardStats::inc(&self.stats.auth_failures);
        self.abort(conn, AUTHENTICATION_FAILED, "no valid AUTHENTICATE in time");
    }

    /// How long `ip` is still refused, if it is.
    fn backoff_left(&self, ip: IpAddr) -> Option<Duration> {
        let b = self.backoff.get(&ip)?;
        let now = self.clock.now();
        (b.failures >= self.limits.auth_failures_before_backoff && b.until > now).then(|| b.until - now)
    }

    fn note_failure(&mut self, peer: Option<IpAddr>) {
        let Some(ip) = peer else { return };
        let now = self.clock.now();
        let cap = self.limits.max_auth_backoff_peers;
        if !self.backoff.contains_key(&ip) && self.backoff.len() >= cap {
            // forget the addresses no longer refused; if all still are, this
            // one goes untracked (counted)
            self.backoff.retain(|_, b| b.until > now);
            if self.backoff.len() >= cap {
                ShardStats::inc(&self.stats.auth_backoff_untracked);
                return;
            }
        }
        let threshold = self.limits.auth_failures_before_backoff;
        let max = Duration::from_millis(self.limits.auth_backoff_max_ms);
        let b = self.backoff.entry(ip).or_insert(Backoff { failures: 0, until: now });
        b.failures = b.failures.saturating_add(1);
        if b.failures >= threshold {
            let doublings = (b.failures - threshold).min(20);
            b.until = now + (Duration::from_secs(1) * (1u32 << doublings)).min(max);
        }
    }

    /// Whether session `sid` may do `action` on `uri`, from its role.
    pub(super) fn authorize(&mut self, sid: Id, action: Action, uri: &str) -> Decision {
        let Some(s) = self.sessions.get(&sid) else { return Decision::Deny };
        let realm = s.realm;
        let roles = &self.realms[realm as usize].roles;
        if !roles.enforced() {
            return Decision::Allow { disclose: false };
        }
        let Some(role) = s.role else { return Decision::Deny };
        let key = (realm, role, action as u8);
        if let Some(d) = self.authz_cache.get(&key).and_then(|m| m.get(uri)) {
            ShardStats::inc(&self.stats.authorization_cache_hits);
            return *d;
        }
        ShardStats::inc(&self.stats.authorization_cache_misses);
        let d = roles.list[role as usize].decide(uri, action);
        if self.authz_cached >= self.limits.authorization_cache {
            self.authz_cache.clear();
            self.authz_cached = 0;
        }
        self.authz_cache.entry(key).or_default().insert(uri.into(), d);
        self.authz_cached += 1;
        d
    }

    /// [`Router::authorize`], answering a denial with ERROR
    /// `wamp.error.not_authorized` (or, for a PUBLISH without acknowledge,
    /// dropping it, counted); `None` when denied.
    pub(super) fn authorized(
        &mut self,
        sid: Id,
        kind: MessageType,
        request: Id,
        action: Action,
        uri: &str,
        answer: bool,
    ) -> Option<Decision> {
        let d = self.authorize(sid, action, uri);
        if d.allowed() {
            return Some(d);
        }
        ShardStats::inc(&self.stats.authorization_denied);
        if answer {
            let role = self.sessions.get(&sid).map(|s| s.identity.authrole.to_string()).unwrap_or_default();
            let m = format!("the role '{role}' may not {} '{uri}'", action.as_str());
            self.error_reply(sid, kind, request, uris::NOT_AUTHORIZED, &m);
        } else {
            ShardStats::inc(&self.stats.publications_denied);
        }
        None
    }
}

/// Checks a SCRAM AUTHENTICATE: the nonce and channel binding it repeats
/// (spec form), then the proof; the ServerSignature when it holds.
fn scram_check(ex: &ScramExchange, rec: &ScramRecord, binding: Option<&(String, [u8; 32])>, proof: &str, extra: &Dict) -> Option<[u8; 32]> {
    if ex.draft {
        return auth::verify_scram(rec, &ex.auth_message(None), proof);
    }
    if extra.get_str("nonce") != Some(ex.nonce.as_str()) {
        return None;
    }
    let cb_name = extra.get_str("channel_binding");
    if cb_name != binding.map(|(n, _)| n.as_str()) {
        return None;
    }
    let cb = match binding {
        None => None,
        Some((name, ours)) => {
            let theirs = extra.get_str("cbind_data").and_then(auth::unb64)?;
            if !auth::ct_eq(&theirs, ours) {
                return None;
            }
            Some((name.as_str(), &ours[..]))
        }
    };
    auth::verify_scram(rec, &ex.auth_message(cb), proof)
}

/// The per-shard authorization cache: per (realm, role, action), URI to
/// decision.
pub(super) type AuthzCache = AHashMap<(RealmIdx, u32, u8), AHashMap<Box<str>, Decision>>;
