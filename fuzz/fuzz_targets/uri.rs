//! URI validation: `wamp::uri::is_valid` against two slow references for
//! every check, on arbitrary UTF-8 (invalid input is read lossily).
//!
//! Reference 1 splits on '.' and checks the components (the loose rules):
//! no component holds '#' or whitespace; a concrete URI (and an exact
//! pattern) has no empty component; a prefix pattern may end with '.' (its
//! last component may be empty, but the URI itself may not be empty); a
//! wildcard pattern may have empty components anywhere.
//!
//! Reference 2 is the spec's regular expressions, verbatim, in the `regex`
//! crate (whose `\s` is Unicode White_Space, as `char::is_whitespace`):
//! - concrete / exact: `^([^\s\.#]+\.)*([^\s\.#]+)$`
//! - prefix (`wampuri_pp`): `^([^\s\.#]+\.)*([^\s\.#]*)$`
//! - wildcard: `^(([^\s\.#]+\.)|\.)*([^\s\.#]+)?$`
//!
//! The one deliberate difference: the prefix regex accepts the empty URI
//! (a prefix that matches every topic); Switchyard refuses it.
//!
//! Any disagreement between `is_valid` and reference 1, or between the two
//! references (outside that case), is a bug.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use regex::Regex;
use switchyard::wamp::uri::{is_valid, MatchPolicy, UriCheck};

const CHECKS: [UriCheck; 4] = [
    UriCheck::Concrete,
    UriCheck::Pattern(MatchPolicy::Exact),
    UriCheck::Pattern(MatchPolicy::Prefix),
    UriCheck::Pattern(MatchPolicy::Wildcard),
];

fn reference(uri: &str, check: UriCheck) -> bool {
    let components: Vec<&str> = uri.split('.').collect();
    if components.iter().any(|c| c.chars().any(|ch| ch == '#' || ch.is_whitespace())) {
        return false;
    }
    match check {
        UriCheck::Concrete | UriCheck::Pattern(MatchPolicy::Exact) => components.iter().all(|c| !c.is_empty()),
        UriCheck::Pattern(MatchPolicy::Prefix) => {
            let (last, init) = components.split_last().expect("split yields at least one component");
            init.iter().all(|c| !c.is_empty()) && (!last.is_empty() || !init.is_empty())
        }
        UriCheck::Pattern(MatchPolicy::Wildcard) => true,
    }
}

fn spec_regex(check: UriCheck) -> &'static Regex {
    static RES: OnceLock<[Regex; 3]> = OnceLock::new();
    let res = RES.get_or_init(|| {
        [
            Regex::new(r"^([^\s\.#]+\.)*([^\s\.#]+)$").unwrap(),
            Regex::new(r"^([^\s\.#]+\.)*([^\s\.#]*)$").unwrap(),
            Regex::new(r"^(([^\s\.#]+\.)|\.)*([^\s\.#]+)?$").unwrap(),
        ]
    });
    match check {
        UriCheck::Concrete | UriCheck::Pattern(MatchPolicy::Exact) => &res[0],
        UriCheck::Pattern(MatchPolicy::Prefix) => &res[1],
        UriCheck::Pattern(MatchPolicy::Wildcard) => &res[2],
    }
}

fuzz_target!(|data: &[u8]| {
    let uri = String::from_utf8_lossy(data);
    for check in CHECKS {
        let want = reference(&uri, check);
        assert_eq!(is_valid(&uri, check), want, "is_valid({uri:?}, {check:?})");
        let by_spec = spec_regex(check).is_match(&uri);
        if !(uri.is_empty() && check == UriCheck::Pattern(MatchPolicy::Prefix)) {
            assert_eq!(by_spec, want, "reference vs spec regex on ({uri:?}, {check:?})");
        }
    }
    // a valid concrete URI is a valid pattern under every policy
    if is_valid(&uri, UriCheck::Concrete) {
        assert!(CHECKS.iter().all(|&c| is_valid(&uri, c)));
    }
});
