//! The HTTP bridge: services that speak only HTTP publish and call.
//!
//! `POST <path>/<realm>/publish` with `{topic, args, kwargs, options}` and
//! `POST <path>/<realm>/call` with `{procedure, args, kwargs, options}`.
//! Each request is authenticated (a bearer token, or an HMAC-SHA256
//! signature over timestamp, nonce, method, target and body, with a replay
//! window) by one of the realm's `[[realm.bridge_key]]`s, and then runs as
//! a short-lived session of that key's authid and role on the shard that
//! took the request: the router authorizes, routes and answers it as it
//! would any session's PUBLISH or CALL, and the session leaves with the
//! response. A call's progressive results can be streamed as server-sent
//! events or NDJSON.
//!
//! Bounds: bodies by `limits.max_message_size`; the nonces remembered for
//! the replay window by `limits.max_bridge_nonces` (router-wide); a call
//! waits at most its `timeout` (default the listener's `call_timeout_ms`).

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::io::AsyncWriteExt;
use hmac::Mac;
use sha2::Digest;

use super::connection::{deliver, Stream};
use super::handle::ConnCtx;
use super::outbox::{Outbox, Outgoing};
use crate::codec::json;
use crate::metrics::ShardStats;
use crate::router::{BridgeKey, ConnId, TransportInfo, TransportKind};
use crate::transport::read_more;
use crate::wamp::message::Serializer;
use crate::wamp::{Dict, Value};

/// A listener's bridge settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The base path, without a trailing '/'.
    pub path: String,
    pub call_timeout: Duration,
    pub replay_window: Duration,
}

/// An HTTP request as the bridge needs it.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// Header names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
    /// The client keeps the connection for another request.
    pub keep_alive: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok()).map(str::trim)
    }
}

/// The nonces of signed requests seen within the replay window, router-wide
/// (a request replayed to another shard is refused as well).
#[derive(Debug)]
pub struct Nonces {
    seen: Mutex<NonceTable>,
    max: usize,
}

#[derive(Debug, Default)]
struct NonceTable {
    /// Nonce (with its key's authid) to the second it may be forgotten.
    expires: HashMap<String, u64>,
    /// The same, in the order they came.
    order: VecDeque<(u64, String)>,
}

/// Why a nonce was refused.
#[derive(Debug, PartialEq, Eq)]
enum NonceRefused {
    Replayed,
    Full,
}

impl Nonces {
    /// Remembers at most `max` nonces.
    pub fn new(max: usize) -> Self {
        Nonces {
            seen: Mutex::new(NonceTable::default()),
            max,
        }
    }

    /// Takes `nonce` (seen at second `now`, remembered until `until`).
    fn take(&self, nonce: String, now: u64, until: u64) -> Result<(), NonceRefused> {
        let mut t = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        while t.order.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, n)) = t.order.pop_front() {
                t.expires.remove(&n);
            }
        }
        if t.expires.contains_key(&nonce) {
            return Err(NonceRefused::Replayed);
        }
        if t.expires.len() >= self.max {
            return Err(NonceRefused::Full);
        }
        t.expires.insert(nonce.clone(), until);
        // the window is the same for every request of a listener, so
        // expiry times arrive nearly in order; a later one queued behind an
        // earlier is only forgotten a little late
        t.order.push_back((until, nonce));
        Ok(())
    }
}

/// A refusal: HTTP status, reason phrase, the JSON body's fields.
struct Refusal {
    status: u16,
    reason: &'static str,
    body: Dict,
}

impl Refusal {
    fn new(status: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            reason,
            body: Dict::new().with("error", Value::Str(message.into())),
        }
    }

    /// 400, naming the field of the body that is wrong.
    fn field(field: &str, message: impl Into<String>) -> Self {
        let mut r = Refusal::new(400, "Bad Request", message);
        r.body = r.body.with("field", Value::Str(field.into()));
        r
    }

    fn answer(self) -> Answer {
        let mut body = Vec::new();
        json::write_value(&mut body, &Value::Dict(self.body));
        Answer {
            status: self.status,
            reason: self.reason,
            body,
        }
    }
}

