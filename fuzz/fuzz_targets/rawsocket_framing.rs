//! RawSocket: the handshake and the frame decoder on arbitrary bytes.
//!
//! Input: byte 0 picks where the stream is split in two reads, byte 1 picks
//! the maximum message size, bytes 2..6 are the client's handshake and bytes
//! 2.. the byte stream.
//!
//! Invariants (beyond "no panic"):
//! - the handshake is ignored exactly when it lacks the magic octet; every
//!   reply starts with 0x7F and has zero reserved bytes; an accept echoes the
//!   serializer (1 or 2), announces the client's length 2^(9+n) and a length
//!   exponent of the largest power of two within our maximum (0 below 1 KiB);
//!   a refusal has an error code 1..=4;
//! - every decoded frame is at most the maximum, and consumes its 4-byte
//!   header plus its payload;
//! - splitting the stream into two reads yields exactly the frames, the
//!   error and the leftover bytes of reading it at once;
//! - a header written by `write_header` decodes back to the same frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchyard::transport::rawsocket::{decode, handshake, write_header, Handshake, RsEvent, MAGIC};
use switchyard::wamp::message::Serializer;

const MAXES: [usize; 8] = [0, 1, 4, 511, 512, 1000, 65_536, 16 << 20];

#[derive(Debug, PartialEq, Eq)]
enum End {
    More(usize),
    Error(&'static str),
}

fn payload(ev: &RsEvent) -> &[u8] {
    match ev {
        RsEvent::Message(b) | RsEvent::Ping(b) | RsEvent::Pong(b) => b,
    }
}

fn run(chunks: &[&[u8]], max: usize) -> (Vec<RsEvent>, End) {
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match decode(&mut buf, max) {
                Ok(Some(ev)) => {
                    let len = payload(&ev).len();
                    assert!(len <= max, "frame of {len} bytes over the maximum {max}");
                    assert_eq!(before - buf.len(), 4 + len, "frame consumed the wrong number of bytes");
                    events.push(ev);
                }
                Ok(None) => break,
                Err(e) => return (events, End::Error(e.0)),
            }
        }
    }
    (events, End::More(buf.len()))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = MAXES[(data[1] & 7) as usize];
    let stream = &data[2..];

    if stream.len() >= 4 {
        let h = [stream[0], stream[1], stream[2], stream[3]];
        match handshake(h, max) {
            Handshake::NotRawSocket => assert_ne!(h[0], MAGIC),
            Handshake::Accept {
                serializer,
                client_max,
                reply,
            } => {
                assert_eq!(h[0], MAGIC);
                assert_eq!(reply[0], MAGIC);
                assert_eq!(&reply[2..], &[0, 0]);
                assert_eq!(&h[2..], &[0, 0], "accepted a handshake with reserved bytes set");
                let ser = h[1] & 0x0f;
                assert_eq!(reply[1] & 0x0f, ser);
                assert_eq!(
                    serializer,
                    match ser {
                        1 => Serializer::Json,
                        2 => Serializer::MsgPack,
                        3 => Serializer::Cbor,
                        s => panic!("accepted serializer {s}"),
                    }
                );
                assert_eq!(client_max, 1usize << (9 + (h[1] >> 4)));
                let ours = reply[1] >> 4;
                // never more than enforced, and the largest such power of two
                assert!(ours == 0 || (1usize << (9 + ours)) <= max, "exponent {ours} above {max}");
                assert!(
                    ours == 15 || (1usize << (9 + ours + 1)) > max,
                    "exponent {ours} not the largest for {max}"
                );
            }
            Handshake::Refuse { reply, .. } => {
                assert_eq!(h[0], MAGIC);
                assert_eq!(reply[0], MAGIC);
                assert!(matches!(reply[1] >> 4, 1..=4), "refusal code {}", reply[1] >> 4);
                assert_eq!(reply[1] & 0x0f, 0);
                assert_eq!(&reply[2..], &[0, 0]);
            }
        }
    }

    let split = stream.len() * data[0] as usize / 255;
    let whole = run(&[stream], max);
    let parts = run(&[&stream[..split], &stream[split..]], max);
    assert_eq!(whole, parts, "split at {split} changes the outcome");

    // what write_header frames decodes back to itself
    let kind = data[0] % 3;
    let body = &stream[stream.len().min(4)..];
    let mut out = Vec::new();
    write_header(&mut out, kind, body.len());
    out.extend_from_slice(body);
    let mut buf = BytesMut::from(&out[..]);
    match decode(&mut buf, max) {
        Ok(Some(ev)) => {
            assert!(body.len() <= max);
            assert_eq!(payload(&ev), body);
            assert_eq!(
                kind,
                match ev {
                    RsEvent::Message(_) => 0,
                    RsEvent::Ping(_) => 1,
                    RsEvent::Pong(_) => 2,
                }
            );
            assert!(buf.is_empty());
        }
        Ok(None) => panic!("a complete frame of {} bytes needs more", body.len()),
        Err(_) => assert!(body.len() > max, "frame of {} bytes refused under {max}", body.len()),
    }
});
