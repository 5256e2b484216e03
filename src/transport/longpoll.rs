//! The HTTP long-poll transport of the WAMP spec (its beta transport), without
//! I/O: the request routes under a listener's base path, the `open` body, the
//! transport IDs, and the responses.
//!
//! A client `POST`s `{"protocols": [...]}` to `<base>/open` and gets
//! `{"protocol", "transport"}` back; it then `POST`s WAMP messages to
//! `<base>/<transport>/send`, polls `<base>/<transport>/receive` (held open
//! until a message is there or the poll timeout passes: 204, poll again), and
//! ends with `<base>/<transport>/close`. A query string (`?x=...`, against
//! caches) is ignored.

use crate::transport::websocket;
use crate::wamp::message::Serializer;

/// A listener's `[listener.longpoll]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The base path, e.g. `/longpoll`.
    pub path: String,
    /// How long a `receive` is held open with nothing to return.
    pub poll_timeout: std::time::Duration,
    /// A transport with no request for this long is closed.
    pub session_timeout: std::time::Duration,
}

/// What a request under the base path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Open,
    Send(&'a str),
    Receive(&'a str),
    Close(&'a str),
}

/// The route of `target` (a request path, query included) under `base`, or
/// `None` when it is not one.
pub fn route<'a>(target: &'a str, base: &str) -> Option<Route<'a>> {
    let path = target.split('?').next().unwrap_or("");
    let rest = path.strip_prefix(base.trim_end_matches('/'))?.strip_prefix('/')?;
    if rest == "open" {
        return Some(Route::Open);
    }
    let (id, op) = rest.split_once('/')?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match op {
        "send" => Some(Route::Send(id)),
        "receive" => Some(Route::Receive(id)),
        "close" => Some(Route::Close(id)),
        _ => None,
    }
}

/// The protocol to speak for an `open` body: the first of the client's
/// `protocols` this router speaks.
pub fn choose_protocol(body: &[u8]) -> Result<(Serializer, bool), String> {
    let v = crate::codec::parse_value(Serializer::Json, body).map_err(|e| format!("the open request's body is not JSON: {e}"))?;
    let crate::wamp::Value::Dict(d) = v else {
        return Err("the open request's body must be a JSON object".into());
    };
    let Some(crate::wamp::Value::List(protocols)) = d.get("protocols") else {
        return Err("the open request must name its \"protocols\" (a list)".into());
    };
    protocols
        .iter()
        .find_map(|p| match p {
            crate::wamp::Value::Str(s) => websocket::subprotocol(s),
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "no protocol of \"protocols\" is spoken here; this router speaks {}",
                websocket::SUBPROTOCOLS.map(|(n, _, _)| n).join(", ")
            )
        })
}

/// A new transport ID for a transport of `shard`: the shard in two hex
/// digits, then 128 random bits (the ID is all a client shows to use the
/// transport).
pub fn new_id(shard: usize) -> String {
    format!("{:02x}{:032x}", shard & 0xff, rand::random::<u128>())
}

/// The shard a transport ID belongs to.
pub fn shard_of(id: &str) -> Option<usize> {
    if id.len() != 34 {
        return None;
    }
    usize::from_str_radix(id.get(..2)?, 16).ok()
}

/// The content type of a serializer's messages.
pub fn content_type(ser: Serializer) -> &'static str {
    match ser {
        Serializer::Json => "application/json",
        Serializer::MsgPack => "application/x-msgpack",
        Serializer::Cbor => "application/cbor",
    }
}

/// A complete HTTP response that closes the connection.
pub fn response(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A JSON error response: `{"error": message}`.
pub fn error(status: u16, reason: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    crate::codec::json::write_value(
        &mut body,
        &crate::wamp::Value::Dict(crate::wamp::Dict::new().with("error", crate::wamp::Value::Str(message.into()))),
    );
    response(status, reason, "application/json", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_under_the_base_path() {
        let id = new_id(3);
        assert_eq!(shard_of(&id), Some(3));
        assert_eq!(route("/lp/open", "/lp"), Some(Route::Open));
        assert_eq!(route("/lp/open?x=123", "/lp/"), Some(Route::Open));
        assert_eq!(route(&format!("/lp/{id}/send"), "/lp"), Some(Route::Send(&id)));
        assert_eq!(route(&format!("/lp/{id}/receive?x=9"), "/lp"), Some(Route::Receive(&id)));
        assert_eq!(route(&format!("/lp/{id}/close"), "/lp"), Some(Route::Close(&id)));
        for bad in [
            "/lp",
            "/lp/",
            "/lpx/open",
            "/other/open",
            "/lp/a b/send",
            "/lp/x/y/send",
            "/lp/x/delete",
            "/lp//send",
        ] {
            assert_eq!(route(bad, "/lp"), None, "{bad}");
        }
        assert_eq!(shard_of("zz"), None);
    }

    #[test]
    fn open_picks_the_clients_first_spoken_protocol() {
        assert_eq!(choose_protocol(br#"{"protocols": ["wamp.2.json"]}"#), Ok((Serializer::Json, false)));
        assert_eq!(
            choose_protocol(br#"{"protocols": ["x", "wamp.2.cbor.batched", "wamp.2.json"]}"#),
            Ok((Serializer::Cbor, true))
        );
        assert!(choose_protocol(br#"{"protocols": ["wamp.2.ubjson"]}"#)
            .unwrap_err()
            .contains("wamp.2.json"));
        assert!(choose_protocol(b"{}").is_err());
        assert!(choose_protocol(b"[").is_err());
    }
}
