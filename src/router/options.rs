//! Types of the Options a client sends, checked before routing: a predefined
//! option with a value of the wrong type is a protocol violation (the spec's
//! test vectors expect ABORT `wamp.error.protocol_violation`). Unknown options
//! are ignored, as the spec requires.

use crate::wamp::{Dict, Id, MatchPolicy, Message, Value};

#[derive(Clone, Copy)]
enum Kind {
    Bool,
    UInt,
    Str,
    /// A list of IDs.
    Ids,
    /// A list of strings.
    Strs,
    /// A list of dictionaries (`forward_for`).
    Dicts,
    /// `match`: one of the match policies.
    Policy,
    /// `mode` of CANCEL: skip, kill or killnowait.
    CancelMode,
    /// A duration in ms: a non-negative integer, or a non-negative finite
    /// float (autobahn-python sends what the application gives it).
    Millis,
    /// autobahn's payload transparency: `enc_algo` (null, cryptobox, mqtt,
    /// xbr) and `enc_serializer`.
    EncAlgo,
    EncSerializer,
}

/// The payload passthru attributes (PUBLISH, CALL, YIELD).
const PASSTHRU: &[(&str, Kind)] = &[
    ("ppt_scheme", Kind::Str),
    ("ppt_serializer", Kind::Str),
    ("ppt_cipher", Kind::Str),
    ("ppt_keyid", Kind::Str),
    ("enc_algo", Kind::EncAlgo),
    ("enc_serializer", Kind::EncSerializer),
    ("enc_key", Kind::Str),
];

const PUBLISH: &[(&str, Kind)] = &[
    ("acknowledge", Kind::Bool),
    ("exclude_me", Kind::Bool),
    ("exclude", Kind::Ids),
    ("exclude_authid", Kind::Strs),
    ("exclude_authrole", Kind::Strs),
    ("eligible", Kind::Ids),
    ("eligible_authid", Kind::Strs),
    ("eligible_authrole", Kind::Strs),
    ("retain", Kind::Bool),
    ("disclose_me", Kind::Bool),
    ("transaction_hash", Kind::Str),
    ("forward_for", Kind::Dicts),
];

const SUBSCRIBE: &[(&str, Kind)] = &[("match", Kind::Policy), ("get_retained", Kind::Bool), ("forward_for", Kind::Dicts)];

const REGISTER: &[(&str, Kind)] = &[
    ("match", Kind::Policy),
    ("invoke", Kind::Str),
    ("disclose_caller", Kind::Bool),
    ("concurrency", Kind::UInt),
    ("forward_for", Kind::Dicts),
];

const CALL: &[(&str, Kind)] = &[
    ("timeout", Kind::Millis),
    ("receive_progress", Kind::Bool),
    ("progress", Kind::Bool),
    ("disclose_me", Kind::Bool),
    ("forward_for", Kind::Dicts),
];

const YIELD: &[(&str, Kind)] = &[("progress", Kind::Bool), ("forward_for", Kind::Dicts)];

const CANCEL: &[(&str, Kind)] = &[("mode", Kind::CancelMode), ("forward_for", Kind::Dicts)];

fn fits(v: &Value, kind: Kind) -> bool {
    match kind {
        Kind::Bool => matches!(v, Value::Bool(_)),
        Kind::UInt => matches!(v, Value::UInt(_)),
        Kind::Str => matches!(v, Value::Str(_)),
        Kind::Ids => matches!(v, Value::List(l) if l.iter().all(|x| matches!(x, Value::UInt(_)) || x.as_id().is_some())),
        Kind::Strs => matches!(v, Value::List(l) if l.iter().all(|x| matches!(x, Value::Str(_)))),
        Kind::Dicts => matches!(v, Value::List(l) if l.iter().all(|x| matches!(x, Value::Dict(_)))),
        Kind::Policy => matches!(v, Value::Str(s) if MatchPolicy::parse(s).is_some()),
        Kind::CancelMode => matches!(v, Value::Str(s) if CancelMode::parse(s).is_some()),
        Kind::EncAlgo => matches!(v, Value::Str(s) if ["null", "cryptobox", "mqtt", "xbr"].contains(&s.as_str())),
        Kind::EncSerializer => {
            matches!(v, Value::Str(s) if ["null", "json", "msgpack", "cbor", "ubjson", "opaque", "flatbuffers"].contains(&s.as_str()))
        }
        Kind::Millis => match v {
            Value::UInt(_) => true,
            Value::Float(f) => f.is_finite() && *f >= 0.0,
            _ => false,
        },
    }
}

