//! rowcast's integration tests, one binary: a real Postgres (the one
//! `DATABASE_URL` names, or throwaway clusters), real relays (in-process or
//! the `rowcast` binary), and real WebSocket, SSE, Socket.IO and Node
//! clients. Each module is one concern; `common` is their shared harness.
//! `cargo test --test it <module>::` runs one concern, for example
//! `cargo test --test it failover::`.

#[macro_use]
mod common;

mod capture;
mod crash;
mod docs;
mod failover;
mod gateway_auth;
mod gateway_http;
mod gateway_limits;
mod gateway_presence;
mod gateway_rooms;
mod gateway_shutdown;
mod js_client;
mod logical;
mod nodes;
mod openapi;
mod privileges;
mod resilience;
mod revocation;
mod secrets;
mod sinks;
mod socketio;
mod sse;
mod tls;
mod types;
