//! WAMP over RawSocket: the handshake, framing rules, sessions and RPC.

use switchyard::wamp::Value;

use crate::common::*;

#[test]
fn handshake_announces_the_message_limit() {
    let r = Router::start(1);
    // 2^(9+7) = 65536 = max_message_size.
    let (reply, _c) = rs_handshake(r.rs, [0x7F, 0xF2, 0, 0]);
    assert_eq!(reply, Some([0x7F, 0x72, 0, 0]));
    let (reply, _c) = rs_handshake(r.rs, [0x7F, 0x01, 0, 0]);
    assert_eq!(reply, Some([0x7F, 0x71, 0, 0]));
}

#[test]
fn handshake_never_announces_more_than_the_limit_enforced() {
    // 100,000 bytes is no power of two: 2^16 = 65536 is announced, not 2^17.
    let r = Router::start_with(1, "", "max_message_size = 100000", &[]);
    let (reply, _c) = rs_handshake(r.rs, [0x7F, 0xF2, 0, 0]);
    assert_eq!(reply, Some([0x7F, 0x72, 0, 0]));
}

#[test]
fn unsupported_serializer_is_refused() {
    let r = Router::start(1);
    let (reply, mut c) = rs_handshake(r.rs, [0x7F, 0xF5, 0, 0]);
    assert_eq!(reply, Some([0x7F, 0x10, 0, 0]));
    c.expect_eof();
}

#[test]
fn reserved_bytes_must_be_zero() {
    let r = Router::start(1);
    let (reply, mut c) = rs_handshake(r.rs, [0x7F, 0xF2, 0, 1]);
    assert_eq!(reply, Some([0x7F, 0x30, 0, 0]));
    c.expect_eof();
    let (reply, mut c) = rs_handshake(r.rs, [0x7F, 0xF2, 8, 0]);
    assert_eq!(reply, Some([0x7F, 0x30, 0, 0]));
    c.expect_eof();
}

#[test]
fn bad_magic_is_dropped_without_reply() {
    let r = Router::start(1);
    let (reply, _c) = rs_handshake(r.rs, *b"GET ");
    assert_eq!(reply, None, "the router must fail the connection without a reply");
    let (reply, _c) = rs_handshake(r.rs, [0x7E, 0xF2, 0, 0]);
    assert_eq!(reply, None);
}

#[test]
fn ping_gets_pong_with_same_payload() {
    let r = Router::start(1);
    let mut c = Client::raw(r.rs, Ser::MsgPack);
    c.conn.write(&rs_frame(rs_type::PING, b"\x01\x02\x03 ping payload"));
    assert_eq!(c.recv(), Incoming::Pong(b"\x01\x02\x03 ping payload".to_vec()));
    c.conn.write(&rs_frame(rs_type::PING, b""));
    assert_eq!(c.recv(), Incoming::Pong(Vec::new()));
    // The connection still carries WAMP afterwards.
    c.hello();
    // An unsolicited PONG is ignored.
    c.conn.write(&rs_frame(rs_type::PONG, b"x"));
    assert!(c.sync().is_empty());
}

#[test]
fn frame_over_the_limit_closes_the_connection() {
    let r = Router::start(1);
    let mut c = Client::join_raw(r.rs, Ser::MsgPack);
    // Header only: 65537 bytes announced.
    c.conn.write(&[0, 0x01, 0x00, 0x01]);
    c.conn.expect_eof();

    // Exactly the limit is fine.
    let mut c = Client::join_raw(r.rs, Ser::Json);
    let head = r#"[16, 1, {"acknowledge": true}, "com.big", [""#;
    let tail = r#""]]"#;
    let msg = format!("{head}{}{tail}", "y".repeat(65536 - head.len() - tail.len()));
    assert_eq!(msg.len(), 65536);
    c.send_bytes(msg.as_bytes());
    c.expect(PUBLISHED);
}

#[test]
fn unknown_frame_type_closes_the_connection() {
    let r = Router::start(1);
    let mut c = Client::join_raw(r.rs, Ser::MsgPack);
    c.conn.write(&rs_frame(3, b"??"));
    c.conn.expect_eof();
    let mut c = Client::join_raw(r.rs, Ser::MsgPack);
    c.conn.write(&rs_frame(7, b""));
    c.conn.expect_eof();
}

