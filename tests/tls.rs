//! TLS listeners: clear errors for unreadable or mismatched files at start;
//! RawSocket over TLS with a rustls client, a client certificate that
//! authenticates (`authmethod` "tls"), and WAMP-Cryptosign bound to the TLS
//! channel (`tls-exporter`). Certificates are made here with rcgen, nothing
//! secret is committed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use switchyard::wamp::Value;

use crate::common::parse_json;

struct Pki {
    dir: PathBuf,
    ca_der: CertificateDer<'static>,
    client_pem: (String, String),
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    /// A new server certificate for localhost in server.pem / server.key;
    /// its DER.
    fn renew_server(&self) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("server cert");
        write(&self.dir, "server.pem", &cert.pem());
        write(&self.dir, "server.key", &key.serialize_pem());
        cert.der().to_vec()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

/// A CA, a server certificate for localhost and a client certificate whose
/// common name is `device-1`, all signed by the CA.
fn pki(tag: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("switchyard-tls-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "switchyard test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let server_key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("key");
    let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    client_params.distinguished_name.push(DnType::CommonName, "device-1");
    let client = client_params.signed_by(&client_key, &ca, &ca_key).expect("client cert");
    write(&dir, "ca.pem", &ca.pem());
    write(&dir, "server.pem", &server.pem());
    write(&dir, "server.key", &server_key.serialize_pem());
    write(&dir, "other.key", &KeyPair::generate().expect("key").serialize_pem());
    Pki {
        dir,
        ca_der: ca.der().clone(),
        client_pem: (client.pem(), client_key.serialize_pem()),
        ca,
        ca_key,
    }
}

fn signer() -> SigningKey {
    SigningKey::from_bytes(&[5u8; 32])
}

fn config(p: &Pki, key: &str) -> String {
    let d = p.dir.display();
    let pubkey = hex::encode(signer().verifying_key().to_bytes());
    format!(
        r#"
[router]
shards = 2
[[realm]]
name = "realm1"
anonymous = false
[[realm.principal]]
authid = "device-1"
role = "device"
tls = true
[[realm.principal]]
authid = "signer"
role = "user"
cryptosign_keys = ["{pubkey}"]
[[listener]]
type = "rawsocket"
bind = "127.0.0.1:0"
[listener.tls]
certificate = "{d}/server.pem"
key = "{d}/{key}"
client_ca = "{d}/ca.pem"
"#
    )
}

struct Running {
    child: Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the router on `text`; its RawSocket address, or its exit and log.
fn launch(p: &Pki, text: &str) -> Result<(Running, std::net::SocketAddr), (i32, String)> {
    let cfg = write(&p.dir, "switchyard.toml", text);
    let log = p.dir.join("router.log");
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let mut r = Running { child, log };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&r.log).unwrap_or_default();
        if let Ok(Some(status)) = r.child.try_wait() {
            return Err((status.code().unwrap_or(-1), text));
        }
        if let Some(line) = text.lines().find(|l| l.contains("switchyard ready")) {
            let start = line.find("\"Rawsocket+TLS ").expect("a RawSocket TLS listener") + "\"Rawsocket+TLS ".len();
            let len = line[start..].find('"').expect("address end");
            let addr = line[start..start + len].parse().expect("address");
            return Ok((r, addr));
        }
        assert!(Instant::now() < deadline, "router not ready: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(p: &Pki, addr: std::net::SocketAddr, with_cert: bool) -> Tls {
    connect_with(p, addr, with_cert, &[&rustls::version::TLS13, &rustls::version::TLS12])
}

fn connect_with(p: &Pki, addr: std::net::SocketAddr, with_cert: bool, versions: &[&'static rustls::SupportedProtocolVersion]) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.ca_der.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots);
    let config = if with_cert {
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut p.client_pem.0.as_bytes())
            .map(|c| c.expect("cert"))
            .collect();
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut p.client_pem.1.as_bytes())
            .expect("pem")
            .expect("key");
        builder.with_client_auth_cert(certs, key).expect("client cert")
    } else {
        builder.with_no_client_auth()
    };
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").expect("name")).expect("client");
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // RawSocket handshake: JSON, the largest messages
    s.write_all(&[0x7F, 0xF1, 0, 0]).expect("handshake");
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply).expect("handshake reply");
    assert_eq!(reply[0], 0x7F);
    assert_eq!(reply[1] & 0x0f, 1, "JSON accepted: {reply:?}");
    s
}

fn send(s: &mut Tls, text: &str) {
    let len = text.len() as u32;
    let mut frame = vec![0u8, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    frame.extend_from_slice(text.as_bytes());
    s.write_all(&frame).expect("send");
}

fn recv(s: &mut Tls) -> Value {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).expect("frame header");
    let len = ((head[1] as usize) << 16) | ((head[2] as usize) << 8) | head[3] as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("frame body");
    parse_json(std::str::from_utf8(&body).expect("UTF-8"))
}

fn code(v: &Value) -> u64 {
    match v {
        Value::List(l) => match l.first() {
            Some(Value::UInt(c)) => *c,
            _ => 0,
        },
        _ => 0,
    }
}

fn field<'a>(v: &'a Value, i: usize, key: &str) -> Option<&'a Value> {
    match v {
        Value::List(l) => match l.get(i) {
            Some(Value::Dict(d)) => d.get(key),
            _ => None,
        },
        _ => None,
    }
}

fn text(v: Option<&Value>) -> &str {
    match v {
        Some(Value::Str(s)) => s,
        other => panic!("not a string: {other:?}"),
    }
}

