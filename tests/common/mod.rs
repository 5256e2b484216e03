//! Shared plumbing for the black-box tests: a router process with its own
//! configuration and ports, a minimal HTTP/WebSocket client, a RawSocket
//! client, WAMP messages as `switchyard::wamp::Value`, and `/metrics`.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchyard::codec::json;
use switchyard::wamp::Value;

/// How long any single read may wait.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The RFC 6455 example key and its accept value (section 1.3).
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The roles every test client announces in HELLO.
pub const ROLES: &str = r#"{"roles":{"publisher":{},"subscriber":{},"caller":{},"callee":{}}}"#;

// WAMP message codes.
pub const HELLO: u64 = 1;
pub const WELCOME: u64 = 2;
pub const ABORT: u64 = 3;
pub const GOODBYE: u64 = 6;
pub const ERROR: u64 = 8;
pub const PUBLISH: u64 = 16;
pub const PUBLISHED: u64 = 17;
pub const SUBSCRIBE: u64 = 32;
pub const SUBSCRIBED: u64 = 33;
pub const UNSUBSCRIBE: u64 = 34;
pub const UNSUBSCRIBED: u64 = 35;
pub const EVENT: u64 = 36;
pub const CALL: u64 = 48;
pub const RESULT: u64 = 50;
pub const REGISTER: u64 = 64;
pub const REGISTERED: u64 = 65;
pub const UNREGISTER: u64 = 66;
pub const UNREGISTERED: u64 = 67;
pub const INVOCATION: u64 = 68;
pub const INTERRUPT: u64 = 69;
pub const YIELD: u64 = 70;

// ---------------------------------------------------------------------------
// The router process
// ---------------------------------------------------------------------------

static PORTS_TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// Makes a test of each function named, run with 1 and with 2 shards
/// (`fn name(shards: usize)`), in modules `one_shard` and `two_shards`.
#[macro_export]
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

/// A port that was free a moment ago and that no other test of this process
/// has been given.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut taken = PORTS_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
        if taken.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// A running `switchyard` process; SIGTERMed (then killed) on drop.
pub struct Router {
    child: Child,
    pub ws: SocketAddr,
    pub rs: SocketAddr,
    pub shards: usize,
    dir: PathBuf,
    exited: Option<ExitStatus>,
    /// Sessions opened while looking for a shard, kept open so that the
    /// `sessions` gauges stay put.
    spare: RefCell<Vec<Client>>,
}

fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The authids tests log in as (WAMP-Ticket, ticket "ticket-<authid>",
/// role "anonymous" like the anonymous sessions beside them).
pub const TEST_AUTHIDS: &[&str] = &[
    "alice", "bob", "carol", "pub-1", "nobody", "joiner", "later", "victim", "twin", "testator",
];

/// `[[realm.principal]]` entries for [`TEST_AUTHIDS`], to follow a
/// `[[realm]]` block (cheap argon2 parameters: the tests log in often).
pub fn test_principals() -> String {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        TEST_AUTHIDS
            .iter()
            .map(|a| {
                let hash = switchyard::auth::hash_ticket(&format!("ticket-{a}"), Some((64, 1)));
                format!("[[realm.principal]]\nauthid = \"{a}\"\nrole = \"anonymous\"\nticket = \"{hash}\"\n")
            })
            .collect()
    })
    .clone()
}

impl Router {
    /// Starts a router with `shards` shards, a WebSocket listener (path /ws)
    /// and a RawSocket listener, and waits until both accept connections.
    pub fn start(shards: usize) -> Router {
        Router::start_with(shards, "", "", &[])
    }

    /// A router with extra `[router]` and `[limits]` lines and environment.
    pub fn start_with(shards: usize, router_toml: &str, limits_toml: &str, env: &[(&str, &str)]) -> Router {
        Router::start_bound(shards, router_toml, limits_toml, env, "127.0.0.1:0", "127.0.0.1:0")
    }

