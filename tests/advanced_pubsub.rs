//! Advanced PubSub over real sockets: publisher identification and
//! subscriber black- and whitelisting, on 1 shard and with publisher and
//! subscribers spread over 2 shards. An event that must *not* arrive is
//! shown by a later sentinel event from the same publisher on the same topic.

use crate::advanced_rpc::rejoin;
use crate::common::*;

/// A session on shard `i % shards` (any shard with 1).
fn on(r: &Router, i: usize) -> Client {
    if r.shards == 2 {
        r.join_on(i % 2)
    } else {
        Client::join_ws(r.ws, Ser::Json)
    }
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
