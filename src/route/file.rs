//! The routes file: its TOML shape and its compilation into a [`Router`].
//!
//! Parsing is strict (unknown keys are errors) and every problem is reported
//! on one line that names the file, the line or the route, and the fix.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::condition::{Condition, Side, Test};
use super::sinks::{self, PushRule};
use super::template::Problem;
use super::{AccessRule, RoomRule, Route, Router, SinkRoutes, TableRoutes, Template};
use crate::event::{is_event_name, Op};

/// A routes file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The file could not be read.
    #[error("routes file {path}: {reason}")]
    Io {
        /// The path given.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("routes file {source_name}: {message}")]
    Parse {
        /// File name for the message.
        source_name: String,
        /// Where and what.
        message: String,
    },
    /// A route makes no sense on its own.
    #[error("routes file {source_name}: route `{event}`: {message}")]
    Invalid {
        /// File name for the message.
        source_name: String,
        /// The route's event name.
        event: String,
        /// What is wrong.
        message: String,
    },
    /// A route names something the database does not have.
    #[error("routes: {0}")]
    Catalog(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    tables: BTreeMap<String, TableFile>,
    #[serde(default)]
    route: Vec<RouteFile>,
    #[serde(default)]
    access: Vec<AccessFile>,
    #[serde(default)]
    webhook: Vec<sinks::WebhookFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    table: String,
    on: Vec<String>,
    changed: Option<Vec<String>>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    schema: Option<String>,
    #[serde(default)]
    expose: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    event: String,
    table: String,
    on: Vec<String>,
    rooms: Vec<RoomFile>,
    expose: Option<Vec<String>>,
    changed: Option<Vec<String>>,
    #[serde(default)]
    when: WhenFile,
    coalesce: Option<String>,
    push: Option<sinks::PushFile>,
}

/// A room: a template, or a template with conditions on the row.
#[derive(Deserialize)]
#[serde(untagged)]
enum RoomFile {
    Plain(String),
    Guarded(GuardedRoomFile),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardedRoomFile {
    room: String,
    when: BTreeMap<String, TestFile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WhenFile {
    #[serde(default)]
    old: BTreeMap<String, TestFile>,
    #[serde(default)]
    new: BTreeMap<String, TestFile>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TestFile {
    Op(OpFile),
    Literal(toml::Value),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpFile {
    eq: Option<toml::Value>,
    not: Option<toml::Value>,
    #[serde(rename = "in")]
    one_of: Option<Vec<toml::Value>>,
    null: Option<bool>,
}

/// Parses and compiles a routes file's text.
pub fn parse(text: &str, source_name: &str) -> Result<Router, RouteError> {
    let file: RoutesFile = toml::from_str(text).map_err(|e| RouteError::Parse {
        source_name: source_name.to_string(),
        message: describe_toml_error(text, &e),
    })?;
    let mut tables: BTreeMap<String, TableRoutes> = BTreeMap::new();
    let mut push_rules: Vec<(String, PushRule)> = Vec::new();
    for route in &file.route {
        let invalid = |problem: Problem| RouteError::Invalid {
            source_name: source_name.to_string(),
            event: route.event.clone(),
            message: problem.0,
        };
        let table_file = file.tables.get(&route.table);
        let (schema, name) = split_table(&route.table, table_file).map_err(invalid)?;
        let compiled = compile(route, table_file).map_err(invalid)?;
        if let Some(push) = &route.push {
            let rule = sinks::push(push, &compiled.expose).map_err(invalid)?;
            push_rules.push((route.event.clone(), rule));
        }
        let entry = tables
            .entry(format!("{schema}.{name}"))
            .or_insert_with(|| TableRoutes {
                schema,
                name,
                columns: table_file.map(|t| t.expose.clone()).unwrap_or_default(),
                routes: Vec::new(),
                access: Vec::new(),
            });
        add_columns(&mut entry.columns, &compiled);
        entry.routes.push(compiled);
    }
    for rule in &file.access {
        let invalid = |problem: Problem| RouteError::Invalid {
            source_name: source_name.to_string(),
            event: format!("access on {}", rule.table),
            message: problem.0,
        };
        let table_file = file.tables.get(&rule.table);
        let (schema, name) = split_table(&rule.table, table_file).map_err(invalid)?;
        let compiled = compile_access(rule).map_err(invalid)?;
        let entry = tables
            .entry(format!("{schema}.{name}"))
            .or_insert_with(|| TableRoutes {
                schema,
                name,
                columns: Vec::new(),
                routes: Vec::new(),
                access: Vec::new(),
            });
        for column in compiled.columns() {
            if !entry.columns.iter().any(|c| c == column) {
                entry.columns.push(column.to_string());
            }
        }
        entry.access.push(compiled);
    }
    let push = sinks::push_rules(push_rules).map_err(|(event, problem)| RouteError::Invalid {
        source_name: source_name.to_string(),
        event,
        message: problem.0,
    })?;
    let mut webhooks = Vec::new();
    for hook in &file.webhook {
        let compiled = sinks::webhook(hook).map_err(|problem| RouteError::Invalid {
            source_name: source_name.to_string(),
            event: format!("webhook {}", hook.name()),
            message: problem.0,
        })?;
        if webhooks
            .iter()
            .any(|w: &sinks::Webhook| w.name == compiled.name)
        {
            return Err(RouteError::Invalid {
                source_name: source_name.to_string(),
                event: format!("webhook {}", compiled.name),
                message: "two webhooks have this name: each needs its own cursor".into(),
            });
        }
        webhooks.push(compiled);
    }
    Ok(Router::new(tables).with_sinks(SinkRoutes { webhooks, push }))
}

fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .lines()
        .next()
        .unwrap_or("invalid TOML")
        .to_string();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

fn split_table(table: &str, table_file: Option<&TableFile>) -> Result<(String, String), Problem> {
    let (schema, name) = match table.split_once('.') {
        Some((schema, name)) => (schema.to_string(), name.to_string()),
        None => (
            table_file
                .and_then(|t| t.schema.clone())
                .unwrap_or_else(|| "public".into()),
            table.to_string(),
        ),
    };
    if schema.is_empty() || name.is_empty() {
        return Err(format!("`{table}` is not a table name").into());
    }
    Ok((schema, name))
}

fn compile(route: &RouteFile, table_file: Option<&TableFile>) -> Result<Route, Problem> {
    if !is_event_name(&route.event) {
        return Err("event names use letters, digits, `-`, `_`, `.` and `:`".into());
    }
    let ops = ops(&route.on)?;
    let expose = route
        .expose
        .clone()
        .or_else(|| table_file.map(|t| t.expose.clone()))
        .unwrap_or_default();
    if expose.is_empty() {
        return Err(format!(
            "no exposed columns (set `expose` on the route or under [tables.{}])",
            route.table
        )
        .into());
    }
    let rooms = route
        .rooms
        .iter()
        .map(room_rule)
        .collect::<Result<Vec<_>, _>>()?;
    if rooms.is_empty() {
        return Err("`rooms` is empty".into());
    }
    let when = conditions(&route.when, &ops)?;
    let changed = route.changed.clone().unwrap_or_else(|| expose.clone());
    if changed.is_empty() {
        return Err("`changed` is empty: list the columns whose change fires the route".into());
    }
    let coalesce = route.coalesce.as_deref().map(window).transpose()?;
    Ok(Route {
        event: Arc::from(route.event.as_str()),
        ops,
        rooms,
        expose,
        changed,
        when,
        coalesce,
    })
}

fn room_rule(room: &RoomFile) -> Result<RoomRule, Problem> {
    let (template, when) = match room {
        RoomFile::Plain(template) => (template, None),
        RoomFile::Guarded(guarded) => (&guarded.room, Some(&guarded.when)),
    };
    let when = when
        .into_iter()
        .flatten()
        .map(|(column, test)| {
            Ok(Condition {
                side: Side::New,
                column: column.clone(),
                test: test_of(column, test)?,
            })
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    Ok(RoomRule {
        template: Template::parse(template)?,
        when,
    })
}

fn compile_access(rule: &AccessFile) -> Result<AccessRule, Problem> {
    let templates = |list: &[String]| {
        list.iter()
            .map(|t| Template::parse(t))
            .collect::<Result<Vec<_>, _>>()
    };
    let rooms = templates(&rule.rooms)?;
    let users = templates(&rule.users)?;
    if rooms.is_empty() && users.is_empty() {
        return Err("an access rule needs `rooms` or `users` to re-check".into());
    }
    Ok(AccessRule {
        ops: ops(&rule.on)?,
        changed: rule.changed.clone().unwrap_or_default(),
        rooms,
        users,
    })
}

fn ops(on: &[String]) -> Result<Vec<Op>, Problem> {
    let mut ops = Vec::new();
    for name in on {
        let op = match name.to_ascii_lowercase().as_str() {
            "insert" => Op::Insert,
            "update" => Op::Update,
            "delete" => Op::Delete,
            other => {
                return Err(
                    format!("unknown operation `{other}` in `on` (insert, update, delete)").into(),
                )
            }
        };
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
    if ops.is_empty() {
        return Err("`on` is empty".into());
    }
    Ok(ops)
}

fn conditions(when: &WhenFile, ops: &[Op]) -> Result<Vec<Condition>, Problem> {
    let has_old = ops.iter().any(|o| matches!(o, Op::Update | Op::Delete));
    let has_new = ops.iter().any(|o| matches!(o, Op::Insert | Op::Update));
    if !when.old.is_empty() && !has_old {
        return Err("`when.old` can never hold on an insert-only route".into());
    }
    if !when.new.is_empty() && !has_new {
        return Err("`when.new` can never hold on a delete-only route".into());
    }
    let sides = [(Side::Old, &when.old), (Side::New, &when.new)];
    let mut out = Vec::new();
    for (side, tests) in sides {
        for (column, test) in tests {
            out.push(Condition {
                side,
                column: column.clone(),
                test: test_of(column, test)?,
            });
        }
    }
    Ok(out)
}

fn test_of(column: &str, test: &TestFile) -> Result<Test, Problem> {
    let op = match test {
        TestFile::Literal(value) => return Ok(Test::Eq(scalar(column, value)?)),
        TestFile::Op(op) => op,
    };
    let given = [
        op.eq.is_some(),
        op.not.is_some(),
        op.one_of.is_some(),
        op.null.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(
            format!("condition on `{column}` needs exactly one of eq, not, in, null").into(),
        );
    }
    Ok(match (&op.eq, &op.not, &op.one_of, op.null) {
        (Some(v), ..) => Test::Eq(scalar(column, v)?),
        (_, Some(v), ..) => Test::Not(scalar(column, v)?),
        (_, _, Some(vs), _) => Test::In(
            vs.iter()
                .map(|v| scalar(column, v))
                .collect::<Result<_, _>>()?,
        ),
        (_, _, _, Some(null)) => Test::Null(null),
        _ => unreachable!("exactly one was checked above"),
    })
}

fn scalar(column: &str, value: &toml::Value) -> Result<Value, Problem> {
    match value {
        toml::Value::String(s) => Ok(Value::String(s.clone())),
        toml::Value::Integer(i) => Ok(Value::from(*i)),
        toml::Value::Float(f) => Ok(Value::from(*f)),
        toml::Value::Boolean(b) => Ok(Value::Bool(*b)),
        _ => Err(format!(
            "condition on `{column}`: use a string, number or boolean, or {{ null = true }}"
        )
        .into()),
    }
}

fn window(text: &str) -> Result<Duration, Problem> {
    match crate::duration::parse_duration(text) {
        Some(d) if d >= Duration::from_millis(1) && d <= Duration::from_secs(3600) => Ok(d),
        _ => Err(format!("`coalesce = \"{text}\"` must be a duration between 1ms and 1h").into()),
    }
}

fn add_columns(columns: &mut Vec<String>, route: &Route) {
    let read = route
        .expose
        .iter()
        .map(String::as_str)
        .chain(route.changed.iter().map(String::as_str))
        .chain(route.when.iter().map(|w| w.column()))
        .chain(route.rooms.iter().flat_map(|r| r.columns()));
    for column in read {
        if !columns.iter().any(|c| c == column) {
            columns.push(column.to_string());
        }
    }
}
