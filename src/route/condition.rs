//! Route conditions: tests on one column of the old or new row, such as a
//! status transition (`old.status = "pending"`, `new.status = "accepted"`)
//! or a column going from null to set.

use serde_json::Value;

use crate::event::{Row, RowChange};

/// Which version of the row a condition reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The row before the change (updates, deletes).
    Old,
    /// The row after the change (inserts, updates).
    New,
}

/// What a condition checks about a column's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    /// Equal to this value.
    Eq(Value),
    /// Not equal to this value.
    Not(Value),
    /// Equal to one of these values.
    In(Vec<Value>),
    /// Null (`true`) or set (`false`).
    Null(bool),
}

/// One condition of a route; all of a route's conditions must hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// Old or new row.
    pub side: Side,
    /// The column tested.
    pub column: String,
    /// The test.
    pub test: Test,
}

impl Condition {
    /// The column this condition reads.
    pub fn column(&self) -> &str {
        &self.column
    }

    /// Whether it holds for a change. A condition on a version of the row
    /// the change does not have (the old row of an insert) does not hold.
    pub fn holds(&self, change: &RowChange) -> bool {
        let row = match self.side {
            Side::Old => change.old.as_ref(),
            Side::New => change.new.as_ref(),
        };
        row.is_some_and(|row| self.holds_on(row))
    }

    /// Whether it holds for one version of a row, whichever side it names
    /// (room conditions test the row a room is rendered from).
    pub fn holds_on(&self, row: &Row) -> bool {
        let value = row.get(&self.column).unwrap_or(&Value::Null);
        match &self.test {
            Test::Eq(expected) => same(value, expected),
            Test::Not(expected) => !same(value, expected),
            Test::In(options) => options.iter().any(|o| same(value, o)),
            Test::Null(null) => value.is_null() == *null,
        }
    }
}

/// Equality that treats `1`, `1.0` and `"1"` alike, since a routes file
/// cannot know how every column type renders.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            s.parse::<f64>().ok() == n.as_f64()
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Op;
    use serde_json::json;

    fn update(old: Value, new: Value) -> RowChange {
        RowChange {
            table: "public.t".into(),
            op: Op::Update,
            old: old.as_object().cloned(),
            new: new.as_object().cloned(),
        }
    }

    fn cond(side: Side, column: &str, test: Test) -> Condition {
        Condition {
            side,
            column: column.into(),
            test,
        }
    }

    #[test]
    fn transitions_compare_old_and_new() {
        let change = update(json!({"status": "pending"}), json!({"status": "accepted"}));
        assert!(cond(Side::Old, "status", Test::Eq(json!("pending"))).holds(&change));
        assert!(cond(Side::New, "status", Test::Eq(json!("accepted"))).holds(&change));
        assert!(!cond(Side::New, "status", Test::Eq(json!("rejected"))).holds(&change));
        assert!(cond(Side::New, "status", Test::Not(json!("rejected"))).holds(&change));
        assert!(cond(
            Side::New,
            "status",
            Test::In(vec![json!("x"), json!("accepted")])
        )
        .holds(&change));
    }

    #[test]
    fn null_tests_and_missing_columns() {
        let change = update(
            json!({"read_at": null}),
            json!({"read_at": "2026-01-01T00:00:00+00:00"}),
        );
        assert!(cond(Side::Old, "read_at", Test::Null(true)).holds(&change));
        assert!(cond(Side::New, "read_at", Test::Null(false)).holds(&change));
        assert!(!cond(Side::New, "read_at", Test::Null(true)).holds(&change));
        assert!(cond(Side::New, "absent", Test::Null(true)).holds(&change));
    }

    #[test]
    fn numbers_and_strings_compare_loosely() {
        let change = update(json!({"rating": 5}), json!({"rating": "5"}));
        assert!(cond(Side::Old, "rating", Test::Eq(json!(5.0))).holds(&change));
        assert!(cond(Side::New, "rating", Test::Eq(json!(5))).holds(&change));
        assert!(!cond(Side::New, "rating", Test::Eq(json!(4))).holds(&change));
    }

    #[test]
    fn a_missing_row_version_never_matches() {
        let insert = RowChange {
            table: "public.t".into(),
            op: Op::Insert,
            old: None,
            new: json!({"status": "x"}).as_object().cloned(),
        };
        assert!(!cond(Side::Old, "status", Test::Null(true)).holds(&insert));
        assert!(!cond(Side::Old, "status", Test::Not(json!("y"))).holds(&insert));
    }
}
