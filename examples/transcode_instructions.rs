//! Transcodes the codec bench's ~4 KiB payload (`benches/support/payload.rs`)
//! N times from one serializer to another, for counting instructions per
//! transcoding with cachegrind, which are stable where times are not:
//!
//! ```text
//! cargo build --release --example transcode_instructions
//! valgrind --tool=cachegrind --cache-sim=no target/release/examples/transcode_instructions json msgpack 1000
//! valgrind --tool=cachegrind --cache-sim=no target/release/examples/transcode_instructions json msgpack 0
//! ```
//!
//! Instructions per transcoding = (Ir(N) − Ir(0)) / N. The serializers are
//! `json`, `msgpack` and `cbor`; `tree` as a fourth argument measures the
//! value-tree path (`codec::transcode_tree`) instead of the streaming one.

use switchyard::codec;
use switchyard::wamp::message::Serializer;
use switchyard::wamp::Message;

#[path = "../benches/support/payload.rs"]
mod payload;

/// The router binary's allocator, so allocation costs match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn serializer(name: &str) -> Serializer {
    match name {
        "json" => Serializer::Json,
        "msgpack" => Serializer::MsgPack,
        "cbor" => Serializer::Cbor,
        other => panic!("unknown serializer {other:?}: json, msgpack or cbor"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: transcode_instructions FROM TO N [tree]";
    let (from, to) = (serializer(args.get(1).expect(usage)), serializer(args.get(2).expect(usage)));
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).expect(usage);
    let tree = args.get(4).map(String::as_str) == Some("tree");
    let frame = payload::frame(from, 16, "com.example.topic.update", 4096);
    let Ok(Message::Publish { payload, .. }) = codec::decode(from, &frame) else {
        panic!("the bench frame is a PUBLISH");
    };
    let mut bytes = 0;
    for _ in 0..n {
        let p = std::hint::black_box(&payload);
        let t = if tree {
            codec::transcode_tree(p, to)
        } else {
            codec::transcode(p, to)
        };
        bytes += t.expect("transcodes").raw.len();
    }
    println!("{n} transcodings of {} B: {bytes} B out", payload.raw.len());
}
