//! Several nodes over NATS (`[cluster]`): a `nats-server` on a loopback
//! port of the test's choosing, and three routers joined to it. An event
//! that must *not* arrive is shown by a later sentinel on the same path.
//!
//! `nats-server` must be on the PATH (the test command installs it).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A `nats-server` on 127.0.0.1, stopped when dropped.
pub struct Nats {
    child: Child,
    pub port: u16,
}

impl Nats {
    pub fn start() -> Nats {
        Nats::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Nats {
        Nats::start_args(port, &[])
    }

    /// With more `nats-server` arguments (its authentication).
    pub fn start_args(port: u16, more: &[&str]) -> Nats {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(more)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (the test command installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nats { child, port }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node of cluster `c1` named `name`, with realms `realm1` and `realm2`.
pub fn node(nats: &Nats, name: &str, shards: usize) -> Router {
    node_at(&nats.url(), name, shards)
}

pub fn node_at(url: &str, name: &str, shards: usize) -> Router {
    node_with(url, name, shards, "")
}

/// [`node_at`] with more router configuration (`realms`, after realm2).
pub fn node_with(url: &str, name: &str, shards: usize, realms: &str) -> Router {
    node_cfg(url, name, shards, "", realms)
}

/// [`node_with`] with more `[cluster]` keys.
pub fn node_cfg(url: &str, name: &str, shards: usize, cluster: &str, realms: &str) -> Router {
    Router::start_with(
        shards,
        &format!("\n[cluster]\nnats_url = \"{url}\"\nname = \"c1\"\nnode = \"{name}\"\nheartbeat_ms = 100\nnode_timeout_ms = 1000\n{cluster}\n\n[[realm]]\nname = \"realm2\"\nmeta_admin_roles = [\"anonymous\"]\n{realms}"),
        "",
        &[],
    )
}

/// Waits until `r`'s metric `name` (shard 0) satisfies `ok`.
pub fn wait_metric(r: &Router, name: &str, ok: impl Fn(i64) -> bool) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = r.metric(name)[0];
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {v}: {}", r.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Publishes `n` numbered events and a sentinel on `topic`, acknowledged.
fn publish_numbered(p: &mut Client, topic: &str, n: u64) {
    for i in 0..n {
        let req = p.next_req();
        p.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "{topic}", [{i}]]"#));
        p.expect(PUBLISHED);
    }
    let req = p.next_req();
    p.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "{topic}", ["sentinel"]]"#));
    p.expect(PUBLISHED);
}

/// Reads EVENTs up to the sentinel: their first arguments.
fn numbers_until_sentinel(s: &mut Client) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        let ev = s.expect(EVENT);
        let a = ev.at(4).at(0);
        if let switchyard::wamp::Value::Str(t) = a {
            assert_eq!(t, "sentinel", "{ev:?}");
            return got;
        }
        got.push(a.u());
    }
}

