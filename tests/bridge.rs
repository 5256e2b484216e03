//! The HTTP bridge over raw HTTP requests: publish and call as a bridge
//! key's identity (WebSocket subscribers and callees on the other end),
//! errors as HTTP statuses, progressive results as server-sent events and
//! NDJSON, bearer and signed requests (replays refused), malformed bodies
//! named by field; on 1 and 2 shards.

use std::io::{Read, Write};
use std::net::SocketAddr;

use hmac::Mac;
use sha2::Digest;

use crate::common::*;

const TOKEN: &str = "bridge-token-for-tests";
const LIMITED_TOKEN: &str = "limited-token-for-tests";
const SECRET: &str = "a-secret-of-the-signer";

fn sha256_hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn router(shards: usize) -> (Router, SocketAddr) {
    router_with(shards, 5000, "")
}

fn router_with(shards: usize, call_timeout_ms: u64, limits: &str) -> (Router, SocketAddr) {
    let extra = format!(
        r#"
[[realm]]
name = "realm1"
{principals}
[[realm.bridge_key]]
authid = "svc"
role = "anonymous"
token_sha256 = "{token}"
[[realm.bridge_key]]
authid = "signer"
role = "anonymous"
hmac_secret = "{SECRET}"

[[realm]]
name = "guarded"
[[realm.role]]
name = "reader"
[[realm.role.permission]]
uri = "com.guarded."
match = "prefix"
allow = ["call", "subscribe"]
[[realm.bridge_key]]
authid = "limited"
role = "reader"
token_sha256 = "{limited}"

[[listener]]
type = "universal"
bind = "127.0.0.1:0"
[listener.bridge]
path = "/http"
call_timeout_ms = {call_timeout_ms}
replay_window_s = 60
"#,
        principals = test_principals(),
        token = sha256_hex(TOKEN),
        limited = sha256_hex(LIMITED_TOKEN),
    );
    let r = Router::start_with(shards, &extra, limits, &[]);
    let addr = r.listener("Universal").expect("universal listener");
    (r, addr)
}

/// POSTs `body` to `path` with `headers`; the response, its body read to
/// the end (streamed responses have no Content-Length).
fn post(addr: SocketAddr, path: &str, headers: &[(&str, String)], body: &str) -> HttpResponse {
    let mut s = connect(addr);
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut resp = read_http_response(&mut s, &mut buf);
    if resp.header("content-length").is_none() {
        resp.body = buf;
        let _ = s.read_to_end(&mut resp.body);
    }
    resp
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("Authorization", format!("Bearer {token}"))]
}