/// Checks `options` against the rule lists `rules` (a key's first rule
/// decides).
#[inline]
fn check_dict(message: &str, options: &Dict, rules: &[&[(&str, Kind)]]) -> Result<(), String> {
    if options.0.is_empty() {
        return Ok(());
    }
    check_keys(message, options, rules)
}

fn check_keys(message: &str, options: &Dict, rules: &[&[(&str, Kind)]]) -> Result<(), String> {
    for (key, value) in &options.0 {
        if let Some((_, kind)) = rules.iter().flat_map(|r| r.iter()).find(|(k, _)| k == key) {
            if !fits(value, *kind) {
                return Err(format!("{message}.Options.{key} has an invalid type or value"));
            }
        }
    }
    Ok(())
}

/// Checks PUBLISH options given another way (a testament's).
pub(super) fn check_publish(options: &Dict) -> Result<(), String> {
    check_dict("PUBLISH", options, &[PUBLISH, PASSTHRU])
}

/// Checks the Options of a message from a client.
pub(super) fn check(msg: &Message) -> Result<(), String> {
    match msg {
        Message::Publish { options, .. } => check_dict("PUBLISH", options, &[PUBLISH, PASSTHRU]),
        Message::Subscribe { options, .. } => check_dict("SUBSCRIBE", options, &[SUBSCRIBE]),
        Message::Register { options, .. } => check_dict("REGISTER", options, &[REGISTER]),
        Message::Call { options, .. } => check_dict("CALL", options, &[CALL, PASSTHRU]),
        Message::Yield { options, .. } => check_dict("YIELD", options, &[YIELD, PASSTHRU]),
        Message::Cancel { options, .. } => check_dict("CANCEL", options, &[CANCEL]),
        _ => Ok(()),
    }
}

// The typed forms, read once from options that passed `check`: the core
// reads fields, never a string key. Defaults are the spec's.

fn flag(options: &Dict, key: &str, default: bool) -> bool {
    options.get_bool(key).unwrap_or(default)
}

/// The payload passthru attributes of CALL, YIELD or PUBLISH options, to be
/// forwarded in the Details of INVOCATION, RESULT or EVENT: empty unless the
/// mode is in use, which the spec tells by a non-empty `ppt_scheme`
/// (autobahn's older "payload transparency" by `enc_algo`, with
/// `enc_serializer` and `enc_key`, forwarded the same way). The payload is
/// routed as ever, spliced as received or converted between serializers
/// like any other; in this mode it may also be one opaque binary instead of
/// an Arguments list (see the codec). `None` (no allocation, nothing to
/// drop) for the options of almost every message.
#[inline]
pub(super) fn passthru(options: &Dict) -> Option<Box<Dict>> {
    if options.0.is_empty() {
        return None;
    }
    passthru_in(options)
}

fn passthru_in(options: &Dict) -> Option<Box<Dict>> {
    let in_use = |k| options.get_str(k).is_some_and(|s| !s.is_empty());
    if !in_use("ppt_scheme") && !in_use("enc_algo") {
        return None;
    }
    Some(Box::new(Dict(
        options
            .0
            .iter()
            .filter(|(k, _)| PASSTHRU.iter().any(|(p, _)| p == k))
            .cloned()
            .collect(),
    )))
}

fn policy(options: &Dict) -> MatchPolicy {
    options.get_str("match").and_then(MatchPolicy::parse).unwrap_or(MatchPolicy::Exact)
}

/// The elements of a list `pick` takes, sorted and without duplicates;
/// `None` for no list.
fn sorted<T: Ord>(list: Option<&Value>, pick: impl Fn(&Value) -> Option<T>) -> Option<Vec<T>> {
    let Some(Value::List(l)) = list else { return None };
    let mut v: Vec<T> = l.iter().filter_map(pick).collect();
    v.sort_unstable();
    v.dedup();
    Some(v)
}

/// Subscriber black- and whitelisting (PUBLISH `exclude`, `eligible`,
/// `exclude_authid`, `eligible_authid`, `exclude_authrole`,
/// `eligible_authrole`): a subscriber receives the event only if it is in
/// every whitelist given and in no blacklist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Receivers {
    pub exclude: Vec<Id>,
    pub eligible: Option<Vec<Id>>,
    pub exclude_authid: Vec<String>,
    pub eligible_authid: Option<Vec<String>>,
    pub exclude_authrole: Vec<String>,
    pub eligible_authrole: Option<Vec<String>>,
}

