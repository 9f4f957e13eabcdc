//! Turning decoded pgoutput messages into captured changes: the relation
//! cache (schema and types of each table, refreshed whenever the server
//! sends a new Relation message, for instance after ALTER TABLE), column
//! filtering (only the columns the routes read are kept), unchanged TOAST
//! values filled from the old row, and `realtime.capture` rows read as
//! published events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::pgoutput::{self, Datum, DecodeError, Message, Tuple};
use super::value::text_to_json;
use crate::capture::table;
use crate::event::{Captured, Op, Row, RowChange};
use crate::route::Router;

/// What one change message became.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ChangeItem {
    /// A change of a routed table.
    Row(RowChange),
    /// A row inserted into `realtime.capture`: a published event (`P`) or
    /// a change a capture trigger recorded (`I`/`U`/`D`).
    CaptureRow {
        /// The capture row's id, deleted when its event is stored.
        id: i64,
        /// What it holds.
        captured: Captured,
    },
}

/// The result of decoding one XLogData payload.
#[derive(Debug, Default)]
pub(super) struct Decoded {
    /// Whether the message was a row change (counted for partial
    /// transactions, whether or not it is routed).
    pub is_change: bool,
    /// The change, when it concerns a routed table or the capture table.
    pub item: Option<ChangeItem>,
}

/// How a relation is used.
#[derive(Debug, Clone)]
enum RelationKind {
    /// A routed table: the shared name and which columns to keep.
    Routed(Arc<str>),
    /// `realtime.capture`.
    Capture,
    /// Anything else (not expected in the publications).
    Other,
}

/// A cached relation.
#[derive(Debug, Clone)]
struct KnownRelation {
    /// How it is used.
    kind: RelationKind,
    /// Column names and types, in the server's order.
    columns: Vec<(String, u32)>,
    /// Whether each column is kept (read by some route).
    keep: Vec<bool>,
}

/// Stateful decoder for one replication session.
pub(super) struct Decoder {
    /// Routes, for table names and kept columns.
    router: Arc<Router>,
    /// Relations by id.
    relations: HashMap<u32, KnownRelation>,
    /// Tables whose TRUNCATE was already reported.
    truncated: HashSet<u32>,
}

impl Decoder {
    /// A decoder with an empty relation cache.
    pub fn new(router: Arc<Router>) -> Self {
        Self {
            router,
            relations: HashMap::new(),
            truncated: HashSet::new(),
        }
    }

    /// Decodes one pgoutput message.
    pub fn decode(&mut self, payload: &Bytes) -> Result<Decoded, DecodeError> {
        let (relation_id, op, old, new) = match pgoutput::decode(payload)? {
            Message::Relation(relation) => {
                self.remember(relation);
                return Ok(Decoded::default());
            }
            Message::Insert(i) => (i.relation_id, Op::Insert, None, Some(i.new)),
            Message::Update(u) => (u.relation_id, Op::Update, u.old.or(u.key), Some(u.new)),
            Message::Delete(d) => (d.relation_id, Op::Delete, d.old.or(d.key), None),
            Message::Truncate(t) => {
                self.report_truncate(&t.relation_ids);
                return Ok(Decoded::default());
            }
            _ => return Ok(Decoded::default()),
        };
        let item = self.change(relation_id, op, old, new);
        Ok(Decoded {
            is_change: true,
            item,
        })
    }

    fn remember(&mut self, relation: pgoutput::Relation) {
        let qualified = format!("{}.{}", relation.namespace, relation.name);
        let (kind, wanted): (RelationKind, Option<&[String]>) = match self.router.table(&qualified)
        {
            Some(table) => (
                RelationKind::Routed(
                    self.router
                        .table_name(&qualified)
                        .unwrap_or_else(|| qualified.as_str().into()),
                ),
                Some(&table.columns),
            ),
            None if qualified == "realtime.capture" => (RelationKind::Capture, None),
            None => (RelationKind::Other, None),
        };
        let keep = relation
            .columns
            .iter()
            .map(|c| wanted.is_none_or(|w| w.contains(&c.name)))
            .collect();
        let columns = relation
            .columns
            .into_iter()
            .map(|c| (c.name, c.type_oid))
            .collect();
        self.relations.insert(
            relation.id,
            KnownRelation {
                kind,
                columns,
                keep,
            },
        );
    }