#[test]
fn unreadable_or_mismatched_files_are_clear_errors_at_start() {
    let p = pki("errors");
    let missing = config(&p, "server.key").replace("server.pem", "absent.pem");
    let (code, log) = launch(&p, &missing).err().expect("refused");
    assert_ne!(code, 0);
    assert!(log.contains("listener[0].tls.certificate") && log.contains("absent.pem"), "{log}");
    let (code, log) = launch(&p, &config(&p, "other.key")).err().expect("refused");
    assert_ne!(code, 0);
    assert!(log.contains("listener[0].tls.key"), "{log}");
}

#[test]
fn rawsocket_over_tls_with_certificates_and_channel_binding() {
    let p = pki("live");
    let (_router, addr) = launch(&p, &config(&p, "server.key")).expect("router starts");
    // a client certificate authenticates its common name
    let mut s = connect(&p, addr, true);
    send(&mut s, r#"[1, "realm1", {"roles": {"caller": {}}, "authmethods": ["tls"]}]"#);
    let w = recv(&mut s);
    assert_eq!(code(&w), 2, "{w:?}");
    assert_eq!(text(field(&w, 2, "authid")), "device-1");
    assert_eq!(text(field(&w, 2, "authrole")), "device");
    assert_eq!(text(field(&w, 2, "authmethod")), "tls");
    // TLS 1.2 too, and the certificate still authenticates
    let mut s12 = connect_with(&p, addr, true, &[&rustls::version::TLS12]);
    assert_eq!(s12.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    send(&mut s12, r#"[1, "realm1", {"roles": {"caller": {}}, "authmethods": ["tls"]}]"#);
    let w = recv(&mut s12);
    assert_eq!(text(field(&w, 2, "authid")), "device-1", "{w:?}");
    assert_eq!(s.conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    // over TLS 1.2 no channel binding is offered (RFC 9266 needs TLS 1.3 or EMS)
    let mut s12 = connect_with(&p, addr, false, &[&rustls::version::TLS12]);
    let pk = hex::encode(signer().verifying_key().to_bytes());
    send(
        &mut s12,
        &format!(
            r#"[1, "realm1", {{"roles": {{"caller": {{}}}}, "authmethods": ["cryptosign"], "authextra": {{"pubkey": "{pk}", "channel_binding": "tls-exporter"}}}}]"#
        ),
    );
    let a = recv(&mut s12);
    assert_eq!(code(&a), 3, "{a:?}");
    // without a certificate the tls method is not on offer
    let mut s = connect(&p, addr, false);
    send(&mut s, r#"[1, "realm1", {"roles": {"caller": {}}, "authmethods": ["tls"]}]"#);
    let a = recv(&mut s);
    assert_eq!(code(&a), 3, "{a:?}");
    // cryptosign bound to this TLS channel: the challenge XOR the exporter
    let key = signer();
    let pubkey = hex::encode(key.verifying_key().to_bytes());
    for (bind, ok) in [(true, true), (false, false)] {
        let mut s = connect(&p, addr, false);
        send(
            &mut s,
            &format!(
                r#"[1, "realm1", {{"roles": {{"caller": {{}}}}, "authmethods": ["cryptosign"], "authextra": {{"pubkey": "{pubkey}", "channel_binding": "tls-exporter"}}}}]"#
            ),
        );
        let ch = recv(&mut s);
        assert_eq!(code(&ch), 4, "{ch:?}");
        assert_eq!(text(field(&ch, 2, "channel_binding")), "tls-exporter");
        let mut msg: Vec<u8> = hex::decode(text(field(&ch, 2, "challenge"))).expect("hex");
        if bind {
            let exporter = s
                .conn
                .export_keying_material([0u8; 32], switchyard::transport::tls::EXPORTER_LABEL, None)
                .expect("exporter");
            for (m, e) in msg.iter_mut().zip(exporter) {
                *m ^= e;
            }
        }
        let sig = key.sign(&msg);
        send(
            &mut s,
            &format!(r#"[5, "{}{}", {{}}]"#, hex::encode(sig.to_bytes()), hex::encode(&msg)),
        );
        let m = recv(&mut s);
        if ok {
            assert_eq!(code(&m), 2, "bound signature: {m:?}");
            assert_eq!(text(field(&m, 2, "authmethod")), "cryptosign");
        } else {
            assert_eq!(code(&m), 3, "a signature of the bare challenge fails: {m:?}");
        }
    }
    // a plain-TCP client on the TLS port gets no RawSocket handshake reply
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    tcp.write_all(&[0x7F, 0xF1, 0, 0]).expect("write");
    let mut buf = [0u8; 4];
    let got = tcp.read(&mut buf).unwrap_or(0);
    assert!(got == 0 || buf[0] != 0x7F, "a plain handshake was answered: {buf:?}");
}

/// A reload reads the certificate files again: connections accepted
/// afterwards get the renewed certificate, open ones carry on.
#[test]
fn a_reload_takes_renewed_certificates() {
    let p = pki("renew");
    let (r, addr) = launch(&p, &config(&p, "server.key")).expect("start");
    let peer_cert = |s: &Tls| s.conn.peer_certificates().expect("a certificate")[0].to_vec();
    let mut before = connect(&p, addr, true);
    let old = peer_cert(&before);
    let renewed = p.renew_server();
    assert_ne!(old, renewed);
    let logged = |r: &Running| std::fs::read_to_string(&r.log).unwrap_or_default();
    let _ = Command::new("kill").args(["-HUP", &r.child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logged(&r).contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "{}", logged(&r));
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..4 {
        let after = connect(&p, addr, true);
        assert_eq!(peer_cert(&after), renewed);
    }
    // the connection made before still works
    send(&mut before, r#"[1, "realm1", {"roles": {"caller": {}}, "authmethods": ["tls"]}]"#);
    assert_eq!(code(&recv(&mut before)), 2);
}
