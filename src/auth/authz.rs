//! Authorization: a realm's roles and their permission rules. A rule is a
//! URI pattern (exact, prefix or wildcard, as for subscriptions) with the
//! actions it allows; the most specific rule matching a URI decides (an exact
//! rule over any prefix rule, a longer prefix over a shorter one, a prefix
//! over a wildcard; among wildcards the one with more fixed components), and
//! a URI no rule matches is denied. A realm without roles allows everything.

use ahash::AHashMap;

use crate::config::{invalid, ConfigError, RealmConfig};
use crate::wamp::{uri, MatchPolicy, UriCheck};

/// What a session asks to do on a URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Call = 0,
    Register = 1,
    Publish = 2,
    Subscribe = 3,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "call" => Action::Call,
            "register" => Action::Register,
            "publish" => Action::Publish,
            "subscribe" => Action::Subscribe,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Call => "call",
            Action::Register => "register",
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The answer for one (role, URI, action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Deny,
    /// Allowed; `disclose`: the caller or publisher is named.
    Allow {
        disclose: bool,
    },
}

impl Decision {
    pub fn allowed(self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// What one rule grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Grant {
    actions: u8,
    disclose: bool,
}

/// One role's rules, indexed for the lookup order above.
#[derive(Debug, Clone, Default)]
pub struct Role {
    exact: AHashMap<String, Grant>,
    /// Longest first.
    prefix: Vec<(String, Grant)>,
    /// Most fixed components first.
    wildcard: Vec<(Vec<String>, Grant)>,
}

impl Role {
    fn grant(&self, uri: &str) -> Option<Grant> {
        if let Some(g) = self.exact.get(uri) {
            return Some(*g);
        }
        if let Some((_, g)) = self.prefix.iter().find(|(p, _)| uri.starts_with(p.as_str())) {
            return Some(*g);
        }
        let parts: Vec<&str> = uri.split('.').collect();
        self.wildcard
            .iter()
            .find(|(pat, _)| pat.len() == parts.len() && pat.iter().zip(&parts).all(|(p, u)| p.is_empty() || p == u))
            .map(|(_, g)| *g)
    }

    /// The decision for a pattern-based SUBSCRIBE or REGISTER: allowed only
    /// when a prefix rule covers every URI the pattern matches, grants the
    /// action, and no more specific rule inside it denies it (a pattern must
    /// not reach URIs the role may not use one by one). `None`: no prefix
    /// rule covers it (an authorizer may decide then).
    pub fn lookup_pattern(&self, pattern: &str, policy: MatchPolicy, action: Action) -> Option<Decision> {
        // the literal text every URI the pattern matches starts with
        let lead: String = match policy {
            MatchPolicy::Exact => return self.lookup(pattern, action),
            MatchPolicy::Prefix => pattern.to_owned(),
            MatchPolicy::Wildcard => {
                let parts: Vec<&str> = pattern.split('.').collect();
                let fixed = parts.iter().take_while(|p| !p.is_empty()).count();
                if fixed == parts.len() {
                    pattern.to_owned()
                } else {
                    parts[..fixed].iter().map(|p| format!("{p}.")).collect()
                }
            }
        };
        let (cover, grant) = self.prefix.iter().find(|(p, _)| lead.starts_with(p.as_str()))?;
        if grant.actions & action.bit() == 0 {
            return Some(Decision::Deny);
        }
        let denies = |g: &Grant| g.actions & action.bit() == 0;
        // rules more specific than the cover that some matched URI may reach
        let exact_inside = self
            .exact
            .iter()
            .any(|(u, g)| denies(g) && u.starts_with(cover.as_str()) && pattern_may_match(pattern, policy, u));
        let prefix_inside = self
            .prefix
            .iter()
            .any(|(p, g)| p.len() > cover.len() && denies(g) && p.starts_with(cover.as_str()) && may_share_prefix(&lead, p));
        if exact_inside || prefix_inside {
            return Some(Decision::Deny);
        }
        Some(Decision::Allow { disclose: grant.disclose })
    }

    /// The decision of this role for `action` on `uri`.
    pub fn decide(&self, uri: &str, action: Action) -> Decision {
        self.lookup(uri, action).unwrap_or(Decision::Deny)
    }

