//! What rowcast's binary, tests and benchmarks share, and the library does
//! not ship: a throwaway Postgres ([`cluster`]) of any major version
//! ([`releases`]), the demo application's
//! schema ([`demo`]) and token minting ([`token`]), used by `rowcast dev`.
//!
//! With the `testing` feature, the parts only tests and the bench need: a
//! Postgres server with a database per test ([`database`]), test
//! certificates ([`certs`]), a WebSocket
//! client ([`ws`]), raw HTTP against the relay ([`http`]), an SSE client ([`sse`]), relay processes
//! that die with their parent ([`process`]) and polling with a deadline
//! ([`wait`]). Nothing here depends on the `rowcast` library: helpers that
//! need its types live in the tests and the bench.

pub mod cluster;
pub mod demo;
pub mod releases;
pub mod token;

#[cfg(feature = "testing")]
pub mod certs;
#[cfg(feature = "testing")]
pub mod database;
#[cfg(feature = "testing")]
pub mod http;
#[cfg(feature = "testing")]
pub mod process;
#[cfg(feature = "testing")]
pub mod sse;
#[cfg(feature = "testing")]
pub mod wait;
#[cfg(feature = "testing")]
pub mod ws;