impl Receivers {
    /// Reads the lists from options that passed `check` (or from the
    /// durable history's record of them); `None` when none is given.
    pub(super) fn read(options: &Dict) -> Option<Box<Self>> {
        const KEYS: [&str; 6] = [
            "exclude",
            "eligible",
            "exclude_authid",
            "eligible_authid",
            "exclude_authrole",
            "eligible_authrole",
        ];
        if !options.0.iter().any(|(k, _)| KEYS.contains(&k.as_str())) {
            return None;
        }
        // sorted once, so that each subscriber is looked up, not scanned for
        let ids = |key| {
            sorted(options.get(key), |v| match v {
                Value::UInt(u) => Some(*u),
                v => v.as_id(),
            })
        };
        let strs = |key| sorted(options.get(key), |v| if let Value::Str(s) = v { Some(s.clone()) } else { None });
        Some(Box::new(Receivers {
            exclude: ids("exclude").unwrap_or_default(),
            eligible: ids("eligible"),
            exclude_authid: strs("exclude_authid").unwrap_or_default(),
            eligible_authid: strs("eligible_authid"),
            exclude_authrole: strs("exclude_authrole").unwrap_or_default(),
            eligible_authrole: strs("eligible_authrole"),
        }))
    }

    /// Whether the subscriber `session` (with `authid`, `authrole`) gets
    /// the event, as the spec combines the lists.
    pub fn admit(&self, session: Id, authid: &str, authrole: &str) -> bool {
        // the lists are sorted (`read` and `extras_from_dict` sort them)
        let has = |l: &[String], v: &str| l.binary_search_by(|x| x.as_str().cmp(v)).is_ok();
        self.eligible.as_ref().is_none_or(|l| l.binary_search(&session).is_ok())
            && self.eligible_authid.as_ref().is_none_or(|l| has(l, authid))
            && self.eligible_authrole.as_ref().is_none_or(|l| has(l, authrole))
            && self.exclude.binary_search(&session).is_err()
            && !has(&self.exclude_authid, authid)
            && !has(&self.exclude_authrole, authrole)
    }

    /// About the memory the lists take (for the byte bounds of what keeps
    /// them: retention, history, testaments).
    pub fn bytes(&self) -> usize {
        let strs = |l: &[String]| l.iter().map(|s| s.len() + 24).sum::<usize>();
        8 * (self.exclude.len() + self.eligible.as_ref().map_or(0, Vec::len))
            + strs(&self.exclude_authid)
            + self.eligible_authid.as_deref().map_or(0, strs)
            + strs(&self.exclude_authrole)
            + self.eligible_authrole.as_deref().map_or(0, strs)
    }
}

/// PUBLISH.Options the Broker acts on.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PublishOptions {
    /// Answer PUBLISHED (or ERROR).
    pub(super) acknowledge: bool,
    /// Leave the publisher out of the receivers (default true).
    pub(super) exclude_me: bool,
    /// The publisher asks to be named to the subscribers.
    pub(super) disclose_me: bool,
    /// Black- and whitelists of subscribers.
    pub(super) receivers: Option<Box<Receivers>>,
    /// Keep it as the topic's retained event.
    pub(super) retain: bool,
    /// Payload passthru attributes (see [`passthru`]).
    pub(super) ppt: Option<Box<Dict>>,
}

impl PublishOptions {
    #[inline]
    pub(super) fn read(options: &Dict) -> Self {
        if options.0.is_empty() {
            return PublishOptions {
                acknowledge: false,
                exclude_me: true,
                disclose_me: false,
                receivers: None,
                retain: false,
                ppt: None,
            };
        }
        PublishOptions {
            acknowledge: flag(options, "acknowledge", false),
            exclude_me: flag(options, "exclude_me", true),
            disclose_me: flag(options, "disclose_me", false),
            receivers: Receivers::read(options),
            retain: flag(options, "retain", false),
            ppt: passthru(options),
        }
    }
}

/// SUBSCRIBE.Options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SubscribeOptions {
    pub(super) policy: MatchPolicy,
    /// Send the retained events of the matching topics first.
    pub(super) get_retained: bool,
}

impl SubscribeOptions {
    pub(super) fn read(options: &Dict) -> Self {
        SubscribeOptions {
            policy: policy(options),
            get_retained: flag(options, "get_retained", false),
        }
    }
}

