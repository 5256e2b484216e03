//! Message codec: `codec::decode` of a PUBLISH and of a CALL in JSON,
//! MessagePack and CBOR with ~64 B and ~4 KiB payloads (Arguments +
//! ArgumentsKw), and EVENT encoding by splicing the payload
//! (`codec::encode::event`) for a subscriber on the same serializer and, with
//! `codec::transcode` first, on each of the other two; and transcoding a
//! ~4 KiB payload by the streaming pass against the value tree; and
//! simd-json 0.19 against the codec's JSON reader.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard::codec::{self, encode};
use switchyard::wamp::message::Serializer;
use switchyard::wamp::{Dict, Message, Payload};

/// The router binary's allocator, so allocation costs match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [(usize, &str); 2] = [(64, "64B"), (4096, "4KiB")];

#[path = "support/payload.rs"]
mod payload;
use payload::frame;

fn ser_name(ser: Serializer) -> &'static str {
    ser.name()
}

fn payload_of(m: &Message) -> &Payload {
    match m {
        Message::Publish { payload, .. } | Message::Call { payload, .. } => payload,
        other => panic!("not a PUBLISH or CALL: {other:?}"),
    }
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (what, code, uri) in [
        ("publish", 16, "com.example.topic.update"),
        ("call", 48, "com.example.procedure.add"),
    ] {
        for ser in Serializer::ALL {
            for (target, size) in SIZES {
                let f = frame(ser, code, uri, target);
                let m = codec::decode(ser, &f).expect("valid frame");
                let p = payload_of(&m);
                assert_eq!(p.count, 2);
                assert!(p.raw.len() >= target && p.raw.len() < target + 64, "payload {} B", p.raw.len());
                assert_eq!(m.message_type().code(), code);
                g.throughput(Throughput::Bytes(f.len() as u64));
                g.bench_with_input(BenchmarkId::new(format!("{what}/{}", ser_name(ser)), size), &f, |b, f| {
                    b.iter(|| codec::decode(ser, black_box(f)))
                });
            }
        }
    }
    g.finish();
}

fn event(c: &mut Criterion) {
    let mut g = c.benchmark_group("event_encode");
    let details = Serializer::ALL.map(|s| codec::encode_dict(s, &Dict::new()));
    for from in Serializer::ALL {
        for (target, size) in SIZES {
            let f = frame(from, 16, "com.example.topic.update", target);
            let m = codec::decode(from, &f).expect("valid frame");
            let payload = payload_of(&m).clone();

            // Same serializer: header + spliced payload.
            let ev = encode::event(from, 7, 8, &details[from.index()], &payload);
            assert!(ev.len() > payload.raw.len() && ev.windows(payload.raw.len()).any(|w| w == &payload.raw[..]));
            g.throughput(Throughput::Bytes(payload.raw.len() as u64));
            g.bench_with_input(BenchmarkId::new(format!("splice/{}", ser_name(from)), size), &payload, |b, p| {
                b.iter(|| encode::event(from, 7, 8, &details[from.index()], black_box(p)))
            });

            // Another serializer: transcode once, then splice.
            for to in Serializer::ALL.into_iter().filter(|&to| to != from) {
                let t = codec::transcode(&payload, to).expect("transcodes");
                assert_eq!((t.serializer, t.count), (to, 2));
                let back = codec::transcode(&t, from).expect("transcodes back");
                assert_eq!(codec::transcode(&back, to).expect("transcodes"), t);
                let ev = encode::event(to, 7, 8, &details[to.index()], &t);
                assert!(ev.len() > t.raw.len());
                g.bench_with_input(
                    BenchmarkId::new(format!("transcode/{}_to_{}", ser_name(from), ser_name(to)), size),
                    &payload,
                    |b, p| {
                        b.iter(|| {
                            let t = codec::transcode(black_box(p), to).expect("transcodes");
                            encode::event(to, 7, 8, &details[to.index()], &t)
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

/// A ~4 KiB payload from each serializer to each other one: the streaming
/// pass (`codec::transcode`) beside the value tree (`codec::transcode_tree`).
fn transcoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("transcode_4KiB");
    for from in Serializer::ALL {
        let f = frame(from, 16, "com.example.topic.update", 4096);
        let m = codec::decode(from, &f).expect("valid frame");
        let payload = payload_of(&m).clone();
        g.throughput(Throughput::Bytes(payload.raw.len() as u64));
        for to in Serializer::ALL.into_iter().filter(|&to| to != from) {
            let pair = format!("{}_to_{}", ser_name(from), ser_name(to));
            assert_eq!(codec::transcode(&payload, to), codec::transcode_tree(&payload, to), "{pair}");
            g.bench_with_input(BenchmarkId::new("stream", &pair), &payload, |b, p| {
                b.iter(|| codec::transcode(black_box(p), to))
            });
            g.bench_with_input(BenchmarkId::new("tree", &pair), &payload, |b, p| {
                b.iter(|| codec::transcode_tree(black_box(p), to))
            });
        }
    }
    g.finish();
}

/// simd-json 0.19 against the codec's own JSON reader on the same ~4 KiB
/// PUBLISH: validating the frame (the router's `decode`; simd-json's tape,
/// which needs a mutable copy of the frame, so the copy is counted) and
/// reading it into a value tree.
fn simd_json(c: &mut Criterion) {
    let mut g = c.benchmark_group("simd_json_4KiB");
    let f = frame(Serializer::Json, 16, "com.example.topic.update", 4096);
    g.throughput(Throughput::Bytes(f.len() as u64));
    g.bench_function("validate/codec_decode", |b| {
        b.iter(|| codec::decode(Serializer::Json, black_box(&f)))
    });
    g.bench_function("validate/simd_json_tape", |b| {
        b.iter(|| {
            let mut copy = black_box(&f).to_vec();
            simd_json::to_tape(&mut copy).map(|t| t.0.len())
        })
    });
    g.bench_function("tree/codec_json_parse", |b| b.iter(|| codec::json::parse(black_box(&f))));
    g.bench_function("tree/simd_json_owned", |b| {
        b.iter(|| {
            let mut copy = black_box(&f).to_vec();
            simd_json::to_owned_value(&mut copy)
        })
    });
    g.finish();
}

criterion_group!(benches, decode, event, transcoding, simd_json);
criterion_main!(benches);
