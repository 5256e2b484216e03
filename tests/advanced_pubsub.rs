//! Advanced PubSub over real sockets: publisher identification and
//! subscriber black- and whitelisting, on 1 shard and with publisher and
//! subscribers spread over 2 shards. An event that must *not* arrive is
//! shown by a later sentinel event from the same publisher on the same topic.

use switchyard::wamp::Value;

use crate::advanced_rpc::rejoin;
use crate::common::*;

/// A session on shard `i % shards` (any shard with 1).
fn on(r: &Router, i: usize) -> Client {
    r.join_spread(i)
}

/// Publishes the sentinel and checks that each subscriber's next EVENT is
/// `want[i]` (the payload's first argument) followed by the sentinel, or
/// the sentinel at once for `None`.
fn expect_events(publisher: &mut Client, topic: &str, subs: &mut [Client], want: &[Option<&str>]) {
    let req = publisher.next_req();
    publisher.send_json(&format!(
        r#"[16, {req}, {{"acknowledge": true, "exclude_me": false}}, "{topic}", ["sentinel"]]"#
    ));
    // its own copy of the sentinel (exclude_me false) comes before PUBLISHED
    let own = publisher.expect(EVENT);
    assert_eq!(own.at(4).at(0).s(), "sentinel");
    publisher.expect(PUBLISHED);
    for (i, s) in subs.iter_mut().enumerate() {
        if let Some(w) = want[i] {
            let ev = s.expect(EVENT);
            assert_eq!(ev.at(4).at(0).s(), w, "subscriber {i}: {ev:?}");
        }
        let ev = s.expect(EVENT);
        assert_eq!(ev.at(4).at(0).s(), "sentinel", "subscriber {i} got {ev:?} before the sentinel");
    }
}

