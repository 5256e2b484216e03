//! Switchyard: a sharded, thread-per-core WAMP v2 router.
//!
//! # Layout
//!
//! - [`wamp`]: the protocol's vocabulary, no I/O: messages, URIs, IDs, values.
//! - [`codec`]: bytes to messages and back (JSON, MessagePack); payloads stay
//!   raw spans and are spliced, or transcoded once per serializer.
//! - [`transport`]: WebSocket and RawSocket handshakes and framing, no I/O.
//! - [`session`]: one connection's read loop and writer, and its outbox.
//! - [`router`]: the per-shard routing core (realms, Broker, Dealer, the URI
//!   trie), no I/O.
//! - [`auth`]: realms' principals and roles, the checks of every WAMP
//!   authentication method, the threads that run the costly ones.
//! - [`shard`]: executors pinned to CPUs, listeners, the cross-shard mesh.
//! - [`config`]: TOML configuration with an embedded default.
//! - [`metrics`]: per-shard counters and their Prometheus rendering.
//!
//! ARCHITECTURE.md follows a PUBLISH and a CALL through these modules.

#![warn(missing_debug_implementations)]

pub mod auth;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod history_store;
pub mod metrics;
pub mod router;
pub mod session;
pub mod shard;
pub mod transport;
pub mod wamp;
