//! WebSocket: the HTTP upgrade parser and the frame decoder on arbitrary
//! bytes.
//!
//! Input: byte 0 picks where the stream is split in two reads, byte 1 picks
//! the maximum message size, the rest is the byte stream from the client.
//!
//! Invariants (beyond "no panic"):
//! - every data message is at most the maximum size, a text message is valid
//!   UTF-8, a control payload is at most 125 bytes, a close code is one a peer
//!   may send (or 1005 for none), and each event consumes bytes;
//! - a decode error carries close code 1002, 1007 or 1009;
//! - splitting the stream into two reads yields exactly the events, the
//!   error and the leftover bytes of reading it at once;
//! - `parse_request` never panics; what it accepts lies within the input, an
//!   upgrade answers 101, a refusal has one of the status codes it documents.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard::transport::websocket::{parse_request, HttpRequest, WsDecoder, WsEvent, MAX_HANDSHAKE};

const MAXES: [usize; 8] = [0, 1, 2, 125, 126, 300, 65_536, 1 << 20];

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Needs more bytes; this many are buffered.
    More(usize),
    Error(u16),
}

fn check_event(ev: &WsEvent, max: usize) {
    match ev {
        WsEvent::Message { data, text } => {
            assert!(data.len() <= max, "message of {} bytes over the maximum {max}", data.len());
            if *text {
                assert!(std::str::from_utf8(data).is_ok(), "text message is not UTF-8");
            }
        }
        WsEvent::Ping(p) | WsEvent::Pong(p) => assert!(p.len() <= 125, "control payload of {} bytes", p.len()),
        WsEvent::Close { code, reason } => {
            assert!(
                *code == 1005 || matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999),
                "close code {code}"
            );
            assert!(reason.len() <= 123, "close reason of {} bytes", reason.len());
        }
    }
}

/// Decodes `chunks` read one after the other.
fn run(chunks: &[&[u8]], max: usize) -> (Vec<WsEvent>, End) {
    let mut dec = WsDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(ev)) => {
                    assert!(buf.len() < before, "an event consumed no bytes");
                    check_event(&ev, max);
                    events.push(ev);
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(matches!(e.code, 1002 | 1007 | 1009), "error {e:?} has close code {}", e.code);
                    return (events, End::Error(e.code));
                }
            }
        }
    }
    (events, End::More(buf.len()))
}

fuzz_target!(|data: &[u8]| {
    match parse_request(data, "/ws", true) {
        Ok(Some((req, n))) => {
            assert!(n <= data.len());
            if let HttpRequest::Upgrade { response, .. } = req {
                assert!(response.starts_with(b"HTTP/1.1 101 "));
                assert!(response.ends_with(b"\r\n\r\n"));
            }
        }
        Ok(None) => assert!(data.len() < MAX_HANDSHAKE),
        Err(rej) => {
            assert!(matches!(rej.status, 400 | 404 | 405 | 426 | 431), "status {}", rej.status);
            let r = rej.response();
            assert!(r.starts_with(format!("HTTP/1.1 {} ", rej.status).as_bytes()));
        }
    }

    if data.len() < 2 {
        return;
    }
    let max = MAXES[(data[1] & 7) as usize];
    let stream = &data[2..];
    let split = stream.len() * data[0] as usize / 255;
    let whole = run(&[stream], max);
    let parts = run(&[&stream[..split], &stream[split..]], max);
    assert_eq!(whole, parts, "split at {split} changes the outcome");
});
