//! The sans-I/O router core, driven as a running router drives it: several
//! shards (1 to 3 `Router`s linked by `ShardLink::Collect` queues that are
//! delivered in per-pair FIFO order, interleaved as the input chooses),
//! sessions on every shard joining, subscribing (with `get_retained`),
//! publishing (retained, kept in a history, disclosed, to black/white
//! lists), registering,
//! registering under every invocation policy, calling (some calls with a
//! timeout, progress, disclosure or payload passthru; progressive call
//! invocations, their chunks continuing calls in progress or completed),
//! calling the router's own procedures (session count, list and get, the
//! kills, testaments, removing callees; subscribing to the session meta
//! events), canceling in every mode, answering, erring (`wamp.error.unavailable`
//! reroutes), leaving and sending garbage, in JSON and MessagePack, while a
//! hand-moved clock runs the routers' timers.
//!
//! Invariants, checked after every input:
//! - nothing panics (a panic is a crash like any other);
//! - each shard's tables are consistent with its sessions
//!   (`Router::check_consistency`) whenever every queue is drained, and so
//!   are the calls router-wide: every call a caller waits on is an
//!   invocation its callee owes, and every invocation owed to a caller still
//!   there is a call it waits on;
//! - once every connection has closed and every cross-shard message has been
//!   handled, every shard is back to empty: no session, connection, pending
//!   acknowledgement or table entry, and every gauge at zero
//!   (`Router::leftovers`).

#![no_main]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use switchyard::codec;
use switchyard::config::{CallerDisclosure, Limits, RealmConfig};
use switchyard::metrics::ShardStats;
use switchyard::router::{Clock, ConnId, Router, RouterConfig, ShardLink, ShardMsg, TransportInfo, TransportKind};
use switchyard::session::outbox::{Outbox, Outgoing};
use switchyard::wamp::message::Serializer;
use switchyard::wamp::Value;

type Queue = Rc<RefCell<VecDeque<(usize, ShardMsg)>>>;

struct Shard {
    router: Router,
    queue: Queue,
}

/// A connection as its read loop sees it, and what it learnt from the router.
struct Conn {
    shard: usize,
    id: ConnId,
    ser: Serializer,
    outbox: Rc<Outbox>,
    subscriptions: Vec<u64>,
    registrations: Vec<u64>,
    invocations: Vec<u64>,
    next_request: u64,
    /// The session the last WELCOME opened.
    session: u64,
}

const TOPICS: &[&str] = &[
    "a",
    "a.b",
    "a.b.c",
    "a.x.c",
    "b",
    "b.c",
    "a..c",
    "..",
    "a.",
    "bad uri",
    "",
    "wamp.session.on_join",
    "wamp.session.on_leave",
];
const POLICIES: &[&str] = &["exact", "prefix", "wildcard"];
const AUTHMETHODS: &[&[&str]] = &[&[], &["ticket"], &["wampcra"], &["wamp-scram"], &["cryptosign"], &["anonymous", "ticket"], &["tls"]];
const AUTHIDS: &[&str] = &["t", "c", "x"];
const SIGNATURES: &[&str] = &["ticket-t", "wrong", "", "zz"];

/// realm2's principals: "t" (ticket "ticket-t", a cheap argon2 hash made
/// once) and "c" (WAMP-CRA secret "s"), role "user".
fn principals() -> Vec<switchyard::config::PrincipalConfig> {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = HASH.get_or_init(|| switchyard::auth::hash_ticket("ticket-t", Some((8, 1)))).clone();
    vec![
        switchyard::config::PrincipalConfig {
            authid: "t".into(),
            role: "user".into(),
            ticket: Some(hash),
            ..Default::default()
        },
        switchyard::config::PrincipalConfig {
            authid: "c".into(),
            role: "user".into(),
            wampcra_secret: Some("s".into()),
            cryptosign_keys: vec!["d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a".into()],
            ..Default::default()
        },
    ]
}