    /// The decision of the rule that matches `uri`; `None` when no rule
    /// does (a dynamic authorizer may decide then).
    pub fn lookup(&self, uri: &str, action: Action) -> Option<Decision> {
        self.grant(uri).map(|g| {
            if g.actions & action.bit() != 0 {
                Decision::Allow { disclose: g.disclose }
            } else {
                Decision::Deny
            }
        })
    }
}

/// Whether the pattern may match the concrete `uri`.
fn pattern_may_match(pattern: &str, policy: MatchPolicy, uri: &str) -> bool {
    match policy {
        MatchPolicy::Exact => pattern == uri,
        MatchPolicy::Prefix => uri.starts_with(pattern),
        MatchPolicy::Wildcard => {
            let (p, u): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), uri.split('.').collect());
            p.len() == u.len() && p.iter().zip(&u).all(|(a, b)| a.is_empty() || a == b)
        }
    }
}

/// Whether URIs starting with `lead` and URIs starting with `prefix` may
/// meet (one text starts with the other).
fn may_share_prefix(lead: &str, prefix: &str) -> bool {
    lead.starts_with(prefix) || prefix.starts_with(lead)
}

/// A realm's roles; `None` in `roles`: no roles configured (everything is
/// allowed).
#[derive(Debug, Clone, Default)]
pub struct Roles {
    pub roles: Option<AHashMap<String, u32>>,
    pub list: Vec<Role>,
}

impl Roles {
    /// Checks and compiles `realm[i]`'s roles; errors name the key.
    pub fn compile(r: &RealmConfig, i: usize) -> Result<Roles, ConfigError> {
        if r.roles.is_empty() {
            return Ok(Roles::default());
        }
        let mut names = AHashMap::new();
        let mut list = Vec::new();
        for (j, role) in r.roles.iter().enumerate() {
            if role.name.is_empty() {
                return Err(invalid(format!("realm[{i}].role[{j}].name"), "must not be empty"));
            }
            if names.insert(role.name.clone(), j as u32).is_some() {
                return Err(invalid(
                    format!("realm[{i}].role[{j}].name"),
                    format!("role '{}' is defined twice", role.name),
                ));
            }
            let mut compiled = Role::default();
            for (k, p) in role.permissions.iter().enumerate() {
                let key = |f: &str| format!("realm[{i}].role[{j}].permission[{k}].{f}");
                let policy_name = p.policy.as_deref().unwrap_or("exact");
                let Some(policy) = MatchPolicy::parse(policy_name) else {
                    return Err(invalid(key("match"), format!("'{policy_name}' is not exact, prefix or wildcard")));
                };
                // a prefix rule may be empty (every URI) or end in a dot
                let valid = match policy {
                    MatchPolicy::Prefix => p.uri.is_empty() || uri::is_valid(p.uri.trim_end_matches('.'), UriCheck::Pattern(policy)),
                    _ => uri::is_valid(&p.uri, UriCheck::Pattern(policy)),
                };
                if !valid {
                    return Err(invalid(
                        key("uri"),
                        format!("'{}' is not a valid {} pattern", p.uri, policy.as_str()),
                    ));
                }
                let mut grant = Grant {
                    actions: 0,
                    disclose: p.disclose,
                };
                for (n, a) in p.allow.iter().enumerate() {
                    let Some(a) = Action::parse(a) else {
                        return Err(invalid(
                            format!("realm[{i}].role[{j}].permission[{k}].allow[{n}]"),
                            format!("'{a}' is not call, register, publish or subscribe"),
                        ));
                    };
                    grant.actions |= a.bit();
                }
                let dup = match policy {
                    MatchPolicy::Exact => compiled.exact.insert(p.uri.clone(), grant).is_some(),
                    MatchPolicy::Prefix => {
                        let d = compiled.prefix.iter().any(|(u, _)| u == &p.uri);
                        compiled.prefix.push((p.uri.clone(), grant));
                        d
                    }
                    MatchPolicy::Wildcard => {
                        let parts: Vec<String> = p.uri.split('.').map(str::to_owned).collect();
                        let d = compiled.wildcard.iter().any(|(u, _)| u == &parts);
                        compiled.wildcard.push((parts, grant));
                        d
                    }
                };
                if dup {
                    return Err(invalid(
                        key("uri"),
                        format!("another rule of this role has '{}' ({})", p.uri, policy.as_str()),
                    ));
                }
            }
            compiled.prefix.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
            compiled
                .wildcard
                .sort_by_key(|(parts, _)| std::cmp::Reverse(parts.iter().filter(|p| !p.is_empty()).count()));
            list.push(compiled);
        }
        Ok(Roles { roles: Some(names), list })
    }

