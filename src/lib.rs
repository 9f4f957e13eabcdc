//! rowcast turns committed Postgres row changes into realtime events for
//! WebSocket clients.
//!
//! The flow, one module per stage:
//! [`capture`] (triggers or a logical replication slot) →
//! [`route`] (the declarative routes file) →
//! [`outbox`] (stored once, under a global `seq`) →
//! [`fanout`] (rooms and their members) →
//! [`gateway`] (the WebSocket protocol and the HTTP API).
//! [`relay`] wires the stages together from a [`config::Config`], which
//! [`settings::Settings`] (flags and environment) is loaded into.

pub mod capture;
pub mod config;
pub mod db;
pub mod fanout;
pub mod gateway;
pub mod outbox;
pub mod relay;
pub mod route;
pub mod schema;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
