//! Whether the slot about to be streamed still carries every change
//! committed since the outbox last recorded it.
//!
//! A replication slot holds the server's promise to keep every change after
//! its confirmed position. That promise breaks when the slot is dropped,
//! when a failover promotes a standby that never had it (any logical slot
//! before PostgreSQL 17, or one not synchronised), when it is invalidated
//! (`max_slot_wal_keep_size`), when something else consumes it, or when the
//! database is replaced by a different system. Changes committed in between
//! will never reach the relay: a capture gap. The relay records, with each
//! outbox transaction, the slot it streams, the highest position it lets
//! that slot confirm (always before the slot is told), and the system it
//! streams from; [`judge`] compares that record with what the server shows
//! at every connect.

use crate::event::CaptureGap;

/// What `realtime.state` records about the slot streamed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Record {
    /// The slot, once one was streamed (`None`: logical capture never ran).
    pub slot: Option<String>,
    /// The highest position it may have confirmed (`None`: not recorded).
    pub confirmed: Option<u64>,
    /// The system identifier streamed from (`None`: not recorded yet).
    pub system: Option<String>,
    /// The timeline last streamed from.
    pub timeline: Option<u32>,
}

/// What the server shows now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Observed {
    /// Its system identifier (`IDENTIFY_SYSTEM`).
    pub system: String,
    /// Its timeline.
    pub timeline: u32,
    /// The slot of the configured name in this database, if there is one.
    pub slot: Option<SlotState>,
}

/// A slot as `pg_replication_slots` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct SlotState {
    /// `confirmed_flush_lsn`.
    pub confirmed: Option<u64>,
    /// Why the slot can no longer be streamed (`wal_status = 'lost'`, an
    /// invalidation, a conflict), when it cannot.
    pub unusable: Option<String>,
    /// Whether it is kept on standbys that synchronise slots (17+).
    pub failover: bool,
}

/// What the relay does before streaming.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Logical capture never ran here: create the slot if it is missing.
    Fresh,
    /// The slot carries everything after what is stored.
    Continuous,
    /// Changes were lost. `recreate`: the slot is missing or unusable, so
    /// a new one is made (after dropping the old one, if it is there).
    Gap {
        /// What was lost, for the log, the metric and the marker.
        gap: CaptureGap,
        /// Whether a new slot must be made.
        recreate: bool,
    },
}

/// Compares the record with the server. `configured` is the slot the
/// relay is set to stream.
pub(super) fn judge(configured: &str, record: &Record, observed: &Observed) -> Verdict {
    let Some(recorded) = &record.slot else {
        return Verdict::Fresh;
    };
    let gap = |reason: String, recreate: bool| Verdict::Gap {
        gap: CaptureGap {
            slot: Some(recorded.clone()),
            last_lsn: record.confirmed,
            reason,
        },
        recreate,
    };
    let missing = observed.slot.is_none();
    if let Some(system) = record.system.as_ref().filter(|s| **s != observed.system) {
        return gap(
            format!(
                "the database is a different system (identifier {}, streamed from {system} before): a restored or replaced cluster",
                observed.system
            ),
            missing,
        );
    }
    if recorded != configured {
        return gap(
            format!("the relay streamed slot `{recorded}` and is now set to stream `{configured}`"),
            missing,
        );
    }
    let Some(slot) = &observed.slot else {
        return gap(
            "the slot is missing: it was dropped, or lost in a failover to a standby that did not have it"
                .into(),
            true,
        );
    };
    if let Some(why) = &slot.unusable {
        return gap(format!("the slot can no longer be streamed ({why})"), true);
    }
    match (slot.confirmed, record.confirmed) {
        (Some(at), Some(recorded_at)) if at > recorded_at => gap(
            format!(
                "the slot confirmed {}, past the {} the relay recorded: something else consumed it",
                lsn(at),
                lsn(recorded_at)
            ),
            false,
        ),
        _ => Verdict::Continuous,
    }
}

