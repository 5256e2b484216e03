//! The HTTP long-poll transport over raw HTTP requests: open, send, receive
//! and close in every serializer, batched and not, on 1 and 2 shards (where
//! a request often lands on the other shard than its transport's), talking
//! to WebSocket sessions; the errors, the bounds and expiry.

use std::net::SocketAddr;

use switchyard::wamp::Value;

use crate::common::*;

fn router(shards: usize, limits: &str) -> (Router, SocketAddr) {
    let extra = "[[listener]]\ntype = \"universal\"\nbind = \"127.0.0.1:0\"\n[listener.longpoll]\npath = \"/lp\"\npoll_timeout_ms = 300\nsession_timeout_ms = 1500\n";
    let r = Router::start_with(shards, extra, limits, &[]);
    let addr = r.listener("Universal").expect("universal listener");
    (r, addr)
}

fn post(addr: SocketAddr, path: &str, body: &[u8]) -> HttpResponse {
    let mut s = connect(addr);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    std::io::Write::write_all(&mut s, &req).unwrap();
    let mut buf = Vec::new();
    read_http_response(&mut s, &mut buf)
}

/// A long-poll client.
struct Lp {
    addr: SocketAddr,
    id: String,
    ser: Ser,
    batched: bool,
}

impl Lp {
    fn open(addr: SocketAddr, protocols: &str) -> Lp {
        let resp = post(addr, "/lp/open?x=1", format!(r#"{{"protocols": [{protocols}]}}"#).as_bytes());
        assert_eq!(resp.status, 200, "{}", resp.body_text());
        let v = parse_json(&resp.body_text());
        let protocol = v.key("protocol").s().to_owned();
        let ser = Ser::ALL
            .into_iter()
            .find(|s| protocol.starts_with(s.subprotocol()))
            .expect("a known protocol");
        Lp {
            addr,
            id: v.key("transport").s().to_owned(),
            ser,
            batched: protocol.ends_with(".batched"),
        }
    }

    fn send_all(&self, msgs: &[Value]) -> u16 {
        let mut body = Vec::new();
        for m in msgs {
            let bytes = encode(self.ser, m);
            if !self.batched {
                assert_eq!(msgs.len(), 1);
                body = bytes;
            } else if self.ser == Ser::Json {
                body.extend_from_slice(&bytes);
                body.push(0x1e);
            } else {
                body.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                body.extend_from_slice(&bytes);
            }
        }
        post(self.addr, &format!("/lp/{}/send", self.id), &body).status
    }

    fn send(&self, m: &Value) {
        assert_eq!(self.send_all(std::slice::from_ref(m)), 204);
    }

    /// The messages of the next receive (empty after a 204).
    fn receive(&self) -> (u16, Vec<Value>) {
        let resp = post(self.addr, &format!("/lp/{}/receive?x=2", self.id), b"");
        if resp.status != 200 {
            return (resp.status, Vec::new());
        }
        let out = if self.batched {
            split_batch(self.ser, &resp.body, 0x1e)
        } else {
            vec![decode(self.ser, &resp.body)]
        };
        (200, out)
    }

    /// Receives until `n` messages came (204s are polls that timed out).
    fn expect_n(&self, n: usize) -> Vec<Value> {
        let mut got = Vec::new();
        for _ in 0..50 {
            let (status, msgs) = self.receive();
            assert!(status == 200 || status == 204, "receive answered {status}");
            got.extend(msgs);
            if got.len() >= n {
                return got;
            }
        }
        panic!("only {} of {n} messages came: {got:?}", got.len());
    }
}

fn hello() -> Value {
    parse_json(&format!(r#"[1, "realm1", {ROLES}]"#))
}

#[test]
fn longpoll_sessions_in_every_protocol_talk_to_websocket_ones() {
    for shards in [1, 2] {
        let (r, addr) = router(shards, "");
        for ser in Ser::ALL {
            for batched in [false, true] {
                let protocol = if batched { ser.batched() } else { ser.subprotocol() };
                let lp = Lp::open(addr, &format!(r#""wamp.2.ubjson", "{protocol}""#));
                assert_eq!((lp.ser, lp.batched), (ser, batched));
                lp.send(&hello());
                let welcome = lp.expect_n(1);
                assert_eq!(welcome[0].code(), WELCOME);
                let transport = welcome[0].at(2).key("transport");
                assert_eq!((transport.key("type").s(), transport.key("protocol").s()), ("longpoll", protocol));
                let topic = format!("com.lp.{shards}.{protocol}");
                lp.send(&parse_json(&format!(r#"[32, 1, {{}}, "{topic}"]"#)));
                assert_eq!(lp.expect_n(1)[0].code(), SUBSCRIBED);
                // a WebSocket session publishes, the long-poll one receives
                let mut ws = Client::join_ws(r.ws, Ser::Cbor);
                let args = parse_json(r#"[1, "two", {"three": [3.5]}]"#);
                for i in 0..3u64 {
                    let req = ws.next_req();
                    ws.send(&Value::List(vec![
                        Value::UInt(PUBLISH),
                        Value::UInt(req),
                        parse_json(r#"{"acknowledge": true}"#),
                        Value::Str(topic.clone()),
                        Value::List(vec![Value::UInt(i), args.clone()]),
                    ]));
                    ws.expect(PUBLISHED);
                }
                // unbatched: one message per receive; batched: all pending
                let events = lp.expect_n(3);
                assert_eq!(events.len(), 3, "{events:?}");
                for (i, e) in events.iter().enumerate() {
                    assert_eq!((e.code(), e.at(4).at(0).u()), (EVENT, i as u64));
                    assert_eq!(e.at(4).at(1), &args);
                }
                // and the long-poll session calls a WebSocket callee
                let proc_ = format!("com.lp.p.{shards}.{protocol}");
                let reg = ws.register(&proc_);
                lp.send(&parse_json(&format!(r#"[48, 7, {{}}, "{proc_}", [20, 22]]"#)));
                let inv = ws.expect(INVOCATION);
                assert_eq!(inv.at(2).u(), reg);
                ws.send(&parse_json(&format!(r#"[70, {}, {{}}, [42]]"#, inv.at(1).u())));
                let result = lp.expect_n(1);
                assert_eq!(
                    (result[0].code(), result[0].at(1).u(), result[0].at(3)),
                    (RESULT, 7, &parse_json("[42]"))
                );
                // GOODBYE, answered; then the client closes the transport
                // (as autobahn-js does), and it is gone
                lp.send(&parse_json(r#"[6, {}, "wamp.close.close_realm"]"#));
                assert_eq!(lp.expect_n(1)[0].code(), GOODBYE);
                assert_eq!(post(addr, &format!("/lp/{}/close", lp.id), b"").status, 204);
                let (status, _) = lp.receive();
                assert_eq!(status, 404);
                assert_eq!(lp.send_all(&[hello()]), 404);
            }
        }
        if shards == 2 {
            assert!(r.metric_sum("longpoll_forwarded") > 0, "no request crossed shards");
        }
        let open = r.metric_sum("longpoll_transports");
        assert_eq!(open, 0, "transports left open");
    }
}

#[test]
fn a_batched_send_is_handled_in_order() {
    let (_r, addr) = router(2, "");
    let lp = Lp::open(addr, r#""wamp.2.msgpack.batched""#);
    let msgs = [
        hello(),
        parse_json(r#"[32, 1, {}, "com.lp.batch"]"#),
        parse_json(r#"[64, 2, {}, "com.lp.batch.p"]"#),
    ];
    assert_eq!(lp.send_all(&msgs), 204);
    let got = lp.expect_n(3);
    let codes: Vec<u64> = got.iter().map(|m| m.code()).collect();
    assert_eq!(codes[0], WELCOME);
    assert!(codes.contains(&SUBSCRIBED) && codes.contains(&REGISTERED), "{got:?}");
}

#[test]
fn bad_requests_get_clear_errors_and_idle_transports_expire() {
    let (r, addr) = router(2, "max_message_size = 4096\nmax_uri_length = 1024");
    // the open body
    for (body, status) in [
        (&b"not json"[..], 400),
        (&br#"{"protocols": "wamp.2.json"}"#[..], 400),
        (&br#"{"protocols": ["wamp.2.ubjson"]}"#[..], 400),
    ] {
        let resp = post(addr, "/lp/open", body);
        assert_eq!(resp.status, status, "{}", resp.body_text());
        assert!(parse_json(&resp.body_text()).key("error").s().len() > 10);
    }
    // unknown transports, paths and too large bodies
    assert_eq!(post(addr, "/lp/00ffffffffffffffffffffffffffffffff/receive", b"").status, 404);
    assert_eq!(post(addr, "/lp/zz/send", b"[]").status, 404);
    assert_eq!(post(addr, "/lp/x/y/z", b"").status, 404);
    let lp = Lp::open(addr, r#""wamp.2.json""#);
    let big = vec![b' '; 5000];
    assert_eq!(post(addr, &format!("/lp/{}/send", lp.id), &big).status, 413);
    // a malformed WAMP message ends the session with an ABORT
    assert_eq!(post(addr, &format!("/lp/{}/send", lp.id), b"[1, 2").status, 204);
    let abort = lp.expect_n(1);
    assert_eq!((abort[0].code(), abort[0].at(2).s()), (ABORT, "wamp.error.protocol_violation"));
    assert_eq!(lp.receive().0, 404);
    // a transport nobody polls expires (session_timeout_ms = 1500)
    let idle = Lp::open(addr, r#""wamp.2.json""#);
    idle.send(&hello());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while r.metric_sum("longpoll_expired") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(r.metric_sum("longpoll_expired"), 1);
    assert_eq!(idle.receive().0, 404);
    assert_eq!(r.metric_sum("sessions"), 0);
    // an explicit close
    let lp = Lp::open(addr, r#""wamp.2.cbor""#);
    lp.send(&hello());
    assert_eq!(post(addr, &format!("/lp/{}/close", lp.id), b"").status, 204);
    assert_eq!(lp.receive().0, 404);
    // and WebSocket on the same port still works
    Client::join_ws(addr, Ser::Json).sync();
}

/// SIGTERM with long-poll transports open (one with a receive waiting,
/// one joined, one just closed): the router exits at once and cleanly, and
/// the waiting receive gets the GOODBYE. (The transports' idle timers held
/// the shard's context and kept the process from ending.)
#[test]
fn the_router_stops_with_longpoll_transports_open() {
    for shards in [1, 2] {
        let (mut r, addr) = router(shards, "");
        let waiting = Lp::open(addr, r#""wamp.2.json""#);
        waiting.send(&hello());
        assert_eq!(waiting.expect_n(1)[0].code(), WELCOME);
        let joined = Lp::open(addr, r#""wamp.2.cbor""#);
        joined.send(&hello());
        let closed = Lp::open(addr, r#""wamp.2.json""#);
        assert_eq!(post(addr, &format!("/lp/{}/close", closed.id), b"").status, 204);
        let poll = std::thread::spawn(move || waiting.receive());
        // wait until the receive's request is in: a connection beside the
        // one that asks for /metrics
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while r.metric_sum("connections") < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        r.terminate();
        assert!(r.wait().success(), "{}", r.log());
        let (status, msgs) = poll.join().expect("the receive");
        assert_eq!(status, 200);
        assert_eq!((msgs[0].code(), msgs[0].at(2).s()), (GOODBYE, "wamp.close.system_shutdown"));
        drop(joined);
    }
}
