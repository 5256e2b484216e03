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

/// What a URI is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriCheck {
    /// A concrete URI: no empty components.
    Concrete,
    /// A pattern under `policy`: prefix patterns may end with `.`, wildcard
    /// patterns may have empty components.
    Pattern(MatchPolicy),
}

/// Checks `uri` against the loose URI rules of the spec: components hold no
/// `.`, `#` or whitespace and are non-empty (except where the check allows).
///
/// One pass over the bytes; only a URI with non-ASCII bytes gets a second
/// look for Unicode whitespace. This runs on every PUBLISH and CALL.
pub fn is_valid(uri: &str, check: UriCheck) -> bool {
    let (empty_inner, empty_last) = match check {
        UriCheck::Concrete | UriCheck::Pattern(MatchPolicy::Exact) => (false, false),
        UriCheck::Pattern(MatchPolicy::Prefix) => (false, true),
        UriCheck::Pattern(MatchPolicy::Wildcard) => (true, true),
    };
    let bytes = uri.as_bytes();
    if bytes.is_empty() {
        return empty_inner;
    }
    let mut component_empty = true;
    let mut non_ascii = false;
    for &b in bytes {
        match b {
            b'.' => {
                if component_empty && !empty_inner {
                    return false;
                }
                component_empty = true;
            }
            b'#' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => return false,
            _ => {
                non_ascii |= b >= 0x80;
                component_empty = false;
            }
        }
    }
    if component_empty && !empty_last {
        return false;
    }
    !(non_ascii && uri.chars().any(char::is_whitespace))
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

    #[test]
    fn policies_round_trip() {
        for p in [MatchPolicy::Exact, MatchPolicy::Prefix, MatchPolicy::Wildcard] {
            assert_eq!(MatchPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(MatchPolicy::parse("regex"), None);
    }
}