/// realm2's roles: `user` may do anything under `a.`; `anonymous`
/// subscribes to two-component topics; the authorizer decides the rest.
fn roles() -> Vec<switchyard::config::RoleConfig> {
    use switchyard::config::{PermissionConfig, RoleConfig};
    let rule = |uri: &str, policy: &str, allow: &[&str]| PermissionConfig {
        uri: uri.into(),
        policy: Some(policy.into()),
        allow: allow.iter().map(|a| a.to_string()).collect(),
        disclose: false,
    };
    vec![
        RoleConfig {
            name: "user".into(),
            permissions: vec![rule("a.", "prefix", &["call", "register", "publish", "subscribe"])],
        },
        RoleConfig {
            name: "anonymous".into(),
            permissions: vec![rule(".", "wildcard", &["subscribe"]), rule("a.b.c", "exact", &[])],
        },
    ]
}
const REALMS: &[&str] = &["realm1", "realm2", "nowhere"];

struct World {
    shards: Vec<Shard>,
    conns: Vec<Conn>,
    /// The hand-moved clock every router reads.
    time: Rc<std::cell::Cell<std::time::Instant>>,
}

impl World {
    fn new(n: usize) -> Self {
        let mut limits = Limits::default();
        // small enough that inputs reach them
        limits.max_subscriptions_per_session = 4;
        limits.max_registrations_per_session = 3;
        limits.max_pending_calls = 3;
        limits.max_pending_invocations = 2;
        limits.max_uri_length = 64;
        limits.max_uri_components = 4;
        let cfg = RouterConfig {
            // realm2 never discloses callers
            realms: vec![
                // realm1 lets every session remove callees (revocation is
                // fuzzed there); realm2 keeps the default (refused)
                RealmConfig {
                    meta_admin_roles: vec!["anonymous".into()],
                    // a small history and retention bound, so inputs reach them
                    history: vec![switchyard::config::HistoryRule {
                        uri: "a".into(),
                        policy: Some("prefix".into()),
                        limit: 3,
                        max_age_ms: 0,
                    }],
                    max_history_bytes: 4096,
                    max_retained_events: 3,
                    ..RealmConfig::named("realm1")
                },
                // realm2: principals (ticket, WAMP-CRA), roles, an
                // authorizer ("b") and an SCRAM authenticator ("b.c"), which
                // sessions of realm2 may register
                RealmConfig {
                    caller_disclosure: CallerDisclosure::Never,
                    principals: principals(),
                    roles: roles(),
                    authorizer: Some(switchyard::config::AuthorizerConfig {
                        procedure: "b".into(),
                        realm: None,
                        timeout_ms: 100,
                        cache_ttl_ms: 50,
                    }),
                    authenticator: Some(switchyard::config::AuthenticatorConfig {
                        procedure: "b.c".into(),
                        realm: None,
                        methods: vec!["wamp-scram".into()],
                        timeout_ms: 100,
                    }),
                    ..RealmConfig::named("realm2")
                },
            ],
            limits,
        };
        let (clock, time) = Clock::manual();
        let shards = (0..n)
            .map(|me| {
                let queue: Queue = Rc::new(RefCell::new(VecDeque::new()));
                let mut router = Router::new(me, n, &cfg, ShardLink::Collect(queue.clone()), Arc::new(ShardStats::default()));
                router.set_clock(clock.clone());
                Shard { router, queue }
            })
            .collect();
        World {
            shards,
            conns: Vec::new(),
            time,
        }
    }

