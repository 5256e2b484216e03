//! WAMP over WebSocket: the HTTP upgrade, framing rules, and session
//! establishment and protocol violations.

use std::io::Write;

use switchyard::wamp::Value;

use crate::common::*;

#[test]
fn upgrade_returns_101_with_accept_and_json_subprotocol() {
    let r = Router::start(1);
    let (resp, _conn) = ws_handshake(r.ws, &upgrade_request("/ws", WS_KEY, Some("wamp.2.json")));
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("sec-websocket-accept"), Some(WS_ACCEPT));
    assert_eq!(resp.header("sec-websocket-protocol"), Some("wamp.2.json"));
    assert!(
        resp.header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{resp:?}"
    );
    assert!(
        resp.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{resp:?}"
    );

    // A second key, accept value computed independently (SHA-1 + base64).
    let (resp, _conn) = ws_handshake(r.ws, &upgrade_request("/ws", "x3JJHMbDL1EzLkh9GBhXDw==", Some("wamp.2.json")));
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("sec-websocket-accept"), Some("HSmrc0sMlYUkAGmm5OPpG2HaGWk="));
}

#[test]
fn upgrade_negotiates_msgpack_when_offered_first() {
    let r = Router::start(1);
    let (resp, conn) = ws_handshake(r.ws, &upgrade_request("/ws", WS_KEY, Some("wamp.2.msgpack, wamp.2.json")));
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("sec-websocket-protocol"), Some("wamp.2.msgpack"));
    // An unknown subprotocol before the WAMP ones is skipped.
    let (resp2, _c) = ws_handshake(r.ws, &upgrade_request("/ws", WS_KEY, Some("foo.bar, wamp.2.json")));
    assert_eq!(resp2.status, 101, "{resp2:?}");
    assert_eq!(resp2.header("sec-websocket-protocol"), Some("wamp.2.json"));

    // The session then speaks MessagePack in binary frames.
    let mut c = Client::over(conn, Ser::MsgPack);
    c.conn.write(&ws_frame(
        true,
        ws_op::BINARY,
        &encode(Ser::MsgPack, &parse_json(&format!(r#"[1, "realm1", {ROLES}]"#))),
        true,
    ));
    match c.recv() {
        Incoming::Message(bytes) => {
            let w = decode(Ser::MsgPack, &bytes);
            assert_eq!(w.code(), WELCOME, "{w:?}");
            assert_eq!(w.at(2).key("realm").s(), "realm1");
        }
        other => panic!("expected WELCOME, got {other:?}"),
    }
}

#[test]
fn upgrade_without_wamp_subprotocol_is_400() {
    let r = Router::start(1);
    for offered in [None, Some("mqtt, chat")] {
        let (resp, mut conn) = ws_handshake(r.ws, &upgrade_request("/ws", WS_KEY, offered));
        assert_eq!(resp.status, 400, "{resp:?}");
        assert!(resp.body_text().contains("wamp.2.json"), "body: {:?}", resp.body_text());
        conn.expect_eof();
    }
}

#[test]
fn wrong_path_is_404_and_missing_upgrade_is_426() {
    let r = Router::start(1);
    let (resp, _) = ws_handshake(r.ws, &upgrade_request("/nowhere", WS_KEY, Some("wamp.2.json")));
    assert_eq!(resp.status, 404, "{resp:?}");
    assert!(resp.body_text().contains("/ws"), "body: {:?}", resp.body_text());

    let resp = http_request(r.ws, "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(resp.status, 426, "{resp:?}");
    assert_eq!(resp.header("sec-websocket-version"), Some("13"));
}

#[test]
fn hello_welcome_over_json() {
    let r = Router::start(1);
    let mut c = Client::ws(r.ws, Ser::Json);
    let w = c.hello();
    assert_eq!(w.len(), 3, "{w:?}");
    let id = w.at(1).u();
    assert!((1..=1u64 << 53).contains(&id), "session ID {id}");
    let details = w.at(2);
    assert_eq!(details.key("realm").s(), "realm1");
    let roles = details.key("roles");
    assert!(matches!(roles.key("broker"), Value::Dict(_)), "{roles:?}");
    assert!(matches!(roles.key("dealer"), Value::Dict(_)), "{roles:?}");
    // Two sessions get different IDs.
    let c2 = Client::join_ws(r.ws, Ser::Json);
    assert_ne!(c2.session, id);
}

#[test]
fn unknown_realm_is_aborted() {
    let r = Router::start(1);
    let mut c = Client::ws(r.ws, Ser::Json);
    c.send_json(&format!(r#"[1, "no.such.realm", {ROLES}]"#));
    c.expect_abort("wamp.error.no_such_realm");
}

#[test]
fn goodbye_is_answered_with_goodbye_and_out() {
    let r = Router::start(1);
    let mut c = Client::join_ws(r.ws, Ser::Json);
    c.send_json(r#"[6, {}, "wamp.close.close_realm"]"#);
    let m = c.expect(GOODBYE);
    assert_eq!(m.at(2).s(), "wamp.close.goodbye_and_out", "{m:?}");
    // The session is gone but the transport stays open: a new HELLO works.
    c.hello();
}

#[test]
fn ping_gets_pong_with_same_payload() {
    let r = Router::start(1);
    let mut c = Client::ws(r.ws, Ser::Json);
    c.conn.write(&ws_frame(true, ws_op::PING, b"are you there? \x00\xff", true));
    assert_eq!(c.recv(), Incoming::Pong(b"are you there? \x00\xff".to_vec()));
    // Also in the middle of a fragmented message (control frames may interleave).
    let hello = format!(r#"[1, "realm1", {ROLES}]"#);
    let (a, b) = hello.as_bytes().split_at(5);
    c.conn.write(&ws_frame(false, ws_op::TEXT, a, true));
    c.conn.write(&ws_frame(true, ws_op::PING, b"", true));
    c.conn.write(&ws_frame(true, ws_op::CONT, b, true));
    assert_eq!(c.recv(), Incoming::Pong(Vec::new()));
    c.expect(WELCOME);
}

#[test]
fn fragmented_hello_over_three_frames() {
    let r = Router::start(1);
    let mut c = Client::ws(r.ws, Ser::Json);
    let hello = format!(r#"[1, "realm1", {ROLES}]"#);
    let b = hello.as_bytes();
    let (p1, rest) = b.split_at(4);
    let (p2, p3) = rest.split_at(rest.len() / 2);
    c.conn.write(&ws_frame(false, ws_op::TEXT, p1, true));
    c.conn.write(&ws_frame(false, ws_op::CONT, p2, true));
    c.conn.write(&ws_frame(true, ws_op::CONT, p3, true));
    let w = c.expect(WELCOME);
    assert_eq!(w.at(2).key("realm").s(), "realm1");
}

fn expect_close(c: &mut Client, code: u16) {
    match c.recv() {
        Incoming::Close(got, reason) => assert_eq!(got, code, "close reason {reason:?}"),
        other => panic!("expected close {code}, got {other:?}"),
    }
    c.conn.expect_eof();
}

#[test]
fn unmasked_frame_closes_with_1002() {
    let r = Router::start(1);
    let mut c = Client::ws(r.ws, Ser::Json);
    let hello = format!(r#"[1, "realm1", {ROLES}]"#);
    c.conn.write(&ws_frame(true, ws_op::TEXT, hello.as_bytes(), false));
    expect_close(&mut c, 1002);
}

#[test]
fn invalid_utf8_text_closes_with_1007() {
    let r = Router::start(1);
    let mut c = Client::join_ws(r.ws, Ser::Json);
    c.conn.write(&ws_frame(true, ws_op::TEXT, b"[16, 1, {}, \"a\xff\xfe\"]", true));
    expect_close(&mut c, 1007);
}

#[test]
fn oversized_message_closes_with_1009() {
    let r = Router::start(1);
    let mut c = Client::join_ws(r.ws, Ser::Json);
    // Only the header of a 65537-byte frame: the limit applies to the
    // announced length, and the router must not wait for the payload.
    let mut f = ws_frame(true, ws_op::TEXT, &[], true);
    f.truncate(1);
    f.push(0x80 | 127);
    f.extend_from_slice(&65537u64.to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    c.conn.write(&f);
    expect_close(&mut c, 1009);

    // A message of exactly the limit is accepted.
    let mut c = Client::join_ws(r.ws, Ser::Json);
    let head = r#"[16, 1, {"acknowledge": true}, "com.big", [""#;
    let tail = r#""]]"#;
    let pad = "x".repeat(65536 - head.len() - tail.len());
    let msg = format!("{head}{pad}{tail}");
    assert_eq!(msg.len(), 65536);
    c.send_bytes(msg.as_bytes());
    c.expect(PUBLISHED);

    // Fragments that together exceed the limit.
    let mut c = Client::join_ws(r.ws, Ser::Json);
    c.conn.write(&ws_frame(false, ws_op::TEXT, &vec![b' '; 40000], true));
    c.conn.write(&ws_frame(true, ws_op::CONT, &vec![b' '; 30000], true));
    expect_close(&mut c, 1009);
}

#[test]
fn bad_json_after_welcome_aborts_with_protocol_violation() {
    let r = Router::start(1);
    let mut c = Client::join_ws(r.ws, Ser::Json);
    c.send_bytes(b"[16, 1, {}");
    c.expect_abort("wamp.error.protocol_violation");
    assert!(r.metric_sum("protocol_violations") >= 1);
}

/// A frame that breaks RFC 6455, received in the same read as a message that
/// breaks WAMP, decides the close code: the ABORT is sent, but the close is
/// the frame error's (Autobahn cases 3.2-3.4, 4.x, 5.15, 6.x).
#[test]
fn a_frame_error_after_a_protocol_violation_decides_the_close_code() {
    let r = Router::start(1);
    for (bad_frame, code) in [
        (ws_frame(true, ws_op::TEXT, &[0xff, 0xfe], true), 1007), // invalid UTF-8
        (ws_frame(true, 0x3, b"", true), 1002),                   // reserved opcode
    ] {
        let mut c = Client::join_ws(r.ws, Ser::Json);
        let mut bytes = ws_frame(true, ws_op::TEXT, b"not wamp", true);
        bytes.extend(bad_frame);
        c.conn.write(&bytes);
        let m = c.expect(ABORT);
        assert_eq!(m.at(2).s(), "wamp.error.protocol_violation");
        match c.recv() {
            Incoming::Close(got, _) => assert_eq!(got, code),
            other => panic!("expected close {code}, got {other:?}"),
        }
        c.conn.expect_eof();
    }
}

#[test]
fn message_type_never_sent_by_clients_aborts() {
    let r = Router::start(1);
    let mut c = Client::join_ws(r.ws, Ser::Json);
    c.send_json(r#"[36, 1, 2, {}, ["x"]]"#);
    c.expect_abort("wamp.error.protocol_violation");
}

#[test]
fn second_hello_aborts() {
    let r = Router::start(1);
    let mut c = Client::join_ws(r.ws, Ser::Json);
    c.send_json(&format!(r#"[1, "realm1", {ROLES}]"#));
    c.expect_abort("wamp.error.protocol_violation");
}

#[test]
fn message_before_hello_aborts() {
    let r = Router::start(1);
    let mut c = Client::ws(r.ws, Ser::Json);
    c.send_json(r#"[32, 1, {}, "com.topic"]"#);
    c.expect_abort("wamp.error.protocol_violation");
}

#[test]
fn other_sessions_survive_a_protocol_violation() {
    let r = Router::start(1);
    let mut sub = Client::join_ws(r.ws, Ser::Json);
    let mut publ = Client::join_ws(r.ws, Ser::Json);
    let mut bad = Client::join_ws(r.ws, Ser::Json);
    let sid = sub.subscribe("com.survive", "{}");

    bad.send_bytes(b"[16, 1, {}");
    bad.expect_abort("wamp.error.protocol_violation");

    publ.send_json(r#"[16, 7, {"acknowledge": true}, "com.survive", ["still here"], {"k": 1}]"#);
    let p = publ.expect(PUBLISHED);
    assert_eq!(p.at(1).u(), 7);
    let e = sub.expect(EVENT);
    assert_eq!(e.at(1).u(), sid);
    assert_eq!(e.at(2).u(), p.at(2).u(), "publication ID of EVENT and PUBLISHED");
    assert_eq!(e.at(4), &parse_json(r#"["still here"]"#));
    assert_eq!(e.at(5), &parse_json(r#"{"k": 1}"#));
}

#[test]
fn client_close_is_echoed() {
    let r = Router::start(1);
    let mut c = Client::join_ws(r.ws, Ser::Json);
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    c.conn.write(&ws_frame(true, ws_op::CLOSE, &payload, true));
    expect_close(&mut c, 1000);
    // The session left: the gauge drops back to zero.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while r.metric_sum("sessions") != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "sessions gauge stuck at {}",
            r.metric_sum("sessions")
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn oversized_ping_closes_with_1002() {
    let r = Router::start(1);
    let mut c = Client::ws(r.ws, Ser::Json);
    c.conn.write(&ws_frame(true, ws_op::PING, &[b'p'; 126], true));
    expect_close(&mut c, 1002);
}

#[test]
fn hello_without_roles_or_with_zero_request_id_aborts() {
    let r = Router::start(1);
    let mut c = Client::ws(r.ws, Ser::Json);
    c.send_json(r#"[1, "realm1", {"roles": {}}]"#);
    c.expect_abort("wamp.error.protocol_violation");

    let mut c = Client::join_ws(r.ws, Ser::Json);
    c.send_json(r#"[32, 0, {}, "com.topic"]"#);
    c.expect_abort("wamp.error.protocol_violation");
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let r = Router::start(1);
    let resp = http_request(r.ws, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(resp.status, 200);
    assert!(resp.header("content-type").is_some_and(|t| t.starts_with("text/plain")), "{resp:?}");
    let text = resp.body_text();
    for name in ["connections", "sessions", "mesh_sent", "events_delivered", "protocol_violations"] {
        assert!(text.contains(&format!("# TYPE switchyard_{name} ")), "no {name} in:\n{text}");
        assert_eq!(parse_metric(&text, name, 1).len(), 1);
    }
    let _c = Client::join_ws(r.ws, Ser::Json);
    assert_eq!(r.metric("sessions"), vec![1]);
}

#[test]
fn binary_payloads_are_converted_between_serializers() {
    let r = Router::start(1);
    let mut json_sub = Client::join_ws(r.ws, Ser::Json);
    let mut mp_sub = Client::join_ws(r.ws, Ser::MsgPack);
    let mut mp_pub = Client::join_raw(r.rs, Ser::MsgPack);
    json_sub.subscribe("com.bin", "{}");
    mp_sub.subscribe("com.bin", "{}");
    let args = Value::List(vec![Value::Bytes(vec![0, 1, 2, 255]), Value::Str("text".into())]);
    mp_pub.send(&Value::List(vec![
        Value::UInt(PUBLISH),
        Value::UInt(1),
        parse_json(r#"{"acknowledge": true}"#),
        Value::Str("com.bin".into()),
        args.clone(),
    ]));
    mp_pub.expect(PUBLISHED);
    assert_eq!(mp_sub.expect(EVENT).at(4), &args);
    // JSON carries binary as a string "\u0000" + base64.
    match json_sub.recv() {
        Incoming::Message(raw) => {
            let text = String::from_utf8(raw).unwrap();
            assert!(text.contains(r#""\u0000AAEC/w==""#), "{text}");
            assert_eq!(decode(Ser::Json, text.as_bytes()).at(4), &args);
        }
        other => panic!("expected EVENT, got {other:?}"),
    }
}

#[test]
fn partial_and_pipelined_writes() {
    let r = Router::start(1);
    // The upgrade request and HELLO in one TCP write.
    let mut bytes = upgrade_request("/ws", WS_KEY, Some("wamp.2.json")).into_bytes();
    bytes.extend(ws_frame(true, ws_op::TEXT, format!(r#"[1, "realm1", {ROLES}]"#).as_bytes(), true));
    let mut stream = connect(r.ws);
    std::io::Write::write_all(&mut stream, &bytes).unwrap();
    let mut buf = Vec::new();
    let resp = read_http_response(&mut stream, &mut buf);
    assert_eq!(resp.status, 101);
    let mut c = Client::over(
        Conn {
            stream,
            buf,
            framing: Framing::WebSocket,
        },
        Ser::Json,
    );
    c.expect(WELCOME);

    // A frame written one byte at a time.
    let frame = ws_frame(true, ws_op::TEXT, br#"[32, 1, {}, "com.bytewise"]"#, true);
    for b in &frame {
        c.conn.write(&[*b]);
        c.conn.stream.flush().unwrap();
    }
    c.expect(SUBSCRIBED);

    // Several messages in one write are all handled, in order.
    let mut batch = Vec::new();
    for req in 2..=6 {
        batch.extend(ws_frame(
            true,
            ws_op::TEXT,
            format!(r#"[48, {req}, {{}}, "com.none"]"#).as_bytes(),
            true,
        ));
    }
    c.conn.write(&batch);
    for req in 2..=6 {
        c.expect_error(CALL, req, "wamp.error.no_such_procedure");
    }
}