    /// A router whose WebSocket and RawSocket listeners bind `ws` and `rs`.
    pub fn start_bound(shards: usize, router_toml: &str, limits_toml: &str, env: &[(&str, &str)], ws: &str, rs: &str) -> Router {
        let mut last_err = String::new();
        for _attempt in 0..3 {
            match Router::try_start(shards, router_toml, limits_toml, env, ws, rs) {
                Ok(r) => return r,
                Err(e) => last_err = e,
            }
        }
        panic!("router did not start: {last_err}");
    }

    fn try_start(shards: usize, router_toml: &str, limits_toml: &str, env: &[(&str, &str)], ws: &str, rs: &str) -> Result<Router, String> {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("switchyard-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // Port 0: the router picks free ports and names them in its "ready"
        // line, so tests in concurrent processes never collide.
        // 64 KiB messages unless the test's limits say otherwise
        let size = if limits_toml.contains("max_message_size") {
            ""
        } else {
            "max_message_size = 65536"
        };
        // realm1 with the test principals, unless the test defines it itself
        let realm1 = if router_toml.contains("name = \"realm1\"") {
            String::new()
        } else {
            format!("[[realm]]\nname = \"realm1\"\n{}", test_principals())
        };
        let config = format!(
            "[router]\nshards = {shards}\n{router_toml}\n\n{realm1}\n\n[[listener]]\ntype = \"websocket\"\nbind = \"{ws}\"\npath = \"/ws\"\n\n[[listener]]\ntype = \"rawsocket\"\nbind = \"{rs}\"\n\n[limits]\n{size}\n{limits_toml}\n"
        );
        let cfg_path = dir.join("switchyard.toml");
        std::fs::write(&cfg_path, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("router.log")).map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .envs(env.iter().copied())
            .arg("--config")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot spawn the router: {e}"))?;
        let mut router = Router {
            child,
            ws: "0.0.0.0:0".parse().unwrap(),
            rs: "0.0.0.0:0".parse().unwrap(),
            shards,
            dir,
            exited: None,
            spare: RefCell::new(Vec::new()),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = router.child.try_wait() {
                router.exited = Some(status);
                return Err(format!("router exited during start-up ({status}): {}", router.log()));
            }
            // Every shard has bound every listener once the router logs
            // "ready", with the ports it was given.
            if router.ready_line().is_some() {
                router.ws = router
                    .listener("Websocket")
                    .ok_or(format!("no TCP Websocket listener: {}", router.log()))?;
                router.rs = router
                    .listener("Rawsocket")
                    .ok_or(format!("no TCP Rawsocket listener: {}", router.log()))?;
                return Ok(router);
            }
            if Instant::now() > deadline {
                return Err(format!("listeners not up after 10 s: {}", router.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The "switchyard ready" log line, once logged.
    pub fn ready_line(&self) -> Option<String> {
        self.log().lines().find(|l| l.contains("switchyard ready")).map(str::to_owned)
    }

    /// Every listener the ready line names, as (kind, address) in config
    /// order: kinds like `Websocket`, `Rawsocket+TLS`, `Universal`;
    /// addresses like `127.0.0.1:4242` or `unix:/path`.
    pub fn listeners(&self) -> Vec<(String, String)> {
        let Some(ready) = self.ready_line() else { return Vec::new() };
        // (a JSON log line escapes the quotes)
        let ready = ready.replace("\\\"", "\"");
        // the list is the line's only `["...", ...]` (the log may colour keys)
        let Some(start) = ready.find("[\"") else { return Vec::new() };
        let list = &ready[start + 1..];
        let list = &list[..list.find("\"]").map_or(list.len(), |e| e + 1)];
        list.split("\", \"")
            .map(|e| e.trim_matches('"'))
            .filter_map(|e| e.split_once(' '))
            .map(|(k, a)| (k.to_owned(), a.to_owned()))
            .collect()
    }

    /// The first TCP listener of `kind`.
    pub fn listener(&self, kind: &str) -> Option<SocketAddr> {
        self.listeners()
            .into_iter()
            .filter(|(k, _)| k == kind)
            .find_map(|(_, a)| a.parse().ok())
    }

    /// The router's working directory (its config and log).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The router's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("router.log")).unwrap_or_default()
    }

    /// The router's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The configuration file the router was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("switchyard.toml")
    }

    /// Writes `config` over the router's configuration file, sends SIGHUP
    /// and waits (10 s at most) for the router to log the outcome; true when
    /// it took the new configuration, false when it refused it.
    pub fn reload(&self, config: &str) -> bool {
        let count = |log: &str| log.matches("configuration reload").count();
        let before = count(&self.log());
        std::fs::write(self.config_path(), config).expect("write the configuration");
        let _ = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if count(&log) > before {
                let last = log.lines().rfind(|l| l.contains("configuration reload")).unwrap_or_default();
                return last.contains("configuration reloaded");
            }
            assert!(Instant::now() < deadline, "no reload logged within 10 s: {log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The router's configuration file as it is now.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.config_path()).expect("read the configuration")
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        sigterm(self.child.id());
    }

    /// Waits (10 s at most) for the process to exit and returns its status.
    pub fn wait(&mut self) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(s);
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let s = self.child.wait().expect("wait");
                self.exited = Some(s);
                panic!("router did not exit within 10 s of SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits (10 s at most) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.terminate();
        self.wait()
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let resp = http_request(self.ws, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(resp.status, 200, "GET /metrics: {resp:?}");
        String::from_utf8(resp.body).expect("metrics are UTF-8")
    }

    /// The per-shard values of `switchyard_<name>`, indexed by shard.
    pub fn metric(&self, name: &str) -> Vec<i64> {
        parse_metric(&self.metrics_text(), name, self.shards)
    }

    /// `switchyard_<name>` summed over shards.
    pub fn metric_sum(&self, name: &str) -> i64 {
        self.metric(name).iter().sum()
    }

    /// Connects, upgrades and joins `realm1` over WebSocket (JSON), and
    /// returns the client with the shard its session landed on (found from
    /// the `sessions` gauge; only meaningful when nothing else joins meanwhile).
    ///
    /// Sessions of earlier connections may still be leaving: a shard whose
    /// count went up by one has the new session (nothing else joins), but a
    /// leave on the same shard can hide it; then the session is kept aside
    /// and another one tried.
    pub fn join_counted(&self) -> (Client, usize) {
        let mut last = String::new();
        for _ in 0..20 {
            let before = self.metric("sessions");
            let c = Client::join_ws(self.ws, Ser::Json);
            let after = self.metric("sessions");
            if let Some(shard) = (0..self.shards).find(|&i| after[i] == before[i] + 1) {
                return (c, shard);
            }
            last = format!("{before:?} -> {after:?}");
            self.spare.borrow_mut().push(c);
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no shard gained the session (sessions elsewhere kept leaving): {last}");
    }

    /// A session (WebSocket, JSON) on shard `i % 2` of a 2-shard router
    /// (anywhere on 1 shard): sessions numbered 0, 1, 2, ... alternate.
    pub fn join_spread(&self, i: usize) -> Client {
        if self.shards == 2 {
            self.join_on(i % 2)
        } else {
            Client::join_ws(self.ws, Ser::Json)
        }
    }

    /// A session (WebSocket, JSON) on shard `shard`; sessions that land
    /// elsewhere stay open until the router is dropped.
    pub fn join_on(&self, shard: usize) -> Client {
        assert!(shard < self.shards);
        for _ in 0..64 {
            let (c, s) = self.join_counted();
            if s == shard {
                return c;
            }
            self.spare.borrow_mut().push(c);
        }
        panic!("64 connections did not reach shard {shard}");
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.spare.borrow_mut().clear();
        if self.exited.is_none() {
            self.terminate();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match self.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("---- router log ({}) ----\n{}", self.dir.display(), self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Parses `switchyard_<name>{shard="i"} v` lines.
pub fn parse_metric(text: &str, name: &str, shards: usize) -> Vec<i64> {
    let prefix = format!("switchyard_{name}{{shard=\"");
    let mut out = vec![None; shards];
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else { continue };
        let (shard, value) = rest.split_once("\"} ").unwrap_or_else(|| panic!("bad metric line {line:?}"));
        let shard: usize = shard.parse().unwrap();
        let value: i64 = value.trim().parse().unwrap_or_else(|_| panic!("bad metric value {line:?}"));
        assert!(shard < shards, "metric for shard {shard} of {shards}: {line:?}");
        out[shard] = Some(value);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, v)| v.unwrap_or_else(|| panic!("no switchyard_{name} for shard {i} in:\n{text}")))
        .collect()
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, READ_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// (lower-cased name, value)
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one HTTP response head from `s` (and its body when it has a
/// Content-Length); bytes past it stay in `buf`.
pub fn read_http_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> HttpResponse {
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        assert!(buf.len() < 65536, "HTTP response head too large");
        if fill(s, buf) == 0 {
            panic!(
                "connection closed inside the HTTP response head: {:?}",
                String::from_utf8_lossy(buf)
            );
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("HTTP head is UTF-8");
    buf.drain(..head_end);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {status_line:?}");
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or_else(|| panic!("bad header line {l:?}"));
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = resp.header("content-length").map(|v| v.parse::<usize>().expect("content-length")) {
        while buf.len() < len {
            if fill(s, buf) == 0 {
                panic!("connection closed inside the HTTP body");
            }
        }
        resp.body = buf.drain(..len).collect();
    }
    resp
}

/// Sends a raw HTTP request on a new connection and reads the response.
pub fn http_request(addr: SocketAddr, request: &str) -> HttpResponse {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    read_http_response(&mut s, &mut buf)
}

/// Reads more bytes into `buf`; 0 at end of stream. Panics on timeout.
fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 16384];
    let read = loop {
        match s.read(&mut chunk) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    match read {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            n
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!("read timed out after {READ_TIMEOUT:?}"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
        Err(e) => panic!("read failed: {e}"),
    }
}

// ---------------------------------------------------------------------------
// WebSocket and RawSocket framing
// ---------------------------------------------------------------------------

/// Serializers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ser {
    Json,
    MsgPack,
    Cbor,
}

impl Ser {
    pub const ALL: [Ser; 3] = [Ser::Json, Ser::MsgPack, Ser::Cbor];

    pub fn subprotocol(self) -> &'static str {
        match self {
            Ser::Json => "wamp.2.json",
            Ser::MsgPack => "wamp.2.msgpack",
            Ser::Cbor => "wamp.2.cbor",
        }
    }

    /// The batched subprotocol.
    pub fn batched(self) -> &'static str {
        match self {
            Ser::Json => "wamp.2.json.batched",
            Ser::MsgPack => "wamp.2.msgpack.batched",
            Ser::Cbor => "wamp.2.cbor.batched",
        }
    }

    /// The RawSocket handshake's serializer code.
    pub fn rawsocket_code(self) -> u8 {
        match self {
            Ser::Json => 1,
            Ser::MsgPack => 2,
            Ser::Cbor => 3,
        }
    }

    /// The router's serializer.
    pub fn codec(self) -> switchyard::wamp::message::Serializer {
        use switchyard::wamp::message::Serializer;
        match self {
            Ser::Json => Serializer::Json,
            Ser::MsgPack => Serializer::MsgPack,
            Ser::Cbor => Serializer::Cbor,
        }
    }
}

/// The framing of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    WebSocket,
    RawSocket,
}

/// One thing received from the router.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A WAMP message: WebSocket text/binary or RawSocket type 0.
    Message(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A WebSocket close frame (code 1005 when it carried none).
    Close(u16, String),
    /// The router closed the TCP connection.
    Eof,
}

pub mod ws_op {
    pub const CONT: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

pub mod rs_type {
    pub const WAMP: u8 = 0;
    pub const PING: u8 = 1;
    pub const PONG: u8 = 2;
}

/// A client frame: masked unless `masked` is false.
pub fn ws_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    static MASK_SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if masked {
        let seed = MASK_SEED.fetch_add(0x6A09_E667_F3BC_C909, Ordering::Relaxed);
        let mask = ((seed >> 17) as u32 | 1).to_be_bytes();
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A RawSocket frame.
pub fn rs_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let l = (payload.len() as u32).to_be_bytes();
    let mut out = vec![kind, l[1], l[2], l[3]];
    out.extend_from_slice(payload);
    out
}

/// A raw connection with a read buffer; speaks either framing.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub framing: Framing,
}

impl Conn {
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("write failed: {e}"));
    }

    fn need(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            if fill(&mut self.stream, &mut self.buf) == 0 {
                return false;
            }
        }
        true
    }

    /// Reads exactly `n` raw bytes (None at end of stream).
    pub fn read_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        if !self.need(n) {
            return None;
        }
        Some(self.buf.drain(..n).collect())
    }

    /// The next frame, or `Eof`.
    pub fn recv(&mut self) -> Incoming {
        match self.framing {
            Framing::WebSocket => self.recv_ws(),
            Framing::RawSocket => self.recv_rs(),
        }
    }

    fn recv_ws(&mut self) -> Incoming {
        if !self.need(2) {
            assert!(self.buf.is_empty(), "connection closed inside a frame header");
            return Incoming::Eof;
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(b0 & 0x70, 0, "server frame with reserved bits set");
        assert_eq!(b1 & 0x80, 0, "server frames must not be masked");
        let (len, hlen) = match b1 & 0x7f {
            126 => {
                assert!(self.need(4), "connection closed inside a frame header");
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                assert!(self.need(10), "connection closed inside a frame header");
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            l => (l as usize, 2),
        };
        assert!(self.need(hlen + len), "connection closed inside a frame");
        let frame: Vec<u8> = self.buf.drain(..hlen + len).collect();
        let payload = frame[hlen..].to_vec();
        assert!(b0 & 0x80 != 0, "the router sent a fragmented frame (opcode {})", b0 & 0x0f);
        match b0 & 0x0f {
            ws_op::TEXT => {
                assert!(std::str::from_utf8(&payload).is_ok(), "text frame is not UTF-8");
                Incoming::Message(payload)
            }
            ws_op::BINARY => Incoming::Message(payload),
            ws_op::PING => Incoming::Ping(payload),
            ws_op::PONG => Incoming::Pong(payload),
            ws_op::CLOSE => {
                if payload.is_empty() {
                    Incoming::Close(1005, String::new())
                } else {
                    assert!(payload.len() >= 2, "one-byte close payload");
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    Incoming::Close(code, String::from_utf8(payload[2..].to_vec()).expect("close reason UTF-8"))
                }
            }
            op => panic!("unexpected opcode {op} from the router"),
        }
    }

    fn recv_rs(&mut self) -> Incoming {
        if !self.need(4) {
            assert!(self.buf.is_empty(), "connection closed inside a frame header");
            return Incoming::Eof;
        }
        let kind = self.buf[0];
        let len = u32::from_be_bytes([0, self.buf[1], self.buf[2], self.buf[3]]) as usize;
        assert!(self.need(4 + len), "connection closed inside a frame");
        let frame: Vec<u8> = self.buf.drain(..4 + len).collect();
        let payload = frame[4..].to_vec();
        match kind {
            rs_type::WAMP => Incoming::Message(payload),
            rs_type::PING => Incoming::Ping(payload),
            rs_type::PONG => Incoming::Pong(payload),
            k => panic!("unexpected RawSocket frame type {k} from the router"),
        }
    }

    /// Asserts the router closed the connection (after any close frame),
    /// allowing nothing else before it.
    pub fn expect_eof(&mut self) {
        match self.recv() {
            Incoming::Eof => {}
            other => panic!("expected the connection to close, got {other:?}"),
        }
    }
}

/// Opens a WebSocket connection with a custom request; returns the
/// response and, when it is 101, the upgraded connection.
pub fn ws_handshake(addr: SocketAddr, request: &str) -> (HttpResponse, Conn) {
    let mut stream = connect(addr);
    stream.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let resp = read_http_response(&mut stream, &mut buf);
    (
        resp,
        Conn {
            stream,
            buf,
            framing: Framing::WebSocket,
        },
    )
}

/// An upgrade request for `path` offering `protocols` (no header when None).
pub fn upgrade_request(path: &str, key: &str, protocols: Option<&str>) -> String {
    let proto = protocols.map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n")).unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n"
    )
}

/// Performs a RawSocket handshake; returns the 4-byte reply (or None when
/// the router closed without one) and the connection.
pub fn rs_handshake(addr: SocketAddr, hs: [u8; 4]) -> (Option<[u8; 4]>, Conn) {
    let mut conn = Conn {
        stream: connect(addr),
        buf: Vec::new(),
        framing: Framing::RawSocket,
    };
    conn.write(&hs);
    let reply = conn.read_exact(4).map(|r| [r[0], r[1], r[2], r[3]]);
    (reply, conn)
}

// ---------------------------------------------------------------------------
// WAMP values
// ---------------------------------------------------------------------------

/// Parses JSON text into a value.
pub fn parse_json(text: &str) -> Value {
    let mut v = json::parse_payload(text.as_bytes()).unwrap_or_else(|e| panic!("invalid JSON {text:?}: {e}"));
    assert_eq!(v.len(), 1, "one JSON value expected in {text:?}");
    v.pop().unwrap()
}

pub fn encode(ser: Ser, v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    switchyard::codec::write_value(ser.codec(), &mut out, v);
    out
}

pub fn decode(ser: Ser, bytes: &[u8]) -> Value {
    match ser {
        Ser::Json => parse_json(std::str::from_utf8(bytes).expect("JSON message is UTF-8")),
        Ser::MsgPack | Ser::Cbor => {
            switchyard::codec::parse_value(ser.codec(), bytes).unwrap_or_else(|e| panic!("invalid {ser:?} {bytes:?}: {e}"))
        }
    }
}

/// The WAMP messages of one batch (WAMP-over-Batched-WebSocket framing, also
/// the long-poll transport's): JSON messages each ended by `separator`,
/// MessagePack and CBOR ones each after a 32-bit length.
pub fn split_batch(ser: Ser, data: &[u8], separator: u8) -> Vec<Value> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        match ser {
            Ser::Json => {
                let end = rest
                    .iter()
                    .position(|&b| b == separator)
                    .expect("a JSON message without its separator");
                out.push(decode(ser, &rest[..end]));
                rest = &rest[end + 1..];
            }
            Ser::MsgPack | Ser::Cbor => {
                let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                out.push(decode(ser, &rest[4..4 + n]));
                rest = &rest[4 + n..];
            }
        }
    }
    out
}

/// Accessors for received messages.
pub trait V {
    fn at(&self, i: usize) -> &Value;
    fn len(&self) -> usize;
    fn u(&self) -> u64;
    fn s(&self) -> &str;
    fn get(&self, key: &str) -> Option<&Value>;
    fn key(&self, key: &str) -> &Value;
    fn code(&self) -> u64 {
        self.at(0).u()
    }
}

impl V for Value {
    fn at(&self, i: usize) -> &Value {
        match self {
            Value::List(l) => l.get(i).unwrap_or_else(|| panic!("no element {i} in {self:?}")),
            _ => panic!("not a list: {self:?}"),
        }
    }
    fn len(&self) -> usize {
        match self {
            Value::List(l) => l.len(),
            Value::Dict(d) => d.0.len(),
            _ => panic!("not a list or dictionary: {self:?}"),
        }
    }
    fn u(&self) -> u64 {
        match self {
            Value::UInt(u) => *u,
            _ => panic!("not an unsigned integer: {self:?}"),
        }
    }
    fn s(&self) -> &str {
        match self {
            Value::Str(s) => s,
            _ => panic!("not a string: {self:?}"),
        }
    }
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key),
            _ => panic!("not a dictionary: {self:?}"),
        }
    }
    fn key(&self, key: &str) -> &Value {
        self.get(key).unwrap_or_else(|| panic!("no key {key:?} in {self:?}"))
    }
}

