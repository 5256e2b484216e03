//! Routing on a two-shard router: PUBLISH and CALL across shards, pattern
//! subscriptions, error replies, and graceful shutdown.

use switchyard::wamp::Value;

use crate::common::*;

const SHARDS: usize = 2;

/// Opens `n` WebSocket sessions (every third one MessagePack) and more
/// until both shards hold sessions (16 almost always suffice).
fn sessions_on_both_shards(r: &Router, n: usize) -> Vec<Client> {
    let ser = |i: usize| if i % 3 == 2 { Ser::MsgPack } else { Ser::Json };
    let mut clients: Vec<Client> = (0..n).map(|i| Client::join_ws(r.ws, ser(i))).collect();
    while r.metric("sessions").contains(&0) && clients.len() < n + 48 {
        clients.push(Client::join_ws(r.ws, ser(clients.len())));
    }
    let sessions = r.metric("sessions");
    assert_eq!(sessions.iter().sum::<i64>(), clients.len() as i64, "{sessions:?}");
    assert!(sessions[0] > 0 && sessions[1] > 0, "sessions per shard: {sessions:?}");
    clients
}

#[test]
fn publish_reaches_subscribers_on_both_shards() {
    let r = Router::start(SHARDS);
    let mut clients = sessions_on_both_shards(&r, 16);
    let mut publisher = clients.remove(0);
    let topic = "com.shards.topic";
    let sub_ids: Vec<u64> = clients.iter_mut().map(|c| c.subscribe(topic, "{}")).collect();
    assert!(
        sub_ids.iter().all(|&id| id == sub_ids[0]),
        "one subscription for one topic: {sub_ids:?}"
    );
    assert_eq!(
        r.metric("subscriptions"),
        vec![1; SHARDS],
        "each shard holds a replica of the subscription"
    );

    let mesh_before = r.metric_sum("mesh_sent");
    let received_before = r.metric_sum("mesh_received");
    let delivered_before = r.metric_sum("events_delivered");

    const N: u64 = 20;
    for i in 0..N {
        publisher.send_json(&format!(
            r#"[16, {}, {{"acknowledge": true}}, "{topic}", [{i}, "event"], {{"seq": {i}}}]"#,
            100 + i
        ));
    }
    let mut publications = Vec::new();
    for i in 0..N {
        let m = publisher.recv_msg();
        assert_eq!(m.code(), PUBLISHED, "the publisher must get PUBLISHED only (exclude_me), got {m:?}");
        assert_eq!(m.at(1).u(), 100 + i);
        publications.push(m.at(2).u());
    }
    for (k, sub) in clients.iter_mut().enumerate() {
        for i in 0..N {
            let e = sub.expect(EVENT);
            assert_eq!(e.at(1).u(), sub_ids[0], "subscriber {k}: {e:?}");
            assert_eq!(
                e.at(2).u(),
                publications[i as usize],
                "subscriber {k}, event {i} out of order: {e:?}"
            );
            assert_eq!(e.at(3), &Value::Dict(Default::default()), "exact subscription: empty details");
            assert_eq!(e.at(4), &parse_json(&format!(r#"[{i}, "event"]"#)), "subscriber {k}");
            assert_eq!(e.at(5), &parse_json(&format!(r#"{{"seq": {i}}}"#)), "subscriber {k}");
        }
    }
    // A sentinel after the N: one publisher's events reach a subscriber in
    // order, through the same cross-shard queue when the shards differ, so a
    // duplicate or stray of the N would arrive before it.
    publisher.send_json(&format!(r#"[16, {}, {{"acknowledge": true}}, "{topic}", ["sentinel"]]"#, 100 + N));
    assert_eq!(publisher.expect(PUBLISHED).at(1).u(), 100 + N);
    // The publisher subscribes to nothing: anything for it would come from
    // its own shard, before the answer to its own round trip.
    let late = publisher.sync();
    assert!(late.is_empty(), "the publisher received {late:?}");
    for (k, c) in clients.iter_mut().enumerate() {
        let e = c.expect(EVENT);
        assert_eq!(
            e.at(4),
            &parse_json(r#"["sentinel"]"#),
            "subscriber {k} received an extra event: {e:?}"
        );
    }

    assert!(r.metric_sum("mesh_sent") > mesh_before, "no publication crossed the mesh");
    assert!(r.metric_sum("mesh_received") > received_before, "no publication crossed the mesh");
    // (less the sentinels)
    let delivered = r.metric_sum("events_delivered") - delivered_before - clients.len() as i64;
    assert!(delivered >= 15 * N as i64, "events delivered: {delivered}");
    assert_eq!(delivered, clients.len() as i64 * N as i64);
    assert!(r.metric_sum("publications") >= N as i64);
}

#[test]
fn exclude_me_false_delivers_to_the_publisher() {
    let r = Router::start(SHARDS);
    let (mut a, mut b) = (r.join_on(0), r.join_on(1));
    let sa = a.subscribe("com.echo", "{}");
    let sb = b.subscribe("com.echo", "{}");
    assert_eq!(sa, sb);
    a.send_json(r#"[16, 1, {"acknowledge": true, "exclude_me": false}, "com.echo", ["me too"]]"#);
    let e = a.expect(EVENT);
    assert_eq!(e.at(4), &parse_json(r#"["me too"]"#));
    a.expect(PUBLISHED);
    let e = b.expect(EVENT);
    assert_eq!(e.at(4), &parse_json(r#"["me too"]"#));
}

#[test]
fn calls_across_shards_are_answered() {
    let r = Router::start(SHARDS);
    let mut clients = sessions_on_both_shards(&r, 16);
    let mut callee = clients.remove(0);
    let reg = callee.register("com.shards.echo");
    assert_eq!(r.metric("registrations"), vec![1; SHARDS]);

    for (i, caller) in clients.iter_mut().enumerate() {
        caller.send_json(&format!(r#"[48, {}, {{}}, "com.shards.echo", [{i}]]"#, 1000 + i));
    }
    for _ in 0..clients.len() {
        let inv = callee.expect(INVOCATION);
        assert_eq!(inv.at(2).u(), reg, "{inv:?}");
        let id = inv.at(1).u();
        let Value::List(args) = inv.at(4) else { panic!("{inv:?}") };
        let arg = args[0].u();
        callee.send_json(&format!(r#"[70, {id}, {{}}, [{arg}], {{"by": "callee"}}]"#));
    }
    for (i, caller) in clients.iter_mut().enumerate() {
        let res = caller.expect(RESULT);
        assert_eq!(res.at(1).u(), 1000 + i as u64, "{res:?}");
        assert_eq!(res.at(3), &parse_json(&format!("[{i}]")), "caller {i} got another caller's result");
        assert_eq!(res.at(4), &parse_json(r#"{"by": "callee"}"#));
    }
    assert!(r.metric_sum("calls") >= clients.len() as i64);
}

#[test]
fn callee_leaving_cancels_pending_calls() {
    let r = Router::start(SHARDS);
    let mut callee = r.join_on(0);
    let mut remote_caller = r.join_on(1);
    let mut local_caller = r.join_on(0);
    callee.register("com.slow");
    remote_caller.send_json(r#"[48, 11, {}, "com.slow", ["remote"]]"#);
    local_caller.send_json(r#"[48, 12, {}, "com.slow", ["local"]]"#);
    // Both calls reached the callee, which never answers.
    callee.expect(INVOCATION);
    callee.expect(INVOCATION);
    callee.drop_connection();
    remote_caller.expect_error(CALL, 11, "wamp.error.canceled");
    local_caller.expect_error(CALL, 12, "wamp.error.canceled");
    // The registration went with the callee.
    let req = remote_caller.next_req() + 100;
    remote_caller.send_json(&format!(r#"[48, {req}, {{}}, "com.slow", []]"#));
    let mut err = remote_caller.expect(ERROR);
    // The removal travels through the mesh; retry briefly if it raced ahead.
    for _ in 0..50 {
        if err.at(4).s() == "wamp.error.no_such_procedure" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        remote_caller.send_json(&format!(r#"[48, {req}, {{}}, "com.slow", []]"#));
        err = remote_caller.expect(ERROR);
    }
    assert_eq!(err.at(4).s(), "wamp.error.no_such_procedure", "{err:?}");
}

#[test]
fn prefix_subscription_gets_the_topic() {
    let r = Router::start(SHARDS);
    let mut sub = r.join_on(0);
    let mut publisher = r.join_on(1);
    let prefix_id = sub.subscribe("com.pattern.", r#"{"match": "prefix"}"#);
    let exact_id = sub.subscribe("com.pattern.a.b", "{}");
    assert_ne!(prefix_id, exact_id);
    // Subscribing again to the same pattern returns the same subscription.
    assert_eq!(sub.subscribe("com.pattern.", r#"{"match": "prefix"}"#), prefix_id);

    // Published in this order; the mesh keeps it, so a wrong delivery of
    // com.other would arrive first.
    publisher.send_json(r#"[16, 1, {"acknowledge": true}, "com.other", [0]]"#);
    publisher.send_json(r#"[16, 2, {"acknowledge": true}, "com.pattern.a.b", [1]]"#);
    publisher.send_json(r#"[16, 3, {"acknowledge": true}, "com.pattern.x", [2]]"#);
    for req in 1..=3 {
        assert_eq!(publisher.expect(PUBLISHED).at(1).u(), req);
    }

    let mut got: Vec<Value> = (0..3).map(|_| sub.expect(EVENT)).collect();
    // The two events of com.pattern.a.b may come in either order.
    got[..2].sort_by_key(|e| (e.at(1).u() != exact_id) as u8);
    let (exact, prefix_ab, prefix_x) = (&got[0], &got[1], &got[2]);
    assert_eq!(exact.at(1).u(), exact_id, "{got:?}");
    assert_eq!(exact.at(4), &parse_json("[1]"));
    assert!(exact.at(3).get("topic").is_none(), "exact subscriptions carry no topic: {exact:?}");
    assert_eq!(prefix_ab.at(1).u(), prefix_id, "{got:?}");
    assert_eq!(prefix_ab.at(3).key("topic").s(), "com.pattern.a.b");
    assert_eq!(prefix_ab.at(4), &parse_json("[1]"));
    assert_eq!(prefix_ab.at(2).u(), exact.at(2).u(), "one publication, one ID");
    assert_eq!(prefix_x.at(1).u(), prefix_id, "{got:?}");
    assert_eq!(prefix_x.at(3).key("topic").s(), "com.pattern.x");
    assert_eq!(prefix_x.at(4), &parse_json("[2]"));
}

#[test]
fn wildcard_subscription_gets_the_topic() {
    let r = Router::start(SHARDS);
    let mut sub = r.join_on(1);
    let mut publisher = r.join_on(0);
    let id = sub.subscribe("com..update", r#"{"match": "wildcard"}"#);
    publisher.send_json(r#"[16, 1, {"acknowledge": true}, "com.a.b.update", [0]]"#);
    publisher.send_json(r#"[16, 2, {"acknowledge": true}, "com.thing.update", [1]]"#);
    publisher.expect(PUBLISHED);
    publisher.expect(PUBLISHED);
    let e = sub.expect(EVENT);
    assert_eq!(e.at(1).u(), id);
    assert_eq!(e.at(3).key("topic").s(), "com.thing.update");
    assert_eq!(e.at(4), &parse_json("[1]"));
}

#[test]
fn error_replies() {
    let r = Router::start(SHARDS);
    let mut a = r.join_on(0);
    let mut b = r.join_on(1);

    a.send_json(r#"[34, 5, 123456789]"#);
    a.expect_error(UNSUBSCRIBE, 5, "wamp.error.no_such_subscription");

    a.send_json(r#"[66, 6, 123456789]"#);
    a.expect_error(UNREGISTER, 6, "wamp.error.no_such_registration");

    a.send_json(r#"[48, 7, {}, "com.nobody.home", [1]]"#);
    a.expect_error(CALL, 7, "wamp.error.no_such_procedure");

    a.send_json(r#"[32, 8, {}, "a..b"]"#);
    a.expect_error(SUBSCRIBE, 8, "wamp.error.invalid_uri");
    a.send_json(r#"[64, 9, {}, "a..b"]"#);
    a.expect_error(REGISTER, 9, "wamp.error.invalid_uri");
    a.send_json(r#"[48, 10, {}, "a..b", []]"#);
    a.expect_error(CALL, 10, "wamp.error.invalid_uri");
    a.send_json(r#"[16, 11, {"acknowledge": true}, "a..b", []]"#);
    a.expect_error(PUBLISH, 11, "wamp.error.invalid_uri");

    // The same procedure from two sessions on different shards.
    let reg = a.register("com.dup");
    b.send_json(r#"[64, 20, {}, "com.dup"]"#);
    b.expect_error(REGISTER, 20, "wamp.error.procedure_already_exists");
    // ... and twice from the same session.
    a.send_json(r#"[64, 21, {}, "com.dup"]"#);
    a.expect_error(REGISTER, 21, "wamp.error.procedure_already_exists");

    // Unregister, then the procedure is gone everywhere and free again.
    a.send_json(&format!(r#"[66, 22, {reg}]"#));
    assert_eq!(a.expect(67).at(1).u(), 22);
    b.send_json(r#"[48, 23, {}, "com.dup", []]"#);
    b.expect_error(CALL, 23, "wamp.error.no_such_procedure");
    a.send_json(&format!(r#"[66, 24, {reg}]"#));
    a.expect_error(UNREGISTER, 24, "wamp.error.no_such_registration");
    b.register("com.dup");

    // Unsubscribe works once.
    let sub = a.subscribe("com.once", "{}");
    a.send_json(&format!(r#"[34, 25, {sub}]"#));
    assert_eq!(a.expect(35).at(1).u(), 25);
    a.send_json(&format!(r#"[34, 26, {sub}]"#));
    a.expect_error(UNSUBSCRIBE, 26, "wamp.error.no_such_subscription");

    // Errors do not end sessions.
    assert!(a.sync().is_empty());
    assert!(b.sync().is_empty());

    // An option of the wrong type or value is a protocol violation (as the
    // spec's test vectors have it).
    a.send_json(r#"[32, 12, {"match": "sideways"}, "com.topic"]"#);
    a.expect_abort("wamp.error.protocol_violation");
    b.send_json(r#"[16, 13, {"acknowledge": 1}, "com.topic", []]"#);
    b.expect_abort("wamp.error.protocol_violation");
}

#[test]
fn shutdown_says_goodbye_and_exits_zero() {
    let mut r = Router::start(SHARDS);
    // Sessions on both shards; some answer the GOODBYE, some stay silent.
    let mut answering = [r.join_on(0), r.join_on(1), Client::join_ws(r.ws, Ser::MsgPack)];
    let mut silent = [r.join_on(0), r.join_on(1), Client::join_raw(r.rs, Ser::MsgPack)];
    // An upgraded WebSocket without a session.
    let mut bare = Client::ws(r.ws, Ser::Json);

    r.terminate();
    for c in answering.iter_mut() {
        let g = c.expect(GOODBYE);
        assert_eq!(g.at(2).s(), "wamp.close.system_shutdown", "{g:?}");
        c.send_json(r#"[6, {}, "wamp.close.goodbye_and_out"]"#);
        match c.recv() {
            Incoming::Close(code, _) => assert_eq!(code, 1000),
            other => panic!("expected a close frame after GOODBYE, got {other:?}"),
        }
        c.conn.expect_eof();
    }
    match bare.recv() {
        Incoming::Close(code, _) => assert_eq!(code, 1001, "a connection without a session is closed going away"),
        other => panic!("expected a close frame, got {other:?}"),
    }
    bare.conn.expect_eof();

    let status = r.wait();
    assert!(status.success(), "router exit status {status}; log:\n{}", r.log());

    for c in silent.iter_mut() {
        let g = c.expect(GOODBYE);
        assert_eq!(g.at(2).s(), "wamp.close.system_shutdown", "{g:?}");
        match c.recv() {
            Incoming::Eof => {}
            Incoming::Close(_, _) => c.conn.expect_eof(),
            other => panic!("expected the close after GOODBYE, got {other:?}"),
        }
    }
}

#[test]
fn stop_exits_zero_with_sessions_open() {
    let mut r = Router::start(SHARDS);
    let mut clients = [r.join_on(0), r.join_on(1)];
    let status = r.stop();
    assert_eq!(status.code(), Some(0), "log:\n{}", r.log());
    for c in clients.iter_mut() {
        let g = c.expect(GOODBYE);
        assert_eq!(g.at(2).s(), "wamp.close.system_shutdown");
    }
}

#[test]
fn prefix_registration_gets_the_procedure() {
    let r = Router::start(SHARDS);
    let mut callee = r.join_on(0);
    let mut caller = r.join_on(1);
    callee.send_json(r#"[64, 1, {"match": "prefix"}, "com.math."]"#);
    let reg = callee.expect(REGISTERED).at(2).u();
    let exact = callee.register("com.math.exact");
    caller.send_json(r#"[48, 2, {}, "com.math.square", [3]]"#);
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(2).u(), reg);
    assert_eq!(inv.at(3).key("procedure").s(), "com.math.square");
    callee.send_json(&format!(r#"[70, {}, {{}}, [9]]"#, inv.at(1).u()));
    assert_eq!(caller.expect(RESULT).at(3), &parse_json("[9]"));
    // The exact registration wins over the prefix one.
    caller.send_json(r#"[48, 3, {}, "com.math.exact", []]"#);
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(2).u(), exact);
    assert!(inv.at(3).get("procedure").is_none(), "{inv:?}");
    callee.send_json(&format!(r#"[70, {}, {{}}]"#, inv.at(1).u()));
    let res = caller.expect(RESULT);
    assert_eq!(res.at(1).u(), 3);
    assert_eq!(res.len(), 3, "no arguments: {res:?}");
}

#[test]
fn concurrent_subscribes_of_one_topic_share_the_id() {
    let r = Router::start(SHARDS);
    let mut a = r.join_on(0);
    let mut b = r.join_on(1);
    // Back to back, before any answer: both requests of a session are answered.
    for c in [&mut a, &mut b] {
        c.send_json(r#"[32, 1, {}, "com.race"]"#);
        c.send_json(r#"[32, 2, {}, "com.race"]"#);
    }
    let mut ids = Vec::new();
    for c in [&mut a, &mut b] {
        let mut reqs = Vec::new();
        for _ in 0..2 {
            let m = c.expect(SUBSCRIBED);
            reqs.push(m.at(1).u());
            ids.push(m.at(2).u());
        }
        reqs.sort();
        assert_eq!(reqs, vec![1, 2]);
    }
    assert!(ids.iter().all(|&i| i == ids[0]), "{ids:?}");
}

#[test]
fn unsubscribe_and_leaving_update_every_shard() {
    let r = Router::start(SHARDS);
    let mut publisher = r.join_on(0);
    let mut stay = r.join_on(0);
    let mut go = r.join_on(1);
    let mut leave = r.join_on(1);
    let id = stay.subscribe("com.membership", "{}");
    assert_eq!(go.subscribe("com.membership", "{}"), id);
    assert_eq!(leave.subscribe("com.membership", "{}"), id);
    // go's sentinel: the publisher's events reach go in order, through the
    // same queue from shard 0 to shard 1.
    let sentinel = go.subscribe("com.membership.sentinel", "{}");

    go.send_json(&format!(r#"[34, 50, {id}]"#));
    assert_eq!(go.expect(35).at(1).u(), 50);
    let sessions = r.metric("sessions");
    leave.drop_connection();
    // Wait for the leave to reach the shards (no reply to wait on).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while r.metric("sessions") != vec![sessions[0], sessions[1] - 1] {
        assert!(std::time::Instant::now() < deadline, "sessions: {:?}", r.metric("sessions"));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    let delivered_before = r.metric_sum("events_delivered");
    publisher.send_json(r#"[16, 1, {"acknowledge": true}, "com.membership", ["only stay"]]"#);
    publisher.expect(PUBLISHED);
    publisher.send_json(r#"[16, 2, {"acknowledge": true}, "com.membership.sentinel", ["sentinel"]]"#);
    publisher.expect(PUBLISHED);
    assert_eq!(stay.expect(EVENT).at(4), &parse_json(r#"["only stay"]"#));
    // An event of com.membership for go would have arrived before the sentinel.
    let e = go.expect(EVENT);
    assert_eq!(e.at(1).u(), sentinel, "unsubscribed session got {e:?}");
    // The publication is delivered once, on shard 0 only (plus go's sentinel).
    assert_eq!(r.metric_sum("events_delivered") - delivered_before, 2);
    go.send_json(&format!(r#"[34, 51, {sentinel}]"#));
    assert_eq!(go.expect(35).at(1).u(), 51);

    // The last subscriber leaving removes the subscription from every shard.
    stay.drop_connection();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while r.metric("subscriptions") != vec![0, 0] {
        assert!(
            std::time::Instant::now() < deadline,
            "subscriptions: {:?}",
            r.metric("subscriptions")
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn procedure_is_free_again_after_its_callee_leaves() {
    let r = Router::start(SHARDS);
    let mut first = r.join_on(1);
    let mut second = r.join_on(0);
    first.register("com.handover");
    second.send_json(r#"[64, 1, {}, "com.handover"]"#);
    second.expect_error(REGISTER, 1, "wamp.error.procedure_already_exists");
    first.drop_connection();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while r.metric("registrations") != vec![0, 0] {
        assert!(
            std::time::Instant::now() < deadline,
            "registrations: {:?}",
            r.metric("registrations")
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let reg = second.register("com.handover");
    let mut caller = r.join_on(1);
    caller.send_json(r#"[48, 1, {}, "com.handover", ["x"]]"#);
    let inv = second.expect(INVOCATION);
    assert_eq!(inv.at(2).u(), reg);
    second.send_json(&format!(r#"[70, {}, {{}}, ["y"]]"#, inv.at(1).u()));
    assert_eq!(caller.expect(RESULT).at(3), &parse_json(r#"["y"]"#));
}

#[test]
fn stray_answers_and_departed_callers_are_harmless() {
    let r = Router::start(SHARDS);
    let mut callee = r.join_on(0);
    let mut caller = r.join_on(1);
    callee.register("com.late");
    // A YIELD and an ERROR for invocations that do not exist are ignored.
    callee.send_json(r#"[70, 999, {}, ["nobody asked"]]"#);
    callee.send_json(r#"[8, 68, 998, {}, "com.error", []]"#);
    assert!(callee.sync().is_empty());
    // The caller leaves before the answer; the answer goes nowhere.
    caller.send_json(r#"[48, 1, {}, "com.late", []]"#);
    let inv = callee.expect(INVOCATION);
    let sessions = r.metric("sessions");
    caller.drop_connection();
    // Wait until the caller's shard has seen it leave.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while r.metric("sessions")[1] != sessions[1] - 1 {
        assert!(std::time::Instant::now() < deadline, "sessions: {:?}", r.metric("sessions"));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    callee.send_json(&format!(r#"[70, {}, {{}}, ["too late"]]"#, inv.at(1).u()));
    // The sentinel: a call from the callee to a procedure on shard 1 goes
    // from shard 0 to shard 1 behind the late answer and comes back to the
    // callee from shard 1, so anything the answer caused would come first.
    let mut caller = r.join_on(1);
    caller.register("com.late.witness");
    callee.send_json(r#"[48, 100, {}, "com.late.witness", []]"#);
    let inv = caller.expect(INVOCATION);
    caller.send_json(&format!(r#"[70, {}, {{}}, ["witness"]]"#, inv.at(1).u()));
    let res = callee.expect(RESULT);
    assert_eq!(res.at(1).u(), 100, "{res:?}");
    // Everything still works.
    caller.send_json(r#"[48, 2, {}, "com.late", []]"#);
    let inv = callee.expect(INVOCATION);
    callee.send_json(&format!(r#"[70, {}, {{}}, ["on time"]]"#, inv.at(1).u()));
    assert_eq!(caller.expect(RESULT).at(3), &parse_json(r#"["on time"]"#));
    // ERROR for another request type than INVOCATION is a protocol violation.
    callee.send_json(r#"[8, 48, 1, {}, "com.error"]"#);
    callee.expect_abort("wamp.error.protocol_violation");
}

/// `listener.shards` places every client of a listener on the shards it
/// names: sessions of a listener served by shard 1 only are all on shard 1,
/// and a publication from a session there reaches one on shard 0's own
/// listener (across shards).
#[test]
fn a_listener_per_shard_places_its_clients() {
    let (p0, p1) = (free_port(), free_port());
    let listeners = format!(
        "[[listener]]\ntype = \"rawsocket\"\nbind = \"127.0.0.1:{p0}\"\nshards = [0]\n\n[[listener]]\ntype = \"rawsocket\"\nbind = \"127.0.0.1:{p1}\"\nshards = [1]\n"
    );
    let r = Router::start_with(SHARDS, &listeners, "", &[]);
    let at = |p: u16| -> std::net::SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
    let mut on1: Vec<Client> = (0..8).map(|_| Client::join_raw(at(p1), Ser::MsgPack)).collect();
    assert_eq!(r.metric("sessions"), vec![0, 8], "all on shard 1");
    let mut on0 = Client::join_raw(at(p0), Ser::Json);
    assert_eq!(r.metric("sessions"), vec![1, 8]);
    let sub = on0.subscribe("com.placed", "{}");
    let req = on1[0].next_req();
    on1[0].send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "com.placed", ["hi"]]"#));
    on1[0].expect(PUBLISHED);
    let ev = on0.expect(EVENT);
    assert_eq!((ev.at(1).u(), ev.at(4).at(0).s()), (sub, "hi"));
}