/// A complete JSON response, before its head.
struct Answer {
    status: u16,
    reason: &'static str,
    body: Vec<u8>,
}

impl Answer {
    /// The response bytes; `keep`: the connection stays open.
    fn bytes(&self, keep: bool) -> Vec<u8> {
        let connection = if keep { "keep-alive" } else { "close" };
        // tell a client that did not authenticate how to
        let challenge = if self.status == 401 {
            "WWW-Authenticate: Bearer realm=\"switchyard\"\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n{challenge}Content-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {connection}\r\n\r\n",
            self.status,
            self.reason,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// What the request asks.
enum Action {
    Publish,
    Call,
}

/// Whether `target` is under the bridge's base path.
pub fn serves(settings: &Settings, target: &str) -> bool {
    target
        .strip_prefix(settings.path.as_str())
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether the request line in `buf` (once complete) names a target under
/// the bridge's path, whatever its method (so a GET gets the bridge's 405).
pub fn request_line_under(settings: &Settings, buf: &[u8]) -> bool {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let line = String::from_utf8_lossy(&buf[..end]);
    line.split(' ').nth(1).is_some_and(|target| serves(settings, target))
}

/// What the client did while a call waited.
enum Client {
    /// Closed its side, or the connection failed.
    Gone,
    /// Sent more (the next request, kept in the connection's buffer).
    Sent,
}

/// Completes when the client closes its side or sends more; what it sends
/// is kept in `buf`.
async fn client_activity<S: Stream>(stream: &mut S, buf: &mut bytes::BytesMut) -> Client {
    if buf.len() >= 64 * 1024 {
        // (enough waiting already; watch no further)
        return std::future::pending().await;
    }
    match read_more(stream, buf, 4096).await {
        Ok(0) | Err(_) => Client::Gone,
        Ok(_) => Client::Sent,
    }
}

/// Serves one bridge request; true when the connection may take another.
pub async fn serve<S: Stream>(
    ctx: &Rc<ConnCtx>,
    stream: &mut S,
    buf: &mut bytes::BytesMut,
    kept: &mut Option<Session>,
    info: TransportInfo,
    req: Request,
    settings: &Settings,
) -> bool {
    ShardStats::inc(&ctx.stats.bridge_requests);
    let keep = req.keep_alive;
    let answer = match handle(ctx, stream, buf, kept, info, &req, settings).await {
        Ok(Some(a)) => a,
        // streamed (the body ends with the connection), or the client left
        Ok(None) => return false,
        Err(r) => r.answer(),
    };
    stream.write_all(&answer.bytes(keep)).await.is_ok() && keep
}

#[allow(clippy::too_many_arguments)]
async fn handle<S: Stream>(
    ctx: &Rc<ConnCtx>,
    stream: &mut S,
    buf: &mut bytes::BytesMut,
    kept: &mut Option<Session>,
    mut info: TransportInfo,
    req: &Request,
    settings: &Settings,
) -> Result<Option<Answer>, Refusal> {
    let path = req.target.split('?').next().unwrap_or("");
    let rest = path.strip_prefix(settings.path.as_str()).unwrap_or("").trim_start_matches('/');
    let (realm, action) = match rest.rsplit_once('/') {
        Some((realm, "publish")) if !realm.is_empty() && !realm.contains('/') => (realm, Action::Publish),
        Some((realm, "call")) if !realm.is_empty() && !realm.contains('/') => (realm, Action::Call),
        _ => {
            return Err(Refusal::new(
                404,
                "Not Found",
                format!(
                    "no bridge endpoint at {path}: POST {0}/<realm>/publish or {0}/<realm>/call",
                    settings.path
                ),
            ))
        }
    };
    if req.method != "POST" {
        return Err(Refusal::new(405, "Method Not Allowed", "the bridge takes POST requests"));
    }
    let Some(keys) = ctx.router.borrow().bridge_keys(realm) else {
        return Err(Refusal::new(
            404,
            "Not Found",
            format!("no realm named '{realm}' exists on this router"),
        ));
    };
    let (key, method) = authenticate(ctx, &keys, req, settings)?;
    let body = parse_body(&req.body, &action)?;

    // the session of the key's identity: the one the connection's last
    // request had, if it is the same key's and still open
    let reuse = kept
        .as_ref()
        .is_some_and(|k| k.realm == realm && k.authid == key.authid && k.role == key.role && !k.outbox.is_closing());
    if !reuse {
        *kept = None;
        let outbox = Rc::new(Outbox::new(ctx.limits().max_outbound_bytes));
        info.kind = TransportKind::Http;
        info.serializer = Serializer::Json;
        let conn = ctx.router.borrow_mut().open_connection(outbox.clone(), info);
        let session = Session {
            ctx: ctx.clone(),
            conn,
            outbox,
            realm: realm.to_owned(),
            authid: key.authid.clone(),
            role: key.role.clone(),
            last_request: 0,
        };
        if ctx
            .router
            .borrow_mut()
            .open_trusted(conn, realm, &key.authid, &key.role, method)
            .is_none()
        {
            return Err(Refusal::new(503, "Service Unavailable", "the realm is not available"));
        }
        *kept = Some(session);
    }
    let Some(session) = kept.as_mut() else {
        return Err(ended());
    };
    session.last_request += 1;
    match action {
        Action::Publish => publish(session, body).await,
        Action::Call => call(session, stream, buf, req, body, settings).await,
    }
}

/// A bridge connection's session: opened for its first request and kept
/// for those that follow on the connection with the same key; it leaves
/// when dropped (the connection ends, or a request of another key comes).
#[derive(Debug)]
pub struct Session {
    ctx: Rc<ConnCtx>,
    conn: ConnId,
    outbox: Rc<Outbox>,
    realm: String,
    authid: std::sync::Arc<str>,
    role: std::sync::Arc<str>,
    /// The request ID of the latest PUBLISH or CALL: answers to earlier
    /// ones (a call given up on) are discarded.
    last_request: u64,
}

impl Session {
    /// Resolves when the router ends the session between requests (GOODBYE
    /// at shutdown, a kill, its realm removed); late answers to earlier
    /// requests are discarded meanwhile.
    pub async fn ended(&self) {
        let mut batch = Vec::new();
        loop {
            batch.clear();
            let open = self.outbox.next_batch(&mut batch).await;
            let over = batch.iter().any(|item| match item {
                Outgoing::Wamp(f) => f.starts_with(b"[6,") || f.starts_with(b"[3,"),
                Outgoing::Close { .. } => true,
                Outgoing::Ping(_) | Outgoing::Pong(_) => false,
            });
            if over || !open {
                return;
            }
        }
    }

    fn send(&self, msg: &Value) {
        let mut bytes = Vec::new();
        json::write_value(&mut bytes, msg);
        deliver(&self.ctx, self.conn, Serializer::Json, &Bytes::from(bytes));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.ctx.router.borrow_mut().close_connection(self.conn);
    }
}

/// Checks the request's credentials against the realm's keys: a bearer
/// token, or a signature (`X-Switchyard-Key`, `-Timestamp`, `-Nonce`,
/// `-Signature`: base64 or hex HMAC-SHA256 over "timestamp\nnonce\nMETHOD\n
/// target\n" followed by the body).
fn authenticate(ctx: &ConnCtx, keys: &[BridgeKey], req: &Request, settings: &Settings) -> Result<(BridgeKey, &'static str), Refusal> {
    let unauthorized = |m: &str| {
        ShardStats::inc(&ctx.stats.bridge_unauthorized);
        Refusal::new(401, "Unauthorized", m)
    };
    if let Some(auth) = req.header_str("authorization") {
        // (the scheme is case-insensitive, RFC 9110 11.1)
        let token = auth
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t);
        let Some(token) = token else {
            return Err(unauthorized("Authorization must be 'Bearer <token>'"));
        };
        let digest: [u8; 32] = sha2::Sha256::digest(token.trim().as_bytes()).into();
        let mut found = None;
        for k in keys {
            if let Some(t) = &k.token_sha256 {
                if bool::from(subtle::ConstantTimeEq::ct_eq(&t[..], &digest[..])) {
                    found = Some(k.clone());
                }
            }
        }
        return found.map(|k| (k, "bearer")).ok_or_else(|| unauthorized("unknown bearer token"));
    }
    let Some(authid) = req.header_str("x-switchyard-key") else {
        return Err(unauthorized(
            "authenticate with Authorization: Bearer <token> or an X-Switchyard-Signature",
        ));
    };
    let (Some(ts), Some(nonce), Some(sig)) = (
        req.header_str("x-switchyard-timestamp"),
        req.header_str("x-switchyard-nonce"),
        req.header_str("x-switchyard-signature"),
    ) else {
        return Err(unauthorized(
            "a signed request needs X-Switchyard-Timestamp, X-Switchyard-Nonce and X-Switchyard-Signature",
        ));
    };
    let Some(key) = keys.iter().find(|k| *k.authid == *authid && k.hmac_secret.is_some()) else {
        return Err(unauthorized("unknown key"));
    };
    let Ok(ts) = ts.parse::<u64>() else {
        return Err(unauthorized("X-Switchyard-Timestamp must be Unix seconds"));
    };
    if nonce.is_empty() || nonce.len() > 128 {
        return Err(unauthorized("X-Switchyard-Nonce must have 1 to 128 bytes"));
    }
    let now = crate::router::unix_seconds();
    let window = settings.replay_window.as_secs();
    if now.abs_diff(ts) > window {
        ShardStats::inc(&ctx.stats.bridge_replays);
        return Err(unauthorized("X-Switchyard-Timestamp is outside the replay window"));
    }
    let Some(sig) = decode_signature(sig) else {
        return Err(unauthorized("X-Switchyard-Signature must be base64 or hex"));
    };
    let secret = key.hmac_secret.as_deref().unwrap_or_default();
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return Err(unauthorized("unknown key"));
    };
    mac.update(format!("{ts}\n{nonce}\n{}\n{}\n", req.method, req.target).as_bytes());
    mac.update(&req.body);
    if mac.verify_slice(&sig).is_err() {
        return Err(unauthorized("bad signature"));
    }
    // only a correctly signed request spends its nonce
    match ctx.bridge_nonces.take(format!("{authid}\n{nonce}"), now, ts.max(now) + window + 1) {
        Ok(()) => Ok((key.clone(), "hmac")),
        Err(NonceRefused::Replayed) => {
            ShardStats::inc(&ctx.stats.bridge_replays);
            Err(unauthorized("this nonce was used already (a replayed request)"))
        }
        Err(NonceRefused::Full) => {
            ShardStats::inc(&ctx.stats.bridge_nonces_full);
            Err(Refusal::new(
                503,
                "Service Unavailable",
                "too many signed requests in the replay window (limits.max_bridge_nonces)",
            ))
        }
    }
}

fn decode_signature(s: &str) -> Option<Vec<u8>> {
    if s.len() == 64 {
        if let Ok(b) = hex::decode(s) {
            return Some(b);
        }
    }
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .ok()
}

/// A request body's fields.
struct Body {
    uri: String,
    args: Vec<Value>,
    kwargs: Dict,
    options: Dict,
}

fn parse_body(raw: &[u8], action: &Action) -> Result<Body, Refusal> {
    let uri_field = match action {
        Action::Publish => "topic",
        Action::Call => "procedure",
    };
    let v = json::parse(raw).map_err(|e| Refusal::field("(body)", format!("the body is not JSON: {e}")))?;
    let Value::Dict(d) = v else {
        return Err(Refusal::field("(body)", "the body must be a JSON object"));
    };
    let mut body = Body {
        uri: String::new(),
        args: Vec::new(),
        kwargs: Dict::new(),
        options: Dict::new(),
    };
    let mut have_uri = false;
    for (k, v) in d.0 {
        match (k.as_str(), v) {
            (f, Value::Str(s)) if f == uri_field => {
                body.uri = s;
                have_uri = true;
            }
            (f, _) if f == uri_field => return Err(Refusal::field(uri_field, format!("{uri_field} must be a string"))),
            ("args", Value::List(l)) => body.args = l,
            ("args", Value::Null) => {}
            ("args", _) => return Err(Refusal::field("args", "args must be a list")),
            ("kwargs", Value::Dict(d)) => body.kwargs = d,
            ("kwargs", Value::Null) => {}
            ("kwargs", _) => return Err(Refusal::field("kwargs", "kwargs must be an object")),
            ("options", Value::Dict(d)) => body.options = d,
            ("options", Value::Null) => {}
            ("options", _) => return Err(Refusal::field("options", "options must be an object")),
            (other, _) => {
                return Err(Refusal::field(
                    other,
                    format!("unknown field '{other}' (expected {uri_field}, args, kwargs, options)"),
                ))
            }
        }
    }
    if !have_uri {
        return Err(Refusal::field(uri_field, format!("{uri_field} is required")));
    }
    Ok(body)
}

/// The WAMP message `[code, request, options, uri, args, kwargs]`.
fn request_message(code: u64, request: u64, options: Dict, body: Body) -> Value {
    Value::List(vec![
        Value::UInt(code),
        Value::UInt(request),
        Value::Dict(options),
        Value::Str(body.uri),
        Value::List(body.args),
        Value::Dict(body.kwargs),
    ])
}

/// What the session received: the WAMP messages, or the end.
enum Received {
    Message(Vec<Value>),
    Ended,
}

/// The next message for the session's request `request` (the WELCOME and
/// answers to earlier requests skipped), within `wait`.
async fn next(outbox: &Outbox, queue: &mut VecDeque<Outgoing>, request: u64, wait: Duration) -> Option<Received> {
    loop {
        while let Some(item) = queue.pop_front() {
            match item {
                // (the session's WELCOME, written by the router, is skipped unread)
                Outgoing::Wamp(frame) if frame.starts_with(b"[2,") => {}
                Outgoing::Wamp(frame) => {
                    let Ok(Value::List(m)) = json::parse(&frame) else { continue };
                    let answers = match m.first() {
                        Some(Value::UInt(17 | 50)) => m.get(1),
                        Some(Value::UInt(8)) => m.get(2),
                        _ => None,
                    };
                    if answers.is_some_and(|r| *r != Value::UInt(request)) {
                        continue;
                    }
                    return Some(Received::Message(m));
                }
                Outgoing::Close { .. } => return Some(Received::Ended),
                Outgoing::Ping(_) | Outgoing::Pong(_) => {}
            }
        }
        let mut batch = Vec::new();
        let got = glommio::timer::timeout(wait, async { Ok(outbox.next_batch(&mut batch).await) }).await;
        match got {
            Ok(true) => queue.extend(batch),
            Ok(false) => {
                queue.extend(batch);
                if queue.is_empty() {
                    return Some(Received::Ended);
                }
            }
            Err(_) => return None,
        }
    }
}

fn json_response(status: u16, reason: &'static str, body: Dict) -> Answer {
    let mut out = Vec::new();
    json::write_value(&mut out, &Value::Dict(body));
    Answer { status, reason, body: out }
}

/// The HTTP status for a WAMP error URI: what kind of failure it is.
fn status_of(error: &str) -> (u16, &'static str) {
    use crate::wamp::uris;
    match error {
        uris::NO_SUCH_PROCEDURE | "wamp.error.no_such_realm" => (404, "Not Found"),
        uris::NOT_AUTHORIZED | "wamp.error.authorization_failed" => (403, "Forbidden"),
        uris::TIMEOUT | uris::CANCELED => (504, "Gateway Timeout"),
        uris::INVALID_URI | uris::INVALID_ARGUMENT | uris::PROTOCOL_VIOLATION | "wamp.error.payload_size_exceeded" => (400, "Bad Request"),
        uris::NO_AVAILABLE_CALLEE | uris::UNAVAILABLE | uris::LIMIT_EXCEEDED => (503, "Service Unavailable"),
        // an error the callee answered with
        _ => (502, "Bad Gateway"),
    }
}

/// `{error, args, kwargs}` of an ERROR message `[8, type, request, details,
/// error, args?, kwargs?]`.
fn error_body(m: &[Value]) -> (String, Dict) {
    let error = match m.get(4) {
        Some(Value::Str(e)) => e.clone(),
        _ => "wamp.error.unknown".into(),
    };
    let mut d = Dict::new().with("error", Value::Str(error.clone()));
    if let Some(a) = m.get(5) {
        d = d.with("args", a.clone());
    }
    if let Some(k) = m.get(6) {
        d = d.with("kwargs", k.clone());
    }
    (error, d)
}

fn ended() -> Refusal {
    Refusal::new(503, "Service Unavailable", "the router closed the request's session")
}

async fn publish(session: &Session, body: Body) -> Result<Option<Answer>, Refusal> {
    let outbox = &session.outbox;
    let mut options = body.options.clone();
    // acknowledged unless the client says otherwise: an HTTP client wants
    // to know whether the publication was accepted
    let acknowledge = !matches!(options.get("acknowledge"), Some(Value::Bool(false)));
    options = options.with("acknowledge", Value::Bool(acknowledge));
    session.send(&request_message(16, session.last_request, options, body));
    if !acknowledge {
        return Ok(Some(json_response(202, "Accepted", Dict::new())));
    }
    let mut queue = VecDeque::new();
    match next(outbox, &mut queue, session.last_request, Duration::from_secs(10)).await {
        Some(Received::Message(m)) => match m.first() {
            Some(Value::UInt(17)) => {
                let publication = m.get(2).cloned().unwrap_or(Value::Null);
                Ok(Some(json_response(200, "OK", Dict::new().with("publication", publication))))
            }
            Some(Value::UInt(8)) => {
                let (error, d) = error_body(&m);
                let (status, reason) = status_of(&error);
                Ok(Some(json_response(status, reason, d)))
            }
            _ => Err(ended()),
        },
        Some(Received::Ended) => Err(ended()),
        None => Err(Refusal::new(504, "Gateway Timeout", "no acknowledgement from the router")),
    }
}

/// How a call's progressive results go back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Streaming {
    No,
    Sse,
    Ndjson,
}

async fn call<S: Stream>(
    session: &Session,
    stream: &mut S,
    buf: &mut bytes::BytesMut,
    req: &Request,
    body: Body,
    settings: &Settings,
) -> Result<Option<Answer>, Refusal> {
    let mut options = body.options.clone();
    let timeout = match options.get("timeout") {
        None | Some(Value::Null) => {
            let ms = settings.call_timeout.as_millis() as u64;
            options = options.with("timeout", Value::UInt(ms));
            settings.call_timeout
        }
        // 0 is "no timeout" to the dealer: the bridge's default instead
        Some(Value::UInt(0)) => {
            let ms = settings.call_timeout.as_millis() as u64;
            options = options.with("timeout", Value::UInt(ms));
            settings.call_timeout
        }
        Some(Value::UInt(ms)) => Duration::from_millis(*ms),
        Some(_) => return Err(Refusal::field("options", "options.timeout must be a whole number of ms")),
    };
    let accept = req.header_str("accept").unwrap_or("");
    let wants_progress = matches!(options.get("receive_progress"), Some(Value::Bool(true)));
    let streaming = match () {
        _ if !wants_progress => Streaming::No,
        _ if accept.contains("text/event-stream") => Streaming::Sse,
        _ if accept.contains("application/x-ndjson") => Streaming::Ndjson,
        _ => Streaming::No,
    };
    if streaming == Streaming::No {
        // the response holds the final result only
        options.0.retain(|(k, _)| k != "receive_progress");
    }
    let outbox = &session.outbox;
    let request = session.last_request;
    session.send(&request_message(48, request, options, body));
    let mut queue = VecDeque::new();
    let mut started = false;
    let mut watching = true;
    // the dealer ends the call at its timeout; this is the guard behind it
    let wait = timeout + Duration::from_secs(5);
    loop {
        // a client that goes away ends the request: its session leaves, and
        // the call is canceled (the callee interrupted)
        let got = if watching {
            let answer = next(outbox, &mut queue, request, wait);
            let activity = client_activity(stream, buf);
            futures_lite::future::or(async { Ok(answer.await) }, async { Err(activity.await) }).await
        } else {
            Ok(next(outbox, &mut queue, request, wait).await)
        };
        let got = match got {
            Ok(got) => got,
            Err(Client::Gone) => return Ok(None),
            // a pipelined request: kept for later; the call goes on
            Err(Client::Sent) => {
                watching = false;
                continue;
            }
        };
        let m = match got {
            Some(Received::Message(m)) => m,
            Some(Received::Ended) if !started => return Err(ended()),
            None if !started => return Err(Refusal::new(504, "Gateway Timeout", "the call timed out")),
            Some(Received::Ended) | None => return Ok(None),
        };
        match m.first() {
            Some(Value::UInt(50)) => {
                let progress = matches!(&m.get(2), Some(Value::Dict(d)) if matches!(d.get("progress"), Some(Value::Bool(true))));
                let mut d = Dict::new();
                if let Some(a) = m.get(3) {
                    d = d.with("args", a.clone());
                }
                if let Some(k) = m.get(4) {
                    d = d.with("kwargs", k.clone());
                }
                if streaming == Streaming::No {
                    if progress {
                        continue;
                    }
                    return Ok(Some(json_response(200, "OK", d)));
                }
                if !started {
                    started = true;
                    let ctype = if streaming == Streaming::Sse {
                        "text/event-stream"
                    } else {
                        "application/x-ndjson"
                    };
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n");
                    if !write_within(session, stream, head.as_bytes()).await {
                        return Ok(None);
                    }
                }
                // a client that reads more slowly than the callee sends
                // must not grow the session's queue without bound: past
                // limits.max_outbound_bytes the stream ends (the call is
                // canceled as the session leaves)
                if progress && outbox.over_limit() {
                    ShardStats::inc(&session.ctx.stats.slow_consumers_disconnected);
                    let why = Dict::new().with(
                        "error",
                        Value::Str("switchyard.error.slow_consumer: the results came faster than the client read them".into()),
                    );
                    write_within(session, stream, &stream_item(streaming, "error", why)).await;
                    return Ok(None);
                }
                let kind = if progress { "progress" } else { "result" };
                if !write_within(session, stream, &stream_item(streaming, kind, d)).await {
                    return Ok(None);
                }
                if !progress {
                    return Ok(None);
                }
            }
            Some(Value::UInt(8)) => {
                let (error, d) = error_body(&m);
                if started {
                    write_within(session, stream, &stream_item(streaming, "error", d)).await;
                    return Ok(None);
                }
                let (status, reason) = status_of(&error);
                return Ok(Some(json_response(status, reason, d)));
            }
            // GOODBYE (the realm went away), ABORT: the session ended
            _ if !started => return Err(ended()),
            _ => return Ok(None),
        }
    }
}

/// Writes (and flushes) part of a streamed response; false when the write
/// failed, or when the client took nothing for `limits.ping_interval_ms`
/// (as a WebSocket peer that stops reading is closed; counted as a slow
/// consumer), so a client that stops reading cannot hold the call and its
/// queued results forever.
async fn write_within<S: Stream>(session: &Session, stream: &mut S, bytes: &[u8]) -> bool {
    let limit = session.ctx.limits().ping_interval.unwrap_or(Duration::from_secs(30));
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match glommio::timer::timeout(limit, async { Ok(write.await) }).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            ShardStats::inc(&session.ctx.stats.slow_consumers_disconnected);
            false
        }
    }
}

