//! The WAMP specification's test vectors (`../shared/spec/testvectors`, the
//! spec checked out as `shared/` beside the clone), walked as data.
//!
//! Single-message vectors: every sample, in every serializer Switchyard
//! speaks (JSON and MessagePack; cbor, ubjson, flatbuffers are counted as
//! skipped; `wmsg` validation samples are encoded in both by this test), goes
//!
//! 1. through the codec: a message a client may send must decode, with the
//!    vector's expected attributes (IDs, URIs, dictionaries, and the payload,
//!    transcoded to JSON and parsed); a message only a router sends must be
//!    refused with `DecodeError::UnexpectedType`;
//! 2. over WebSocket, once in an established session and once before HELLO.
//!    The sample is written together with a probe (an acknowledged PUBLISH in
//!    a session, a HELLO for `realm1` outside one), so every outcome is known
//!    without waiting for a timeout: either the router answers the sample and
//!    then the probe (the session goes on), or it aborts and closes.
//!
//! Samples with `expected_error`, messages only a router sends, and
//! transparent payloads (payload passthru mode) when the router does not
//! announce that mode must get ABORT `wamp.error.protocol_violation` and a
//! closed connection; the sessions announce the mode themselves. Valid client messages must be answered as the spec says (see
//! [`plan`]). A client-to-router sample of an advanced feature the router
//! does not announce in WELCOME only needs a sane answer (a normal reply, or
//! ERROR/ABORT with a `wamp.error.*` URI) and a router that still accepts
//! sessions; what happened is printed.
//!
//! Multi-session vectors: the sessions join with JSON over WebSocket and the
//! sequence is played step by step. IDs the router assigns are bound on first
//! sight and must stay consistent; `expected_outcome` is checked against every
//! message the sessions received.
//!
//! Every problem is collected and the test fails once with the whole list;
//! the summary is printed either way (`cargo test --test tests testvectors --
//! --nocapture` shows it on success).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use switchyard::codec::{self, json, DecodeError};
use switchyard::wamp::message::Serializer;
use switchyard::wamp::{Dict, Message, Payload, Value};

use crate::common::*;

/// The vectors, relative to the repository (CI checks out `shared/` beside it).
const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/spec/testvectors");

/// Samples on which the router is known to disagree with the vectors:
/// (file below the vectors folder, sample or sequence description, why).
/// Their checks still run and are reported as known failures; a listed
/// sample that passes fails the test, so that it is taken off this list.
const KNOWN_FAILURES: &[(&str, &str, &str)] = &[];

const PV: &str = "wamp.error.protocol_violation";
/// HELLO.Details of the sessions that play single-message samples.
const PPT_ROLES: &str = r#"{"roles": {"publisher": {"features": {"payload_passthru_mode": true}}, "subscriber": {"features": {"payload_passthru_mode": true}}, "caller": {"features": {"payload_passthru_mode": true}}, "callee": {"features": {"payload_passthru_mode": true}}}}"#;
const NO_SUCH_REALM: &str = "wamp.error.no_such_realm";
const REALM: &str = "realm1";
const PROBE_REQUEST: u64 = 7_000_001;
const PROBE_TOPIC: &str = "switchyard.testvectors.probe";

/// Options/Details keys that put a message in payload passthru mode.
const PPT_KEYS: &[&str] = &[
    "enc_algo",
    "enc_serializer",
    "enc_key",
    "ppt_scheme",
    "ppt_serializer",
    "ppt_cipher",
    "ppt_keyid",
];

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[test]
fn every_test_vector_of_the_spec() {
    let root = Path::new(VECTORS);
    assert!(
        root.is_dir(),
        "the WAMP test vectors are missing: no folder {VECTORS}. The spec must be checked out as \
         shared/ beside the repository (as CI does); this test does not pass without it."
    );
    let mut files = Vec::new();
    json_files(root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no vector files (*.json) under {VECTORS}");

    // Retention off: samples are independent, and a retained event that an
    // earlier sample (PUBLISH with `retain`) left must not meet a later
    // SUBSCRIBE with `get_retained` (retention has its own tests).
    let router = Router::start_with(1, "\n[[realm]]\nname = \"realm1\"\nretention = false", "", &[]);
    let features = Features::of(&router);
    let mut report = Report::default();
    for path in &files {
        let rel = path.strip_prefix(root).unwrap_or(path).to_string_lossy().replace('\\', "/");
        let level = rel.split('/').next().unwrap_or_default().to_owned();
        *report.files.entry(level).or_default() += 1;
        let doc = match std::fs::read(path) {
            Ok(bytes) => match json::parse(&bytes) {
                Ok(doc) => doc,
                Err(e) => {
                    report.problems.push(format!("{rel}: not valid JSON: {e}"));
                    continue;
                }
            },
            Err(e) => {
                report.problems.push(format!("{rel}: cannot read: {e}"));
                continue;
            }
        };
        if get(&doc, "samples").is_some() {
            single_message_file(&router, &features, &rel, &doc, &mut report);
        } else if get(&doc, "sequence").is_some() {
            multi_session_file(&router, &rel, &doc, &mut report);
        } else {
            report.problems.push(format!(
                "{rel}: has neither \"samples\" nor \"sequence\": a vector format this test does not know"
            ));
        }
    }
    if let Err(e) = guarded(|| {
        let mut c = Client::join_ws(router.ws, Ser::Json);
        goodbye(&mut c)
    }) {
        report
            .problems
            .push(format!("after all vectors the router no longer accepts sessions: {e}"));
    }

    let (summary, mismatches, exercised) = report.finish();
    println!("{summary}");
    assert!(exercised > 0, "no test vector sample was exercised\n{summary}");
    assert!(
        mismatches.is_empty(),
        "{} problem(s) with the WAMP test vectors:\n  - {}\n\n{summary}",
        mismatches.len(),
        mismatches.join("\n  - ")
    );
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "json") && !(dir == Path::new(VECTORS) && path.ends_with("SCHEMA.json")) {
            out.push(path);
        }
    }
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A valid message the router must process normally.
    Accepted,
    /// A message the router must refuse (ABORT).
    Rejected,
    /// An advanced feature the router does not announce: any sane answer.
    Lenient,
}

/// Counts for one serializer; a case is one byte variant of one sample.
#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    accepted: usize,
    rejected: usize,
    lenient: usize,
    /// Failed, of samples in [`KNOWN_FAILURES`].
    known: usize,
    failed: usize,
    /// Of the rejected ones: refused by the codec, or decoded and refused by the router.
    by_codec: usize,
    by_router: usize,
}

#[derive(Debug, Default)]
struct Report {
    /// Files by level folder (singlemessage, multisession, ...).
    files: BTreeMap<String, usize>,
    samples: usize,
    wmsg_samples: usize,
    sequences: Vec<String>,
    tally: BTreeMap<&'static str, Tally>,
    /// Byte variants of serializers Switchyard does not speak.
    skipped: BTreeMap<String, usize>,
    lenient: Vec<String>,
    /// Problems by (file, sample description).
    by_sample: BTreeMap<(String, String), Vec<String>>,
    /// Problems not tied to a sample.
    problems: Vec<String>,
}

