//! The session meta API and testaments over real sockets, on 1 shard and
//! with the sessions spread over 2 shards: `wamp.session.on_join` /
//! `on_leave`, the kill procedures, `wamp.session.add_testament` /
//! `flush_testaments`. What must *not* arrive is shown by a later event on
//! the same path.

use switchyard::wamp::Value;

use crate::common::*;

/// A session of `realm` on shard `i % shards` (any shard with 1).
fn on(r: &Router, i: usize, realm: &str, details: &str) -> Client {
    let mut c = if r.shards == 2 {
        r.join_on(i % 2)
    } else {
        Client::join_ws(r.ws, Ser::Json)
    };
    c.send_json(r#"[6, {}, "wamp.close.close_realm"]"#);
    c.expect(GOODBYE);
    c.send_json(&format!(r#"[1, "{realm}", {details}]"#));
    c.session = c.expect(WELCOME).at(1).u();
    c
}

const ADMIN: &str = "\n[[realm]]\nname = \"admin\"\nmeta_admin_roles = [\"anonymous\"]";

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
        assert_eq!(joined.key("authmethod").s(), "anonymous");
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
    let r = Router::start_with(shards, ADMIN, "", &[]);
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