// ---------------------------------------------------------------------------
// A WAMP client
// ---------------------------------------------------------------------------

/// A WAMP peer over either transport and serializer.
pub struct Client {
    pub conn: Conn,
    pub ser: Ser,
    pub session: u64,
    next_request: u64,
}

impl Client {
    /// A WebSocket connection upgraded to `ser` (no session yet).
    pub fn ws(addr: SocketAddr, ser: Ser) -> Client {
        let (resp, conn) = ws_handshake(addr, &upgrade_request("/ws", WS_KEY, Some(ser.subprotocol())));
        assert_eq!(resp.status, 101, "upgrade refused: {resp:?}");
        assert_eq!(resp.header("sec-websocket-protocol"), Some(ser.subprotocol()));
        Client::over(conn, ser)
    }

    /// A RawSocket connection with `ser` (no session yet).
    pub fn raw(addr: SocketAddr, ser: Ser) -> Client {
        let code = ser.rawsocket_code();
        let (reply, conn) = rs_handshake(addr, [0x7F, 0xF0 | code, 0, 0]);
        let reply = reply.expect("no RawSocket handshake reply");
        assert_eq!(reply[0], 0x7F);
        assert_eq!(reply[1] & 0x0f, code, "handshake refused: {reply:?}");
        Client::over(conn, ser)
    }