/// An LSN as Postgres prints it.
pub(super) fn lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            slot: Some("rowcast_app".into()),
            confirmed: Some(0x100),
            system: Some("7001".into()),
            timeline: Some(1),
        }
    }

    fn observed(slot: Option<SlotState>) -> Observed {
        Observed {
            system: "7001".into(),
            timeline: 1,
            slot,
        }
    }

    fn at(confirmed: u64) -> Option<SlotState> {
        Some(SlotState {
            confirmed: Some(confirmed),
            ..SlotState::default()
        })
    }

    fn reason(verdict: Verdict) -> (String, bool) {
        match verdict {
            Verdict::Gap { gap, recreate } => {
                assert_eq!(gap.slot.as_deref(), Some("rowcast_app"));
                assert_eq!(gap.last_lsn, Some(0x100));
                (gap.reason, recreate)
            }
            other => panic!("expected a gap, got {other:?}"),
        }
    }

    #[test]
    fn no_record_is_a_fresh_start_whatever_the_server_has() {
        let fresh = Record::default();
        assert_eq!(
            judge("rowcast_app", &fresh, &observed(None)),
            Verdict::Fresh
        );
        assert_eq!(
            judge("rowcast_app", &fresh, &observed(at(5))),
            Verdict::Fresh
        );
    }

    #[test]
    fn a_slot_at_or_behind_the_record_is_continuous() {
        // Behind: a synchronised slot after a promotion; stored changes are
        // skipped by position.
        for confirmed in [0x100, 0x80] {
            let verdict = judge("rowcast_app", &record(), &observed(at(confirmed)));
            assert_eq!(verdict, Verdict::Continuous);
        }
        // A new timeline alone is a promotion, not a gap.
        let mut promoted = observed(at(0x100));
        promoted.timeline = 2;
        assert_eq!(
            judge("rowcast_app", &record(), &promoted),
            Verdict::Continuous
        );
        // A record without a confirmed position cannot be overtaken.
        let mut old = record();
        old.confirmed = None;
        assert_eq!(
            judge("rowcast_app", &old, &observed(at(0x900))),
            Verdict::Continuous
        );
    }

    #[test]
    fn a_missing_slot_is_a_gap_and_a_new_slot() {
        let (why, recreate) = reason(judge("rowcast_app", &record(), &observed(None)));
        assert!(why.contains("missing"), "{why}");
        assert!(recreate);
    }

    #[test]
    fn an_unusable_slot_is_a_gap_and_a_new_slot() {
        let lost = Some(SlotState {
            confirmed: Some(0x100),
            unusable: Some("wal_status lost".into()),
            failover: false,
        });
        let (why, recreate) = reason(judge("rowcast_app", &record(), &observed(lost)));
        assert!(why.contains("wal_status lost"), "{why}");
        assert!(recreate);
    }

    #[test]
    fn a_slot_ahead_of_the_record_was_consumed_by_someone_else() {
        let (why, recreate) = reason(judge("rowcast_app", &record(), &observed(at(0x180))));
        assert!(why.contains("0/180") && why.contains("0/100"), "{why}");
        assert!(!recreate, "the slot itself is fine");
    }

    #[test]
    fn another_system_or_another_slot_name_is_a_gap() {
        let mut other = observed(at(0x10));
        other.system = "9999".into();
        let (why, recreate) = reason(judge("rowcast_app", &record(), &other));
        assert!(why.contains("9999") && why.contains("7001"), "{why}");
        assert!(!recreate);
        let (why, recreate) = reason(judge("rowcast_new", &record(), &observed(None)));
        assert!(why.contains("rowcast_new"), "{why}");
        assert!(recreate);
    }

    #[test]
    fn lsns_print_as_postgres_does() {
        assert_eq!(lsn(0x1_0000_00AB), "1/AB");
        assert_eq!(lsn(0), "0/0");
    }
}
