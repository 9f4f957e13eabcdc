//! rowcast turns committed Postgres row changes into realtime events for
//! WebSocket clients.
//!
//! The flow, one module per stage, one typed value between stages
//! (`event`):
//! `capture` (a `capture::Source`: triggers or a logical replication
//! slot, yielding `Change`s) → `ingest` (the single writer: one loop
//! routes each change through `route` into `Event`s and stores them in
//! the `outbox` as `StoredEvent`s under a global `seq`) → `fanout`
//! (rooms and their members) → `gateway` (the WebSocket `protocol` and
//! the HTTP API). `relay` wires the stages together.
//! [`config::Config`] is loaded from [`settings::Settings`] (flags and
//! environment).
//!
//! The boundary: the stages are private modules, so rustc reports what
//! nothing uses. The public surface is what the `rowcast` binary, the
//! benchmarks and the integration tests need: the settings and the
//! [`config`] they load into, [`Relay`], [`shutdown`], [`migrate`], the
//! database helpers, and the routes compiler for `rowcast types`.

mod bus;
mod capture;
pub mod config;
mod db;
mod doc;
mod duration;
mod event;
mod fanout;
mod gateway;
mod ingest;
mod outbox;
mod protocol;
mod quote;
mod relay;
mod room;
mod route;
mod schema;
pub mod settings;
pub mod shutdown;
mod sink;
mod telemetry;

// The public surface, re-exported from the stages.
pub use db::{describe, describe_pg_error, parse_url, pool_of};
pub use duration::parse_duration;
pub use fanout::Hub;
pub use outbox::{room_events, Span};
pub use relay::Relay;
pub use route::{typescript, Catalog, Router};
pub use schema::migrate;
pub use sink::journal::{Attempt as SinkAttempt, Journal as SinkJournal, Outcome as SinkOutcome};
pub use telemetry::init_logs;
