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
use crate::wamp::{self, uris, Dict, Id, MatchPolicy, MessageType, Value};

/// `wamp.error.authentication_failed`
pub(super) const AUTHENTICATION_FAILED: &str = "wamp.error.authentication_failed";
/// The longest AUTHENTICATE signature (or ticket) accepted.
const MAX_SIGNATURE: usize = 4096;

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
    /// The authenticator vouched (WELCOME's `authprovider` "dynamic").
    dynamic: bool,
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
    /// A ticket the authenticator checks.
    TicketDynamic,
    /// Waiting for the authenticator: with the ticket it checks, or before
    /// the challenge of `method`.
    Authenticator {
        method: Method,
        ticket: bool,
    },
}

/// A peer address's failed logins.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    failures: u32,
    until: Instant,
    /// The last failure: a count older than `limits.auth_backoff_max_ms`
    /// starts again.
    last: Instant,
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
        let dynamic = self.realms[realm as usize].authenticator.clone();
        let chosen = asked.iter().filter_map(|m| Method::parse(m)).find(|&m| {
            let offered = auth.offers(m) || dynamic.as_ref().is_some_and(|d| d.methods.contains(&m));
            offered && (m != Method::Tls || tls.as_ref().is_some_and(|t| t.client_cn.is_some()))
        });
        let Some(method) = chosen else {
            let m = format!(
                "this realm offers none of the authentication methods asked for ({})",
                asked.join(", ")
            );
            return self.abort(conn, NO_AUTH_METHOD, &m);
        };
        let sid = wamp::random_id();
        let hello_authid = details.get_str("authid").map(str::to_owned);
        match method {
            Method::Anonymous => {
                let role = auth.anonymous.clone().unwrap_or_else(|| "anonymous".into());
                let identity = self.identity(realm, anonymous_authid(sid).into(), role, method, false);
                return self.establish(conn, realm, sid, identity, details, Dict::new());
            }
            Method::Tls => {
                let cn = tls.and_then(|t| t.client_cn.clone()).unwrap_or_default();
                let principal = auth.principals.get(&cn).filter(|p| p.tls);
                let matches = hello_authid.as_deref().is_none_or(|a| a == cn);
                return match principal {
                    Some(p) if matches => {
                        ShardStats::inc(&self.stats.auth_successes);
                        let identity = self.identity(realm, p.authid.clone(), p.role.clone(), method, false);
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
        if dynamic.is_some_and(|d| d.methods.contains(&method)) {
            if method != Method::Ticket {
                // the authenticator says who may log in, before the challenge
                return self.ask_authenticator(conn, realm, sid, method, details, None);
            }
            // a ticket is checked by the authenticator once AUTHENTICATE has it
            return self.send_challenge(conn, realm, sid, method, details, Some(None));
        }
        self.send_challenge(conn, realm, sid, method, details, None)
    }

    /// The CHALLENGE of `method` for the login on `conn`. `given`: what the
    /// authenticator answered (`Some(None)`: it will check the ticket
    /// itself); `None`: the realm's own principals decide.
    pub(super) fn send_challenge(
        &mut self,
        conn: ConnId,
        realm: RealmIdx,
        sid: Id,
        method: Method,
        details: Dict,
        given: Option<Option<Arc<auth::Principal>>>,
    ) {
        let auth = self.realms[realm as usize].auth.clone();
        let peer = self.conns.get(&conn).and_then(|c| c.transport.peer).map(|a| a.ip());
        let hello_authid = details.get_str("authid").map(str::to_owned);
        let extra = authextra(&details).cloned().unwrap_or_default();
        let authid = hello_authid.clone().unwrap_or_default();
        let dynamic = given.is_some();
        let principal = match &given {
            Some(p) => p.clone(),
            None => auth.principals.get(&authid).cloned(),
        };
        // the authenticator may name the authid the session gets
        let authid = match (&principal, dynamic) {
            (Some(p), true) => p.authid.to_string(),
            _ => authid,
        };
        let provider = if dynamic { "dynamic" } else { "static" };
        let (state, challenge_extra, authid, role) = match method {
            Method::Ticket if dynamic => (AuthState::TicketDynamic, Dict::new(), authid, "".into()),
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
                    .with("authprovider", provider.into())
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
                let by_key = match &principal {
                    Some(p) if dynamic && p.cryptosign.contains(&pubkey) => Some(p),
                    _ if dynamic => None,
                    _ => auth.by_pubkey.get(&pubkey),
                };
                let holder = by_key.filter(|p| dynamic || hello_authid.as_deref().is_none_or(|a| a == &*p.authid));
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
                    // what the client's AuthMessage names
                    authid: hello_authid.clone().unwrap_or_default(),
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
            dynamic,
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
        if signature.len() > MAX_SIGNATURE {
            c.phase = Phase::Idle;
            if let Some(p) = c.auth.take() {
                self.timers.cancel(p.timer);
            }
            ShardStats::inc(&self.stats.auth_failures);
            return self.abort(conn, AUTHENTICATION_FAILED, "the signature is longer than any method's");
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
            AuthState::TicketDynamic => {
                let (realm, sid, method) = (pending.realm, pending.sid, pending.method);
                let details = std::mem::take(&mut pending.details);
                self.timers.cancel(pending.timer);
                self.ask_authenticator(conn, realm, sid, method, details, Some(signature));
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
            AuthState::Verifying(_) | AuthState::Authenticator { .. } => self.protocol_violation(conn, "AUTHENTICATE received twice"),
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
        // a success does not clear the address's failures: a login of one's
        // own must not buy more guesses at another's
        ShardStats::inc(&self.stats.auth_successes);
        let identity = self.identity(
            pending.realm,
            pending.authid.as_str().into(),
            pending.role.clone(),
            pending.method,
            pending.dynamic,
        );
        self.establish(conn, pending.realm, pending.sid, identity, pending.details, authextra);
    }

    /// Who a session that logged in is (WELCOME names it).
    fn identity(&self, realm: RealmIdx, authid: Arc<str>, authrole: Arc<str>, method: Method, dynamic: bool) -> SessionIdentity {
        SessionIdentity {
            realm: self.realms[realm as usize].name.clone(),
            authid,
            authrole,
            authmethod: method.as_str().into(),
            authprovider: if dynamic { "dynamic".into() } else { "static".into() },
        }
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
        let b = self.backoff.entry(ip).or_insert(Backoff {
            failures: 0,
            until: now,
            last: now,
        });
        if now.duration_since(b.last) > max && b.until <= now {
            b.failures = 0;
        }
        b.last = now;
        b.failures = b.failures.saturating_add(1);
        if b.failures >= threshold {
            let doublings = (b.failures - threshold).min(20);
            b.until = now + (Duration::from_secs(1) * (1u32 << doublings)).min(max);
        }
    }

    /// Whether session `sid` may do `action` on `uri`: from its role's
    /// rules, else from the realm's authorizer's cached answers; `Ask` when
    /// the authorizer must be asked first.
    pub(super) fn authz_lookup(&mut self, sid: Id, action: Action, uri: &str, policy: MatchPolicy) -> Lookup {
        let Some(s) = self.sessions.get(&sid) else {
            return Lookup::Decided(Decision::Deny);
        };
        // an overlong URI is refused (and not kept in a cache)
        if uri.len() > self.uri_limits.max_len {
            return Lookup::Decided(Decision::Deny);
        }
        let what = question(action, policy);
        let realm = s.realm;
        let r = &self.realms[realm as usize];
        let dynamic = r.authorizer.is_some();
        if r.roles.enforced() {
            if let Some(role) = s.role {
                let key = (realm, role, what);
                let hit = self.authz_cache.get(&key).and_then(|m| m.get(uri)).copied();
                let found = match hit {
                    Some(d) => {
                        ShardStats::inc(&self.stats.authorization_cache_hits);
                        d
                    }
                    None => {
                        ShardStats::inc(&self.stats.authorization_cache_misses);
                        let d = r.roles.list[role as usize].lookup_pattern(uri, policy, action);
                        self.make_room();
                        self.authz_cache.entry(key).or_default().insert(uri.into(), d);
                        self.authz_cached += 1;
                        d
                    }
                };
                if let Some(d) = found {
                    return Lookup::Decided(d);
                }
            }
            if !dynamic {
                return Lookup::Decided(Decision::Deny);
            }
        } else if !dynamic {
            return Lookup::Decided(Decision::Allow { disclose: false });
        }
        // the authorizer's: an answer kept for this role, or one it gave
        // for this very request without letting it be kept
        let Some(s) = self.sessions.get_mut(&sid) else {
            return Lookup::Decided(Decision::Deny);
        };
        let key: AuthzKey = (realm, s.identity.authrole.clone(), what, uri.into());
        if let Some((_, d)) = s.authz_once.as_ref().filter(|(k, _)| *k == key) {
            return Lookup::Decided(*d);
        }
        let now = self.clock.now();
        for scope in [Scope::Session(sid), Scope::Role(key.1.clone())] {
            if let Some((d, until)) = self.dyn_cache.get(&(key.0, scope, key.2)).and_then(|m| m.get(uri)).copied() {
                if until > now {
                    ShardStats::inc(&self.stats.authorization_cache_hits);
                    return Lookup::Decided(d);
                }
            }
        }
        Lookup::Ask(key)
    }

    /// Empties the authorization caches when they hold
    /// `limits.authorization_cache` decisions.
    fn make_room(&mut self) {
        if self.authz_cached >= self.limits.authorization_cache {
            self.authz_cache.clear();
            self.dyn_cache.clear();
            self.authz_cached = 0;
        }
    }

    /// The decision for session `sid` (a session waiting for the
    /// authorizer is denied: callers park the message before asking).
    pub(super) fn authorize(&mut self, sid: Id, action: Action, uri: &str, policy: MatchPolicy) -> Decision {
        let d = match self.authz_lookup(sid, action, uri, policy) {
            Lookup::Decided(d) => d,
            Lookup::Ask(_) => Decision::Deny,
        };
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.authz_once = None;
        }
        d
    }

    /// Asks the realm's authorizer about `key` for session `sid` (whose
    /// message waits in its `parked` queue).
    /// True while the question is with the authorizer; false when it could
    /// not be asked (the denial is recorded for the parked message: the
    /// caller goes on with the queue, no recursion).
    pub(super) fn ask_authorizer(&mut self, sid: Id, key: AuthzKey) -> bool {
        let Some(s) = self.sessions.get(&sid) else { return false };
        let Some(d) = self.realms[s.realm as usize].authorizer.clone() else {
            return false;
        };
        let who = super::builtins::session_details(sid, s);
        let action = [Action::Call, Action::Register, Action::Publish, Action::Subscribe]
            .into_iter()
            .find(|a| *a as u8 == key.2 & 0x0f)
            .unwrap_or(Action::Call);
        let policy = match key.2 >> 4 {
            1 => "prefix",
            2 => "wildcard",
            _ => "exact",
        };
        let args = [
            Value::Dict(who),
            Value::Str(key.3.to_string()),
            action.as_str().into(),
            Value::Dict(Dict::new().with("match", policy.into())),
        ];
        ShardStats::inc(&self.stats.authorizer_calls);
        if let Err(e) = self.router_call(
            d.realm,
            &d.procedure,
            &args,
            d.timeout,
            super::calls::Purpose::Authorize { sid, key: key.clone() },
        ) {
            self.record_authorizer_answer(sid, key, Err(e));
            return false;
        }
        true
    }

    /// The authorizer's answer: `true` / `false`, or a dictionary with
    /// `allow`, `disclose` and `cache` (default true: kept for the role for
    /// `cache_ttl_ms`). A failing or absent authorizer denies. Then the
    /// session's parked messages go on.
    pub(super) fn authorizer_answered(&mut self, sid: Id, key: AuthzKey, answer: Result<Value, String>) {
        self.record_authorizer_answer(sid, key, answer);
        self.resume_parked(sid);
    }

    /// Keeps an authorizer's answer: in the cache by its scope, and for the
    /// parked message that asked.
    fn record_authorizer_answer(&mut self, sid: Id, key: AuthzKey, answer: Result<Value, String>) {
        let (decision, keep) = match &answer {
            Ok(Value::Bool(true)) => (Decision::Allow { disclose: false }, Keep::Session),
            Ok(Value::Bool(false)) => (Decision::Deny, Keep::Session),
            Ok(Value::Dict(d)) => {
                let allow = d.get_bool("allow") == Some(true);
                let disclose = d.get_bool("disclose") == Some(true);
                let keep = match d.get("cache") {
                    Some(Value::Bool(false)) => Keep::No,
                    Some(Value::Str(s)) if s == "role" => Keep::Role,
                    Some(Value::Str(s)) if s == "none" => Keep::No,
                    _ => Keep::Session,
                };
                (if allow { Decision::Allow { disclose } } else { Decision::Deny }, keep)
            }
            Ok(other) => {
                tracing::warn!(session = sid, uri = %key.3, answer = ?other, "the authorizer's answer is not a boolean or a dictionary: denied");
                (Decision::Deny, Keep::No)
            }
            Err(e) => {
                tracing::warn!(session = sid, uri = %key.3, error = %e, "the authorizer failed: denied");
                (Decision::Deny, Keep::No)
            }
        };
        let ttl = self
            .sessions
            .get(&sid)
            .and_then(|s| self.realms[s.realm as usize].authorizer.as_ref())
            .map(|d| d.ttl);
        let scope = match keep {
            Keep::No => None,
            Keep::Session => Some(Scope::Session(sid)),
            Keep::Role => Some(Scope::Role(key.1.clone())),
        };
        match (ttl, scope) {
            (Some(ttl), Some(scope)) if !ttl.is_zero() => {
                self.make_room();
                let until = self.clock.now() + ttl;
                self.dyn_cache
                    .entry((key.0, scope, key.2))
                    .or_default()
                    .insert(key.3.clone(), (decision, until));
                self.authz_cached += 1;
            }
            _ => {}
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.authz_once = Some((key, decision));
        }
    }
    /// [`Router::authorize`], answering a denial with ERROR
    /// `wamp.error.not_authorized` (or, for a PUBLISH without acknowledge,
    /// dropping it, counted); `None` when denied.
    #[inline(always)]
    pub(super) fn authorized(
        &mut self,
        sid: Id,
        kind: MessageType,
        request: Id,
        (action, policy): (Action, MatchPolicy),
        uri: &str,
        answer: bool,
    ) -> Option<Decision> {
        if !self.authz_any {
            return Some(Decision::Allow { disclose: false });
        }
        self.authorized_by_role(sid, kind, request, (action, policy), uri, answer)
    }

    /// [`Router::authorized`] past its flag, kept out of line so that the
    /// hot path of a router without roles inlines only the flag.
    #[inline(never)]
    fn authorized_by_role(
        &mut self,
        sid: Id,
        kind: MessageType,
        request: Id,
        (action, policy): (Action, MatchPolicy),
        uri: &str,
        answer: bool,
    ) -> Option<Decision> {
        let d = self.authorize(sid, action, uri, policy);
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

/// The per-shard cache of the roles' decisions: per (realm, role, action),
/// URI to the decision of the rule that matches (`None`: no rule does).
pub(super) type AuthzCache = AHashMap<(RealmIdx, u32, u8), AHashMap<Box<str>, Option<Decision>>>;

/// What an authorizer is asked about: realm, authrole, action, URI.
pub(super) type AuthzKey = (RealmIdx, Arc<str>, u8, Box<str>);

/// Who an authorizer's answer holds for: the session asking (the default),
/// or every session of its role (the answer said `cache: "role"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Scope {
    Session(Id),
    Role(Arc<str>),
}

/// How an authorizer's answer is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    No,
    Session,
    Role,
}

/// The question of an authorization: the action in the low four bits, the
/// subscription's or registration's match policy above.
fn question(action: Action, policy: MatchPolicy) -> u8 {
    let p = match policy {
        MatchPolicy::Exact => 0,
        MatchPolicy::Prefix => 1,
        MatchPolicy::Wildcard => 2,
    };
    action as u8 | (p << 4)
}

/// The per-shard cache of authorizers' answers: per (realm, scope,
/// question), URI to the decision and until when it holds.
pub(super) type DynCache = AHashMap<(RealmIdx, Scope, u8), AHashMap<Box<str>, (Decision, Instant)>>;

/// An authorization decision, or the authorizer to ask first.
#[derive(Debug)]
pub(super) enum Lookup {
    Decided(Decision),
    Ask(AuthzKey),
}

/// A realm's authenticator or authorizer procedure.
#[derive(Debug, Clone)]
pub struct Dynamic {
    pub procedure: String,
    /// The realm it is registered on.
    pub realm: RealmIdx,
    pub timeout: Duration,
    /// Authenticator: the methods it decides.
    pub methods: Vec<Method>,
    /// Authorizer: how long its answers are kept.
    pub ttl: Duration,
}

fn answer_str<'a>(d: &'a Dict, key: &str) -> Option<&'a str> {
    d.get_str(key)
}

fn answer_u32(d: &Dict, key: &str) -> Option<u32> {
    match d.get(key) {
        Some(Value::UInt(n)) => u32::try_from(*n).ok(),
        _ => None,
    }
}

fn b64_key(d: &Dict, key: &str) -> Result<[u8; 32], String> {
    answer_str(d, key)
        .and_then(auth::unb64)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| format!("'{key}' must be 32 bytes of base64"))
}

/// Reads an authenticator's answer for `method`: a role, or a dictionary
/// with `role` and, for the challenge methods, the secret or keys (WAMP-CRA:
/// `secret`, or `key` with `salt`, `iterations`, `keylen`; cryptosign:
/// `pubkey` or `pubkeys`, default the key HELLO named; SCRAM: `kdf`,
/// `salt`, `iterations`, `memory`, `stored_key`, `server_key`), and
/// optionally the `authid` the session gets.
fn read_answer(method: Method, v: &Value, hello_authid: &str, hello_pubkey: Option<[u8; 32]>) -> Result<auth::Principal, String> {
    let empty = Dict::new();
    let (role, d) = match v {
        Value::Str(role) => (role.clone(), &empty),
        Value::Dict(d) => match d.get_str("role") {
            Some(r) => (r.to_owned(), d),
            None => return Err("the answer has no 'role'".into()),
        },
        other => return Err(format!("the answer is neither a role nor a dictionary: {other:?}")),
    };
    if role.is_empty() {
        return Err("the answer's role is empty".into());
    }
    let authid = d.get_str("authid").unwrap_or(hello_authid).to_owned();
    let mut p = auth::Principal {
        authid: authid.as_str().into(),
        role: role.as_str().into(),
        ticket: None,
        cra: None,
        cryptosign: Vec::new(),
        scram: None,
        tls: false,
    };
    match method {
        Method::WampCra => {
            p.cra = Some(match (answer_str(d, "secret"), answer_str(d, "key")) {
                (Some(secret), None) => auth::CraKey::Plain(secret.as_bytes().to_vec()),
                (None, Some(key)) => auth::CraKey::Salted {
                    salt: answer_str(d, "salt").ok_or("a salted key needs 'salt'")?.to_owned(),
                    iterations: answer_u32(d, "iterations").ok_or("a salted key needs 'iterations'")?,
                    keylen: answer_u32(d, "keylen").ok_or("a salted key needs 'keylen'")?,
                    key: key.as_bytes().to_vec(),
                },
                _ => return Err("WAMP-CRA needs 'secret' or a salted 'key'".into()),
            });
        }
        Method::Cryptosign => {
            let mut keys: Vec<String> = d.get_str("pubkey").map(str::to_owned).into_iter().collect();
            if let Some(Value::List(l)) = d.get("pubkeys") {
                keys.extend(l.iter().filter_map(|k| match k {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                }));
            }
            for k in &keys {
                let pk = hex::decode(k).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
                p.cryptosign
                    .push(pk.ok_or_else(|| format!("'{k}' is not a 32-byte public key in hex"))?);
            }
            if keys.is_empty() {
                // the authenticator must name the keys: the one HELLO gave
                // proves nothing by itself
                let _ = hello_pubkey;
                return Err("cryptosign needs 'pubkey' or 'pubkeys' in the answer".into());
            }
        }
        Method::Scram | Method::ScramDraft => {
            let kdf = answer_str(d, "kdf").and_then(auth::Kdf::parse).ok_or("SCRAM needs 'kdf'")?;
            let salt = answer_str(d, "salt")
                .filter(|s| auth::unb64(s).is_some())
                .ok_or("SCRAM needs a base64 'salt'")?;
            p.scram = Some(auth::ScramRecord {
                kdf,
                salt: salt.to_owned(),
                iterations: answer_u32(d, "iterations").ok_or("SCRAM needs 'iterations'")?,
                memory: answer_u32(d, "memory"),
                stored_key: b64_key(d, "stored_key")?,
                server_key: b64_key(d, "server_key")?,
            });
        }
        Method::Ticket | Method::Anonymous | Method::Tls => {}
    }
    Ok(p)
}

impl Router {
    /// Asks the realm's authenticator about the login on `conn` (with the
    /// ticket AUTHENTICATE carried, for WAMP-Ticket).
    fn ask_authenticator(&mut self, conn: ConnId, realm: RealmIdx, sid: Id, method: Method, details: Dict, ticket: Option<String>) {
        let Some(d) = self.realms[realm as usize].authenticator.clone() else {
            return;
        };
        let Some(c) = self.conns.get(&conn) else { return };
        let mut transport = c.transport.details();
        if c.transport.peer.is_none() {
            transport.insert("peer", Value::Null);
        }
        let authid = details.get_str("authid").map(str::to_owned);
        let mut info = Dict::new()
            .with("authmethod", method.as_str().into())
            .with("authextra", Value::Dict(authextra(&details).cloned().unwrap_or_default()))
            .with("session", Value::UInt(sid))
            .with("transport", Value::Dict(transport));
        if let Some(t) = &ticket {
            info = info.with("ticket", Value::Str(t.clone()));
        }
        let args = [
            Value::Str(self.realms[realm as usize].name.to_string()),
            authid.clone().map_or(Value::Null, Value::Str),
            Value::Dict(info),
        ];
        if let Err(e) = self.router_call(
            d.realm,
            &d.procedure,
            &args,
            d.timeout,
            super::calls::Purpose::Authenticate { conn },
        ) {
            tracing::warn!(conn, realm = %self.realms[realm as usize].name, error = %e, "login failed: the realm's authenticator is not available");
            ShardStats::inc(&self.stats.auth_failures);
            return self.abort(conn, AUTHENTICATION_FAILED, "the realm's authenticator is not available");
        }
        let now = self.clock.now();
        let timer = self.timers.start(
            now,
            Duration::from_millis(self.limits.handshake_timeout_ms),
            super::timers::Due::AuthTimeout { conn },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Verifying;
            c.auth = Some(Box::new(PendingAuth {
                realm,
                sid,
                method,
                authid: authid.unwrap_or_default(),
                role: "".into(),
                details,
                state: AuthState::Authenticator {
                    method,
                    ticket: ticket.is_some(),
                },
                timer,
                dynamic: true,
            }));
        }
    }

    /// The authenticator's answer for the login on `conn`.
    pub(super) fn authenticator_answered(&mut self, conn: ConnId, answer: Result<Value, String>) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.phase != Phase::Verifying {
            return;
        }
        let Some(mut pending) = c.auth.take() else { return };
        let AuthState::Authenticator { method, ticket } = pending.state else {
            c.auth = Some(pending);
            return;
        };
        let hello_pubkey = authextra(&pending.details)
            .and_then(|e| e.get_str("pubkey"))
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        let principal = answer.and_then(|v| read_answer(method, &v, &pending.authid, hello_pubkey));
        let principal = match principal {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(conn, authid = %pending.authid, method = method.as_str(), error = %e, "login failed: the authenticator refused it or failed");
                pending.state = AuthState::Verifying(Dict::new());
                return self.finish(conn, pending, false, Dict::new());
            }
        };
        if ticket {
            pending.authid = principal.authid.to_string();
            pending.role = principal.role.clone();
            return self.finish(conn, pending, true, Dict::new());
        }
        self.timers.cancel(pending.timer);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Idle;
        }
        let PendingAuth { realm, sid, details, .. } = *pending;
        self.send_challenge(conn, realm, sid, method, details, Some(Some(Arc::new(principal))));
    }
}