    fn report_truncate(&mut self, ids: &[u32]) {
        for id in ids {
            if let Some(KnownRelation {
                kind: RelationKind::Routed(table),
                ..
            }) = self.relations.get(id)
            {
                if self.truncated.insert(*id) {
                    tracing::warn!(%table, "TRUNCATE produces no events (routes match row changes); clients should reload");
                }
            }
        }
    }

    fn change(
        &self,
        relation_id: u32,
        op: Op,
        old: Option<Tuple>,
        new: Option<Tuple>,
    ) -> Option<ChangeItem> {
        let Some(relation) = self.relations.get(&relation_id) else {
            tracing::warn!(
                relation_id,
                "a change arrived for an unknown relation; skipped"
            );
            return None;
        };
        let old_row = old.map(|t| relation.row(&t, None));
        let new_row = new.map(|t| relation.row(&t, old_row.as_ref()));
        match &relation.kind {
            RelationKind::Routed(table) => Some(ChangeItem::Row(RowChange {
                table: table.clone(),
                op,
                old: old_row,
                new: new_row,
            })),
            RelationKind::Capture if op == Op::Insert => capture_row(&self.router, new_row?),
            RelationKind::Capture | RelationKind::Other => None,
        }
    }
}

impl KnownRelation {
    /// A row of kept columns. Unchanged TOAST values are taken from `old`;
    /// without an old value the column is left out, never set to null.
    fn row(&self, tuple: &Tuple, old: Option<&Row>) -> Row {
        let mut row = Row::new();
        for (i, datum) in tuple.0.iter().enumerate() {
            let (Some((name, type_oid)), Some(true)) = (self.columns.get(i), self.keep.get(i))
            else {
                continue;
            };
            let value = match datum {
                Datum::Null => Value::Null,
                Datum::Text(bytes) => match std::str::from_utf8(bytes) {
                    Ok(text) => text_to_json(*type_oid, text),
                    Err(_) => continue,
                },
                Datum::UnchangedToast => match old.and_then(|o| o.get(name)) {
                    Some(value) => value.clone(),
                    None => continue,
                },
                Datum::Binary(_) => continue,
            };
            row.insert(name.clone(), value);
        }
        row
    }
}