fn signed(path: &str, body: &str, ts: u64, nonce: &str) -> Vec<(&'static str, String)> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}\n{nonce}\nPOST\n{path}\n").as_bytes());
    mac.update(body.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    vec![
        ("X-Switchyard-Key", "signer".into()),
        ("X-Switchyard-Timestamp", ts.to_string()),
        ("X-Switchyard-Nonce", nonce.into()),
        ("X-Switchyard-Signature", sig),
    ]
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn json(resp: &HttpResponse) -> switchyard::wamp::Value {
    parse_json(&resp.body_text())
}

/// A publication from HTTP reaches a WebSocket subscriber with its args and
/// kwargs; acknowledged ones answer the publication ID the subscriber sees.
fn publish_reaches_subscribers(shards: usize) {
    let (r, addr) = router(shards);
    // subscribers on every shard
    let mut subs: Vec<Client> = (0..4).map(|i| r.join_spread(i)).collect();
    for s in &mut subs {
        s.subscribe("com.test.news", "{}");
    }
    let body = r#"{"topic": "com.test.news", "args": [1, "two"], "kwargs": {"k": true}}"#;
    let resp = post(addr, "/http/realm1/publish", &bearer(TOKEN), body);
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let publication = json(&resp).key("publication").u();
    for s in &mut subs {
        let ev = s.expect(EVENT);
        assert_eq!(ev.at(2).u(), publication, "{ev:?}");
        assert_eq!(ev.at(4), &parse_json(r#"[1, "two"]"#));
        assert_eq!(ev.at(5), &parse_json(r#"{"k": true}"#));
    }
    // not acknowledged: 202 at once, the event still goes out
    let body = r#"{"topic": "com.test.news", "args": [3], "options": {"acknowledge": false}}"#;
    let resp = post(addr, "/http/realm1/publish", &bearer(TOKEN), body);
    assert_eq!(resp.status, 202, "{}", resp.body_text());
    for s in &mut subs {
        assert_eq!(s.expect(EVENT).at(4), &parse_json("[3]"));
    }
    assert!(r.metric_sum("bridge_requests") >= 2);
}

/// A call is answered by a WebSocket callee; errors come back with the
/// status of their kind.
fn calls_and_their_errors(shards: usize) {
    let (r, addr) = router(shards);
    let mut callee = r.join_spread(0);
    callee.register("com.test.add");
    let mut other = r.join_spread(1);
    other.register("com.test.fail");
    for _ in 0..2 {
        let answer = std::thread::spawn(move || {
            let inv = callee.expect(INVOCATION);
            assert_eq!(inv.at(4), &parse_json("[2, 3]"), "{inv:?}");
            callee.send_json(&format!(r#"[70, {}, {{}}, [5], {{"sum": 5}}]"#, inv.at(1).u()));
            callee
        });
        let resp = post(
            addr,
            "/http/realm1/call",
            &bearer(TOKEN),
            r#"{"procedure": "com.test.add", "args": [2, 3]}"#,
        );
        callee = answer.join().unwrap();
        assert_eq!(resp.status, 200, "{}", resp.body_text());
        assert_eq!(json(&resp), parse_json(r#"{"args": [5], "kwargs": {"sum": 5}}"#));
    }

    let resp = post(addr, "/http/realm1/call", &bearer(TOKEN), r#"{"procedure": "com.test.nobody"}"#);
    assert_eq!(resp.status, 404, "{}", resp.body_text());
    assert_eq!(json(&resp).key("error").s(), "wamp.error.no_such_procedure");

    let fail = std::thread::spawn(move || {
        let inv = other.expect(INVOCATION);
        other.send_json(&format!(
            r#"[8, 68, {}, {{}}, "com.app.error.out_of_stock", ["none left"]]"#,
            inv.at(1).u()
        ));
        other
    });
    let resp = post(addr, "/http/realm1/call", &bearer(TOKEN), r#"{"procedure": "com.test.fail"}"#);
    let mut other = fail.join().unwrap();
    assert_eq!(resp.status, 502, "{}", resp.body_text());
    assert_eq!(
        json(&resp),
        parse_json(r#"{"error": "com.app.error.out_of_stock", "args": ["none left"]}"#)
    );

    // a callee that never answers: the call's timeout
    let resp = post(
        addr,
        "/http/realm1/call",
        &bearer(TOKEN),
        r#"{"procedure": "com.test.fail", "options": {"timeout": 200}}"#,
    );
    assert_eq!(resp.status, 504, "{}", resp.body_text());
    assert_eq!(json(&resp).key("error").s(), "wamp.error.timeout");
    other.expect(INVOCATION);

    // the role decides: "reader" may call in com.guarded. but not publish
    let resp = post(
        addr,
        "/http/guarded/publish",
        &bearer(LIMITED_TOKEN),
        r#"{"topic": "com.guarded.x"}"#,
    );
    assert_eq!(resp.status, 403, "{}", resp.body_text());
    assert_eq!(json(&resp).key("error").s(), "wamp.error.not_authorized");
    let resp = post(
        addr,
        "/http/guarded/call",
        &bearer(LIMITED_TOKEN),
        r#"{"procedure": "com.guarded.x"}"#,
    );
    assert_eq!(resp.status, 404, "{}", resp.body_text());
    // a key is its realm's only
    let resp = post(addr, "/http/guarded/publish", &bearer(TOKEN), r#"{"topic": "com.guarded.x"}"#);
    assert_eq!(resp.status, 401, "{}", resp.body_text());
}

/// Progressive results as server-sent events and as NDJSON.
fn progressive_results_stream(shards: usize) {
    let (r, addr) = router(shards);
    let mut callee = Client::ws(r.ws, Ser::Json);
    callee.login(
        "realm1",
        r#"{"roles": {"callee": {"features": {"progressive_call_results": true, "call_canceling": true}}}}"#,
    );
    callee.send_json(r#"[64, 1, {}, "com.test.count"]"#);
    callee.expect(REGISTERED);
    for (accept, sse) in [("text/event-stream", true), ("application/x-ndjson", false)] {
        let answer = std::thread::spawn(move || {
            let inv = callee.expect(INVOCATION);
            let req = inv.at(1).u();
            assert_eq!(inv.at(3).get("receive_progress"), Some(&parse_json("true")), "{inv:?}");
            for i in 1..=2 {
                callee.send_json(&format!(r#"[70, {req}, {{"progress": true}}, [{i}]]"#));
            }
            callee.send_json(&format!(r#"[70, {req}, {{}}, ["done"]]"#));
            callee
        });
        let mut headers = bearer(TOKEN);
        headers.push(("Accept", accept.into()));
        let resp = post(
            addr,
            "/http/realm1/call",
            &headers,
            r#"{"procedure": "com.test.count", "options": {"receive_progress": true}}"#,
        );
        callee = answer.join().unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some(accept));
        let text = resp.body_text();
        if sse {
            assert_eq!(
                text,
                "event: progress\ndata: {\"args\":[1]}\n\nevent: progress\ndata: {\"args\":[2]}\n\nevent: result\ndata: {\"args\":[\"done\"]}\n\n"
            );
        } else {
            assert_eq!(
                text,
                "{\"args\":[1],\"progress\":true}\n{\"args\":[2],\"progress\":true}\n{\"args\":[\"done\"]}\n"
            );
        }
    }
}

/// Bearer tokens and signed requests; a replayed or stale signed request,
/// a bad signature, a missing or unknown credential: 401, counted.
fn requests_are_authenticated(shards: usize) {
    let (r, addr) = router(shards);
    let path = "/http/realm1/publish";
    let body = r#"{"topic": "com.test.signed"}"#;
    let resp = post(addr, path, &[], body);
    assert_eq!(resp.status, 401);
    assert!(resp.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    assert_eq!(post(addr, path, &bearer("wrong"), body).status, 401);

    let ts = now();
    let headers = signed(path, body, ts, "nonce-1");
    let resp = post(addr, path, &headers, body);
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    // the same request again (to either shard): a replay
    for _ in 0..3 {
        let resp = post(addr, path, &headers, body);
        assert_eq!(resp.status, 401, "{}", resp.body_text());
        assert!(resp.body_text().contains("nonce"), "{}", resp.body_text());
    }
    // outside the replay window
    let resp = post(addr, path, &signed(path, body, ts - 120, "nonce-2"), body);
    assert_eq!(resp.status, 401);
    assert!(resp.body_text().contains("replay window"), "{}", resp.body_text());
    // signed over another body
    let resp = post(addr, path, &signed(path, r#"{"topic": "com.other"}"#, ts, "nonce-3"), body);
    assert_eq!(resp.status, 401);
    assert!(resp.body_text().contains("bad signature"), "{}", resp.body_text());
    // a correctly signed one after the refusals
    let resp = post(addr, path, &signed(path, body, ts, "nonce-3"), body);
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(r.metric_sum("bridge_replays"), 4);
    assert!(r.metric_sum("bridge_unauthorized") >= 7);
}

/// Malformed requests get 400 (or 404, 413) with a JSON error naming the
/// field; nothing else breaks.
fn malformed_requests_are_refused(shards: usize) {
    let (r, addr) = router(shards);
    let auth = bearer(TOKEN);
    let cases = [
        ("/http/realm1/publish", "not json", 400, Some("(body)")),
        ("/http/realm1/publish", "[1, 2]", 400, Some("(body)")),
        ("/http/realm1/publish", "{}", 400, Some("topic")),
        ("/http/realm1/publish", r#"{"topic": "a", "args": 1}"#, 400, Some("args")),
        ("/http/realm1/call", r#"{"procedure": "a", "kwargs": []}"#, 400, Some("kwargs")),
        ("/http/realm1/call", r#"{"procedure": "a", "option": {}}"#, 400, Some("option")),
        (
            "/http/realm1/call",
            r#"{"procedure": "a", "options": {"timeout": "soon"}}"#,
            400,
            Some("options"),
        ),
        ("/http/realm1/publish", r#"{"topic": "not a uri!"}"#, 400, None),
        ("/http/nowhere/publish", r#"{"topic": "a"}"#, 404, None),
        ("/http/realm1/subscribe", r#"{"topic": "a"}"#, 404, None),
    ];
    for (path, body, status, field) in cases {
        let resp = post(addr, path, &auth, body);
        assert_eq!(resp.status, status, "{path} {body}: {}", resp.body_text());
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let v = json(&resp);
        assert!(!v.key("error").s().is_empty());
        if let Some(f) = field {
            assert_eq!(v.key("field").s(), f, "{body}");
        }
    }
    let big = format!(r#"{{"topic": "a", "args": ["{}"]}}"#, "x".repeat(70_000));
    assert_eq!(post(addr, "/http/realm1/publish", &auth, &big).status, 413);
    // the router is fine
    let mut c = r.join_spread(0);
    c.sync();
}

/// The scheme's case does not matter; a GET gets 405; `timeout: 0` is the
/// listener's default; a client that leaves cancels its call (the callee,
/// which announced call canceling, gets INTERRUPT).
fn bridge_edge_cases(shards: usize) {
    let (r, addr) = router_with(shards, 300, "");
    let resp = post(
        addr,
        "/http/realm1/publish",
        &[("Authorization", format!("BEARER {TOKEN}"))],
        r#"{"topic": "com.x"}"#,
    );
    assert_eq!(resp.status, 200, "{}", resp.body_text());

    let mut s = connect(addr);
    s.write_all(b"GET /http/realm1/publish HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let resp = read_http_response(&mut s, &mut buf);
    assert_eq!(resp.status, 405, "{}", resp.body_text());
    assert_eq!(resp.header("content-type"), Some("application/json"));

    let mut callee = Client::ws(r.ws, Ser::Json);
    callee.login("realm1", r#"{"roles": {"callee": {"features": {"call_canceling": true}}}}"#);
    callee.register("com.test.slow");
    // timeout 0: the listener's call_timeout_ms (300 ms) ends the call
    let resp = post(
        addr,
        "/http/realm1/call",
        &bearer(TOKEN),
        r#"{"procedure": "com.test.slow", "options": {"timeout": 0}}"#,
    );
    assert_eq!(resp.status, 504, "{}", resp.body_text());
    assert_eq!(json(&resp).key("error").s(), "wamp.error.timeout");
    let inv = callee.expect(INVOCATION);
    assert_eq!(callee.expect(INTERRUPT).at(1).u(), inv.at(1).u());
    // a client that goes away: its call is canceled at once
    let mut s = connect(addr);
    let body = r#"{"procedure": "com.test.slow", "options": {"timeout": 60000}}"#;
    let head = format!(
        "POST /http/realm1/call HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let inv = callee.expect(INVOCATION);
    drop(s);
    assert_eq!(callee.expect(INTERRUPT).at(1).u(), inv.at(1).u());
    assert_eq!(r.metric_sum("calls_timed_out"), 1);
    // a request sent while a call waits is kept, and answered after it
    let mut s = connect(addr);
    let publish = r#"{"topic": "com.test.after"}"#;
    let call = format!(
        "POST /http/realm1/call HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let then = format!(
        "POST /http/realm1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{publish}",
        publish.len()
    );
    s.write_all(call.as_bytes()).unwrap();
    let inv = callee.expect(INVOCATION);
    // (sent while the router waits for the callee: read then, or after)
    s.write_all(then.as_bytes()).unwrap();
    callee.send_json(&format!(r#"[70, {}, {{}}, [7]]"#, inv.at(1).u()));
    let mut buf = Vec::new();
    let first = read_http_response(&mut s, &mut buf);
    assert_eq!(first.status, 200, "{}", first.body_text());
    assert_eq!(json(&first), parse_json(r#"{"args": [7]}"#));
    let second = read_http_response(&mut s, &mut buf);
    assert_eq!(second.status, 200, "{}", second.body_text());
    assert!(json(&second).get("publication").is_some());
}

/// HTTP/1.1 keeps the connection for further requests, pipelined ones too;
/// `Connection: close` (or HTTP/1.0) ends it after the response.
fn keep_alive_and_pipelining(shards: usize) {
    let (r, addr) = router(shards);
    let mut watcher = Client::join_ws(r.ws, Ser::Json);
    watcher.subscribe("wamp.session.on_join", "{}");
    let request = |body: &str, extra: &str| {
        format!(
            "POST /http/realm1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let body = r#"{"topic": "com.test.keep"}"#;
    let mut s = connect(addr);
    let mut buf = Vec::new();
    for _ in 0..3 {
        s.write_all(request(body, "").as_bytes()).unwrap();
        let resp = read_http_response(&mut s, &mut buf);
        assert_eq!(resp.status, 200, "{}", resp.body_text());
        assert_eq!(resp.header("connection"), Some("keep-alive"));
    }
    // three at once, answered in order, the last one closing
    let all = format!(
        "{}{}{}",
        request(body, ""),
        request("{}", ""),
        request(body, "Connection: close\r\n")
    );
    s.write_all(all.as_bytes()).unwrap();
    assert_eq!(read_http_response(&mut s, &mut buf).status, 200);
    assert_eq!(read_http_response(&mut s, &mut buf).status, 400);
    let last = read_http_response(&mut s, &mut buf);
    assert_eq!(last.status, 200);
    assert_eq!(last.header("connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap_or(0),
        0,
        "the connection ends after Connection: close"
    );
    // the six requests of that connection were one session: one join, and
    // the next join seen is a later client's
    let joined = watcher.expect(EVENT);
    assert_eq!(joined.at(4).at(0).key("authid").s(), "svc", "{joined:?}");
    let later = Client::join_ws(r.ws, Ser::Json);
    let next = watcher.expect(EVENT);
    assert_eq!(next.at(4).at(0).key("session").u(), later.session, "{next:?}");
    // HTTP/1.0: closed after one
    let mut s = connect(addr);
    s.write_all(request(body, "").replace("HTTP/1.1", "HTTP/1.0").as_bytes()).unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_http_response(&mut s, &mut buf).header("connection"), Some("close"));
    // an idle kept-alive connection does not hold up shutdown: its session
    // gets GOODBYE, the connection closes
    let mut s = connect(addr);
    s.write_all(request(body, "").as_bytes()).unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_http_response(&mut s, &mut buf).status, 200);
    // (the WebSocket clients go first: they would not answer GOODBYE)
    drop(watcher);
    drop(later);
    let mut r = r;
    assert!(r.stop().success());
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0);
    assert!(!r.log().contains("did not finish in the shutdown grace period"), "{}", r.log());
}

/// A webhook to an `https://` receiver whose certificate a private CA
/// signed (`ca`): delivered over TLS; the CA file is checked at start.
fn webhook_over_https(shards: usize) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let dir = std::env::temp_dir().join(format!("switchyard-hook-tls-{}-{shards}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let server = std::sync::Arc::new(server);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, posts) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(tcp) = stream else { return };
            let Ok(conn) = rustls::ServerConnection::new(server.clone()) else {
                return;
            };
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let Ok(n) = s.read(&mut chunk) else { break None };
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Some(body.to_owned());
                    }
                }
            };
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            let _ = s.flush();
            if let Some(b) = body {
                if tx.send(b).is_err() {
                    return;
                }
            }
        }
    });
    let extra = format!("ca = \"{}\"", ca_path.display());
    let cfg = format!(
        "\n[[realm]]\nname = \"realm1\"\n{}\n[[realm.webhook]]\ntopic = \"com.secure\"\nurl = \"https://localhost:{port}/hook\"\n{extra}\n",
        test_principals()
    );
    let r = Router::start_with(shards, &cfg, "", &[]);
    let mut publisher = r.join_spread(1);
    // publish until the webhook's subscription is in place and one arrives
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let got = loop {
        let req = publisher.next_req();
        publisher.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "com.secure", ["tls"]]"#));
        publisher.expect(PUBLISHED);
        if let Ok(b) = posts.recv_timeout(std::time::Duration::from_millis(200)) {
            break b;
        }
        assert!(std::time::Instant::now() < deadline, "no webhook POST over TLS: {}", r.log());
    };
    assert_eq!(parse_json(&got).key("args"), &parse_json(r#"["tls"]"#));
    // a CA file that is not there stops the start, naming the key
    let bad = cfg.replace(&ca_path.display().to_string(), "/nonexistent/ca.pem");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        format!("{bad}\n[[listener]]\ntype = \"rawsocket\"\nbind = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("realm[0].webhook[0].ca") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A streaming client that stops reading while the callee keeps sending
/// progressive results: after `limits.ping_interval_ms` without progress
/// the stream ends and the call is canceled (the callee gets INTERRUPT);
/// the session's queue does not grow without bound meanwhile.
fn a_stream_nobody_reads_ends(shards: usize) {
    let (r, addr) = router_with(shards, 60_000, "ping_interval_ms = 1000\nmax_outbound_bytes = 65536");
    let mut callee = Client::ws(r.ws, Ser::Json);
    callee.login(
        "realm1",
        r#"{"roles": {"callee": {"features": {"progressive_call_results": true, "call_canceling": true}}}}"#,
    );
    callee.register("com.test.flood");
    let mut s = connect(addr);
    let body = r#"{"procedure": "com.test.flood", "options": {"receive_progress": true}}"#;
    let head = format!(
        "POST /http/realm1/call HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let inv = callee.expect(INVOCATION);
    let chunk = "x".repeat(8192);
    // far more than the socket buffers and the queue hold, unread
    for _ in 0..3000 {
        callee.send_json(&format!(r#"[70, {}, {{"progress": true}}, ["{chunk}"]]"#, inv.at(1).u()));
    }
    // (the router pings the callee meanwhile: answered)
    let interrupt = loop {
        match callee.recv() {
            Incoming::Ping(p) => callee.conn.write(&ws_frame(true, ws_op::PONG, &p, true)),
            Incoming::Message(m) => break decode(Ser::Json, &m),
            other => panic!("expected INTERRUPT, got {other:?}"),
        }
    };
    assert_eq!(interrupt.code(), INTERRUPT, "{interrupt:?}");
    assert_eq!(interrupt.at(1).u(), inv.at(1).u());
    assert!(r.metric_sum("slow_consumers_disconnected") >= 1);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && !text.contains("event: result"),
        "{}",
        &text[..200.min(text.len())]
    );
}

/// A request a webhook receiver got: its headers and body.
type Posted = (Vec<(String, String)>, String);

/// A webhook receiver: answers each POST with the next status of `script`
/// (then 200), after `gate` lets it (when given); sends each request's
/// headers and body to the returned channel.
fn hook_server(script: Vec<u16>, gate: Option<std::sync::mpsc::Receiver<()>>) -> (u16, std::sync::mpsc::Receiver<Posted>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        let mut gate = gate;
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, len) = loop {
                let Ok(n) = s.read(&mut chunk) else { break (String::new(), 0) };
                if n == 0 {
                    break (String::new(), 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..p]).into_owned();
                    buf.drain(..p + 4);
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    break (head, len);
                }
            };
            while buf.len() < len {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            if let Some(g) = gate.take() {
                let _ = g.recv();
            }
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let status = script.next().unwrap_or(200);
            let _ = write!(s, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx.send((headers, String::from_utf8_lossy(&buf).into_owned())).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn webhook_router(shards: usize, port: u16, extra: &str) -> Router {
    let cfg = format!(
        r#"
[[realm]]
name = "realm1"
{principals}
[[realm.webhook]]
topic = "com.hook."
match = "prefix"
url = "http://127.0.0.1:{port}/hook?from=switchyard"
retry_initial_ms = 20
hmac_secret = "{SECRET}"
{extra}
"#,
        principals = test_principals(),
    );
    let r = Router::start_with(shards, &cfg, "", &[]);
    // the webhook's session has subscribed once the subscription exists
    let mut c = r.join_spread(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let req = c.next_req();
        c.send_json(&format!(r#"[48, {req}, {{}}, "wamp.subscription.match", ["com.hook.x"]]"#));
        let res = c.expect(RESULT);
        if res.at(3).at(0) != &parse_json("null") && res.at(3).at(0) != &parse_json("[]") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the webhook did not subscribe: {}", r.log());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    r
}

/// Events of a webhook's subscription are POSTed in order, signed; a 5xx
/// answer is retried, a 4xx one gives up (counted).
fn webhooks_post_events(shards: usize) {
    let (port, posts) = hook_server(vec![500, 200, 200, 404], None);
    let r = webhook_router(shards, port, "");
    let mut publisher = r.join_spread(1);
    for i in 1..=4 {
        let req = publisher.next_req();
        publisher.send_json(&format!(
            r#"[16, {req}, {{"acknowledge": true}}, "com.hook.t{i}", [{i}], {{"n": {i}}}]"#
        ));
        publisher.expect(PUBLISHED);
    }
    let recv = || posts.recv_timeout(std::time::Duration::from_secs(10)).expect("a webhook POST");
    // the first try answered 500, then the same event again
    let seen: Vec<Posted> = (0..5).map(|_| recv()).collect();
    let bodies: Vec<switchyard::wamp::Value> = seen.iter().map(|(_, b)| parse_json(b)).collect();
    let n = |b: &switchyard::wamp::Value| b.key("kwargs").key("n").u();
    assert_eq!(bodies.iter().map(n).collect::<Vec<_>>(), [1, 1, 2, 3, 4]);
    assert_eq!(bodies[0].key("topic").s(), "com.hook.t1");
    assert_eq!(bodies[0].key("realm").s(), "realm1");
    assert_eq!(bodies[0].key("args"), &parse_json("[1]"));
    for (headers, body) in &seen {
        let h = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(
            format!(
                "{}\n{}\nPOST\n/hook?from=switchyard\n",
                h("x-switchyard-timestamp"),
                h("x-switchyard-nonce")
            )
            .as_bytes(),
        );
        mac.update(body.as_bytes());
        assert_eq!(hex::encode(mac.finalize().into_bytes()), h("x-switchyard-signature"));
        assert_eq!(h("content-type"), "application/json");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // (a delivery is counted once its answer is read, after the receiver
    // above has seen the body)
    while r.metric_sum("webhook_failed") < 1 || r.metric_sum("webhook_delivered") < 3 {
        assert!(std::time::Instant::now() < deadline, "{}", r.metrics_text());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(r.metric_sum("webhook_delivered"), 3);
    assert_eq!(r.metric_sum("webhook_retries"), 1);
    assert_eq!(r.metric_sum("webhook_failed"), 1);
}

/// A webhook whose receiver does not answer holds at most `queue` events;
/// the rest are dropped and counted, and nothing else is held up.
fn webhook_queue_is_bounded(shards: usize) {
    let (release, gate) = std::sync::mpsc::channel();
    let (port, posts) = hook_server(Vec::new(), Some(gate));
    let r = webhook_router(shards, port, "queue = 2");
    let mut publisher = r.join_spread(1);
    for i in 1..=10 {
        let req = publisher.next_req();
        publisher.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "com.hook.t", [{i}]]"#));
        publisher.expect(PUBLISHED);
    }
    // the router goes on meanwhile
    publisher.sync();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // one event in flight (held by the receiver), two queued: the others
    // (seven, or eight if the first was still queued) are dropped
    while r.metric_sum("webhook_dropped") < 7 {
        assert!(std::time::Instant::now() < deadline, "{}", r.metrics_text());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    release.send(()).unwrap();
    while r.metric_sum("webhook_delivered") + r.metric_sum("webhook_dropped") < 10 {
        assert!(std::time::Instant::now() < deadline, "{}", r.metrics_text());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let delivered = r.metric_sum("webhook_delivered");
    assert!((2..=3).contains(&delivered), "{delivered}");
    let got: Vec<u64> = (0..delivered)
        .map(|_| parse_json(&posts.recv().unwrap().1).key("args").at(0).u())
        .collect();
    assert_eq!(got[0], 1, "{got:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
}

crate::on_1_and_2_shards!(
    publish_reaches_subscribers,
    calls_and_their_errors,
    progressive_results_stream,
    requests_are_authenticated,
    malformed_requests_are_refused,
    webhooks_post_events,
    webhook_queue_is_bounded,
    bridge_edge_cases,
    keep_alive_and_pipelining,
    webhook_over_https,
    a_stream_nobody_reads_ends,
);
