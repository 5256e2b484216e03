//! No client can take the router down: the attacks of issue 8 (endless URIs
//! into the wildcard trie), the per-session limits, a callee that stops
//! reading, panics in cross-shard handling, restarts on the port just served.
//! Each runs on 1 and 2 shards where shards make a difference.

use std::thread;
use std::time::{Duration, Instant};

use switchyard::wamp::Value;

use crate::common::*;

/// `n` components alternating "a" and "" (a wildcard pattern), and the
/// concrete URI of `n` "a" components it matches.
fn deep_uris(n: usize) -> (String, String) {
    let pattern: Vec<&str> = (0..n).map(|i| if i % 2 == 0 { "a" } else { "" }).collect();
    (pattern.join("."), vec!["a"; n].join("."))
}

/// Two sessions, on shards 1 and 0 when there are two shards (so what
/// passes between them crosses the mesh).
fn apart(r: &Router) -> (Client, Client) {
    if r.shards == 2 {
        (r.join_on(1), r.join_on(0))
    } else {
        (Client::join_ws(r.ws, Ser::Json), Client::join_ws(r.ws, Ser::Json))
    }
}

/// A subscriber that must keep receiving events while the attack runs: it
/// and its publisher are on different shards when there are two.
fn bystanders(r: &Router) -> (Client, Client) {
    let (mut sub, mut publisher) = apart(r);
    sub.subscribe("com.bystander", "{}");
    publisher.send_json(r#"[16, 1, {"acknowledge": true}, "com.bystander", ["before"]]"#);
    publisher.expect(PUBLISHED);
    assert_eq!(sub.expect(EVENT).at(4).at(0).s(), "before");
    (sub, publisher)
}

fn still_served(sub: &mut Client, publisher: &mut Client, what: &str) {
    publisher.send_json(&format!(r#"[16, 2, {{"acknowledge": true}}, "com.bystander", ["{what}"]]"#));
    assert_eq!(next_message(publisher).code(), PUBLISHED);
    let ev = next_message(sub);
    assert_eq!(ev.code(), EVENT, "{ev:?}");
    assert_eq!(ev.at(4).at(0).s(), what);
}

/// The next WAMP message; keep-alive pings on the way are answered (the
/// bystanders idle through long attacks).
fn next_message(c: &mut Client) -> Value {
    loop {
        match c.recv() {
            Incoming::Message(m) => return decode(c.ser, &m),
            Incoming::Ping(p) => c.conn.write(&ws_frame(true, ws_op::PONG, &p, true)),
            other => panic!("expected a WAMP message, got {other:?}"),
        }
    }
}

fn endless_uris_are_refused(shards: usize) {
    let r = Router::start_with(shards, "", "max_message_size = 1048576", &[]);
    let (mut sub, mut publisher) = bystanders(&r);
    // the attack of the issue (20,000 components, ~40 KB) and one ten times larger
    for n in [20_000, 200_000] {
        let (pattern, uri) = deep_uris(n);
        let mut attacker = Client::join_ws(r.ws, Ser::Json);
        attacker.send_json(&format!(r#"[32, 1, {{"match": "wildcard"}}, "{pattern}"]"#));
        let e = attacker.expect_error(SUBSCRIBE, 1, "wamp.error.invalid_uri");
        assert!(e.at(5).at(0).s().contains("limits.max_uri_length"), "{e:?}");
        attacker.send_json(&format!(r#"[16, 2, {{"acknowledge": true}}, "{uri}", []]"#));
        attacker.expect_error(PUBLISH, 2, "wamp.error.invalid_uri");
        attacker.send_json(&format!(r#"[64, 3, {{"match": "wildcard"}}, "{pattern}"]"#));
        attacker.expect_error(REGISTER, 3, "wamp.error.invalid_uri");
        attacker.send_json(&format!(r#"[48, 4, {{}}, "{uri}", []]"#));
        attacker.expect_error(CALL, 4, "wamp.error.invalid_uri");
        still_served(&mut sub, &mut publisher, &format!("after {n}"));
    }
    // short but with too many components
    let many = vec!["a"; 300].join(".");
    let mut attacker = Client::join_ws(r.ws, Ser::Json);
    attacker.send_json(&format!(r#"[32, 5, {{}}, "{many}"]"#));
    let e = attacker.expect_error(SUBSCRIBE, 5, "wamp.error.invalid_uri");
    assert!(e.at(5).at(0).s().contains("limits.max_uri_components"), "{e:?}");
    // a realm name past the limit is refused before anything else
    let mut c = Client::ws(r.ws, Ser::Json);
    c.send_json(&format!(r#"[1, "{}", {ROLES}]"#, "r".repeat(10_000)));
    c.expect_abort("wamp.error.invalid_uri");
    assert_eq!(r.metric_sum("uris_refused"), 4 * 2 + 1 + 1);
    assert_eq!(
        r.metric_sum("subscriptions"),
        shards as i64,
        "only the bystander's subscription, on every shard"
    );
    still_served(&mut sub, &mut publisher, "at the end");
}

#[test]
fn endless_uris_are_refused_1_shard() {
    endless_uris_are_refused(1);
}

#[test]
fn endless_uris_are_refused_2_shards() {
    endless_uris_are_refused(2);
}

/// With the URI limits raised past the attack, the deep pattern is stored,
/// matched and removed on every shard without recursion.
fn deep_uris_are_walked_when_allowed(shards: usize) {
    let limits = "max_message_size = 1048576\nmax_uri_length = 1048576\nmax_uri_components = 1000000";
    let r = Router::start_with(shards, "", limits, &[]);
    let (mut sub, mut publisher) = bystanders(&r);
    for n in [20_000, 200_000] {
        let (pattern, uri) = deep_uris(n);
        let (mut deep_sub, mut deep_pub) = apart(&r);
        deep_sub.subscribe(&pattern, r#"{"match": "wildcard"}"#);
        let reg = deep_sub.next_req();
        deep_sub.send_json(&format!(r#"[64, {reg}, {{"match": "wildcard"}}, "{pattern}"]"#));
        deep_sub.expect(REGISTERED);
        deep_pub.send_json(&format!(r#"[16, 1, {{"acknowledge": true}}, "{uri}", ["deep"]]"#));
        deep_pub.expect(PUBLISHED);
        let ev = deep_sub.expect(EVENT);
        assert_eq!(ev.at(4).at(0).s(), "deep");
        assert_eq!(ev.at(3).key("topic").s().len(), uri.len());
        deep_pub.send_json(&format!(r#"[48, 2, {{}}, "{uri}", [1]]"#));
        let inv = deep_sub.expect(INVOCATION);
        deep_sub.send_json(&format!(r#"[70, {}, {{}}, ["answered"]]"#, inv.at(1).u()));
        assert_eq!(deep_pub.expect(RESULT).at(3).at(0).s(), "answered");
        deep_sub.drop_connection();
        still_served(&mut sub, &mut publisher, &format!("after {n}"));
    }
    // the deep entries leave every replica
    let deadline = Instant::now() + Duration::from_secs(10);
    while (r.metric_sum("subscriptions") != shards as i64 || r.metric_sum("registrations") != 0) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(r.metric("subscriptions"), vec![1; shards]);
    assert_eq!(r.metric("registrations"), vec![0; shards]);
}

#[test]
fn deep_uris_are_walked_when_allowed_1_shard() {
    deep_uris_are_walked_when_allowed(1);
}

#[test]
fn deep_uris_are_walked_when_allowed_2_shards() {
    deep_uris_are_walked_when_allowed(2);
}

fn subscriptions_and_registrations_per_session_are_bounded(shards: usize) {
    let r = Router::start_with(
        shards,
        "",
        "max_subscriptions_per_session = 5\nmax_registrations_per_session = 3",
        &[],
    );
    let mut c = Client::join_ws(r.ws, Ser::Json);
    let ids: Vec<u64> = (0..5).map(|i| c.subscribe(&format!("com.limit.t{i}"), "{}")).collect();
    c.send_json(r#"[32, 100, {}, "com.limit.t5"]"#);
    let e = c.expect_error(SUBSCRIBE, 100, "switchyard.error.limit_exceeded");
    assert!(e.at(5).at(0).s().contains("limits.max_subscriptions_per_session"), "{e:?}");
    // subscribing again to what it holds is no new subscription
    assert_eq!(c.subscribe("com.limit.t0", "{}"), ids[0]);
    // one given back makes room for one more
    c.send_json(&format!(r#"[34, 101, {}]"#, ids[1]));
    assert_eq!(c.expect(35).at(1).u(), 101);
    c.subscribe("com.limit.t5", "{}");
    for i in 0..3 {
        c.register(&format!("com.limit.p{i}"));
    }
    c.send_json(r#"[64, 102, {}, "com.limit.p3"]"#);
    let e = c.expect_error(REGISTER, 102, "switchyard.error.limit_exceeded");
    assert!(e.at(5).at(0).s().contains("limits.max_registrations_per_session"), "{e:?}");
    assert_eq!(r.metric_sum("subscriptions_refused"), 1);
    assert_eq!(r.metric_sum("registrations_refused"), 1);
    // another session has limits of its own
    let mut other = Client::join_ws(r.ws, Ser::Json);
    other.subscribe("com.limit.t9", "{}");
    other.register("com.limit.p9");
}

#[test]
fn subscriptions_and_registrations_per_session_are_bounded_1_shard() {
    subscriptions_and_registrations_per_session_are_bounded(1);
}

#[test]
fn subscriptions_and_registrations_per_session_are_bounded_2_shards() {
    subscriptions_and_registrations_per_session_are_bounded(2);
}

fn pending_calls_per_caller_are_bounded(shards: usize) {
    let r = Router::start_with(shards, "", "max_pending_calls = 3", &[]);
    let (mut callee, mut caller) = apart(&r);
    callee.register("com.pending");
    for i in 1..=5 {
        caller.send_json(&format!(r#"[48, {i}, {{}}, "com.pending", [{i}]]"#));
    }
    for want in [4, 5] {
        let e = caller.expect_error(CALL, want, "switchyard.error.limit_exceeded");
        assert!(e.at(5).at(0).s().contains("limits.max_pending_calls"), "{e:?}");
    }
    let invocations: Vec<Value> = (0..3).map(|_| callee.expect(INVOCATION)).collect();
    assert_eq!(r.metric_sum("pending_calls"), 3);
    assert_eq!(r.metric_sum("calls_refused"), 2);
    callee.send_json(&format!(r#"[70, {}, {{}}, ["one"]]"#, invocations[0].at(1).u()));
    assert_eq!(caller.expect(RESULT).at(1).u(), 1);
    // room for one more
    caller.send_json(r#"[48, 6, {}, "com.pending", [6]]"#);
    assert_eq!(callee.expect(INVOCATION).at(4).at(0).u(), 6);
    caller.send_json(r#"[48, 7, {}, "com.pending", [7]]"#);
    caller.expect_error(CALL, 7, "switchyard.error.limit_exceeded");
    // a caller that leaves takes its pending count with it
    caller.drop_connection();
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.metric_sum("pending_calls") != 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(r.metric("pending_calls"), vec![0; shards]);
}

#[test]
fn pending_calls_per_caller_are_bounded_1_shard() {
    pending_calls_per_caller_are_bounded(1);
}

#[test]
fn pending_calls_per_caller_are_bounded_2_shards() {
    pending_calls_per_caller_are_bounded(2);
}

/// A callee that stops reading is owed at most its outbound limit (plus one
/// message): then its callers get `wamp.error.no_available_callee` at once,
/// instead of the router queueing invocations without end.
fn a_callee_that_stops_reading_gets_no_more_calls(shards: usize) {
    let r = Router::start_with(
        shards,
        "",
        "max_outbound_bytes = 65536\nmax_pending_invocations = 100000\nmax_pending_calls = 100000",
        &[],
    );
    let (mut callee, mut caller) = apart(&r);
    callee.register("com.stalled");
    // The sentinel travels the same path as the calls (caller's shard to the
    // callee's shard and back), so every refusal is in before its answer.
    let mut echo = if shards == 2 {
        r.join_on(1)
    } else {
        Client::join_ws(r.ws, Ser::Json)
    };
    echo.register("com.echo");
    let mut sentinel = 1_000_000u64;
    let blob = "x".repeat(60_000);
    let mut sent = 0u64;
    let mut refused = Vec::new();
    // The kernel's socket buffers take a few MB first; then the router's
    // queue for the callee passes 64 KiB and calls are refused.
    while refused.is_empty() {
        assert!(sent < 2000, "2000 calls of 60 KB and none refused");
        for _ in 0..10 {
            sent += 1;
            caller.send_json(&format!(r#"[48, {sent}, {{}}, "com.stalled", ["{blob}"]]"#));
        }
        sentinel += 1;
        caller.send_json(&format!(r#"[48, {sentinel}, {{}}, "com.echo", []]"#));
        let inv = echo.expect(INVOCATION);
        echo.send_json(&format!(r#"[70, {}, {{}}, []]"#, inv.at(1).u()));
        loop {
            let m = caller.recv_msg();
            if m.code() == RESULT && m.at(1).u() == sentinel {
                break;
            }
            assert_eq!(m.code(), ERROR, "{m:?}");
            assert_eq!(m.at(4).s(), "wamp.error.no_available_callee", "{m:?}");
            refused.push(m.at(2).u());
        }
    }
    let refused_total = r.metric_sum("invocations_refused");
    assert_eq!(refused_total, refused.len() as i64);
    // The callee reads again: it gets every call that was not refused, in
    // order, and new calls reach it once its queue has drained.
    let mut expected = (1..=sent).filter(|i| !refused.contains(i));
    let mut got = 0u64;
    for want in expected.by_ref() {
        let inv = callee.expect(INVOCATION);
        assert_eq!(inv.at(4).at(0).s().len(), blob.len());
        callee.send_json(&format!(r#"[70, {}, {{}}, [{want}]]"#, inv.at(1).u()));
        got += 1;
    }
    assert_eq!(got + refused.len() as u64, sent);
    let mut results = 0;
    while results < got {
        let m = caller.expect(RESULT);
        results += 1;
        assert!(!refused.contains(&m.at(1).u()));
    }
    caller.send_json(r#"[48, 999999, {}, "com.stalled", ["small"]]"#);
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(4).at(0).s(), "small");
}

#[test]
fn a_callee_that_stops_reading_gets_no_more_calls_1_shard() {
    a_callee_that_stops_reading_gets_no_more_calls(1);
}

#[test]
fn a_callee_that_stops_reading_gets_no_more_calls_2_shards() {
    a_callee_that_stops_reading_gets_no_more_calls(2);
}

/// A panic while a shard handles a call from another shard (a debug-build
/// hook) is counted; the callee it concerned is closed and leaves every
/// replica, the caller gets an ERROR, and everyone else carries on.
#[test]
fn a_panic_in_cross_shard_handling_is_contained() {
    let r = Router::start_with(2, "", "", &[("SWITCHYARD_TEST_PANIC", "1")]);
    let (mut sub, mut publisher) = bystanders(&r);
    let mut callee = r.join_on(1);
    callee.register("switchyard.test.panic");
    callee.subscribe("com.doomed", "{}");
    let mut caller = r.join_on(0);
    caller.send_json(r#"[48, 1, {}, "switchyard.test.panic", []]"#);
    caller.expect_error(CALL, 1, "wamp.error.canceled");
    match callee.recv() {
        Incoming::Close(code, _) => assert_eq!(code, 1011, "internal error"),
        other => panic!("expected the callee's connection to close, got {other:?}"),
    }
    assert_eq!(r.metric("panics"), vec![0, 1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while (r.metric_sum("registrations") != 0 || r.metric_sum("subscriptions") != 2) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(r.metric("registrations"), vec![0, 0]);
    assert_eq!(r.metric("subscriptions"), vec![1, 1], "only the bystander's");
    assert_eq!(r.metric("pending_calls"), vec![0, 0]);
    still_served(&mut sub, &mut publisher, "after the panic");
    caller.send_json(r#"[48, 2, {}, "switchyard.test.panic", []]"#);
    caller.expect_error(CALL, 2, "wamp.error.no_such_procedure");
}

/// On one shard the call is routed inline, on the caller's own connection
/// task: that connection is dropped, the callee and everyone else go on.
#[test]
fn a_panic_while_routing_a_call_on_one_shard_drops_only_the_caller() {
    let r = Router::start_with(1, "", "", &[("SWITCHYARD_TEST_PANIC", "1")]);
    let (mut sub, mut publisher) = bystanders(&r);
    let mut callee = Client::join_ws(r.ws, Ser::Json);
    callee.register("switchyard.test.panic");
    let mut caller = Client::join_ws(r.ws, Ser::Json);
    caller.send_json(r#"[48, 1, {}, "switchyard.test.panic", []]"#);
    caller.conn.expect_eof();
    assert_eq!(r.metric_sum("panics"), 1);
    still_served(&mut sub, &mut publisher, "after the panic");
    callee.sync();
    assert_eq!(r.metric_sum("registrations"), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.metric_sum("pending_calls") != 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(r.metric_sum("pending_calls"), 0);
}

/// Connections the router closed itself leave TIME_WAIT entries on its
/// port; a restart right away must bind over them.
#[test]
fn a_router_restarts_at_once_on_the_ports_it_served() {
    let ws = format!("127.0.0.1:{}", free_port());
    let rs = format!("127.0.0.1:{}", free_port());
    for shards in [1, 2] {
        let mut r = Router::start_bound(shards, "", "", &[], &ws, &rs);
        // closed by the router: a /metrics request, an aborted session,
        // sessions open at shutdown (GOODBYE, then the router closes)
        r.metrics_text();
        let mut bad = Client::join_ws(r.ws, Ser::Json);
        bad.send_json("[999]");
        bad.expect_abort("wamp.error.protocol_violation");
        let mut raw_bad = Client::join_raw(r.rs, Ser::MsgPack);
        raw_bad.send_json("[1, \"realm1\", {}]");
        raw_bad.expect_abort("wamp.error.protocol_violation");
        let mut open = Client::join_ws(r.ws, Ser::Json);
        r.terminate();
        assert_eq!(open.expect(GOODBYE).at(2).s(), "wamp.close.system_shutdown");
        open.send_json(r#"[6, {}, "wamp.close.goodbye_and_out"]"#);
        assert!(r.wait().success());
        // and at once again
        let mut again = Router::start_bound(shards, "", "", &[], &ws, &rs);
        let mut c = Client::join_ws(again.ws, Ser::Json);
        c.sync();
        let mut c = Client::join_raw(again.rs, Ser::Json);
        c.sync();
        assert!(again.stop().success());
    }
}

/// A client that floods pings and reads nothing: the pongs it is owed count
/// against its outbound limit, so the router stops reading from it (its
/// writes stall long before 64 MB) and closes it once it has taken nothing
/// for a ping interval; other sessions carry on.
#[test]
fn a_ping_flood_from_a_client_that_never_reads_is_bounded() {
    use std::io::Write;
    let r = Router::start_with(1, "", "max_outbound_bytes = 65536\nping_interval_ms = 4000", &[]);
    let (mut sub, mut publisher) = bystanders(&r);
    let mut flooder = Client::join_ws(r.ws, Ser::Json);
    flooder
        .conn
        .stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .expect("write timeout");
    let ping = ws_frame(true, ws_op::PING, &[b'p'; 125], true);
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 512).collect();
    let mut written = 0usize;
    let stalled = loop {
        if written > 64 << 20 {
            break false;
        }
        match flooder.conn.stream.write(&burst) {
            Ok(n) => written += n,
            Err(_) => break true, // timed out (or closed): the router stopped reading
        }
    };
    assert!(stalled, "the router read {written} bytes of pings from a client that reads nothing");
    // closed once it has taken nothing for a ping interval; the bystanders
    // stay busy meanwhile (they would be closed as silent otherwise)
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.metric_sum("slow_consumers_disconnected") == 0 && Instant::now() < deadline {
        still_served(&mut sub, &mut publisher, "during the flood");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(r.metric_sum("slow_consumers_disconnected"), 1);
    still_served(&mut sub, &mut publisher, "after the flood");
}

/// The caller's shard keeps a table of its pending calls by request ID; a
/// CALL that reuses the ID of a pending one is a protocol violation (the
/// spec's non-sequential request ID), not a second entry that would swallow
/// the first call's RESULT.
#[test]
fn a_call_reusing_a_pending_request_id_is_a_protocol_violation() {
    for shards in [1, 2] {
        let r = Router::start(shards);
        let (mut callee, mut caller) = apart(&r);
        callee.register("com.dup");
        caller.send_json(r#"[48, 7, {}, "com.dup", [1]]"#);
        let first = callee.expect(INVOCATION);
        caller.send_json(r#"[48, 7, {}, "com.dup", [2]]"#);
        caller.expect_abort("wamp.error.protocol_violation");
        // the callee's answer for the first call finds no caller: harmless
        callee.send_json(&format!(r#"[70, {}, {{}}, ["late"]]"#, first.at(1).u()));
        let mut other = if shards == 2 {
            r.join_on(0)
        } else {
            Client::join_ws(r.ws, Ser::Json)
        };
        other.send_json(r#"[48, 7, {}, "com.dup", [3]]"#);
        let inv = callee.expect(INVOCATION);
        assert_eq!(inv.at(4).at(0).u(), 3);
        callee.send_json(&format!(r#"[70, {}, {{}}, ["ok"]]"#, inv.at(1).u()));
        assert_eq!(other.expect(RESULT).at(3).at(0).s(), "ok");
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.metric_sum("pending_calls") != 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(r.metric("pending_calls"), vec![0; shards]);
    }
}
