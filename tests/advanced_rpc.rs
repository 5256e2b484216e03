//! Advanced RPC over real sockets: call timeouts and call canceling (skip,
//! kill, killnowait), with callees that announce call canceling and callees
//! that do not, on 1 shard and with caller and callee on different shards.
//! Whatever must *not* arrive is shown by a later message on the same path:
//! a sentinel call from the same caller to the same callee.

use std::thread;
use std::time::{Duration, Instant};

use switchyard::wamp::Value;

use crate::common::*;

const CANCELING_CALLEE: &str = r#"{"roles": {"caller": {}, "callee": {"features": {"call_canceling": true}}}}"#;
const PLAIN_CALLEE: &str = r#"{"roles": {"caller": {}, "callee": {}}}"#;

/// A callee (with `roles`) and a caller, on shards 1 and 0 when there are
/// two; the callee registers `procedure`.
pub(crate) fn pair(r: &Router, roles: &str, procedure: &str) -> (Client, Client) {
    let (mut callee, caller) = if r.shards == 2 {
        (r.join_on(1), r.join_on(0))
    } else {
        (Client::join_ws(r.ws, Ser::Json), Client::join_ws(r.ws, Ser::Json))
    };
    rejoin(&mut callee, roles);
    callee.register(procedure);
    (callee, caller)
}