    pub fn over(conn: Conn, ser: Ser) -> Client {
        Client {
            conn,
            ser,
            session: 0,
            next_request: 0,
        }
    }

    /// WebSocket + HELLO/WELCOME in realm1.
    pub fn join_ws(addr: SocketAddr, ser: Ser) -> Client {
        let mut c = Client::ws(addr, ser);
        c.hello();
        c
    }

    /// RawSocket + HELLO/WELCOME in realm1.
    pub fn join_raw(addr: SocketAddr, ser: Ser) -> Client {
        let mut c = Client::raw(addr, ser);
        c.hello();
        c
    }

    /// HELLO realm1; returns the WELCOME.
    pub fn hello(&mut self) -> Value {
        self.send_json(&format!(r#"[1, "realm1", {ROLES}]"#));
        let w = self.recv_msg();
        assert_eq!(w.code(), WELCOME, "expected WELCOME, got {w:?}");
        self.session = w.at(1).u();
        w
    }

    /// HELLO `realm` with `details` (JSON); one that names an authid logs in
    /// with its test ticket (see [`TEST_AUTHIDS`]). Returns the WELCOME.
    pub fn login(&mut self, realm: &str, details: &str) -> Value {
        let d = parse_json(details);
        let authid = d.get("authid").map(|a| a.s().to_owned());
        let details = match &authid {
            Some(_) if d.get("authmethods").is_none() => {
                format!("{}, \"authmethods\": [\"ticket\"]}}", details.trim_end().trim_end_matches('}'))
            }
            _ => details.to_owned(),
        };
        self.send_json(&format!(r#"[1, "{realm}", {details}]"#));
        let mut w = self.recv_msg();
        if w.code() == 4 {
            let authid = authid.expect("a CHALLENGE for a HELLO without authid");
            assert_eq!(w.at(1).s(), "ticket", "{w:?}");
            self.send_json(&format!(r#"[5, "ticket-{authid}", {{}}]"#));
            w = self.recv_msg();
        }
        assert_eq!(w.code(), WELCOME, "expected WELCOME, got {w:?}");
        self.session = w.at(1).u();
        w
    }

    pub fn next_req(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Frames one encoded message.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let frame = self.frame(bytes);
        self.conn.write(&frame);
    }

    /// Sends messages written as JSON text in one write, so that the router
    /// reads them together.
    pub fn send_json_batch(&mut self, texts: &[String]) {
        let mut all = Vec::new();
        for text in texts {
            let bytes = match self.ser {
                Ser::Json => text.as_bytes().to_vec(),
                Ser::MsgPack | Ser::Cbor => encode(self.ser, &parse_json(text)),
            };
            all.extend(self.frame(&bytes));
        }
        self.conn.write(&all);
    }

    fn frame(&self, bytes: &[u8]) -> Vec<u8> {
        match self.conn.framing {
            Framing::WebSocket => {
                let op = match self.ser {
                    Ser::Json => ws_op::TEXT,
                    Ser::MsgPack | Ser::Cbor => ws_op::BINARY,
                };
                ws_frame(true, op, bytes, true)
            }
            Framing::RawSocket => rs_frame(rs_type::WAMP, bytes),
        }
    }

    pub fn send(&mut self, v: &Value) {
        let bytes = encode(self.ser, v);
        self.send_bytes(&bytes);
    }

    /// Sends a message written as JSON text: verbatim for JSON, converted
    /// for MessagePack.
    pub fn send_json(&mut self, text: &str) {
        match self.ser {
            Ser::Json => self.send_bytes(text.as_bytes()),
            Ser::MsgPack | Ser::Cbor => self.send(&parse_json(text)),
        }
    }

    /// The next transport-level thing.
    pub fn recv(&mut self) -> Incoming {
        self.conn.recv()
    }

    /// The next WAMP message; panics on anything else.
    pub fn recv_msg(&mut self) -> Value {
        match self.conn.recv() {
            Incoming::Message(m) => decode(self.ser, &m),
            other => panic!("expected a WAMP message, got {other:?}"),
        }
    }

    /// The next message, which must have `code`.
    pub fn expect(&mut self, code: u64) -> Value {
        let m = self.recv_msg();
        assert_eq!(m.code(), code, "expected message type {code}, got {m:?}");
        m
    }

    /// Expects ABORT with `reason`, then the close (a WebSocket close frame
    /// on WebSocket: 1002 after a protocol violation, 1000 otherwise) and the
    /// end of the connection.
    pub fn expect_abort(&mut self, reason: &str) {
        let m = self.expect(ABORT);
        assert_eq!(m.at(2).s(), reason, "{m:?}");
        let want = if reason == "wamp.error.protocol_violation" { 1002 } else { 1000 };
        if self.conn.framing == Framing::WebSocket {
            match self.recv() {
                Incoming::Close(code, _) => assert_eq!(code, want, "close code after ABORT {reason}"),
                other => panic!("expected a close frame after ABORT, got {other:?}"),
            }
        }
        self.conn.expect_eof();
    }

    /// SUBSCRIBE; returns the subscription ID.
    pub fn subscribe(&mut self, topic: &str, options: &str) -> u64 {
        let req = self.next_req();
        self.send_json(&format!(r#"[32, {req}, {options}, "{topic}"]"#));
        let m = self.expect(SUBSCRIBED);
        assert_eq!(m.at(1).u(), req, "{m:?}");
        m.at(2).u()
    }

    /// REGISTER; returns the registration ID.
    pub fn register(&mut self, procedure: &str) -> u64 {
        let req = self.next_req();
        self.send_json(&format!(r#"[64, {req}, {{}}, "{procedure}"]"#));
        let m = self.expect(REGISTERED);
        assert_eq!(m.at(1).u(), req, "{m:?}");
        m.at(2).u()
    }

    /// Sends `text` (a request with ID `req`) and expects ERROR for it with
    /// `request_type` and `error`.
    pub fn expect_error(&mut self, request_type: u64, req: u64, error: &str) -> Value {
        let m = self.expect(ERROR);
        assert_eq!(m.at(1).u(), request_type, "{m:?}");
        assert_eq!(m.at(2).u(), req, "{m:?}");
        assert_eq!(m.at(4).s(), error, "{m:?}");
        m
    }

    /// A round trip that proves everything sent earlier was processed: a
    /// CALL of a procedure nobody registers, answered with ERROR. Returns
    /// every message received before that ERROR.
    pub fn sync(&mut self) -> Vec<Value> {
        let req = self.next_req();
        self.send_json(&format!(r#"[48, {req}, {{}}, "test.sync.nobody"]"#));
        let mut before = Vec::new();
        loop {
            let m = self.recv_msg();
            if m.code() == ERROR && m.at(1).u() == CALL && m.at(2).u() == req {
                assert_eq!(m.at(4).s(), "wamp.error.no_such_procedure");
                return before;
            }
            before.push(m);
        }
    }

    /// Closes the TCP connection abruptly.
    pub fn drop_connection(self) {
        let _ = self.conn.stream.shutdown(Shutdown::Both);
    }
}

impl Client {
    /// True once bytes from the router are waiting (or already buffered),
    /// within `timeout`: for finding which of several peers a message went
    /// to. Says nothing about what did *not* arrive.
    pub fn readable_within(&mut self, timeout: Duration) -> bool {
        if !self.conn.buf.is_empty() {
            return true;
        }
        let s = &self.conn.stream;
        s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .expect("read timeout");
        let mut b = [0u8; 1];
        let ready = matches!(s.peek(&mut b), Ok(n) if n > 0);
        s.set_read_timeout(Some(READ_TIMEOUT)).expect("read timeout");
        ready
    }
}
