//! Runs N PUBLISH→EVENT deliveries in-process through the real `Router`
//! (one shard, no mesh, no sockets) to one MessagePack subscriber, for
//! counting instructions per publication with cachegrind:
//!
//! ```text
//! cargo build --release --example publish_instructions
//! valgrind --tool=cachegrind --cache-sim=no target/release/examples/publish_instructions 100000
//! valgrind --tool=cachegrind --cache-sim=no target/release/examples/publish_instructions 0
//! ```
//!
//! Instructions per PUBLISH-to-EVENT = (Ir(N) − Ir(0)) / N. One unit of work
//! is: `codec::decode` of a MessagePack PUBLISH frame (64 B payload, already
//! unframed), `Router::on_message` (match, EVENT encoded by splicing, pushed to
//! the subscriber's outbox), and taking the EVENT out of the outbox again
//! (drained every 64 publications, as a writer would).

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_lite::future;
use switchyard::codec::{self, msgpack};
use switchyard::metrics::ShardStats;
use switchyard::router::{Router, RouterConfig, TransportInfo, TransportKind};
use switchyard::session::outbox::{Outbox, Outgoing};
use switchyard::wamp::message::Serializer;
use switchyard::wamp::{Dict, Message, Value};

/// The router binary's allocator, so allocation costs match production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOPIC: &str = "com.example.instructions";
const DRAIN_EVERY: usize = 64;

fn hello() -> Message {
    let roles = Dict::new()
        .with("subscriber", Value::Dict(Dict::new()))
        .with("publisher", Value::Dict(Dict::new()));
    Message::Hello {
        realm: "realm1".into(),
        details: Dict::new().with("roles", Value::Dict(roles)),
    }
}

/// Takes everything queued; returns the encoded messages' type codes.
fn drain(outbox: &Outbox, batch: &mut Vec<Outgoing>) -> Vec<u64> {
    batch.clear();
    let _ = future::block_on(future::poll_once(outbox.next_batch(batch)));
    batch
        .iter()
        .map(|o| match o {
            Outgoing::Wamp(b) => match msgpack::MsgPackReader::new(b).parse_value(0) {
                Ok(Value::List(items)) => match items.first() {
                    Some(Value::UInt(code)) => *code,
                    _ => 0,
                },
                _ => 0,
            },
            _ => 0,
        })
        .collect()
}

fn main() {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().expect("usage: publish_instructions [N]"),
        None => 100_000,
    };
    let cfg = RouterConfig::single_realm("realm1");
    let mut router = Router::new(0, 1, &cfg, switchyard::router::ShardLink::None, Arc::new(ShardStats::default()));
    let mut batch = Vec::with_capacity(DRAIN_EVERY);

    let sub_box = Rc::new(Outbox::new(usize::MAX));
    let sub = router.open_connection(sub_box.clone(), TransportInfo::local(TransportKind::RawSocket, Serializer::MsgPack));
    router.on_message(sub, hello());
    router.on_message(
        sub,
        Message::Subscribe {
            request: 1,
            options: Dict::new(),
            topic: TOPIC.into(),
        },
    );
    assert_eq!(drain(&sub_box, &mut batch), [2, 33], "expected WELCOME and SUBSCRIBED");

    let pub_box = Rc::new(Outbox::new(usize::MAX));
    let publisher = router.open_connection(pub_box.clone(), TransportInfo::local(TransportKind::RawSocket, Serializer::MsgPack));
    router.on_message(publisher, hello());
    assert_eq!(drain(&pub_box, &mut batch), [2], "expected WELCOME");
    batch.clear();

    // [PUBLISH, Request, Options, Topic, Arguments, ArgumentsKw], 64 B payload.
    let mut frame = Vec::new();
    msgpack::write_value(
        &mut frame,
        &Value::List(vec![
            Value::UInt(16),
            Value::UInt(1),
            Value::Dict(Dict::new()),
            Value::Str(TOPIC.into()),
            Value::List(vec![Value::UInt(1), Value::Str("x".repeat(24)), Value::Float(2.5)]),
            Value::Dict(Dict::new().with("k", Value::Str("y".repeat(24)))),
        ]),
    );
    let frame = Bytes::from(frame);
    match codec::decode(Serializer::MsgPack, &frame) {
        Ok(Message::Publish { payload, .. }) => assert_eq!(payload.raw.len(), 64),
        other => panic!("not a PUBLISH: {other:?}"),
    }

    let mut events = 0;
    for i in 0..n {
        let msg = codec::decode(Serializer::MsgPack, &frame).expect("valid PUBLISH");
        router.on_message(publisher, msg);
        if (i + 1).is_multiple_of(DRAIN_EVERY) || i + 1 == n {
            batch.clear();
            let _ = future::block_on(future::poll_once(sub_box.next_batch(&mut batch)));
            events += batch.len();
        }
    }
    assert_eq!(events, n, "every PUBLISH must yield one EVENT");
    // The last batch holds EVENTs (a constant cost, outside the per-publish work).
    if let Some(Outgoing::Wamp(ev)) = batch.last() {
        assert!(matches!(msgpack::MsgPackReader::new(ev).parse_value(0), Ok(Value::List(ref v)) if v.first() == Some(&Value::UInt(36))));
    }
    println!("publications: {n}, events delivered: {events}");
}
