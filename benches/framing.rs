//! Frame parsing: masked client WebSocket frames (`WsDecoder::decode`) and
//! RawSocket frames (`rawsocket::decode`) with 64 B, 1 KiB and 64 KiB
//! payloads, and a buffer of 100 small (64 B) frames back to back; and
//! permessage-deflate's cost per message size (`deflate::Deflater::compress`
//! and `Inflater::inflate` of a JSON EVENT, with context takeover and
//! without).
//!
//! Every iteration parses a fresh copy of the input (the decoder unmasks in
//! place and consumes the buffer); the copy is made outside the timing.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use switchyard::transport::rawsocket::{self, RsEvent};
use switchyard::transport::websocket::{opcode, WsDecoder, WsEvent};

/// The router binary's allocator, so allocation costs match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MAX_MESSAGE: usize = 16 << 20;
const SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (64 * 1024, "64KiB")];
const BURST: usize = 100;
const BURST_PAYLOAD: usize = 64;

/// A deterministic pseudo-random payload.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ seed as u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Appends one masked, final, binary client frame.
fn ws_frame(out: &mut Vec<u8>, data: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode::BINARY);
    match data.len() {
        l if l < 126 => out.push(0x80 | l as u8),
        l if l <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(l as u16).to_be_bytes());
        }
        l => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(l as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Appends one RawSocket WAMP frame.
fn rs_frame(out: &mut Vec<u8>, data: &[u8]) {
    rawsocket::write_header(out, rawsocket::frame_type::WAMP, data.len());
    out.extend_from_slice(data);
}

/// Decodes every frame in `buf`; returns how many messages and bytes came out.
fn ws_decode_all(dec: &mut WsDecoder, buf: &mut BytesMut) -> (usize, usize) {
    let (mut n, mut bytes) = (0, 0);
    while let Some(ev) = dec.decode(buf).expect("valid frame") {
        let WsEvent::Message { data, .. } = ev else {
            panic!("expected a data message")
        };
        n += 1;
        bytes += data.len();
    }
    (n, bytes)
}

fn rs_decode_all(buf: &mut BytesMut) -> (usize, usize) {
    let (mut n, mut bytes) = (0, 0);
    while let Some(ev) = rawsocket::decode(buf, MAX_MESSAGE).expect("valid frame") {
        let RsEvent::Message(data) = ev else {
            panic!("expected a WAMP message")
        };
        n += 1;
        bytes += data.len();
    }
    (n, bytes)
}

fn websocket(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_decode");
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    for (len, name) in SIZES {
        let data = payload(len, 1);
        let mut wire = Vec::new();
        ws_frame(&mut wire, &data, mask);
        // Check once that the frame decodes to the original payload.
        let mut check = BytesMut::from(&wire[..]);
        match WsDecoder::new(MAX_MESSAGE).decode(&mut check) {
            Ok(Some(WsEvent::Message { data: d, text: false })) => assert_eq!(&d[..], &data[..]),
            other => panic!("unexpected decode result: {other:?}"),
        }
        assert!(check.is_empty());
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("one_frame", name), &wire, |b, wire| {
            let mut dec = WsDecoder::new(MAX_MESSAGE);
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| black_box(dec.decode(buf)).map(|e| e.is_some()),
                BatchSize::SmallInput,
            )
        });
    }

    let mut wire = Vec::new();
    for i in 0..BURST {
        ws_frame(&mut wire, &payload(BURST_PAYLOAD, i as u8), [i as u8, 0x5a, 0xc3, 0x11]);
    }
    let mut check = BytesMut::from(&wire[..]);
    assert_eq!(
        ws_decode_all(&mut WsDecoder::new(MAX_MESSAGE), &mut check),
        (BURST, BURST * BURST_PAYLOAD)
    );
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_with_input(BenchmarkId::new("burst_100x64B", wire.len()), &wire, |b, wire| {
        let mut dec = WsDecoder::new(MAX_MESSAGE);
        b.iter_batched_ref(
            || BytesMut::from(&wire[..]),
            |buf| ws_decode_all(&mut dec, buf),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn raw_socket(c: &mut Criterion) {
    let mut g = c.benchmark_group("rawsocket_decode");
    for (len, name) in SIZES {
        let data = payload(len, 2);
        let mut wire = Vec::new();
        rs_frame(&mut wire, &data);
        let mut check = BytesMut::from(&wire[..]);
        match rawsocket::decode(&mut check, MAX_MESSAGE) {
            Ok(Some(RsEvent::Message(d))) => assert_eq!(&d[..], &data[..]),
            other => panic!("unexpected decode result: {other:?}"),
        }
        assert!(check.is_empty());
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("one_frame", name), &wire, |b, wire| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| black_box(rawsocket::decode(buf, MAX_MESSAGE)).map(|e| e.is_some()),
                BatchSize::SmallInput,
            )
        });
    }

    let mut wire = Vec::new();
    for i in 0..BURST {
        rs_frame(&mut wire, &payload(BURST_PAYLOAD, i as u8));
    }
    let mut check = BytesMut::from(&wire[..]);
    assert_eq!(rs_decode_all(&mut check), (BURST, BURST * BURST_PAYLOAD));
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_with_input(BenchmarkId::new("burst_100x64B", wire.len()), &wire, |b, wire| {
        b.iter_batched_ref(|| BytesMut::from(&wire[..]), rs_decode_all, BatchSize::SmallInput)
    });
    g.finish();
}