impl Report {
    /// The summary, the problems that fail the test, and the number of exercised cases.
    fn finish(self) -> (String, Vec<String>, usize) {
        let mut mismatches = self.problems;
        let mut known = Vec::new();
        for ((file, desc), problems) in &self.by_sample {
            let listed = KNOWN_FAILURES.iter().find(|(f, d, _)| f == file && d == desc);
            match (listed, problems.is_empty()) {
                (Some((_, _, why)), false) => known.push(format!("{file}: {desc:?}: {why}\n      {}", problems.join("\n      "))),
                (Some(_), true) => mismatches.push(format!(
                    "{file}: {desc:?} is listed in KNOWN_FAILURES but passes now: take it off the list"
                )),
                (None, false) => mismatches.extend(problems.iter().cloned()),
                (None, true) => {}
            }
        }
        for (file, desc, _) in KNOWN_FAILURES {
            if !self.by_sample.contains_key(&(file.to_string(), desc.to_string())) {
                mismatches.push(format!("KNOWN_FAILURES names {file}: {desc:?}, which no vector has"));
            }
        }

        let mut s = String::from("==== WAMP test vectors ====\n");
        let files: Vec<String> = self.files.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        s += &format!("files: {} ({})\n", self.files.values().sum::<usize>(), files.join(", "));
        s += &format!(
            "single-message samples: {} ({} with serialized bytes, {} wmsg validation samples encoded by the test in json and msgpack)\n",
            self.samples,
            self.samples - self.wmsg_samples,
            self.wmsg_samples
        );
        let mut exercised = 0;
        for (ser, t) in &self.tally {
            exercised += t.cases;
            s += &format!(
                "  {ser:<8} cases {:>4}: accepted {:>3}, rejected as expected {:>3} (by the codec {}, by the router {}), \
                 lenient (unannounced advanced feature) {}, known failures {}, failed {}\n",
                t.cases, t.accepted, t.rejected, t.by_codec, t.by_router, t.lenient, t.known, t.failed
            );
        }
        for (ser, n) in &self.skipped {
            s += &format!("  {ser:<8} skipped {n:>3} byte variants: Switchyard speaks JSON and MessagePack only\n");
        }
        s += &format!("multi-session sequences: {}\n", self.sequences.len());
        for q in &self.sequences {
            s += &format!("  {q}\n");
        }
        if !self.lenient.is_empty() {
            s += "advanced features the router does not announce (any sane answer passes):\n";
            for l in &self.lenient {
                s += &format!("  {l}\n");
            }
        }
        if !known.is_empty() {
            s += &format!("known failures (KNOWN_FAILURES, {}):\n", known.len());
            for k in &known {
                s += &format!("  {k}\n");
            }
        }
        s += &format!("problems: {}\n", mismatches.len());
        (s, mismatches, exercised)
    }
}

/// Runs `f`, turning a panic (a failed read, a timeout) into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {msg}"))
        }
    }
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Dict(d) => d.get(key),
        _ => None,
    }
}

fn get_in<'a>(v: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    v.and_then(|v| get(v, key))
}

fn elem(v: &Value, i: usize) -> Option<&Value> {
    match v {
        Value::List(l) => l.get(i),
        _ => None,
    }
}

fn as_u64(v: Option<&Value>) -> Option<u64> {
    match v {
        Some(Value::UInt(u)) => Some(*u),
        _ => None,
    }
}

fn as_str(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

fn as_list(v: Option<&Value>) -> &[Value] {
    match v {
        Some(Value::List(l)) => l,
        _ => &[],
    }
}

/// Compact JSON text of a value, shortened for messages.
fn text(v: &Value) -> String {
    let mut out = Vec::new();
    json::write_value(&mut out, v);
    let s = String::from_utf8_lossy(&out).into_owned();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// Equality as the vectors mean it: dictionaries regardless of key order,
/// numbers regardless of representation.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Dict(x), Value::Dict(y)) => x.0.len() == y.0.len() && x.0.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w))),
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w)),
        (Value::UInt(x), Value::UInt(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::UInt(_) | Value::Int(_) | Value::Float(_), Value::UInt(_) | Value::Int(_) | Value::Float(_)) => number(a) == number(b),
        _ => a == b,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::UInt(u) => Some(*u as f64),
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.is_ascii() || !s.len().is_multiple_of(2) {
        return Err(format!("bytes_hex is not hexadecimal: {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("bytes_hex: {e}")))
        .collect()
}

/// The bytes of one variant; where it gives several representations they must agree.
fn variant_bytes(v: &Value) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    if let Some(h) = as_str(get(v, "bytes_hex")) {
        all.push(unhex(h)?);
    }
    if let Some(t) = as_str(get(v, "bytes")) {
        all.push(t.as_bytes().to_vec());
    }
    if let Some(b) = as_str(get(v, "bytes_base64")) {
        all.push(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("bytes_base64: {e}"))?,
        );
    }
    match all.first() {
        None => Err("the variant has none of bytes, bytes_hex, bytes_base64".into()),
        Some(first) if all.iter().any(|x| x != first) => Err("the variant's bytes, bytes_hex and bytes_base64 disagree".into()),
        Some(first) => Ok(first.clone()),
    }
}

fn serializer(ser: Ser) -> Serializer {
    match ser {
        Ser::Json => Serializer::Json,
        Ser::MsgPack => Serializer::MsgPack,
        Ser::Cbor => Serializer::Cbor,
    }
}

fn ser_name(ser: Ser) -> &'static str {
    match ser {
        Ser::Json => "json",
        Ser::MsgPack => "msgpack",
        Ser::Cbor => "cbor",
    }
}

