//! Black-box integration tests: the router binary over real sockets.

mod advanced_pubsub;
mod advanced_rpc;
mod auth;
mod bridge;
mod cli;
mod cluster;
mod common;
mod deflate;
mod hardening;
mod longpoll;
mod meta_api;
mod operations;
mod rawsocket;
mod robustness;
mod routing;
mod rpc_routing;
mod simd_json;
mod testvectors;
mod tls;
mod transports;
mod websocket;
