//! The command line: configuration errors name the key and exit non-zero,
//! the embedded default configuration is printable and valid.

use std::process::Command;

use crate::common::free_port;

fn switchyard(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("run switchyard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn prints_the_embedded_default() {
    let (code, out, _) = switchyard(&["--print-default-config"]);
    assert_eq!(code, 0);
    assert!(out.contains("name = \"realm1\""), "{out}");
    assert!(out.contains("bind = \"127.0.0.1:8080\""), "{out}");
    assert!(out.contains("path = \"/ws\""), "{out}");
    assert!(out.contains("bind = \"127.0.0.1:8081\""), "{out}");
}

#[test]
fn unknown_key_is_named() {
    let path = config_file("unknown", "[router]\nshardz = 2\n");
    let (code, _, err) = switchyard(&["--config", path.to_str().unwrap_or_default()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("configuration error") && err.contains("shardz"), "{err}");
}

#[test]
fn wrong_type_is_named() {
    let path = config_file("type", "[limits]\nmax_message_size = \"big\"\n");
    let (code, _, err) = switchyard(&["--config", path.to_str().unwrap_or_default()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("max_message_size"), "{err}");
}

#[test]
fn bad_values_are_named() {
    let cases = [
        (
            "[[realm]]\nname = \"realm1\"\n[[listener]]\ntype = \"websocket\"\nbind = \"nowhere\"\n",
            "listener[0].bind",
        ),
        ("[[listener]]\ntype = \"rawsocket\"\nbind = \"127.0.0.1:1\"\n", "realm"),
        (
            "[[realm]]\nname = \"a realm\"\n[[listener]]\ntype = \"rawsocket\"\nbind = \"127.0.0.1:1\"\n",
            "realm[0].name",
        ),
        (
            "[[realm]]\nname = \"r\"\n[[listener]]\ntype = \"rawsocket\"\nbind = \"127.0.0.1:1\"\n[limits]\nmax_message_size = 100\n",
            "limits.max_message_size",
        ),
        (
            "[[realm]]\nname = \"r\"\n[[listener]]\ntype = \"carrier-pigeon\"\nbind = \"127.0.0.1:1\"\n",
            "carrier-pigeon",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = config_file(&format!("bad{i}"), text);
        let (code, _, err) = switchyard(&["--config", path.to_str().unwrap_or_default()]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(key), "expected '{key}' in: {err}");
    }
}

#[test]
fn cli_flags_are_checked_too() {
    let (code, _, err) = switchyard(&["--cpus", "999", "--websocket", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("router.cpus"), "{err}");
    let (code, _, err) = switchyard(&["--config", "/nonexistent/switchyard.toml"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/switchyard.toml"), "{err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let port = free_port();
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).expect("hold a port");
    let rs = format!("127.0.0.1:{}", free_port());
    let ws = format!("127.0.0.1:{port}");
    let (code, _, err) = switchyard(&["--shards", "1", "--websocket", &ws, "--rawsocket", &rs]);
    drop(holder);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains(&ws), "{err}");
}

#[test]
fn a_second_router_on_the_same_port_is_refused() {
    // The first router's listeners use SO_REUSEPORT; the second must not
    // join their group.
    let ws = format!("127.0.0.1:{}", free_port());
    let rs = format!("127.0.0.1:{}", free_port());
    let first = crate::common::Router::start_bound(1, "", "", &[], &ws, &rs);
    let (code, _, err) = switchyard(&["--shards", "1", "--websocket", &ws, "--rawsocket", &rs]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&ws) && err.contains("Address already in use"), "{err}");
    let mut c = crate::common::Client::join_ws(first.ws, crate::common::Ser::Json);
    c.sync();
}

#[test]
fn check_config_says_valid_or_names_the_key() {
    let good = config_file(
        "check-good",
        "[[realm]]\nname = \"realm1\"\n[[listener]]\ntype = \"websocket\"\nbind = \"127.0.0.1:0\"\n",
    );
    let (code, out, err) = switchyard(&["check-config", good.to_str().unwrap_or_default()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid") && out.contains("1 realms"), "{out}");

    let bad = config_file(
        "check-bad",
        "[[realm]]\nname = \"realm1\"\n[[listener]]\ntype = \"websocket\"\nbind = \"127.0.0.1:0\"\n[limits]\nmax_message_size = 1\n",
    );
    let (code, out, err) = switchyard(&["check-config", bad.to_str().unwrap_or_default()]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("limits.max_message_size"), "{err}");

    let tls = config_file(
        "check-tls",
        "[[realm]]\nname = \"realm1\"\n[[listener]]\ntype = \"websocket\"\nbind = \"127.0.0.1:0\"\n[listener.tls]\ncertificate = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n",
    );
    let (code, _, err) = switchyard(&["check-config", tls.to_str().unwrap_or_default()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");

    let log = config_file(
        "check-log",
        "[router]\nlog = \"switchyard=[[x\"\n[[realm]]\nname = \"realm1\"\n[[listener]]\ntype = \"websocket\"\nbind = \"127.0.0.1:0\"\n",
    );
    let (code, _, err) = switchyard(&["check-config", log.to_str().unwrap_or_default()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("router.log"), "{err}");

    let (code, _, err) = switchyard(&["check-config", "/nonexistent/switchyard.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
}