/// One streamed item: an SSE event `kind`, or an NDJSON line (with
/// `"progress": true` on progressive results, the error's fields on an error).
fn stream_item(streaming: Streaming, kind: &str, mut d: Dict) -> Vec<u8> {
    let mut out = Vec::new();
    if streaming == Streaming::Sse {
        out.extend_from_slice(format!("event: {kind}\ndata: ").as_bytes());
        json::write_value(&mut out, &Value::Dict(d));
        out.extend_from_slice(b"\n\n");
    } else {
        if kind == "progress" {
            d = d.with("progress", Value::Bool(true));
        }
        json::write_value(&mut out, &Value::Dict(d));
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_taken_once_within_the_window_and_bounded() {
        let n = Nonces::new(2);
        assert_eq!(n.take("a".into(), 100, 110), Ok(()));
        assert_eq!(n.take("a".into(), 101, 111), Err(NonceRefused::Replayed));
        assert_eq!(n.take("b".into(), 101, 111), Ok(()));
        assert_eq!(n.take("c".into(), 102, 112), Err(NonceRefused::Full));
        // past a's expiry it is forgotten, and room is made
        assert_eq!(n.take("c".into(), 110, 120), Ok(()));
        assert_eq!(n.take("a".into(), 111, 121), Ok(()));
    }

    #[test]
    fn bodies_name_the_wrong_field() {
        let err = |raw: &str| match parse_body(raw.as_bytes(), &Action::Publish) {
            Err(r) => r.body.get("field").cloned(),
            Ok(_) => None,
        };
        assert_eq!(err("{}"), Some(Value::Str("topic".into())));
        assert_eq!(err(r#"{"topic": 1}"#), Some(Value::Str("topic".into())));
        assert_eq!(err(r#"{"topic": "a", "args": {}}"#), Some(Value::Str("args".into())));
        assert_eq!(err(r#"{"topic": "a", "kwargs": []}"#), Some(Value::Str("kwargs".into())));
        assert_eq!(err(r#"{"topic": "a", "extra": 1}"#), Some(Value::Str("extra".into())));
        assert_eq!(err("[1]"), Some(Value::Str("(body)".into())));
        assert_eq!(err("{"), Some(Value::Str("(body)".into())));
        let ok = parse_body(
            br#"{"topic": "a.b", "args": [1], "kwargs": {"k": 2}, "options": {"exclude_me": false}}"#,
            &Action::Publish,
        );
        assert!(matches!(ok, Ok(b) if b.uri == "a.b" && b.args.len() == 1));
    }

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(status_of("wamp.error.no_such_procedure").0, 404);
        assert_eq!(status_of("wamp.error.not_authorized").0, 403);
        assert_eq!(status_of("wamp.error.timeout").0, 504);
        assert_eq!(status_of("wamp.error.invalid_argument").0, 400);
        assert_eq!(status_of("com.app.error.out_of_stock").0, 502);
    }

    #[test]
    fn signatures_read_as_hex_or_base64() {
        let raw = [7u8; 32];
        assert_eq!(decode_signature(&hex::encode(raw)), Some(raw.to_vec()));
        use base64::Engine;
        assert_eq!(
            decode_signature(&base64::engine::general_purpose::STANDARD.encode(raw)),
            Some(raw.to_vec())
        );
        assert_eq!(decode_signature("not base64!"), None);
    }
}
