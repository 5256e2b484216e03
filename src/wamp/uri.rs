//! URI validation (loose rules of the spec) and match policies.

/// How a subscription or registration URI is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchPolicy {
    /// The URI must equal the pattern.
    Exact,
    /// The pattern is a string prefix of the URI.
    Prefix,
    /// Empty components of the pattern match any one component.
    Wildcard,
}

impl MatchPolicy {
    /// Parses the `match` option; `None` for an unknown policy.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exact" => Some(MatchPolicy::Exact),
            "prefix" => Some(MatchPolicy::Prefix),
            "wildcard" => Some(MatchPolicy::Wildcard),
            _ => None,
        }
    }

    /// The option's wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchPolicy::Exact => "exact",
            MatchPolicy::Prefix => "prefix",
            MatchPolicy::Wildcard => "wildcard",
        }
    }
}

/// Whether `topic` matches `pattern` under `policy` (exact, prefix, or
/// wildcard: empty pattern components match any one component).
pub fn pattern_matches(policy: MatchPolicy, pattern: &str, topic: &str) -> bool {
    match policy {
        MatchPolicy::Exact => pattern == topic,
        MatchPolicy::Prefix => topic.starts_with(pattern),
        MatchPolicy::Wildcard => {
            let (mut p, mut t) = (pattern.split('.'), topic.split('.'));
            loop {
                match (p.next(), t.next()) {
                    (None, None) => return true,
                    (Some(a), Some(b)) if a.is_empty() || a == b => {}
                    _ => return false,
                }
            }
        }
    }
}

/// What a URI is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriCheck {
    /// A concrete URI: no empty components.
    Concrete,
    /// A pattern under `policy`: prefix patterns may end with `.`, wildcard
    /// patterns may have empty components.
    Pattern(MatchPolicy),
}

/// Bounds on the size of every URI a client sends (topics, procedures,
/// realms), so that nothing that walks a URI component by component can be
/// made to work without end (`limits.max_uri_length`,
/// `limits.max_uri_components`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UriLimits {
    /// Longest URI, in bytes.
    pub max_len: usize,
    /// Most components (dot-separated parts) in one URI.
    pub max_components: usize,
}

impl UriLimits {
    /// No bounds beyond the message size.
    pub const NONE: UriLimits = UriLimits {
        max_len: usize::MAX,
        max_components: usize::MAX,
    };

    /// The defaults of the configuration: far beyond what applications use.
    pub const DEFAULT: UriLimits = UriLimits {
        max_len: 8192,
        max_components: 256,
    };
}

/// Why a URI was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriError {
    /// It breaks the URI rules of the spec.
    Invalid,
    /// It is longer than `limits.max_uri_length`.
    TooLong { len: usize, max: usize },
    /// It has more components than `limits.max_uri_components`.
    TooManyComponents { max: usize },
}

impl std::fmt::Display for UriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UriError::Invalid => f.write_str("not a valid URI"),
            UriError::TooLong { len, max } => {
                write!(
                    f,
                    "URI of {len} bytes is longer than this router accepts (limits.max_uri_length = {max})"
                )
            }
            UriError::TooManyComponents { max } => write!(
                f,
                "URI has more components than this router accepts (limits.max_uri_components = {max})"
            ),
        }
    }
}

/// Checks `uri` against the loose URI rules of the spec: components hold no
/// `.`, `#` or whitespace and are non-empty (except where the check allows).
pub fn is_valid(uri: &str, check: UriCheck) -> bool {
    validate(uri, check, &UriLimits::NONE).is_ok()
}

/// Checks `uri` against the URI rules of the spec (see [`is_valid`]) and
/// against `limits`.
///
/// This runs on every PUBLISH and CALL. The length is checked first; then
/// eight bytes at a time ([`words_ok`]) for the common case of a good URI;
/// a URI that is not plainly good is walked byte by byte, which finds the
/// first fault and says which. Only a URI with non-ASCII bytes gets a second
/// look for Unicode whitespace.
pub fn validate(uri: &str, check: UriCheck, limits: &UriLimits) -> Result<(), UriError> {
    let bytes = uri.as_bytes();
    if bytes.len() > limits.max_len {
        return Err(UriError::TooLong {
            len: bytes.len(),
            max: limits.max_len,
        });
    }
    match words_ok(bytes, check, limits.max_components) {
        Some(false) => Ok(()),
        Some(true) if !uri.chars().any(char::is_whitespace) => Ok(()),
        _ => validate_bytewise(uri, check, limits),
    }
}

