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
pub fn is_valid(uri: &str, check: UriCheck) -> bool {
    if uri.is_empty() {
        return matches!(check, UriCheck::Pattern(MatchPolicy::Wildcard));
    }
    if uri.bytes().any(|b| b == b'#' || b.is_ascii_whitespace()) || uri.chars().any(char::is_whitespace) {
        return false;
    }
    match check {
        UriCheck::Concrete | UriCheck::Pattern(MatchPolicy::Exact) => uri.split('.').all(|c| !c.is_empty()),
        UriCheck::Pattern(MatchPolicy::Prefix) => {
            // A prefix is any string prefix of a valid URI: empty components are
            // allowed only at the end ("com.example." is a fine prefix).
            let comps: Vec<&str> = uri.split('.').collect();
            let n = comps.len();
            comps.iter().enumerate().all(|(i, c)| !c.is_empty() || i + 1 == n)
        }
        UriCheck::Pattern(MatchPolicy::Wildcard) => true,
    }
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
    }

    #[test]
    fn policies_round_trip() {
        for p in [MatchPolicy::Exact, MatchPolicy::Prefix, MatchPolicy::Wildcard] {
            assert_eq!(MatchPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(MatchPolicy::parse("regex"), None);
    }
}
