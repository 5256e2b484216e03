//! Connections and the sessions on them: transport handshakes, the read loop
//! that feeds the router, and the writer that flushes the outbox.

pub mod bridge;
pub mod connection;
pub mod handle;
pub mod longpoll;
pub mod outbox;
pub mod webhook;

pub use handle::{ConnCtx, ConnLimits};
