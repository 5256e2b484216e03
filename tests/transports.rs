//! Transports and serializers beyond the Basic Profile's two: CBOR on both
//! transports, batched WebSocket, RawSocket over a Unix domain socket, and
//! the universal port, over raw sockets, on 1 and 2 shards.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use switchyard::wamp::{Dict, Value};

use crate::common::*;

/// A payload with one value of every kind, binary included.
fn rich_args() -> Value {
    Value::List(vec![
        Value::UInt(u64::MAX),
        Value::Int(-42),
        Value::Float(0.25),
        Value::Str("grüße ✓".into()),
        Value::Bytes(vec![0, 1, 0xfe, 0xff]),
        Value::Null,
        Value::Bool(true),
        Value::List(vec![Value::Dict(Dict::new().with("k", Value::List(vec![])))]),
    ])
}

fn rich_kwargs() -> Value {
    Value::Dict(Dict::new().with("b", Value::Bytes(vec![7; 3])).with("n", Value::Int(-1)))
}

fn publish(args: &Value, kwargs: &Value, topic: &str, request: u64, acknowledge: bool) -> Value {
    Value::List(vec![
        Value::UInt(PUBLISH),
        Value::UInt(request),
        Value::Dict(Dict::new().with("acknowledge", Value::Bool(acknowledge))),
        Value::Str(topic.into()),
        args.clone(),
        kwargs.clone(),
    ])
}

/// A client of every serializer, on a WebSocket or RawSocket connection.
fn clients(r: &Router, raw: bool) -> Vec<Client> {
    Ser::ALL
        .iter()
        .map(|&ser| {
            if raw {
                Client::join_raw(r.rs, ser)
            } else {
                Client::join_ws(r.ws, ser)
            }
        })
        .collect()
}

#[test]
fn cbor_pubsub_and_rpc_with_every_other_serializer_on_both_transports() {
    for shards in [1, 2] {
        let r = Router::start(shards);
        for raw in [false, true] {
            let mut cs = clients(&r, raw);
            let topic = format!("com.cbor.t{shards}{raw}");
            let subs: Vec<u64> = cs.iter_mut().map(|c| c.subscribe(&topic, "{}")).collect();
            // every serializer publishes to every serializer
            for from in 0..cs.len() {
                let req = cs[from].next_req();
                let msg = publish(&rich_args(), &rich_kwargs(), &topic, req, true);
                cs[from].send(&msg);
                cs[from].expect(PUBLISHED);
                for (to, c) in cs.iter_mut().enumerate() {
                    if to == from {
                        continue; // publishers are excluded by default
                    }
                    let ev = c.expect(EVENT);
                    assert_eq!(ev.at(1).u(), subs[to]);
                    assert_eq!(ev.at(4), &rich_args(), "{:?} -> {:?}", cs_ser(from), cs_ser(to));
                    assert_eq!(ev.at(5), &rich_kwargs());
                }
            }
            // a CBOR callee answers callers of every serializer
            let proc_ = format!("com.cbor.p{shards}{raw}");
            let reg = cs[2].register(&proc_);
            for from in 0..2 {
                let req = cs[from].next_req();
                cs[from].send(&Value::List(vec![
                    Value::UInt(CALL),
                    Value::UInt(req),
                    Value::Dict(Dict::new()),
                    Value::Str(proc_.clone()),
                    rich_args(),
                    rich_kwargs(),
                ]));
                let inv = cs[2].expect(INVOCATION);
                assert_eq!(inv.at(2).u(), reg);
                assert_eq!(inv.at(4), &rich_args());
                let yield_ = Value::List(vec![
                    Value::UInt(YIELD),
                    Value::UInt(inv.at(1).u()),
                    Value::Dict(Dict::new()),
                    inv.at(4).clone(),
                    inv.at(5).clone(),
                ]);
                cs[2].send(&yield_);
                let res = cs[from].expect(RESULT);
                assert_eq!(res.at(1).u(), req);
                assert_eq!(res.at(3), &rich_args());
                assert_eq!(res.at(4), &rich_kwargs());
            }
        }
    }
}

fn cs_ser(i: usize) -> Ser {
    Ser::ALL[i]
}

