//! Webhook subscribers: `[[realm.webhook]]` subscriptions whose events are
//! POSTed as JSON to an HTTP URL.
//!
//! Each webhook is a session of the router's own on shard 0 (authid and
//! role from its config, so the realm's roles decide what it may
//! subscribe to) and a delivery thread with a blocking HTTP client: the
//! shard never waits on the network. Between them a bounded queue
//! (`queue` events; a full queue drops the event, counted in
//! `webhook_dropped`). The thread posts events in order, one at a time, and
//! retries a failed POST (connection error, timeout, 5xx, 429) with
//! exponential backoff up to `max_retries` times (`webhook_retries`); an
//! event that cannot be delivered is counted in `webhook_failed`, a 4xx
//! answer other than 429 fails it at once.
//!
//! The body: `{"realm", "topic", "publication", "args", "kwargs",
//! "details"}`.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::Mac;
use tracing::{info, warn};

use super::connection::deliver;
use super::handle::ConnCtx;
use super::outbox::{Outbox, Outgoing};
use crate::codec::json;
use crate::config::WebhookConfig;
use crate::metrics::ShardStats;
use crate::router::{TransportInfo, TransportKind};
use crate::wamp::message::Serializer;
use crate::wamp::{Dict, Value};

/// Starts the delivery thread of a webhook; events go to the sender.
pub fn start_delivery(realm: &str, cfg: &WebhookConfig, stats: Arc<ShardStats>) -> std::io::Result<flume::Sender<Vec<u8>>> {
    let (tx, rx) = flume::bounded::<Vec<u8>>(cfg.queue);
    let tls = match &cfg.ca {
        Some(ca) => Some(crate::transport::tls::client_trusting("ca", ca).map_err(std::io::Error::other)?),
        None => None,
    };
    let cfg = cfg.clone();
    let name = format!("webhook {realm} {}", cfg.topic);
    std::thread::Builder::new().name("webhook".into()).spawn(move || {
        let mut agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .redirects(0);
        if let Some(tls) = tls {
            agent = agent.tls_config(tls);
        }
        let agent = agent.build();
        while let Ok(body) = rx.recv() {
            let mut wait = Duration::from_millis(cfg.retry_initial_ms);
            let mut tries = 0;
            loop {
                match post(&agent, &cfg, &body) {
                    Ok(()) => {
                        ShardStats::inc(&stats.webhook_delivered);
                        break;
                    }
                    Err(Failure::Final(why)) => {
                        warn!(webhook = %name, error = %why, "webhook refused the event; dropped");
                        ShardStats::inc(&stats.webhook_failed);
                        break;
                    }
                    Err(Failure::Retry(why)) if tries < cfg.max_retries => {
                        tries += 1;
                        ShardStats::inc(&stats.webhook_retries);
                        tracing::debug!(webhook = %name, error = %why, tries, "webhook POST failed; retrying");
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_millis(cfg.retry_max_ms));
                    }
                    Err(Failure::Retry(why)) => {
                        warn!(webhook = %name, error = %why, tries, "webhook POST failed every try; event dropped");
                        ShardStats::inc(&stats.webhook_failed);
                        break;
                    }
                }
            }
        }
    })?;
    Ok(tx)
}

enum Failure {
    Retry(String),
    Final(String),
}

fn post(agent: &ureq::Agent, cfg: &WebhookConfig, body: &[u8]) -> Result<(), Failure> {
    let mut req = agent.post(&cfg.url).set("Content-Type", "application/json");
    if let Some(secret) = &cfg.hmac_secret {
        let ts = crate::router::unix_seconds();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
            return Err(Failure::Final("the HMAC key is unusable".into()));
        };
        mac.update(format!("{ts}\n{nonce}\nPOST\n{}\n", target_of(&cfg.url)).as_bytes());
        mac.update(body);
        let sig = hex::encode(mac.finalize().into_bytes());
        req = req
            .set("X-Switchyard-Timestamp", &ts.to_string())
            .set("X-Switchyard-Nonce", &nonce)
            .set("X-Switchyard-Signature", &sig);
    }
    match req.send_bytes(body) {
        Ok(resp) if resp.status() < 300 => Ok(()),
        Ok(resp) => Err(Failure::Final(format!("HTTP {}", resp.status()))),
        Err(ureq::Error::Status(code, _)) if code == 429 || code >= 500 => Err(Failure::Retry(format!("HTTP {code}"))),
        Err(ureq::Error::Status(code, _)) => Err(Failure::Final(format!("HTTP {code}"))),
        Err(e) => Err(Failure::Retry(e.to_string())),
    }
}

