//! rowcast turns committed Postgres row changes into realtime events for
//! WebSocket clients.
//!
//! The flow, one module per stage:
//! [`capture`] (triggers or a logical replication slot) →
//! [`route`] (the declarative routes file) →
//! [`outbox`] (stored once, under a global `seq`) →
//! [`fanout`] (rooms and their members) →
//! [`gateway`] (the WebSocket protocol and the HTTP API).
//! [`relay`] wires the stages together; [`cluster`] starts a throwaway
//! Postgres for `rowcast dev`, the tests and the benchmarks.

pub mod capture;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod db;
pub mod dev;
pub mod fanout;
pub mod gateway;
pub mod outbox;
pub mod relay;
pub mod route;
pub mod schema;
pub mod shutdown;
pub mod telemetry;
