//! Decoder for the `pgoutput` logical replication stream.
//!
//! rowcast's logical capture path receives committed row changes from a
//! replication slot using the `pgoutput` plugin, protocol version 1, with
//! column values in text format. Each `XLogData` payload carries exactly one
//! `pgoutput` message; [`decode`] turns that payload into a [`Message`].
//! Relation and Type messages describe the schema that later Insert, Update
//! and Delete messages refer to by id, so the caller keeps them in a cache.
//!
//! Decoding never panics: every read is bounds-checked, and truncated,
//! malformed or unknown input is reported as a [`DecodeError`]. Column values
//! are handed out as slices of the original payload, so no value is copied.

use bytes::Bytes;

/// One decoded `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// Begin (`B`), Commit (`C`) or a logical decoding message (`M`): the
    /// replication client reads these itself and hands them over as its
    /// own events, so there is nothing here to decode.
    Framing,
    /// Schema of a table, sent before the first change to it in a session and
    /// again whenever its definition changes.
    Relation(Relation),
    /// A row was inserted.
    Insert(Insert),
    /// A row was updated.
    Update(Update),
    /// A row was deleted.
    Delete(Delete),
    /// One or more tables were truncated.
    Truncate(Truncate),
    /// Name of a non-built-in data type used by a later Relation message.
    Type(TypeInfo),
    /// The transaction was replayed from another node by logical replication.
    Origin(Origin),
}

/// Schema of one table (`R`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    /// Relation OID that later change messages use to refer to this table.
    pub id: u32,
    /// Schema name; the wire's empty string for `pg_catalog` is spelled out.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Which old-row columns Update and Delete messages carry.
    pub replica_identity: ReplicaIdentity,
    /// Columns in table order; tuples list their values in this order.
    pub columns: Vec<Column>,
}

/// The table's `REPLICA IDENTITY` setting, which decides what old-row data
/// Update and Delete messages include.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplicaIdentity {
    /// The primary key columns (`d`).
    Default,
    /// No old-row data at all (`n`).
    Nothing,
    /// Every column of the old row (`f`).
    Full,
    /// The columns of a chosen unique index (`i`).
    Index,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    /// Whether the column is part of the replica identity key, and so present
    /// in key tuples of Update and Delete messages.
    pub is_key: bool,
    /// Column name, used as the key in emitted row JSON.
    pub name: String,
    /// Data type OID, which selects how the text value converts to JSON.
    pub type_oid: u32,
    /// Type modifier (such as `varchar` length), or -1 when there is none.
    pub type_modifier: i32,
}

/// One column value inside a [`Tuple`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Datum {
    /// SQL NULL (`n`).
    Null,
    /// An out-of-line (TOAST) value that the change left as it was, so the
    /// server did not send it (`u`); the previous value still holds.
    UnchangedToast,
    /// Value in the type's text output format (`t`), a slice of the payload.
    Text(Bytes),
    /// Value in the type's binary format (`b`), a slice of the payload.
    Binary(Bytes),
}

/// The column values of one row, in the order of [`Relation::columns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tuple(
    /// One value per column.
    pub Vec<Datum>,
);

/// An inserted row (`I`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Insert {
    /// Id of the [`Relation`] the row belongs to.
    pub relation_id: u32,
    /// The new row.
    pub new: Tuple,
}

/// An updated row (`U`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Update {
    /// Id of the [`Relation`] the row belongs to.
    pub relation_id: u32,
    /// The full old row (`O`), sent with `REPLICA IDENTITY FULL`.
    pub old: Option<Tuple>,
    /// The old key columns (`K`), sent when the key changed; non-key columns
    /// are null.
    pub key: Option<Tuple>,
    /// The new row.
    pub new: Tuple,
}

/// A deleted row (`D`). Exactly one of `old` and `key` is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delete {
    /// Id of the [`Relation`] the row belonged to.
    pub relation_id: u32,
    /// The full old row (`O`), sent with `REPLICA IDENTITY FULL`.
    pub old: Option<Tuple>,
    /// The old key columns (`K`); non-key columns are null.
    pub key: Option<Tuple>,
}

/// A `TRUNCATE` of one or more tables (`T`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Truncate {
    /// Ids of every truncated [`Relation`].
    pub relation_ids: Vec<u32>,
    /// `TRUNCATE ... CASCADE` was used.
    pub cascade: bool,
    /// `TRUNCATE ... RESTART IDENTITY` was used.
    pub restart_identity: bool,
}

/// Name of a data type (`Y`), sent for types that are not built in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeInfo {
    /// Type OID, as found in [`Column::type_oid`].
    pub id: u32,
    /// Schema name; the wire's empty string for `pg_catalog` is spelled out.
    pub namespace: String,
    /// Type name.
    pub name: String,
}

