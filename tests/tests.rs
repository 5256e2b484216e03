//! Black-box integration tests: the router binary over real sockets.

mod cli;
mod common;
mod rawsocket;
mod routing;
mod websocket;
