//! The protocol's vocabulary, with no I/O: message codes, IDs, URIs, values and
//! the parsed form of every message a router receives.

pub mod message;
pub mod uri;
pub mod value;

pub use message::{Message, MessageType, Payload};
pub use uri::{MatchPolicy, UriCheck};
pub use value::{Dict, Value};

/// A WAMP ID: an integer in `[1, 2^53]`.
pub type Id = u64;

/// The largest valid WAMP ID, 2^53.
pub const MAX_ID: Id = 1 << 53;

/// Draws a global-scope ID uniformly from `[1, 2^53]`, as the spec requires for
/// sessions and publications.
pub fn random_id() -> Id {
    use rand::Rng;
    rand::thread_rng().gen_range(1..=MAX_ID)
}

/// Draws a publication ID uniformly from `[1, 2^53]`, as the spec requires,
/// from a fast per-thread generator (wyrand) seeded once from the system's
/// generator: one is drawn for every publication, and a publication ID is
/// not a secret (session IDs and authentication challenges still come
/// from [`random_id`] and `rand`).
pub fn publication_id() -> Id {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(rand::random());
    }
    STATE.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let m = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        // the top 53 bits of the mix, shifted into [1, 2^53]
        ((((m >> 64) as u64) ^ (m as u64)) >> 11) + 1
    })
}

/// A session-scope ID sequence: 1, 2, 3, ... wrapping to 1 after 2^53.
#[derive(Debug, Default, Clone)]
pub struct IdSeq(Id);

impl IdSeq {
    /// The next ID of the sequence.
    pub fn next_id(&mut self) -> Id {
        self.0 = if self.0 >= MAX_ID { 1 } else { self.0 + 1 };
        self.0
    }
}

/// Error and close reason URIs predefined by the spec.
pub mod uris {
    pub const PROTOCOL_VIOLATION: &str = "wamp.error.protocol_violation";
    pub const NO_SUCH_REALM: &str = "wamp.error.no_such_realm";
    pub const NO_SUCH_ROLE: &str = "wamp.error.no_such_role";
    pub const NO_SUCH_PROCEDURE: &str = "wamp.error.no_such_procedure";
    pub const NO_SUCH_SUBSCRIPTION: &str = "wamp.error.no_such_subscription";
    pub const NO_SUCH_REGISTRATION: &str = "wamp.error.no_such_registration";
    pub const NO_SUCH_SESSION: &str = "wamp.error.no_such_session";
    pub const PROCEDURE_ALREADY_EXISTS: &str = "wamp.error.procedure_already_exists";
    pub const INVALID_URI: &str = "wamp.error.invalid_uri";
    pub const INVALID_ARGUMENT: &str = "wamp.error.invalid_argument";
    pub const CANCELED: &str = "wamp.error.canceled";
    pub const TIMEOUT: &str = "wamp.error.timeout";
    pub const DISCLOSE_ME_NOT_ALLOWED: &str = "wamp.error.disclose_me.not_allowed";
    pub const OPTION_DISALLOWED_DISCLOSE_ME: &str = "wamp.error.option_disallowed.disclose_me";
    pub const NO_AVAILABLE_CALLEE: &str = "wamp.error.no_available_callee";
    pub const UNAVAILABLE: &str = "wamp.error.unavailable";
    pub const FEATURE_NOT_SUPPORTED: &str = "wamp.error.feature_not_supported";
    pub const PAYLOAD_SIZE_EXCEEDED: &str = "wamp.error.payload_size_exceeded";
    pub const NOT_AUTHORIZED: &str = "wamp.error.not_authorized";
    pub const AUTHORIZATION_FAILED: &str = "wamp.error.authorization_failed";
    pub const OPTION_NOT_ALLOWED: &str = "wamp.error.option_not_allowed";
    pub const CLOSE_NORMAL: &str = "wamp.close.normal";
    pub const GOODBYE_AND_OUT: &str = "wamp.close.goodbye_and_out";
    pub const SYSTEM_SHUTDOWN: &str = "wamp.close.system_shutdown";
    pub const CLOSE_REALM: &str = "wamp.close.close_realm";
    pub const CLOSE_KILLED: &str = "wamp.close.killed";
    /// Not of the spec: a request that would take a session past one of the
    /// router's `[limits]` (the message names the key).
    pub const LIMIT_EXCEEDED: &str = "switchyard.error.limit_exceeded";
    /// A reload found the new configuration invalid (the running one stays).
    pub const BAD_CONFIG: &str = "switchyard.error.bad_config";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publication_ids_are_in_range_and_spread() {
        let ids: Vec<Id> = (0..100_000).map(|_| publication_id()).collect();
        assert!(ids.iter().all(|&id| (1..=MAX_ID).contains(&id)));
        let distinct: std::collections::HashSet<Id> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len(), "no repeats among 100,000 draws from 2^53");
        // every one of the top eight bits' values turns up: not a narrow range
        let tops: std::collections::HashSet<u64> = ids.iter().map(|id| (id - 1) >> 45).collect();
        assert_eq!(tops.len(), 256);
        // and another thread draws other IDs
        let other = std::thread::spawn(|| (0..1000).map(|_| publication_id()).collect::<Vec<_>>())
            .join()
            .unwrap_or_default();
        assert!(other.iter().all(|id| !distinct.contains(id)));
    }
}
