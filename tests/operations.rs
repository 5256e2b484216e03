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
    assert_eq!(next().trim(), "READY=1");
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

macro_rules! on_1_and_2_shards {
    ($($name:ident),* $(,)?) => {
        mod one_shard {
            $( #[test] fn $name() { super::$name(1) } )*
        }
        mod two_shards {
            $( #[test] fn $name() { super::$name(2) } )*
        }
    };
}

on_1_and_2_shards!(
    realms_come_and_go,
    changed_roles_apply_to_existing_sessions,
    a_bad_configuration_is_refused,
    reload_by_meta_procedure,
    tells_systemd_its_state,
    json_logs,
);