/// CALL.Options the Dealer acts on.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CallOptions {
    /// Dealer-side timeout; `None` for none (absent or 0).
    pub(super) timeout: Option<std::time::Duration>,
    /// The caller takes progressive results.
    pub(super) receive_progress: bool,
    /// The caller asks to be named to the callee.
    pub(super) disclose_me: bool,
    /// A progressive call invocation: more CALLs with this request ID follow.
    pub(super) progress: bool,
    /// Payload passthru attributes (see [`passthru`]).
    pub(super) ppt: Option<Box<Dict>>,
}

impl CallOptions {
    pub(super) fn read(options: &Dict) -> Self {
        let timeout = match options.get("timeout") {
            Some(Value::UInt(ms)) if *ms > 0 => Some(std::time::Duration::from_millis(*ms)),
            // a fraction of a millisecond still times out, a millisecond later
            Some(Value::Float(ms)) if *ms > 0.0 => Some(std::time::Duration::from_millis(ms.ceil().min(u64::MAX as f64) as u64)),
            _ => None,
        };
        CallOptions {
            timeout,
            receive_progress: flag(options, "receive_progress", false),
            disclose_me: flag(options, "disclose_me", false),
            progress: flag(options, "progress", false),
            ppt: passthru(options),
        }
    }
}

/// YIELD.Options.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct YieldOptions {
    /// A progressive result; more follow.
    pub(super) progress: bool,
    /// Payload passthru attributes (see [`passthru`]).
    pub(super) ppt: Option<Box<Dict>>,
}

impl YieldOptions {
    pub(super) fn read(options: &Dict) -> Self {
        YieldOptions {
            progress: flag(options, "progress", false),
            ppt: passthru(options),
        }
    }
}

/// How a call is canceled (CANCEL.Options.mode, or a timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelMode {
    /// ERROR to the caller at once; no INTERRUPT; the callee's answer is
    /// discarded.
    Skip,
    /// INTERRUPT to the callee; the caller gets the callee's answer.
    Kill,
    /// ERROR to the caller at once and INTERRUPT to the callee, whose answer
    /// is discarded.
    KillNoWait,
}

impl CancelMode {
    /// Parses the `mode` option.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "skip" => Some(CancelMode::Skip),
            "kill" => Some(CancelMode::Kill),
            "killnowait" => Some(CancelMode::KillNoWait),
            _ => None,
        }
    }

    /// The option's wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelMode::Skip => "skip",
            CancelMode::Kill => "kill",
            CancelMode::KillNoWait => "killnowait",
        }
    }

    /// The mode of a CANCEL: `skip` when it names none (the spec sets no
    /// default; skip is the one that asks nothing of the callee).
    pub(super) fn read(options: &Dict) -> Self {
        options.get_str("mode").and_then(CancelMode::parse).unwrap_or(CancelMode::Skip)
    }
}

/// How a shared registration picks the callee of a call (REGISTER's
/// `invoke`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InvokePolicy {
    /// One callee only; a second REGISTER is refused.
    #[default]
    Single,
    /// The callees in turn, in registration order.
    RoundRobin,
    /// Any callee, at random.
    Random,
    /// The first callee that registered (the next one when it leaves).
    First,
    /// The last callee that registered.
    Last,
}

impl InvokePolicy {
    /// The option's wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            InvokePolicy::Single => "single",
            InvokePolicy::RoundRobin => "roundrobin",
            InvokePolicy::Random => "random",
            InvokePolicy::First => "first",
            InvokePolicy::Last => "last",
        }
    }

    /// Parses the `invoke` option.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "single" => Some(InvokePolicy::Single),
            "roundrobin" => Some(InvokePolicy::RoundRobin),
            "random" => Some(InvokePolicy::Random),
            "first" => Some(InvokePolicy::First),
            "last" => Some(InvokePolicy::Last),
            _ => None,
        }
    }
}

/// REGISTER.Options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RegisterOptions {
    pub(super) policy: MatchPolicy,
    /// The invocation policy; `None` for a value this router does not know.
    pub(super) invoke: Option<InvokePolicy>,
    /// The callee asks for every caller to be named to it.
    pub(super) disclose_caller: bool,
}