    /// Hands the message of `from`'s queue that is first for shard `to` to
    /// its router (per-pair FIFO, any interleaving of pairs).
    fn deliver_one(&mut self, from: usize, to_pick: usize) -> bool {
        let n = self.shards.len();
        let msg = {
            let mut q = self.shards[from].queue.borrow_mut();
            if q.is_empty() {
                return false;
            }
            // the first message for some destination, chosen by `to_pick`
            let dests: Vec<usize> = (0..n).filter(|d| q.iter().any(|(t, _)| t == d)).collect();
            let to = dests[to_pick % dests.len()];
            let pos = q.iter().position(|(t, _)| *t == to).expect("destination present");
            q.remove(pos).expect("position valid")
        };
        let (to, msg) = msg;
        assert_ne!(to, from, "a shard sent itself a message over the mesh");
        self.shards[to].router.on_shard_message(msg);
        true
    }

    fn deliver_all(&mut self) {
        loop {
            let mut any = false;
            for from in 0..self.shards.len() {
                while self.deliver_one(from, 0) {
                    any = true;
                }
            }
            if !any {
                return;
            }
            self.settle();
        }
    }

    /// Reads every outbox as its writer would; a closing outbox ends its
    /// connection as the read loop does.
    fn settle(&mut self) {
        let mut batch = Vec::new();
        let mut closed = Vec::new();
        for (i, c) in self.conns.iter_mut().enumerate() {
            c.outbox.take_queued(&mut batch);
            for item in batch.drain(..) {
                if let Outgoing::Wamp(m) = item {
                    learn(c, &m);
                }
            }
            if c.outbox.is_closing() {
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            let c = self.conns.swap_remove(i);
            self.shards[c.shard].router.close_connection(c.id);
        }
    }

    fn send(&mut self, conn: usize, v: &Value) {
        let c = &self.conns[conn];
        let bytes = encode(c.ser, v);
        self.send_raw(conn, bytes);
    }

    fn send_raw(&mut self, conn: usize, bytes: Vec<u8>) {
        let c = &self.conns[conn];
        let (shard, id, ser) = (c.shard, c.id, c.ser);
        let router = &mut self.shards[shard].router;
        match codec::decode(ser, &Bytes::from(bytes)) {
            Ok(msg) => router.on_message(id, msg),
            Err(e) => router.protocol_violation(id, &e.to_string()),
        }
    }
}

/// Remembers the IDs the router handed out, so later messages can use them.
fn learn(c: &mut Conn, frame: &[u8]) {
    let Ok(Value::List(m)) = codec::parse_value(c.ser, frame) else {
        panic!("the router sent a message that does not parse: {frame:?}");
    };
    let int = |i: usize| match m.get(i) {
        Some(Value::UInt(u)) => *u,
        _ => 0,
    };
    match int(0) {
        2 => c.session = int(1),
        33 => c.subscriptions.push(int(2)),
        65 => c.registrations.push(int(2)),
        68 => c.invocations.push(int(1)),
        _ => {}
    }
}

fn encode(ser: Serializer, v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    codec::write_value(ser, &mut out, v);
    out
}

fn s(x: &str) -> Value {
    Value::Str(x.to_owned())
}

fn n(x: u64) -> Value {
    Value::UInt(x)
}

fn dict(pairs: &[(&str, Value)]) -> Value {
    let mut d = switchyard::wamp::Dict::new();
    for (k, v) in pairs {
        d.insert(*k, v.clone());
    }
    Value::Dict(d)
}

fn pick<'a, T>(u: &mut Unstructured, from: &'a [T]) -> ArbResult<&'a T> {
    Ok(&from[u.choose_index(from.len())?])
}

/// An ID the connection learnt, or any number.
fn some_id(u: &mut Unstructured, known: &[u64]) -> ArbResult<u64> {
    if !known.is_empty() && u.ratio(7, 8)? {
        Ok(*pick(u, known)?)
    } else {
        Ok(u.int_in_range(0..=5)?)
    }
}

fn payload(u: &mut Unstructured) -> ArbResult<Vec<Value>> {
    Ok(match u.int_in_range(0..=3)? {
        0 => vec![],
        1 => vec![Value::List(vec![n(1), s("x")])],
        2 => vec![Value::List(vec![Value::Bytes(vec![0, 1, 2])]), dict(&[("k", Value::Float(1.5))])],
        _ => vec![Value::List(vec![]), dict(&[])],
    })
}

