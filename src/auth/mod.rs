//! Authentication: each realm's principals and the methods they may use, the
//! checks of every WAMP authentication method (pure functions: the router
//! core decides when to run them, and runs the costly ones off its shard, see
//! [`pool`]), and the derivation of the stored secrets for the
//! `switchyard secret` command.
//!
//! Methods: anonymous, WAMP-Ticket (the config keeps a PHC password hash),
//! WAMP-CRA (plain or salted secret), WAMP-Cryptosign (Ed25519 public keys,
//! optional TLS channel binding), WAMP-SCRAM (stored and server keys, argon2id
//! or PBKDF2) and TLS client certificates.

pub mod authz;
pub mod pool;

use std::sync::Arc;

use ahash::AHashMap;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub use authz::{Action, Decision, Roles};

use crate::config::{invalid, ConfigError, RealmConfig};

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `msg` under `key` (every method's MAC).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64_NOPAD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// An authentication method, as HELLO.Details.authmethods names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Anonymous,
    Ticket,
    WampCra,
    Cryptosign,
    /// WAMP-SCRAM as the spec has it (`wamp-scram`).
    Scram,
    /// The draft of WAMP-SCRAM autobahn-python implements (`scram`): the same
    /// exchange, with the draft's AuthMessage and WELCOME attribute.
    ScramDraft,
    /// A TLS client certificate.
    Tls,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "anonymous" => Method::Anonymous,
            "ticket" => Method::Ticket,
            "wampcra" => Method::WampCra,
            "cryptosign" => Method::Cryptosign,
            "wamp-scram" => Method::Scram,
            "scram" => Method::ScramDraft,
            "tls" => Method::Tls,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Anonymous => "anonymous",
            Method::Ticket => "ticket",
            Method::WampCra => "wampcra",
            Method::Cryptosign => "cryptosign",
            Method::Scram => "wamp-scram",
            Method::ScramDraft => "scram",
            Method::Tls => "tls",
        }
    }
}

/// The WAMP-CRA key of a principal: the HMAC key is the secret itself, or
/// for a salted secret the base64 text of its PBKDF2 key (as clients derive
/// it).
#[derive(Debug, Clone)]
pub enum CraKey {
    Plain(Vec<u8>),
    Salted {
        salt: String,
        iterations: u32,
        keylen: u32,
        key: Vec<u8>,
    },
}

/// A key derivation function of WAMP-SCRAM, as configured and announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// `argon2id13` (the spec's name): the salted password is the raw hash.
    Argon2id,
    /// `argon2id-13` (autobahn's and Crossbar's name): the salted password is
    /// the hash's unpadded base64 text, as autobahn derives it.
    Argon2idText,
    /// `pbkdf2` with HMAC-SHA256.
    Pbkdf2,
}