/// Replication origin of the current transaction (`O`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    /// Commit LSN of the transaction on the origin server.
    pub lsn: u64,
    /// Name of the replication origin.
    pub name: String,
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The payload ended before a complete field could be read.
    #[error("pgoutput message truncated while reading {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// The first byte names no message type this decoder knows.
    #[error("unknown pgoutput message type {byte:#x}")]
    UnknownMessageType {
        /// The message type byte.
        byte: u8,
    },
    /// A Relation message carries an unknown replica identity setting.
    #[error("unknown pgoutput replica identity {byte:#x}")]
    UnknownReplicaIdentity {
        /// The replica identity byte.
        byte: u8,
    },
    /// A tuple column starts with an unknown kind byte.
    #[error("unknown pgoutput tuple column kind {byte:#x}")]
    UnknownDatumKind {
        /// The column kind byte.
        byte: u8,
    },
    /// A change message has a tuple marker other than the ones allowed at
    /// that position (`N`, `K` or `O`).
    #[error("unexpected tuple marker {byte:#x} in pgoutput {message} message")]
    UnexpectedTupleMarker {
        /// The kind of message being decoded.
        message: &'static str,
        /// The marker byte found.
        byte: u8,
    },
    /// A length prefix is negative.
    #[error("pgoutput message has negative length {len} for {what}")]
    NegativeLength {
        /// The field whose length was read.
        what: &'static str,
        /// The length read.
        len: i32,
    },
    /// A NUL-terminated string is not valid UTF-8.
    #[error("pgoutput message has invalid UTF-8 in {what}")]
    InvalidUtf8 {
        /// The string field being read.
        what: &'static str,
    },
    /// Bytes remain after a complete message, so the layout was misread.
    #[error("pgoutput {message} message has {remaining} unexpected trailing bytes")]
    TrailingBytes {
        /// The kind of message decoded.
        message: &'static str,
        /// How many bytes were left over.
        remaining: usize,
    },
}

/// Decodes one `pgoutput` message, starting at its message-type byte.
pub(crate) fn decode(payload: &Bytes) -> Result<Message, DecodeError> {
    let mut reader = Reader::new(payload);
    let (message, kind) = match reader.u8("message type")? {
        b'B' | b'C' | b'M' => return Ok(Message::Framing),
        b'R' => (Message::Relation(Relation::read(&mut reader)?), "relation"),
        b'I' => (Message::Insert(Insert::read(&mut reader)?), "insert"),
        b'U' => (Message::Update(Update::read(&mut reader)?), "update"),
        b'D' => (Message::Delete(Delete::read(&mut reader)?), "delete"),
        b'T' => (Message::Truncate(Truncate::read(&mut reader)?), "truncate"),
        b'Y' => (Message::Type(TypeInfo::read(&mut reader)?), "type"),
        b'O' => (Message::Origin(Origin::read(&mut reader)?), "origin"),
        byte => return Err(DecodeError::UnknownMessageType { byte }),
    };
    reader.finish(kind)?;
    Ok(message)
}

impl Relation {
    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = reader.u32("relation id")?;
        let namespace = reader.namespace("relation namespace")?;
        let name = reader.string("relation name")?;
        let replica_identity = ReplicaIdentity::from_byte(reader.u8("replica identity")?)?;
        let count = reader.u16("relation column count")?;
        let mut columns = Vec::with_capacity(reader.capacity_for(count, 10));
        for _ in 0..count {
            columns.push(Column::read(reader)?);
        }
        Ok(Self {
            id,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }
}

impl ReplicaIdentity {
    fn from_byte(byte: u8) -> Result<Self, DecodeError> {
        match byte {
            b'd' => Ok(Self::Default),
            b'n' => Ok(Self::Nothing),
            b'f' => Ok(Self::Full),
            b'i' => Ok(Self::Index),
            byte => Err(DecodeError::UnknownReplicaIdentity { byte }),
        }
    }
}

impl Column {
    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            is_key: reader.u8("column flags")? & 1 != 0,
            name: reader.string("column name")?,
            type_oid: reader.u32("column type OID")?,
            type_modifier: reader.i32("column type modifier")?,
        })
    }
}

impl Tuple {
    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = reader.u16("tuple column count")?;
        let mut datums = Vec::with_capacity(reader.capacity_for(count, 1));
        for _ in 0..count {
            datums.push(Datum::read(reader)?);
        }
        Ok(Self(datums))
    }
}

