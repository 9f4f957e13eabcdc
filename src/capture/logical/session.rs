//! The replication session: opened on the primary (the first host of a
//! multi-host `DATABASE_URL` that accepts writes, as the pool picks), and
//! held before it streams so the relay can ask that very server who it is
//! and what its slot looks like. Everything [`super::continuity`] judges
//! comes from the session that then streams.

use std::time::Duration;

use pgwire_replication::{Lsn, QueryRow, ReplicationClient, ReplicationConfig};

use super::continuity::{Observed, SlotState};
use super::slot;
use crate::capture::CaptureError;
use crate::config::CaptureConfig;
use crate::db::{DatabaseConfig, Endpoint};
use crate::quote::{ident, literal};

/// Most replication events read ahead of the one being handled. Each may
/// be a whole row (up to the largest value Postgres stores), so this bounds
/// the memory of read-ahead rows; the socket applies backpressure beyond it.
const READ_AHEAD_EVENTS: usize = 64;

/// What the server says about itself.
#[derive(Clone, Debug)]
pub(super) struct Server {
    /// `server_version_num`.
    pub version: u32,
    /// What continuity is judged on.
    pub observed: Observed,
    /// `synchronized_standby_slots` (17+): the physical slots whose standbys
    /// must receive WAL before logical replication sends it on.
    pub standbys: Vec<String>,
}

impl Server {
    /// Whether slots can be kept across a failover (PostgreSQL 17+).
    pub fn has_failover_slots(&self) -> bool {
        self.version >= 170_000
    }
}

/// Opens a replication session on the primary, held before streaming.
pub(super) async fn open(
    database: &DatabaseConfig,
    config: &CaptureConfig,
    slot: &str,
) -> Result<ReplicationClient, CaptureError> {
    let endpoint = Endpoint::find(database).await?;
    let tls = database.tls.replication(&endpoint.host);
    let publications = vec![
        config.publication.clone(),
        slot::publish_publication(config),
    ];
    let config = ReplicationConfig::new(
        endpoint.host,
        endpoint.user,
        endpoint.password,
        endpoint.dbname,
        slot,
        publications,
    )
    .with_port(endpoint.port)
    .with_tls(tls)
    .with_start_lsn(Lsn(0))
    .with_status_interval(Duration::from_millis(500))
    .with_wakeup_interval(Duration::from_secs(5))
    .with_buffer_size(READ_AHEAD_EVENTS)
    .with_options(format!(
        "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=1 {}",
        crate::db::SEARCH_PATH_OPTION
    ))
    .with_application_name("rowcast");
    Ok(ReplicationClient::connect_gated(config).await?)
}

/// Asks the held session's server who it is and how `slot` stands. A
/// server in recovery is a standby: the relay waits for a primary.
pub(super) async fn observe(
    client: &mut ReplicationClient,
    slot: &str,
) -> Result<Server, CaptureError> {
    let rows = client
        .simple_query(
            "SELECT current_setting('server_version_num'), pg_is_in_recovery()::text,
                    coalesce(current_setting('synchronized_standby_slots', true), '')",
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| CaptureError::Interrupted("the server answered no row".into()))?;
    if text(row, 1).as_deref() == Some("true") {
        return Err(CaptureError::Interrupted(
            "the server is a standby (in recovery); waiting for a primary".into(),
        ));
    }
    let version: u32 = text(row, 0).and_then(|v| v.parse().ok()).unwrap_or(0);
    let standbys = text(row, 2).map(|s| standby_slots(&s)).unwrap_or_default();
    let system = client.identify_system().await?;
    let slot = slot_state(client, slot, version).await?;
    Ok(Server {
        version,
        observed: Observed {
            system: system.system_id,
            timeline: system.timeline,
            slot,
        },
        standbys,
    })
}

/// The slot as `pg_replication_slots` shows it, with the columns this
/// server version has.
async fn slot_state(
    client: &mut ReplicationClient,
    slot: &str,
    version: u32,
) -> Result<Option<SlotState>, CaptureError> {
    let conflicting = if version >= 160_000 {
        "conflicting::text"
    } else {
        "NULL"
    };
    let (reason, failover) = if version >= 170_000 {
        ("invalidation_reason", "failover::text")
    } else {
        ("NULL", "'false'")
    };
    let rows = client
        .simple_query(&format!(
            "SELECT confirmed_flush_lsn::text, wal_status, {conflicting}, {reason}, {failover}
             FROM pg_replication_slots
             WHERE slot_name = {} AND database = current_database()",
            literal(slot)
        ))
        .await?;
    Ok(rows.first().map(|row| {
        let unusable = match (text(row, 1), text(row, 2), text(row, 3)) {
            (_, _, Some(reason)) => Some(format!("invalidated: {reason}")),
            (_, Some(c), _) if c == "true" => {
                Some("invalidated by a conflict with recovery".to_string())
            }
            (Some(status), _, _) if status == "lost" => {
                Some("wal_status lost: the WAL it needed was removed".to_string())
            }
            _ => None,
        };
        SlotState {
            confirmed: text(row, 0).and_then(|l| Lsn::parse(&l).ok()).map(|l| l.0),
            unusable,
            failover: text(row, 4).as_deref() == Some("true"),
        }
    }))
}

/// Makes an existing slot one that standbys synchronise (17+).
pub(super) async fn enable_failover(
    client: &mut ReplicationClient,
    slot: &str,
) -> Result<(), CaptureError> {
    client
        .simple_query(&format!(
            "ALTER_REPLICATION_SLOT {} ( FAILOVER true )",
            ident(slot)
        ))
        .await?;
    tracing::info!(%slot, "the replication slot is now kept on standbys that synchronise slots (failover)");
    Ok(())
}

/// Reads `synchronized_standby_slots`: slot names, comma-separated, each
/// possibly double-quoted.
fn standby_slots(setting: &str) -> Vec<String> {
    setting
        .split(',')
        .map(|name| name.trim().trim_matches('"').to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Column `i` of a text-format row.
fn text(row: &QueryRow, i: usize) -> Option<String> {
    row.get(i)?
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::standby_slots;

    #[test]
    fn synchronized_standby_slots_are_read_as_names() {
        assert_eq!(standby_slots(""), Vec::<String>::new());
        assert_eq!(standby_slots("sb1, \"Sb2\""), ["sb1", "Sb2"]);
    }
}