/// A message's name, positional fields after the type code (named as the
/// vectors name attributes), and whether Arguments/ArgumentsKw may follow.
type Layout = (&'static str, &'static [&'static str], bool);

fn layout(code: u64) -> Option<Layout> {
    Some(match code {
        1 => ("HELLO", &["realm", "details"], false),
        2 => ("WELCOME", &["session_id", "details"], false),
        3 => ("ABORT", &["details", "reason"], false),
        4 => ("CHALLENGE", &["method", "extra"], false),
        5 => ("AUTHENTICATE", &["signature", "extra"], false),
        6 => ("GOODBYE", &["details", "reason"], false),
        8 => ("ERROR", &["request_type", "request_id", "details", "error"], true),
        16 => ("PUBLISH", &["request_id", "options", "topic"], true),
        17 => ("PUBLISHED", &["request_id", "publication_id"], false),
        32 => ("SUBSCRIBE", &["request_id", "options", "topic"], false),
        33 => ("SUBSCRIBED", &["request_id", "subscription_id"], false),
        34 => ("UNSUBSCRIBE", &["request_id", "subscription_id"], false),
        35 => ("UNSUBSCRIBED", &["request_id"], false),
        36 => ("EVENT", &["subscription_id", "publication_id", "details"], true),
        48 => ("CALL", &["request_id", "options", "procedure"], true),
        49 => ("CANCEL", &["request_id", "options"], false),
        50 => ("RESULT", &["request_id", "details"], true),
        64 => ("REGISTER", &["request_id", "options", "procedure"], false),
        65 => ("REGISTERED", &["request_id", "registration_id"], false),
        66 => ("UNREGISTER", &["request_id", "registration_id"], false),
        67 => ("UNREGISTERED", &["request_id"], false),
        68 => ("INVOCATION", &["request_id", "registration_id", "details"], true),
        69 => ("INTERRUPT", &["request_id", "options"], false),
        70 => ("YIELD", &["request_id", "options"], true),
        _ => return None,
    })
}

fn code_of(name: &str) -> Option<u64> {
    (1..=70).find(|&c| layout(c).is_some_and(|(n, ..)| n == name))
}

/// The expected attributes of a raw message array (`wmsg`), by its layout.
fn positional_attributes(m: &Value) -> Option<Value> {
    let code = as_u64(elem(m, 0))?;
    let (_, fields, payload) = layout(code)?;
    let mut d = Dict::new().with("message_type", Value::UInt(code));
    for (i, f) in fields.iter().enumerate() {
        d.insert(*f, elem(m, i + 1)?.clone());
    }
    if payload {
        let n = fields.len() + 1;
        d.insert("args", elem(m, n).cloned().unwrap_or(Value::Null));
        d.insert("kwargs", elem(m, n + 1).cloned().unwrap_or(Value::Null));
    }
    Some(Value::Dict(d))
}

/// What the router decoded, under the vectors' attribute names.
fn attributes(m: &Message) -> Result<Dict, String> {
    let mut d = Dict::new().with("message_type", Value::UInt(m.message_type().code()));
    let dict = |x: &Dict| Value::Dict(x.clone());
    match m {
        Message::Hello { realm, details } => {
            for (k, v) in &details.0 {
                d.insert(k.clone(), v.clone());
            }
            d.insert("realm", realm.as_str().into());
            d.insert("details", dict(details));
        }
        Message::Abort { details, reason } | Message::Goodbye { details, reason } => {
            d.insert("details", dict(details));
            d.insert("reason", reason.as_str().into());
        }
        Message::Authenticate { signature, extra } => {
            d.insert("signature", signature.as_str().into());
            d.insert("extra", dict(extra));
        }
        Message::Error {
            request_type,
            request,
            details,
            error,
            payload,
        } => {
            d.insert("request_type", Value::UInt(*request_type));
            d.insert("request_id", Value::UInt(*request));
            d.insert("details", dict(details));
            d.insert("error", error.as_str().into());
            payload_attributes(&mut d, payload)?;
        }
        Message::Publish {
            request,
            options,
            topic,
            payload,
        } => {
            d.insert("request_id", Value::UInt(*request));
            d.insert("options", dict(options));
            d.insert("topic", topic.as_str().into());
            payload_attributes(&mut d, payload)?;
        }
        Message::Subscribe { request, options, topic } => {
            d.insert("request_id", Value::UInt(*request));
            d.insert("options", dict(options));
            d.insert("topic", topic.as_str().into());
        }
        Message::Unsubscribe { request, subscription } => {
            d.insert("request_id", Value::UInt(*request));
            d.insert("subscription_id", Value::UInt(*subscription));
        }
        Message::Call {
            request,
            options,
            procedure,
            payload,
        } => {
            d.insert("request_id", Value::UInt(*request));
            d.insert("options", dict(options));
            d.insert("procedure", procedure.as_str().into());
            payload_attributes(&mut d, payload)?;
        }
        Message::Cancel { request, options } => {
            d.insert("request_id", Value::UInt(*request));
            d.insert("options", dict(options));
        }
        Message::Register {
            request,
            options,
            procedure,
        } => {
            d.insert("request_id", Value::UInt(*request));
            d.insert("options", dict(options));
            d.insert("procedure", procedure.as_str().into());
        }
        Message::Unregister { request, registration } => {
            d.insert("request_id", Value::UInt(*request));
            d.insert("registration_id", Value::UInt(*registration));
        }
        Message::Yield { request, options, payload } => {
            d.insert("request_id", Value::UInt(*request));
            d.insert("options", dict(options));
            payload_attributes(&mut d, payload)?;
        }
    }
    Ok(d)
}

/// `args` and `kwargs` of a raw payload: transcoded to JSON by the codec and
/// parsed; or `payload` (hex), for a transparent payload (one binary; the
/// `wmsg` samples write theirs as a string, which stays under `args`).
fn payload_attributes(d: &mut Dict, p: &Payload) -> Result<(), String> {
    let js = codec::transcode(p, Serializer::Json).map_err(|e| format!("the payload does not transcode to JSON: {e}"))?;
    let values = if js.count == 0 {
        Vec::new()
    } else {
        json::parse_payload(&js.raw).map_err(|e| format!("the transcoded payload does not parse: {e}"))?
    };
    if values.len() != p.count as usize {
        return Err(format!("the payload claims {} element(s) and holds {}", p.count, values.len()));
    }
    match values.first() {
        // a transparent payload: one opaque element instead of Arguments
        Some(Value::Bytes(b)) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            d.insert("args", Value::Null);
            d.insert("kwargs", Value::Null);
            d.insert("payload", Value::Str(hex));
        }
        _ => {
            d.insert("args", values.first().cloned().unwrap_or(Value::Null));
            d.insert("kwargs", values.get(1).cloned().unwrap_or(Value::Null));
            d.insert("payload", Value::Null);
        }
    }
    Ok(())
}

fn compare_attributes(decoded: &Dict, expected: &Value) -> Vec<String> {
    let Value::Dict(exp) = expected else {
        return vec!["expected_attributes is not a dictionary".into()];
    };
    exp.0
        .iter()
        .filter_map(|(k, v)| match decoded.get(k) {
            None => Some(format!("expected attribute {k:?} has no decoded counterpart")),
            Some(got) if !same(got, v) => Some(format!("attribute {k:?}: expected {}, decoded {}", text(v), text(got))),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// What the router announces
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Features {
    roles: Value,
}

impl Features {
    fn of(r: &Router) -> Features {
        let mut c = Client::ws(r.ws, Ser::Json);
        let w = c.hello();
        let roles = w.at(2).key("roles").clone();
        let _ = goodbye(&mut c);
        Features { roles }
    }

    fn announced(&self, role: &str, feature: &str) -> bool {
        matches!(get_in(get_in(get(&self.roles, role), "features"), feature), Some(Value::Bool(true)))
    }

    /// True for an `advanced.*` feature the router does not announce.
    fn unannounced(&self, feature: &str) -> bool {
        let Some(rest) = feature.strip_prefix("advanced.") else {
            return false;
        };
        let name = rest.rsplit('.').next().unwrap_or(rest);
        let role = if rest.starts_with("rpc.") {
            "dealer"
        } else if rest.starts_with("pubsub.") {
            "broker"
        } else {
            return true;
        };
        !self.announced(role, name)
    }

    /// Payload passthru mode for a message of type `code`.
    fn passthru(&self, code: u64) -> bool {
        self.announced(if code == 16 { "broker" } else { "dealer" }, "payload_passthru_mode")
    }
}

// ---------------------------------------------------------------------------
// What the router must do with a single message
// ---------------------------------------------------------------------------

/// What the codec must do with a sample.
#[derive(Debug, Clone, Copy)]
enum CodecWant {
    /// Decode it, with the expected attributes.
    Decode,
    /// The message must be refused; the codec or the router may do it.
    MayRefuse,
    /// Refuse it as a type never received from a client.
    Unexpected(u64),
    /// Either (unannounced advanced feature); if decoded, the attributes must match.
    Either,
}

/// A reply the router must send before the probe's answer.
#[derive(Debug, Clone)]
enum Reply {
    Published(u64),
    Subscribed(u64),
    Registered(u64),
    Error(u64, u64, &'static str),
    Goodbye(&'static str),
    Welcome,
}

impl Reply {
    fn matches(&self, m: &Value) -> bool {
        let code = as_u64(elem(m, 0));
        let at = |i| as_u64(elem(m, i));
        match *self {
            Reply::Published(req) => code == Some(PUBLISHED) && at(1) == Some(req) && at(2).is_some(),
            Reply::Subscribed(req) => code == Some(SUBSCRIBED) && at(1) == Some(req) && at(2).is_some(),
            Reply::Registered(req) => code == Some(REGISTERED) && at(1) == Some(req) && at(2).is_some(),
            Reply::Error(t, req, uri) => code == Some(ERROR) && at(1) == Some(t) && at(2) == Some(req) && as_str(elem(m, 4)) == Some(uri),
            Reply::Goodbye(uri) => code == Some(GOODBYE) && as_str(elem(m, 2)) == Some(uri),
            Reply::Welcome => code == Some(WELCOME),
        }
    }
}

/// The probe written right after the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// `[PUBLISH, PROBE_REQUEST, {"acknowledge": true}, PROBE_TOPIC]`: answered in a session.
    Publish,
    /// `[HELLO, "realm1", ...]`: answered outside a session.
    Hello,
}

impl Probe {
    fn for_state(joined: bool) -> Probe {
        if joined {
            Probe::Publish
        } else {
            Probe::Hello
        }
    }

    fn json(self) -> String {
        match self {
            Probe::Publish => format!(r#"[16, {PROBE_REQUEST}, {{"acknowledge": true}}, "{PROBE_TOPIC}"]"#),
            Probe::Hello => format!(r#"[1, "{REALM}", {ROLES}]"#),
        }
    }

    fn answered_by(self, m: &Value) -> bool {
        let code = as_u64(elem(m, 0));
        match self {
            Probe::Publish => code == Some(PUBLISHED) && as_u64(elem(m, 1)) == Some(PROBE_REQUEST),
            Probe::Hello => code == Some(WELCOME),
        }
    }
}

/// What the router must do over the socket.
#[derive(Debug, Clone)]
enum Want {
    /// Send exactly `replies`, then answer `probe` (the session goes on).
    Alive { replies: Vec<Reply>, probe: Probe },
    /// ABORT with this reason, a close frame (1002 for a protocol violation,
    /// else 1000), and the end of the connection.
    Abort(String),
    /// Close the connection without sending anything.
    Closed,
    /// Any sane answer: replies (ERRORs with `wamp.error.*`) and the probe's, or
    /// ABORT with a `wamp.error.*` reason.
    Lenient,
}

impl Want {
    fn alive(replies: Vec<Reply>) -> Want {
        Want::Alive {
            replies,
            probe: Probe::Publish,
        }
    }

    fn probe(&self, joined: bool) -> Probe {
        match self {
            Want::Alive { probe, .. } => *probe,
            _ => Probe::for_state(joined),
        }
    }

    fn describe(&self) -> String {
        match self {
            Want::Alive { replies, .. } if replies.is_empty() => "no reply, and the session going on".into(),
            Want::Alive { replies, .. } => format!("{replies:?}, and the session going on"),
            Want::Abort(uri) => format!("ABORT {uri} and the connection closed"),
            Want::Closed => "the connection closed without a reply".into(),
            Want::Lenient => "a normal reply, or ERROR/ABORT with a wamp.error.* URI".into(),
        }
    }
}

#[derive(Debug)]
struct Plan {
    class: Class,
    codec: CodecWant,
    in_session: Want,
    before_session: Want,
}

/// What a message looks like, from its generic parse.
#[derive(Debug, Default)]
struct Shape {
    request: u64,
    request_type: Option<u64>,
    acknowledge: bool,
    realm: Option<String>,
    /// Payload passthru options, or a payload that is not an Arguments list.
    transparent: bool,
}

impl Shape {
    fn of(code: u64, m: &Value) -> Shape {
        let e = |i| elem(m, i);
        let (request_type, request) = if code == ERROR {
            (as_u64(e(1)), as_u64(e(2)))
        } else {
            (None, as_u64(e(1)))
        };
        let (options, payload_at) = match code {
            16 | 48 => (e(2), Some(4)),
            70 => (e(2), Some(3)),
            8 => (e(3), Some(5)),
            _ => (None, None),
        };
        let ppt_option = options.is_some_and(|o| PPT_KEYS.iter().any(|k| get(o, k).is_some()));
        let opaque = payload_at.and_then(e).is_some_and(|p| !matches!(p, Value::List(_)));
        Shape {
            request: request.unwrap_or(0),
            request_type,
            acknowledge: code == PUBLISH && matches!(get_in(options, "acknowledge"), Some(Value::Bool(true))),
            realm: if code == HELLO { as_str(e(1)).map(str::to_owned) } else { None },
            transparent: ppt_option || opaque,
        }
    }
}

/// Message types a client sends to a router (EVENT_RECEIVED, 337, of the
/// advanced profile included).
fn client_sent(code: u64) -> bool {
    matches!(code, 1 | 3 | 5 | 6 | 8 | 16 | 32 | 34 | 48 | 49 | 64 | 66 | 70 | 337)
}

/// Message types Switchyard's codec decodes.
fn decodable(code: u64) -> bool {
    matches!(code, 1 | 3 | 5 | 6 | 8 | 16 | 32 | 34 | 48 | 49 | 64 | 66 | 70)
}

/// The expectations for a sample of type `code`.
fn plan(code: u64, shape: &Shape, invalid: Option<&str>, unannounced: bool, features: &Features) -> Plan {
    let pv = || Want::Abort(PV.into());
    // Before HELLO only HELLO and ABORT are acceptable.
    let before = match code {
        1 if shape.realm.as_deref() == Some(REALM) => Want::alive(vec![Reply::Welcome]),
        1 => Want::Abort(NO_SUCH_REALM.into()),
        3 => Want::Closed,
        _ => pv(),
    };
    let refuse = if decodable(code) {
        CodecWant::MayRefuse
    } else {
        CodecWant::Unexpected(code)
    };
    if let Some(kind) = invalid {
        let uri = if kind.contains('.') {
            kind.to_owned()
        } else {
            format!("wamp.error.{kind}")
        };
        return Plan {
            class: Class::Rejected,
            codec: refuse,
            in_session: Want::Abort(uri.clone()),
            before_session: if code == HELLO { Want::Abort(uri) } else { before },
        };
    }
    let rejected = |codec| Plan {
        class: Class::Rejected,
        codec,
        in_session: pv(),
        before_session: pv(),
    };
    if !client_sent(code) {
        // Only a router sends it (the spec's protocol errors).
        return rejected(refuse);
    }
    if shape.transparent && !features.passthru(code) {
        // Payload passthru mode used with a router that does not announce it.
        return rejected(refuse);
    }
    if unannounced {
        return Plan {
            class: Class::Lenient,
            codec: if decodable(code) {
                CodecWant::Either
            } else {
                CodecWant::Unexpected(code)
            },
            in_session: Want::Lenient,
            before_session: before,
        };
    }
    let req = shape.request;
    let accepted = |in_session| Plan {
        class: Class::Accepted,
        codec: CodecWant::Decode,
        in_session,
        before_session: before.clone(),
    };
    match code {
        // A second HELLO in a session is a protocol error; before one, see `before`.
        1 => accepted(pv()),
        // ABORT from a client ends the session; no reply.
        3 => accepted(Want::Closed),
        // AUTHENTICATE is only valid after a CHALLENGE, which this router never sends.
        5 => Plan {
            class: Class::Rejected,
            codec: CodecWant::Decode,
            in_session: pv(),
            before_session: pv(),
        },
        6 => accepted(Want::Alive {
            replies: vec![Reply::Goodbye("wamp.close.goodbye_and_out")],
            probe: Probe::Hello,
        }),
        // ERROR from a client answers an INVOCATION (an unknown one is ignored);
        // any other REQUEST.Type is a protocol error.
        8 if shape.request_type == Some(68) => accepted(Want::alive(vec![])),
        8 => Plan {
            class: Class::Rejected,
            codec: CodecWant::Decode,
            in_session: pv(),
            before_session: pv(),
        },
        16 if shape.acknowledge => accepted(Want::alive(vec![Reply::Published(req)])),
        16 => accepted(Want::alive(vec![])),
        32 => accepted(Want::alive(vec![Reply::Subscribed(req)])),
        34 => accepted(Want::alive(vec![Reply::Error(34, req, "wamp.error.no_such_subscription")])),
        48 => accepted(Want::alive(vec![Reply::Error(48, req, "wamp.error.no_such_procedure")])),
        // CANCEL of a call that is not (or no longer) pending is ignored.
        49 => accepted(Want::alive(vec![])),
        64 => accepted(Want::alive(vec![Reply::Registered(req)])),
        66 => accepted(Want::alive(vec![Reply::Error(66, req, "wamp.error.no_such_registration")])),
        // YIELD for an unknown invocation is ignored.
        70 => accepted(Want::alive(vec![])),
        _ => Plan {
            class: Class::Lenient,
            codec: CodecWant::Either,
            in_session: Want::Lenient,
            before_session: before,
        },
    }
}

// ---------------------------------------------------------------------------
// Over the socket
// ---------------------------------------------------------------------------

#[derive(Debug)]
enum End {
    ProbeAnswered,
    Abort {
        reason: String,
        message: String,
        close: Result<(), String>,
    },
    Closed(String),
}

#[derive(Debug)]
struct Observed {
    /// Messages before the end.
    before: Vec<Value>,
    end: End,
}

fn describe(obs: &Observed) -> String {
    let mut parts: Vec<String> = obs.before.iter().map(text).collect();
    parts.push(match &obs.end {
        End::ProbeAnswered => "the probe answered (session going on)".into(),
        End::Abort { reason, message, close } => {
            let mut s = format!("ABORT {reason}");
            if !message.is_empty() {
                s += &format!(" ({message:?})");
            }
            if let Err(e) = close {
                s += &format!(", but {e}");
            }
            s
        }
        End::Closed(how) => format!("connection closed without ABORT ({how})"),
    });
    parts.join(" -> ")
}

/// Opens a WebSocket connection (with a session when `joined`), writes the
/// sample and the probe in one go, and reads until the probe's answer, an
/// ABORT or the end of the connection. A session still open is closed with
/// GOODBYE, so that it leaves before the next case.
fn observe(r: &Router, ser: Ser, joined: bool, sample: &[u8], probe: Probe) -> Result<Observed, String> {
    guarded(|| {
        let mut c = Client::ws(r.ws, ser);
        if joined {
            // a client that announces payload passthru mode, as one that
            // sends the transparent samples must
            c.send_json(&format!(r#"[1, "{REALM}", {PPT_ROLES}]"#));
            c.session = c.expect(WELCOME).at(1).u();
        }
        let op = match ser {
            Ser::Json => ws_op::TEXT,
            Ser::MsgPack | Ser::Cbor => ws_op::BINARY,
        };
        let mut frames = ws_frame(true, op, sample, true);
        frames.extend(ws_frame(true, op, &encode(ser, &parse_json(&probe.json())), true));
        c.conn.write(&frames);
        let mut before = Vec::new();
        let end = loop {
            match c.recv() {
                Incoming::Message(m) => {
                    let v = codec::parse_value(serializer(ser), &m).map_err(|e| format!("the router sent an undecodable message: {e}"))?;
                    if as_u64(elem(&v, 0)) == Some(ABORT) {
                        let reason = as_str(elem(&v, 2)).unwrap_or_default().to_owned();
                        let message = as_str(get_in(elem(&v, 1), "message")).unwrap_or_default().to_owned();
                        let close = closing(&mut c, &reason);
                        break End::Abort { reason, message, close };
                    }
                    if probe.answered_by(&v) {
                        break End::ProbeAnswered;
                    }
                    before.push(v);
                    if before.len() > 64 {
                        return Err("more than 64 messages in reply to one sample".into());
                    }
                }
                Incoming::Close(code, reason) => {
                    c.conn.expect_eof();
                    break End::Closed(format!("WebSocket close {code} {reason:?}"));
                }
                Incoming::Eof => break End::Closed("TCP end of stream".into()),
                Incoming::Ping(_) | Incoming::Pong(_) => {}
            }
        };
        if matches!(end, End::ProbeAnswered) {
            goodbye(&mut c).map_err(|e| {
                format!(
                    "{}; then GOODBYE failed: {e}",
                    describe(&Observed {
                        before: before.clone(),
                        end: End::ProbeAnswered
                    })
                )
            })?;
        }
        Ok(Observed { before, end })
    })
}

/// After an ABORT: a close frame (1002 after a protocol violation, 1000
/// otherwise), then the end of the connection.
fn closing(c: &mut Client, reason: &str) -> Result<(), String> {
    let want = if reason == "wamp.error.protocol_violation" { 1002 } else { 1000 };
    match c.recv() {
        Incoming::Close(code, _) if code == want => {}
        other => return Err(format!("expected a close frame ({want}) after ABORT {reason}, got {other:?}")),
    }
    match c.recv() {
        Incoming::Eof => Ok(()),
        other => Err(format!("expected the connection to end after the close frame, got {other:?}")),
    }
}

/// GOODBYE, and its answer (anything else in between is skipped).
fn goodbye(c: &mut Client) -> Result<(), String> {
    c.send_json(r#"[6, {}, "wamp.close.close_realm"]"#);
    for _ in 0..64 {
        match c.recv() {
            Incoming::Message(m) => {
                let v = codec::parse_value(serializer(c.ser), &m).map_err(|e| e.to_string())?;
                if as_u64(elem(&v, 0)) == Some(GOODBYE) {
                    return Ok(());
                }
            }
            Incoming::Ping(_) | Incoming::Pong(_) => {}
            other => return Err(format!("expected GOODBYE, got {other:?}")),
        }
    }
    Err("no GOODBYE after 64 messages".into())
}

fn check(want: &Want, obs: &Observed) -> Result<(), String> {
    let fail = || Err(format!("expected {}; got {}", want.describe(), describe(obs)));
    match (want, &obs.end) {
        (Want::Alive { replies, .. }, End::ProbeAnswered) => {
            if obs.before.len() == replies.len() && replies.iter().zip(&obs.before).all(|(r, m)| r.matches(m)) {
                Ok(())
            } else {
                fail()
            }
        }
        (Want::Abort(uri), End::Abort { reason, close, .. }) if reason == uri && obs.before.is_empty() => {
            close.clone().map_err(|e| format!("ABORT {reason} as expected, but {e}"))
        }
        (Want::Closed, End::Closed(_)) if obs.before.is_empty() => Ok(()),
        (Want::Lenient, End::ProbeAnswered) => {
            let sane = obs
                .before
                .iter()
                .all(|m| as_u64(elem(m, 0)) != Some(ERROR) || as_str(elem(m, 4)).is_some_and(|u| u.starts_with("wamp.error.")));
            if sane {
                Ok(())
            } else {
                fail()
            }
        }
        (Want::Lenient, End::Abort { reason, .. }) if reason.starts_with("wamp.error.") => Ok(()),
        _ => fail(),
    }
}

// ---------------------------------------------------------------------------
// Single-message vectors
// ---------------------------------------------------------------------------

struct Case<'a> {
    tag: String,
    ser: Ser,
    bytes: Vec<u8>,
    /// The attributes a decoded message must have (if known).
    expected: Option<&'a Value>,
    invalid: Option<&'a str>,
    unannounced: bool,
    /// The sample is in [`KNOWN_FAILURES`].
    known: bool,
}

fn single_message_file(r: &Router, features: &Features, rel: &str, doc: &Value, report: &mut Report) {
    let file_code = as_u64(get(doc, "wamp_message_code"));
    let feature = as_str(get(doc, "feature")).unwrap_or("basic");
    let unannounced = features.unannounced(feature);
    let samples = as_list(get(doc, "samples"));
    if samples.is_empty() {
        report.problems.push(format!("{rel}: no samples"));
    }
    for (i, sample) in samples.iter().enumerate() {
        report.samples += 1;
        let desc = as_str(get(sample, "description"))
            .map(str::to_owned)
            .unwrap_or_else(|| format!("sample {i}"));
        let head = format!("{rel} #{i} {desc:?}");
        let known = KNOWN_FAILURES.iter().any(|(f, d, _)| *f == rel && *d == desc);
        let mut problems = Vec::new();
        let invalid = get(sample, "expected_error").map(|e| as_str(get(e, "type")).unwrap_or("protocol_violation"));
        if let Some(wmsg) = get(sample, "wmsg") {
            report.wmsg_samples += 1;
            if as_u64(elem(wmsg, 0)) != file_code {
                problems.push(format!("{head}: wmsg type {:?} is not the file's {file_code:?}", elem(wmsg, 0)));
            }
            let expected = positional_attributes(wmsg);
            for ser in [Ser::Json, Ser::MsgPack] {
                let case = Case {
                    tag: format!("{head} [{} from wmsg]", ser_name(ser)),
                    ser,
                    bytes: encode(ser, wmsg),
                    expected: expected.as_ref(),
                    invalid,
                    unannounced,
                    known,
                };
                problems.extend(run_case(r, features, &case, report));
            }
        } else if let Some(Value::Dict(sers)) = get(sample, "serializers") {
            let ea = get(sample, "expected_attributes");
            if ea.is_some() && as_u64(get_in(ea, "message_type")) != file_code {
                problems.push(format!("{head}: expected_attributes.message_type is not the file's {file_code:?}"));
            }
            for (name, variants) in &sers.0 {
                let variants = as_list(Some(variants));
                let ser = match name.as_str() {
                    "json" => Ser::Json,
                    "msgpack" => Ser::MsgPack,
                    _ => {
                        *report.skipped.entry(name.clone()).or_default() += variants.len();
                        continue;
                    }
                };
                for (j, v) in variants.iter().enumerate() {
                    let tag = format!("{head} [{name} #{j}]");
                    match variant_bytes(v) {
                        Ok(bytes) => {
                            let case = Case {
                                tag,
                                ser,
                                bytes,
                                expected: ea,
                                invalid,
                                unannounced,
                                known,
                            };
                            problems.extend(run_case(r, features, &case, report));
                        }
                        Err(e) => problems.push(format!("{tag}: {e}")),
                    }
                }
            }
        } else {
            problems.push(format!("{head}: neither wmsg nor serializers"));
        }
        report.by_sample.entry((rel.to_owned(), desc)).or_default().extend(problems);
    }
}

/// The codec and socket checks of one byte variant; returns its problems.
fn run_case(r: &Router, features: &Features, case: &Case<'_>, report: &mut Report) -> Vec<String> {
    let tag = &case.tag;
    let mut problems = Vec::new();
    fn tally(report: &mut Report, ser: Ser) -> &mut Tally {
        report.tally.entry(ser_name(ser)).or_default()
    }
    let parsed = match codec::parse_value(serializer(case.ser), &case.bytes) {
        Ok(v) => v,
        Err(e) => {
            tally(report, case.ser).cases += 1;
            tally(report, case.ser).failed += 1;
            return vec![format!(
                "{tag}: the vector's bytes are not a valid {} value: {e}",
                ser_name(case.ser)
            )];
        }
    };
    let Some(code) = as_u64(elem(&parsed, 0)) else {
        tally(report, case.ser).cases += 1;
        tally(report, case.ser).failed += 1;
        return vec![format!("{tag}: not a WAMP message array: {}", text(&parsed))];
    };
    let shape = Shape::of(code, &parsed);
    let plan = plan(code, &shape, case.invalid, case.unannounced, features);

    // 1. The codec.
    let decoded = codec::decode(serializer(case.ser), &Bytes::copy_from_slice(&case.bytes));
    let mut by_codec = false;
    let mut codec_note = String::new();
    match (plan.codec, &decoded) {
        (CodecWant::Decode | CodecWant::Either, Ok(m)) => {
            if m.message_type().code() != code {
                problems.push(format!("{tag}: decoded as type {}, not {code}", m.message_type().code()));
            }
            if let Some(expected) = case.expected {
                match attributes(m) {
                    Ok(attrs) => problems.extend(
                        compare_attributes(&attrs, expected)
                            .into_iter()
                            .map(|p| format!("{tag}: codec: {p}")),
                    ),
                    Err(e) => problems.push(format!("{tag}: codec: {e}")),
                }
            }
        }
        (CodecWant::Decode, Err(e)) => problems.push(format!("{tag}: the codec refused a valid sample: {e}")),
        (CodecWant::Either, Err(e)) => codec_note = format!("codec: {e}; "),
        (CodecWant::MayRefuse, Ok(_)) => {}
        (CodecWant::MayRefuse, Err(_)) => by_codec = true,
        (CodecWant::Unexpected(c), Err(DecodeError::UnexpectedType(got))) if *got == c => by_codec = true,
        (CodecWant::Unexpected(c), other) => problems.push(format!(
            "{tag}: the codec must refuse a type a client never sends as UnexpectedType({c}), got {other:?}"
        )),
    }

    // 2. Over the socket, in a session and before one.
    let mut lenient_seen = Vec::new();
    for (joined, want) in [(true, &plan.in_session), (false, &plan.before_session)] {
        let place = if joined { "after WELCOME" } else { "before HELLO" };
        match observe(r, case.ser, joined, &case.bytes, want.probe(joined)) {
            Ok(obs) => match check(want, &obs) {
                Ok(()) if matches!(want, Want::Lenient) => lenient_seen.push(format!("{place}: {}", describe(&obs))),
                Ok(()) => {}
                Err(e) => problems.push(format!("{tag} {place}: {e}")),
            },
            Err(e) => problems.push(format!("{tag} {place}: {e}")),
        }
    }
    if plan.class == Class::Lenient {
        if let Err(e) = guarded(|| {
            let mut c = Client::join_ws(r.ws, Ser::Json);
            goodbye(&mut c)
        }) {
            problems.push(format!("{tag}: the router no longer accepts sessions: {e}"));
        }
        report.lenient.push(format!("{tag}: {codec_note}{}", lenient_seen.join("; ")));
    }

    let t = tally(report, case.ser);
    t.cases += 1;
    if !problems.is_empty() {
        if case.known {
            t.known += 1;
        } else {
            t.failed += 1;
        }
    } else {
        match plan.class {
            Class::Accepted => t.accepted += 1,
            Class::Lenient => t.lenient += 1,
            Class::Rejected => {
                t.rejected += 1;
                if by_codec {
                    t.by_codec += 1;
                } else {
                    t.by_router += 1;
                }
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// Multi-session vectors
// ---------------------------------------------------------------------------

/// The kind of a router-assigned ID in `field` of a message of type `code`,
/// as the router sends it or as a client refers to it.
fn id_kind(code: u64, field: &str, msg: &Value) -> Option<&'static str> {
    match (field, code) {
        ("subscription_id", 33 | 34 | 36) => Some("subscription"),
        ("publication_id", 17 | 36) => Some("publication"),
        ("registration_id", 65 | 66 | 68) => Some("registration"),
        ("session_id", 2) => Some("session"),
        ("request_id", 68..=70) => Some("invocation"),
        ("request_id", 8) if as_u64(get(msg, "request_type")) == Some(68) => Some("invocation"),
        _ => None,
    }
}

/// A field of a sequence message; Options/Details/Extra default to `{}`.
fn field_value(msg: &Value, field: &str) -> Option<Value> {
    match get(msg, field) {
        Some(v) => Some(v.clone()),
        None if matches!(field, "options" | "details" | "extra") => Some(Value::Dict(Dict::new())),
        None => None,
    }
}

/// Arguments and ArgumentsKw of a sequence message (null counts as absent).
fn payload_of(msg: &Value) -> (Option<&Value>, Option<&Value>) {
    let present = |k| get(msg, k).filter(|v| !matches!(v, Value::Null));
    (present("args"), present("kwargs"))
}

/// The wire form of a message a session sends, with IDs the router
/// assigned earlier put in place of the vector's.
fn build_message(code: u64, msg: &Value, bind: &HashMap<(&'static str, u64), u64>) -> Result<Value, String> {
    let (name, fields, payload) = layout(code).ok_or_else(|| format!("no layout for type {code}"))?;
    let mut l = vec![Value::UInt(code)];
    for f in fields {
        let v = field_value(msg, f).ok_or_else(|| format!("the vector's {name} has no {f}"))?;
        let v = match (id_kind(code, f, msg), as_u64(Some(&v))) {
            (Some(kind), Some(x)) => Value::UInt(*bind.get(&(kind, x)).unwrap_or(&x)),
            _ => v,
        };
        l.push(v);
    }
    if payload {
        match payload_of(msg) {
            (args, Some(kwargs)) => {
                l.push(args.cloned().unwrap_or(Value::List(Vec::new())));
                l.push(kwargs.clone());
            }
            (Some(args), None) => l.push(args.clone()),
            (None, None) => {}
        }
    }
    Ok(Value::List(l))
}

/// Compares a message the router sent with the vector's; router-assigned IDs
/// are bound on first sight and must match afterwards.
fn compare_router_message(code: u64, msg: &Value, got: &Value, bind: &mut HashMap<(&'static str, u64), u64>) -> Result<(), String> {
    let (name, fields, payload) = layout(code).ok_or_else(|| format!("no layout for type {code}"))?;
    if as_u64(elem(got, 0)) != Some(code) {
        return Err(format!("expected {name}"));
    }
    for (i, f) in fields.iter().enumerate() {
        let g = elem(got, i + 1).ok_or_else(|| format!("no {f}"))?;
        let e = field_value(msg, f).ok_or_else(|| format!("the vector's {name} has no {f}"))?;
        if let Some(kind) = id_kind(code, f, msg) {
            let (Some(ev), Some(gv)) = (as_u64(Some(&e)), as_u64(Some(g))) else {
                return Err(format!("{f} is not an ID"));
            };
            match bind.get(&(kind, ev)) {
                Some(&b) if b != gv => return Err(format!("{f} is {gv}, but the same {kind} was {b} before")),
                Some(_) => {}
                None => {
                    bind.insert((kind, ev), gv);
                }
            }
        } else if !same(&e, g) {
            return Err(format!("{f}: expected {}, got {}", text(&e), text(g)));
        }
    }
    let n = fields.len() + 1;
    if payload {
        let (ea, ek) = payload_of(msg);
        let (ga, gk) = (elem(got, n), elem(got, n + 1));
        let same_opt = |e: Option<&Value>, g: Option<&Value>| match (e, g) {
            (None, None) => true,
            (Some(e), Some(g)) => same(e, g),
            // An empty Arguments list stands for none when ArgumentsKw follows.
            (None, Some(Value::List(l))) => l.is_empty() && ek.is_some(),
            _ => false,
        };
        if !same_opt(ea, ga) || !same_opt(ek, gk) || elem(got, n + 2).is_some() {
            return Err("the payload differs".into());
        }
    } else if elem(got, n).is_some() {
        return Err("extra elements".into());
    }
    Ok(())
}

/// Everything the router has sent to `c` so far (a round trip makes sure).
/// The round trip is `c`'s own: it covers what `c`'s own messages caused (on
/// the one-shard router of this test), not what another session's messages
/// cause for `c`. A sequence in which one session's message must not reach
/// another needs a sentinel from that session first.
fn pull(c: &mut Client, queue: &mut VecDeque<Value>, events: &mut usize) {
    for m in c.sync() {
        if m.code() == EVENT {
            *events += 1;
        }
        queue.push_back(m);
    }
}

fn multi_session_file(r: &Router, rel: &str, doc: &Value, report: &mut Report) {
    let desc = as_str(get(doc, "description")).unwrap_or("sequence").to_owned();
    let problems = match guarded(|| play(r, doc)) {
        Ok((problems, summary)) => {
            report.sequences.push(format!("{rel}: {summary}"));
            problems
        }
        Err(e) => {
            report.sequences.push(format!("{rel}: could not be played"));
            vec![e]
        }
    };
    report
        .by_sample
        .entry((rel.to_owned(), desc))
        .or_default()
        .extend(problems.into_iter().map(|p| format!("{rel}: {p}")));
}

/// Plays one sequence; returns its problems and a one-line summary.
fn play(r: &Router, doc: &Value) -> Result<(Vec<String>, String), String> {
    let mut problems = Vec::new();
    let mut sessions: BTreeMap<String, Client> = BTreeMap::new();
    for s in as_list(get(doc, "sessions")) {
        let id = as_str(get(s, "session_id")).ok_or("a session without session_id")?.to_owned();
        let realm = as_str(get(s, "realm")).unwrap_or(REALM);
        let roles = as_list(get(s, "roles"));
        let details = if roles.is_empty() {
            parse_json(ROLES)
        } else {
            let roles = roles
                .iter()
                .filter_map(|r| as_str(Some(r)))
                .fold(Dict::new(), |d, r| d.with(r, Value::Dict(Dict::new())));
            Value::Dict(Dict::new().with("roles", Value::Dict(roles)))
        };
        let mut c = Client::ws(r.ws, Ser::Json);
        c.send(&Value::List(vec![Value::UInt(HELLO), realm.into(), details]));
        let w = c.recv_msg();
        if as_u64(elem(&w, 0)) != Some(WELCOME) {
            return Err(format!("session {id} could not join realm {realm}: {}", text(&w)));
        }
        c.session = w.at(1).u();
        sessions.insert(id, c);
    }
    if sessions.is_empty() {
        return Err("no sessions".into());
    }

    let mut queues: BTreeMap<String, VecDeque<Value>> = BTreeMap::new();
    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    let mut bind: HashMap<(&'static str, u64), u64> = HashMap::new();
    let steps = as_list(get(doc, "sequence"));
    for (i, step) in steps.iter().enumerate() {
        let n = as_u64(get(step, "step")).unwrap_or(i as u64 + 1);
        if let Some(ms) = as_u64(get_in(get(step, "timing"), "delay_ms")) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        let from = as_str(get(step, "from")).unwrap_or_default();
        let to = as_str(get(step, "to")).unwrap_or_default();
        let Some(msg) = get(step, "message") else {
            problems.push(format!("step {n}: no message"));
            continue;
        };
        let tname = as_str(get(msg, "type")).unwrap_or_default();
        let Some(code) = code_of(tname) else {
            problems.push(format!("step {n}: message type {tname:?} is unknown to this test"));
            continue;
        };
        if from != "router" {
            let Some(c) = sessions.get_mut(from) else {
                problems.push(format!("step {n}: unknown sender {from:?}"));
                continue;
            };
            if to != "router" {
                problems.push(format!("step {n}: a session can only send to the router, not {to:?}"));
                continue;
            }
            match build_message(code, msg, &bind) {
                Ok(v) => c.send(&v),
                Err(e) => problems.push(format!("step {n}: {e}")),
            }
        } else {
            let Some(c) = sessions.get_mut(to) else {
                problems.push(format!("step {n}: unknown recipient {to:?}"));
                continue;
            };
            let queue = queues.entry(to.to_owned()).or_default();
            if queue.is_empty() {
                pull(c, queue, events.entry(to.to_owned()).or_default());
            }
            match queue.pop_front() {
                None => problems.push(format!("step {n}: expected {tname} for {to}; the router sent nothing")),
                Some(got) => {
                    if let Err(e) = compare_router_message(code, msg, &got, &mut bind) {
                        let assertion = as_str(get(step, "assertion")).map(|a| format!(" ({a})")).unwrap_or_default();
                        problems.push(format!("step {n}: {tname} to {to}{assertion}: {e}; got {}", text(&got)));
                    }
                }
            }
        }
    }
    for (id, c) in sessions.iter_mut() {
        let queue = queues.entry(id.clone()).or_default();
        pull(c, queue, events.entry(id.clone()).or_default());
        if !queue.is_empty() {
            let extra: Vec<String> = queue.iter().map(text).collect();
            problems.push(format!("{id} got messages the sequence does not list: {}", extra.join(", ")));
        }
    }

    let total: usize = events.values().sum();
    let recipients: BTreeSet<&str> = events.iter().filter(|(_, n)| **n > 0).map(|(s, _)| s.as_str()).collect();
    let mut checked = Vec::new();
    if let Some(Value::Dict(outcome)) = get(doc, "expected_outcome") {
        for (k, v) in &outcome.0 {
            if k == "reason" {
                continue;
            }
            let ok = if let Some(s) = k.strip_suffix("_receives_event") {
                match v {
                    Value::Bool(b) if sessions.contains_key(s) => Some(recipients.contains(s) == *b),
                    _ => None,
                }
            } else if k == "event_count" {
                as_u64(Some(v)).map(|n| n as usize == total)
            } else if k == "event_recipients" {
                let want: Option<BTreeSet<&str>> = match v {
                    Value::List(l) => l.iter().map(|x| as_str(Some(x))).collect(),
                    _ => None,
                };
                want.map(|w| w == recipients)
            } else {
                None
            };
            match ok {
                Some(true) => checked.push(k.clone()),
                Some(false) => problems.push(format!(
                    "expected_outcome.{k} = {}: events received per session {events:?}",
                    text(v)
                )),
                None => problems.push(format!("expected_outcome.{k} = {} is not understood by this test", text(v))),
            }
        }
    }
    for c in sessions.values_mut() {
        let _ = goodbye(c);
    }
    let summary = format!(
        "{} session(s), {} step(s), events received {events:?}, expected_outcome checked: {}",
        sessions.len(),
        steps.len(),
        if checked.is_empty() { "-".into() } else { checked.join(", ") }
    );
    Ok((problems, summary))
}