impl Datum {
    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match reader.u8("tuple column kind")? {
            b'n' => Ok(Self::Null),
            b'u' => Ok(Self::UnchangedToast),
            b't' => Ok(Self::Text(reader.sized_bytes("text column value")?)),
            b'b' => Ok(Self::Binary(reader.sized_bytes("binary column value")?)),
            byte => Err(DecodeError::UnknownDatumKind { byte }),
        }
    }
}

impl Insert {
    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let relation_id = reader.u32("insert relation id")?;
        reader.expect_new_tuple_marker("insert")?;
        let new = Tuple::read(reader)?;
        Ok(Self { relation_id, new })
    }
}

impl Update {
    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let relation_id = reader.u32("update relation id")?;
        let (old, key) = match reader.u8("update tuple marker")? {
            b'O' => (Some(Tuple::read(reader)?), None),
            b'K' => (None, Some(Tuple::read(reader)?)),
            b'N' => return Self::read_new(reader, relation_id, None, None),
            byte => {
                let message = "update";
                return Err(DecodeError::UnexpectedTupleMarker { message, byte });
            }
        };
        reader.expect_new_tuple_marker("update")?;
        Self::read_new(reader, relation_id, old, key)
    }

    fn read_new(
        reader: &mut Reader<'_>,
        relation_id: u32,
        old: Option<Tuple>,
        key: Option<Tuple>,
    ) -> Result<Self, DecodeError> {
        let new = Tuple::read(reader)?;
        Ok(Self {
            relation_id,
            old,
            key,
            new,
        })
    }
}

impl Delete {
    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let relation_id = reader.u32("delete relation id")?;
        let (old, key) = match reader.u8("delete tuple marker")? {
            b'O' => (Some(Tuple::read(reader)?), None),
            b'K' => (None, Some(Tuple::read(reader)?)),
            byte => {
                let message = "delete";
                return Err(DecodeError::UnexpectedTupleMarker { message, byte });
            }
        };
        Ok(Self {
            relation_id,
            old,
            key,
        })
    }
}

impl Truncate {
    /// Option bit set for `TRUNCATE ... CASCADE`.
    const CASCADE: u8 = 1;
    /// Option bit set for `TRUNCATE ... RESTART IDENTITY`.
    const RESTART_IDENTITY: u8 = 2;

    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = reader.u32("truncate relation count")?;
        let options = reader.u8("truncate options")?;
        let mut relation_ids = Vec::with_capacity(reader.capacity_for(count, 4));
        for _ in 0..count {
            relation_ids.push(reader.u32("truncate relation id")?);
        }
        Ok(Self {
            relation_ids,
            cascade: options & Self::CASCADE != 0,
            restart_identity: options & Self::RESTART_IDENTITY != 0,
        })
    }
}

impl TypeInfo {
    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: reader.u32("type OID")?,
            namespace: reader.namespace("type namespace")?,
            name: reader.string("type name")?,
        })
    }
}

impl Origin {
    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            lsn: reader.u64("origin LSN")?,
            name: reader.string("origin name")?,
        })
    }
}

