//! Authentication and authorization over real sockets, on 1 shard and with
//! the sessions spread over 2: every WAMP method with right and wrong
//! credentials, unknown authids, replayed and foreign challenges, methods not
//! offered, the timeout and the backoff; roles with URI rules.

use ed25519_dalek::{Signer, SigningKey};
use switchyard::auth;
use switchyard::wamp::Value;

use crate::common::*;

const CHALLENGE: u64 = 4;

/// The signing key of the cryptosign principal (a fixed test seed).
fn signer() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// realm "secure": no anonymous, one principal per method, a restricted
/// role `user` (call and subscribe under com.app.) and an unrestricted
/// `admin`.
fn secure_realm() -> String {
    let ticket = auth::hash_ticket("t1", Some((64, 1)));
    let admin = auth::hash_ticket("a1", Some((64, 1)));
    let salted = auth::derive_cra_key("pw", "salt1", 100, 32);
    let pubkey = hex::encode(signer().verifying_key().to_bytes());
    let salt = auth::b64(b"scram-salt-16byt");
    let salted_pw = auth::scram_salted_password("pencil", auth::Kdf::Pbkdf2, &salt, 100, 0).expect("pbkdf2");
    let (_, stored, server) = auth::scram_keys(&salted_pw);
    format!(
        r#"
[[realm]]
name = "secure"
anonymous = false
[[realm.principal]]
authid = "tick"
role = "user"
ticket = "{ticket}"
[[realm.principal]]
authid = "boss"
role = "admin"
ticket = "{admin}"
[[realm.principal]]
authid = "cra"
role = "user"
wampcra_secret = "s3cret"
[[realm.principal]]
authid = "salty"
role = "user"
wampcra = {{ salt = "salt1", iterations = 100, keylen = 32, key = "{salted}" }}
[[realm.principal]]
authid = "signer"
role = "user"
cryptosign_keys = ["{pubkey}"]
[[realm.principal]]
authid = "scrammer"
role = "user"
scram = {{ kdf = "pbkdf2", salt = "{salt}", iterations = 100, stored_key = "{}", server_key = "{}" }}
[[realm.role]]
name = "user"
[[realm.role.permission]]
uri = "com.app."
match = "prefix"
allow = ["call", "subscribe"]
[[realm.role.permission]]
uri = "wamp.session.add_testament"
allow = ["call"]
[[realm.role]]
name = "admin"
[[realm.role.permission]]
uri = ""
match = "prefix"
allow = ["call", "register", "publish", "subscribe"]
"#,
        auth::b64(&stored),
        auth::b64(&server)
    )
}

fn start(shards: usize, limits: &str) -> Router {
    Router::start_with(shards, &secure_realm(), limits, &[])
}