/// A JSON EVENT of about `len` bytes: the shape of real traffic (keys and
/// field names repeat, values vary with `seed`).
fn json_event(len: usize, seed: u64) -> Vec<u8> {
    let mut s = format!("[36,5742958237521,{},{{}},[", 8301235501234 + seed);
    let mut i = seed * 977;
    while s.len() + 40 < len {
        s.push_str(&format!(
            "{{\"id\":{i},\"price\":{}.{:02},\"sym\":\"S{}\"}},",
            100 + i * 7 % 900,
            i * 13 % 100,
            i % 50
        ));
        i += 1;
    }
    s.push_str("0]]");
    s.into_bytes()
}

fn deflate(c: &mut Criterion) {
    use switchyard::transport::deflate::{Deflater, Inflater, Params};
    let mut g = c.benchmark_group("deflate");
    for (len, size) in [(128, "128B"), (1024, "1KiB"), (16 * 1024, "16KiB")] {
        // a stream of 64 different events, compressed in turn (with context
        // takeover each leans on the ones before, as a real stream does)
        let stream: Vec<Vec<u8>> = (0..64).map(|s| json_event(len, s)).collect();
        let msg = stream[0].clone();
        for (takeover, mode) in [(true, "context_takeover"), (false, "no_context_takeover")] {
            let p = Params {
                server_bits: 15,
                client_bits: 15,
                server_no_context_takeover: !takeover,
                client_no_context_takeover: !takeover,
            };
            let mut d = Deflater::new(&p, 0, 2);
            let mut out = Vec::new();
            assert!(d.compress(&msg, &mut out));
            let mut i = Inflater::new(&p);
            assert_eq!(i.inflate(&out, MAX_MESSAGE).expect("inflates"), msg);
            g.throughput(Throughput::Bytes(msg.len() as u64));
            let mut k = 0;
            g.bench_with_input(BenchmarkId::new(format!("compress/{mode}"), size), &stream, |b, stream| {
                b.iter(|| {
                    k = (k + 1) % stream.len();
                    out.clear();
                    d.compress(black_box(&stream[k]), &mut out)
                })
            });
            if takeover {
                continue;
            }
            // inflate the same message over and over, each time on its own
            // (a stream of copies of one message would lean on the previous)
            let mut one = Vec::new();
            Deflater::new(&p, 0, 2).compress(&msg, &mut one);
            let mut i = Inflater::new(&p);
            g.bench_with_input(BenchmarkId::new("inflate", size), &one, |b, m| {
                b.iter(|| i.inflate(black_box(m), MAX_MESSAGE))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, websocket, raw_socket, deflate);
criterion_main!(benches);