/// Bounds-checked big-endian reads over one payload.
struct Reader<'a> {
    /// The whole message; byte ranges are sliced out of it without copying.
    payload: &'a Bytes,
    /// Offset of the next unread byte.
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(payload: &'a Bytes) -> Self {
        Self { payload, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.payload.len().saturating_sub(self.pos)
    }

    /// Capacity to reserve for `count` items that each take at least
    /// `min_size` bytes, so a corrupt count cannot force a huge allocation.
    fn capacity_for(&self, count: impl Into<u64>, min_size: usize) -> usize {
        let fits = self.remaining() / min_size.max(1);
        usize::try_from(count.into()).map_or(fits, |count| count.min(fits))
    }

    /// Returns the next `len` bytes as a zero-copy slice.
    fn take(&mut self, len: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.payload.len())
            .ok_or(DecodeError::Truncated { what })?;
        let bytes = self.payload.slice(self.pos..end);
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, what)?;
        <[u8; N]>::try_from(bytes.as_ref()).map_err(|_| DecodeError::Truncated { what })
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(what).map(u8::from_be_bytes)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.array(what).map(u16::from_be_bytes)
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        self.array(what).map(i32::from_be_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_be_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.array(what).map(u64::from_be_bytes)
    }

    /// Reads an Int32 length followed by that many bytes.
    fn sized_bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.i32(what)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::NegativeLength { what, len })?;
        self.take(len, what)
    }

    /// Reads a NUL-terminated UTF-8 string.
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let rest = self.payload.get(self.pos..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|byte| *byte == 0)
            .ok_or(DecodeError::Truncated { what })?;
        let bytes = self.take(len, what)?;
        self.take(1, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { what })
    }

    /// Reads a schema name, where the empty string stands for `pg_catalog`.
    fn namespace(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let name = self.string(what)?;
        Ok(if name.is_empty() {
            String::from("pg_catalog")
        } else {
            name
        })
    }

    /// Consumes the `N` marker that introduces a new-row tuple.
    fn expect_new_tuple_marker(&mut self, message: &'static str) -> Result<(), DecodeError> {
        match self.u8("new tuple marker")? {
            b'N' => Ok(()),
            byte => Err(DecodeError::UnexpectedTupleMarker { message, byte }),
        }
    }

    /// Checks that the whole payload was consumed.
    fn finish(self, message: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            remaining => Err(DecodeError::TrailingBytes { message, remaining }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Assembles pgoutput payloads field by field.
    struct Builder(
        /// The payload so far.
        Vec<u8>,
    );

    impl Builder {
        fn message(tag: u8) -> Self {
            Self(vec![tag])
        }

        fn u8(mut self, value: u8) -> Self {
            self.0.push(value);
            self
        }

        fn u16(mut self, value: u16) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn i32(mut self, value: i32) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn u32(mut self, value: u32) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn i64(mut self, value: i64) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn u64(mut self, value: u64) -> Self {
            self.0.extend_from_slice(&value.to_be_bytes());
            self
        }

        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }

        fn string(self, value: &str) -> Self {
            self.raw(value.as_bytes()).u8(0)
        }

        fn sized(self, bytes: &[u8]) -> Self {
            let len = i32::try_from(bytes.len()).unwrap();
            self.i32(len).raw(bytes)
        }

        /// Appends TupleData; each column is `None` for null, `Some("\u{1}")`
        /// for unchanged TOAST, or `Some(text)`.
        fn tuple(self, columns: &[Option<&str>]) -> Self {
            let count = u16::try_from(columns.len()).unwrap();
            columns
                .iter()
                .fold(self.u16(count), |builder, column| match column {
                    None => builder.u8(b'n'),
                    Some(UNCHANGED) => builder.u8(b'u'),
                    Some(text) => builder.u8(b't').sized(text.as_bytes()),
                })
        }

        fn column(self, is_key: bool, name: &str, type_oid: u32, type_modifier: i32) -> Self {
            self.u8(u8::from(is_key))
                .string(name)
                .u32(type_oid)
                .i32(type_modifier)
        }

        fn build(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    /// Tuple column spelling for an unchanged TOAST value in [`Builder::tuple`].
    const UNCHANGED: &str = "\u{1}";

    fn text(value: &str) -> Datum {
        Datum::Text(Bytes::copy_from_slice(value.as_bytes()))
    }

    fn tuple(columns: &[Option<&str>]) -> Tuple {
        Tuple(
            columns
                .iter()
                .map(|column| match column {
                    None => Datum::Null,
                    Some(UNCHANGED) => Datum::UnchangedToast,
                    Some(value) => text(value),
                })
                .collect(),
        )
    }

    fn relation_payload(identity: u8) -> Bytes {
        Builder::message(b'R')
            .u32(16384)
            .string("public")
            .string("orders")
            .u8(identity)
            .u16(3)
            .column(true, "id", 20, -1)
            .column(false, "note", 1043, 68)
            .column(false, "payload", 3802, -1)
            .build()
    }

    fn insert_payload() -> Bytes {
        Builder::message(b'I')
            .u32(16384)
            .u8(b'N')
            .tuple(&[Some("42"), None, Some("{\"a\": 1}")])
            .build()
    }

    fn update_payload(old_marker: Option<u8>) -> Bytes {
        let builder = Builder::message(b'U').u32(16384);
        let builder = match old_marker {
            Some(marker) => builder.u8(marker).tuple(&[Some("41"), None, None]),
            None => builder,
        };
        builder
            .u8(b'N')
            .tuple(&[Some("42"), Some("hi"), Some(UNCHANGED)])
            .build()
    }

    fn delete_payload(marker: u8) -> Bytes {
        Builder::message(b'D')
            .u32(16384)
            .u8(marker)
            .tuple(&[Some("42"), None, None])
            .build()
    }

    fn truncate_payload(options: u8) -> Bytes {
        Builder::message(b'T')
            .u32(2)
            .u8(options)
            .u32(16384)
            .u32(16390)
            .build()
    }

    fn type_payload() -> Bytes {
        Builder::message(b'Y')
            .u32(70001)
            .string("public")
            .string("mood")
            .build()
    }

    fn origin_payload() -> Bytes {
        Builder::message(b'O')
            .u64(0x0000_0001_0000_00A0)
            .string("node_b")
            .build()
    }

    fn begin_payload() -> Bytes {
        Builder::message(b'B')
            .u64(0x16B_3748)
            .i64(817_412_896_123_456)
            .u32(731)
            .build()
    }

    fn commit_payload() -> Bytes {
        Builder::message(b'C')
            .u8(0)
            .u64(0x16B_3748)
            .u64(0x16B_3778)
            .i64(817_412_896_123_456)
            .build()
    }

    fn logical_message_payload() -> Bytes {
        Builder::message(b'M')
            .u8(1)
            .u64(0x16B_3700)
            .string("rowcast")
            .sized(b"hello")
            .build()
    }

    fn valid_payloads() -> Vec<Bytes> {
        vec![
            relation_payload(b'd'),
            insert_payload(),
            update_payload(None),
            update_payload(Some(b'K')),
            update_payload(Some(b'O')),
            delete_payload(b'K'),
            delete_payload(b'O'),
            truncate_payload(3),
            type_payload(),
            origin_payload(),
        ]
    }

    #[test]
    fn decodes_relation() {
        let expected = Relation {
            id: 16384,
            namespace: "public".into(),
            name: "orders".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                Column {
                    is_key: true,
                    name: "id".into(),
                    type_oid: 20,
                    type_modifier: -1,
                },
                Column {
                    is_key: false,
                    name: "note".into(),
                    type_oid: 1043,
                    type_modifier: 68,
                },
                Column {
                    is_key: false,
                    name: "payload".into(),
                    type_oid: 3802,
                    type_modifier: -1,
                },
            ],
        };
        assert_eq!(
            decode(&relation_payload(b'd')),
            Ok(Message::Relation(expected))
        );
    }

    #[test]
    fn decodes_every_replica_identity() {
        let cases = [
            (b'd', ReplicaIdentity::Default),
            (b'n', ReplicaIdentity::Nothing),
            (b'f', ReplicaIdentity::Full),
            (b'i', ReplicaIdentity::Index),
        ];
        for (byte, identity) in cases {
            match decode(&relation_payload(byte)) {
                Ok(Message::Relation(relation)) => {
                    assert_eq!(relation.replica_identity, identity)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_unknown_replica_identity() {
        assert_eq!(
            decode(&relation_payload(b'x')),
            Err(DecodeError::UnknownReplicaIdentity { byte: b'x' })
        );
    }

    #[test]
    fn spells_out_empty_namespace_as_pg_catalog() {
        let payload = Builder::message(b'R')
            .u32(1259)
            .string("")
            .string("pg_class")
            .u8(b'n')
            .u16(0)
            .build();
        match decode(&payload) {
            Ok(Message::Relation(relation)) => {
                assert_eq!(relation.namespace, "pg_catalog");
                assert!(relation.columns.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        let payload = Builder::message(b'Y')
            .u32(16)
            .string("")
            .string("bool")
            .build();
        match decode(&payload) {
            Ok(Message::Type(info)) => assert_eq!(info.namespace, "pg_catalog"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn decodes_insert() {
        let expected = Insert {
            relation_id: 16384,
            new: tuple(&[Some("42"), None, Some("{\"a\": 1}")]),
        };
        assert_eq!(decode(&insert_payload()), Ok(Message::Insert(expected)));
    }

    #[test]
    fn text_datums_share_the_payload_buffer() {
        let payload = insert_payload();
        let Ok(Message::Insert(insert)) = decode(&payload) else {
            panic!("insert expected");
        };
        let start = payload.as_ptr() as usize;
        let range = start..start + payload.len();
        for datum in &insert.new.0 {
            if let Datum::Text(bytes) = datum {
                assert!(range.contains(&(bytes.as_ptr() as usize)));
            }
        }
    }

    #[test]
    fn decodes_insert_with_binary_and_empty_text() {
        let payload = Builder::message(b'I')
            .u32(7)
            .u8(b'N')
            .u16(2)
            .u8(b'b')
            .sized(&[0, 0, 0, 42])
            .u8(b't')
            .sized(b"")
            .build();
        let expected = Insert {
            relation_id: 7,
            new: Tuple(vec![
                Datum::Binary(Bytes::from_static(&[0, 0, 0, 42])),
                text(""),
            ]),
        };
        assert_eq!(decode(&payload), Ok(Message::Insert(expected)));
    }

    #[test]
    fn decodes_update_without_old_row() {
        let expected = Update {
            relation_id: 16384,
            old: None,
            key: None,
            new: tuple(&[Some("42"), Some("hi"), Some(UNCHANGED)]),
        };
        assert_eq!(decode(&update_payload(None)), Ok(Message::Update(expected)));
    }

    #[test]
    fn decodes_update_with_key() {
        let expected = Update {
            relation_id: 16384,
            old: None,
            key: Some(tuple(&[Some("41"), None, None])),
            new: tuple(&[Some("42"), Some("hi"), Some(UNCHANGED)]),
        };
        assert_eq!(
            decode(&update_payload(Some(b'K'))),
            Ok(Message::Update(expected))
        );
    }

    #[test]
    fn decodes_update_with_old_row() {
        let expected = Update {
            relation_id: 16384,
            old: Some(tuple(&[Some("41"), None, None])),
            key: None,
            new: tuple(&[Some("42"), Some("hi"), Some(UNCHANGED)]),
        };
        assert_eq!(
            decode(&update_payload(Some(b'O'))),
            Ok(Message::Update(expected))
        );
    }

    #[test]
    fn decodes_unchanged_toast_in_old_row() {
        let payload = Builder::message(b'U')
            .u32(5)
            .u8(b'O')
            .tuple(&[Some("1"), Some(UNCHANGED)])
            .u8(b'N')
            .tuple(&[Some("1"), Some(UNCHANGED)])
            .build();
        let Ok(Message::Update(update)) = decode(&payload) else {
            panic!("update expected");
        };
        assert_eq!(
            update.old.map(|old| old.0),
            Some(vec![text("1"), Datum::UnchangedToast])
        );
        assert_eq!(update.new.0, vec![text("1"), Datum::UnchangedToast]);
    }

    #[test]
    fn rejects_update_with_bad_markers() {
        let payload = Builder::message(b'U')
            .u32(5)
            .u8(b'X')
            .tuple(&[Some("1")])
            .build();
        assert_eq!(
            decode(&payload),
            Err(DecodeError::UnexpectedTupleMarker {
                message: "update",
                byte: b'X'
            })
        );
        let payload = Builder::message(b'U')
            .u32(5)
            .u8(b'K')
            .tuple(&[Some("1")])
            .u8(b'K')
            .tuple(&[Some("2")])
            .build();
        assert_eq!(
            decode(&payload),
            Err(DecodeError::UnexpectedTupleMarker {
                message: "update",
                byte: b'K'
            })
        );
    }

    #[test]
    fn decodes_delete_with_key_and_with_old_row() {
        let old = tuple(&[Some("42"), None, None]);
        assert_eq!(
            decode(&delete_payload(b'K')),
            Ok(Message::Delete(Delete {
                relation_id: 16384,
                old: None,
                key: Some(old.clone()),
            }))
        );
        assert_eq!(
            decode(&delete_payload(b'O')),
            Ok(Message::Delete(Delete {
                relation_id: 16384,
                old: Some(old),
                key: None,
            }))
        );
    }

    #[test]
    fn rejects_delete_without_old_row_marker() {
        assert_eq!(
            decode(&delete_payload(b'N')),
            Err(DecodeError::UnexpectedTupleMarker {
                message: "delete",
                byte: b'N'
            })
        );
    }

    #[test]
    fn rejects_insert_without_new_tuple_marker() {
        let payload = Builder::message(b'I')
            .u32(5)
            .u8(b'O')
            .tuple(&[Some("1")])
            .build();
        assert_eq!(
            decode(&payload),
            Err(DecodeError::UnexpectedTupleMarker {
                message: "insert",
                byte: b'O'
            })
        );
    }

    #[test]
    fn decodes_truncate_options() {
        let cases = [
            (0, false, false),
            (1, true, false),
            (2, false, true),
            (3, true, true),
        ];
        for (options, cascade, restart_identity) in cases {
            let expected = Truncate {
                relation_ids: vec![16384, 16390],
                cascade,
                restart_identity,
            };
            assert_eq!(
                decode(&truncate_payload(options)),
                Ok(Message::Truncate(expected))
            );
        }
    }

    #[test]
    fn decodes_truncate_without_relations() {
        let payload = Builder::message(b'T').u32(0).u8(0).build();
        let expected = Truncate {
            relation_ids: Vec::new(),
            cascade: false,
            restart_identity: false,
        };
        assert_eq!(decode(&payload), Ok(Message::Truncate(expected)));
    }

    #[test]
    fn truncate_with_huge_count_is_truncated_not_allocated() {
        let payload = Builder::message(b'T').u32(u32::MAX).u8(0).u32(1).build();
        assert_eq!(
            decode(&payload),
            Err(DecodeError::Truncated {
                what: "truncate relation id"
            })
        );
    }

    #[test]
    fn decodes_type() {
        let expected = TypeInfo {
            id: 70001,
            namespace: "public".into(),
            name: "mood".into(),
        };
        assert_eq!(decode(&type_payload()), Ok(Message::Type(expected)));
    }

    #[test]
    fn decodes_origin() {
        let expected = Origin {
            lsn: 0x0000_0001_0000_00A0,
            name: "node_b".into(),
        };
        assert_eq!(decode(&origin_payload()), Ok(Message::Origin(expected)));
    }

    #[test]
    fn framing_messages_are_left_to_the_replication_client() {
        for payload in [begin_payload(), commit_payload(), logical_message_payload()] {
            assert_eq!(decode(&payload), Ok(Message::Framing));
        }
    }

    #[test]
    fn rejects_unknown_message_types() {
        for byte in [b'S', b'E', b'A', b'P', b'K', b'r', 0, 0xff] {
            let payload = Builder::message(byte).u32(1).build();
            assert_eq!(
                decode(&payload),
                Err(DecodeError::UnknownMessageType { byte })
            );
        }
    }

    #[test]
    fn rejects_empty_payload() {
        assert_eq!(
            decode(&Bytes::new()),
            Err(DecodeError::Truncated {
                what: "message type"
            })
        );
    }

    #[test]
    fn rejects_unknown_datum_kind() {
        let payload = Builder::message(b'I')
            .u32(5)
            .u8(b'N')
            .u16(1)
            .u8(b'x')
            .build();
        assert_eq!(
            decode(&payload),
            Err(DecodeError::UnknownDatumKind { byte: b'x' })
        );
    }

    #[test]
    fn rejects_negative_datum_length() {
        let payload = Builder::message(b'I')
            .u32(5)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .i32(-1)
            .build();
        assert_eq!(
            decode(&payload),
            Err(DecodeError::NegativeLength {
                what: "text column value",
                len: -1
            })
        );
    }

    #[test]
    fn rejects_datum_longer_than_payload() {
        let payload = Builder::message(b'I')
            .u32(5)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .i32(i32::MAX)
            .raw(b"abc")
            .build();
        assert_eq!(
            decode(&payload),
            Err(DecodeError::Truncated {
                what: "text column value"
            })
        );
    }

    #[test]
    fn rejects_invalid_utf8_names() {
        let payload = Builder::message(b'O').u64(1).raw(&[0xff, 0xfe, 0]).build();
        assert_eq!(
            decode(&payload),
            Err(DecodeError::InvalidUtf8 {
                what: "origin name"
            })
        );
    }

    #[test]
    fn rejects_trailing_bytes() {
        let payload = Builder::message(b'O').u64(1).string("a").raw(b"zz").build();
        assert_eq!(
            decode(&payload),
            Err(DecodeError::TrailingBytes {
                message: "origin",
                remaining: 2
            })
        );
    }

    #[test]
    fn every_strict_prefix_is_an_error() {
        for payload in valid_payloads() {
            assert!(decode(&payload).is_ok(), "{payload:?}");
            for len in 0..payload.len() {
                let prefix = payload.slice(..len);
                assert!(
                    matches!(decode(&prefix), Err(DecodeError::Truncated { .. })),
                    "prefix {len} of {payload:?} gave {:?}",
                    decode(&prefix)
                );
            }
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        let cases = [
            (
                DecodeError::Truncated {
                    what: "relation name",
                },
                "pgoutput message truncated while reading relation name",
            ),
            (
                DecodeError::UnknownMessageType { byte: b'Z' },
                "unknown pgoutput message type 0x5a",
            ),
            (
                DecodeError::UnexpectedTupleMarker {
                    message: "delete",
                    byte: b'N',
                },
                "unexpected tuple marker 0x4e in pgoutput delete message",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    /// Payloads captured from PostgreSQL 15 with
    /// `pg_logical_slot_peek_binary_changes(..., 'proto_version', '1', ...)`.
    fn captured(hex: &str) -> Bytes {
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
            .collect::<Vec<u8>>();
        Bytes::from(bytes)
    }

    #[test]
    fn decodes_payloads_captured_from_postgres() {
        let relation = captured(concat!(
            "52000040297075626c696300706172656e74006400070169640000000014ffffffff",
            "006e6f7465000000041300000018006269670000000019ffffffff006d0000004024",
            "ffffffff007461677300000003f1ffffffff00617400000004a0ffffffff006e0000",
            "0006a4000a0006",
        ));
        let Ok(Message::Relation(relation)) = decode(&relation) else {
            panic!("relation expected");
        };
        let columns: Vec<(bool, &str, u32, i32)> = relation
            .columns
            .iter()
            .map(|c| (c.is_key, c.name.as_str(), c.type_oid, c.type_modifier))
            .collect();
        assert_eq!(
            (
                relation.id,
                relation.namespace.as_str(),
                relation.name.as_str()
            ),
            (16425, "public", "parent")
        );
        assert_eq!(relation.replica_identity, ReplicaIdentity::Default);
        assert_eq!(
            columns,
            vec![
                (true, "id", 20, -1),
                (false, "note", 1043, 24),
                (false, "big", 25, -1),
                (false, "m", 16420, -1),
                (false, "tags", 1009, -1),
                (false, "at", 1184, -1),
                (false, "n", 1700, 655_366),
            ]
        );

        let toast_update = captured(concat!(
            "55000040294e000774000000013174000000076368616e6765647574000000056861",
            "707079740000000e7b22612062222c4e554c4c2c637d740000001d323032362d3131",
            "2d32352031393a30383a31362e3132333435362b3030740000000531322e3530",
        ));
        let expected = Update {
            relation_id: 16425,
            old: None,
            key: None,
            new: tuple(&[
                Some("1"),
                Some("changed"),
                Some(UNCHANGED),
                Some("happy"),
                Some("{\"a b\",NULL,c}"),
                Some("2026-11-25 19:08:16.123456+00"),
                Some("12.50"),
            ]),
        };
        assert_eq!(decode(&toast_update), Ok(Message::Update(expected)));

        let key_update = captured(concat!(
            "55000040294b00077400000001326e6e6e6e6e6e4e0007740000000231306e740000",
            "0005736d616c6c740000000373616474000000027b7d6e6e",
        ));
        let Ok(Message::Update(update)) = decode(&key_update) else {
            panic!("update expected");
        };
        let key = [Some("2"), None, None, None, None, None, None];
        assert_eq!(update.key, Some(tuple(&key)));
        assert_eq!(update.old, None);

        let full_update =
            captured("550000403c4f00027400000001317400000001784e0002740000000131740000000179");
        let expected = Update {
            relation_id: 16444,
            old: Some(tuple(&[Some("1"), Some("x")])),
            key: None,
            new: tuple(&[Some("1"), Some("y")]),
        };
        assert_eq!(decode(&full_update), Ok(Message::Update(expected)));

        let full_delete = captured("440000403c4f0002740000000131740000000179");
        let expected = Delete {
            relation_id: 16444,
            old: Some(tuple(&[Some("1"), Some("y")])),
            key: None,
        };
        assert_eq!(decode(&full_delete), Ok(Message::Delete(expected)));

        let key_delete = captured("44000040294b0007740000000231306e6e6e6e6e6e");
        let Ok(Message::Delete(delete)) = decode(&key_delete) else {
            panic!("delete expected");
        };
        let key = [Some("10"), None, None, None, None, None, None];
        assert_eq!(delete.key, Some(tuple(&key)));

        let restart = captured("5400000002020000403c00004041");
        let expected = Truncate {
            relation_ids: vec![16444, 16449],
            cascade: false,
            restart_identity: true,
        };
        assert_eq!(decode(&restart), Ok(Message::Truncate(expected)));

        let cascade = captured("5400000002010000402900004031");
        let expected = Truncate {
            relation_ids: vec![16425, 16433],
            cascade: true,
            restart_identity: false,
        };
        assert_eq!(decode(&cascade), Ok(Message::Truncate(expected)));

        let type_info = captured("59000040247075626c6963006d6f6f6400");
        let expected = TypeInfo {
            id: 16420,
            namespace: "public".into(),
            name: "mood".into(),
        };
        assert_eq!(decode(&type_info), Ok(Message::Type(expected)));

        let origin = captured("4f00000000000000ab6e6f64655f6200");
        let expected = Origin {
            lsn: 0xAB,
            name: "node_b".into(),
        };
        assert_eq!(decode(&origin), Ok(Message::Origin(expected)));

        for framing in [
            "4d010000000001994c68726f7763617374000000000568656c6c6f",
            "420000000001994bf80003041d88ebad22000002f7",
        ] {
            assert_eq!(decode(&captured(framing)), Ok(Message::Framing));
        }
    }

    /// Deterministic xorshift generator, so failures reproduce.
    struct Rng(
        /// Current state; never zero.
        u64,
    );

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(bound).unwrap()).unwrap()
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let tags = b"BCMRIUDTYOZ";
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let len = rng.below(48);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next().to_le_bytes()[0]).collect();
            if let Some(first) = bytes.first_mut() {
                *first = tags[rng.below(tags.len())];
            }
            let _ = decode(&Bytes::from(bytes));
        }
    }

    #[test]
    fn mutated_messages_never_panic() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let payloads = valid_payloads();
        for _ in 0..20_000 {
            let mut bytes = payloads[rng.below(payloads.len())].to_vec();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next().to_le_bytes()[0];
            }
            let keep = rng.below(bytes.len() + 1);
            bytes.truncate(keep.max(1));
            let _ = decode(&Bytes::from(bytes));
        }
    }
}