/// A connection on shard `i % shards` that has no session yet.
fn conn_on(r: &Router, i: usize) -> Client {
    let mut c = r.join_spread(i);
    c.send_json(r#"[6, {}, "wamp.close.close_realm"]"#);
    c.expect(GOODBYE);
    c
}

fn hello(c: &mut Client, details: &str) -> Value {
    c.send_json(&format!(r#"[1, "secure", {details}]"#));
    c.recv_msg()
}

fn welcomed(c: &mut Client, m: &Value, authid: &str, role: &str, method: &str) {
    assert_eq!(m.code(), WELCOME, "{m:?}");
    c.session = m.at(1).u();
    let d = m.at(2);
    assert_eq!(d.key("authid").s(), authid, "{m:?}");
    assert_eq!(d.key("authrole").s(), role, "{m:?}");
    assert_eq!(d.key("authmethod").s(), method, "{m:?}");
    assert_eq!(d.key("authprovider").s(), "static", "{m:?}");
}

fn aborted(m: &Value, reason: &str) {
    assert_eq!(m.code(), ABORT, "{m:?}");
    assert_eq!(m.at(2).s(), reason, "{m:?}");
}

fn ticket_login(r: &Router, i: usize, authid: &str, ticket: &str) -> (Client, Value) {
    let mut c = conn_on(r, i);
    let ch = hello(
        &mut c,
        &format!(
            r#"{{"roles": {{"caller": {{}}, "callee": {{}}, "publisher": {{}}, "subscriber": {{}}}}, "authmethods": ["ticket"], "authid": "{authid}"}}"#
        ),
    );
    assert_eq!(ch.code(), CHALLENGE, "{ch:?}");
    assert_eq!(ch.at(1).s(), "ticket");
    c.send_json(&format!(r#"[5, "{ticket}", {{}}]"#));
    let m = c.recv_msg();
    (c, m)
}

fn cra_login(r: &Router, i: usize, authid: &str, secret: &str, derive: bool) -> Value {
    let mut c = conn_on(r, i);
    let ch = hello(
        &mut c,
        &format!(r#"{{"roles": {{"caller": {{}}}}, "authmethods": ["wampcra"], "authid": "{authid}"}}"#),
    );
    assert_eq!(ch.code(), CHALLENGE, "{ch:?}");
    let extra = ch.at(2);
    let challenge = extra.key("challenge").s().to_owned();
    // the challenge names the session the login will get
    let inner = parse_json(&challenge);
    assert_eq!(inner.key("authid").s(), authid);
    assert_eq!(inner.key("authmethod").s(), "wampcra");
    let key = if derive {
        let salt = extra.key("salt").s();
        let it = extra.key("iterations").u() as u32;
        let len = extra.key("keylen").u() as u32;
        auth::derive_cra_key(secret, salt, it, len)
    } else {
        secret.to_owned()
    };
    c.send_json(&format!(r#"[5, "{}", {{}}]"#, auth::cra_signature(key.as_bytes(), &challenge)));
    let m = c.recv_msg();
    if m.code() == WELCOME {
        assert_eq!(m.at(1).u(), inner.key("session").u(), "the session the challenge named");
    }
    m
}

fn every_method_logs_in_and_wrong_credentials_fail(shards: usize) {
    let r = start(shards, "auth_failures_before_backoff = 1000");
    // ticket
    let (mut c, m) = ticket_login(&r, 0, "tick", "t1");
    welcomed(&mut c, &m, "tick", "user", "ticket");
    let (_, m) = ticket_login(&r, 1, "tick", "t2");
    aborted(&m, "wamp.error.authentication_failed");
    // an unknown authid gets the same exchange, and fails at its end
    let (_, m) = ticket_login(&r, 0, "stranger", "t1");
    aborted(&m, "wamp.error.authentication_failed");
    // WAMP-CRA, plain and salted
    let m = cra_login(&r, 1, "cra", "s3cret", false);
    assert_eq!(m.code(), WELCOME, "{m:?}");
    aborted(&cra_login(&r, 0, "cra", "wrong", false), "wamp.error.authentication_failed");
    let m = cra_login(&r, 0, "salty", "pw", true);
    assert_eq!(m.code(), WELCOME, "{m:?}");
    aborted(&cra_login(&r, 1, "salty", "pw2", true), "wamp.error.authentication_failed");
    aborted(&cra_login(&r, 1, "nobody-here", "pw", false), "wamp.error.authentication_failed");
    // the methods the realm does not offer, and anonymous is off
    let mut c = conn_on(&r, 1);
    aborted(&hello(&mut c, r#"{"roles": {"caller": {}}}"#), "wamp.error.no_auth_method");
    let mut c = conn_on(&r, 0);
    aborted(
        &hello(
            &mut c,
            r#"{"roles": {"caller": {}}, "authmethods": ["anonymous", "kerberos"], "authid": "tick"}"#,
        ),
        "wamp.error.no_auth_method",
    );
    // the client's order decides among offered methods
    let mut c = conn_on(&r, 1);
    let ch = hello(
        &mut c,
        r#"{"roles": {"caller": {}}, "authmethods": ["kerberos", "wampcra", "ticket"], "authid": "cra"}"#,
    );
    assert_eq!(ch.at(1).s(), "wampcra", "{ch:?}");
    assert_eq!(r.metric_sum("auth_failures"), 5, "two tickets and three WAMP-CRA signatures failed");
}

fn cryptosign_checks_the_signature_of_its_own_challenge(shards: usize) {
    let r = start(shards, "auth_failures_before_backoff = 1000");
    let key = signer();
    let pubkey = hex::encode(key.verifying_key().to_bytes());
    let start_login = |i: usize, pubkey: &str| {
        let mut c = conn_on(&r, i);
        let ch = hello(
            &mut c,
            &format!(r#"{{"roles": {{"caller": {{}}}}, "authmethods": ["cryptosign"], "authextra": {{"pubkey": "{pubkey}"}}}}"#),
        );
        (c, ch)
    };
    let sign = |ch: &Value, key: &SigningKey| {
        let challenge = hex::decode(ch.at(2).key("challenge").s()).expect("hex challenge");
        assert_eq!(challenge.len(), 32);
        let sig = key.sign(&challenge);
        format!("{}{}", hex::encode(sig.to_bytes()), hex::encode(&challenge))
    };
    // the right key
    let (mut c, ch) = start_login(0, &pubkey);
    assert_eq!(ch.code(), CHALLENGE, "{ch:?}");
    assert_eq!(ch.at(1).s(), "cryptosign");
    assert!(matches!(ch.at(2).key("channel_binding"), Value::Null));
    c.send_json(&format!(r#"[5, "{}", {{}}]"#, sign(&ch, &key)));
    let m = c.recv_msg();
    welcomed(&mut c, &m, "signer", "user", "cryptosign");
    // a replayed signature: made for another connection's challenge
    let (mut old, first) = start_login(1, &pubkey);
    let replay = sign(&first, &key);
    old.send_json(r#"[3, {}, "wamp.close.goodbye_and_out"]"#);
    let (mut c, ch) = start_login(1, &pubkey);
    assert_ne!(
        ch.at(2).key("challenge").s(),
        first.at(2).key("challenge").s(),
        "challenges are fresh"
    );
    c.send_json(&format!(r#"[5, "{replay}", {{}}]"#));
    aborted(&c.recv_msg(), "wamp.error.authentication_failed");
    // the listed public key, signed with another private key
    let (mut c, ch) = start_login(0, &pubkey);
    c.send_json(&format!(r#"[5, "{}", {{}}]"#, sign(&ch, &SigningKey::from_bytes(&[9u8; 32]))));
    aborted(&c.recv_msg(), "wamp.error.authentication_failed");
    // a key nobody listed: refused at HELLO
    let other = hex::encode(SigningKey::from_bytes(&[9u8; 32]).verifying_key().to_bytes());
    let (_, m) = start_login(1, &other);
    aborted(&m, "wamp.error.authentication_failed");
    // garbage in AUTHENTICATE
    let (mut c, _) = start_login(0, &pubkey);
    c.send_json(r#"[5, "not hex", {}]"#);
    aborted(&c.recv_msg(), "wamp.error.authentication_failed");
    // a channel binding over plain TCP cannot be had
    let mut c = conn_on(&r, 1);
    let m = hello(
        &mut c,
        &format!(
            r#"{{"roles": {{"caller": {{}}}}, "authmethods": ["cryptosign"], "authextra": {{"pubkey": "{pubkey}", "channel_binding": "tls-unique"}}}}"#
        ),
    );
    aborted(&m, "wamp.error.authentication_failed");
}

fn scram_login(r: &Router, i: usize, authid: &str, password: &str, tamper_nonce: bool) -> (Client, Value, String) {
    let mut c = conn_on(r, i);
    let client_nonce = auth::b64(&[3u8; 16]);
    let ch = hello(
        &mut c,
        &format!(
            r#"{{"roles": {{"caller": {{}}}}, "authmethods": ["wamp-scram"], "authid": "{authid}", "authextra": {{"nonce": "{client_nonce}"}}}}"#
        ),
    );
    assert_eq!(ch.code(), CHALLENGE, "{ch:?}");
    assert_eq!(ch.at(1).s(), "wamp-scram");
    let e = ch.at(2);
    let nonce = e.key("nonce").s().to_owned();
    assert!(nonce.starts_with(&client_nonce) && nonce.len() > client_nonce.len(), "{ch:?}");
    let kdf = auth::Kdf::parse(e.key("kdf").s()).expect("a known KDF");
    let salt = e.key("salt").s().to_owned();
    let iterations = e.key("iterations").u() as u32;
    let memory = e.get("memory").map_or(0, |m| m.u() as u32);
    let ex = auth::ScramExchange {
        draft: false,
        authid: authid.into(),
        client_nonce: client_nonce.clone(),
        nonce: nonce.clone(),
        salt: salt.clone(),
        iterations,
    };
    let am = ex.auth_message(None);
    let salted = auth::scram_salted_password(password, kdf, &salt, iterations, memory).expect("KDF");
    let sent_nonce = if tamper_nonce { format!("{client_nonce}AAAA") } else { nonce };
    c.send_json(&format!(
        r#"[5, "{}", {{"nonce": "{sent_nonce}", "channel_binding": null}}]"#,
        auth::scram_client_proof(&salted, &am)
    ));
    let m = c.recv_msg();
    (c, m, am)
}

fn scram_proves_both_sides(shards: usize) {
    let r = start(shards, "auth_failures_before_backoff = 1000");
    let (mut c, m, am) = scram_login(&r, 0, "scrammer", "pencil", false);
    welcomed(&mut c, &m, "scrammer", "user", "wamp-scram");
    // the router proves it knows the server key: the client checks the verifier
    let salt = auth::b64(b"scram-salt-16byt");
    let salted = auth::scram_salted_password("pencil", auth::Kdf::Pbkdf2, &salt, 100, 0).expect("pbkdf2");
    let (_, stored, server) = auth::scram_keys(&salted);
    let rec = auth::ScramRecord {
        kdf: auth::Kdf::Pbkdf2,
        salt,
        iterations: 100,
        memory: None,
        stored_key: stored,
        server_key: server,
    };
    let proof = auth::scram_client_proof(&salted, &am);
    let want = auth::verify_scram(&rec, &am, &proof).expect("our own proof holds");
    assert_eq!(m.at(2).key("authextra").key("verifier").s(), auth::b64(&want));
    let (_, m, _) = scram_login(&r, 1, "scrammer", "pencil2", false);
    aborted(&m, "wamp.error.authentication_failed");
    let (_, m, _) = scram_login(&r, 1, "scrammer", "pencil", true);
    aborted(&m, "wamp.error.authentication_failed");
    // an unknown authid gets a mock challenge, the same salt each time
    let salt_of = |i: usize| {
        let mut c = conn_on(&r, i);
        let ch = hello(
            &mut c,
            r#"{"roles": {"caller": {}}, "authmethods": ["wamp-scram"], "authid": "ghost", "authextra": {"nonce": "AAAA"}}"#,
        );
        assert_eq!(ch.code(), CHALLENGE, "{ch:?}");
        ch.at(2).key("salt").s().to_owned()
    };
    assert_eq!(salt_of(0), salt_of(1));
    let (_, m, _) = scram_login(&r, 0, "ghost", "pencil", false);
    aborted(&m, "wamp.error.authentication_failed");
}

/// A role that may only call and subscribe under `com.app.` gets
/// `wamp.error.not_authorized` for everything else, the meta API included;
/// an unacknowledged PUBLISH is dropped and counted.
fn roles_decide_what_a_session_may_do(shards: usize) {
    let r = start(shards, "auth_failures_before_backoff = 1000");
    let (mut boss, m) = ticket_login(&r, 0, "boss", "a1");
    welcomed(&mut boss, &m, "boss", "admin", "ticket");
    let (mut user, m) = ticket_login(&r, 1, "tick", "t1");
    welcomed(&mut user, &m, "tick", "user", "ticket");
    boss.register("com.app.add");
    boss.register("com.other.add");
    // allowed: call and subscribe under com.app.
    user.send_json(r#"[48, 1, {}, "com.app.add", [1, 2]]"#);
    let inv = boss.expect(INVOCATION);
    boss.send_json(&format!(r#"[70, {}, {{}}, [3]]"#, inv.at(1).u()));
    assert_eq!(user.expect(RESULT).at(3).at(0).u(), 3);
    let sub = user.subscribe("com.app.news", "{}");
    // denied: calls elsewhere, registering, publishing, the meta API
    user.send_json(r#"[48, 2, {}, "com.other.add", [1, 2]]"#);
    let e = user.expect_error(CALL, 2, "wamp.error.not_authorized");
    assert!(e.at(5).at(0).s().contains("may not call"), "{e:?}");
    user.send_json(r#"[64, 3, {}, "com.app.mine"]"#);
    user.expect_error(REGISTER, 3, "wamp.error.not_authorized");
    user.send_json(r#"[16, 4, {"acknowledge": true}, "com.app.news", ["forged"]]"#);
    user.expect_error(PUBLISH, 4, "wamp.error.not_authorized");
    user.send_json(r#"[32, 5, {}, "com.other.news"]"#);
    user.expect_error(SUBSCRIBE, 5, "wamp.error.not_authorized");
    user.send_json(r#"[48, 6, {}, "wamp.session.count", []]"#);
    user.expect_error(CALL, 6, "wamp.error.not_authorized");
    // a pattern may not reach beyond what the role may subscribe to
    user.send_json(r#"[32, 13, {"match": "prefix"}, "com."]"#);
    user.expect_error(SUBSCRIBE, 13, "wamp.error.not_authorized");
    user.send_json(r#"[32, 14, {"match": "wildcard"}, "com..news"]"#);
    user.expect_error(SUBSCRIBE, 14, "wamp.error.not_authorized");
    user.send_json(r#"[32, 15, {"match": "prefix"}, "com.app.news."]"#);
    user.expect(SUBSCRIBED);
    // an unacknowledged PUBLISH is dropped: the boss's later event arrives first
    user.send_json(r#"[16, 7, {}, "com.app.news", ["dropped"]]"#);
    user.send_json(r#"[48, 8, {}, "com.app.add", [0, 0]]"#);
    let inv = boss.expect(INVOCATION);
    boss.send_json(&format!(r#"[70, {}, {{}}, [0]]"#, inv.at(1).u()));
    user.expect(RESULT);
    boss.send_json(r#"[16, 9, {"acknowledge": true}, "com.app.news", ["sentinel"]]"#);
    boss.expect(PUBLISHED);
    let ev = user.expect(EVENT);
    assert_eq!(ev.at(1).u(), sub);
    assert_eq!(ev.at(4).at(0).s(), "sentinel", "{ev:?}");
    assert!(r.metric_sum("publications_denied") >= 1);
    assert!(r.metric_sum("authorization_denied") >= 6);
    // a testament is a publication: the role must be allowed to publish it
    user.send_json(r#"[48, 11, {}, "wamp.session.add_testament", ["com.app.gone", ["bye"]]]"#);
    user.expect_error(CALL, 11, "wamp.error.not_authorized");
    boss.send_json(r#"[48, 12, {}, "wamp.session.add_testament", ["com.app.gone", ["bye"]]]"#);
    assert_eq!(boss.expect(RESULT).at(1).u(), 12);
    // the boss may use the meta API
    boss.send_json(r#"[48, 10, {}, "wamp.session.count", []]"#);
    assert_eq!(boss.expect(RESULT).at(3).at(0).u(), 2);
    assert!(
        r.metric_sum("authorization_cache_hits") >= 1,
        "the second com.app.add call was cached"
    );
}

/// Five failed logins from one address: that address is refused for a
/// while, without its credentials being checked; a login that takes too
/// long is aborted.
fn failures_back_off_and_logins_time_out(shards: usize) {
    let r = start(shards, "auth_failures_before_backoff = 2");
    // two failures on each shard (each shard keeps its own count)
    for i in 0..2 * shards {
        let (_, m) = ticket_login(&r, i, "tick", "wrong");
        aborted(&m, "wamp.error.authentication_failed");
    }
    // now even the right ticket is refused, at HELLO
    let mut refused = 0;
    for i in 0..shards {
        let mut c = conn_on(&r, i);
        let m = hello(&mut c, r#"{"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "tick"}"#);
        aborted(&m, "wamp.error.authentication_failed");
        assert!(m.at(1).key("message").s().contains("retry in"), "{m:?}");
        refused += 1;
    }
    assert_eq!(refused, shards, "every shard refuses the address");
    assert_eq!(r.metric_sum("auth_backoff_refused"), shards as i64);
    // anonymous sessions of realm1 are not affected
    let _ = r.join_spread(0);
    // no AUTHENTICATE: aborted after the handshake timeout (a fresh router:
    // this one refuses the address for a while)
    let r2 = start(shards, "handshake_timeout_ms = 300");
    let mut c = conn_on(&r2, shards - 1);
    let ch = hello(&mut c, r#"{"roles": {"caller": {}}, "authmethods": ["wampcra"], "authid": "cra"}"#);
    assert_eq!(ch.code(), CHALLENGE);
    aborted(&c.recv_msg(), "wamp.error.authentication_failed");
    // AUTHENTICATE without a CHALLENGE is a protocol violation
    let mut c = conn_on(&r2, 0);
    c.send_json(r#"[5, "x", {}]"#);
    c.expect_abort("wamp.error.protocol_violation");
}

crate::on_1_and_2_shards!(
    every_method_logs_in_and_wrong_credentials_fail,
    cryptosign_checks_the_signature_of_its_own_challenge,
    scram_proves_both_sides,
    roles_decide_what_a_session_may_do,
    failures_back_off_and_logins_time_out,
);

/// realm1 (anonymous) holds the components; realm "dyn" logs in through an
/// authenticator on realm1 and authorizes through an authorizer there.
fn dynamic_realm(ttl_ms: u64) -> String {
    format!(
        r#"
[[realm]]
name = "realm1"
{}
[[realm]]
name = "dyn"
anonymous = true
anonymous_role = "guest"
[realm.authenticator]
procedure = "com.auth.authenticate"
realm = "realm1"
methods = ["ticket", "wampcra"]
timeout_ms = 5000
[realm.authorizer]
procedure = "com.auth.authorize"
realm = "realm1"
cache_ttl_ms = {ttl_ms}
"#,
        test_principals()
    )
}

/// The authenticator vouches for ticket and WAMP-CRA logins (WELCOME
/// `authprovider` "dynamic", the role it gives); its ERROR, or no
/// authenticator at all, fails the login.
fn dynamic_authenticator_vouches_for_logins(shards: usize) {
    let r = Router::start_with(shards, &dynamic_realm(60_000), "auth_failures_before_backoff = 1000", &[]);
    let mut component = r.join_spread(1);
    let reg = component.register("com.auth.authenticate");
    // ticket: the authenticator gets the ticket after AUTHENTICATE
    let mut c = conn_on(&r, 0);
    c.send_json(r#"[1, "dyn", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "joe"}]"#);
    assert_eq!(c.recv_msg().code(), CHALLENGE);
    c.send_json(r#"[5, "joe-ticket", {}]"#);
    let inv = component.expect(INVOCATION);
    assert_eq!(inv.at(2).u(), reg);
    let args = inv.at(4);
    assert_eq!(args.at(0).s(), "dyn");
    assert_eq!(args.at(1).s(), "joe");
    assert_eq!(args.at(2).key("authmethod").s(), "ticket");
    assert_eq!(args.at(2).key("ticket").s(), "joe-ticket");
    component.send_json(&format!(r#"[70, {}, {{}}, [{{"role": "worker"}}]]"#, inv.at(1).u()));
    let w = c.recv_msg();
    welcomed_dynamic(&mut c, &w, "joe", "worker");
    assert_eq!(w.at(2).key("authmethod").s(), "ticket");
    // a wrong ticket: the authenticator's ERROR fails the login
    let mut c = conn_on(&r, 1);
    c.send_json(r#"[1, "dyn", {"roles": {"caller": {}}, "authmethods": ["ticket"], "authid": "joe"}]"#);
    c.recv_msg();
    c.send_json(r#"[5, "guess", {}]"#);
    let inv = component.expect(INVOCATION);
    component.send_json(&format!(r#"[8, 68, {}, {{}}, "com.auth.wrong_ticket"]"#, inv.at(1).u()));
    aborted(&c.recv_msg(), "wamp.error.authentication_failed");
    // WAMP-CRA: the authenticator gives the secret before the challenge
    let mut c = conn_on(&r, 0);
    c.send_json(r#"[1, "dyn", {"roles": {"caller": {}}, "authmethods": ["wampcra"], "authid": "ann"}]"#);
    let inv = component.expect(INVOCATION);
    assert_eq!(inv.at(4).at(2).key("authmethod").s(), "wampcra");
    component.send_json(&format!(
        r#"[70, {}, {{}}, [{{"role": "worker", "secret": "ann-secret"}}]]"#,
        inv.at(1).u()
    ));
    let ch = c.recv_msg();
    assert_eq!(ch.code(), CHALLENGE, "{ch:?}");
    let challenge = ch.at(2).key("challenge").s().to_owned();
    c.send_json(&format!(r#"[5, "{}", {{}}]"#, auth::cra_signature(b"ann-secret", &challenge)));
    let w = c.recv_msg();
    welcomed_dynamic(&mut c, &w, "ann", "worker");
    // no authenticator registered: the login fails, with a log line
    component.send_json(&format!(r#"[66, 900, {reg}]"#));
    component.expect(UNREGISTERED);
    let mut c = conn_on(&r, 1);
    c.send_json(r#"[1, "dyn", {"roles": {"caller": {}}, "authmethods": ["wampcra"], "authid": "ann"}]"#);
    aborted(&c.recv_msg(), "wamp.error.authentication_failed");
    assert!(r.log().contains("authenticator is not available"), "{}", r.log());
}

fn welcomed_dynamic(c: &mut Client, m: &Value, authid: &str, role: &str) {
    assert_eq!(m.code(), WELCOME, "{m:?}");
    c.session = m.at(1).u();
    assert_eq!(m.at(2).key("authid").s(), authid, "{m:?}");
    assert_eq!(m.at(2).key("authrole").s(), role, "{m:?}");
    assert_eq!(m.at(2).key("authprovider").s(), "dynamic", "{m:?}");
}

/// The authorizer decides what the realm's roles do not; its answers are
/// kept per (role, URI, action) for `cache_ttl_ms` (counted hits), then
/// asked again; messages behind a pending answer keep their order.
fn dynamic_authorizer_decides_and_its_answers_are_cached(shards: usize) {
    let r = Router::start_with(shards, &dynamic_realm(400), "", &[]);
    let mut component = r.join_spread(1);
    component.register("com.auth.authorize");
    let mut guest = conn_on(&r, 0);
    guest.send_json(r#"[1, "dyn", {"roles": {"publisher": {}, "subscriber": {}}}]"#);
    assert_eq!(guest.recv_msg().code(), WELCOME);
    // SUBSCRIBE and a PUBLISH behind it: one question, then the other
    guest.send_json(r#"[32, 1, {}, "com.dyn.news"]"#);
    guest.send_json(r#"[16, 2, {"acknowledge": true, "exclude_me": false}, "com.dyn.secret", ["x"]]"#);
    let inv = component.expect(INVOCATION);
    let args = inv.at(4);
    assert_eq!(args.at(0).key("authrole").s(), "guest");
    assert_eq!(args.at(1).s(), "com.dyn.news");
    assert_eq!(args.at(2).s(), "subscribe");
    component.send_json(&format!(r#"[70, {}, {{}}, [true]]"#, inv.at(1).u()));
    let inv = component.expect(INVOCATION);
    assert_eq!(inv.at(4).at(1).s(), "com.dyn.secret");
    assert_eq!(inv.at(4).at(2).s(), "publish");
    component.send_json(&format!(r#"[70, {}, {{}}, [{{"allow": false}}]]"#, inv.at(1).u()));
    guest.expect(SUBSCRIBED);
    guest.expect_error(PUBLISH, 2, "wamp.error.not_authorized");
    let calls = r.metric_sum("authorizer_calls");
    assert_eq!(calls, 2);
    // the same questions again: answered from the cache
    guest.send_json(r#"[16, 3, {"acknowledge": true}, "com.dyn.secret", ["x"]]"#);
    guest.expect_error(PUBLISH, 3, "wamp.error.not_authorized");
    assert_eq!(r.metric_sum("authorizer_calls"), calls, "the cached answer was used");
    assert!(r.metric_sum("authorization_cache_hits") >= 1);
    // that answer holds for this session only: another guest is asked about
    let mut other = conn_on(&r, 1);
    other.send_json(r#"[1, "dyn", {"roles": {"publisher": {}}}]"#);
    assert_eq!(other.recv_msg().code(), WELCOME);
    other.send_json(r#"[16, 4, {"acknowledge": true}, "com.dyn.secret", ["x"]]"#);
    let inv = component.expect(INVOCATION);
    assert_eq!(inv.at(4).at(1).s(), "com.dyn.secret");
    // an answer may be kept for the whole role instead (cache "role")
    component.send_json(&format!(r#"[70, {}, {{}}, [{{"allow": true, "cache": "role"}}]]"#, inv.at(1).u()));
    other.expect(PUBLISHED);
    // after cache_ttl_ms it is asked again
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut req = 10;
    loop {
        req += 1;
        std::thread::sleep(std::time::Duration::from_millis(150));
        guest.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "com.dyn.secret", ["x"]]"#));
        // asked: the component gets it at once; cached: the guest's ERROR
        if component.readable_within(std::time::Duration::from_secs(2)) {
            let inv = component.expect(INVOCATION);
            assert_eq!(inv.at(4).at(1).s(), "com.dyn.secret");
            component.send_json(&format!(r#"[70, {}, {{}}, [true]]"#, inv.at(1).u()));
            guest.expect(PUBLISHED);
            break;
        }
        guest.expect_error(PUBLISH, req, "wamp.error.not_authorized");
        assert!(std::time::Instant::now() < deadline, "the authorizer was not asked again");
    }
    // a failing authorizer denies
    guest.send_json(r#"[64, 90, {}, "com.dyn.proc"]"#);
    let inv = component.expect(INVOCATION);
    component.send_json(&format!(r#"[8, 68, {}, {{}}, "com.auth.broken"]"#, inv.at(1).u()));
    guest.expect_error(REGISTER, 90, "wamp.error.not_authorized");
}

/// An authorizer may be asked about its own session's requests: its
/// YIELD does not wait behind them.
fn an_authorizer_authorizes_its_own_session(shards: usize) {
    let realm = r#"
[[realm]]
name = "self"
[[realm.role]]
name = "anonymous"
[[realm.role.permission]]
uri = "com.auth.authorize"
allow = ["register"]
[realm.authorizer]
procedure = "com.auth.authorize"
"#;
    let r = Router::start_with(shards, realm, "", &[]);
    let mut c = conn_on(&r, 0);
    c.send_json(r#"[1, "self", {"roles": {"callee": {}, "subscriber": {}}}]"#);
    c.session = c.expect(WELCOME).at(1).u();
    c.register("com.auth.authorize");
    c.send_json(r#"[32, 7, {}, "com.x.y"]"#);
    let inv = c.expect(INVOCATION);
    assert_eq!(inv.at(4).at(1).s(), "com.x.y");
    c.send_json(&format!(r#"[70, {}, {{}}, [true]]"#, inv.at(1).u()));
    let m = c.expect(SUBSCRIBED);
    assert_eq!(m.at(1).u(), 7);
}

mod dynamic_one_shard {
    #[test]
    fn an_authorizer_authorizes_its_own_session() {
        super::an_authorizer_authorizes_its_own_session(1)
    }
    #[test]
    fn dynamic_authenticator_vouches_for_logins() {
        super::dynamic_authenticator_vouches_for_logins(1)
    }
    #[test]
    fn dynamic_authorizer_decides_and_its_answers_are_cached() {
        super::dynamic_authorizer_decides_and_its_answers_are_cached(1)
    }
}

mod dynamic_two_shards {
    #[test]
    fn an_authorizer_authorizes_its_own_session() {
        super::an_authorizer_authorizes_its_own_session(2)
    }
    #[test]
    fn dynamic_authenticator_vouches_for_logins() {
        super::dynamic_authenticator_vouches_for_logins(2)
    }
    #[test]
    fn dynamic_authorizer_decides_and_its_answers_are_cached() {
        super::dynamic_authorizer_decides_and_its_answers_are_cached(2)
    }
}