/// The good case of [`validate`], eight bytes at a time: `Some(non_ascii)`
/// if `bytes` (non-empty) has no `#` or ASCII whitespace, no empty
/// component where `check` forbids one and at most `max_components`
/// components; `None` if not, or if it cannot tell.
#[inline]
fn words_ok(bytes: &[u8], check: UriCheck, max_components: usize) -> Option<bool> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const M7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // the high bit of each byte of `w` that equals `b`: exact for every
    // byte (no carry crosses a byte, unlike the shorter zero-byte test)
    let eq = |w: u64, b: u8| {
        let x = w ^ (LO * b as u64);
        !(((x & M7).wrapping_add(M7)) | x) & HI
    };
    let (first, last) = (*bytes.first()?, *bytes.last()?);
    let empty_inner = check == UriCheck::Pattern(MatchPolicy::Wildcard);
    let empty_last = empty_inner || check == UriCheck::Pattern(MatchPolicy::Prefix);
    if !empty_inner && first == b'.' || !empty_last && last == b'.' {
        return None;
    }
    let (mut dots, mut high, mut prev_dot) = (0u64, 0u64, false);
    let mut word = |w: u64| {
        let low = w & M7;
        // 0x09..=0x0d: at least 0x09 and not above 0x0d, and ASCII
        let ctl = (low.wrapping_add(LO * (0x80 - 0x09)) & !low.wrapping_add(LO * (0x7f - 0x0d)) & !w) & HI;
        let d = eq(w, b'.');
        if ctl | eq(w, b'#') | eq(w, b' ') != 0 || !empty_inner && (d & (d << 8) != 0 || prev_dot && d & 0x80 != 0) {
            return false;
        }
        prev_dot = d >> 63 == 1;
        // the dots of the word: its bytes' 0 or 1, summed into the top byte
        dots += (d >> 7).wrapping_mul(LO) >> 56;
        high |= w & HI;
        true
    };
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let Ok(w) = <[u8; 8]>::try_from(chunk) else { return None };
        if !word(u64::from_le_bytes(w)) {
            return None;
        }
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        // a short last word, padded with a plain byte
        let mut w = [b'a'; 8];
        for (to, &b) in w.iter_mut().zip(rest) {
            *to = b;
        }
        if !word(u64::from_le_bytes(w)) {
            return None;
        }
    }
    ((dots as usize) < max_components).then_some(high != 0)
}