    /// Whether the realm has roles at all.
    pub fn enforced(&self) -> bool {
        self.roles.is_some()
    }

    /// The index of the role named `name`, if the realm has it.
    pub fn index(&self, name: &str) -> Option<u32> {
        self.roles.as_ref().and_then(|r| r.get(name).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PermissionConfig, RoleConfig};

    fn rule(uri: &str, policy: &str, allow: &[&str], disclose: bool) -> PermissionConfig {
        PermissionConfig {
            uri: uri.into(),
            policy: Some(policy.into()),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            disclose,
        }
    }

    #[test]
    fn the_most_specific_rule_decides() {
        let mut r = RealmConfig::named("realm1");
        r.roles.push(RoleConfig {
            name: "user".into(),
            permissions: vec![
                rule("com.example.", "prefix", &["call", "subscribe"], false),
                rule("com.example.admin.", "prefix", &[], false),
                rule("com.example.admin.status", "exact", &["call"], true),
                rule("com..public", "wildcard", &["publish"], false),
            ],
        });
        let roles = Roles::compile(&r, 0).unwrap();
        let user = &roles.list[roles.index("user").unwrap() as usize];
        assert!(user.decide("com.example.x", Action::Call).allowed());
        assert!(!user.decide("com.example.x", Action::Publish).allowed());
        assert!(!user.decide("com.example.admin.kill", Action::Call).allowed());
        assert_eq!(
            user.decide("com.example.admin.status", Action::Call),
            Decision::Allow { disclose: true }
        );
        assert!(user.decide("com.other.public", Action::Publish).allowed());
        // the prefix rule is more specific than the wildcard
        assert!(!user.decide("com.example.public", Action::Publish).allowed());
        assert!(!user.decide("org.x", Action::Call).allowed());
        assert!(roles.index("nobody").is_none());
    }

    #[test]
    fn patterns_may_not_reach_what_their_uris_may_not() {
        let mut r = RealmConfig::named("realm1");
        r.roles.push(RoleConfig {
            name: "user".into(),
            permissions: vec![
                rule("com.example.", "prefix", &["subscribe", "register"], false),
                rule("com.example.admin.", "prefix", &[], false),
                rule("com.example.secret", "exact", &[], false),
            ],
        });
        let roles = Roles::compile(&r, 0).unwrap();
        let user = &roles.list[0];
        let p = |pat: &str, policy| user.lookup_pattern(pat, policy, Action::Subscribe).map(|d| d.allowed());
        // the prefix covers com.example.admin. and com.example.secret: refused
        assert_eq!(p("com.example.", MatchPolicy::Prefix), Some(false));
        assert_eq!(p("com.example.a", MatchPolicy::Prefix), Some(false), "reaches com.example.admin.");
        assert_eq!(p("com.example.news.", MatchPolicy::Prefix), Some(true));
        assert_eq!(p("com.example.admin.x", MatchPolicy::Prefix), Some(false));
        // wildcards: only where every match is covered and nothing inside denies
        assert_eq!(
            p("com.example..x", MatchPolicy::Wildcard),
            Some(false),
            "may reach com.example.admin.x"
        );
        assert_eq!(p("com.example.news.", MatchPolicy::Wildcard), Some(true));
        assert_eq!(p("com..news", MatchPolicy::Wildcard), None, "no prefix rule covers com.");
        assert_eq!(p("com.example.news", MatchPolicy::Exact), Some(true));
        assert_eq!(p("com.example.secret", MatchPolicy::Exact), Some(false));
    }

    #[test]
    fn rule_errors_name_their_key() {
        let mut r = RealmConfig::named("realm1");
        r.roles.push(RoleConfig {
            name: "user".into(),
            permissions: vec![rule("com.example", "exact", &["fly"], false)],
        });
        let e = Roles::compile(&r, 0).unwrap_err().to_string();
        assert!(e.starts_with("realm[0].role[0].permission[0].allow[0]"), "{e}");
        r.roles[0].permissions = vec![rule("com..x", "exact", &["call"], false)];
        let e = Roles::compile(&r, 0).unwrap_err().to_string();
        assert!(e.starts_with("realm[0].role[0].permission[0].uri"), "{e}");
    }
}
