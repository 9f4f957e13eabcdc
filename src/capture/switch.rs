//! Switching capture modes, losslessly both ways. The transaction that
//! installs or drops the capture triggers also writes a logical message
//! into WAL (`to-trigger:<token>` or `to-logical`), so a replication stream
//! knows, transaction by transaction, whether the WAL or the triggers'
//! capture rows carry the changes, and the stored position remembers which.
//!
//! Trigger capture taking over from a slot first reads the slot up to its
//! own `to-trigger` message ([`Retiring`]), then drops it.

use deadpool_postgres::Pool;

use crate::db::DbError;

/// The prefix of the logical messages rowcast writes into WAL.
pub const MESSAGE_PREFIX: &str = "rowcast";
/// Written with the transaction that drops the capture triggers.
const TO_LOGICAL: &str = "to-logical";
/// Written, with a token, by the transaction that installs the triggers.
const TO_TRIGGER: &str = "to-trigger:";

/// A capture-mode switch read from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Switch {
    /// The triggers were dropped: from the next transaction on, the WAL
    /// carries the changes.
    ToLogical,
    /// The triggers were installed (with this token): their capture rows
    /// carry the changes from the next transaction on.
    ToTrigger(String),
}

impl Switch {
    /// Reads a transactional logical message, if it is one of rowcast's.
    pub fn parse(prefix: &str, content: &[u8]) -> Option<Self> {
        if prefix != MESSAGE_PREFIX {
            return None;
        }
        let content = std::str::from_utf8(content).ok()?;
        if content == TO_LOGICAL {
            return Some(Self::ToLogical);
        }
        content
            .strip_prefix(TO_TRIGGER)
            .map(|token| Self::ToTrigger(token.to_string()))
    }
}

/// The message the trigger-installing transaction writes.
pub fn to_trigger_message(token: &str) -> String {
    format!("{TO_TRIGGER}{token}")
}

/// A replication slot that trigger capture must read up to the switch
/// message carrying `token` before it may drop the slot.
#[derive(Clone, Debug)]
pub struct Retiring {
    /// The slot.
    pub slot: String,
    /// The token of the switch message written with the triggers.
    pub token: String,
}

impl Retiring {
    /// A retiring slot with a fresh token.
    pub fn new(slot: String) -> Self {
        Self {
            slot,
            token: format!("{:016x}", rand::random::<u64>()),
        }
    }

    /// The message the trigger-installing transaction writes into WAL.
    pub fn message(&self) -> String {
        to_trigger_message(&self.token)
    }
}

/// Replaces the capture triggers by the slot in one transaction that also
/// writes a switch message into WAL and remembers the switch: until the
/// stream reaches that message, changes are read from the capture rows the
/// triggers wrote, never twice.
pub async fn drop_triggers(pool: &Pool) -> Result<(), DbError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let tables: Vec<String> = tx
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.tgname = 'rowcast_capture'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if tables.is_empty() {
        return Ok(());
    }
    for table in &tables {
        tx.batch_execute(&format!("DROP TRIGGER rowcast_capture ON {table}"))
            .await?;
    }
    tx.execute(
        "SELECT pg_logical_emit_message(true, $1, $2)",
        &[&MESSAGE_PREFIX, &TO_LOGICAL],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        tables = tables.len(),
        "capture triggers replaced by the replication slot"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_messages_read_back() {
        let retiring = Retiring::new("s".into());
        assert_eq!(
            Switch::parse(MESSAGE_PREFIX, retiring.message().as_bytes()),
            Some(Switch::ToTrigger(retiring.token.clone()))
        );
        assert_eq!(
            Switch::parse(MESSAGE_PREFIX, TO_LOGICAL.as_bytes()),
            Some(Switch::ToLogical)
        );
        assert_eq!(Switch::parse("other", TO_LOGICAL.as_bytes()), None);
    }
}