#[test]
fn malformed_cbor_is_a_protocol_violation_and_the_router_carries_on() {
    let r = Router::start(1);
    let bad: &[(&str, &[u8])] = &[
        ("not an array", &[0xa0]),
        ("truncated", &[0x84, 0x18]),
        ("reserved head", &[0x84, 0x1c]),
        // [1, "realm1", {1: 2}]: an integer dictionary key
        (
            "integer key",
            &[0x83, 0x01, 0x66, b'r', b'e', b'a', b'l', b'm', b'1', 0xa1, 0x01, 0x02],
        ),
        // an indefinite array without its break
        ("no break", &[0x9f, 0x01, 0x66, b'r', b'e', b'a', b'l', b'm', b'1', 0xa0]),
        // simple value 16
        ("simple value", &[0x83, 0x01, 0x66, b'r', b'e', b'a', b'l', b'm', b'1', 0xf0]),
    ];
    for (what, bytes) in bad {
        for raw in [false, true] {
            let mut c = if raw {
                Client::raw(r.rs, Ser::Cbor)
            } else {
                Client::ws(r.ws, Ser::Cbor)
            };
            c.send_bytes(bytes);
            let abort = c.expect(ABORT);
            assert_eq!(abort.at(2).s(), "wamp.error.protocol_violation", "{what}");
            let message = abort.at(1).key("message").s().to_owned();
            assert!(message.starts_with("malformed message: "), "{what}: {message}");
        }
    }
    // a session in the middle of its life: a bad message closes it, others go on
    let mut bystander = Client::join_raw(r.rs, Ser::Cbor);
    let mut c = Client::join_ws(r.ws, Ser::Cbor);
    c.send_bytes(&[0x84, 0x18, 32, 0x01, 0xa0, 0x41, b't']); // SUBSCRIBE with a byte-string topic
    assert_eq!(c.expect(ABORT).at(2).s(), "wamp.error.protocol_violation");
    bystander.sync();
    assert!(r.metric_sum("protocol_violations") >= 13);
}

/// A batched WebSocket client.
fn batched(r: &Router, ser: Ser) -> Conn {
    let (resp, conn) = ws_handshake(r.ws, &upgrade_request("/ws", WS_KEY, Some(ser.batched())));
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("sec-websocket-protocol"), Some(ser.batched()));
    conn
}

fn batch_of(ser: Ser, messages: &[Value], separator: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        let bytes = encode(ser, m);
        match ser {
            Ser::Json => {
                out.extend_from_slice(&bytes);
                out.push(separator);
            }
            Ser::MsgPack | Ser::Cbor => {
                out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                out.extend_from_slice(&bytes);
            }
        }
    }
    out
}

fn send_batch(conn: &mut Conn, ser: Ser, payload: &[u8]) {
    let op = if ser == Ser::Json { ws_op::TEXT } else { ws_op::BINARY };
    conn.write(&ws_frame(true, op, payload, true));
}

/// The WAMP messages of the next WebSocket message, a batch.
fn recv_batch(conn: &mut Conn, ser: Ser, separator: u8) -> Vec<Value> {
    let data = match conn.recv() {
        Incoming::Message(m) => m,
        other => panic!("expected a batch, got {other:?}"),
    };
    let out = split_batch(ser, &data, separator);
    assert!(!out.is_empty(), "the router sent an empty batch");
    out
}

