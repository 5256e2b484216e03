//! permessage-deflate (RFC 7692) on the WebSocket listener, with a client
//! written here on flate2: negotiation, compressed WAMP both ways with and
//! without context takeover, the threshold, bounds on what a client can make
//! the router inflate, and the memory budget.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use switchyard::wamp::Value;

use crate::common::*;

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// A router whose WebSocket listener offers permessage-deflate with `deflate`
/// (the lines of `[listener.deflate]`), plus `limits`.
fn router(shards: usize, deflate: &str, limits: &str) -> (Router, std::net::SocketAddr) {
    let extra = format!("[[listener]]\ntype = \"universal\"\nbind = \"127.0.0.1:0\"\n[listener.deflate]\n{deflate}\n");
    let r = Router::start_with(shards, &extra, limits, &[]);
    let addr = r.listener("Universal").expect("universal listener");
    (r, addr)
}

/// A WebSocket client that compresses what it sends and inflates what
/// arrives with RSV1.
struct Zc {
    conn: Conn,
    ser: Ser,
    c: Compress,
    d: Decompress,
    reset_c: bool,
    reset_d: bool,
    /// (compressed, payload) of every data message received.
    compressed_in: usize,
}

impl Zc {
    /// Upgrades with `offer`; returns the client and the extension header
    /// the router answered with.
    fn connect(addr: std::net::SocketAddr, ser: Ser, offer: &str) -> (Zc, Option<String>) {
        let req = upgrade_request("/ws", WS_KEY, Some(ser.subprotocol()))
            .replace("\r\n\r\n", &format!("\r\nSec-WebSocket-Extensions: {offer}\r\n\r\n"));
        let (resp, conn) = ws_handshake(addr, &req);
        assert_eq!(resp.status, 101, "{resp:?}");
        let ext = resp.header("sec-websocket-extensions").map(str::to_owned);
        let reset_d = ext.as_deref().is_some_and(|e| e.contains("server_no_context_takeover"));
        let reset_c = ext.as_deref().is_some_and(|e| e.contains("client_no_context_takeover"));
        let zc = Zc {
            conn,
            ser,
            c: Compress::new_with_window_bits(Compression::default(), false, 15),
            d: Decompress::new_with_window_bits(false, 15),
            reset_c,
            reset_d,
            compressed_in: 0,
        };
        (zc, ext)
    }

    fn deflate(&mut self, msg: &[u8]) -> Vec<u8> {
        // room for incompressible input and the flush
        let mut out = Vec::with_capacity(msg.len() * 2 + 64);
        let before = self.c.total_in();
        self.c.compress_vec(msg, &mut out, FlushCompress::Sync).unwrap();
        assert_eq!((self.c.total_in() - before) as usize, msg.len());
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        if self.reset_c {
            self.c.reset();
        }
        out
    }

    fn send_compressed_bytes(&mut self, msg: &[u8]) {
        let op = if self.ser == Ser::Json { ws_op::TEXT } else { ws_op::BINARY };
        let body = self.deflate(msg);
        let mut frame = ws_frame(true, op, &body, true);
        frame[0] |= 0x40; // RSV1: compressed
        self.conn.write(&frame);
    }

    fn send(&mut self, v: &Value) {
        let bytes = encode(self.ser, v);
        self.send_compressed_bytes(&bytes);
    }

    /// The next WAMP message, inflated if it came compressed.
    fn recv(&mut self) -> Value {
        let (rsv1, payload) = self.recv_frame();
        let data = if rsv1 {
            self.compressed_in += 1;
            let out = inflate(&mut self.d, payload);
            if self.reset_d {
                self.d.reset(false);
            }
            out
        } else {
            payload
        };
        decode(self.ser, &data)
    }

    fn expect(&mut self, code: u64) -> Value {
        let m = self.recv();
        assert_eq!(m.code(), code, "expected {code}, got {m:?}");
        m
    }

    /// One raw frame: RSV1 and payload (data frames only).
    fn recv_frame(&mut self) -> (bool, Vec<u8>) {
        let c = &mut self.conn;
        let head = c.read_exact(2).expect("a frame");
        assert_eq!(head[0] & 0x30, 0, "RSV2/RSV3 set");
        let len = match head[1] & 0x7f {
            126 => {
                let b = c.read_exact(2).unwrap();
                u16::from_be_bytes([b[0], b[1]]) as usize
            }
            127 => {
                let b = c.read_exact(8).unwrap();
                u64::from_be_bytes(b.try_into().unwrap()) as usize
            }
            l => l as usize,
        };
        let payload = c.read_exact(len).expect("frame payload");
        let op = head[0] & 0x0f;
        assert!(
            op == ws_op::TEXT || op == ws_op::BINARY,
            "expected a data frame, got opcode {op}: {payload:?}"
        );
        (head[0] & 0x40 != 0, payload)
    }

