//! rowcast turns committed Postgres row changes into realtime events for
//! WebSocket clients.
//!
//! The flow, one module per stage, one typed value between stages
//! ([`event`]):
//! [`capture`] (a [`capture::Source`]: triggers or a logical replication
//! slot, yielding `Change`s) → [`ingest`] (the single writer: one loop
//! routes each change through [`route`] into `Event`s and stores them in
//! the [`outbox`] as `StoredEvent`s under a global `seq`) → [`fanout`]
//! (rooms and their members) → [`gateway`] (the WebSocket [`protocol`] and
//! the HTTP API). [`relay`] wires the stages together.
//! [`config::Config`] is loaded from [`settings::Settings`] (flags and
//! environment).

pub mod bus;
pub mod capture;
pub mod config;
pub mod db;
pub mod duration;
pub mod event;
pub mod fanout;
pub mod gateway;
pub mod ingest;
pub mod outbox;
pub mod protocol;
pub mod quote;
pub mod relay;
pub mod room;
pub mod route;
pub mod schema;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
