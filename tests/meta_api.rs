//! The session meta API and testaments over real sockets, on 1 shard and
//! with the sessions spread over 2 shards: `wamp.session.on_join` /
//! `on_leave`, the kill procedures, `wamp.session.add_testament` /
//! `flush_testaments`. What must *not* arrive is shown by a later event on
//! the same path.

use switchyard::wamp::Value;

use crate::common::*;

/// A session of `realm` on shard `i % shards` (any shard with 1).
fn on(r: &Router, i: usize, realm: &str, details: &str) -> Client {
    let mut c = r.join_spread(i);
    c.send_json(r#"[6, {}, "wamp.close.close_realm"]"#);
    c.expect(GOODBYE);
    c.login(realm, details);
    c
}

/// A realm whose sessions may act on others, with the test principals.
fn admin() -> String {
    format!(
        "\n[[realm]]\nname = \"admin\"\nmeta_admin_roles = [\"anonymous\"]\n{}",
        test_principals()
    )
}

fn event_args(ev: &Value) -> &Value {
    ev.at(4)
}

/// `on_join` carries the session's details, `on_leave` its session, authid
/// and authrole, wherever the subscriber and the session are; another
/// realm's sessions are not seen.
fn session_events_fire_router_wide(shards: usize) {
    let r = Router::start_with(shards, "\n[[realm]]\nname = \"other\"", "", &[]);
    let mut watcher = on(&r, 0, "realm1", ROLES);
    watcher.subscribe("wamp.session.on_join", "{}");
    watcher.subscribe("wamp.session.on_leave", "{}");
    for i in 0..2 {
        let c = on(&r, i + 1, "realm1", r#"{"roles": {"caller": {}}, "authid": "joiner"}"#);
        // the GOODBYE + HELLO of `on`: first the session join_on opened
        // leaves and a new one joins; read up to this one's join
        let joined = loop {
            let ev = watcher.expect(EVENT);
            let a = event_args(&ev);
            if matches!(a.at(0), Value::Dict(_)) && a.at(0).key("session").u() == c.session {
                break a.at(0).clone();
            }
        };
        assert_eq!(joined.key("authid").s(), "joiner");
        assert_eq!(joined.key("authrole").s(), "anonymous");
        assert_eq!(joined.key("authmethod").s(), "ticket");
        assert_eq!(joined.key("transport").key("type").s(), "websocket");
        let (id, _) = (c.session, ());
        c.drop_connection();
        let left = loop {
            let ev = watcher.expect(EVENT);
            let a = event_args(&ev).clone();
            if a.at(0) == &Value::UInt(id) {
                break a;
            }
        };
        assert_eq!(left.at(1).s(), "joiner");
        assert_eq!(left.at(2).s(), "anonymous");
    }
    // nobody may publish to the router's topics
    let mut forger = on(&r, 1, "realm1", ROLES);
    forger.send_json(r#"[16, 1, {"acknowledge": true}, "wamp.session.on_join", [{"session": 1}]]"#);
    forger.expect_error(PUBLISH, 1, "wamp.error.invalid_uri");
    forger.send_json(r#"[48, 2, {}, "wamp.session.add_testament", ["wamp.session.on_leave", [1]]]"#);
    forger.expect_error(CALL, 2, "wamp.error.invalid_uri");
    // a session of another realm: not seen; a later realm1 join is the next event
    let other = on(&r, 1, "other", ROLES);
    let later = on(&r, 1, "realm1", r#"{"roles": {"caller": {}}, "authid": "later"}"#);
    loop {
        let ev = watcher.expect(EVENT);
        let a = event_args(&ev);
        if let Value::Dict(_) = a.at(0) {
            assert_ne!(a.at(0).key("session").u(), other.session, "another realm's join was seen");
            if a.at(0).key("session").u() == later.session {
                break;
            }
        } else {
            assert_ne!(a.at(0), &Value::UInt(other.session), "another realm's leave was seen");
        }
    }
}

#[test]
fn session_events_fire_router_wide_1_shard() {
    session_events_fire_router_wide(1);
}

#[test]
fn session_events_fire_router_wide_2_shards() {
    session_events_fire_router_wide(2);
}

/// The kill procedures: GOODBYE with the reason (and message) to the
/// sessions named, never the caller; they leave at once (on_leave fires,
/// except for kill_all); a realm without meta_admin_roles refuses them.
fn sessions_are_killed(shards: usize) {
    let r = Router::start_with(shards, &admin(), "", &[]);
    let mut admin = on(&r, 0, "admin", ROLES);
    admin.subscribe("wamp.session.on_leave", "{}");
    let mut victim = on(&r, 1, "admin", r#"{"roles": {"caller": {}}, "authid": "victim"}"#);
    admin.send_json(&format!(
        r#"[48, 1, {{}}, "wamp.session.kill", [{}], {{"reason": "com.example.bye", "message": "so long"}}]"#,
        victim.session
    ));
    let bye = victim.expect(GOODBYE);
    assert_eq!(bye.at(2).s(), "com.example.bye");
    assert_eq!(bye.at(1).key("message").s(), "so long");
    // the RESULT and the on_leave, in either order (the victim leaves
    // before its shard answers the gather)
    let two = [admin.recv_msg(), admin.recv_msg()];
    assert!(two.iter().any(|m| m.code() == RESULT), "{two:?}");
    let left = two.iter().find(|m| m.code() == EVENT).expect("on_leave");
    assert_eq!(event_args(left).at(0), &Value::UInt(victim.session));
    // the victim answers GOODBYE: the connection ends
    victim.send_json(r#"[6, {}, "wamp.close.goodbye_and_out"]"#);
    match victim.recv() {
        Incoming::Close(code, _) => assert_eq!(code, 1000),
        other => panic!("expected the close after GOODBYE, got {other:?}"),
    }
    victim.conn.expect_eof();
    // the caller's own session: no_such_session, and it stays
    admin.send_json(&format!(r#"[48, 2, {{}}, "wamp.session.kill", [{}]]"#, admin.session));
    admin.expect_error(CALL, 2, "wamp.error.no_such_session");
    admin.send_json(r#"[48, 3, {}, "wamp.session.kill", [1], {"reason": "not a uri"}]"#);
    admin.expect_error(CALL, 3, "wamp.error.invalid_uri");
    // by authid: the list of sessions; the default reason
    let mut twins: Vec<Client> = (0..2)
        .map(|i| on(&r, i, "admin", r#"{"roles": {"caller": {}}, "authid": "twin"}"#))
        .collect();
    let mut ids: Vec<u64> = twins.iter().map(|c| c.session).collect();
    admin.send_json(r#"[48, 4, {}, "wamp.session.kill_by_authid", ["twin"]]"#);
    let mut res = Value::Null;
    for _ in 0..3 {
        let m = admin.recv_msg();
        if m.code() == RESULT {
            res = m;
        } else {
            assert_eq!(m.code(), EVENT, "{m:?}");
        }
    }
    let mut got: Vec<u64> = match res.at(3).at(0) {
        Value::List(l) => l.iter().map(|v| v.u()).collect(),
        other => panic!("{other:?}"),
    };
    got.sort_unstable();
    ids.sort_unstable();
    assert_eq!(got, ids);
    for t in twins.iter_mut() {
        assert_eq!(t.expect(GOODBYE).at(2).s(), "wamp.close.killed");
    }
    // kill_all: a count, no on_leave (the next on_leave is a later session's)
    let others: Vec<Client> = (0..3).map(|i| on(&r, i, "admin", ROLES)).collect();
    admin.send_json(r#"[48, 5, {}, "wamp.session.kill_all", []]"#);
    let n = admin.expect(RESULT).at(3).at(0).u();
    assert!(n >= 3, "killed {n}");
    let last = on(&r, 1, "admin", ROLES);
    let last_id = last.session;
    last.drop_connection();
    let ev = admin.expect(EVENT);
    assert_eq!(
        event_args(&ev).at(0),
        &Value::UInt(last_id),
        "kill_all announced its sessions: {ev:?}"
    );
    drop(others);
    // kill_by_authrole: a count (the caller is anonymous too, and stays)
    let _some: Vec<Client> = (0..2).map(|i| on(&r, i, "admin", ROLES)).collect();
    admin.send_json(r#"[48, 6, {}, "wamp.session.kill_by_authrole", ["anonymous"]]"#);
    let killed = loop {
        let m = admin.recv_msg();
        if m.code() == RESULT {
            break m.at(3).at(0).u();
        }
        assert_eq!(m.code(), EVENT, "{m:?}");
    };
    assert!(killed >= 2, "killed {killed}");
    admin.send_json(r#"[48, 7, {}, "wamp.session.count", []]"#);
    assert_eq!(admin.expect(RESULT).at(3).at(0).u(), 1, "only the caller is left");
    // the default realm lets nobody kill
    let mut plain = on(&r, 0, "realm1", ROLES);
    plain.send_json(r#"[48, 1, {}, "wamp.session.kill_all", []]"#);
    plain.expect_error(CALL, 1, "wamp.error.not_authorized");
}

#[test]
fn sessions_are_killed_1_shard() {
    sessions_are_killed(1);
}

#[test]
fn sessions_are_killed_2_shards() {
    sessions_are_killed(2);
}

/// Testaments: published when the session goes, `detached` ones first, each
/// scope in the order added, with their options; flushed ones are not;
/// bounded by limits.max_testament_bytes.
fn testaments_are_published_when_a_session_goes(shards: usize) {
    let r = Router::start_with(shards, "", "max_testament_bytes = 300", &[]);
    let mut heir = on(&r, 0, "realm1", ROLES);
    heir.subscribe("com.will", "{}");
    let mut testator = on(&r, 1, "realm1", r#"{"roles": {"caller": {}}, "authid": "testator"}"#);
    let add = |c: &mut Client, req: u64, body: &str| {
        c.send_json(&format!(r#"[48, {req}, {{}}, "wamp.session.add_testament", {body}]"#));
        c.expect(RESULT);
    };
    add(&mut testator, 1, r#"["com.will", ["destroyed 1"], {"k": 1}]"#);
    add(&mut testator, 2, r#"["com.will", ["detached 1"], {}], {"scope": "detached"}"#);
    add(
        &mut testator,
        3,
        r#"["com.will", ["destroyed 2"], {}], {"publish_options": {"disclose_me": true}}"#,
    );
    add(&mut testator, 4, r#"["com.will", ["flushed"], {}], {"scope": "detached"}"#);
    testator.send_json(r#"[48, 5, {}, "wamp.session.add_testament", ["com.will", ["x"], {}], {"scope": "sometimes"}]"#);
    testator.expect_error(CALL, 5, "wamp.error.invalid_argument");
    testator.send_json(r#"[48, 6, {}, "wamp.session.add_testament", ["bad uri", []]]"#);
    testator.expect_error(CALL, 6, "wamp.error.invalid_uri");
    let big = "x".repeat(300);
    testator.send_json(&format!(r#"[48, 7, {{}}, "wamp.session.add_testament", ["com.will", ["{big}"]]]"#));
    testator.expect_error(CALL, 7, "switchyard.error.limit_exceeded");
    // flushing the detached scope drops both detached ones; add one back
    testator.send_json(r#"[48, 8, {}, "wamp.session.flush_testaments", [], {"scope": "detached"}]"#);
    testator.expect(RESULT);
    add(&mut testator, 9, r#"["com.will", ["detached 2"], {}], {"scope": "detached"}"#);
    let id = testator.session;
    testator.drop_connection();
    let want = ["detached 2", "destroyed 1", "destroyed 2"];
    for w in want {
        let ev = heir.expect(EVENT);
        assert_eq!(ev.at(4).at(0).s(), w, "{ev:?}");
        if w == "destroyed 1" {
            assert_eq!(ev.at(5).key("k").u(), 1);
        }
        if w == "destroyed 2" {
            assert_eq!(ev.at(3).key("publisher").u(), id, "the publish options hold: {ev:?}");
        } else {
            assert!(ev.at(3).get("publisher").is_none());
        }
    }
    // nothing more: the next event is a sentinel
    let mut p = on(&r, 1, "realm1", ROLES);
    p.send_json(r#"[16, 1, {"acknowledge": true}, "com.will", ["sentinel"]]"#);
    p.expect(PUBLISHED);
    assert_eq!(heir.expect(EVENT).at(4).at(0).s(), "sentinel");
    assert!(r.metric_sum("testaments_published") >= 3);
}

#[test]
fn testaments_are_published_when_a_session_goes_1_shard() {
    testaments_are_published_when_a_session_goes(1);
}

#[test]
fn testaments_are_published_when_a_session_goes_2_shards() {
    testaments_are_published_when_a_session_goes(2);
}

/// A RESULT's first argument.
fn result(c: &mut Client, call: &str) -> Value {
    let req = c.next_req();
    c.send_json(&format!(r#"[48, {req}, {{}}, {call}]"#));
    let m = c.expect(RESULT);
    assert_eq!(m.at(1).u(), req, "{m:?}");
    match &m {
        Value::List(l) if l.len() > 3 => l[3].at(0).clone(),
        _ => Value::Null,
    }
}

fn ids(v: &Value) -> Vec<u64> {
    match v {
        Value::List(l) => {
            let mut out: Vec<u64> = l.iter().map(|x| x.u()).collect();
            out.sort_unstable();
            out
        }
        other => panic!("not a list: {other:?}"),
    }
}

/// The subscription meta API: events on_create, on_subscribe,
/// on_unsubscribe, on_delete, once each, in order, wherever the sessions
/// are; list, lookup, match, get, list_subscribers, count_subscribers the
/// same from every shard; remove_subscriber (subscription revocation).
fn subscriptions_are_described(shards: usize) {
    let r = Router::start_with(shards, &admin(), "", &[]);
    let mut watchers: Vec<Client> = (0..shards).map(|i| on(&r, i, "admin", ROLES)).collect();
    for w in watchers.iter_mut() {
        for t in ["on_create", "on_subscribe", "on_unsubscribe", "on_delete"] {
            w.subscribe(&format!("wamp.subscription.{t}"), "{}");
        }
    }
    let details = r#"{"roles": {"subscriber": {"features": {"subscription_revocation": true}}}}"#;
    let mut a = on(&r, 0, "admin", details);
    let mut b = on(&r, 1, "admin", details);
    let sub = a.subscribe("com.topic", "{}");
    assert_eq!(b.subscribe("com.topic", "{}"), sub);
    let pattern = b.subscribe("com.", r#"{"match": "prefix"}"#);
    // every watcher, wherever it is, sees the same sequence
    for w in watchers.iter_mut() {
        let mut seen = Vec::new();
        for _ in 0..5 {
            let ev = w.expect(EVENT);
            seen.push(ev.at(4).clone());
        }
        let created = &seen[0];
        assert_eq!(created.at(0).u(), a.session);
        assert_eq!(created.at(1).key("id").u(), sub);
        assert_eq!(created.at(1).key("uri").s(), "com.topic");
        assert_eq!(created.at(1).key("match").s(), "exact");
        assert!(created.at(1).key("created").s().ends_with('Z'), "{created:?}");
        assert_eq!(
            seen[1],
            Value::List(vec![Value::UInt(a.session), Value::UInt(sub)]),
            "on_subscribe a"
        );
        assert_eq!(
            seen[2],
            Value::List(vec![Value::UInt(b.session), Value::UInt(sub)]),
            "on_subscribe b, no second on_create"
        );
        assert_eq!(seen[3].at(1).key("id").u(), pattern, "on_create of the pattern");
        assert_eq!(seen[4], Value::List(vec![Value::UInt(b.session), Value::UInt(pattern)]));
        assert!(seen[3].at(1).key("created").s().contains('T'));
    }
    // the same answers from every shard
    for w in watchers.iter_mut() {
        let list = result(w, r#""wamp.subscription.list", []"#);
        assert!(ids(list.key("exact")).contains(&sub), "{list:?}");
        assert!(ids(list.key("prefix")).contains(&pattern), "{list:?}");
        assert_eq!(result(w, r#""wamp.subscription.lookup", ["com.topic"]"#), Value::UInt(sub));
        assert_eq!(
            result(w, r#""wamp.subscription.lookup", ["com.", {"match": "prefix"}]"#),
            Value::UInt(pattern)
        );
        assert_eq!(result(w, r#""wamp.subscription.lookup", ["com.none"]"#), Value::Null);
        let mut both = vec![sub, pattern];
        both.sort_unstable();
        assert_eq!(ids(&result(w, r#""wamp.subscription.match", ["com.topic"]"#)), both);
        assert_eq!(result(w, r#""wamp.subscription.match", ["org.none"]"#), Value::Null);
        let got = result(w, &format!(r#""wamp.subscription.get", [{sub}]"#));
        assert_eq!(got.key("uri").s(), "com.topic");
        let mut subscribers = vec![a.session, b.session];
        subscribers.sort_unstable();
        assert_eq!(
            ids(&result(w, &format!(r#""wamp.subscription.list_subscribers", [{sub}]"#))),
            subscribers
        );
        assert_eq!(
            result(w, &format!(r#""wamp.subscription.count_subscribers", [{sub}]"#)),
            Value::UInt(2)
        );
        w.send_json(r#"[48, 900, {}, "wamp.subscription.get", [12345]]"#);
        w.expect_error(CALL, 900, "wamp.error.no_such_subscription");
    }
    // remove_subscriber: b is told (it announced the feature) and gets no more events
    let w = &mut watchers[0];
    w.send_json(&format!(
        r#"[48, 902, {{}}, "wamp.subscription.remove_subscriber", [{sub}, {}], {{"reason": "com.example.out"}}]"#,
        b.session
    ));
    let revoked = b.expect(UNSUBSCRIBED);
    assert_eq!(revoked.at(1).u(), 0);
    assert_eq!(revoked.at(2).key("subscription").u(), sub);
    assert_eq!(revoked.at(2).key("reason").s(), "com.example.out");
    // on_unsubscribe of b at every watcher (the caller's RESULT and its event
    // in either order)
    for (i, w) in watchers.iter_mut().enumerate() {
        let mut ev = w.recv_msg();
        if i == 0 {
            let other = w.recv_msg();
            let (res, e) = if ev.code() == RESULT { (ev, other) } else { (other, ev) };
            assert_eq!(res.code(), RESULT, "{res:?}");
            ev = e;
        }
        assert_eq!(ev.code(), EVENT, "{ev:?}");
        assert_eq!(
            ev.at(4),
            &Value::List(vec![Value::UInt(b.session), Value::UInt(sub)]),
            "on_unsubscribe of b: {ev:?}"
        );
    }
    a.send_json(&format!(r#"[34, 77, {sub}]"#));
    a.expect(UNSUBSCRIBED);
    for w in watchers.iter_mut() {
        let un = w.expect(EVENT);
        assert_eq!(un.at(4), &Value::List(vec![Value::UInt(a.session), Value::UInt(sub)]));
        let del = w.expect(EVENT);
        assert_eq!(
            del.at(4),
            &Value::List(vec![Value::UInt(a.session), Value::UInt(sub)]),
            "on_delete: {del:?}"
        );
        w.send_json(&format!(r#"[48, 901, {{}}, "wamp.subscription.count_subscribers", [{sub}]]"#));
        w.expect_error(CALL, 901, "wamp.error.no_such_subscription");
    }
    // b still gets events of its pattern, not of the removed subscription
    let mut p = on(&r, 0, "admin", ROLES);
    p.send_json(r#"[16, 1, {"acknowledge": true}, "com.topic", ["x"]]"#);
    p.expect(PUBLISHED);
    let ev = b.expect(EVENT);
    assert_eq!(ev.at(1).u(), pattern, "only the pattern subscription delivers: {ev:?}");
    // another realm's subscriptions and registrations are not listed
    let reg = a.register("com.isolated");
    let mut other = on(&r, 1, "realm1", ROLES);
    let list = result(&mut other, r#""wamp.subscription.list", []"#);
    assert!(!ids(list.key("prefix")).contains(&pattern), "{list:?}");
    let regs = result(&mut other, r#""wamp.registration.list", []"#);
    assert!(!ids(regs.key("exact")).contains(&reg), "{regs:?}");
    assert_eq!(result(&mut other, r#""wamp.registration.lookup", ["com.isolated"]"#), Value::Null);
    other.send_json(&format!(r#"[48, 903, {{}}, "wamp.registration.get", [{reg}]]"#));
    other.expect_error(CALL, 903, "wamp.error.no_such_registration");
}

#[test]
fn subscriptions_are_described_1_shard() {
    subscriptions_are_described(1);
}

#[test]
fn subscriptions_are_described_2_shards() {
    subscriptions_are_described(2);
}

/// The registration meta API: events on_create, on_register, on_unregister,
/// on_delete, in order (none for a REGISTER that was refused); list, lookup,
/// match, get, list_callees, count_callees.
fn registrations_are_described(shards: usize) {
    let r = Router::start(shards);
    let mut watcher = on(&r, 0, "realm1", ROLES);
    for t in ["on_create", "on_register", "on_unregister", "on_delete"] {
        watcher.subscribe(&format!("wamp.registration.{t}"), "{}");
    }
    let mut a = on(&r, 1, "realm1", ROLES);
    let mut b = on(&r, 0, "realm1", ROLES);
    a.send_json(r#"[64, 1, {"invoke": "roundrobin"}, "com.proc"]"#);
    let reg = a.expect(REGISTERED).at(2).u();
    b.send_json(r#"[64, 1, {"invoke": "roundrobin"}, "com.proc"]"#);
    b.expect(REGISTERED);
    // refused: no event
    let mut c = on(&r, 1, "realm1", ROLES);
    c.send_json(r#"[64, 1, {"invoke": "first"}, "com.proc"]"#);
    c.expect_error(REGISTER, 1, "wamp.error.procedure_already_exists");
    let created = watcher.expect(EVENT);
    assert_eq!(created.at(4).at(0).u(), a.session);
    assert_eq!(created.at(4).at(1).key("id").u(), reg);
    assert_eq!(created.at(4).at(1).key("invoke").s(), "roundrobin");
    for who in [a.session, b.session] {
        let ev = watcher.expect(EVENT);
        assert_eq!(
            ev.at(4),
            &Value::List(vec![Value::UInt(who), Value::UInt(reg)]),
            "on_register: {ev:?}"
        );
    }
    let list = result(&mut watcher, r#""wamp.registration.list", []"#);
    assert_eq!(ids(list.key("exact")), vec![reg]);
    assert_eq!(
        result(&mut watcher, r#""wamp.registration.lookup", ["com.proc"]"#),
        Value::UInt(reg)
    );
    assert_eq!(result(&mut watcher, r#""wamp.registration.match", ["com.proc"]"#), Value::UInt(reg));
    assert_eq!(result(&mut watcher, r#""wamp.registration.match", ["com.other"]"#), Value::Null);
    assert_eq!(
        result(&mut watcher, &format!(r#""wamp.registration.get", [{reg}]"#)).key("uri").s(),
        "com.proc"
    );
    let mut both = vec![a.session, b.session];
    both.sort_unstable();
    assert_eq!(
        ids(&result(&mut watcher, &format!(r#""wamp.registration.list_callees", [{reg}]"#))),
        both
    );
    assert_eq!(
        result(&mut watcher, &format!(r#""wamp.registration.count_callees", [{reg}]"#)),
        Value::UInt(2)
    );
    // a leaves, b unregisters: on_unregister twice, then on_delete
    let gone = a.session;
    a.drop_connection();
    let ev = watcher.expect(EVENT);
    assert_eq!(ev.at(4), &Value::List(vec![Value::UInt(gone), Value::UInt(reg)]));
    b.send_json(&format!(r#"[66, 9, {reg}]"#));
    b.expect(67);
    let ev = watcher.expect(EVENT);
    assert_eq!(ev.at(4), &Value::List(vec![Value::UInt(b.session), Value::UInt(reg)]));
    let ev = watcher.expect(EVENT);
    assert_eq!(ev.at(4), &Value::List(vec![Value::UInt(b.session), Value::UInt(reg)]), "on_delete");
    // the refused session leaving sends nothing either: the next event is a new registration's
    let refused = c.session;
    c.drop_connection();
    let mut d = on(&r, 1, "realm1", ROLES);
    let next = d.register("com.next");
    let ev = watcher.expect(EVENT);
    assert_eq!(ev.at(4).at(1).key("id").u(), next, "no event for the refused {refused}: {ev:?}");
}

#[test]
fn registrations_are_described_1_shard() {
    registrations_are_described(1);
}

#[test]
fn registrations_are_described_2_shards() {
    registrations_are_described(2);
}

/// A killed client that does not answer GOODBYE is disconnected after
/// `limits.handshake_timeout_ms`.
#[test]
fn a_killed_session_that_does_not_answer_is_disconnected() {
    let r = Router::start_with(1, &admin(), "handshake_timeout_ms = 300", &[]);
    let mut admin = on(&r, 0, "admin", ROLES);
    let mut victim = on(&r, 0, "admin", ROLES);
    admin.send_json(&format!(r#"[48, 1, {{}}, "wamp.session.kill", [{}]]"#, victim.session));
    admin.expect(RESULT);
    assert_eq!(victim.expect(GOODBYE).at(2).s(), "wamp.close.killed");
    // messages meanwhile are ignored; then the router closes
    victim.send_json(r#"[48, 1, {}, "wamp.session.count", []]"#);
    match victim.recv() {
        Incoming::Close(code, _) => assert_eq!(code, 1000),
        other => panic!("expected the close, got {other:?}"),
    }
    victim.conn.expect_eof();
}