/// Reads a `realtime.capture` insert.
fn capture_row(router: &Router, mut row: Row) -> Option<ChangeItem> {
    let id = row.get("id")?.as_i64()?;
    let op = row.get("op")?.as_str()?.bytes().next()?;
    let table = match row.get("tbl") {
        Some(Value::String(table)) => table.clone(),
        _ => String::new(),
    };
    let captured = table::captured(router, &table, op, row.remove("old"), row.remove("new"))?;
    Some(ChangeItem::CaptureRow { id, captured })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds pgoutput messages for the tests.
    struct Msg(Vec<u8>);

    impl Msg {
        fn new(kind: u8) -> Self {
            Self(vec![kind])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn u16(mut self, v: u16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn str(mut self, v: &str) -> Self {
            self.0.extend_from_slice(v.as_bytes());
            self.0.push(0);
            self
        }
        fn text(self, v: &str) -> Self {
            let mut s = self.u8(b't').u32(v.len() as u32);
            s.0.extend_from_slice(v.as_bytes());
            s
        }
        /// A tuple of `kind` (`N` new, `O` old) whose cells are all text.
        fn tuple(self, kind: u8, cells: &[&str]) -> Self {
            cells
                .iter()
                .fold(self.u8(kind).u16(cells.len() as u16), |m, cell| {
                    m.text(cell)
                })
        }
        fn bytes(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    fn relation(id: u32, name: &str, columns: &[(&str, u32)]) -> Bytes {
        let mut m = Msg::new(b'R')
            .u32(id)
            .str("public")
            .str(name)
            .u8(b'f')
            .u16(columns.len() as u16);
        for (column, oid) in columns {
            m = m.u8(0).str(column).u32(*oid).u32(u32::MAX);
        }
        m.bytes()
    }

    fn decoder() -> Decoder {
        Decoder::new(Arc::new(Router::builtin().unwrap()))
    }

    /// A decoder that has read the relation `id`: `public.<name>` whose
    /// columns are all text but `id` (int8).
    fn decoder_with(id: u32, name: &str, columns: &[&str]) -> Decoder {
        let mut d = decoder();
        let typed: Vec<(&str, u32)> = columns
            .iter()
            .map(|c| (*c, if *c == "id" { 20 } else { 25 }))
            .collect();
        d.decode(&relation(id, name, &typed)).unwrap();
        d
    }

    /// An insert into relation `id` whose cells are all text.
    fn insert(id: u32, cells: &[&str]) -> Bytes {
        Msg::new(b'I').u32(id).tuple(b'N', cells).bytes()
    }

    /// The row change `message` decodes to.
    fn row_change(d: &mut Decoder, message: &Bytes) -> RowChange {
        let decoded = d.decode(message).unwrap();
        assert!(decoded.is_change);
        match decoded.item {
            Some(ChangeItem::Row(change)) => change,
            _ => panic!("not a row change"),
        }
    }

    #[test]
    fn inserts_keep_only_routed_columns() {
        let mut d = decoder_with(7, "users", &["id", "username", "email"]);
        let insert = insert(7, &["1", "ann", "a@x"]);
        let change = row_change(&mut d, &insert);
        assert_eq!(&*change.table, "public.users");
        let new = change.new.unwrap();
        assert_eq!(new.get("id"), Some(&Value::from(1)));
        assert_eq!(new.get("username"), Some(&Value::from("ann")));
        assert!(!new.contains_key("email"), "unrouted columns are dropped");
    }

    #[test]
    fn unchanged_toast_comes_from_the_old_row_never_null() {
        let mut d = decoder_with(8, "content", &["id", "body", "title"]);
        // The new tuple: id 5, body unchanged (TOAST), title "new".
        let new_tuple = |m: Msg| m.u8(b'N').u16(3).text("5").u8(b'u').text("new");
        let update = new_tuple(
            Msg::new(b'U')
                .u32(8)
                .tuple(b'O', &["5", "long body", "old"]),
        );
        let change = row_change(&mut d, &update.bytes());
        assert_eq!(
            change.new.unwrap().get("body"),
            Some(&Value::from("long body"))
        );

        let no_old = new_tuple(Msg::new(b'U').u32(8)).bytes();
        let change = row_change(&mut d, &no_old);
        assert!(!change.new.unwrap().contains_key("body"));
    }

    #[test]
    fn a_new_relation_message_replaces_the_schema() {
        let mut d = decoder_with(9, "content", &["id", "title"]);
        d.decode(&relation(
            9,
            "content",
            &[("id", 20), ("extra", 25), ("title", 25)],
        ))
        .unwrap();
        let insert = insert(9, &["3", "x", "t"]);
        let change = row_change(&mut d, &insert);
        let new = change.new.unwrap();
        assert_eq!(new.get("title"), Some(&Value::from("t")));
        assert!(!new.contains_key("extra"));
    }

    #[test]
    fn capture_inserts_become_published_events() {
        let mut d = decoder();
        let capture = Msg::new(b'R')
            .u32(10)
            .str("realtime")
            .str("capture")
            .u8(b'd')
            .u16(3)
            .u8(1)
            .str("id")
            .u32(20)
            .u32(u32::MAX)
            .u8(0)
            .str("op")
            .u32(18)
            .u32(u32::MAX)
            .u8(0)
            .str("new")
            .u32(3802)
            .u32(u32::MAX)
            .bytes();
        d.decode(&capture).unwrap();
        let insert = Msg::new(b'I')
            .u32(10)
            .u8(b'N')
            .u16(3)
            .text("42")
            .text("P")
            .text(r#"{"rooms": ["broadcast"], "event": "announcement", "data": {"a": 1}}"#)
            .bytes();
        let Some(ChangeItem::CaptureRow {
            id,
            captured: Captured::Published(p),
        }) = d.decode(&insert).unwrap().item
        else {
            panic!()
        };
        assert_eq!(id, 42);
        assert_eq!(p.event, "announcement");
        assert_eq!(p.rooms, vec!["broadcast"]);
    }

    #[test]
    fn unknown_relations_and_other_tables_yield_nothing() {
        let mut d = decoder();
        let insert = Msg::new(b'I').u32(99).u8(b'N').u16(1).text("1").bytes();
        let decoded = d.decode(&insert).unwrap();
        assert!(decoded.is_change && decoded.item.is_none());
        d.decode(&relation(11, "unrouted", &[("id", 20)])).unwrap();
        let insert = Msg::new(b'I').u32(11).u8(b'N').u16(1).text("1").bytes();
        assert!(d.decode(&insert).unwrap().item.is_none());
    }
}