fn step(w: &mut World, u: &mut Unstructured) -> ArbResult<()> {
    let op = u.int_in_range(0..=19)?;
    if op == 0 || w.conns.is_empty() {
        if w.conns.len() < 8 {
            let shard = u.choose_index(w.shards.len())?;
            let ser = *u.choose(&Serializer::ALL)?;
            let outbox = Rc::new(Outbox::new(1 << 20));
            let id = w.shards[shard]
                .router
                .open_connection(outbox.clone(), TransportInfo::local(TransportKind::WebSocket, ser));
            w.conns.push(Conn {
                shard,
                id,
                ser,
                outbox,
                subscriptions: Vec::new(),
                registrations: Vec::new(),
                invocations: Vec::new(),
                next_request: 0,
                session: 0,
            });
        }
        return Ok(());
    }
    let ci = u.choose_index(w.conns.len())?;
    w.conns[ci].next_request += 1;
    let req = w.conns[ci].next_request;
    let features = dict(&[
        ("call_canceling", Value::Bool(u.arbitrary()?)),
        ("progressive_call_results", Value::Bool(u.arbitrary()?)),
        ("progressive_call_invocations", Value::Bool(u.arbitrary()?)),
        ("payload_passthru_mode", Value::Bool(u.arbitrary()?)),
    ]);
    let callee = dict(&[("features", features)]);
    let caller = dict(&[(
        "features",
        dict(&[
            ("progressive_call_invocations", Value::Bool(u.arbitrary()?)),
            ("payload_passthru_mode", Value::Bool(u.arbitrary()?)),
        ]),
    )]);
    let roles = dict(&[(
        "roles",
        dict(&[("subscriber", dict(&[])), ("caller", caller), ("callee", callee)]),
    )]);
    let msg = match op {
        1 if u.arbitrary()? => {
            // a login: methods, authid, authextra
            let methods: Vec<Value> = pick(u, AUTHMETHODS)?.iter().map(|m| s(m)).collect();
            let Value::Dict(mut details) = roles else { return Ok(()) };
            details.insert("authmethods", Value::List(methods));
            details.insert("authid", s(pick(u, AUTHIDS)?));
            details.insert(
                "authextra",
                dict(&[
                    ("nonce", s("AAAA")),
                    ("pubkey", s("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")),
                ]),
            );
            Some(Value::List(vec![n(1), s(pick(u, REALMS)?), Value::Dict(details)]))
        }
        1 => Some(Value::List(vec![n(1), s(pick(u, REALMS)?), roles])),
        19 => {
            let extra = if u.arbitrary()? { dict(&[]) } else { dict(&[("nonce", s("AAAA"))]) };
            Some(Value::List(vec![n(5), s(pick(u, SIGNATURES)?), extra]))
        }
        2 => {
            let policy = *pick(u, POLICIES)?;
            let options = dict(&[("match", s(policy)), ("get_retained", Value::Bool(u.arbitrary()?))]);
            Some(Value::List(vec![n(32), n(req), options, s(pick(u, TOPICS)?)]))
        }
        3 => {
            let id = some_id(u, &w.conns[ci].subscriptions)?;
            Some(Value::List(vec![n(34), n(req), n(id)]))
        }
        4 => {
            let mut pairs = vec![
                ("acknowledge", Value::Bool(u.arbitrary()?)),
                ("exclude_me", Value::Bool(u.arbitrary()?)),
                ("retain", Value::Bool(u.arbitrary()?)),
            ];
            if u.ratio(1, 4)? {
                pairs.push(("disclose_me", Value::Bool(true)));
            }
            if u.ratio(1, 4)? {
                let c = &w.conns[u.choose_index(w.conns.len())?];
                let lists = ["exclude", "eligible"];
                pairs.push((*pick(u, &lists)?, Value::List(vec![n(c.session)])));
            }
            if u.ratio(1, 6)? {
                pairs.push(("eligible_authrole", Value::List(vec![s("anonymous")])));
            }
            let opts = dict(&pairs);
            let mut m = vec![n(16), n(req), opts, s(pick(u, TOPICS)?)];
            m.extend(payload(u)?);
            Some(Value::List(m))
        }
        5 => {
            let policy = *pick(u, POLICIES)?;
            let mut options = vec![("match", s(policy))];
            if u.arbitrary()? {
                let invoke = *pick(u, &["single", "roundrobin", "random", "first", "last", "bogus"])?;
                options.push(("invoke", s(invoke)));
            }
            if u.ratio(1, 4)? {
                options.push(("disclose_caller", Value::Bool(true)));
            }
            Some(Value::List(vec![n(64), n(req), dict(&options), s(pick(u, TOPICS)?)]))
        }
        6 => {
            let id = some_id(u, &w.conns[ci].registrations)?;
            Some(Value::List(vec![n(66), n(req), n(id)]))
        }
        7 => {
            let mut pairs = Vec::new();
            if u.arbitrary()? {
                pairs.push(("timeout", n(u.int_in_range(0..=50)?)));
            }
            if u.arbitrary()? {
                pairs.push(("receive_progress", Value::Bool(true)));
            }
            if u.ratio(1, 4)? {
                pairs.push(("disclose_me", Value::Bool(true)));
            }
            if u.ratio(1, 4)? {
                pairs.push(("ppt_scheme", s("x_fuzz")));
            }
            // a progressive call invocation, or the next chunk of a recent
            // call (continuing one, or one already completed)
            let mut request = req;
            if u.ratio(1, 3)? {
                pairs.push(("progress", Value::Bool(u.arbitrary()?)));
                request = req.saturating_sub(u.int_in_range(0..=2)?).max(1);
            }
            let options = dict(&pairs);
            if u.ratio(1, 6)? {
                // one of the router's own procedures, with IDs it knows
                let c = &w.conns[u.choose_index(w.conns.len())?];
                let (session, registration) = (n(c.session), n(some_id(u, &c.registrations)?));
                let subscription = n(some_id(u, &c.subscriptions)?);
                let (procedure, args) = match u.int_in_range(0..=12)? {
                    10 => ("wamp.subscription.get_events", vec![subscription]),
                    11 => ("wamp.subscription.remove_subscriber", vec![subscription, session]),
                    12 => ("wamp.subscription.list_subscribers", vec![subscription]),
                    0 => ("wamp.session.count", vec![]),
                    1 => ("wamp.session.list", vec![Value::List(vec![s("anonymous")])]),
                    2 => ("wamp.session.get", vec![session]),
                    3 => ("wamp.registration.remove_callee", vec![registration, session]),
                    4 => ("wamp.session.kill", vec![session]),
                    5 => ("wamp.session.kill_by_authrole", vec![s("anonymous")]),
                    6 => ("wamp.session.kill_all", vec![]),
                    7 => ("wamp.session.add_testament", vec![s(pick(u, TOPICS)?), Value::List(vec![n(1)])]),
                    8 => ("wamp.session.flush_testaments", vec![]),
                    _ => ("wamp.session.count", vec![n(3)]),
                };
                w.send(ci, &Value::List(vec![n(48), n(req), options, s(procedure), Value::List(args)]));
                return Ok(());
            }
            let mut m = vec![n(48), n(request), options, s(pick(u, TOPICS)?)];
            m.extend(payload(u)?);
            Some(Value::List(m))
        }
        15 => {
            // CANCEL one of the connection's recent calls (or any number)
            let back = u.int_in_range(0..=3)?;
            let call = req.saturating_sub(back).max(1);
            let mode = *pick(u, &["skip", "kill", "killnowait", "bogus"])?;
            let options = if u.ratio(1, 5)? { dict(&[]) } else { dict(&[("mode", s(mode))]) };
            Some(Value::List(vec![n(49), n(call), options]))
        }
        16 => {
            // time passes: every router runs what is due
            let ms = u.int_in_range(0..=60)?;
            w.time.set(w.time.get() + std::time::Duration::from_millis(ms));
            let now = w.time.get();
            for sh in &mut w.shards {
                sh.router.on_time(now);
            }
            None
        }
        8 | 9 => {
            let inv = some_id(u, &w.conns[ci].invocations)?;
            // a progressive YIELD leaves the invocation pending
            let progress = op == 8 && u.ratio(1, 3)?;
            if !progress {
                w.conns[ci].invocations.retain(|i| *i != inv);
            }
            let mut m = if op == 8 {
                let mut pairs = Vec::new();
                if progress {
                    pairs.push(("progress", Value::Bool(true)));
                }
                if u.ratio(1, 5)? {
                    pairs.push(("ppt_scheme", s("x_fuzz")));
                }
                let options = dict(&pairs);
                vec![n(70), n(inv), options]
            } else {
                // unavailable: rerouted to another callee of a shared
                // registration
                let error = *pick(u, &["com.app.failed", "wamp.error.unavailable"])?;
                vec![n(8), n(68), n(inv), dict(&[]), s(error)]
            };
            m.extend(payload(u)?);
            Some(Value::List(m))
        }
        10 => Some(Value::List(vec![n(6), dict(&[]), s("wamp.close.normal")])),
        11 => Some(Value::List(vec![n(3), dict(&[]), s("wamp.close.normal")])),
        12 => {
            let c = w.conns.swap_remove(ci);
            w.shards[c.shard].router.close_connection(c.id);
            None
        }
        13 => {
            let len = u.int_in_range(0..=24)?;
            let bytes = u.bytes(len)?.to_vec();
            w.send_raw(ci, bytes);
            None
        }
        _ => {
            // deliver some cross-shard messages, interleaving the pairs
            for _ in 0..u.int_in_range(1..=4)? {
                let from = u.choose_index(w.shards.len())?;
                let to_pick = u.int_in_range(0..=2)?;
                w.deliver_one(from, to_pick);
            }
            None
        }
    };
    if let Some(m) = msg {
        w.send(ci, &m);
    }
    w.settle();
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(n) = u.int_in_range(1..=3usize) else { return };
    let mut w = World::new(n);
    for _ in 0..64 {
        if u.is_empty() || step(&mut w, &mut u).is_err() {
            break;
        }
    }
    // quiescence: the tables agree with the sessions
    w.deliver_all();
    for sh in &w.shards {
        let bad = sh.router.check_consistency();
        assert!(bad.is_empty(), "inconsistent tables: {bad:?}");
    }
    // every call a caller waits on is owed by its callee, and every
    // invocation owed to a caller still here is a call it waits on
    let calls: Vec<_> = w.shards.iter().flat_map(|sh| sh.router.calls_in_flight()).collect();
    let owed: Vec<_> = w.shards.iter().flat_map(|sh| sh.router.invocations_pending()).collect();
    for c in &calls {
        assert!(owed.contains(c), "call {c:?} waits on an invocation nobody owes: {owed:?}");
    }
    for o in &owed {
        let caller_here = w.shards[o.0].router.has_session(o.1);
        assert!(
            !caller_here || calls.contains(o),
            "invocation {o:?} owed for a call its caller does not wait on"
        );
    }
    // everyone leaves: everything goes back to zero, timers included
    for c in std::mem::take(&mut w.conns) {
        w.shards[c.shard].router.close_connection(c.id);
    }
    w.deliver_all();
    let left: Vec<String> = w.shards.iter().flat_map(|sh| sh.router.leftovers()).collect();
    assert!(left.is_empty(), "state left after every session left: {left:?}");
});
