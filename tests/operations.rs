//! Operating a running router: live reconfiguration (SIGHUP and
//! `switchyard.router.reload`), readiness for systemd, structured logs.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use switchyard::wamp::Value;

use crate::common::*;

const APP_REALM: &str = r#"
[[realm]]
name = "app"
anonymous_role = "user"
[[realm.role]]
name = "user"
[[realm.role.permission]]
uri = "com.app."
match = "prefix"
allow = ["call", "publish", "subscribe"]
"#;

fn list(v: &Value) -> &[Value] {
    match v {
        Value::List(l) => l,
        _ => panic!("not a list: {v:?}"),
    }
}

fn hello_aborted(c: &mut Client, realm: &str, reason: &str) {
    c.send_json(&format!(r#"[1, "{realm}", {ROLES}]"#));
    let m = c.expect(3);
    assert_eq!(m.at(2).s(), reason, "{m:?}");
}

fn join(r: &Router, realm: &str) -> Client {
    let mut c = Client::ws(r.ws, Ser::Json);
    c.login(realm, ROLES);
    c
}

/// A realm added by a reload takes sessions; one removed closes its
/// sessions with GOODBYE `wamp.close.close_realm`; sessions of the realms
/// that stay are untouched throughout.
fn realms_come_and_go(shards: usize) {
    let r = Router::start(shards);
    let original = r.config_text();
    let mut stays = join(&r, "realm1");
    let mut c = Client::ws(r.ws, Ser::Json);
    hello_aborted(&mut c, "app", "wamp.error.no_such_realm");

    assert!(r.reload(&format!("{original}\n{APP_REALM}")), "{}", r.log());
    // every shard has the new realm: joins land on any of them
    let mut members: Vec<Client> = (0..4).map(|_| join(&r, "app")).collect();
    stays.sync();
    // a retained event in it (on whichever shard is the topic's home)
    for (i, m) in members.iter_mut().enumerate() {
        let req = m.next_req();
        m.send_json(&format!(
            r#"[16, {req}, {{"acknowledge": true, "retain": true}}, "com.app.state{i}", ["old"]]"#
        ));
        m.expect(PUBLISHED);
    }

    assert!(r.reload(&original), "{}", r.log());
    for m in &mut members {
        let bye = m.expect(GOODBYE);
        assert_eq!(bye.at(2).s(), "wamp.close.close_realm", "{bye:?}");
        assert!(
            bye.at(1).get("message").map(|v| v.s().contains("'app'")).unwrap_or(false),
            "{bye:?}"
        );
        m.send_json(r#"[6, {}, "wamp.close.goodbye_and_out"]"#);
    }
    let mut c = Client::ws(r.ws, Ser::Json);
    hello_aborted(&mut c, "app", "wamp.error.no_such_realm");
    stays.sync();
    assert!(r.log().contains("sessions_closed=4"), "{}", r.log());
    // added again, the realm starts empty: no retained event, the first
    // event a get_retained subscriber sees is a new one
    assert!(r.reload(&format!("{original}\n{APP_REALM}")), "{}", r.log());
    let mut sub = join(&r, "app");
    let mut publisher = join(&r, "app");
    for i in 0..4 {
        sub.subscribe(&format!("com.app.state{i}"), r#"{"get_retained": true}"#);
    }
    let req = publisher.next_req();
    publisher.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "com.app.state0", ["new"]]"#));
    publisher.expect(PUBLISHED);
    assert_eq!(sub.expect(EVENT).at(4), &crate::common::parse_json(r#"["new"]"#));
    assert_eq!(r.metric_sum("retained_events"), 0);
}

/// Changed roles apply to existing sessions' next actions.
fn changed_roles_apply_to_existing_sessions(shards: usize) {
    let r = Router::start_with(shards, APP_REALM, "", &[]);
    let original = r.config_text();
    let mut c = join(&r, "app");
    let publish = |c: &mut Client| {
        let req = c.next_req();
        c.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "com.app.news", ["x"]]"#));
        req
    };
    let req = publish(&mut c);
    assert_eq!(c.expect(PUBLISHED).at(1).u(), req);

    let denied = original.replace(r#"allow = ["call", "publish", "subscribe"]"#, r#"allow = ["call", "subscribe"]"#);
    assert_ne!(denied, original);
    assert!(r.reload(&denied), "{}", r.log());
    let req = publish(&mut c);
    c.expect_error(16, req, "wamp.error.not_authorized");

    assert!(r.reload(&original), "{}", r.log());
    let req = publish(&mut c);
    assert_eq!(c.expect(PUBLISHED).at(1).u(), req);
}

/// A configuration that does not parse or validate is refused with the key
/// and the problem, and the running one stays.
fn a_bad_configuration_is_refused(shards: usize) {
    let r = Router::start_with(shards, APP_REALM, "", &[]);
    let original = r.config_text();
    let mut c = join(&r, "app");

    assert!(!r.reload(&original.replace("[router]", "[router]\nshardz = 2")));
    assert!(r.log().contains("shardz"), "{}", r.log());
    assert!(!r.reload(&original.replace("name = \"app\"", "name = \"not a uri!\"")));
    assert!(r.log().contains("name") && r.log().contains("not a valid WAMP URI"), "{}", r.log());
    assert!(!r.reload(&format!("{original}\n[[realm]]\nname = \"app\"\n")));
    assert!(r.log().contains("defined twice"), "{}", r.log());

    // still the old configuration: app is there, with its roles
    let req = c.next_req();
    c.send_json(&format!(r#"[48, {req}, {{}}, "com.app.nobody"]"#));
    c.expect_error(48, req, "wamp.error.no_such_procedure");
    let req = c.next_req();
    c.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "com.app.news", []]"#));
    assert_eq!(c.expect(PUBLISHED).at(1).u(), req);
    let mut other = join(&r, "app");
    let req = other.next_req();
    other.send_json(&format!(r#"[48, {req}, {{}}, "com.app.nobody"]"#));
    other.expect_error(48, req, "wamp.error.no_such_procedure");
}

/// `switchyard.router.reload`: for `meta_admin_roles` only; answers what
/// changed, or ERROR `switchyard.error.bad_config` naming the key.
fn reload_by_meta_procedure(shards: usize) {
    let admin_realm = "[[realm]]\nname = \"realm1\"\nmeta_admin_roles = [\"anonymous\"]\n[[realm]]\nname = \"plain\"\n";
    let r = Router::start_with(shards, admin_realm, "", &[]);
    let original = r.config_text();
    let mut admin = join(&r, "realm1");
    let mut plain = join(&r, "plain");
    let call = |c: &mut Client| {
        let req = c.next_req();
        c.send_json(&format!(r#"[48, {req}, {{}}, "switchyard.router.reload"]"#));
        req
    };

    let req = call(&mut plain);
    plain.expect_error(48, req, "wamp.error.not_authorized");

    std::fs::write(r.config_path(), format!("{original}\n[[realm]]\nname = \"added\"\n")).expect("write");
    let req = call(&mut admin);
    let res = admin.expect(RESULT);
    assert_eq!(res.at(1).u(), req);
    let summary = res.at(3).at(0);
    let added: Vec<&str> = list(summary.key("added")).iter().map(|v| v.s()).collect();
    assert_eq!(added, ["added"], "{res:?}");
    assert_eq!(list(summary.key("removed")).len(), 0, "{res:?}");
    join(&r, "added").sync();

    std::fs::write(r.config_path(), original.replace("[router]", "[router]\nmesh_batch = 0")).expect("write");
    let req = call(&mut admin);
    let err = admin.expect_error(48, req, "switchyard.error.bad_config");
    assert!(err.at(5).at(0).s().contains("router.mesh_batch"), "{err:?}");

    // a client may not take the router's procedures
    let req = admin.next_req();
    admin.send_json(&format!(r#"[64, {req}, {{}}, "switchyard.router.reload"]"#));
    admin.expect_error(64, req, "wamp.error.invalid_uri");
}

/// Under systemd (`NOTIFY_SOCKET`): READY=1 once serving, RELOADING=1 then
/// READY=1 around a reload, STOPPING=1 at shutdown.
fn tells_systemd_its_state(shards: usize) {
    let dir = std::env::temp_dir().join(format!("switchyard-notify-{}-{shards}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut r = Router::start_with(shards, "", "", &[("NOTIFY_SOCKET", path.to_str().expect("path"))]);
    let next = || {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.contains("STATUS=serving"), "{ready}");
    assert!(r.reload(&r.config_text()));
    let reloading = next();
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading}");
    let ready = next();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.contains("STATUS=configuration reloaded"), "{ready}");
    // a refused reload: ready again, with the reason as the status
    let good = r.config_text();
    assert!(!r.reload(&good.replace("[router]", "[router]\nshardz = 1")));
    assert!(next().lines().any(|l| l == "RELOADING=1"));
    let refused = next();
    assert!(refused.lines().any(|l| l == "READY=1"), "{refused}");
    assert!(
        refused.contains("STATUS=configuration reload refused") && refused.contains("shardz"),
        "{refused}"
    );
    assert!(r.stop().success());
    assert_eq!(next().trim(), "STOPPING=1");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `log_format = "json"`: every line one JSON object; a session's events
/// name it, its realm and the shard.
fn json_logs(shards: usize) {
    let mut r = Router::start_with(shards, "log_format = \"json\"\nlog = \"switchyard=debug\"", "", &[]);
    let mut c = join(&r, "realm1");
    c.sync();
    let sid = c.session;
    c.send_json(r#"[6, {}, "wamp.close.normal"]"#);
    c.expect(GOODBYE);
    // the leave is logged once the router has handled the GOODBYE
    let deadline = Instant::now() + Duration::from_secs(10);
    while !r.log().contains("session left") {
        assert!(Instant::now() < deadline, "{}", r.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(r.stop().success());
    let log = r.log();
    let mut joined = None;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v = parse_json(line);
        assert!(v.get("timestamp").is_some() && v.get("level").is_some(), "{line}");
        let fields = v.get("fields").unwrap_or_else(|| panic!("no fields: {line}"));
        let message = fields.get("message").map(|m| m.s()).unwrap_or_default();
        if message == "session joined" {
            joined = Some(v.clone());
        }
    }
    let joined = joined.unwrap_or_else(|| panic!("no 'session joined' line: {log}"));
    let fields = joined.get("fields").expect("fields");
    assert_eq!(fields.get("session").expect("session").u(), sid, "{joined:?}");
    assert_eq!(fields.get("realm").expect("realm").s(), "realm1", "{joined:?}");
    let spans = list(joined.key("spans"));
    let shard = spans[0].get("shard").expect("shard").u();
    assert!(shard < shards as u64, "{joined:?}");
}

/// Checks Prometheus text exposition: every sample's family has `# HELP`
/// and `# TYPE` before it, histogram buckets grow to `+Inf` = `_count`.
/// Returns (series with labels, value).
fn exposition(text: &str) -> Vec<(String, f64)> {
    let mut helped = std::collections::HashSet::new();
    let mut typed = std::collections::HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(!help.trim().is_empty(), "empty HELP: {line}");
            assert!(helped.insert(name.to_owned()), "HELP twice: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            typed.insert(name.to_owned(), kind.to_owned());
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
            let name = series.split('{').next().unwrap_or(series);
            let family = typed
                .keys()
                .find(|f| {
                    name == f.as_str()
                        || (typed[f.as_str()] == "histogram" && ["_bucket", "_sum", "_count"].iter().any(|s| name == format!("{f}{s}")))
                })
                .unwrap_or_else(|| panic!("sample of an undeclared family: {line}"));
            assert!(name.starts_with("switchyard_"), "{family}: {line}");
            samples.push((series.to_owned(), value));
        }
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no series {series}"))
}

/// `/metrics`: HELP and TYPE for every family, per shard and summed; the
/// dealer's sampled call latency histogram; messages per realm and type.
fn metrics_are_described_and_summed(shards: usize) {
    let r = Router::start(shards);
    let mut callee = join(&r, "realm1");
    callee.register("com.test.echo");
    let mut caller = join(&r, "realm1");
    let calls = 64;
    for _ in 0..calls {
        let req = caller.next_req();
        caller.send_json(&format!(r#"[48, {req}, {{}}, "com.test.echo", [1]]"#));
        let inv = callee.expect(68);
        callee.send_json(&format!(r#"[70, {}, {{}}, [1]]"#, inv.at(1).u()));
        assert_eq!(caller.expect(RESULT).at(1).u(), req);
    }
    for _ in 0..5 {
        let req = caller.next_req();
        caller.send_json(&format!(r#"[16, {req}, {{"acknowledge": true}}, "com.test.news", []]"#));
        caller.expect(PUBLISHED);
    }
    let samples = exposition(&r.metrics_text());
    // per shard and summed
    let per_shard: f64 = (0..shards)
        .map(|i| sample(&samples, &format!("switchyard_calls{{shard=\"{i}\"}}")))
        .sum();
    assert_eq!(per_shard, calls as f64);
    assert_eq!(sample(&samples, "switchyard_router_calls"), calls as f64);
    // one call in 16 is timed (the caller's shard counts them all)
    let timed = sample(&samples, "switchyard_router_call_duration_seconds_count");
    assert_eq!(timed, (calls / 16) as f64, "{samples:?}");
    assert_eq!(
        sample(&samples, "switchyard_router_call_duration_seconds_bucket{le=\"+Inf\"}"),
        timed
    );
    let mut last = 0.0;
    for (s, v) in samples
        .iter()
        .filter(|(s, _)| s.starts_with("switchyard_router_call_duration_seconds_bucket"))
    {
        assert!(*v >= last, "buckets shrink at {s}");
        last = *v;
    }
    assert!(sample(&samples, "switchyard_router_call_duration_seconds_sum") > 0.0);
    let realm = |t: &str| sample(&samples, &format!("switchyard_realm_messages{{realm=\"realm1\",type=\"{t}\"}}"));
    assert_eq!(realm("CALL"), calls as f64);
    assert_eq!(realm("YIELD"), calls as f64);
    assert_eq!(realm("PUBLISH"), 5.0);
    assert_eq!(realm("REGISTER"), 1.0);
}

crate::on_1_and_2_shards!(
    realms_come_and_go,
    changed_roles_apply_to_existing_sessions,
    a_bad_configuration_is_refused,
    reload_by_meta_procedure,
    tells_systemd_its_state,
    json_logs,
    metrics_are_described_and_summed,
);