/// Publisher identification: `disclose_me` names the publisher (session,
/// authid, authrole) in EVENT.Details at every subscriber; without it
/// nothing is named; a realm with `publisher_disclosure = "always"` names
/// every publisher, one with `"never"` refuses `disclose_me` (ERROR
/// `wamp.error.option_disallowed.disclose_me`, nothing published).
fn publishers_are_disclosed_when_asked_and_allowed(shards: usize) {
    let r = Router::start_with(
        shards,
        "\n[[realm]]\nname = \"open\"\npublisher_disclosure = \"always\"\n[[realm]]\nname = \"closed\"\npublisher_disclosure = \"never\"",
        "",
        &[],
    );
    let mut publisher = on(&r, 0);
    rejoin(
        &mut publisher,
        r#"{"roles": {"publisher": {}, "subscriber": {}}, "authid": "pub-1"}"#,
    );
    let mut subs: Vec<Client> = (0..2).map(|i| on(&r, i)).collect();
    for s in subs.iter_mut() {
        s.subscribe("com.news", "{}");
    }
    publisher.subscribe("com.news", "{}");
    publisher.send_json(r#"[16, 1, {"disclose_me": true}, "com.news", ["named"]]"#);
    for s in subs.iter_mut() {
        let ev = s.expect(EVENT);
        assert_eq!(ev.at(3).key("publisher").u(), publisher.session, "{ev:?}");
        assert_eq!(ev.at(3).key("publisher_authid").s(), "pub-1");
        assert_eq!(ev.at(3).key("publisher_authrole").s(), "anonymous");
        assert_eq!(ev.at(4).at(0).s(), "named");
    }
    publisher.send_json(r#"[16, 2, {}, "com.news", ["anonymous"]]"#);
    for s in subs.iter_mut() {
        let ev = s.expect(EVENT);
        assert!(ev.at(3).get("publisher").is_none(), "{ev:?}");
    }
    // the realms that decide for the publisher
    for (realm, named) in [("open", true), ("closed", false)] {
        let join = |c: &mut Client| {
            c.send_json(r#"[6, {}, "wamp.close.close_realm"]"#);
            c.expect(GOODBYE);
            c.send_json(&format!(r#"[1, "{realm}", {ROLES}]"#));
            c.session = c.expect(WELCOME).at(1).u();
        };
        let mut p = on(&r, 0);
        let mut s = on(&r, 1);
        join(&mut p);
        join(&mut s);
        s.subscribe("com.news", "{}");
        if named {
            p.send_json(r#"[16, 1, {"acknowledge": true}, "com.news", ["x"]]"#);
            p.expect(PUBLISHED);
            assert_eq!(s.expect(EVENT).at(3).key("publisher").u(), p.session);
        } else {
            p.send_json(r#"[16, 1, {"acknowledge": true, "disclose_me": true}, "com.news", ["refused"]]"#);
            p.expect_error(PUBLISH, 1, "wamp.error.option_disallowed.disclose_me");
            p.send_json(r#"[16, 2, {"acknowledge": true}, "com.news", ["sentinel"]]"#);
            p.expect(PUBLISHED);
            let ev = s.expect(EVENT);
            assert_eq!(ev.at(4).at(0).s(), "sentinel", "the refused event was not published: {ev:?}");
            assert!(ev.at(3).get("publisher").is_none(), "{ev:?}");
        }
    }
}

#[test]
fn publishers_are_disclosed_when_asked_and_allowed_1_shard() {
    publishers_are_disclosed_when_asked_and_allowed(1);
}

#[test]
fn publishers_are_disclosed_when_asked_and_allowed_2_shards() {
    publishers_are_disclosed_when_asked_and_allowed(2);
}

/// Subscriber black- and whitelisting by session, authid and authrole, the
/// lists combined as the spec says, on the shard that delivers.
fn publishers_choose_their_receivers(shards: usize) {
    let r = Router::start(shards);
    let mut publisher = on(&r, 0);
    publisher.subscribe("com.list", "{}");
    // subscribers 0..4 on alternating shards; authids alice, bob, alice, carol
    let authids = ["alice", "bob", "alice", "carol"];
    let mut subs: Vec<Client> = authids
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut c = on(&r, i + 1);
            rejoin(&mut c, &format!(r#"{{"roles": {{"subscriber": {{}}}}, "authid": "{a}"}}"#));
            c.subscribe("com.list", "{}");
            c
        })
        .collect();
    let id: Vec<u64> = subs.iter().map(|c| c.session).collect();
    let cases: Vec<(String, [bool; 4])> = vec![
        (format!(r#""exclude": [{}, {}]"#, id[0], id[3]), [false, true, true, false]),
        (format!(r#""eligible": [{}, {}]"#, id[1], id[2]), [false, true, true, false]),
        (r#""exclude_authid": ["alice"]"#.into(), [false, true, false, true]),
        (r#""eligible_authid": ["alice", "carol"]"#.into(), [true, false, true, true]),
        (r#""eligible_authrole": ["anonymous"]"#.into(), [true, true, true, true]),
        (r#""exclude_authrole": ["anonymous"]"#.into(), [false, false, false, false]),
        (r#""eligible_authrole": ["admin"]"#.into(), [false, false, false, false]),
        // combined: eligible by authid, minus one session
        (
            format!(r#""eligible_authid": ["alice"], "exclude": [{}]"#, id[2]),
            [true, false, false, false],
        ),
        (
            format!(r#""eligible": [{}, {}], "exclude_authid": ["bob"]"#, id[0], id[1]),
            [true, false, false, false],
        ),
        (r#""eligible": []"#.into(), [false, false, false, false]),
    ];
    for (n, (lists, who)) in cases.iter().enumerate() {
        let req = publisher.next_req();
        let text = format!("case {n}");
        publisher.send_json(&format!(r#"[16, {req}, {{{lists}, "acknowledge": true}}, "com.list", ["{text}"]]"#));
        publisher.expect(PUBLISHED);
        let want: Vec<Option<&str>> = who.iter().map(|&w| w.then_some(text.as_str())).collect();
        expect_events(&mut publisher, "com.list", &mut subs, &want);
    }
    // the publisher itself is a subscriber too: a whitelist naming it (and
    // exclude_me false) reaches it, exclude_me true does not
    let req = publisher.next_req();
    publisher.send_json(&format!(
        r#"[16, {req}, {{"eligible": [{}], "exclude_me": false}}, "com.list", ["self"]]"#,
        publisher.session
    ));
    assert_eq!(publisher.expect(EVENT).at(4).at(0).s(), "self");
    // wrong types are a protocol violation
    publisher.send_json(r#"[16, 99, {"eligible": ["x"]}, "com.list", []]"#);
    publisher.expect_abort("wamp.error.protocol_violation");
}

#[test]
fn publishers_choose_their_receivers_1_shard() {
    publishers_choose_their_receivers(1);
}

#[test]
fn publishers_choose_their_receivers_2_shards() {
    publishers_choose_their_receivers(2);
}

/// Reads EVENTs until the sentinel; returns the first arguments before it.
fn until_sentinel(c: &mut Client) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let ev = c.expect(EVENT);
        if ev.at(4).at(0) == &Value::Str("sentinel".into()) {
            return got;
        }
        got.push(ev);
    }
}

fn sentinel(publisher: &mut Client, topic: &str) {
    let req = publisher.next_req();
    publisher.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "{topic}", ["sentinel"]]"#));
    publisher.expect(PUBLISHED);
}

/// Event retention: `retain` keeps the topic's last event router-wide; a
/// SUBSCRIBE with `get_retained` gets it first (`retained: true`), for an
/// exact subscription or every matching topic of a pattern; others do not;
/// black/white lists hold for it; a realm may switch it off; it is bounded.
fn retained_events_reach_new_subscribers(shards: usize) {
    let r = Router::start_with(
        shards,
        "\n[[realm]]\nname = \"forgetful\"\nretention = false\n[[realm]]\nname = \"small\"\nmax_retained_events = 1",
        "",
        &[],
    );
    let mut publisher = on(&r, 0);
    for (n, (topic, v)) in [("com.r.a", "a1"), ("com.r.a", "a2"), ("com.r.b", "b1")].iter().enumerate() {
        publisher.send_json(&format!(
            r#"[16, {}, {{"acknowledge": true, "retain": true}}, "{topic}", ["{v}"]]"#,
            n + 1
        ));
        publisher.expect(PUBLISHED);
    }
    // not retained: an event without `retain`
    publisher.send_json(r#"[16, 9, {"acknowledge": true}, "com.r.a", ["live"]]"#);
    publisher.expect(PUBLISHED);
    let mut sub = on(&r, 1);
    let id = sub.subscribe("com.r.a", r#"{"get_retained": true}"#);
    let got = {
        let ev = sub.expect(EVENT);
        assert_eq!(ev.at(1).u(), id);
        assert_eq!(ev.at(3).key("retained"), &Value::Bool(true), "{ev:?}");
        ev.at(4).at(0).clone()
    };
    assert_eq!(got, Value::Str("a2".into()), "the last retained event");
    sentinel(&mut publisher, "com.r.a");
    assert!(until_sentinel(&mut sub).is_empty(), "one retained event only");
    // without get_retained: nothing
    let mut plain = on(&r, 1);
    plain.subscribe("com.r.a", "{}");
    sentinel(&mut publisher, "com.r.a");
    assert!(until_sentinel(&mut plain).is_empty());
    // a pattern: every matching topic's, with the topic
    let mut wide = on(&r, 0);
    wide.subscribe("com.r.", r#"{"match": "prefix", "get_retained": true}"#);
    let mut seen: Vec<(String, String)> = (0..2)
        .map(|_| {
            let ev = wide.expect(EVENT);
            assert_eq!(ev.at(3).key("retained"), &Value::Bool(true));
            (ev.at(3).key("topic").s().to_owned(), ev.at(4).at(0).s().to_owned())
        })
        .collect();
    seen.sort();
    assert_eq!(seen, vec![("com.r.a".into(), "a2".into()), ("com.r.b".into(), "b1".into())]);
    sentinel(&mut publisher, "com.r.b");
    assert!(until_sentinel(&mut wide).is_empty());
    // a retained event its whitelist keeps from this subscriber
    publisher.send_json(r#"[16, 20, {"acknowledge": true, "retain": true, "eligible_authid": ["nobody"]}, "com.r.c", ["secret"]]"#);
    publisher.expect(PUBLISHED);
    let mut nosy = on(&r, 1);
    nosy.subscribe("com.r.c", r#"{"get_retained": true}"#);
    sentinel(&mut publisher, "com.r.c");
    assert!(until_sentinel(&mut nosy).is_empty(), "the whitelist holds for retained events");
    // a realm without retention
    let join = |c: &mut Client, realm: &str| {
        c.send_json(r#"[6, {}, "wamp.close.close_realm"]"#);
        c.expect(GOODBYE);
        c.send_json(&format!(r#"[1, "{realm}", {ROLES}]"#));
        c.session = c.expect(WELCOME).at(1).u();
    };
    let (mut p2, mut s2) = (on(&r, 0), on(&r, 1));
    join(&mut p2, "forgetful");
    join(&mut s2, "forgetful");
    p2.send_json(r#"[16, 1, {"acknowledge": true, "retain": true}, "com.r.a", ["kept?"]]"#);
    p2.expect(PUBLISHED);
    s2.subscribe("com.r.a", r#"{"get_retained": true}"#);
    sentinel(&mut p2, "com.r.a");
    assert!(until_sentinel(&mut s2).is_empty(), "retention is off in this realm");
    // bounded: one topic per shard in the realm "small"
    let (mut p3, mut s3) = (on(&r, 0), on(&r, 1));
    join(&mut p3, "small");
    join(&mut s3, "small");
    for n in 0..6 {
        p3.send_json(&format!(
            r#"[16, {}, {{"acknowledge": true, "retain": true}}, "com.s.t{n}", [{n}]]"#,
            n + 1
        ));
        p3.expect(PUBLISHED);
    }
    s3.subscribe("com.s.", r#"{"match": "prefix", "get_retained": true}"#);
    sentinel(&mut p3, "com.s.x");
    let kept = until_sentinel(&mut s3);
    assert!(!kept.is_empty() && kept.len() <= shards, "kept {} retained events", kept.len());
    assert!(r.metric_sum("retained_refused") >= (6 - shards) as i64, "{}", r.metrics_text());
}

/// A subscriber that asks for retained events while the topics are being
/// published gets every retained event before any live one, and per topic
/// never an older event after a newer one (a retained event whose topic got
/// a live event meanwhile is left out). The subscriber publishes the live
/// events itself in the same write as its second SUBSCRIBE (the same
/// subscription, answered at once), so they reach the router while the
/// retained events are still being gathered from the shards.
fn retained_events_never_follow_live_ones(shards: usize) {
    let r = Router::start(shards);
    let mut publisher = on(&r, 0);
    for (n, topic) in ["com.h.a", "com.h.b"].iter().enumerate() {
        publisher.send_json(&format!(
            r#"[16, {}, {{"acknowledge": true, "retain": true}}, "{topic}", [{n}]]"#,
            n + 1
        ));
        publisher.expect(PUBLISHED);
    }
    let kinds = [("com.h.a", r#""match": "exact""#), ("com.h.", r#""match": "prefix""#)];
    for (round, (uri, opts)) in kinds.into_iter().enumerate() {
        let first = 10 + 100 * round as u64;
        let mut sub = on(&r, 1);
        sub.subscribe(uri, &format!("{{{opts}}}"));
        let mut batch = vec![format!(r#"[32, 100, {{{opts}, "get_retained": true}}, "{uri}"]"#)];
        for n in first..first + 50 {
            let topic = if n % 2 == 0 { "com.h.a" } else { "com.h.b" };
            batch.push(format!(r#"[16, {n}, {{"retain": true, "exclude_me": false}}, "{topic}", [{n}]]"#));
        }
        batch.push(r#"[16, 99, {"acknowledge": true, "exclude_me": false}, "com.h.a", ["sentinel"]]"#.to_owned());
        sub.send_json_batch(&batch);
        let mut last: std::collections::HashMap<String, u64> = Default::default();
        let (mut live_seen, mut retained, mut subscribed) = (false, 0, false);
        // its own sentinel EVENT may come after PUBLISHED (held with the
        // rest); a second sentinel, sent once both came, shows that nothing
        // (no late retained event) follows
        let (mut published, mut sentinels, mut second) = (0, 0, false);
        while (published, sentinels) != (2, 2) {
            if (published, sentinels, second) == (1, 1, false) {
                sub.send_json(r#"[16, 98, {"acknowledge": true, "exclude_me": false}, "com.h.a", ["sentinel"]]"#);
                second = true;
            }
            let m = sub.recv_msg();
            match m.at(0).u() {
                SUBSCRIBED => subscribed = true,
                PUBLISHED => published += 1,
                EVENT if m.at(4).at(0) == &Value::Str("sentinel".into()) => sentinels += 1,
                EVENT => {
                    assert!(subscribed, "an event before SUBSCRIBED");
                    let is_retained = m.at(3).get("retained").is_some();
                    assert!(!(is_retained && live_seen), "a retained event after a live one: {m:?}");
                    live_seen |= !is_retained;
                    retained += usize::from(is_retained);
                    let topic = m.at(3).get("topic").map_or("com.h.a".to_owned(), |t| t.s().to_owned());
                    let n = m.at(4).at(0).u();
                    if let Some(before) = last.insert(topic.clone(), n) {
                        assert!(n > before, "{topic}: {n} after {before}");
                    }
                }
                other => panic!("unexpected {other}: {m:?}"),
            }
        }
        assert!(
            live_seen && last.get("com.h.a") == Some(&(first + 48)),
            "every live event came: {last:?}"
        );
        assert!(retained <= 2, "{retained} retained events");
    }
}

#[test]
fn retained_events_never_follow_live_ones_1_shard() {
    retained_events_never_follow_live_ones(1);
}

#[test]
fn retained_events_never_follow_live_ones_2_shards() {
    retained_events_never_follow_live_ones(2);
}

#[test]
fn retained_events_reach_new_subscribers_1_shard() {
    retained_events_reach_new_subscribers(1);
}

#[test]
fn retained_events_reach_new_subscribers_2_shards() {
    retained_events_reach_new_subscribers(2);
}

/// realm1 keeping the history of `com.h.*`, with the test principals.
fn history_realm() -> String {
    format!(
        "\n[[realm]]\nname = \"realm1\"\n[[realm.history]]\nuri = \"com.h.\"\nmatch = \"prefix\"\nlimit = 5\n{}",
        test_principals()
    )
}

/// `wamp.subscription.get_events` for `sub` with kwargs; the events' first
/// arguments, or the whole Event dictionaries.
fn get_events(c: &mut Client, sub: u64, kwargs: &str) -> Vec<Value> {
    let req = c.next_req();
    c.send_json(&format!(r#"[48, {req}, {{}}, "wamp.subscription.get_events", [{sub}], {kwargs}]"#));
    // live events of the same subscriptions may still be arriving
    let m = loop {
        let m = c.recv_msg();
        if m.code() != EVENT {
            break m;
        }
    };
    assert_eq!(m.code(), RESULT, "{m:?}");
    match m.at(3).at(0) {
        Value::List(l) => l.clone(),
        other => panic!("not a list of events: {other:?}"),
    }
}

fn firsts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e.key("args").at(0) {
            Value::Str(s) => s.clone(),
            Value::UInt(n) => n.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Event history: events of topics a realm's `history` rule matches are
/// kept (up to the rule's limit per topic), whichever shard they were
/// published on, and `wamp.subscription.get_events` returns them for a
/// subscription, in order, with the spec's filters; events sent to
/// session-ID lists are not kept, and whitelists hold for the caller.
fn history_is_kept_and_queried(shards: usize) {
    let r = Router::start_with(shards, &history_realm(), "", &[]);
    let mut publisher = on(&r, 1);
    let mut reader = on(&r, 0);
    let exact = reader.subscribe("com.h.a", "{}");
    let pattern = reader.subscribe("com.h.", r#"{"match": "prefix"}"#);
    let mut ids = Vec::new();
    let publish = |p: &mut Client, topic: &str, arg: &str, extra: &str| {
        let req = p.next_req();
        p.send_json(&format!(
            r#"[16, {req}, {{"acknowledge": true{extra}}}, "{topic}", ["{arg}"], {{"n": {req}}}]"#
        ));
        let m = p.expect(PUBLISHED);
        m.at(2).u()
    };
    for n in 0..7 {
        ids.push(publish(&mut publisher, "com.h.a", &format!("a{n}"), ""));
    }
    publish(&mut publisher, "com.h.b", "b0", "");
    publish(
        &mut publisher,
        "com.h.b",
        "private",
        &format!(r#", "eligible": [{}]"#, reader.session),
    );
    publish(&mut publisher, "com.h.b", "hidden", r#", "eligible_authid": ["nobody"]"#);
    publish(&mut publisher, "com.h.b", "b1", "");
    publish(&mut publisher, "com.other", "none", "");
    let events = get_events(&mut reader, exact, "{}");
    assert_eq!(
        firsts(&events),
        ["a2", "a3", "a4", "a5", "a6"],
        "the last 5 (the rule's limit), oldest first"
    );
    let e = &events[0];
    assert_eq!(e.key("subscription").u(), exact);
    assert_eq!(e.key("publication").u(), ids[2]);
    assert!(e.key("timestamp").s().ends_with('Z'), "{e:?}");
    assert_eq!(e.key("kwargs").key("n").u(), 3);
    assert!(e.key("details").get("topic").is_none(), "no topic for an exact subscription");
    assert_eq!(
        firsts(&get_events(&mut reader, exact, r#"{"reverse": true, "limit": 2}"#)),
        ["a6", "a5"]
    );
    let all = get_events(&mut reader, pattern, "{}");
    assert_eq!(
        firsts(&all),
        ["a2", "a3", "a4", "a5", "a6", "b0", "b1"],
        "both topics, in order; private and hidden left out"
    );
    assert_eq!(all[5].key("details").key("topic").s(), "com.h.b");
    assert_eq!(firsts(&get_events(&mut reader, pattern, r#"{"topic": "com.h.b"}"#)), ["b0", "b1"]);
    let p4 = ids[4];
    assert_eq!(
        firsts(&get_events(&mut reader, exact, &format!(r#"{{"from_publication": {p4}}}"#))),
        ["a4", "a5", "a6"]
    );
    assert_eq!(
        firsts(&get_events(&mut reader, exact, &format!(r#"{{"after_publication": {p4}}}"#))),
        ["a5", "a6"]
    );
    assert_eq!(
        firsts(&get_events(&mut reader, exact, &format!(r#"{{"before_publication": {p4}}}"#))),
        ["a2", "a3"]
    );
    assert_eq!(
        firsts(&get_events(&mut reader, exact, &format!(r#"{{"until_publication": {p4}}}"#))),
        ["a2", "a3", "a4"]
    );
    assert!(get_events(&mut reader, exact, r#"{"from_time": "2999-01-01T00:00:00Z"}"#).is_empty());
    assert_eq!(get_events(&mut reader, exact, r#"{"until_time": "2999-01-01T00:00:00Z"}"#).len(), 5);
    assert_eq!(get_events(&mut reader, exact, r#"{"after_time": "2000-01-01T00:00:00Z"}"#).len(), 5);
    // the whitelist's authid: a reader with that authid sees the hidden one
    let mut nobody = on(&r, 1);
    rejoin(&mut nobody, r#"{"roles": {"subscriber": {}, "caller": {}}, "authid": "nobody"}"#);
    let sub_b = nobody.subscribe("com.h.b", "{}");
    assert_eq!(firsts(&get_events(&mut nobody, sub_b, "{}")), ["b0", "hidden", "b1"]);
    // errors
    reader.send_json(r#"[48, 100, {}, "wamp.subscription.get_events", [12345]]"#);
    reader.expect_error(CALL, 100, "wamp.error.no_such_subscription");
    reader.send_json(&format!(
        r#"[48, 101, {{}}, "wamp.subscription.get_events", [{exact}], {{"limit": 0}}]"#
    ));
    reader.expect_error(CALL, 101, "wamp.error.invalid_argument");
    reader.send_json(&format!(
        r#"[48, 102, {{}}, "wamp.subscription.get_events", [{exact}], {{"from_time": "yesterday"}}]"#
    ));
    reader.expect_error(CALL, 102, "wamp.error.invalid_argument");
    // a reader that takes 512-byte messages: the events do not fit
    let (_, conn) = rs_handshake(r.rs, [0x7F, 0x02, 0, 0]);
    let mut small = Client::over(conn, Ser::MsgPack);
    small.hello();
    // all 7 kept events of the prefix: over 512 bytes
    let small_sub = small.subscribe("com.h.", r#"{"match": "prefix"}"#);
    small.send_json(&format!(r#"[48, 9, {{}}, "wamp.subscription.get_events", [{small_sub}]]"#));
    small.expect_error(CALL, 9, "wamp.error.payload_size_exceeded");
    small.send_json(&format!(
        r#"[48, 10, {{}}, "wamp.subscription.get_events", [{small_sub}], {{"limit": 1}}]"#
    ));
    small.expect(RESULT);
    // a topic without a history rule keeps nothing
    let other = reader.subscribe("com.other", "{}");
    assert!(get_events(&mut reader, other, "{}").is_empty());
}

#[test]
fn history_is_kept_and_queried_1_shard() {
    history_is_kept_and_queried(1);
}

#[test]
fn history_is_kept_and_queried_2_shards() {
    history_is_kept_and_queried(2);
}

/// A durable history (`router.history_path`): the kept events survive a
/// restart, also one with another shard count, within the rules' limits.
#[test]
fn a_durable_history_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("switchyard-history-{}-{}", std::process::id(), free_port()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = format!("history_path = \"{}\"{}", dir.display(), history_realm());
    let mut first = Router::start_with(2, &config, "", &[]);
    let mut publisher = on(&first, 1);
    for n in 0..8 {
        publisher.send_json(&format!(
            r#"[16, {}, {{"acknowledge": true, "disclose_me": true}}, "com.h.{}", ["e{n}"]]"#,
            n + 1,
            if n % 2 == 0 { "a" } else { "b" }
        ));
        publisher.expect(PUBLISHED);
    }
    let mut reader = on(&first, 0);
    let sub = reader.subscribe("com.h.", r#"{"match": "prefix"}"#);
    let before = firsts(&get_events(&mut reader, sub, "{}"));
    assert_eq!(before, ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"]);
    drop((publisher, reader));
    assert!(first.stop().success());
    // one shard now: every topic's home moves
    let again = Router::start_with(1, &config, "", &[]);
    let mut reader = on(&again, 0);
    let sub = reader.subscribe("com.h.", r#"{"match": "prefix"}"#);
    let events = get_events(&mut reader, sub, "{}");
    assert_eq!(firsts(&events), before, "the history after the restart");
    assert!(
        events[0].key("details").get("publisher").is_some(),
        "the publisher was kept: {:?}",
        events[0]
    );
    // and it goes on within the limit (5 per topic): 4 + 3 more of com.h.a
    let mut publisher = on(&again, 0);
    let mut other = on(&again, 0);
    let a = other.subscribe("com.h.a", "{}");
    for n in 8..11 {
        publisher.send_json(&format!(r#"[16, {}, {{"acknowledge": true}}, "com.h.a", ["e{n}"]]"#, n + 1));
        publisher.expect(PUBLISHED);
    }
    let mut reader = other;
    assert_eq!(firsts(&get_events(&mut reader, a, "{}")), ["e4", "e6", "e8", "e9", "e10"]);
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An acknowledged PUBLISH is in the history by the time its PUBLISHED
/// arrives, whichever shard is the topic's home: a history read right after
/// it, from a session on another shard, finds it. (The home shard used to
/// get the event and the read over different cross-shard queues, in either
/// order, so the read sometimes missed the newest events.)
#[test]
fn acknowledged_publications_are_in_the_history_at_once_on_2_shards() {
    let r = Router::start_with(2, &history_realm(), "", &[]);
    let mut publisher = r.join_on(1);
    let mut reader = r.join_on(0);
    for t in 0..24 {
        let topic = format!("com.h.race{t}");
        let sub = reader.subscribe(&topic, "{}");
        for n in 0..3 {
            let req = publisher.next_req();
            publisher.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "{topic}", ["{t}-{n}"]]"#));
            publisher.expect(PUBLISHED);
        }
        let events = get_events(&mut reader, sub, "{}");
        assert_eq!(firsts(&events), [format!("{t}-0"), format!("{t}-1"), format!("{t}-2")], "{topic}");
    }
}