impl RegisterOptions {
    pub(super) fn read(options: &Dict) -> Self {
        RegisterOptions {
            policy: policy(options),
            invoke: match options.get_str("invoke") {
                None => Some(InvokePolicy::Single),
                Some(s) => InvokePolicy::parse(s),
            },
            disclose_caller: flag(options, "disclose_caller", false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wamp::message::Serializer;
    use crate::wamp::Payload;

    fn publish(options: Dict) -> Message {
        Message::Publish {
            request: 1,
            options,
            topic: "t".into(),
            payload: Payload::empty(Serializer::Json),
        }
    }

    #[test]
    fn options_of_the_wrong_type_are_refused() {
        assert!(check(&publish(Dict::new().with("acknowledge", Value::Bool(true)))).is_ok());
        assert!(check(&publish(Dict::new().with("acknowledge", Value::UInt(1)))).is_err());
        assert!(check(&publish(Dict::new().with("exclude", Value::List(vec![Value::UInt(3)])))).is_ok());
        assert!(check(&publish(Dict::new().with("exclude", Value::List(vec![Value::Str("x".into())])))).is_err());
        assert!(
            check(&publish(Dict::new().with("_custom", Value::Null))).is_ok(),
            "unknown options are ignored"
        );
        let sub = |m: Value| Message::Subscribe {
            request: 1,
            options: Dict::new().with("match", m),
            topic: "t".into(),
        };
        assert!(check(&sub(Value::Str("prefix".into()))).is_ok());
        assert!(check(&sub(Value::Str("regex".into()))).is_err());
        assert!(check(&sub(Value::UInt(1))).is_err());
    }

    #[test]
    fn passthru_attributes_are_kept_only_in_passthru_mode() {
        let s = |v: &str| Value::Str(v.into());
        let ppt = Dict::new()
            .with("ppt_scheme", s("mqtt"))
            .with("ppt_keyid", s("k"))
            .with("acknowledge", Value::Bool(true));
        assert_eq!(
            passthru(&ppt).as_deref(),
            Some(&Dict::new().with("ppt_scheme", s("mqtt")).with("ppt_keyid", s("k")))
        );
        assert!(
            passthru(&Dict::new().with("ppt_keyid", s("k"))).is_none(),
            "no scheme: not the mode"
        );
        assert!(
            passthru(&Dict::new().with("ppt_scheme", s(""))).is_none(),
            "an empty scheme neither"
        );
        let enc = Dict::new().with("enc_algo", s("cryptobox")).with("enc_serializer", s("cbor"));
        assert_eq!(passthru(&enc).as_deref(), Some(&enc), "autobahn's names");
        assert!(check(&publish(Dict::new().with("enc_algo", s("rot13")))).is_err());
        assert!(check(&publish(Dict::new().with("ppt_scheme", Value::UInt(1)))).is_err());
    }

    #[test]
    fn typed_options_carry_the_spec_defaults() {
        let none = Dict::new();
        assert_eq!(
            PublishOptions::read(&none),
            PublishOptions {
                acknowledge: false,
                exclude_me: true,
                disclose_me: false,
                receivers: None,
                retain: false,
                ppt: None,
            }
        );
        let set = Dict::new()
            .with("acknowledge", Value::Bool(true))
            .with("exclude_me", Value::Bool(false));
        assert_eq!(
            PublishOptions::read(&set),
            PublishOptions {
                acknowledge: true,
                exclude_me: false,
                disclose_me: false,
                receivers: None,
                retain: false,
                ppt: None,
            }
        );
        assert_eq!(SubscribeOptions::read(&none).policy, MatchPolicy::Exact);
        let wild = Dict::new().with("match", Value::Str("wildcard".into()));
        assert_eq!(SubscribeOptions::read(&wild).policy, MatchPolicy::Wildcard);
        assert_eq!(RegisterOptions::read(&wild).policy, MatchPolicy::Wildcard);
        let ms = |v: Value| CallOptions::read(&Dict::new().with("timeout", v)).timeout;
        assert_eq!(ms(Value::UInt(0)), None, "0 is no timeout");
        assert_eq!(ms(Value::UInt(250)), Some(std::time::Duration::from_millis(250)));
        assert_eq!(ms(Value::Float(0.2)), Some(std::time::Duration::from_millis(1)));
        assert_eq!(CancelMode::read(&Dict::new()), CancelMode::Skip);
        let call = |v: Value| Message::Call {
            request: 1,
            options: Dict::new().with("timeout", v),
            procedure: "p".into(),
            payload: Payload::empty(Serializer::Json),
        };
        assert!(check(&call(Value::Float(1.5))).is_ok());
        assert!(check(&call(Value::Float(-1.0))).is_err());
        assert!(check(&call(Value::Str("1s".into()))).is_err());
    }
}