#[test]
fn hello_welcome_over_msgpack_and_json() {
    let r = Router::start(1);
    for ser in [Ser::MsgPack, Ser::Json] {
        let mut c = Client::raw(r.rs, ser);
        let w = c.hello();
        assert!(w.at(1).u() >= 1);
        assert_eq!(w.at(2).key("realm").s(), "realm1");
        assert!(matches!(w.at(2).key("roles").key("broker"), Value::Dict(_)));
        assert!(matches!(w.at(2).key("roles").key("dealer"), Value::Dict(_)));
        c.send_json(r#"[6, {}, "wamp.close.close_realm"]"#);
        assert_eq!(c.expect(GOODBYE).at(2).s(), "wamp.close.goodbye_and_out");
    }
}

#[test]
fn invalid_msgpack_aborts_with_protocol_violation() {
    let r = Router::start(1);
    let mut c = Client::join_raw(r.rs, Ser::MsgPack);
    c.send_bytes(&[0x94, 0x10, 0x01]); // an array of 4 that ends after 2
    c.expect_abort("wamp.error.protocol_violation");
}

#[test]
fn rpc_round_trip_over_msgpack() {
    let r = Router::start(1);
    let mut callee = Client::join_raw(r.rs, Ser::MsgPack);
    let mut caller = Client::join_raw(r.rs, Ser::MsgPack);
    let reg = callee.register("com.example.add");

    let args = Value::List(vec![
        Value::UInt(2),
        Value::Int(-3),
        Value::Str("grüße".into()),
        Value::Bytes(vec![0, 1, 255]),
        Value::Float(1.5),
        Value::Null,
    ]);
    let kwargs = parse_json(r#"{"mode": "sum", "nested": {"list": [true, false]}}"#);
    let call = Value::List(vec![
        Value::UInt(CALL),
        Value::UInt(41),
        Value::Dict(Default::default()),
        Value::Str("com.example.add".into()),
        args.clone(),
        kwargs.clone(),
    ]);
    caller.send(&call);

    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(2).u(), reg, "{inv:?}");
    assert_eq!(inv.at(4), &args);
    assert_eq!(inv.at(5), &kwargs);
    let inv_id = inv.at(1).u();
    let result_args = Value::List(vec![Value::Int(-1), Value::Bytes(vec![9, 8, 7])]);
    let result_kwargs = parse_json(r#"{"ok": true}"#);
    callee.send(&Value::List(vec![
        Value::UInt(YIELD),
        Value::UInt(inv_id),
        Value::Dict(Default::default()),
        result_args.clone(),
        result_kwargs.clone(),
    ]));

    let res = caller.expect(RESULT);
    assert_eq!(res.at(1).u(), 41, "{res:?}");
    assert_eq!(res.at(3), &result_args);
    assert_eq!(res.at(4), &result_kwargs);

    // A JSON caller on WebSocket reaches the same MessagePack callee.
    let mut json_caller = Client::join_ws(r.ws, Ser::Json);
    json_caller.send_json(r#"[48, 5, {}, "com.example.add", [1, "two"], {"three": 3}]"#);
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(4), &parse_json(r#"[1, "two"]"#));
    assert_eq!(inv.at(5), &parse_json(r#"{"three": 3}"#));
    let inv_id = inv.at(1).u();
    callee.send(&parse_json(&format!(r#"[70, {inv_id}, {{}}, ["done"]]"#)));
    let res = json_caller.expect(RESULT);
    assert_eq!(res.at(1).u(), 5);
    assert_eq!(res.at(3), &parse_json(r#"["done"]"#));

    // A callee error reaches the caller.
    caller.send_json(r#"[48, 42, {}, "com.example.add", []]"#);
    let inv = callee.expect(INVOCATION);
    let inv_id = inv.at(1).u();
    callee.send_json(&format!(r#"[8, 68, {inv_id}, {{}}, "com.example.error.bad", ["nope"]]"#));
    let err = caller.expect_error(CALL, 42, "com.example.error.bad");
    assert_eq!(err.at(5), &parse_json(r#"["nope"]"#));
}

#[test]
fn reserved_frame_bits_close_the_connection() {
    let r = Router::start(1);
    let mut c = Client::join_raw(r.rs, Ser::MsgPack);
    c.conn.write(&[0x10, 0, 0, 0]);
    c.conn.expect_eof();
}

/// Spec (RawSocket handshake): "When the handshake completes successfully,
/// a Router MUST NOT send messages larger than this size" (the client's
/// announced maximum).
#[test]
fn router_respects_the_clients_maximum_length() {
    let r = Router::start(1);
    // 0x02: MessagePack, 2^9 = 512 octets at most.
    let (reply, conn) = rs_handshake(r.rs, [0x7F, 0x02, 0, 0]);
    assert_eq!(reply, Some([0x7F, 0x72, 0, 0]));
    let mut small = Client::over(conn, Ser::MsgPack);
    // the full WELCOME (every feature listed) is larger than 512 bytes: this
    // client gets the roles without their feature lists
    let w = small.hello();
    assert!(w.at(2).key("roles").get("broker").is_some(), "{w:?}");
    assert!(w.at(2).key("roles").get("dealer").is_some(), "{w:?}");
    small.subscribe("com.size", "{}");
    let mut publisher = Client::join_ws(r.ws, Ser::Json);
    let big = "z".repeat(1000);
    publisher.send_json(&format!(r#"[16, 1, {{"acknowledge": true}}, "com.size", ["{big}"]]"#));
    publisher.expect(PUBLISHED);
    publisher.send_json(r#"[16, 2, {"acknowledge": true}, "com.size", ["small"]]"#);
    publisher.expect(PUBLISHED);
    match small.recv() {
        Incoming::Message(m) => {
            assert!(
                m.len() <= 512,
                "the router sent a {}-byte message to a client that accepts 512",
                m.len()
            );
            assert_eq!(decode(Ser::MsgPack, &m).at(4), &parse_json(r#"["small"]"#));
        }
        other => panic!("expected the small EVENT, got {other:?}"),
    }
}

#[test]
fn handshake_and_hello_in_one_write() {
    let r = Router::start(1);
    let mut conn = Conn {
        stream: connect(r.rs),
        buf: Vec::new(),
        framing: Framing::RawSocket,
    };
    let mut bytes = vec![0x7F, 0xF1, 0, 0];
    bytes.extend(rs_frame(rs_type::WAMP, format!(r#"[1, "realm1", {ROLES}]"#).as_bytes()));
    conn.write(&bytes);
    assert_eq!(conn.read_exact(4), Some(vec![0x7F, 0x71, 0, 0]));
    let mut c = Client::over(conn, Ser::Json);
    c.expect(WELCOME);
    // A frame in pieces: header split, then the payload.
    let frame = rs_frame(rs_type::WAMP, br#"[32, 1, {}, "com.split"]"#);
    c.conn.write(&frame[..2]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    c.conn.write(&frame[2..7]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    c.conn.write(&frame[7..]);
    c.expect(SUBSCRIBED);
}
