//! Advanced RPC over real sockets, part two: progressive call invocations,
//! call rerouting, payload passthru mode and registration revocation, on 1
//! shard and with caller and callee(s) on different shards. Whatever must
//! *not* arrive is shown by a later message on the same path (a sentinel
//! call from the same caller to the same callee).

use switchyard::wamp::Value;

use crate::advanced_rpc::{answer_where_it_went, gauges_back_to_zero, interrupt_mode, pair, rejoin, sentinel};
use crate::common::*;

const STREAMING_CALLEE: &str = r#"{"roles": {"caller": {}, "callee": {"features": {"call_canceling": true, "progressive_call_invocations": true, "progressive_call_results": true}}}}"#;
const STREAMING_CALLER: &str = r#"{"roles": {"caller": {"features": {"progressive_call_invocations": true}}, "callee": {}}}"#;

/// Progressive call invocations: CALL chunks with one request ID reach the
/// callee as INVOCATIONs with one request ID, in order, `progress` on all
/// but the last; they mix with progressive results; chunks sent after the
/// call completed are discarded; a callee without the feature makes the
/// call fail with `wamp.error.feature_not_supported`; a caller that did not
/// announce it is aborted.
fn progressive_invocations_reach_one_callee_in_order(shards: usize) {
    let r = Router::start(shards);
    let (mut callee, mut caller) = pair(&r, STREAMING_CALLEE, "com.upload");
    rejoin(&mut caller, STREAMING_CALLER);
    caller.send_json(r#"[48, 1, {"progress": true, "receive_progress": true}, "com.upload", [0]]"#);
    let first = callee.expect(INVOCATION);
    assert_eq!(first.at(3).key("progress"), &Value::Bool(true), "{first:?}");
    assert_eq!(first.at(4).at(0).u(), 0);
    let id = first.at(1).u();
    for i in 1..=40u64 {
        // later chunks' options other than progress are ignored
        caller.send_json(&format!(r#"[48, 1, {{"progress": true, "timeout": 1}}, "com.upload", [{i}]]"#));
    }
    for i in 1..=40u64 {
        let inv = callee.expect(INVOCATION);
        assert_eq!(inv.at(1).u(), id, "every chunk has the first INVOCATION's request ID");
        assert_eq!(inv.at(2).u(), first.at(2).u(), "and its registration");
        assert_eq!(inv.at(3).key("progress"), &Value::Bool(true));
        assert_eq!(inv.at(4).at(0).u(), i, "in order");
    }
    // a progressive result in the middle of the upload
    callee.send_json(&format!(r#"[70, {id}, {{"progress": true}}, ["halfway"]]"#));
    let m = caller.expect(RESULT);
    assert_eq!((m.at(1).u(), m.at(3).at(0).s()), (1, "halfway"));
    assert_eq!(m.at(2).key("progress"), &Value::Bool(true));
    caller.send_json(r#"[48, 1, {}, "com.upload", ["last"]]"#);
    let last = callee.expect(INVOCATION);
    assert_eq!(last.at(1).u(), id);
    assert!(last.at(3).get("progress").is_none(), "the final chunk: {last:?}");
    assert_eq!(last.at(4).at(0).s(), "last");
    callee.send_json(&format!(r#"[70, {id}, {{}}, [41]]"#));
    let done = caller.expect(RESULT);
    assert_eq!((done.at(1).u(), done.at(3).at(0).u()), (1, 41));
    assert!(done.at(2).get("progress").is_none());

    // the callee ends the call before the upload ends: later chunks are
    // discarded, neither new calls nor errors
    caller.send_json(r#"[48, 2, {"progress": true}, "com.upload", ["a"]]"#);
    let inv = callee.expect(INVOCATION);
    callee.send_json(&format!(r#"[8, 68, {}, {{}}, "com.error.enough"]"#, inv.at(1).u()));
    caller.expect_error(CALL, 2, "com.error.enough");
    caller.send_json(r#"[48, 2, {"progress": true}, "com.upload", ["late"]]"#);
    caller.send_json(r#"[48, 2, {}, "com.upload", ["late final"]]"#);
    sentinel(&mut callee, &mut caller, "com.upload", 3);

    // cancel mid-upload (kill): INTERRUPT, and the callee's answer ends it
    caller.send_json(r#"[48, 4, {"progress": true}, "com.upload", ["x"]]"#);
    let inv = callee.expect(INVOCATION);
    caller.send_json(r#"[49, 4, {"mode": "kill"}]"#);
    assert_eq!(interrupt_mode(&callee.expect(INTERRUPT)), "kill");
    callee.send_json(&format!(r#"[8, 68, {}, {{}}, "wamp.error.canceled"]"#, inv.at(1).u()));
    caller.expect_error(CALL, 4, "wamp.error.canceled");
    caller.send_json(r#"[48, 4, {"progress": true}, "com.upload", ["after cancel"]]"#);
    sentinel(&mut callee, &mut caller, "com.upload", 5);

    // a callee that cannot take chunks: feature_not_supported, nothing sent
    let (mut plain, mut caller2) = pair(&r, r#"{"roles": {"callee": {"features": {"call_canceling": true}}}}"#, "com.plain");
    rejoin(&mut caller2, STREAMING_CALLER);
    caller2.send_json(r#"[48, 1, {"progress": true}, "com.plain", ["chunk"]]"#);
    caller2.expect_error(CALL, 1, "wamp.error.feature_not_supported");
    caller2.send_json(r#"[48, 1, {}, "com.plain", ["final chunk"]]"#);
    sentinel(&mut plain, &mut caller2, "com.plain", 2);

    // a caller leaving mid-upload: INTERRUPT killnowait
    caller2.send_json(r#"[48, 3, {"progress": true}, "com.upload", ["y"]]"#);
    callee.expect(INVOCATION);
    caller2.drop_connection();
    assert_eq!(interrupt_mode(&callee.expect(INTERRUPT)), "killnowait");

    // the router's own procedures take no chunks
    let mut streamer = Client::join_ws(r.ws, Ser::Json);
    rejoin(&mut streamer, STREAMING_CALLER);
    streamer.send_json(r#"[48, 1, {"progress": true}, "wamp.session.count", []]"#);
    streamer.expect_error(CALL, 1, "wamp.error.feature_not_supported");
    // a caller that did not announce the feature: protocol violation
    let mut rogue = Client::join_ws(r.ws, Ser::Json);
    rogue.send_json(r#"[48, 1, {"progress": true}, "com.upload", []]"#);
    rogue.expect_abort("wamp.error.protocol_violation");
    for c in [callee, caller, plain] {
        c.drop_connection();
    }
    gauges_back_to_zero(&r);
}

#[test]
fn progressive_invocations_reach_one_callee_in_order_1_shard() {
    progressive_invocations_reach_one_callee_in_order(1);
}

#[test]
fn progressive_invocations_reach_one_callee_in_order_2_shards() {
    progressive_invocations_reach_one_callee_in_order(2);
}

/// Call rerouting: a callee that answers `wamp.error.unavailable` has the
/// call sent on by the registration's policy (`roundrobin`: the next in
/// turn; `first`: the one registered after; `last`: the one registered
/// before); when every callee declines, or the registration is `single`,
/// the caller gets `wamp.error.no_available_callee`.
fn unavailable_callees_get_the_call_rerouted(shards: usize) {
    let r = Router::start(shards);
    let on = |i: usize| r.join_spread(i);
    let mut caller = on(0);
    for (policy, declines, takes) in [("roundrobin", 0, 1), ("first", 0, 1), ("last", 2, 1)] {
        let proc = format!("com.reroute.{policy}");
        let mut callees: Vec<Client> = (0..3).map(|i| on(i + 1)).collect();
        for c in callees.iter_mut() {
            let req = c.next_req();
            c.send_json(&format!(r#"[64, {req}, {{"invoke": "{policy}"}}, "{proc}"]"#));
            c.expect(REGISTERED);
        }
        caller.send_json(&format!(r#"[48, 1, {{}}, "{proc}", ["payload", {{"n": 1}}]]"#));
        let inv = callees[declines].expect(INVOCATION);
        callees[declines].send_json(&format!(r#"[8, 68, {}, {{}}, "wamp.error.unavailable"]"#, inv.at(1).u()));
        let again = callees[takes].expect(INVOCATION);
        assert_eq!(again.at(4).at(0).s(), "payload", "the call as the caller sent it: {again:?}");
        assert_eq!(again.at(4).at(1).key("n").u(), 1);
        callees[takes].send_json(&format!(r#"[70, {}, {{}}, ["rerouted"]]"#, again.at(1).u()));
        assert_eq!(caller.expect(RESULT).at(3).at(0).s(), "rerouted");
        // every callee declines: no_available_callee
        caller.send_json(&format!(r#"[48, 2, {{}}, "{proc}", []]"#));
        for _ in 0..3 {
            let i = {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                loop {
                    assert!(std::time::Instant::now() < deadline, "the call reached no callee");
                    if let Some(i) = (0..3).find(|&i| callees[i].readable_within(std::time::Duration::from_millis(5))) {
                        break i;
                    }
                }
            };
            let inv = callees[i].expect(INVOCATION);
            callees[i].send_json(&format!(r#"[8, 68, {}, {{}}, "wamp.error.unavailable"]"#, inv.at(1).u()));
        }
        caller.expect_error(CALL, 2, "wamp.error.no_available_callee");
        // and nothing more went anywhere: the next call is answered normally
        caller.send_json(&format!(r#"[48, 3, {{}}, "{proc}", []]"#));
        let i = answer_where_it_went(&mut callees);
        assert_eq!(caller.expect(RESULT).at(3).at(0).u(), i as u64);
        for c in callees {
            c.drop_connection();
        }
    }
    // canceled (kill) while the callee declines: the call is not sent on
    let mut pair2: Vec<Client> = (0..2).map(|i| on(i + 1)).collect();
    rejoin(&mut pair2[0], r#"{"roles": {"callee": {"features": {"call_canceling": true}}}}"#);
    for c in pair2.iter_mut() {
        let req = c.next_req();
        c.send_json(&format!(r#"[64, {req}, {{"invoke": "roundrobin"}}, "com.reroute.killed"]"#));
        c.expect(REGISTERED);
    }
    caller.send_json(r#"[48, 50, {}, "com.reroute.killed", ["first"]]"#);
    let inv = pair2[0].expect(INVOCATION);
    caller.send_json(r#"[49, 50, {"mode": "kill"}]"#);
    // the callee is interrupted, and declines the call after that
    assert_eq!(interrupt_mode(&pair2[0].expect(INTERRUPT)), "kill");
    pair2[0].send_json(&format!(r#"[8, 68, {}, {{}}, "wamp.error.unavailable"]"#, inv.at(1).u()));
    caller.expect_error(CALL, 50, "wamp.error.canceled");
    // the other callee never got it: its next INVOCATION is the next call
    caller.send_json(r#"[48, 51, {}, "com.reroute.killed", ["next"]]"#);
    let next = pair2[1].expect(INVOCATION);
    assert_eq!(next.at(4).at(0).s(), "next", "the canceled call was sent on: {next:?}");
    pair2[1].send_json(&format!(r#"[70, {}, {{}}, []]"#, next.at(1).u()));
    caller.expect(RESULT);
    for c in pair2 {
        c.drop_connection();
    }
    // single: nobody to reroute to
    let (mut single, mut caller2) = pair(&r, r#"{"roles": {"callee": {}}}"#, "com.single");
    caller2.send_json(r#"[48, 1, {}, "com.single", []]"#);
    let inv = single.expect(INVOCATION);
    single.send_json(&format!(r#"[8, 68, {}, {{}}, "wamp.error.unavailable"]"#, inv.at(1).u()));
    caller2.expect_error(CALL, 1, "wamp.error.no_available_callee");
    sentinel(&mut single, &mut caller2, "com.single", 2);
    for c in [caller, caller2, single] {
        c.drop_connection();
    }
    gauges_back_to_zero(&r);
}

#[test]
fn unavailable_callees_get_the_call_rerouted_1_shard() {
    unavailable_callees_get_the_call_rerouted(1);
}

#[test]
fn unavailable_callees_get_the_call_rerouted_2_shards() {
    unavailable_callees_get_the_call_rerouted(2);
}

/// A callee of a shared registration at `limits.max_pending_invocations`
/// passes the call on to the next callee instead of refusing it; when every
/// callee is at its limit the caller gets `wamp.error.no_available_callee`.
fn busy_callees_pass_calls_on(shards: usize) {
    let r = Router::start_with(shards, "", "max_pending_invocations = 1", &[]);
    let on = |i: usize| r.join_spread(i);
    let mut caller = on(0);
    let mut callees: Vec<Client> = (0..2).map(|i| on(i + 1)).collect();
    for c in callees.iter_mut() {
        c.send_json(r#"[64, 1, {"invoke": "roundrobin"}, "com.busy"]"#);
        c.expect(REGISTERED);
    }
    caller.send_json(r#"[48, 1, {}, "com.busy", [1]]"#);
    let first = callees[0].expect(INVOCATION);
    caller.send_json(r#"[48, 2, {}, "com.busy", [2]]"#);
    let second = callees[1].expect(INVOCATION);
    // both busy: no callee can take it
    caller.send_json(r#"[48, 3, {}, "com.busy", [3]]"#);
    caller.expect_error(CALL, 3, "wamp.error.no_available_callee");
    // the second is free again; the turn is the first's (the reroute moved
    // the cursor past the second), which is busy: it passes the call on
    callees[1].send_json(&format!(r#"[70, {}, {{}}, ["two"]]"#, second.at(1).u()));
    assert_eq!(caller.expect(RESULT).at(3).at(0).s(), "two");
    caller.send_json(r#"[48, 4, {}, "com.busy", [4]]"#);
    let passed = callees[1].expect(INVOCATION);
    assert_eq!(passed.at(4).at(0).u(), 4, "the busy callee's turn went to the free one");
    callees[1].send_json(&format!(r#"[70, {}, {{}}, ["four"]]"#, passed.at(1).u()));
    assert_eq!(caller.expect(RESULT).at(3).at(0).s(), "four");
    callees[0].send_json(&format!(r#"[70, {}, {{}}, ["one"]]"#, first.at(1).u()));
    assert_eq!(caller.expect(RESULT).at(3).at(0).s(), "one");
    assert!(r.metric_sum("calls_rerouted") >= 2, "{}", r.metrics_text());
    caller.drop_connection();
    for c in callees {
        c.drop_connection();
    }
    gauges_back_to_zero(&r);
}

#[test]
fn busy_callees_pass_calls_on_1_shard() {
    busy_callees_pass_calls_on(1);
}

#[test]
fn busy_callees_pass_calls_on_2_shards() {
    busy_callees_pass_calls_on(2);
}

const PPT_CALLEE: &str = r#"{"roles": {"caller": {"features": {"payload_passthru_mode": true}}, "callee": {"features": {"payload_passthru_mode": true}}, "subscriber": {"features": {"payload_passthru_mode": true}}, "publisher": {"features": {"payload_passthru_mode": true}}}}"#;

/// Payload passthru mode: `ppt_*` options of CALL, YIELD and PUBLISH reach
/// INVOCATION, RESULT and EVENT Details, the payload as sent (a binary
/// stays a binary from JSON to MessagePack); a callee or caller without the
/// feature gets `wamp.error.feature_not_supported`; a sender that did not
/// announce it is aborted.
fn passthru_attributes_travel_with_the_payload(shards: usize) {
    let r = Router::start(shards);
    let (mut callee, mut caller) = pair(&r, PPT_CALLEE, "com.sealed");
    rejoin(&mut caller, PPT_CALLEE);
    let ppt = r#""ppt_scheme": "x_test", "ppt_serializer": "native", "ppt_cipher": "none", "ppt_keyid": "k1""#;
    // a binary argument: "\u0000" + base64 in JSON (the test client reads
    // it back as bytes)
    caller.send_json(&format!(r#"[48, 1, {{{ppt}}}, "com.sealed", ["\u0000AAEC/w=="]]"#));
    let inv = callee.expect(INVOCATION);
    for (k, v) in [
        ("ppt_scheme", "x_test"),
        ("ppt_serializer", "native"),
        ("ppt_cipher", "none"),
        ("ppt_keyid", "k1"),
    ] {
        assert_eq!(inv.at(3).key(k).s(), v, "{inv:?}");
    }
    assert_eq!(inv.at(4).at(0), &Value::Bytes(vec![0, 1, 2, 255]), "the payload untouched");
    callee.send_json(&format!(
        r#"[70, {}, {{"ppt_scheme": "x_test", "ppt_keyid": "k2"}}, ["\u0000/w=="]]"#,
        inv.at(1).u()
    ));
    let res = caller.expect(RESULT);
    assert_eq!(res.at(2).key("ppt_scheme").s(), "x_test");
    assert_eq!(res.at(2).key("ppt_keyid").s(), "k2");
    assert_eq!(res.at(3).at(0), &Value::Bytes(vec![255]));
    // ppt_* without a ppt_scheme is not passthru, and not forwarded
    caller.send_json(r#"[48, 2, {"ppt_keyid": "k"}, "com.sealed", []]"#);
    let inv = callee.expect(INVOCATION);
    assert!(inv.at(3).get("ppt_keyid").is_none(), "{inv:?}");
    callee.send_json(&format!(r#"[70, {}, {{}}, []]"#, inv.at(1).u()));
    caller.expect(RESULT);

    // events: the attributes reach every subscriber, MessagePack ones too
    let mut sub = if shards == 2 {
        r.join_on(1)
    } else {
        Client::join_ws(r.ws, Ser::Json)
    };
    let mut packed = Client::join_ws(r.ws, Ser::MsgPack);
    // subscribers that announced the mode (others get no passthru events)
    rejoin(&mut sub, PPT_CALLEE);
    rejoin(&mut packed, PPT_CALLEE);
    let mut plain_sub = Client::join_ws(r.ws, Ser::Json);
    let id = sub.subscribe("com.sealed.topic", "{}");
    let packed_id = packed.subscribe("com.sealed.topic", "{}");
    plain_sub.subscribe("com.sealed.topic", "{}");
    caller.send_json(&format!(
        r#"[16, 3, {{"acknowledge": true, {ppt}}}, "com.sealed.topic", ["\u0000AAEC/w=="]]"#
    ));
    caller.expect(PUBLISHED);
    let ev = sub.expect(EVENT);
    assert_eq!(ev.at(1).u(), id);
    assert_eq!(ev.at(3).key("ppt_scheme").s(), "x_test");
    assert_eq!(ev.at(4).at(0), &Value::Bytes(vec![0, 1, 2, 255]));
    let ev = packed.expect(EVENT);
    assert_eq!(ev.at(1).u(), packed_id);
    assert_eq!(ev.at(3).key("ppt_serializer").s(), "native");
    assert_eq!(ev.at(4).at(0), &Value::Bytes(vec![0, 1, 2, 255]), "a MessagePack bin: {ev:?}");

    // autobahn's older form (enc_algo; the payload one opaque binary, not
    // an Arguments list) travels the same way
    caller.send_json(
        r#"[16, 4, {"acknowledge": true, "enc_algo": "cryptobox", "enc_serializer": "msgpack"}, "com.sealed.topic", "\u0000AAEC/w=="]"#,
    );
    caller.expect(PUBLISHED);
    let ev = sub.expect(EVENT);
    assert_eq!(ev.at(3).key("enc_algo").s(), "cryptobox");
    assert_eq!(
        ev.at(4),
        &Value::Bytes(vec![0, 1, 2, 255]),
        "the opaque payload in the Arguments' place: {ev:?}"
    );
    assert_eq!(ev.len(), 5);
    let ev = packed.expect(EVENT);
    assert_eq!(ev.at(3).key("enc_serializer").s(), "msgpack");
    assert_eq!(ev.at(4), &Value::Bytes(vec![0, 1, 2, 255]));
    caller.send_json(r#"[48, 5, {"enc_algo": "cryptobox"}, "com.sealed", "\u0000/w=="]"#);
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(3).key("enc_algo").s(), "cryptobox");
    assert_eq!(inv.at(4), &Value::Bytes(vec![255]));
    callee.send_json(&format!(r#"[70, {}, {{"enc_algo": "cryptobox"}}, "\u0000AA=="]"#, inv.at(1).u()));
    let res = caller.expect(RESULT);
    assert_eq!(res.at(2).key("enc_algo").s(), "cryptobox");
    assert_eq!(res.at(3), &Value::Bytes(vec![0]));
    // the subscriber without the mode got none of them: its first event
    // is a plain one
    caller.send_json(r#"[16, 40, {"acknowledge": true}, "com.sealed.topic", ["plain"]]"#);
    caller.expect(PUBLISHED);
    assert_eq!(plain_sub.expect(EVENT).at(4).at(0).s(), "plain");
    sub.expect(EVENT);
    packed.expect(EVENT);
    // an opaque payload outside the mode is malformed
    let mut rogue = Client::join_ws(r.ws, Ser::Json);
    rogue.send_json(r#"[16, 1, {}, "com.sealed.topic", "\u0000AA=="]"#);
    rogue.expect_abort("wamp.error.protocol_violation");

    // a callee without the feature
    let (mut plain, mut caller2) = pair(&r, r#"{"roles": {"callee": {}}}"#, "com.open");
    rejoin(&mut caller2, PPT_CALLEE);
    caller2.send_json(r#"[48, 1, {"ppt_scheme": "x_test"}, "com.open", ["\u0000AA=="]]"#);
    caller2.expect_error(CALL, 1, "wamp.error.feature_not_supported");
    sentinel(&mut plain, &mut caller2, "com.open", 2);
    // a passthru YIELD for a caller without the feature: the callee is
    // told, the caller's call ends with the same error
    let mut plain_caller = Client::join_ws(r.ws, Ser::Json);
    plain_caller.send_json(r#"[48, 1, {}, "com.sealed", []]"#);
    let inv = callee.expect(INVOCATION);
    callee.send_json(&format!(r#"[70, {}, {{"ppt_scheme": "x_test"}}, ["\u0000AA=="]]"#, inv.at(1).u()));
    callee.expect_error(INVOCATION, inv.at(1).u(), "wamp.error.feature_not_supported");
    plain_caller.expect_error(CALL, 1, "wamp.error.feature_not_supported");
    // senders that did not announce it
    for bad in [
        r#"[48, 1, {"ppt_scheme": "x_test"}, "com.sealed", []]"#,
        r#"[16, 1, {"ppt_scheme": "x_test"}, "com.sealed.topic", []]"#,
    ] {
        let mut rogue = Client::join_ws(r.ws, Ser::Json);
        rogue.send_json(bad);
        rogue.expect_abort("wamp.error.protocol_violation");
    }
    let (mut rogue_callee, mut caller3) = pair(&r, r#"{"roles": {"callee": {}}}"#, "com.rogue");
    caller3.send_json(r#"[48, 1, {}, "com.rogue", []]"#);
    let inv = rogue_callee.expect(INVOCATION);
    rogue_callee.send_json(&format!(r#"[70, {}, {{"ppt_scheme": "x_test"}}, []]"#, inv.at(1).u()));
    rogue_callee.expect_abort("wamp.error.protocol_violation");
    caller3.expect_error(CALL, 1, "wamp.error.canceled");
    for c in [callee, caller, plain, caller2, plain_caller, sub, packed, caller3, plain_sub] {
        c.drop_connection();
    }
    gauges_back_to_zero(&r);
}

#[test]
fn passthru_attributes_travel_with_the_payload_1_shard() {
    passthru_attributes_travel_with_the_payload(1);
}

#[test]
fn passthru_attributes_travel_with_the_payload_2_shards() {
    passthru_attributes_travel_with_the_payload(2);
}

/// The router's own procedures: `wamp.session.count`, `list` and `get`
/// gather every shard's sessions of the caller's realm (with the authrole
/// filter); the `wamp.` namespace cannot be registered.
fn the_router_answers_session_procedures(shards: usize) {
    let r = Router::start(shards);
    let mut clients: Vec<Client> = (0..4).map(|i| r.join_spread(i)).collect();
    let ids: Vec<u64> = clients.iter().map(|c| c.session).collect();
    let asker = &mut clients[0];
    asker.send_json(r#"[48, 1, {}, "wamp.session.count", []]"#);
    let total = asker.expect(RESULT).at(3).at(0).u();
    // join_on leaves spare sessions open on the other shard: count them all
    asker.send_json(r#"[48, 2, {}, "wamp.session.list", []]"#);
    let list = asker.expect(RESULT);
    let listed: Vec<u64> = match list.at(3).at(0) {
        Value::List(l) => l.iter().map(|v| v.u()).collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(listed.len() as u64, total, "count and list agree");
    assert!(
        ids.iter().all(|id| listed.contains(id)),
        "every session listed: {ids:?} in {listed:?}"
    );
    asker.send_json(r#"[48, 3, {}, "wamp.session.count", [["anonymous"]]]"#);
    assert_eq!(asker.expect(RESULT).at(3).at(0).u(), total);
    asker.send_json(r#"[48, 4, {}, "wamp.session.count", [["admin"]]]"#);
    assert_eq!(asker.expect(RESULT).at(3).at(0).u(), 0);
    asker.send_json(r#"[48, 5, {}, "wamp.session.list", [["admin"]]]"#);
    assert_eq!(asker.expect(RESULT).at(3).at(0), &Value::List(vec![]));
    // a session on the other shard
    asker.send_json(&format!(r#"[48, 6, {{}}, "wamp.session.get", [{}]]"#, ids[1]));
    let got = asker.expect(RESULT);
    let d = got.at(3).at(0);
    assert_eq!(d.key("session").u(), ids[1]);
    assert_eq!(d.key("authrole").s(), "anonymous");
    assert_eq!(d.key("authmethod").s(), "anonymous");
    assert_eq!(d.key("transport").key("type").s(), "websocket");
    assert_eq!(d.key("transport").key("serializer").s(), "json");
    asker.send_json(r#"[48, 7, {}, "wamp.session.get", [12345]]"#);
    asker.expect_error(CALL, 7, "wamp.error.no_such_session");
    asker.send_json(r#"[48, 8, {}, "wamp.session.get", ["x"]]"#);
    asker.expect_error(CALL, 8, "wamp.error.invalid_argument");
    asker.send_json(r#"[48, 9, {}, "wamp.session.count", ["admin"]]"#);
    asker.expect_error(CALL, 9, "wamp.error.invalid_argument");
    asker.send_json(r#"[64, 10, {}, "wamp.session.count"]"#);
    asker.expect_error(REGISTER, 10, "wamp.error.invalid_uri");
    // a session that leaves is no longer counted
    clients.pop().expect("a client").drop_connection();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut n = 11;
    loop {
        clients[0].send_json(&format!(r#"[48, {n}, {{}}, "wamp.session.count", []]"#));
        if clients[0].expect(RESULT).at(3).at(0).u() == total - 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the session that left is still counted");
        n += 1;
    }
    // sessions of another realm are not counted
    let r2 = Router::start_with(
        shards,
        "\n[[realm]]\nname = \"other\"\n[[realm]]\nname = \"closed\"\nmeta_roles = []",
        "",
        &[],
    );
    let mut alone = Client::ws(r2.ws, Ser::Json);
    alone.send_json(&format!(r#"[1, "other", {ROLES}]"#));
    alone.expect(WELCOME);
    let _others: Vec<Client> = (0..3).map(|_| Client::join_ws(r2.ws, Ser::Json)).collect();
    alone.send_json(r#"[48, 1, {}, "wamp.session.count", []]"#);
    assert_eq!(alone.expect(RESULT).at(3).at(0).u(), 1);
    // a realm whose meta_roles name nobody
    let mut shut_out = Client::ws(r2.ws, Ser::Json);
    shut_out.send_json(&format!(r#"[1, "closed", {ROLES}]"#));
    shut_out.expect(WELCOME);
    shut_out.send_json(r#"[48, 1, {}, "wamp.session.list", []]"#);
    shut_out.expect_error(CALL, 1, "wamp.error.not_authorized");
    for c in clients {
        c.drop_connection();
    }
    gauges_back_to_zero(&r);
}

#[test]
fn the_router_answers_session_procedures_1_shard() {
    the_router_answers_session_procedures(1);
}

#[test]
fn the_router_answers_session_procedures_2_shards() {
    the_router_answers_session_procedures(2);
}

const PLAIN_ROLES: &str = r#"{"roles": {"caller": {}, "callee": {}}}"#;
const REVOCABLE_CALLEE: &str = r#"{"roles": {"callee": {"features": {"registration_revocation": true}}}}"#;

/// Registration revocation: `wamp.registration.remove_callee` removes a
/// callee from a registration on every shard; a callee that announced
/// `registration_revocation` gets `[UNREGISTERED, 0, {registration,
/// reason}]`, one that did not gets nothing; the other callees of a shared
/// registration keep taking its calls.
fn callees_are_removed_from_registrations(shards: usize) {
    // by default nobody may remove callees
    let closed = Router::start(shards);
    let (mut c, mut asker) = pair(&closed, PLAIN_ROLES, "com.kept");
    asker.send_json(&format!(r#"[48, 1, {{}}, "wamp.registration.remove_callee", [1, {}]]"#, c.session));
    asker.expect_error(CALL, 1, "wamp.error.not_authorized");
    sentinel(&mut c, &mut asker, "com.kept", 2);
    let r = Router::start_with(
        shards,
        "\n[[realm]]\nname = \"realm1\"\nmeta_admin_roles = [\"anonymous\"]",
        "",
        &[],
    );
    let (mut callee, mut caller) = pair(&r, REVOCABLE_CALLEE, "com.revoked");
    callee.send_json(r#"[48, 1, {}, "wamp.session.count", []]"#);
    callee.expect(RESULT);
    let reg = {
        caller.send_json(r#"[48, 1, {}, "com.revoked", []]"#);
        let inv = callee.expect(INVOCATION);
        callee.send_json(&format!(r#"[70, {}, {{}}, []]"#, inv.at(1).u()));
        caller.expect(RESULT);
        inv.at(2).u()
    };
    caller.send_json(&format!(
        r#"[48, 2, {{}}, "wamp.registration.remove_callee", [{reg}, {}, "com.example.moved"]]"#,
        callee.session
    ));
    caller.expect(RESULT);
    let m = callee.expect(UNREGISTERED);
    assert_eq!(m.at(1).u(), 0, "{m:?}");
    assert_eq!(m.at(2).key("registration").u(), reg);
    assert_eq!(m.at(2).key("reason").s(), "com.example.moved");
    caller.send_json(r#"[48, 3, {}, "com.revoked", []]"#);
    caller.expect_error(CALL, 3, "wamp.error.no_such_procedure");
    caller.send_json(&format!(
        r#"[48, 4, {{}}, "wamp.registration.remove_callee", [{reg}, {}]]"#,
        callee.session
    ));
    caller.expect_error(CALL, 4, "wamp.error.no_such_registration");

    // a shared registration: one callee (that did not announce the feature)
    // is removed, the other keeps the calls
    let on = |i: usize| r.join_spread(i);
    let mut callees: Vec<Client> = (0..2).map(|i| on(i + 1)).collect();
    for (k, c) in callees.iter_mut().enumerate() {
        c.send_json(r#"[64, 1, {"invoke": "roundrobin"}, "com.shared.revoked"]"#);
        c.expect(REGISTERED);
        c.register(&format!("com.sentinel.{k}"));
    }
    caller.send_json(r#"[48, 5, {}, "com.shared.revoked", []]"#);
    let i = answer_where_it_went(&mut callees);
    caller.expect(RESULT);
    let shared = {
        caller.send_json(r#"[48, 6, {}, "com.shared.revoked", []]"#);
        let j = 1 - i;
        let inv = callees[j].expect(INVOCATION);
        callees[j].send_json(&format!(r#"[70, {}, {{}}, []]"#, inv.at(1).u()));
        caller.expect(RESULT);
        inv.at(2).u()
    };
    let gone = callees[0].session;
    caller.send_json(&format!(
        r#"[48, 7, {{}}, "wamp.registration.remove_callee", [{shared}, {gone}], {{"reason": "wamp.close.normal"}}]"#
    ));
    caller.expect(RESULT);
    for n in 8..14u64 {
        caller.send_json(&format!(r#"[48, {n}, {{}}, "com.shared.revoked", [{n}]]"#));
        let inv = callees[1].expect(INVOCATION);
        callees[1].send_json(&format!(r#"[70, {}, {{}}, []]"#, inv.at(1).u()));
        caller.expect(RESULT);
    }
    // the removed callee got no UNREGISTERED (it did not announce the
    // feature): its next message is the sentinel's INVOCATION
    let mut removed = callees.remove(0);
    sentinel(&mut removed, &mut caller, "com.sentinel.0", 20);
    caller.send_json(r#"[48, 21, {}, "wamp.registration.remove_callee", [1, 2]]"#);
    caller.expect_error(CALL, 21, "wamp.error.no_such_registration");
    caller.send_json(&format!(r#"[48, 22, {{}}, "wamp.registration.remove_callee", [{shared}, 2]]"#));
    caller.expect_error(CALL, 22, "wamp.error.no_such_session");
    for c in [callee, caller, removed] {
        c.drop_connection();
    }
    for c in callees {
        c.drop_connection();
    }
    gauges_back_to_zero(&r);
}

#[test]
fn callees_are_removed_from_registrations_1_shard() {
    callees_are_removed_from_registrations(1);
}

#[test]
fn callees_are_removed_from_registrations_2_shards() {
    callees_are_removed_from_registrations(2);
}
