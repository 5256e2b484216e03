//! In-process fan-out through the real `Router` (one shard, no mesh, no
//! sockets): one PUBLISH with a 64 B payload delivered to 1, 100 and 10 000
//! local subscribers, on the publisher's serializer (EVENT spliced once and
//! shared) and on the other one (payload transcoded once per publication).
//!
//! Timed: `Router::on_message` with a prebuilt `Message::Publish`. Not timed:
//! building the messages and draining the subscribers' outboxes, which
//! happens after every chunk of publications so memory stays flat.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_lite::future;
use switchyard::codec;
use switchyard::metrics::ShardStats;
use switchyard::router::{ConnId, Router, RouterConfig, TransportInfo, TransportKind};
use switchyard::session::outbox::{Outbox, Outgoing};
use switchyard::wamp::message::Serializer;
use switchyard::wamp::{Dict, Message, MessageType, Value};

/// The router binary's allocator, so allocation costs match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOPIC: &str = "com.example.fanout";
/// Events produced per chunk of publications before the outboxes are drained.
const EVENTS_PER_CHUNK: usize = 4096;

/// Moves everything queued in `outbox` into `batch`, without waiting.
fn drain(outbox: &Outbox, batch: &mut Vec<Outgoing>) -> usize {
    let before = batch.len();
    let _ = future::block_on(future::poll_once(outbox.next_batch(batch)));
    batch.len() - before
}

/// The WAMP message type code of an encoded message.
fn type_code(ser: Serializer, msg: &Bytes) -> u64 {
    match codec::parse_value(ser, msg) {
        Ok(Value::List(items)) => match items.first() {
            Some(Value::UInt(code)) => *code,
            other => panic!("no type code: {other:?}"),
        },
        other => panic!("not a list: {other:?}"),
    }
}

fn expect_only(ser: Serializer, outbox: &Outbox, codes: &[MessageType]) {
    let mut batch = Vec::new();
    drain(outbox, &mut batch);
    let got: Vec<u64> = batch
        .iter()
        .map(|o| match o {
            Outgoing::Wamp(b) => type_code(ser, b),
            other => panic!("unexpected outgoing item {other:?}"),
        })
        .collect();
    let want: Vec<u64> = codes.iter().map(|c| c.code()).collect();
    assert_eq!(got, want);
}

/// A router with one realm, `n` subscribers on `TOPIC` (serializer `sub_ser`)
/// and one publisher (serializer `pub_ser`).
struct Setup {
    router: Router,
    publisher: ConnId,
    pub_ser: Serializer,
    subscribers: Vec<Rc<Outbox>>,
    batch: Vec<Outgoing>,
}

fn hello() -> Message {
    let roles = Dict::new()
        .with("subscriber", Value::Dict(Dict::new()))
        .with("publisher", Value::Dict(Dict::new()));
    Message::Hello {
        realm: "realm1".into(),
        details: Dict::new().with("roles", Value::Dict(roles)),
    }
}

impl Setup {
    fn new(n: usize, pub_ser: Serializer, sub_ser: Serializer) -> Self {
        let cfg = RouterConfig::single_realm("realm1");
        let mut router = Router::new(0, 1, &cfg, switchyard::router::ShardLink::None, Arc::new(ShardStats::default()));
        let mut subscribers = Vec::with_capacity(n);
        for i in 0..n {
            let outbox = Rc::new(Outbox::new(usize::MAX));
            let conn = router.open_connection(outbox.clone(), TransportInfo::local(TransportKind::RawSocket, sub_ser));
            router.on_message(conn, hello());
            router.on_message(
                conn,
                Message::Subscribe {
                    request: i as u64 + 1,
                    options: Dict::new(),
                    topic: TOPIC.into(),
                },
            );
            // One shard, no mesh: the SUBSCRIBED is sent inline.
            expect_only(sub_ser, &outbox, &[MessageType::Welcome, MessageType::Subscribed]);
            subscribers.push(outbox);
        }
        let pub_outbox = Rc::new(Outbox::new(usize::MAX));
        let publisher = router.open_connection(pub_outbox.clone(), TransportInfo::local(TransportKind::RawSocket, pub_ser));
        router.on_message(publisher, hello());
        expect_only(pub_ser, &pub_outbox, &[MessageType::Welcome]);
        Setup {
            router,
            publisher,
            pub_ser,
            subscribers,
            batch: Vec::new(),
        }
    }

    /// A PUBLISH with a 64 B payload (Arguments + ArgumentsKw), as decoded.
    fn publish_message(&self) -> Message {
        let args = Value::List(vec![Value::UInt(1), Value::Str("x".repeat(24)), Value::Float(2.5)]);
        let kwargs = Value::Dict(Dict::new().with("k", Value::Str("y".repeat(24))));
        let mut frame = Vec::new();
        let msg = Value::List(vec![
            Value::UInt(16),
            Value::UInt(1),
            Value::Dict(Dict::new()),
            Value::Str(TOPIC.into()),
            args,
            kwargs,
        ]);
        codec::write_value(self.pub_ser, &mut frame, &msg);
        let m = codec::decode(self.pub_ser, &Bytes::from(frame)).expect("valid PUBLISH");
        let Message::Publish { payload, .. } = &m else { unreachable!() };
        assert!((60..=72).contains(&payload.raw.len()), "payload is {} B", payload.raw.len());
        m
    }

    /// Drains every subscriber; returns the number of EVENTs taken.
    fn drain_all(&mut self) -> usize {
        let mut n = 0;
        for o in &self.subscribers {
            n += drain(o, &mut self.batch);
            self.batch.clear();
        }
        n
    }
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    g.sample_size(20);
    for (name, pub_ser, sub_ser) in [
        ("msgpack_to_msgpack", Serializer::MsgPack, Serializer::MsgPack),
        ("msgpack_to_json", Serializer::MsgPack, Serializer::Json),
    ] {
        for n in [1usize, 100, 10_000] {
            let mut s = Setup::new(n, pub_ser, sub_ser);
            let template = s.publish_message();

            // Check once that one PUBLISH yields one EVENT per subscriber.
            s.router.on_message(s.publisher, template.clone());
            for o in &s.subscribers {
                expect_only(sub_ser, o, &[MessageType::Event]);
            }

            let chunk = (EVENTS_PER_CHUNK / n).max(1);
            let mut msgs: Vec<Message> = Vec::with_capacity(chunk);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters as usize;
                    while left > 0 {
                        let k = left.min(chunk);
                        left -= k;
                        msgs.extend(std::iter::repeat_n(&template, k).cloned());
                        let t0 = Instant::now();
                        for m in msgs.drain(..) {
                            s.router.on_message(s.publisher, m);
                        }
                        total += t0.elapsed();
                        assert_eq!(s.drain_all(), k * n);
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
