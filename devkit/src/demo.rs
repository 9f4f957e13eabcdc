//! The demo application: a schema of users, content, messages, calendars,
//! media and payments, its authorization and presence rules, and demo rows.
//! `rowcast dev` runs on it, and the tests and the bench build their
//! template databases from it.

/// The demo application's schema.
pub const SCHEMA: &str = include_str!("../../sql/demo.sql");
/// The demo's authorization and presence rules.
pub const AUTHORIZATION: &str = include_str!("../../sql/authorize.sql");
/// Demo rows.
pub const DEMO_ROWS: &str = include_str!("../../sql/demo_rows.sql");

/// Applies the demo schema and its rules (not its rows) to a database.
pub async fn apply_schema(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute("SET client_min_messages = warning")
        .await?;
    client.batch_execute(SCHEMA).await?;
    client.batch_execute(AUTHORIZATION).await
}

/// Inserts the demo rows (re-runnable).
pub async fn insert_rows(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(DEMO_ROWS).await
}