/// The request target (path and query) of an `http(s)://host/...` URL.
fn target_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// Runs webhook `cfg` of `realm` on this shard: its session subscribes,
/// and each EVENT goes to the delivery queue, until the session ends (the
/// realm is removed, the router shuts down).
pub async fn run(ctx: Rc<ConnCtx>, realm: String, cfg: WebhookConfig, role: String, queue: flume::Sender<Vec<u8>>) {
    let outbox = Rc::new(Outbox::new(ctx.limits().max_outbound_bytes));
    let info = TransportInfo {
        kind: TransportKind::Http,
        serializer: Serializer::Json,
        peer: None,
        tls: None,
        batched: false,
        compressed: false,
    };
    let conn = ctx.router.borrow_mut().open_connection(outbox.clone(), info);
    if ctx
        .router
        .borrow_mut()
        .open_trusted(conn, &realm, &cfg.authid, &role, "webhook")
        .is_none()
    {
        ctx.router.borrow_mut().close_connection(conn);
        return;
    }
    let policy = cfg.policy.clone().unwrap_or_else(|| "exact".into());
    let mut subscribe = Vec::new();
    json::write_value(
        &mut subscribe,
        &Value::List(vec![
            Value::UInt(32),
            Value::UInt(1),
            Value::Dict(Dict::new().with("match", Value::Str(policy))),
            Value::Str(cfg.topic.clone()),
        ]),
    );
    deliver(&ctx, conn, Serializer::Json, &Bytes::from(subscribe));
    let mut batch = Vec::new();
    let mut queued = VecDeque::new();
    'session: loop {
        batch.clear();
        let open = outbox.next_batch(&mut batch).await;
        queued.extend(batch.drain(..));
        while let Some(item) = queued.pop_front() {
            let Outgoing::Wamp(frame) = item else {
                if matches!(item, Outgoing::Close { .. }) {
                    break 'session;
                }
                continue;
            };
            let Ok(Value::List(m)) = json::parse(&frame) else { continue };
            match m.first() {
                Some(Value::UInt(33)) => info!(realm = %realm, topic = %cfg.topic, url = %cfg.url, "webhook subscribed"),
                Some(Value::UInt(8)) => {
                    let error = m.get(4).cloned().unwrap_or(Value::Null);
                    warn!(realm = %realm, topic = %cfg.topic, ?error, "webhook subscription refused");
                    break 'session;
                }
                Some(Value::UInt(36)) => {
                    let body = event_body(&realm, &cfg.topic, &m);
                    match queue.try_send(body) {
                        Ok(()) => {}
                        Err(flume::TrySendError::Full(_)) => ShardStats::inc(&ctx.stats.webhook_dropped),
                        Err(flume::TrySendError::Disconnected(_)) => break 'session,
                    }
                }
                // GOODBYE: the realm was removed or the router shuts down
                Some(Value::UInt(6)) | Some(Value::UInt(3)) => break 'session,
                _ => {}
            }
        }
        if !open {
            break;
        }
    }
    ctx.router.borrow_mut().close_connection(conn);
}

/// The JSON posted for EVENT `[36, subscription, publication, details,
/// args?, kwargs?]`.
fn event_body(realm: &str, topic: &str, m: &[Value]) -> Vec<u8> {
    let details = match m.get(3) {
        Some(Value::Dict(d)) => d.clone(),
        _ => Dict::new(),
    };
    let topic = match details.get("topic") {
        Some(Value::Str(t)) => t.clone(),
        _ => topic.to_owned(),
    };
    let body = Dict::new()
        .with("realm", Value::Str(realm.into()))
        .with("topic", Value::Str(topic))
        .with("publication", m.get(2).cloned().unwrap_or(Value::Null))
        .with("args", m.get(4).cloned().unwrap_or(Value::List(Vec::new())))
        .with("kwargs", m.get(5).cloned().unwrap_or(Value::Dict(Dict::new())))
        .with("details", Value::Dict(details));
    let mut out = Vec::new();
    json::write_value(&mut out, &Value::Dict(body));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_of_urls() {
        assert_eq!(target_of("http://127.0.0.1:9000/hook?x=1"), "/hook?x=1");
        assert_eq!(target_of("https://example.com"), "/");
    }

    #[test]
    fn event_bodies() {
        let m = json::parse(br#"[36, 5, 77, {"topic": "com.a.b"}, [1], {"k": 2}]"#).unwrap();
        let Value::List(m) = m else { panic!() };
        let body = json::parse(&event_body("realm1", "com.a", &m)).unwrap();
        let expected = json::parse(
            br#"{"realm": "realm1", "topic": "com.a.b", "publication": 77, "args": [1], "kwargs": {"k": 2}, "details": {"topic": "com.a.b"}}"#,
        )
        .unwrap();
        assert_eq!(body, expected);
    }
}