/// Three nodes (1, 2 and 1 shards); subscribers on B (exact, and a second
/// session) and on C (prefix and wildcard: C gets each event once as a
/// node, each subscription once), the publisher on A: every subscriber
/// gets every event once, in order. A realm2 subscriber of the same topic
/// gets none of them; node A, with no subscriber, receives no publication
/// from the others.
#[test]
fn events_cross_nodes_once_each_in_order() {
    let nats = Nats::start();
    let a = node(&nats, "a", 1);
    let b = node(&nats, "b", 2);
    let c = node(&nats, "c", 1);
    for r in [&a, &b, &c] {
        wait_metric(r, "cluster_nodes", |n| n == 2);
    }
    let mut b1 = Client::join_ws(b.ws, Ser::Json);
    let mut b2 = Client::join_raw(b.rs, Ser::MsgPack);
    let mut c1 = Client::join_ws(c.ws, Ser::Cbor);
    let mut c2 = Client::join_ws(c.ws, Ser::Json);
    let mut other = Client::ws(b.ws, Ser::Json);
    other.login("realm2", ROLES);
    b1.subscribe("com.x.t", "{}");
    b2.subscribe("com.x.t", "{}");
    c1.subscribe("com.x", r#"{"match": "prefix"}"#);
    c2.subscribe("com..t", r#"{"match": "wildcard"}"#);
    other.subscribe("com.x.t", "{}");
    // a's view: b has one entry (one per topic and policy, however many
    // subscribers), c two, and b one in realm2 (not a's concern: a serves
    // realm2 too, so it is known)
    wait_metric(&a, "cluster_remote_interests", |n| n == 4);
    let mut p = Client::join_ws(a.ws, Ser::Json);
    publish_numbered(&mut p, "com.x.t", 50);
    let want: Vec<u64> = (0..50).collect();
    for (name, s) in [("b1", &mut b1), ("b2", &mut b2), ("c1", &mut c1), ("c2", &mut c2)] {
        assert_eq!(numbers_until_sentinel(s), want, "{name}");
    }
    // one frame per node, not per subscriber or subscription
    assert_eq!(a.metric_sum("cluster_events_sent"), 51);
    assert_eq!(b.metric_sum("cluster_events_received"), 51);
    assert_eq!(c.metric_sum("cluster_events_received"), 51);
    // realm2 got nothing: its own sentinel is the first thing it sees
    let mut p2 = Client::ws(a.ws, Ser::Json);
    p2.login("realm2", ROLES);
    p2.send_json(r#"[16, 1, {"acknowledge": true}, "com.x.t", ["sentinel"]]"#);
    p2.expect(PUBLISHED);
    assert_eq!(numbers_until_sentinel(&mut other), Vec::<u64>::new());
    // a publication from b reaches c's subscribers, and none of b's
    // reached a until a subscribed to something b publishes on
    let mut pb = Client::join_ws(b.ws, Ser::Json);
    publish_numbered(&mut pb, "com.x.t", 1);
    assert_eq!(numbers_until_sentinel(&mut c1), vec![0]);
    let mut a1 = Client::join_ws(a.ws, Ser::Json);
    a1.subscribe("com.y", "{}");
    wait_metric(&b, "cluster_remote_interests", |n| n == 3);
    publish_numbered(&mut pb, "com.y", 0);
    assert_eq!(numbers_until_sentinel(&mut a1), Vec::<u64>::new());
    assert_eq!(a.metric_sum("cluster_events_received"), 1, "only the sentinel came from b");
}

/// Publisher disclosure and receiver lists hold across nodes: `eligible`
/// names a session on another node, `exclude_authid` an authid there.
#[test]
fn publisher_and_receiver_lists_cross_nodes() {
    let nats = Nats::start();
    let a = node(&nats, "a", 2);
    let b = node(&nats, "b", 1);
    wait_metric(&a, "cluster_nodes", |n| n == 1);
    let mut alice = Client::ws(b.ws, Ser::Json);
    alice.login("realm1", r#"{"roles": {"subscriber": {}}, "authid": "alice"}"#);
    let mut bob = Client::ws(b.ws, Ser::MsgPack);
    bob.login("realm1", r#"{"roles": {"subscriber": {}}, "authid": "bob"}"#);
    alice.subscribe("com.lists", "{}");
    bob.subscribe("com.lists", "{}");
    wait_metric(&a, "cluster_remote_interests", |n| n == 1);
    let mut p = Client::ws(a.ws, Ser::Json);
    p.login("realm1", r#"{"roles": {"publisher": {}}, "authid": "carol"}"#);
    p.send_json(&format!(
        r#"[16, 1, {{"acknowledge": true, "eligible": [{}], "disclose_me": true}}, "com.lists", ["only alice"]]"#,
        alice.session
    ));
    p.expect(PUBLISHED);
    p.send_json(r#"[16, 2, {"acknowledge": true, "exclude_authid": ["alice"]}, "com.lists", ["only bob"]]"#);
    p.expect(PUBLISHED);
    p.send_json(r#"[16, 3, {"acknowledge": true}, "com.lists", ["sentinel"]]"#);
    p.expect(PUBLISHED);
    let ev = alice.expect(EVENT);
    assert_eq!(ev.at(4).at(0).s(), "only alice");
    assert_eq!(ev.at(3).key("publisher").u(), p.session);
    assert_eq!(ev.at(3).key("publisher_authid").s(), "carol");
    assert_eq!(alice.expect(EVENT).at(4).at(0).s(), "sentinel");
    assert_eq!(bob.expect(EVENT).at(4).at(0).s(), "only bob");
    assert_eq!(bob.expect(EVENT).at(4).at(0).s(), "sentinel");
}

/// Interest follows subscriptions: an unsubscribed node's entry is
/// withdrawn; a node killed with SIGKILL is noticed within
/// `node_timeout_ms` and its interests withdrawn; a restarted node rejoins;
/// nodes that lost NATS rejoin when it is back, tables resynchronised.
#[test]
fn interest_follows_subscriptions_node_loss_and_nats_restarts() {
    let nats = Nats::start();
    let port = nats.port;
    let a = node(&nats, "a", 1);
    let b = node(&nats, "b", 2);
    wait_metric(&a, "cluster_nodes", |n| n == 1);
    let mut s = Client::join_ws(b.ws, Ser::Json);
    let sub = s.subscribe("com.life", "{}");
    wait_metric(&a, "cluster_remote_interests", |n| n == 1);
    s.send_json(&format!("[34, 99, {sub}]"));
    s.expect(35);
    wait_metric(&a, "cluster_remote_interests", |n| n == 0);
    s.subscribe("com.life", "{}");
    wait_metric(&a, "cluster_remote_interests", |n| n == 1);

    // NATS goes away and comes back on the same port: both nodes rejoin
    nats.stop();
    let nats = Nats::start_on(port);
    wait_metric(&a, "cluster_nats_connects", |n| n >= 2);
    wait_metric(&b, "cluster_nats_connects", |n| n >= 2);
    wait_metric(&a, "cluster_nodes", |n| n == 1);
    wait_metric(&a, "cluster_remote_interests", |n| n == 1);
    let mut p = Client::join_ws(a.ws, Ser::Json);
    publish_numbered(&mut p, "com.life", 3);
    assert_eq!(numbers_until_sentinel(&mut s), vec![0, 1, 2]);

    // b killed: a notices, forgets its subscriptions, and tells of its
    // sessions' leave (`s` did not leave: its node died)
    let mut watcher = Client::join_ws(a.ws, Ser::Json);
    watcher.subscribe("wamp.session.on_leave", "{}");
    wait_metric(&b, "cluster_remote_interests", |n| n == 1);
    wait_metric(&a, "cluster_remote_sessions", |n| n == 1);
    unsafe_kill(&b);
    wait_metric(&a, "cluster_nodes", |n| n == 0);
    wait_metric(&a, "cluster_remote_interests", |n| n == 0);
    wait_metric(&a, "cluster_remote_sessions", |n| n == 0);
    let left = watcher.expect(EVENT);
    assert_eq!(left.at(4).at(0).u(), s.session, "{left:?}");
    drop(s);
    drop(b);

    // b again, under the same name
    let b = node(&nats, "b", 1);
    wait_metric(&a, "cluster_nodes", |n| n == 1);
    let mut s = Client::join_ws(b.ws, Ser::Json);
    s.subscribe("com.life", "{}");
    wait_metric(&a, "cluster_remote_interests", |n| n == 1);
    publish_numbered(&mut p, "com.life", 2);
    assert_eq!(numbers_until_sentinel(&mut s), vec![0, 1]);
}

/// SIGKILL, as a crash would.
fn unsafe_kill(r: &Router) {
    let status = Command::new("kill").args(["-KILL", &r.pid().to_string()]).status().expect("kill");
    assert!(status.success());
}

const CALLEE: &str = r#"{"roles": {"caller": {"features": {"call_canceling": true, "progressive_call_results": true}}, "callee": {"features": {"call_canceling": true, "progressive_call_results": true}}}}"#;

/// A session on `r` that announces call canceling and progressive results.
fn rpc_session(r: &Router, ser: Ser) -> Client {
    let mut c = Client::ws(r.ws, ser);
    c.login("realm1", CALLEE);
    c
}

/// Waits until every shard of `r` has `n` registrations in its replica.
fn wait_registrations(r: &Router, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = r.metric("registrations");
        if v.iter().all(|x| *x == n) {
            return;
        }
        assert!(Instant::now() < deadline, "registrations stayed at {v:?}: {}", r.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Registers `procedure` with REGISTER `options`.
fn register_with(c: &mut Client, procedure: &str, options: &str) -> u64 {
    let req = c.next_req();
    c.send_json(&format!(r#"[64, {req}, {options}, "{procedure}"]"#));
    c.expect(REGISTERED).at(2).u()
}

/// A call from a node to a callee on another: RESULT and ERROR come back
/// (across serializers), progressive results in order, a CANCEL (kill)
/// interrupts the callee, a timeout ends the call and interrupts it, a
/// second single registration elsewhere is refused, and a call pending on
/// a node killed with SIGKILL ends with `wamp.error.canceled`.
#[test]
fn calls_cross_nodes() {
    let nats = Nats::start();
    let a = node(&nats, "a", 2);
    let b = node(&nats, "b", 1);
    wait_metric(&a, "cluster_nodes", |n| n == 1);
    wait_metric(&b, "cluster_nodes", |n| n == 1);
    let mut callee = rpc_session(&b, Ser::MsgPack);
    let reg = callee.register("com.rpc.echo");
    wait_registrations(&a, 1);
    let mut caller = rpc_session(&a, Ser::Json);

    // a result, then an error
    caller.send_json(r#"[48, 1, {}, "com.rpc.echo", ["hi", 2], {"k": true}]"#);
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(2).u(), reg, "the callee's own registration ID: {inv:?}");
    assert_eq!(inv.at(4).at(0).s(), "hi");
    callee.send_json(&format!(r#"[70, {}, {{}}, ["back", 3]]"#, inv.at(1).u()));
    let res = caller.expect(RESULT);
    assert_eq!(res.at(1).u(), 1);
    assert_eq!(res.at(3).at(0).s(), "back");
    assert_eq!(res.at(3).at(1).u(), 3);
    caller.send_json(r#"[48, 2, {}, "com.rpc.echo", []]"#);
    let inv = callee.expect(INVOCATION);
    callee.send_json(&format!(r#"[8, 68, {}, {{}}, "com.app.failed", ["no"]]"#, inv.at(1).u()));
    let err = caller.expect(ERROR);
    assert_eq!((err.at(2).u(), err.at(4).s()), (2, "com.app.failed"));

    // progressive results, in order, then the final one
    caller.send_json(r#"[48, 3, {"receive_progress": true}, "com.rpc.echo", []]"#);
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(3).key("receive_progress"), &switchyard::wamp::Value::Bool(true));
    let ireq = inv.at(1).u();
    for i in 0..5 {
        callee.send_json(&format!(r#"[70, {ireq}, {{"progress": true}}, [{i}]]"#));
    }
    callee.send_json(&format!(r#"[70, {ireq}, {{}}, ["done"]]"#));
    for i in 0..5 {
        let r = caller.expect(RESULT);
        assert_eq!(r.at(2).key("progress"), &switchyard::wamp::Value::Bool(true));
        assert_eq!(r.at(3).at(0).u(), i);
    }
    assert_eq!(caller.expect(RESULT).at(3).at(0).s(), "done");

    // CANCEL (kill): the callee is interrupted and its answer ends the call
    caller.send_json(r#"[48, 4, {}, "com.rpc.echo", []]"#);
    let ireq = callee.expect(INVOCATION).at(1).u();
    caller.send_json(r#"[49, 4, {"mode": "kill"}]"#);
    let int = callee.expect(INTERRUPT);
    assert_eq!(int.at(1).u(), ireq);
    callee.send_json(&format!(r#"[8, 68, {ireq}, {{}}, "wamp.error.canceled"]"#));
    let err = caller.expect(ERROR);
    assert_eq!((err.at(2).u(), err.at(4).s()), (4, "wamp.error.canceled"));

    // a timeout: the caller's node ends the call, the callee is interrupted
    caller.send_json(r#"[48, 5, {"timeout": 200}, "com.rpc.echo", []]"#);
    let ireq = callee.expect(INVOCATION).at(1).u();
    let err = caller.expect(ERROR);
    assert_eq!((err.at(2).u(), err.at(4).s()), (5, "wamp.error.timeout"));
    assert_eq!(callee.expect(INTERRUPT).at(1).u(), ireq);

    // caller disclosure: the callee on b is told who called on a
    caller.send_json(r#"[48, 9, {"disclose_me": true}, "com.rpc.echo", []]"#);
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(3).key("caller").u(), caller.session, "{inv:?}");
    assert_eq!(inv.at(3).key("caller_authrole").s(), "anonymous");
    callee.send_json(&format!(r#"[70, {}, {{}}, []]"#, inv.at(1).u()));
    assert_eq!(caller.expect(RESULT).at(1).u(), 9);

    // one single registration cluster-wide
    let mut twin = rpc_session(&a, Ser::Cbor);
    let req = twin.next_req();
    twin.send_json(&format!(r#"[64, {req}, {{}}, "com.rpc.echo"]"#));
    assert_eq!(twin.expect(ERROR).at(4).s(), "wamp.error.procedure_already_exists");

    // b dies with a call pending on it
    caller.send_json(r#"[48, 6, {}, "com.rpc.echo", []]"#);
    callee.expect(INVOCATION);
    unsafe_kill(&b);
    let err = caller.expect(ERROR);
    assert_eq!((err.at(2).u(), err.at(4).s()), (6, "wamp.error.canceled"));
    wait_registrations(&a, 0);
    caller.send_json(r#"[48, 7, {}, "com.rpc.echo", []]"#);
    let err = caller.expect(ERROR);
    assert_eq!((err.at(2).u(), err.at(4).s()), (7, "wamp.error.no_such_procedure"));
}

/// A shared registration with callees on three nodes: round-robin gives
/// each callee its turn in registration order, whichever node calls, and a
/// call its callee answers `unavailable` goes on to a callee on another
/// node; `first` goes to the first callee, then to the next when it
/// leaves; `last` to the last; `random` reaches every node's callee.
#[test]
fn shared_registrations_span_nodes() {
    let nats = Nats::start();
    let nodes = [node(&nats, "a", 1), node(&nats, "b", 2), node(&nats, "c", 1)];
    for r in &nodes {
        wait_metric(r, "cluster_nodes", |n| n == 2);
    }
    let all = [
        ("roundrobin", "com.rr"),
        ("first", "com.first"),
        ("last", "com.last"),
        ("random", "com.random"),
    ];
    for (policy, proc_) in all {
        let mut callees = Vec::new();
        for r in &nodes {
            let mut c = rpc_session(r, Ser::Json);
            register_with(&mut c, proc_, &format!(r#"{{"invoke": "{policy}"}}"#));
            // the next callee registers once every node knows this one
            for o in &nodes {
                let deadline = Instant::now() + Duration::from_secs(15);
                while !knows_callees(o, proc_, callees.len() + 1) {
                    assert!(Instant::now() < deadline, "{proc_} did not reach every node");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            callees.push(c);
        }
        let mut caller = rpc_session(&nodes[1], Ser::MsgPack);
        let calls = if policy == "random" { 60 } else { 6 };
        let picks: Vec<usize> = (0..calls)
            .map(|i| {
                caller.send_json(&format!(r#"[48, {}, {{}}, "{proc_}", [{i}]]"#, 100 + i));
                let (k, inv) = first_invocation(&mut callees);
                callees[k].send_json(&format!(r#"[70, {}, {{}}, []]"#, inv.at(1).u()));
                caller.expect(RESULT);
                k
            })
            .collect();
        match policy {
            "roundrobin" => {
                assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
                // the callee on a answers unavailable: the call goes on to
                // a callee on another node
                caller.send_json(&format!(r#"[48, 300, {{}}, "{proc_}", []]"#));
                let (k, inv) = first_invocation(&mut callees);
                assert_eq!(k, 0);
                callees[0].send_json(&format!(r#"[8, 68, {}, {{}}, "wamp.error.unavailable"]"#, inv.at(1).u()));
                let (k, inv) = first_invocation(&mut callees);
                assert_ne!(k, 0, "rerouted to another callee");
                callees[k].send_json(&format!(r#"[70, {}, {{}}, ["from {k}"]]"#, inv.at(1).u()));
                let result = caller.expect(RESULT);
                assert_eq!(result.at(1).u(), 300);
                assert_eq!(result.at(3).at(0).s(), format!("from {k}"));
            }
            "last" => assert_eq!(picks, vec![2; 6], "the callee on c, registered last"),
            // each callee misses all 60 with odds (2/3)^60, about 3e-11
            "random" => assert!((0..3).all(|k| picks.contains(&k)), "{picks:?}"),
            _ => {
                assert_eq!(picks, vec![0; 6]);
                // the first callee leaves: the next one takes the calls
                callees.remove(0).drop_connection();
                let deadline = Instant::now() + Duration::from_secs(15);
                while !knows_callees(&nodes[1], proc_, 2) {
                    assert!(Instant::now() < deadline, "the callee's leave did not reach b");
                    std::thread::sleep(Duration::from_millis(20));
                }
                caller.send_json(&format!(r#"[48, 200, {{}}, "{proc_}", []]"#));
                let (k, inv) = first_invocation(&mut callees);
                assert_eq!(k, 0, "the callee on b, registered second");
                callees[k].send_json(&format!(r#"[70, {}, {{}}, []]"#, inv.at(1).u()));
                caller.expect(RESULT);
            }
        }
    }
}

/// Whether `r` knows `n` callees of `procedure` (`wamp.registration.lookup`
/// and `list_callees` answer from the replica, remote callees included).
fn knows_callees(r: &Router, procedure: &str, n: usize) -> bool {
    let mut c = Client::join_ws(r.ws, Ser::Json);
    c.send_json(&format!(r#"[48, 1, {{}}, "wamp.registration.lookup", ["{procedure}"]]"#));
    let m = c.expect(RESULT);
    let switchyard::wamp::Value::UInt(id) = *m.at(3).at(0) else {
        return n == 0;
    };
    c.send_json(&format!(r#"[48, 2, {{}}, "wamp.registration.count_callees", [{id}]]"#));
    c.expect(RESULT).at(3).at(0).u() as usize == n
}

/// The first INVOCATION any of `callees` gets: which one, and the message.
fn first_invocation(callees: &mut [Client]) -> (usize, switchyard::wamp::Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (k, c) in callees.iter_mut().enumerate() {
            if c.readable_within(Duration::from_millis(5)) {
                return (k, c.expect(INVOCATION));
            }
        }
        assert!(Instant::now() < deadline, "no callee got the call");
    }
}

/// The session meta API spans nodes: `wamp.session.count`, `list` and
/// `get` on one node see the sessions of every node, `kill` closes a
/// session on another node, and `on_join` reaches a subscriber elsewhere.
#[test]
fn session_meta_spans_nodes() {
    let nats = Nats::start();
    let a = node(&nats, "a", 2);
    let b = node(&nats, "b", 1);
    wait_metric(&a, "cluster_nodes", |n| n == 1);
    wait_metric(&b, "cluster_nodes", |n| n == 1);
    let mut asker = Client::join_ws(a.ws, Ser::Json);
    let _on_a = Client::join_raw(a.rs, Ser::MsgPack);
    let on_b: Vec<Client> = (0..3).map(|_| Client::join_ws(b.ws, Ser::Cbor)).collect();
    let mut alice = Client::ws(b.ws, Ser::Json);
    alice.login("realm1", r#"{"roles": {"subscriber": {}}, "authid": "alice"}"#);
    // 2 on a, 4 on b (the answer may come before b's shard count reached
    // every shard of a: asked again until it is complete)
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut req = 0;
    loop {
        req += 1;
        asker.send_json(&format!(r#"[48, {req}, {{}}, "wamp.session.count", []]"#));
        let n = asker.expect(RESULT).at(3).at(0).u();
        if n == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "wamp.session.count stayed at {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
    asker.send_json(r#"[48, 1000, {}, "wamp.session.list", []]"#);
    let list = asker.expect(RESULT);
    let switchyard::wamp::Value::List(ids) = list.at(3).at(0) else {
        panic!("{list:?}")
    };
    let ids: Vec<u64> = ids.iter().map(|v| v.u()).collect();
    for c in on_b.iter().chain([&alice]) {
        assert!(ids.contains(&c.session), "{} missing from {ids:?}", c.session);
    }
    asker.send_json(&format!(r#"[48, 1001, {{}}, "wamp.session.get", [{}]]"#, alice.session));
    let got = asker.expect(RESULT);
    assert_eq!(got.at(3).at(0).key("authid").s(), "alice");
    assert_eq!(got.at(3).at(0).key("session").u(), alice.session);

    // on_join: a subscriber on b hears of a session joining on a
    let mut watcher = Client::join_ws(b.ws, Ser::Json);
    watcher.subscribe("wamp.session.on_join", "{}");
    wait_metric(&a, "cluster_remote_interests", |n| n == 1);
    let newcomer = Client::join_ws(a.ws, Ser::MsgPack);
    let ev = watcher.expect(EVENT);
    assert_eq!(ev.at(4).at(0).key("session").u(), newcomer.session);

    // kill on another node (realm2 lets anonymous sessions kill): the
    // session there gets GOODBYE
    let mut admin = Client::ws(a.ws, Ser::Json);
    admin.login("realm2", ROLES);
    let mut victim = Client::ws(b.ws, Ser::MsgPack);
    victim.login("realm2", ROLES);
    drop(on_b);
    admin.send_json(&format!(r#"[48, 1, {{}}, "wamp.session.kill", [{}]]"#, victim.session));
    admin.expect(RESULT);
    let bye = victim.expect(GOODBYE);
    assert_eq!(bye.at(2).s(), "wamp.close.killed");
}

const STREAMING: &str = r#"{"roles": {"caller": {"features": {"progressive_call_invocations": true, "payload_passthru_mode": true}}, "callee": {"features": {"call_canceling": true, "progressive_call_invocations": true, "progressive_call_results": true, "payload_passthru_mode": true}}}}"#;

/// Progressive call invocations and payload passthru across nodes: every
/// chunk reaches the callee on the other node in order under the first
/// INVOCATION's request ID; passthru attributes and an opaque payload
/// travel both ways unchanged.
#[test]
fn streams_and_passthru_cross_nodes() {
    let nats = Nats::start();
    let a = node(&nats, "a", 1);
    let b = node(&nats, "b", 2);
    wait_metric(&a, "cluster_nodes", |n| n == 1);
    let mut callee = Client::ws(b.ws, Ser::MsgPack);
    callee.login("realm1", STREAMING);
    callee.register("com.upload");
    wait_registrations(&a, 1);
    let mut caller = Client::ws(a.ws, Ser::Json);
    caller.login("realm1", STREAMING);
    caller.send_json(r#"[48, 1, {"progress": true}, "com.upload", [0]]"#);
    let first = callee.expect(INVOCATION);
    assert_eq!(first.at(3).key("progress"), &switchyard::wamp::Value::Bool(true));
    let id = first.at(1).u();
    for i in 1..=20u64 {
        caller.send_json(&format!(r#"[48, 1, {{"progress": true}}, "com.upload", [{i}]]"#));
    }
    caller.send_json(r#"[48, 1, {}, "com.upload", ["last"]]"#);
    for i in 1..=20u64 {
        let inv = callee.expect(INVOCATION);
        assert_eq!((inv.at(1).u(), inv.at(4).at(0).u()), (id, i), "in order, one call");
    }
    let last = callee.expect(INVOCATION);
    assert!(last.at(3).get("progress").is_none(), "the final chunk: {last:?}");
    callee.send_json(&format!(r#"[70, {id}, {{}}, [20]]"#));
    assert_eq!(caller.expect(RESULT).at(3).at(0).u(), 20);

    // passthru: the attributes and an opaque (binary) payload, both ways
    caller.send_json(r#"[48, 2, {"ppt_scheme": "x_test", "ppt_keyid": "k1"}, "com.upload", "\u0000AAEC/w=="]"#);
    let inv = callee.expect(INVOCATION);
    assert_eq!(inv.at(3).key("ppt_scheme").s(), "x_test");
    assert_eq!(inv.at(3).key("ppt_keyid").s(), "k1");
    assert_eq!(inv.at(4), &switchyard::wamp::Value::Bytes(vec![0, 1, 2, 255]), "{inv:?}");
    callee.send(&switchyard::wamp::Value::List(vec![
        switchyard::wamp::Value::UInt(70),
        switchyard::wamp::Value::UInt(inv.at(1).u()),
        switchyard::wamp::Value::Dict(switchyard::wamp::Dict::new().with("ppt_scheme", switchyard::wamp::Value::Str("x_test".into()))),
        switchyard::wamp::Value::Bytes(vec![9, 8]),
    ]));
    let res = caller.expect(RESULT);
    assert_eq!(res.at(2).key("ppt_scheme").s(), "x_test");
    assert_eq!(res.at(3), &switchyard::wamp::Value::Bytes(vec![9, 8]), "{res:?}");
    // a plain call after them is not taken for passthru
    caller.send_json(r#"[48, 3, {}, "com.upload", ["plain"]]"#);
    let inv = callee.expect(INVOCATION);
    assert!(inv.at(3).get("ppt_scheme").is_none(), "{inv:?}");
}

/// realm1 keeping the history of `com.h.*` (5 per topic).
fn history_realm() -> String {
    format!(
        "[[realm]]\nname = \"realm1\"\n[[realm.history]]\nuri = \"com.h.\"\nmatch = \"prefix\"\nlimit = 5\n{}",
        test_principals()
    )
}

/// `wamp.subscription.get_events` for `sub`: the events' first arguments.
fn history_of(c: &mut Client, sub: u64) -> Vec<String> {
    let req = c.next_req();
    c.send_json(&format!(r#"[48, {req}, {{}}, "wamp.subscription.get_events", [{sub}]]"#));
    // no EVENT comes first: a copy sent to a joining node is kept, not delivered
    let m = c.recv_msg();
    assert_eq!(m.code(), RESULT, "{m:?}");
    let switchyard::wamp::Value::List(events) = m.at(3).at(0) else {
        panic!("not a list of events: {m:?}")
    };
    events.iter().map(|e| e.key("args").at(0).s().to_owned()).collect()
}

/// Polls `sub`'s history until it holds `want` events (a copy from another
/// node arrives some time after its PUBLISHED).
fn history_until(c: &mut Client, sub: u64, want: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = history_of(c, sub);
        if got.len() >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first argument of the retained event a new `get_retained`
/// subscription of `c` to `topic` gets (a live sentinel from `p` follows).
fn retained_of(c: &mut Client, p: &mut Client, topic: &str) -> String {
    c.subscribe(topic, r#"{"get_retained": true}"#);
    let req = p.next_req();
    p.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "{topic}.after", ["sentinel"]]"#));
    p.expect(PUBLISHED);
    let ev = c.expect(EVENT);
    assert_eq!(ev.at(3).key("retained"), &switchyard::wamp::Value::Bool(true), "{ev:?}");
    ev.at(4).at(0).s().to_owned()
}

/// Retained events and history are kept on every node: a node that did not
/// publish them serves them, after the publisher's node is SIGKILLed too,
/// and a node restarted empty gets a copy from the others, each event once.
#[test]
fn kept_events_outlive_their_node() {
    let nats = Nats::start();
    let realms = history_realm();
    let a = node_with(&nats.url(), "a", 1, &realms);
    let b = node_with(&nats.url(), "b", 2, &realms);
    wait_metric(&a, "cluster_nodes", |n| n == 1);
    wait_metric(&b, "cluster_nodes", |n| n == 1);
    let mut live = Client::join_ws(b.ws, Ser::Json);
    let sub = live.subscribe("com.h.t", "{}");
    wait_metric(&a, "cluster_remote_interests", |n| n == 1);
    let mut p = Client::join_ws(a.ws, Ser::MsgPack);
    for e in ["e0", "e1", "e2"] {
        let req = p.next_req();
        p.send_json(&format!(
            r#"[16, {req}, {{"acknowledge": true, "retain": true}}, "com.h.t", ["{e}"]]"#
        ));
        p.expect(PUBLISHED);
    }
    // live once each, and kept on b too
    for e in ["e0", "e1", "e2"] {
        assert_eq!(live.expect(EVENT).at(4).at(0).s(), e);
    }
    assert_eq!(history_until(&mut live, sub, 3), ["e0", "e1", "e2"]);
    let mut sentinel = Client::join_ws(b.ws, Ser::Json);
    assert_eq!(retained_of(&mut Client::join_ws(b.ws, Ser::Json), &mut sentinel, "com.h.t"), "e2");

    // the publisher's node dies: b still has them
    unsafe_kill(&a);
    drop(p);
    drop(a);
    wait_metric(&b, "cluster_nodes", |n| n == 0);
    assert_eq!(
        retained_of(&mut Client::join_ws(b.ws, Ser::MsgPack), &mut sentinel, "com.h.t"),
        "e2"
    );
    assert_eq!(history_of(&mut live, sub), ["e0", "e1", "e2"]);

    // a, restarted with nothing, gets b's copy
    let a = node_with(&nats.url(), "a", 1, &realms);
    wait_metric(&a, "cluster_nodes", |n| n == 1);
    let mut reader = Client::join_ws(a.ws, Ser::Json);
    let there = reader.subscribe("com.h.t", "{}");
    assert_eq!(history_until(&mut reader, there, 3), ["e0", "e1", "e2"]);
    let mut sentinel_a = Client::join_ws(a.ws, Ser::Json);
    assert_eq!(retained_of(&mut Client::join_ws(a.ws, Ser::Json), &mut sentinel_a, "com.h.t"), "e2");

    // a new event is kept on both, once each
    let req = sentinel_a.next_req();
    sentinel_a.send_json(&format!(
        r#"[16, {req}, {{"acknowledge": true, "retain": true}}, "com.h.t", ["e3"]]"#
    ));
    sentinel_a.expect(PUBLISHED);
    assert_eq!(live.expect(EVENT).at(4).at(0).s(), "e3");
    assert_eq!(history_until(&mut live, sub, 4), ["e0", "e1", "e2", "e3"]);
    assert_eq!(reader.expect(EVENT).at(4).at(0).s(), "e3");
    assert_eq!(history_of(&mut reader, there), ["e0", "e1", "e2", "e3"]);
}

/// CALLs `procedure` with JSON `args`; its RESULT's first argument, or the
/// ERROR's URI.
fn meta_call(c: &mut Client, procedure: &str, args: &str) -> Result<switchyard::wamp::Value, String> {
    let req = c.next_req();
    c.send_json(&format!(r#"[48, {req}, {{}}, "{procedure}", {args}]"#));
    let m = c.recv_msg();
    match m.code() {
        RESULT if m.len() < 4 => Ok(switchyard::wamp::Value::Null),
        RESULT => Ok(m.at(3).at(0).clone()),
        ERROR => Err(m.at(4).s().to_owned()),
        _ => panic!("{procedure}: {m:?}"),
    }
}

fn id_set(v: &switchyard::wamp::Value) -> Vec<u64> {
    let switchyard::wamp::Value::List(l) = v else {
        panic!("not a list: {v:?}")
    };
    let mut ids: Vec<u64> = l.iter().map(|x| x.u()).collect();
    ids.sort_unstable();
    ids
}

/// The subscription meta API spans nodes: an entry only another node has
/// is found (by lookup, match, list, get) under that node's ID, one this
/// node has under its own; subscribers are listed and counted on every
/// node, by any node's ID; a subscriber on another node can be removed.
#[test]
fn subscription_meta_spans_nodes() {
    let nats = Nats::start();
    let a = node(&nats, "a", 2);
    let b = node(&nats, "b", 1);
    wait_metric(&a, "cluster_nodes", |n| n == 1);
    wait_metric(&b, "cluster_nodes", |n| n == 1);
    let mut s1 = Client::join_ws(b.ws, Ser::Json);
    let mut s2 = Client::join_raw(b.rs, Ser::MsgPack);
    let mut s3 = Client::join_ws(a.ws, Ser::Cbor);
    let mut s4 = Client::join_ws(a.ws, Ser::Json);
    let on_b = s1.subscribe("com.m.x", "{}");
    assert_eq!(s2.subscribe("com.m.x", "{}"), on_b);
    let prefix_a = s3.subscribe("com.m.", r#"{"match": "prefix"}"#);
    let on_a = s4.subscribe("com.m.x", "{}");
    assert_ne!(on_a, on_b, "each node names its own entries");
    wait_metric(&a, "cluster_remote_interests", |n| n == 1);
    wait_metric(&b, "cluster_remote_interests", |n| n == 2);
    let mut ask_a = Client::join_ws(a.ws, Ser::Json);
    let mut ask_b = Client::join_ws(b.ws, Ser::MsgPack);

    // found: this node's own ID where it has the entry, else the other's
    assert_eq!(
        meta_call(&mut ask_a, "wamp.subscription.lookup", r#"["com.m.x"]"#).unwrap().u(),
        on_a
    );
    assert_eq!(
        meta_call(&mut ask_b, "wamp.subscription.lookup", r#"["com.m.x"]"#).unwrap().u(),
        on_b
    );
    let found = meta_call(&mut ask_b, "wamp.subscription.lookup", r#"["com.m.", {"match": "prefix"}]"#);
    assert_eq!(found.unwrap().u(), prefix_a);
    let matched = meta_call(&mut ask_b, "wamp.subscription.match", r#"["com.m.x"]"#).unwrap();
    let mut want = vec![on_b, prefix_a];
    want.sort_unstable();
    assert_eq!(id_set(&matched), want);
    let list = meta_call(&mut ask_b, "wamp.subscription.list", "[]").unwrap();
    assert_eq!(id_set(list.key("exact")), [on_b]);
    assert_eq!(id_set(list.key("prefix")), [prefix_a]);
    let got = meta_call(&mut ask_b, "wamp.subscription.get", &format!("[{prefix_a}]")).unwrap();
    assert_eq!(got.key("id").u(), prefix_a);
    assert_eq!(got.key("uri").s(), "com.m.");
    assert_eq!(got.key("match").s(), "prefix");
    assert!(got.key("created").s().ends_with('Z'), "{got:?}");

    // subscribers of every node, by either node's ID
    let mut all = vec![s1.session, s2.session, s4.session];
    all.sort_unstable();
    for (on, id) in [('a', on_b), ('a', on_a), ('b', on_a)] {
        let asker = if on == 'a' { &mut ask_a } else { &mut ask_b };
        let l = meta_call(asker, "wamp.subscription.list_subscribers", &format!("[{id}]")).unwrap();
        assert_eq!(id_set(&l), all, "list_subscribers({id})");
        let n = meta_call(asker, "wamp.subscription.count_subscribers", &format!("[{id}]")).unwrap();
        assert_eq!(n.u(), 3, "count_subscribers({id})");
    }
    let l = meta_call(&mut ask_b, "wamp.subscription.list_subscribers", &format!("[{prefix_a}]")).unwrap();
    assert_eq!(id_set(&l), [s3.session]);
    assert_eq!(
        meta_call(&mut ask_a, "wamp.subscription.get", "[12345]"),
        Err("wamp.error.no_such_subscription".into())
    );

    // remove_subscriber from a, of a subscriber on b (realm2 lets
    // anonymous sessions administer): it gets no more events, as a later
    // sentinel shows
    let mut admin = Client::ws(a.ws, Ser::Json);
    admin.login("realm2", ROLES);
    let mut victim = Client::ws(b.ws, Ser::Json);
    victim.login("realm2", ROLES);
    let gone = victim.subscribe("com.r.y", "{}");
    let stays = victim.subscribe("com.r.z", "{}");
    wait_metric(&a, "cluster_remote_interests", |n| n == 3);
    let args = format!("[{gone}, {}]", victim.session);
    assert!(meta_call(&mut admin, "wamp.subscription.remove_subscriber", &args).is_ok());
    assert_eq!(
        meta_call(&mut admin, "wamp.subscription.remove_subscriber", &args),
        Err("wamp.error.no_such_subscription".into()),
        "removed once"
    );
    let mut p = Client::ws(b.ws, Ser::Json);
    p.login("realm2", ROLES);
    for topic in ["com.r.y", "com.r.z"] {
        let req = p.next_req();
        p.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "{topic}", []]"#));
        p.expect(PUBLISHED);
    }
    assert_eq!(victim.expect(EVENT).at(1).u(), stays);
    drop((s1, s2, s3, s4));
}

/// NATS credentials from `[cluster]`: nodes with the right user and
/// password (or token) join and carry events; one with a wrong password is
/// refused by NATS (its log says so) and never joins the others.
#[test]
fn nats_credentials_are_used() {
    for (args, good, bad) in [
        (
            ["--user", "sy", "--pass", "s3cret"],
            "user = \"sy\"\npassword = \"s3cret\"",
            "user = \"sy\"\npassword = \"wrong\"",
        ),
        (["--auth", "t0ken", "--auth", "t0ken"], "token = \"t0ken\"", "token = \"other\""),
    ] {
        // (`--auth` given twice keeps the arrays the same length)
        let nats = Nats::start_args(free_port(), &args[..if args[0] == "--auth" { 2 } else { 4 }]);
        let a = node_cfg(&nats.url(), "a", 1, good, "");
        let b = node_cfg(&nats.url(), "b", 2, good, "");
        let intruder = node_cfg(&nats.url(), "x", 1, bad, "");
        wait_metric(&a, "cluster_nodes", |n| n == 1);
        wait_metric(&b, "cluster_nodes", |n| n == 1);
        let mut s = Client::join_ws(b.ws, Ser::Json);
        s.subscribe("com.auth", "{}");
        wait_metric(&a, "cluster_remote_interests", |n| n == 1);
        let mut p = Client::join_ws(a.ws, Ser::Json);
        publish_numbered(&mut p, "com.auth", 2);
        assert_eq!(numbers_until_sentinel(&mut s), vec![0, 1]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !intruder.log().contains("authorization violation") {
            assert!(Instant::now() < deadline, "no refusal in the log: {}", intruder.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(intruder.metric("cluster_nats_connects")[0], 0, "{}", intruder.log());
        assert_eq!(a.metric("cluster_nodes")[0], 1, "a knows b only");
    }
}

/// `cluster.max_remote_interests` bounds what a node keeps of the others
/// (subscription entries, callees and sessions together), both as changes
/// come and when a whole set comes again after NATS restarts; what does
/// not fit is counted in `cluster_interests_refused`.
#[test]
fn remote_interests_are_bounded() {
    let nats = Nats::start();
    let port = nats.port;
    let a = node_cfg(&nats.url(), "a", 1, "max_remote_interests = 3", "");
    let b = node(&nats, "b", 2);
    wait_metric(&a, "cluster_nodes", |n| n == 1);
    // one session and five subscription entries: six, three kept
    let mut s = Client::join_ws(b.ws, Ser::Json);
    for k in 0..5 {
        s.subscribe(&format!("com.bound.t{k}"), "{}");
    }
    wait_metric(&a, "cluster_interests_refused", |n| n >= 3);
    let kept = |r: &Router| r.metric("cluster_remote_interests")[0] + r.metric("cluster_remote_sessions")[0];
    assert_eq!(kept(&a), 3, "{}", a.log());

    // the whole set again, after NATS comes back: still three
    nats.stop();
    let _nats = Nats::start_on(port);
    wait_metric(&a, "cluster_nats_connects", |n| n >= 2);
    wait_metric(&a, "cluster_interests_refused", |n| n >= 6);
    wait_metric(&a, "cluster_nodes", |n| n == 1);
    // (the refusals are counted as the set arrives, before it is applied)
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let k = kept(&a);
        assert!(k <= 3, "{k} kept: {}", a.log());
        if k == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{k} kept: {}", a.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s);
}