impl Kdf {
    pub fn parse(s: &str) -> Option<Kdf> {
        Some(match s {
            "argon2id13" => Kdf::Argon2id,
            "argon2id-13" => Kdf::Argon2idText,
            "pbkdf2" => Kdf::Pbkdf2,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kdf::Argon2id => "argon2id13",
            Kdf::Argon2idText => "argon2id-13",
            Kdf::Pbkdf2 => "pbkdf2",
        }
    }
}

/// A principal's WAMP-SCRAM record.
#[derive(Debug, Clone)]
pub struct ScramRecord {
    pub kdf: Kdf,
    /// base64, sent as is.
    pub salt: String,
    pub iterations: u32,
    pub memory: Option<u32>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

/// One authid of a realm and its credentials.
#[derive(Debug, Clone)]
pub struct Principal {
    pub authid: Arc<str>,
    pub role: Arc<str>,
    /// WAMP-Ticket: a PHC string.
    pub ticket: Option<String>,
    pub cra: Option<CraKey>,
    pub cryptosign: Vec<[u8; 32]>,
    pub scram: Option<ScramRecord>,
    pub tls: bool,
}

/// A realm's authentication settings, compiled from its config.
#[derive(Debug, Clone, Default)]
pub struct RealmAuth {
    /// The role of anonymous sessions; `None`: anonymous is off.
    pub anonymous: Option<Arc<str>>,
    pub principals: AHashMap<String, Arc<Principal>>,
    /// Cryptosign public keys to the principal that holds them.
    pub by_pubkey: AHashMap<[u8; 32], Arc<Principal>>,
    /// Per process: what mock challenges for unknown authids derive from, so
    /// that they look the same on every try (no authid oracle).
    pub mock_key: [u8; 32],
}

fn b64_32(key: &str, value: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = B64.decode(value).map_err(|_| invalid(key, "is not base64"))?;
    bytes.try_into().map_err(|_| invalid(key, "must be 32 bytes (base64)"))
}

impl RealmAuth {
    /// Checks and compiles `realm[i]`'s principals; errors name the key.
    pub fn compile(r: &RealmConfig, i: usize) -> Result<RealmAuth, ConfigError> {
        let mut out = RealmAuth {
            anonymous: r.anonymous.then(|| r.anonymous_role.as_str().into()),
            mock_key: process_mock_key(),
            ..RealmAuth::default()
        };
        for (j, p) in r.principals.iter().enumerate() {
            let key = |k: &str| format!("realm[{i}].principal[{j}].{k}");
            if p.authid.is_empty() {
                return Err(invalid(key("authid"), "must not be empty"));
            }
            if p.role.is_empty() {
                return Err(invalid(key("role"), "must not be empty"));
            }
            if out.principals.contains_key(&p.authid) {
                return Err(invalid(key("authid"), format!("'{}' is defined twice", p.authid)));
            }
            if let Some(t) = &p.ticket {
                let parsed = password_hash::PasswordHash::new(t).map_err(|e| {
                    invalid(
                        key("ticket"),
                        format!("not a PHC password hash ({e}); use `switchyard secret ticket`"),
                    )
                })?;
                if !matches!(parsed.algorithm.as_str(), "argon2id" | "argon2i" | "argon2d" | "pbkdf2-sha256") {
                    return Err(invalid(
                        key("ticket"),
                        format!("unsupported hash '{}' (argon2id or pbkdf2-sha256)", parsed.algorithm),
                    ));
                }
            }
            if p.wampcra_secret.is_some() && p.wampcra.is_some() {
                return Err(invalid(key("wampcra"), "give wampcra_secret or wampcra, not both"));
            }
            let cra = match (&p.wampcra_secret, &p.wampcra) {
                (Some(s), _) => Some(CraKey::Plain(s.as_bytes().to_vec())),
                (None, Some(c)) => {
                    if c.iterations == 0 || c.keylen == 0 || c.keylen > 1024 {
                        return Err(invalid(
                            key("wampcra"),
                            "iterations and keylen must be positive (keylen at most 1024)",
                        ));
                    }
                    Some(CraKey::Salted {
                        salt: c.salt.clone(),
                        iterations: c.iterations,
                        keylen: c.keylen,
                        key: c.key.as_bytes().to_vec(),
                    })
                }
                (None, None) => None,
            };
            let mut keys = Vec::new();
            for (k, hexkey) in p.cryptosign_keys.iter().enumerate() {
                let bytes = hex::decode(hexkey.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
                let Some(pk) = bytes else {
                    return Err(invalid(
                        key(&format!("cryptosign_keys[{k}]")),
                        "must be a 32-byte Ed25519 public key in hex",
                    ));
                };
                if ed25519_dalek::VerifyingKey::from_bytes(&pk).is_err() {
                    return Err(invalid(key(&format!("cryptosign_keys[{k}]")), "is not a valid Ed25519 public key"));
                }
                if out.by_pubkey.contains_key(&pk) || keys.contains(&pk) {
                    return Err(invalid(key(&format!("cryptosign_keys[{k}]")), "this key is listed twice"));
                }
                keys.push(pk);
            }
            let scram = match &p.scram {
                None => None,
                Some(s) => {
                    let Some(kdf) = Kdf::parse(&s.kdf) else {
                        return Err(invalid(
                            key("scram.kdf"),
                            format!("'{}' is not argon2id13, argon2id-13 or pbkdf2", s.kdf),
                        ));
                    };
                    if B64.decode(&s.salt).is_err() {
                        return Err(invalid(key("scram.salt"), "is not base64"));
                    }
                    if s.iterations == 0 {
                        return Err(invalid(key("scram.iterations"), "must be positive"));
                    }
                    if kdf != Kdf::Pbkdf2 && s.memory.unwrap_or(0) < 8 {
                        return Err(invalid(key("scram.memory"), "argon2 needs memory (KiB, at least 8)"));
                    }
                    Some(ScramRecord {
                        kdf,
                        salt: s.salt.clone(),
                        iterations: s.iterations,
                        memory: s.memory,
                        stored_key: b64_32(&key("scram.stored_key"), &s.stored_key)?,
                        server_key: b64_32(&key("scram.server_key"), &s.server_key)?,
                    })
                }
            };
            let principal = Arc::new(Principal {
                authid: p.authid.as_str().into(),
                role: p.role.as_str().into(),
                ticket: p.ticket.clone(),
                cra,
                cryptosign: keys.clone(),
                scram,
                tls: p.tls,
            });
            for k in keys {
                out.by_pubkey.insert(k, principal.clone());
            }
            out.principals.insert(p.authid.clone(), principal);
        }
        Ok(out)
    }

    /// Whether the realm offers `m` at all.
    pub fn offers(&self, m: Method) -> bool {
        let any = |f: &dyn Fn(&Principal) -> bool| self.principals.values().any(|p| f(p));
        match m {
            Method::Anonymous => self.anonymous.is_some(),
            Method::Ticket => any(&|p| p.ticket.is_some()),
            Method::WampCra => any(&|p| p.cra.is_some()),
            Method::Cryptosign => !self.by_pubkey.is_empty(),
            Method::Scram | Method::ScramDraft => any(&|p| p.scram.is_some()),
            Method::Tls => any(&|p| p.tls),
        }
    }

    /// A value derived from `authid` under the process's mock key (the
    /// same on every try and every shard).
    fn mock_bytes(&self, authid: &str) -> [u8; 32] {
        hmac_sha256(&self.mock_key, authid.as_bytes())
    }

    /// The principal whose record mock challenges copy the shape of: the
    /// first (by authid) that has `f`.
    fn model<T>(&self, f: impl Fn(&Principal) -> Option<T>) -> Option<(Arc<str>, T)> {
        let mut ps: Vec<&Arc<Principal>> = self.principals.values().collect();
        ps.sort_by(|a, b| a.authid.cmp(&b.authid));
        ps.into_iter().find_map(|p| f(p).map(|t| (p.role.clone(), t)))
    }

    /// A mock SCRAM record for an unknown authid: the KDF and cost of the
    /// realm's first SCRAM principal, a salt derived from the authid, keys
    /// nobody has; and the role a known one would be named with.
    pub fn mock_scram(&self, authid: &str, kdf_hint: Method) -> (Arc<str>, ScramRecord) {
        let d = self.mock_bytes(authid);
        let (role, (kdf, iterations, memory)) = self
            .model(|p| p.scram.as_ref().map(|s| (s.kdf, s.iterations, s.memory)))
            .unwrap_or((
                "user".into(),
                (
                    if kdf_hint == Method::ScramDraft {
                        Kdf::Argon2idText
                    } else {
                        Kdf::Argon2id
                    },
                    3,
                    Some(65536),
                ),
            ));
        let rec = ScramRecord {
            kdf,
            salt: B64.encode(&d[..16]),
            iterations,
            memory,
            stored_key: rand::random(),
            server_key: rand::random(),
        };
        (role, rec)
    }

    /// A mock WAMP-CRA key for an unknown authid, shaped like the realm's
    /// first WAMP-CRA principal's (salted or not), and that principal's role.
    pub fn mock_cra(&self, authid: &str) -> (Arc<str>, CraKey) {
        let d = self.mock_bytes(authid);
        let key = rand::random::<[u8; 32]>().to_vec();
        match self.model(|p| p.cra.clone()) {
            Some((role, CraKey::Salted { iterations, keylen, .. })) => (
                role,
                CraKey::Salted {
                    salt: B64.encode(&d[..16]),
                    iterations,
                    keylen,
                    key,
                },
            ),
            Some((role, CraKey::Plain(_))) => (role, CraKey::Plain(key)),
            None => ("user".into(), CraKey::Plain(key)),
        }
    }
}

/// One random key per process: mock challenges look alike on every shard.
fn process_mock_key() -> [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    *KEY.get_or_init(rand::random)
}

/// Constant-time equality.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Checks a ticket against a PHC hash (argon2 or pbkdf2-sha256). Costly by
/// design: run it off the shard.
pub fn verify_ticket(phc: &str, ticket: &str) -> bool {
    use password_hash::PasswordVerifier;
    let Ok(hash) = password_hash::PasswordHash::new(phc) else {
        return false;
    };
    match hash.algorithm.as_str() {
        "pbkdf2-sha256" => pbkdf2::Pbkdf2.verify_password(ticket.as_bytes(), &hash).is_ok(),
        _ => argon2::Argon2::default().verify_password(ticket.as_bytes(), &hash).is_ok(),
    }
}

/// The WAMP-CRA signature of `challenge` with `key`: base64 of its
/// HMAC-SHA256.
pub fn cra_signature(key: &[u8], challenge: &str) -> String {
    B64.encode(hmac_sha256(key, challenge.as_bytes()))
}

/// Checks a WAMP-CRA signature (constant time).
pub fn verify_cra(key: &[u8], challenge: &str, signature: &str) -> bool {
    let Ok(sig) = B64.decode(signature.trim()) else { return false };
    ct_eq(&hmac_sha256(key, challenge.as_bytes()), &sig)
}

/// Checks a WAMP-Cryptosign signature: `signature` is hex of the Ed25519
/// signature (64 bytes), optionally followed by the message signed (32
/// bytes), over `challenge` XOR `channel_id` where a channel binding is in
/// use.
pub fn verify_cryptosign(pubkey: &[u8; 32], challenge: &[u8; 32], channel_id: Option<&[u8; 32]>, signature: &str) -> bool {
    let Ok(bytes) = hex::decode(signature.trim()) else { return false };
    let mut message = *challenge;
    if let Some(cb) = channel_id {
        for (m, c) in message.iter_mut().zip(cb) {
            *m ^= c;
        }
    }
    let sig: [u8; 64] = match bytes.len() {
        64 => bytes[..64].try_into().unwrap_or([0; 64]),
        96 if bytes[64..] == message => bytes[..64].try_into().unwrap_or([0; 64]),
        _ => return false,
    };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(pubkey) else {
        return false;
    };
    key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok()
}

/// What WAMP-SCRAM's AuthMessage is built from.
#[derive(Debug, Clone)]
pub struct ScramExchange {
    pub draft: bool,
    pub authid: String,
    pub client_nonce: String,
    /// Client nonce + server nonce, as CHALLENGE sent it.
    pub nonce: String,
    pub salt: String,
    pub iterations: u32,
}

impl ScramExchange {
    /// RFC 5802's AuthMessage; `cbind` is the channel binding name and data
    /// AUTHENTICATE gave (spec form only).
    pub fn auth_message(&self, cbind: Option<(&str, &[u8])>) -> String {
        if self.draft {
            // autobahn-python's draft: no escaping, an empty channel binding
            return format!(
                "n={},r={},r={},s={},i={},c=,r={}",
                self.authid, self.client_nonce, self.nonce, self.salt, self.iterations, self.nonce
            );
        }
        let escaped = self.authid.replace('=', "=3D").replace(',', "=2C");
        let mut input = match cbind {
            None => b"n,,".to_vec(),
            Some((name, _)) => format!("p={name},,").into_bytes(),
        };
        if let Some((_, data)) = cbind {
            input.extend_from_slice(data);
        }
        format!(
            "n={escaped},r={},r={},s={},i={},c={},r={}",
            self.client_nonce,
            self.nonce,
            self.salt,
            self.iterations,
            B64.encode(input),
            self.nonce
        )
    }
}

/// Checks a SCRAM ClientProof; on success the ServerSignature.
pub fn verify_scram(rec: &ScramRecord, auth_message: &str, proof_b64: &str) -> Option<[u8; 32]> {
    let proof = B64.decode(proof_b64.trim()).ok()?;
    if proof.len() != 32 {
        return None;
    }
    let client_signature = hmac_sha256(&rec.stored_key, auth_message.as_bytes());
    let client_key: Vec<u8> = proof.iter().zip(client_signature.iter()).map(|(a, b)| a ^ b).collect();
    let recovered: [u8; 32] = Sha256::digest(&client_key).into();
    if !ct_eq(&recovered, &rec.stored_key) {
        return None;
    }
    Some(hmac_sha256(&rec.server_key, auth_message.as_bytes()))
}

/// base64, as the wire wants it.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// base64 decoding (`None` if it is not).
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text).ok()
}

// ---- deriving stored secrets (`switchyard secret`, tests) ----

/// A PHC argon2id hash of a ticket, with a random salt (argon2's defaults
/// unless `cost` gives memory in KiB and iterations).
pub fn hash_ticket(ticket: &str, cost: Option<(u32, u32)>) -> String {
    use password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let params = match cost {
        Some((m, t)) => argon2::Params::new(m, t, 1, None).unwrap_or_default(),
        None => argon2::Params::default(),
    };
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    a.hash_password(ticket.as_bytes(), &salt).map(|h| h.to_string()).unwrap_or_default()
}

/// The salted WAMP-CRA key of `secret`: base64 of PBKDF2-HMAC-SHA256
/// (salt taken as its text), as clients derive it.
pub fn derive_cra_key(secret: &str, salt: &str, iterations: u32, keylen: u32) -> String {
    let mut out = vec![0u8; keylen as usize];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret.as_bytes(), salt.as_bytes(), iterations, &mut out);
    B64.encode(out)
}