/// The same connection (so the same shard) leaves and joins again, with the
/// HELLO details `roles`.
pub(crate) fn rejoin(c: &mut Client, roles: &str) {
    c.send_json(r#"[6, {}, "wamp.close.close_realm"]"#);
    c.expect(GOODBYE);
    c.login("realm1", roles);
}

/// A call the callee answers at once: everything the router owed either
/// side about earlier calls on this path has arrived before its RESULT
/// (caller) and its INVOCATION (callee).
pub(crate) fn sentinel(callee: &mut Client, caller: &mut Client, procedure: &str, request: u64) {
    caller.send_json(&format!(r#"[48, {request}, {{}}, "{procedure}", ["sentinel"]]"#));
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(4).at(0).s(), "sentinel", "the callee got {inv:?} before the sentinel");
    callee.send_json(&format!(r#"[70, {}, {{}}, ["sentinel"]]"#, inv.at(1).u()));
    let m = caller.expect(RESULT);
    assert_eq!(m.at(1).u(), request, "the caller got {m:?} before the sentinel's RESULT");
}

pub(crate) fn gauges_back_to_zero(r: &Router) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while (r.metric_sum("pending_calls") != 0 || r.metric_sum("pending_invocations") != 0) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(r.metric("pending_calls"), vec![0; r.shards]);
    assert_eq!(r.metric("pending_invocations"), vec![0; r.shards]);
}

pub(crate) fn interrupt_mode(m: &Value) -> String {
    m.at(2).key("mode").s().to_owned()
}

fn a_call_times_out(shards: usize) {
    let r = Router::start(shards);
    for (roles, interrupted) in [(CANCELING_CALLEE, true), (PLAIN_CALLEE, false)] {
        let (mut callee, mut caller) = pair(&r, roles, "com.slow");
        caller.send_json(r#"[48, 1, {"timeout": 150}, "com.slow", ["wait"]]"#);
        let inv = callee.expect(INVOCATION);
        let e = caller.expect_error(CALL, 1, "wamp.error.timeout");
        assert!(e.at(5).at(0).s().contains("timed out"), "{e:?}");
        if interrupted {
            let i = callee.expect(INTERRUPT);
            assert_eq!(i.at(1).u(), inv.at(1).u());
            assert_eq!(interrupt_mode(&i), "killnowait");
        }
        // the late answer is discarded: the caller's next message is the
        // sentinel's RESULT, the callee's next the sentinel's INVOCATION
        callee.send_json(&format!(r#"[70, {}, {{}}, ["too late"]]"#, inv.at(1).u()));
        sentinel(&mut callee, &mut caller, "com.slow", 2);
        // a call answered in time is not timed out
        caller.send_json(r#"[48, 3, {"timeout": 60000}, "com.slow", ["quick"]]"#);
        let inv = callee.expect(INVOCATION);
        callee.send_json(&format!(r#"[70, {}, {{}}, ["done"]]"#, inv.at(1).u()));
        assert_eq!(caller.expect(RESULT).at(3).at(0).s(), "done");
        callee.drop_connection();
        caller.drop_connection();
    }
    assert_eq!(r.metric_sum("calls_timed_out"), 2);
    gauges_back_to_zero(&r);
}

#[test]
fn a_call_times_out_1_shard() {
    a_call_times_out(1);
}

#[test]
fn a_call_times_out_2_shards() {
    a_call_times_out(2);
}

fn a_call_is_canceled(shards: usize) {
    let r = Router::start(shards);
    // (mode, callee roles, caller answered at once, INTERRUPT mode)
    let cases = [
        ("skip", CANCELING_CALLEE, true, None),
        ("killnowait", CANCELING_CALLEE, true, Some("killnowait")),
        ("killnowait", PLAIN_CALLEE, true, None),
        ("kill", CANCELING_CALLEE, false, Some("kill")),
        ("kill", PLAIN_CALLEE, true, None),
    ];
    for (mode, roles, at_once, interrupt) in cases {
        let (mut callee, mut caller) = pair(&r, roles, "com.long");
        caller.send_json(r#"[48, 1, {}, "com.long", ["work"]]"#);
        let inv = callee.expect(INVOCATION);
        caller.send_json(&format!(r#"[49, 1, {{"mode": "{mode}"}}]"#));
        if at_once {
            caller.expect_error(CALL, 1, "wamp.error.canceled");
        }
        if let Some(want) = interrupt {
            let i = callee.expect(INTERRUPT);
            assert_eq!(i.at(1).u(), inv.at(1).u(), "{mode}");
            assert_eq!(interrupt_mode(&i), want);
        }
        if !at_once {
            // kill: the caller gets the callee's answer to the INTERRUPT
            callee.send_json(&format!(r#"[8, 68, {}, {{}}, "wamp.error.canceled", ["stopped"]]"#, inv.at(1).u()));
            let e = caller.expect_error(CALL, 1, "wamp.error.canceled");
            assert_eq!(e.at(5).at(0).s(), "stopped");
        } else {
            // anything the callee still sends for it is discarded
            callee.send_json(&format!(r#"[70, {}, {{}}, ["too late"]]"#, inv.at(1).u()));
        }
        sentinel(&mut callee, &mut caller, "com.long", 2);
        // a CANCEL for a call that is no longer pending is ignored
        caller.send_json(&format!(r#"[49, 1, {{"mode": "{mode}"}}]"#));
        sentinel(&mut callee, &mut caller, "com.long", 3);
        callee.drop_connection();
        caller.drop_connection();
    }
    assert_eq!(r.metric_sum("calls_canceled"), 5);
    gauges_back_to_zero(&r);
}

#[test]
fn a_call_is_canceled_1_shard() {
    a_call_is_canceled(1);
}

#[test]
fn a_call_is_canceled_2_shards() {
    a_call_is_canceled(2);
}

/// A caller that leaves mid-call: its callee, if it can be interrupted, gets
/// INTERRUPT `killnowait`, and nothing stays pending anywhere.
fn a_caller_that_leaves_interrupts_its_calls(shards: usize) {
    let r = Router::start(shards);
    let (mut callee, mut caller) = pair(&r, CANCELING_CALLEE, "com.orphan");
    caller.send_json(r#"[48, 1, {"timeout": 60000}, "com.orphan", []]"#);
    let inv = callee.expect(INVOCATION);
    caller.drop_connection();
    let i = callee.expect(INTERRUPT);
    assert_eq!(i.at(1).u(), inv.at(1).u());
    assert_eq!(interrupt_mode(&i), "killnowait");
    gauges_back_to_zero(&r);
}

#[test]
fn a_caller_that_leaves_interrupts_its_calls_1_shard() {
    a_caller_that_leaves_interrupts_its_calls(1);
}

#[test]
fn a_caller_that_leaves_interrupts_its_calls_2_shards() {
    a_caller_that_leaves_interrupts_its_calls(2);
}

#[test]
fn a_cancel_mode_that_does_not_exist_is_a_protocol_violation() {
    let r = Router::start(1);
    let (mut callee, mut caller) = pair(&r, CANCELING_CALLEE, "com.x");
    caller.send_json(r#"[48, 1, {}, "com.x", []]"#);
    callee.expect(INVOCATION);
    caller.send_json(r#"[49, 1, {"mode": "abort"}]"#);
    caller.expect_abort("wamp.error.protocol_violation");
}

const PROGRESSIVE_CALLEE: &str =
    r#"{"roles": {"caller": {}, "callee": {"features": {"call_canceling": true, "progressive_call_results": true}}}}"#;

/// Progressive call results: every progressive YIELD becomes a progressive
/// RESULT, in order, then the final one; a callee that cannot take them (or
/// a caller that did not ask) gets no `receive_progress`, and progressive
/// YIELDs for such a call are dropped.
fn progressive_results_arrive_in_order(shards: usize) {
    let r = Router::start(shards);
    let (mut callee, mut caller) = pair(&r, PROGRESSIVE_CALLEE, "com.chunks");
    caller.send_json(r#"[48, 1, {"receive_progress": true}, "com.chunks", [3]]"#);
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(3).key("receive_progress"), &Value::Bool(true), "{inv:?}");
    let id = inv.at(1).u();
    for i in 0..50 {
        callee.send_json(&format!(r#"[70, {id}, {{"progress": true}}, [{i}]]"#));
    }
    callee.send_json(&format!(r#"[70, {id}, {{}}, ["final"]]"#));
    for i in 0..50 {
        let m = caller.expect(RESULT);
        assert_eq!(m.at(1).u(), 1);
        assert_eq!(m.at(2).key("progress"), &Value::Bool(true), "{m:?}");
        assert_eq!(m.at(3).at(0).u(), i);
    }
    let last = caller.expect(RESULT);
    assert_eq!(last.at(3).at(0).s(), "final");
    assert!(last.at(2).get("progress").is_none(), "{last:?}");
    // a call that did not ask: no receive_progress, progress dropped
    caller.send_json(r#"[48, 2, {}, "com.chunks", []]"#);
    let inv = callee.expect(INVOCATION);
    assert!(inv.at(3).get("receive_progress").is_none(), "{inv:?}");
    callee.send_json(&format!(r#"[70, {}, {{"progress": true}}, ["dropped"]]"#, inv.at(1).u()));
    callee.send_json(&format!(r#"[70, {}, {{}}, ["only"]]"#, inv.at(1).u()));
    assert_eq!(caller.expect(RESULT).at(3).at(0).s(), "only");
    // a callee without the feature is not asked for progress
    let (mut plain, mut caller2) = pair(&r, CANCELING_CALLEE, "com.plain");
    caller2.send_json(r#"[48, 1, {"receive_progress": true}, "com.plain", []]"#);
    let inv = plain.expect(INVOCATION);
    assert!(inv.at(3).get("receive_progress").is_none(), "{inv:?}");
    plain.send_json(&format!(r#"[70, {}, {{}}, ["whole"]]"#, inv.at(1).u()));
    assert_eq!(caller2.expect(RESULT).at(3).at(0).s(), "whole");
    // progressive results end with the call's timeout too
    caller.send_json(r#"[48, 3, {"receive_progress": true, "timeout": 150}, "com.chunks", []]"#);
    let inv = callee.expect(INVOCATION);
    callee.send_json(&format!(r#"[70, {}, {{"progress": true}}, ["one"]]"#, inv.at(1).u()));
    let m = caller.expect(RESULT);
    assert_eq!(m.at(3).at(0).s(), "one");
    caller.expect_error(CALL, 3, "wamp.error.timeout");
    assert_eq!(interrupt_mode(&callee.expect(INTERRUPT)), "killnowait");
    callee.send_json(&format!(r#"[70, {}, {{"progress": true}}, ["after"]]"#, inv.at(1).u()));
    sentinel(&mut callee, &mut caller, "com.chunks", 4);
    for c in [callee, caller, plain, caller2] {
        c.drop_connection();
    }
    gauges_back_to_zero(&r);
}

#[test]
fn progressive_results_arrive_in_order_1_shard() {
    progressive_results_arrive_in_order(1);
}

#[test]
fn progressive_results_arrive_in_order_2_shards() {
    progressive_results_arrive_in_order(2);
}

/// Caller identification: `disclose_me` names the caller (session, authid,
/// authrole) in INVOCATION.Details; a registration with `disclose_caller`
/// gets the caller's session for every call; a realm with
/// `caller_disclosure = "never"` refuses `disclose_me` and discloses nothing.
fn callers_are_disclosed_when_asked_and_allowed(shards: usize) {
    let r = Router::start_with(shards, "\n[[realm]]\nname = \"closed\"\ncaller_disclosure = \"never\"", "", &[]);
    let (mut callee, mut caller) = pair(&r, PLAIN_CALLEE, "com.who");
    caller.send_json(r#"[48, 1, {"disclose_me": true}, "com.who", []]"#);
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(3).key("caller").u(), caller.session, "{inv:?}");
    assert!(inv.at(3).key("caller_authid").s().starts_with("anonymous-"), "{inv:?}");
    assert_eq!(inv.at(3).key("caller_authrole").s(), "anonymous");
    callee.send_json(&format!(r#"[70, {}, {{}}, []]"#, inv.at(1).u()));
    caller.expect(RESULT);
    caller.send_json(r#"[48, 2, {}, "com.who", []]"#);
    let inv = callee.expect(INVOCATION);
    assert!(inv.at(3).get("caller").is_none(), "not asked: {inv:?}");
    callee.send_json(&format!(r#"[70, {}, {{}}, []]"#, inv.at(1).u()));
    caller.expect(RESULT);
    // the callee asks for every caller
    callee.send_json(r#"[64, 90, {"disclose_caller": true}, "com.who.always"]"#);
    callee.expect(REGISTERED);
    caller.send_json(r#"[48, 3, {}, "com.who.always", []]"#);
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(3).key("caller").u(), caller.session, "{inv:?}");
    assert!(inv.at(3).get("caller_authid").is_none(), "only the session is owed: {inv:?}");
    callee.send_json(&format!(r#"[70, {}, {{}}, []]"#, inv.at(1).u()));
    caller.expect(RESULT);
    // a realm that forbids it
    let join = |c: &mut Client, roles: &str| {
        c.send_json(&format!(r#"[1, "closed", {roles}]"#));
        c.session = c.expect(WELCOME).at(1).u();
    };
    let mut closed_callee = Client::ws(r.ws, Ser::Json);
    join(&mut closed_callee, PLAIN_CALLEE);
    closed_callee.send_json(r#"[64, 1, {"disclose_caller": true}, "com.who"]"#);
    closed_callee.expect(REGISTERED);
    let mut closed_caller = Client::ws(r.ws, Ser::Json);
    join(&mut closed_caller, PLAIN_CALLEE);
    closed_caller.send_json(r#"[48, 1, {"disclose_me": true}, "com.who", []]"#);
    closed_caller.expect_error(CALL, 1, "wamp.error.disclose_me.not_allowed");
    closed_caller.send_json(r#"[48, 2, {}, "com.who", []]"#);
    let inv = closed_callee.expect(INVOCATION);
    assert!(inv.at(3).get("caller").is_none(), "the realm discloses nobody: {inv:?}");
}

#[test]
fn callers_are_disclosed_when_asked_and_allowed_1_shard() {
    callers_are_disclosed_when_asked_and_allowed(1);
}

#[test]
fn callers_are_disclosed_when_asked_and_allowed_2_shards() {
    callers_are_disclosed_when_asked_and_allowed(2);
}

/// Finds the callee an INVOCATION went to, answers it with the callee's
/// index, and returns the index.
pub(crate) fn answer_where_it_went(callees: &mut [Client]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (i, c) in callees.iter_mut().enumerate() {
            if c.readable_within(Duration::from_millis(5)) {
                let inv = c.expect(INVOCATION);
                c.send_json(&format!(r#"[70, {}, {{}}, [{i}]]"#, inv.at(1).u()));
                return i;
            }
        }
        assert!(Instant::now() < deadline, "the call reached no callee");
    }
}

/// Shared registration: callees of one procedure under one invocation
/// policy, spread over the shards; a REGISTER with another policy (or any
/// second REGISTER of a single one) is refused.
fn shared_registrations_pick_callees_by_policy(shards: usize) {
    let r = Router::start(shards);
    let on = |i: usize| r.join_spread(i);
    let mut caller = on(0);
    for policy in ["roundrobin", "first", "last", "random"] {
        let proc = format!("com.shared.{policy}");
        let mut callees: Vec<Client> = (0..3).map(|i| on(i + 1)).collect();
        for c in callees.iter_mut() {
            let req = c.next_req();
            c.send_json(&format!(r#"[64, {req}, {{"invoke": "{policy}"}}, "{proc}"]"#));
            c.expect(REGISTERED);
        }
        // another policy, or none (single), is refused
        let mut other = on(1);
        other.send_json(&format!(r#"[64, 1, {{"invoke": "single"}}, "{proc}"]"#));
        other.expect_error(REGISTER, 1, "wamp.error.procedure_already_exists");
        let mismatch = if policy == "first" { "last" } else { "first" };
        other.send_json(&format!(r#"[64, 2, {{"invoke": "{mismatch}"}}, "{proc}"]"#));
        other.expect_error(REGISTER, 2, "wamp.error.procedure_already_exists");
        other.send_json(&format!(r#"[64, 3, {{"invoke": "fastest"}}, "{proc}.x"]"#));
        other.expect_error(REGISTER, 3, "wamp.error.invalid_argument");
        // who gets each of 30 calls (each callee answers with its index)
        let mut got = Vec::new();
        for n in 1..=30u64 {
            caller.send_json(&format!(r#"[48, {n}, {{}}, "{proc}", [{n}]]"#));
            let i = answer_where_it_went(&mut callees);
            assert_eq!(caller.expect(RESULT).at(3).at(0).u(), i as u64);
            got.push(i);
        }
        match policy {
            "roundrobin" => assert_eq!(got, (0..30).map(|n| n % 3).collect::<Vec<_>>(), "in registration order"),
            "first" => assert!(got.iter().all(|&i| i == 0), "{got:?}"),
            "last" => assert!(got.iter().all(|&i| i == 2), "{got:?}"),
            _ => assert!((0..3).all(|i| got.contains(&i)), "random reached every callee: {got:?}"),
        }
        if policy == "first" {
            // the first leaves: the next in registration order takes over
            // (a call may still meet the one leaving and be canceled)
            callees.remove(0).drop_connection();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                assert!(Instant::now() < deadline, "the first callee never left");
                caller.send_json(&format!(r#"[48, 100, {{}}, "{proc}", []]"#));
                if callees[0].readable_within(Duration::from_millis(500)) {
                    let inv = callees[0].expect(INVOCATION);
                    callees[0].send_json(&format!(r#"[70, {}, {{}}, ["second"]]"#, inv.at(1).u()));
                    assert_eq!(caller.expect(RESULT).at(3).at(0).s(), "second");
                    break;
                }
                caller.expect_error(CALL, 100, "wamp.error.canceled");
            }
        }
        for c in callees {
            c.drop_connection();
        }
        other.drop_connection();
    }
}

#[test]
fn shared_registrations_pick_callees_by_policy_1_shard() {
    shared_registrations_pick_callees_by_policy(1);
}

#[test]
fn shared_registrations_pick_callees_by_policy_2_shards() {
    shared_registrations_pick_callees_by_policy(2);
}