/// [`validate`] byte by byte, after the length check: the first fault.
fn validate_bytewise(uri: &str, check: UriCheck, limits: &UriLimits) -> Result<(), UriError> {
    let (empty_inner, empty_last) = match check {
        UriCheck::Concrete | UriCheck::Pattern(MatchPolicy::Exact) => (false, false),
        UriCheck::Pattern(MatchPolicy::Prefix) => (false, true),
        UriCheck::Pattern(MatchPolicy::Wildcard) => (true, true),
    };
    let bytes = uri.as_bytes();
    if bytes.is_empty() {
        return if empty_inner { Ok(()) } else { Err(UriError::Invalid) };
    }
    let mut component_empty = true;
    let mut non_ascii = false;
    let mut components = 1usize;
    for &b in bytes {
        match b {
            b'.' => {
                if component_empty && !empty_inner {
                    return Err(UriError::Invalid);
                }
                component_empty = true;
                components += 1;
                if components > limits.max_components {
                    return Err(UriError::TooManyComponents {
                        max: limits.max_components,
                    });
                }
            }
            b'#' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => return Err(UriError::Invalid),
            _ => {
                non_ascii |= b >= 0x80;
                component_empty = false;
            }
        }
    }
    if component_empty && !empty_last {
        return Err(UriError::Invalid);
    }
    if non_ascii && uri.chars().any(char::is_whitespace) {
        return Err(UriError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concrete_uris() {
        assert!(is_valid("com.example.topic", UriCheck::Concrete));
        assert!(is_valid("grüße.世界", UriCheck::Concrete));
        assert!(!is_valid("com..topic", UriCheck::Concrete));
        assert!(!is_valid("com.example.", UriCheck::Concrete));
        assert!(!is_valid(".com", UriCheck::Concrete));
        assert!(!is_valid("com.ex ample", UriCheck::Concrete));
        assert!(!is_valid("com.#", UriCheck::Concrete));
        assert!(!is_valid("", UriCheck::Concrete));
    }

    #[test]
    fn pattern_uris() {
        let prefix = UriCheck::Pattern(MatchPolicy::Prefix);
        let wild = UriCheck::Pattern(MatchPolicy::Wildcard);
        assert!(is_valid("com.example.", prefix));
        assert!(is_valid("com.exa", prefix));
        assert!(!is_valid("com..a", prefix));
        assert!(is_valid("com..event", wild));
        assert!(is_valid(".a.", wild));
        assert!(!is_valid("com. .x", wild));
        assert!(is_valid("", wild));
        assert!(!is_valid("", prefix));
        assert!(!is_valid(".com", prefix));
        assert!(!is_valid("com.\u{3000}x", UriCheck::Concrete), "ideographic space");
    }

    /// The word-at-a-time path takes exactly the URIs the byte walk takes.
    #[test]
    fn words_agree_with_the_byte_walk() {
        let alphabet = [
            "a", "b", ".", ".", "#", " ", "\t", "\r", "\u{b}", "\u{8}", "\u{e}", "é", "\u{3000}", "-", "_", "/",
        ];
        let checks = [
            UriCheck::Concrete,
            UriCheck::Pattern(MatchPolicy::Exact),
            UriCheck::Pattern(MatchPolicy::Prefix),
            UriCheck::Pattern(MatchPolicy::Wildcard),
        ];
        let mut x: u64 = 0x853c_49e6_748f_ea9b;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200_000 {
            let len = next() as usize % 30;
            // mostly plain letters, so that good URIs are common
            let uri: String = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 4 == 0 {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    } else {
                        "c"
                    }
                })
                .collect();
            let limits = UriLimits {
                max_len: 64,
                max_components: next() as usize % 8 + 1,
            };
            for check in checks {
                assert_eq!(
                    validate(&uri, check, &limits),
                    validate_bytewise(&uri, check, &limits),
                    "{uri:?} {check:?} {}",
                    limits.max_components
                );
            }
        }
    }

    #[test]
    fn limits_bound_length_and_components() {
        let lim = UriLimits {
            max_len: 16,
            max_components: 3,
        };
        assert_eq!(validate("a.b.c", UriCheck::Concrete, &lim), Ok(()));
        assert_eq!(
            validate("a.b.c.d", UriCheck::Concrete, &lim),
            Err(UriError::TooManyComponents { max: 3 })
        );
        assert_eq!(
            validate("..", UriCheck::Pattern(MatchPolicy::Wildcard), &lim),
            Ok(()),
            "three empty components"
        );
        assert_eq!(
            validate("...", UriCheck::Pattern(MatchPolicy::Wildcard), &lim),
            Err(UriError::TooManyComponents { max: 3 })
        );
        assert_eq!(
            validate("abcdefghijklmnopq", UriCheck::Concrete, &lim),
            Err(UriError::TooLong { len: 17, max: 16 })
        );
        // the length is checked first: a huge invalid URI is not scanned
        let huge = "a..".repeat(100_000);
        assert!(matches!(validate(&huge, UriCheck::Concrete, &lim), Err(UriError::TooLong { .. })));
        assert_eq!(validate("a..b", UriCheck::Concrete, &lim), Err(UriError::Invalid));
        assert!(UriError::TooLong { len: 17, max: 16 }.to_string().contains("limits.max_uri_length"));
    }

    #[test]
    fn policies_round_trip() {
        for p in [MatchPolicy::Exact, MatchPolicy::Prefix, MatchPolicy::Wildcard] {
            assert_eq!(MatchPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(MatchPolicy::parse("regex"), None);
    }
}
