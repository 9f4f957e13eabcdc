//! The bus between relay nodes on one database. Stored events need none:
//! every node reads them from the outbox, woken by the head each outbox
//! transaction notifies. What the bus carries is what is never stored:
//! ephemeral frames (`emit`), so that members on every node get them.
//! [`postgres`] is the default and needs no infrastructure beyond Postgres.

pub mod postgres;

pub use postgres::PgBus;