fn hello() -> Value {
    parse_json(&format!(r#"[1, "realm1", {ROLES}]"#))
}

#[test]
fn batched_websocket_in_every_serializer_and_both_json_separators() {
    for shards in [1, 2] {
        let r = Router::start(shards);
        for (ser, sep) in [(Ser::Json, 0x1e), (Ser::Json, 0x18), (Ser::MsgPack, 0), (Ser::Cbor, 0)] {
            let mut c = batched(&r, ser);
            let topic = format!("com.batch.{shards}.{ser:?}.{sep}");
            let sep_out = if ser == Ser::Json { sep } else { 0 };
            // HELLO and SUBSCRIBE in one batch, handled in order
            let msgs = [hello(), parse_json(&format!(r#"[32, 1, {{}}, "{topic}"]"#))];
            send_batch(&mut c, ser, &batch_of(ser, &msgs, sep));
            let mut got = Vec::new();
            while got.len() < 2 {
                got.extend(recv_batch(&mut c, ser, sep_out));
            }
            let codes: Vec<u64> = got.iter().map(|m| m.code()).collect();
            assert_eq!(codes, [WELCOME, SUBSCRIBED], "{shards} shards, {ser:?}: {got:?}");
            let transport = got[0].at(2).key("transport");
            assert_eq!(
                (transport.key("type").s(), transport.key("protocol").s()),
                ("websocket", ser.batched())
            );
            assert!(transport.get("compression").is_none());
            // two PUBLISHes to itself in one batch: two EVENTs in order
            let msgs = [
                parse_json(&format!(r#"[16, 2, {{"exclude_me": false}}, "{topic}", [1, "x"]]"#)),
                parse_json(&format!(
                    r#"[16, 3, {{"acknowledge": true, "exclude_me": false}}, "{topic}", [2], {{"k": "v"}}]"#
                )),
            ];
            send_batch(&mut c, ser, &batch_of(ser, &msgs, sep));
            let mut got = Vec::new();
            while got.len() < 3 {
                got.extend(recv_batch(&mut c, ser, sep_out));
            }
            let events: Vec<&Value> = got.iter().filter(|m| m.code() == EVENT).collect();
            assert_eq!(events.len(), 2, "{got:?}");
            assert_eq!(events[0].at(4), &parse_json(r#"[1, "x"]"#));
            assert_eq!(
                (events[1].at(4), events[1].at(5)),
                (&parse_json("[2]"), &parse_json(r#"{"k": "v"}"#))
            );
            assert!(got.iter().any(|m| m.code() == PUBLISHED && m.at(1).u() == 3), "{got:?}");
        }
    }
}

#[test]
fn queued_messages_go_out_batched_within_the_size_limit() {
    const LIMIT: usize = 8192;
    let r = Router::start_with(1, "", &format!("max_message_size = {LIMIT}"), &[]);
    for ser in Ser::ALL {
        let mut sub = batched(&r, ser);
        send_batch(&mut sub, ser, &batch_of(ser, &[hello()], 0x1e));
        assert_eq!(recv_batch(&mut sub, ser, 0x1e)[0].code(), WELCOME);
        send_batch(&mut sub, ser, &batch_of(ser, &[parse_json(r#"[32, 1, {}, "t"]"#)], 0x1e));
        assert_eq!(recv_batch(&mut sub, ser, 0x1e)[0].code(), SUBSCRIBED);
        // 300 small PUBLISHes in one batch, handled in one go: the
        // subscriber's queue holds all 300 EVENTs (each larger than its
        // PUBLISH: two IDs instead of a one-letter topic) before its writer
        // runs
        let mut publisher = batched(&r, Ser::Json);
        send_batch(&mut publisher, Ser::Json, &batch_of(Ser::Json, &[hello()], 0x1e));
        assert_eq!(recv_batch(&mut publisher, Ser::Json, 0x1e)[0].code(), WELCOME);
        let msgs: Vec<Value> = (0..300u64)
            .map(|i| parse_json(&format!(r#"[16, {}, {{}}, "t", [{i}]]"#, i + 1)))
            .collect();
        let payload = batch_of(Ser::Json, &msgs, 0x1e);
        assert!(payload.len() <= LIMIT, "the publisher's batch is {} bytes", payload.len());
        send_batch(&mut publisher, Ser::Json, &payload);
        let (mut events, mut messages, mut multi, mut total) = (0u64, 0, 0, 0);
        while events < 300 {
            let data = match sub.recv() {
                Incoming::Message(m) => m,
                other => panic!("{other:?}"),
            };
            let batch = split_batch(ser, &data, 0x1e);
            assert!(
                data.len() <= LIMIT || batch.len() == 1,
                "{ser:?}: {} messages in {} bytes",
                batch.len(),
                data.len()
            );
            messages += 1;
            total += data.len();
            multi += usize::from(batch.len() > 1);
            for m in batch {
                assert_eq!((m.code(), m.at(4).at(0).u()), (EVENT, events));
                events += 1;
            }
        }
        assert!(multi > 0, "{ser:?}: no WebSocket message carried more than one EVENT");
        if total > LIMIT {
            assert!(messages >= 2, "{ser:?}: {total} bytes of events in {messages} WebSocket messages");
        }
        if ser == Ser::Json {
            assert!(total > LIMIT, "the JSON events ({total} bytes) do not test the bound");
        }
    }
}

#[test]
fn bad_batches_fail_the_transport() {
    let r = Router::start(1);
    let cases: Vec<(Ser, Vec<u8>, &str)> = vec![
        (Ser::Json, Vec::new(), "empty batch"),
        (Ser::MsgPack, Vec::new(), "empty batch"),
        (Ser::Json, br#"[1,"realm1",{}]"#.to_vec(), "record separator"),
        (Ser::MsgPack, vec![0, 0, 1], "truncated length"),
        (Ser::Cbor, vec![0, 0, 0, 9, 0x80], "longer than its batch"),
    ];
    for (ser, payload, why) in cases {
        let mut c = batched(&r, ser);
        send_batch(&mut c, ser, &payload);
        match c.recv() {
            Incoming::Close(code, reason) => {
                assert_eq!(code, 1002, "{ser:?} {why}");
                assert!(reason.contains(why), "{ser:?}: {reason}");
            }
            other => panic!("{ser:?} {why}: expected a close, got {other:?}"),
        }
    }
    // a bad WAMP message inside a good batch: the ones before it count
    let mut c = batched(&r, Ser::MsgPack);
    let mut payload = batch_of(Ser::MsgPack, &[hello()], 0);
    payload.extend_from_slice(&[0, 0, 0, 1, 0xc1]);
    send_batch(&mut c, Ser::MsgPack, &payload);
    let got = recv_batch(&mut c, Ser::MsgPack, 0);
    assert_eq!(got[0].code(), WELCOME);
    let abort = if got.len() > 1 {
        got[1].clone()
    } else {
        recv_batch(&mut c, Ser::MsgPack, 0)[0].clone()
    };
    assert_eq!(abort.code(), ABORT);
    assert_eq!(abort.at(2).s(), "wamp.error.protocol_violation");
    // and the router serves the next client
    Client::join_ws(r.ws, Ser::Json).sync();
}

/// A router with a RawSocket listener on a Unix socket in its directory.
fn unix_router(shards: usize, mode: &str) -> (Router, std::path::PathBuf) {
    let n = free_port();
    let path = std::env::temp_dir().join(format!("sy-{}-{n}.sock", std::process::id()));
    let extra = format!(
        "[[listener]]\ntype = \"rawsocket\"\nbind = \"unix:{}\"\nmode = \"{mode}\"\n",
        path.display()
    );
    let r = Router::start_with(shards, &extra, "", &[]);
    (r, path)
}

/// RawSocket handshake and HELLO over a Unix socket; the session ID.
fn unix_join(path: &std::path::Path, ser: Ser) -> (UnixStream, u64) {
    let mut s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(&[0x7F, 0xF0 | ser.rawsocket_code(), 0, 0]).unwrap();
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply).unwrap();
    assert_eq!((reply[0], reply[1] & 0x0f), (0x7F, ser.rawsocket_code()));
    let welcome = unix_roundtrip(&mut s, ser, &hello());
    assert_eq!(welcome.code(), WELCOME);
    (s, welcome.at(1).u())
}

fn unix_roundtrip(s: &mut UnixStream, ser: Ser, msg: &Value) -> Value {
    let bytes = encode(ser, msg);
    s.write_all(&rs_frame(rs_type::WAMP, &bytes)).unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], rs_type::WAMP);
    let len = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    decode(ser, &body)
}

#[test]
fn rawsocket_over_a_unix_socket_with_its_mode_spread_over_shards() {
    let (r, path) = unix_router(2, "600");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        r.listeners()
            .iter()
            .any(|(k, a)| k == "Rawsocket" && *a == format!("unix:{}", path.display())),
        "{:?}",
        r.listeners()
    );
    // sessions of every serializer, all held open
    let mut held = Vec::new();
    for i in 0..12 {
        let ser = Ser::ALL[i % 3];
        held.push((unix_join(&path, ser), ser));
    }
    // a Unix client and a TCP client talk
    let mut tcp = Client::join_ws(r.ws, Ser::Json);
    let sub = tcp.subscribe("com.unix.t", "{}");
    let ((s, _), ser) = &mut held[2];
    let ack = unix_roundtrip(s, *ser, &publish(&rich_args(), &rich_kwargs(), "com.unix.t", 1, true));
    assert_eq!(ack.code(), PUBLISHED);
    let ev = tcp.expect(EVENT);
    assert_eq!((ev.at(1).u(), ev.at(4)), (sub, &rich_args()));
    // shard 0 accepted all 12 and kept only its share
    let per_shard = r.metric("unix_accepted");
    assert_eq!(per_shard.iter().sum::<i64>(), 12, "{per_shard:?}");
    assert!(per_shard.iter().all(|&n| n >= 4), "not spread: {per_shard:?}");
    drop(held);
    drop(r);
    // the router removes its socket file when it stops
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!path.exists(), "socket file left behind");
}

#[test]
fn a_unix_socket_path_in_use_or_not_a_socket_is_refused_and_a_stale_one_replaced() {
    let (r, path) = unix_router(1, "660");
    // a second router on the same path while the first accepts there
    let dir = std::env::temp_dir().join(format!("sy-cfg-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.toml");
    let write_cfg = |p: &std::path::Path| {
        std::fs::write(
            &cfg,
            format!(
                "[[realm]]\nname = \"realm1\"\n[[listener]]\ntype = \"rawsocket\"\nbind = \"unix:{}\"\n",
                p.display()
            ),
        )
        .unwrap();
    };
    write_cfg(&path);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process accepts on this socket"), "{err}");
    unix_join(&path, Ser::Json); // the first router still serves
    drop(r);
    // a regular file is never removed
    let file = dir.join("plain.sock");
    std::fs::write(&file, b"data").unwrap();
    write_cfg(&file);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&file).unwrap(), b"data");
    // a socket nobody accepts on (a router that was killed) is replaced
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let extra = format!("[[listener]]\ntype = \"rawsocket\"\nbind = \"unix:{}\"\n", stale.display());
    let _r = Router::start_with(1, &extra, "", &[]);
    unix_join(&stale, Ser::Cbor);
}

fn universal_router(shards: usize) -> (Router, std::net::SocketAddr) {
    let r = Router::start_with(shards, "[[listener]]\ntype = \"universal\"\nbind = \"127.0.0.1:0\"\n", "", &[]);
    let addr = r
        .listener("Universal")
        .unwrap_or_else(|| panic!("no universal listener: {:?}", r.listeners()));
    (r, addr)
}

#[test]
fn the_universal_port_serves_rawsocket_websocket_and_http() {
    for shards in [1, 2] {
        let (_r, addr) = universal_router(shards);
        let mut cs: Vec<Client> = Vec::new();
        for ser in Ser::ALL {
            cs.push(Client::join_raw(addr, ser));
            cs.push(Client::join_ws(addr, ser));
        }
        let sub = cs[0].subscribe("com.universal", "{}");
        for i in 1..cs.len() {
            let req = cs[i].next_req();
            cs[i].send(&publish(&rich_args(), &rich_kwargs(), "com.universal", req, true));
            cs[i].expect(PUBLISHED);
            let ev = cs[0].expect(EVENT);
            assert_eq!((ev.at(1).u(), ev.at(4), ev.at(5)), (sub, &rich_args(), &rich_kwargs()));
        }
        let m = http_request(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(m.status, 200);
        assert!(m.body_text().contains("switchyard_sessions"));
        let nf = http_request(addr, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(nf.status, 404);
    }
}

#[test]
fn the_universal_port_tells_clients_apart_one_byte_at_a_time() {
    let (_r, addr) = universal_router(1);
    // RawSocket: the handshake and HELLO, one byte per write
    let mut s = connect(addr);
    s.set_nodelay(true).unwrap();
    let mut bytes = vec![0x7F, 0xF3, 0, 0];
    bytes.extend(rs_frame(rs_type::WAMP, &encode(Ser::Cbor, &hello())));
    for b in &bytes {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut c = Client::over(
        Conn {
            stream: s,
            buf: Vec::new(),
            framing: Framing::RawSocket,
        },
        Ser::Cbor,
    );
    let reply = c.conn.read_exact(4).expect("handshake reply");
    assert_eq!(reply, [0x7F, reply[1], 0, 0]);
    assert_eq!(reply[1] & 0x0f, 3);
    assert!(c.expect(WELCOME).at(1).u() > 0);
    // WebSocket: the upgrade request one byte per write
    let mut s = connect(addr);
    s.set_nodelay(true).unwrap();
    for b in upgrade_request("/ws", WS_KEY, Some("wamp.2.json")).as_bytes() {
        s.write_all(&[*b]).unwrap();
    }
    let mut buf = Vec::new();
    let resp = read_http_response(&mut s, &mut buf);
    assert_eq!(resp.status, 101);
    let mut c = Client::over(
        Conn {
            stream: s,
            buf,
            framing: Framing::WebSocket,
        },
        Ser::Json,
    );
    c.hello();
    // a RawSocket client that sends HELLO right behind its handshake
    let mut s = connect(addr);
    let mut both = vec![0x7F, 0xF1, 0, 0];
    both.extend(rs_frame(rs_type::WAMP, &encode(Ser::Json, &hello())));
    s.write_all(&both).unwrap();
    let mut c = Client::over(
        Conn {
            stream: s,
            buf: Vec::new(),
            framing: Framing::RawSocket,
        },
        Ser::Json,
    );
    c.conn.read_exact(4).expect("handshake reply");
    c.expect(WELCOME);
    // neither: an HTTP error, and the port goes on serving
    let resp = http_request(addr, "\x16\x03\x01 not http\r\n\r\n");
    assert_eq!(resp.status, 400);
    Client::join_raw(addr, Ser::MsgPack).sync();
}