/// SCRAM's SaltedPassword under `kdf`.
pub fn scram_salted_password(password: &str, kdf: Kdf, salt_b64: &str, iterations: u32, memory: u32) -> Option<Vec<u8>> {
    let salt = B64.decode(salt_b64).ok()?;
    match kdf {
        Kdf::Pbkdf2 => {
            let mut out = vec![0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut out);
            Some(out)
        }
        Kdf::Argon2id | Kdf::Argon2idText => {
            let params = argon2::Params::new(memory, iterations, 1, Some(32)).ok()?;
            let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let mut out = vec![0u8; 32];
            a.hash_password_into(password.as_bytes(), &salt, &mut out).ok()?;
            if kdf == Kdf::Argon2idText {
                return Some(B64_NOPAD.encode(&out).into_bytes());
            }
            Some(out)
        }
    }
}

/// SCRAM's ClientKey, StoredKey and ServerKey of a salted password.
pub fn scram_keys(salted: &[u8]) -> ([u8; 32], [u8; 32], [u8; 32]) {
    let client_key = hmac_sha256(salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    (client_key, stored_key, hmac_sha256(salted, b"Server Key"))
}

/// A client's SCRAM proof (tests and the load generator act as clients).
pub fn scram_client_proof(salted: &[u8], auth_message: &str) -> String {
    let (client_key, stored_key, _) = scram_keys(salted);
    let sig = hmac_sha256(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(sig.iter()).map(|(a, b)| a ^ b).collect();
    B64.encode(proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cryptosign_spec_vectors_verify() {
        // from the spec's test vectors (no channel binding)
        let sk = hex::decode("4d57d97a68f555696620a6d849c0ce582568518d729eb753dc7c732de2804510").unwrap();
        let sk = ed25519_dalek::SigningKey::from_bytes(&sk.try_into().unwrap());
        let pk = sk.verifying_key().to_bytes();
        let challenge: [u8; 32] = [0xff; 32];
        let sig = "b32675b221f08593213737bef8240e7c15228b07028e19595294678c90d11c0cae80a357331bfc5cc9fb71081464e6e75013517c2cf067ad566a6b7b728e5d03ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
        assert!(verify_cryptosign(&pk, &challenge, None, sig));
        assert!(verify_cryptosign(&pk, &challenge, None, &sig[..128]));
        let mut other = challenge;
        other[0] = 0;
        assert!(!verify_cryptosign(&pk, &other, None, sig));
        assert!(!verify_cryptosign(&pk, &challenge, None, "zz"));
    }

    #[test]
    fn ticket_hashes_verify_and_refuse() {
        let h = hash_ticket("s3cret", Some((64, 1)));
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_ticket(&h, "s3cret"));
        assert!(!verify_ticket(&h, "s3cret!"));
        assert!(!verify_ticket("garbage", "s3cret"));
    }

    #[test]
    fn cra_matches_autobahns_derivation() {
        // autobahn: derive_key("secret", "salt123", 1000, 32)
        let key = derive_cra_key("secret", "salt123", 1000, 32);
        let sig = cra_signature(key.as_bytes(), "{\"nonce\":\"x\"}");
        assert!(verify_cra(key.as_bytes(), "{\"nonce\":\"x\"}", &sig));
        assert!(!verify_cra(b"other", "{\"nonce\":\"x\"}", &sig));
    }

    #[test]
    fn scram_proof_round_trip_and_rfc7677_vector() {
        // RFC 7677's SCRAM-SHA-256 example: user "user", password "pencil"
        let salt = "W22ZaJ0SNY7soEsUEjb6gQ==";
        let salted = scram_salted_password("pencil", Kdf::Pbkdf2, salt, 4096, 0).unwrap();
        let ex = ScramExchange {
            draft: false,
            authid: "user".into(),
            client_nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            salt: salt.into(),
            iterations: 4096,
        };
        let am = ex.auth_message(None);
        assert_eq!(scram_client_proof(&salted, &am), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let (_, stored_key, server_key) = scram_keys(&salted);
        let rec = ScramRecord {
            kdf: Kdf::Pbkdf2,
            salt: salt.into(),
            iterations: 4096,
            memory: None,
            stored_key,
            server_key,
        };
        let sig = verify_scram(&rec, &am, "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").unwrap();
        assert_eq!(b64(&sig), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert!(verify_scram(&rec, &am, "AAAAZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").is_none());
    }
}
