//! Hardening: slow consumers, overload, limits, timeouts, vanishing clients,
//! churn, contained panics and shutdown under load. Every limit used here is
//! a config key; the counters named are the ones /metrics shows.

use std::thread;
use std::time::Duration;

use switchyard::wamp::Value;

use crate::common::*;

/// Publishes `n` events of about `size` bytes to `topic` from `publisher`.
fn flood(publisher: &mut Client, topic: &str, n: u64, size: usize) {
    let pad = "x".repeat(size);
    for i in 1..=n {
        publisher.send_json(&format!(r#"[16, {i}, {{}}, "{topic}", [{i}, "{pad}"]]"#));
    }
}

/// Reads events until `n` arrived; checks they come in publication order.
fn collect_in_order(mut c: Client, n: u64) -> Client {
    let mut next = 1;
    while next <= n {
        let m = c.expect(EVENT);
        assert_eq!(m.at(4).at(0).u(), next, "events out of order or lost");
        next += 1;
    }
    c
}

/// Like [`flood`], but never more than `ahead` events ahead of what the
/// reading subscriber (on another thread) reports it has received: the
/// publisher goes at the pace of the good subscriber, not the stalled one.
fn paced_flood(publisher: &mut Client, topic: &str, n: u64, size: usize, progress: &std::sync::atomic::AtomicU64, ahead: u64) {
    let pad = "x".repeat(size);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for i in 1..=n {
        while i > progress.load(std::sync::atomic::Ordering::Acquire) + ahead {
            assert!(
                std::time::Instant::now() < deadline,
                "the reading subscriber stopped at event {}",
                progress.load(std::sync::atomic::Ordering::Acquire)
            );
            thread::sleep(Duration::from_micros(200));
        }
        publisher.send_json(&format!(r#"[16, {i}, {{}}, "{topic}", [{i}, "{pad}"]]"#));
    }
}

/// A reader thread that checks order and reports how many events it has.
fn spawn_reader(mut c: Client, n: u64, progress: std::sync::Arc<std::sync::atomic::AtomicU64>) -> thread::JoinHandle<Client> {
    thread::spawn(move || {
        for next in 1..=n {
            let m = c.expect(EVENT);
            assert_eq!(m.at(4).at(0).u(), next, "events out of order or lost");
            progress.store(next, std::sync::atomic::Ordering::Release);
        }
        c
    })
}

/// A router with a 64 KiB outbound limit and `policy` for slow consumers, a
/// subscriber that never reads, and 20,000 events of 1 KB published at the
/// pace of a second subscriber that must get every one of them in order.
/// Returns the router, the stalled subscriber, and the reading subscriber and
/// the publisher (still connected).
fn flood_past_a_stalled_subscriber(policy: &str) -> (Router, Client, [Client; 2]) {
    let r = Router::start_with(1, "", &format!("max_outbound_bytes = 65536\nslow_consumer = \"{policy}\""), &[]);
    let mut stalled = Client::join_ws(r.ws, Ser::Json);
    stalled.subscribe("com.flood", "{}");
    let mut reader = Client::join_ws(r.ws, Ser::Json);
    reader.subscribe("com.flood", "{}");
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = spawn_reader(reader, 20_000, progress.clone());
    let mut publisher = Client::join_ws(r.ws, Ser::Json);
    paced_flood(&mut publisher, "com.flood", 20_000, 1000, &progress, 20);
    publisher.sync();
    let reader = reader.join().expect("the reading subscriber got every event in order");
    (r, stalled, [reader, publisher])
}

#[test]
fn a_stalled_subscriber_loses_events_but_nobody_else_does() {
    let (r, mut stalled, _others) = flood_past_a_stalled_subscriber("drop");
    let dropped = r.metric_sum("events_dropped");
    assert!(dropped > 0, "the stalled subscriber's queue never filled");
    // The stalled one is still connected under the drop policy, and what it
    // does receive is in order (a prefix of the stream, then gaps).
    let mut last = 0;
    for _ in 0..100 {
        let m = stalled.expect(EVENT);
        let i = m.at(4).at(0).u();
        assert!(i > last, "events out of order: {i} after {last}");
        last = i;
    }
    assert_eq!(r.metric_sum("slow_consumers_disconnected"), 0);
}

#[test]
fn a_stalled_subscriber_is_disconnected_by_policy() {
    let (r, mut stalled, _others) = flood_past_a_stalled_subscriber("disconnect");
    assert_eq!(r.metric_sum("slow_consumers_disconnected"), 1);
    // The stalled one finds its connection closed when it reads again (after
    // whatever was already in flight; a peer that does not read cannot be
    // sent a clean close frame).
    // (It may also be reset, which discards what its kernel had buffered.)
    let mut sink = [0u8; 65536];
    loop {
        match std::io::Read::read(&mut stalled.conn.stream, &mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("the stalled subscriber is still connected")
            }
            Err(_) => break, // reset
        }
    }
    assert_eq!(r.metric_sum("sessions"), 2, "only the stalled session went away");
}

#[test]
fn a_callee_at_its_pending_limit_gets_no_more_calls() {
    let r = Router::start_with(1, "", "max_pending_invocations = 4", &[]);
    let mut callee = Client::join_ws(r.ws, Ser::Json);
    callee.register("com.slow");
    let mut caller = Client::join_ws(r.ws, Ser::Json);
    for i in 1..=10 {
        caller.send_json(&format!(r#"[48, {i}, {{}}, "com.slow", [{i}]]"#));
    }
    // 4 invocations reach the callee, the other 6 calls fail at once.
    let mut refused: Vec<u64> = (0..6)
        .map(|_| caller.expect(ERROR))
        .map(|m| {
            assert_eq!(m.at(4).s(), "wamp.error.no_available_callee", "{m:?}");
            m.at(2).u()
        })
        .collect();
    refused.sort();
    assert_eq!(refused, vec![5, 6, 7, 8, 9, 10]);
    let invocations: Vec<_> = (0..4).map(|_| callee.expect(INVOCATION)).collect();
    assert_eq!(r.metric_sum("invocations_refused"), 6);
    assert_eq!(r.metric_sum("pending_invocations"), 4);
    // answering one frees a slot
    let first = invocations[0].at(1).u();
    callee.send_json(&format!(r#"[70, {first}, {{}}, ["done"]]"#));
    let m = caller.expect(RESULT);
    assert_eq!(m.at(1).u(), 1);
    assert_eq!(r.metric_sum("pending_invocations"), 3);
    caller.send_json(r#"[48, 11, {}, "com.slow", [11]]"#);
    let m = callee.expect(INVOCATION);
    assert_eq!(m.at(4).at(0).u(), 11);
}

#[test]
fn slow_or_silent_handshakes_are_closed() {
    let r = Router::start_with(1, "", "handshake_timeout_ms = 300", &[]);
    // nothing at all, half an HTTP request, half a RawSocket handshake
    let mut silent = Conn {
        stream: connect(r.ws),
        buf: Vec::new(),
        framing: Framing::WebSocket,
    };
    let mut half_http = Conn {
        stream: connect(r.ws),
        buf: Vec::new(),
        framing: Framing::WebSocket,
    };
    half_http.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n");
    let mut half_rs = Conn {
        stream: connect(r.rs),
        buf: Vec::new(),
        framing: Framing::RawSocket,
    };
    half_rs.write(&[0x7f, 0xf2]);
    silent.expect_eof();
    half_http.expect_eof();
    half_rs.expect_eof();
    assert_eq!(r.metric_sum("handshake_timeouts"), 3);
    // a prompt client is unaffected
    let mut c = Client::join_ws(r.ws, Ser::Json);
    c.sync();
}

#[test]
fn connection_limits_turn_clients_away_clearly() {
    let r = Router::start_with(1, "", "max_connections = 3", &[]);
    let a = Client::join_raw(r.rs, Ser::MsgPack);
    let _b = Client::join_raw(r.rs, Ser::MsgPack);
    let _c = Client::join_ws(r.ws, Ser::Json);
    // the fourth RawSocket client gets the spec's "maximum connection count reached"
    let (reply, _) = rs_handshake(r.rs, [0x7f, 0xf2, 0, 0]);
    assert_eq!(reply, Some([0x7f, 0x40, 0, 0]));
    // the fourth WebSocket client gets 503
    let resp = http_request(r.ws, &upgrade_request("/ws", WS_KEY, Some("wamp.2.json")));
    assert_eq!(resp.status, 503, "{resp:?}");
    assert!(resp.body_text().contains("connection limit"));
    // a freed slot can be used again
    a.drop_connection();
    let mut again = None;
    for _ in 0..100 {
        let (reply, conn) = rs_handshake(r.rs, [0x7f, 0xf2, 0, 0]);
        if reply.is_some_and(|r| r[1] & 0x0f == 2) {
            again = Some(conn);
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let mut c = Client::over(again.expect("a slot came free"), Ser::MsgPack);
    c.hello();
    drop(c);
    drop(_c);
    let mut refused = 0;
    for _ in 0..100 {
        // /metrics needs a free slot itself
        let resp = http_request(r.ws, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        if resp.status == 200 {
            refused = parse_metric(&resp.body_text(), "connections_refused", 1).iter().sum();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(refused >= 2, "refusals counted: {refused}");
}

#[test]
fn silent_connections_are_pinged_then_closed() {
    let r = Router::start_with(1, "", "ping_interval_ms = 200", &[]);
    // WebSocket: answer the first ping, then stay silent
    let mut ws = Client::join_ws(r.ws, Ser::Json);
    let Incoming::Ping(p) = ws.recv() else { panic!("expected a ping") };
    ws.conn.write(&ws_frame(true, ws_op::PONG, &p, true));
    let Incoming::Ping(_) = ws.recv() else {
        panic!("expected a second ping after the pong")
    };
    match ws.recv() {
        Incoming::Close(code, _) => assert_eq!(code, 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    ws.conn.expect_eof();
    // RawSocket: PING frames, answered with PONG
    let mut rs = Client::join_raw(r.rs, Ser::MsgPack);
    let Incoming::Ping(p) = rs.recv() else {
        panic!("expected a RawSocket ping")
    };
    rs.conn.write(&rs_frame(rs_type::PONG, &p));
    let Incoming::Ping(_) = rs.recv() else {
        panic!("expected a second RawSocket ping")
    };
    rs.conn.expect_eof();
    assert_eq!(r.metric_sum("idle_closed"), 2);
    assert_eq!(r.metric_sum("sessions"), 0);
}

#[test]
fn a_panicking_connection_leaves_the_shard_running() {
    let r = Router::start_with(1, "", "", &[("SWITCHYARD_TEST_PANIC", "1")]);
    let mut sub = Client::join_ws(r.ws, Ser::Json);
    sub.subscribe("com.alive", "{}");
    let mut doomed = Client::ws(r.ws, Ser::Json);
    let connections = r.metric_sum("connections");
    doomed.send_json(&format!(r#"[1, "switchyard.test.panic", {ROLES}]"#));
    doomed.conn.expect_eof();
    drop(doomed);
    assert_eq!(r.metric_sum("panics"), 1);
    let mut publisher = Client::join_ws(r.ws, Ser::Json);
    publisher.send_json(r#"[16, 1, {"acknowledge": true}, "com.alive", ["still here"]]"#);
    publisher.expect(PUBLISHED);
    assert_eq!(sub.expect(EVENT).at(4).at(0).s(), "still here");
    let mut after = 0;
    for _ in 0..200 {
        // the publisher joined since; the doomed connection must be gone
        after = r.metric_sum("connections");
        if after == connections {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(after, connections, "the panicked connection gave its slot back");
}

#[test]
fn a_client_that_vanishes_with_rst_is_cleaned_up() {
    let r = Router::start(2);
    let mut callee = r.join_on(1);
    callee.register("com.vanish.proc");
    callee.subscribe("com.vanish.topic", "{}");
    let mut caller = r.join_on(0);
    caller.send_json(r#"[48, 7, {}, "com.vanish.proc", []]"#);
    callee.expect(INVOCATION);
    // reset the connection: SO_LINGER 0, then close
    let sock = socket2::Socket::from(callee.conn.stream.try_clone().expect("clone"));
    sock.set_linger(Some(Duration::ZERO)).expect("linger");
    drop(sock);
    drop(callee);
    let err = caller.expect_error(CALL, 7, "wamp.error.canceled");
    assert_eq!(err.at(1).u(), CALL);
    // every shard's replica lets go of the registration and subscription
    for _ in 0..200 {
        if r.metric_sum("registrations") == 0 && r.metric_sum("subscriptions") == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(r.metric("registrations"), vec![0, 0]);
    assert_eq!(r.metric("subscriptions"), vec![0, 0]);
    caller.send_json(r#"[48, 8, {}, "com.vanish.proc", []]"#);
    caller.expect_error(CALL, 8, "wamp.error.no_such_procedure");
}

#[test]
fn churn_leaves_nothing_behind() {
    // Sessions with subscriptions, registrations and calls pending at both
    // ends go away (a third without a TCP close); every table is empty after.
    let r = Router::start(2);
    for cycle in 0..3 {
        let mut clients: Vec<Client> = (0..150)
            .map(|i| {
                let mut c = if i % 2 == 0 {
                    Client::join_ws(r.ws, Ser::Json)
                } else {
                    Client::join_raw(r.rs, Ser::MsgPack)
                };
                c.subscribe(&format!("com.churn.t{}", i % 10), "{}");
                c.register(&format!("com.churn.c{cycle}.p{i}"));
                c
            })
            .collect();
        assert_eq!(r.metric_sum("sessions"), 150);
        assert_eq!(r.metric("registrations"), vec![150, 150]);
        // every client calls its neighbour, and nobody answers
        for (i, c) in clients.iter_mut().enumerate() {
            let req = c.next_req();
            c.send_json(&format!(r#"[48, {req}, {{}}, "com.churn.c{cycle}.p{}", [{i}]]"#, (i + 1) % 150));
        }
        for _ in 0..500 {
            if r.metric_sum("pending_invocations") == 150 {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            r.metric_sum("pending_invocations"),
            150,
            "cycle {cycle}: every call reached its callee"
        );
        for (i, c) in clients.into_iter().enumerate() {
            if i % 3 == 0 {
                c.drop_connection();
            } else {
                drop(c);
            }
        }
        for _ in 0..500 {
            if r.metric_sum("sessions") == 0
                && r.metric_sum("registrations") == 0
                && r.metric_sum("subscriptions") == 0
                && r.metric_sum("pending_invocations") == 0
            {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(r.metric("sessions"), vec![0, 0], "cycle {cycle}");
        assert_eq!(r.metric("subscriptions"), vec![0, 0], "cycle {cycle}");
        assert_eq!(r.metric("registrations"), vec![0, 0], "cycle {cycle}");
        assert_eq!(r.metric("pending_invocations"), vec![0, 0], "cycle {cycle}");
    }
}

#[test]
fn full_cross_shard_queues_pause_reading_and_lose_nothing() {
    let r = Router::start_with(2, "mesh_queue_capacity = 2\nmesh_spin_us = 0", "", &[]);
    let mut sub = r.join_on(1);
    sub.subscribe("com.mesh", "{}");
    let mut publisher = r.join_on(0);
    let sub = thread::spawn(move || collect_in_order(sub, 5000));
    flood(&mut publisher, "com.mesh", 5000, 16);
    publisher.sync();
    sub.join().expect("every event arrived, in order");
    assert!(r.metric("mesh_full")[0] > 0, "the queue to shard 1 never filled");
    // every event arrived, so nothing waits in an overflow any more
    assert_eq!(r.metric("mesh_overflow"), vec![0, 0]);
    assert_eq!(r.metric_sum("mesh_events_dropped"), 0);
}

#[test]
fn shutdown_under_load_says_goodbye_and_exits_zero() {
    let mut r = Router::start(2);
    let mut sub = Client::join_ws(r.ws, Ser::Json);
    sub.subscribe("com.load", "{}");
    let mut publisher = Client::join_raw(r.rs, Ser::MsgPack);
    let load = thread::spawn(move || {
        let mut i = 0u64;
        loop {
            i += 1;
            let frame = rs_frame(
                rs_type::WAMP,
                &encode(Ser::MsgPack, &parse_json(&format!(r#"[16, {i}, {{}}, "com.load", [{i}]]"#))),
            );
            if std::io::Write::write_all(&mut publisher.conn.stream, &frame).is_err() {
                return i;
            }
            if i > 2_000_000 {
                return i;
            }
        }
    });
    // let the load run, then stop the router in the middle of it
    for _ in 0..50 {
        sub.expect(EVENT);
    }
    r.terminate();
    let mut goodbye = false;
    loop {
        match sub.recv() {
            Incoming::Message(m) => {
                let v = decode(Ser::Json, &m);
                if v.code() == GOODBYE {
                    assert_eq!(v.at(2).s(), "wamp.close.system_shutdown");
                    goodbye = true;
                    sub.send_json(r#"[6, {}, "wamp.close.goodbye_and_out"]"#);
                }
            }
            Incoming::Close(..) | Incoming::Eof => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(goodbye, "the subscriber got GOODBYE");
    assert!(r.wait().success(), "exit status 0");
    let sent = load.join().expect("publisher thread");
    assert!(sent > 50);
}

/// A publisher that always has more bytes waiting on its socket.
fn spawn_firehose(mut publisher: Client, topic: &'static str) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let frame = rs_frame(
            rs_type::WAMP,
            &encode(Ser::MsgPack, &parse_json(&format!(r#"[16, 1, {{}}, "{topic}", [1]]"#))),
        );
        let burst: Vec<u8> = frame.iter().copied().cycle().take(frame.len() * 4096).collect();
        let mut sent = 0u64;
        while std::io::Write::write_all(&mut publisher.conn.stream, &burst).is_ok() {
            sent += 4096;
            if sent > 50_000_000 {
                break;
            }
        }
        sent
    })
}

#[test]
fn a_firehose_publisher_does_not_starve_its_shard() {
    // One shard: the firehose and the other client share it. The read loop
    // gives up the CPU when its time slice is over, so the other session's
    // round trips keep completing while the firehose's socket never drains.
    let mut r = Router::start(1);
    let publisher = Client::join_raw(r.rs, Ser::MsgPack);
    let firehose = spawn_firehose(publisher, "com.firehose");
    let mut other = Client::join_ws(r.ws, Ser::Json);
    for _ in 0..20 {
        other.sync();
        thread::sleep(Duration::from_millis(20));
    }
    assert!(r.metric_sum("messages_in") > 1000, "the firehose was running");
    assert!(r.stop().success());
    assert!(firehose.join().expect("firehose thread") > 0);
}

#[test]
fn shutdown_closes_peers_that_never_answer_within_the_grace_period() {
    // A subscriber that reads nothing (so it never sees GOODBYE) and a
    // firehose publisher that never stops: after the grace period the router
    // ends both connections and exits 0.
    // (a small outbound queue, so that the deaf subscriber's fills at once)
    let mut r = Router::start_with(1, "shutdown_grace_ms = 300", "max_outbound_bytes = 262144", &[]);
    let mut deaf = Client::join_ws(r.ws, Ser::Json);
    deaf.subscribe("com.firehose", "{}");
    let publisher = Client::join_raw(r.rs, Ser::MsgPack);
    let firehose = spawn_firehose(publisher, "com.firehose");
    // wait until the deaf subscriber's queue is full
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r.metric_sum("events_dropped") == 0 {
        assert!(std::time::Instant::now() < deadline, "the deaf subscriber's queue never filled");
        thread::sleep(Duration::from_millis(20));
    }
    r.terminate();
    assert!(r.wait().success(), "exit status 0");
    assert!(
        r.log()
            .contains("closing connections that did not finish in the shutdown grace period"),
        "{}",
        r.log()
    );
    assert!(firehose.join().expect("firehose thread") > 0);
    drop(deaf);
}

#[test]
fn a_caller_that_never_reads_its_results_is_slowed_then_closed() {
    // RESULTs are never dropped, so a caller that sends CALLs and reads no
    // RESULT must not grow its queue without bound: past max_outbound_bytes
    // the router stops reading from it (its writes back up), and when it has
    // taken nothing for a whole ping interval its connection is closed. The
    // callee and everybody else carry on.
    let r = Router::start_with(1, "", "max_outbound_bytes = 65536\nping_interval_ms = 1000", &[]);
    let mut callee = Client::join_raw(r.rs, Ser::MsgPack);
    callee.register("com.echo");
    let echo = thread::spawn(move || {
        let mut answered = 0u64;
        loop {
            match callee.recv() {
                Incoming::Message(m) => {
                    let m = decode(Ser::MsgPack, &m);
                    if m.code() != INVOCATION {
                        continue;
                    }
                    let reply = Value::List(vec![
                        Value::UInt(YIELD),
                        m.at(1).clone(),
                        Value::Dict(Default::default()),
                        m.at(4).clone(),
                    ]);
                    callee.send(&reply);
                    answered += 1;
                }
                _ => return (callee, answered),
            }
        }
    });
    let mut caller = Client::join_raw(r.rs, Ser::MsgPack);
    caller.conn.stream.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let big = "x".repeat(4000);
    let mut sent = 0u64;
    let mut backed_up = false;
    for i in 1..=20_000u64 {
        let frame = rs_frame(
            rs_type::WAMP,
            &encode(Ser::MsgPack, &parse_json(&format!(r#"[48, {i}, {{}}, "com.echo", ["{big}"]]"#))),
        );
        match std::io::Write::write_all(&mut caller.conn.stream, &frame) {
            Ok(()) => sent += 1,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                backed_up = true;
                break;
            }
            Err(e) => panic!("the caller's connection failed before it backed up: {e}"),
        }
    }
    assert!(backed_up, "the router kept reading {sent} calls from a caller that reads nothing");
    // The caller is closed once a ping interval passes with nothing taken.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r.metric_sum("slow_consumers_disconnected") == 0 {
        assert!(std::time::Instant::now() < deadline, "the stalled caller was never closed");
        thread::sleep(Duration::from_millis(50));
    }
    let mut other = Client::join_ws(r.ws, Ser::Json);
    other.sync();
    // The callee answers what it was sent; nothing stays pending. (The
    // round trip of `other` does not wait for the callee's answers.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r.metric_sum("pending_invocations") != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "pending invocations: {:?}",
            r.metric("pending_invocations")
        );
        thread::sleep(Duration::from_millis(10));
    }
    drop(caller);
    drop(r);
    let (_callee, answered) = echo.join().expect("callee thread");
    assert!(answered > 0);
}