    /// The close code the router sends next.
    fn expect_close(&mut self) -> (u16, String) {
        match self.conn.recv() {
            Incoming::Close(code, reason) => (code, reason),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Inflates one message (the payload of a frame with RSV1).
fn inflate(d: &mut Decompress, mut input: Vec<u8>) -> Vec<u8> {
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(4096);
    let start = d.total_in();
    loop {
        d.decompress_vec(&input[(d.total_in() - start) as usize..], &mut out, FlushDecompress::Sync)
            .expect("the router's DEFLATE data inflates");
        if (d.total_in() - start) as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

fn hello() -> Value {
    parse_json(&format!(r#"[1, "realm1", {ROLES}]"#))
}

#[test]
fn compressed_wamp_both_ways_with_and_without_context_takeover() {
    for shards in [1, 2] {
        for (settings, offer) in [
            ("threshold = 0", "permessage-deflate; client_max_window_bits"),
            (
                "threshold = 0",
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            ),
            ("threshold = 0\ncontext_takeover = false", "permessage-deflate"),
            (
                "threshold = 0\nmax_window_bits = 10",
                "permessage-deflate; client_max_window_bits; server_max_window_bits=12",
            ),
            ("threshold = 0", "permessage-deflate; server_max_window_bits=8"),
        ] {
            let (r, addr) = router(shards, settings, "");
            for ser in Ser::ALL {
                let (mut z, ext) = Zc::connect(addr, ser, offer);
                let ext = ext.unwrap_or_else(|| panic!("{offer}: not negotiated"));
                assert!(ext.starts_with("permessage-deflate"), "{ext}");
                if settings.contains("context_takeover = false") || offer.contains("no_context_takeover") {
                    assert!(
                        ext.contains("server_no_context_takeover") && ext.contains("client_no_context_takeover"),
                        "{ext}"
                    );
                }
                if offer.ends_with("=8") {
                    assert!(ext.contains("server_max_window_bits=8"), "{ext}");
                }
                if settings.contains("max_window_bits = 10") {
                    assert!(
                        ext.contains("server_max_window_bits=10") && ext.contains("client_max_window_bits=10"),
                        "{ext}"
                    );
                }
                z.send(&hello());
                let welcome = z.expect(WELCOME);
                let transport = welcome.at(2).key("transport");
                assert_eq!(transport.key("compression").s(), "permessage-deflate");
                assert_eq!(transport.key("protocol").s(), ser.subprotocol());
                let topic = format!("com.deflate.{shards}.{ser:?}");
                let mut plain = Client::join_ws(r.ws, Ser::Json);
                let sub = plain.subscribe(&topic, "{}");
                z.send(&parse_json(&format!(r#"[32, 1, {{}}, "{topic}"]"#)));
                let zsub = z.expect(SUBSCRIBED).at(2).u();
                // repetitive payloads, several in a row: with context
                // takeover the later ones lean on the earlier ones
                for i in 0..5u64 {
                    let text = format!("{}-{i}", "compressible ".repeat(200));
                    let args = Value::List(vec![Value::UInt(i), Value::Str(text.clone())]);
                    z.send(&Value::List(vec![
                        Value::UInt(PUBLISH),
                        Value::UInt(10 + i),
                        parse_json(r#"{"acknowledge": true, "exclude_me": false}"#),
                        Value::Str(topic.clone()),
                        args.clone(),
                    ]));
                    let mut got = [z.recv(), z.recv()];
                    got.sort_by_key(|m| m.code());
                    assert_eq!(got[0].code(), PUBLISHED);
                    assert_eq!((got[1].code(), got[1].at(1).u(), got[1].at(4)), (EVENT, zsub, &args));
                    let ev = plain.expect(EVENT);
                    assert_eq!((ev.at(1).u(), ev.at(4)), (sub, &args));
                }
                // a 256-byte window: only SUBSCRIBED and the PUBLISHEDs are
                // short enough to go compressed, each on its own
                let least = if offer.ends_with("=8") { 6 } else { 10 };
                assert!(
                    z.compressed_in >= least,
                    "{offer}: only {} compressed messages came",
                    z.compressed_in
                );
            }
            assert!(r.metric_sum("deflate_messages") >= 18, "{offer}");
        }
    }
}

#[test]
fn short_messages_stay_uncompressed_below_the_threshold() {
    let (_r, addr) = router(1, "threshold = 1024", "");
    let (mut z, ext) = Zc::connect(addr, Ser::Json, "permessage-deflate");
    assert_eq!(ext.as_deref(), Some("permessage-deflate"));
    z.send(&hello());
    // the WELCOME is under 1 KiB
    let (rsv1, _) = z.recv_frame();
    assert!(!rsv1, "a short WELCOME came compressed");
    z.send(&parse_json(r#"[32, 1, {}, "com.t"]"#));
    z.expect(SUBSCRIBED);
    // a long EVENT goes compressed, the short PUBLISHED before it does not
    let long = "x".repeat(2000);
    z.send(&parse_json(&format!(
        r#"[16, 2, {{"acknowledge": true, "exclude_me": false}}, "com.t", ["{long}"]]"#
    )));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (rsv1, payload) = z.recv_frame();
        let m = if rsv1 {
            decode(Ser::Json, &inflate(&mut z.d, payload))
        } else {
            decode(Ser::Json, &payload)
        };
        seen.push((m.code(), rsv1));
    }
    seen.sort();
    assert_eq!(seen, [(PUBLISHED, false), (EVENT, true)]);
}

#[test]
fn bad_compressed_input_fails_the_connection_with_the_right_code() {
    let (r, addr) = router(1, "threshold = 0", "max_message_size = 65536");
    // not DEFLATE data
    let (mut z, _) = Zc::connect(addr, Ser::Json, "permessage-deflate");
    let mut frame = ws_frame(true, ws_op::TEXT, &[0xff, 0xfe, 0xfd, 0xfc], true);
    frame[0] |= 0x40;
    z.conn.write(&frame);
    assert_eq!(z.expect_close().0, 1007);
    // a bomb: 100 KB of one letter in a few hundred bytes, over the 64 KiB limit
    let (mut z, _) = Zc::connect(addr, Ser::Json, "permessage-deflate");
    let bomb = z.deflate(&vec![b'['; 100_000]);
    assert!(bomb.len() < 1000);
    let mut frame = ws_frame(true, ws_op::TEXT, &bomb, true);
    frame[0] |= 0x40;
    z.conn.write(&frame);
    assert_eq!(z.expect_close().0, 1009);
    // RSV1 on a continuation frame, and on a control frame
    for bad in [
        {
            let mut f = ws_frame(false, ws_op::TEXT, b"[1,", true);
            let mut g = ws_frame(true, ws_op::CONT, b"]", true);
            g[0] |= 0x40;
            f.append(&mut g);
            f
        },
        {
            let mut f = ws_frame(true, ws_op::PING, b"x", true);
            f[0] |= 0x40;
            f
        },
    ] {
        let (mut z, _) = Zc::connect(addr, Ser::Json, "permessage-deflate");
        z.conn.write(&bad);
        assert_eq!(z.expect_close().0, 1002);
    }
    // RSV1 where nothing was negotiated
    let mut c = Client::ws(r.ws, Ser::Json);
    let mut frame = ws_frame(true, ws_op::TEXT, b"[]", true);
    frame[0] |= 0x40;
    c.conn.write(&frame);
    assert!(matches!(c.recv(), Incoming::Close(1002, _)));
    // and the router serves the next compressed client
    let (mut z, _) = Zc::connect(addr, Ser::Cbor, "permessage-deflate");
    z.send(&hello());
    z.expect(WELCOME);
}

#[test]
fn deflate_memory_is_counted_and_bounded() {
    // room for about two connections' state at 15 bits (~300 KiB each)
    let (r, addr) = router(2, "threshold = 0", "max_deflate_memory = 700000");
    let mut held = Vec::new();
    for _ in 0..2 {
        let (mut z, ext) = Zc::connect(addr, Ser::Json, "permessage-deflate");
        assert!(ext.is_some());
        z.send(&hello());
        z.expect(WELCOME);
        held.push(z);
    }
    let used = r.metric_sum("deflate_memory");
    assert!(used > 2 * 256 * 1024 && used <= 700_000, "deflate_memory {used}");
    // the third is served, uncompressed
    let (mut z, ext) = Zc::connect(addr, Ser::Json, "permessage-deflate");
    assert_eq!(ext, None);
    z.conn.write(&ws_frame(true, ws_op::TEXT, &encode(Ser::Json, &hello()), true));
    let (rsv1, welcome) = z.recv_frame();
    assert!(!rsv1);
    assert_eq!(decode(Ser::Json, &welcome).code(), WELCOME);
    assert_eq!(r.metric_sum("deflate_declined"), 1);
    // closing gives the budget back
    for mut z in held {
        z.send(&parse_json(r#"[6, {}, "wamp.close.close_realm"]"#));
        z.expect(GOODBYE);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while r.metric_sum("deflate_memory") != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(r.metric_sum("deflate_memory"), 0);
    let (_z, ext) = Zc::connect(addr, Ser::Json, "permessage-deflate");
    assert!(ext.is_some(), "the budget did not come back");
}
