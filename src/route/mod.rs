//! Routing: the stage between capture and the outbox. A [`Captured`] change
//! goes in; the [`Event`]s that the declarative routes file makes of it come
//! out, each with its rooms and only its allowlisted columns.
//!
//! Routes are loaded from a TOML file ([`file`]), compiled once into a
//! [`Router`], and checked against the live catalog at startup
//! ([`Router::check`]) so a typo in a table or column stops the relay with a
//! clear message instead of silently dropping events.

mod access;
mod condition;
pub mod file;
mod sinks;
mod template;
pub mod typescript;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use crate::event::{AccessChange, Captured, Change, Event, Op, Published, Row, RowChange};
use crate::room::is_room_name;

pub use access::AccessRule;
pub use condition::Condition;
pub use file::RouteError;
pub use sinks::{PushRule, PushWhen, Webhook};
pub use template::Template;

/// A room template and the conditions a row version must meet to belong
/// to the room (`{ room = "album_{album_id}", when = { visibility = "public" } }`).
#[derive(Debug)]
pub struct RoomRule {
    /// The room's name, from the row's columns.
    pub template: Template,
    /// Conditions on the row the room is rendered from.
    pub when: Vec<Condition>,
}

impl RoomRule {
    /// The columns it reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.template
            .columns()
            .chain(self.when.iter().map(|w| w.column()))
    }
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// The event it produces.
    pub event: Arc<str>,
    /// Which operations it matches.
    pub ops: Vec<Op>,
    /// Room templates, each with the conditions the row must meet to be
    /// in that room.
    pub rooms: Vec<RoomRule>,
    /// Columns allowed into `data` and `old`, in output order.
    pub expose: Vec<String>,
    /// Updates fire only when one of these changed.
    pub changed: Vec<String>,
    /// Extra conditions on the old and new rows.
    pub when: Vec<Condition>,
    /// Coalescing window, if any.
    pub coalesce: Option<Duration>,
}

/// The routes of one table.
#[derive(Debug)]
pub struct TableRoutes {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Every column any route of this table reads, in a stable order. Capture
    /// takes exactly these, so unexposed columns never leave the database
    /// in trigger mode.
    pub columns: Vec<String>,
    /// The routes, in file order.
    pub routes: Vec<Route>,
    /// Changes of this table that may take a right away.
    pub access: Vec<AccessRule>,
}

impl TableRoutes {
    /// `schema.table`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// All routes, compiled and indexed by `schema.table`.
#[derive(Debug)]
pub struct Router {
    /// Routes per qualified table name.
    tables: BTreeMap<String, TableRoutes>,
    /// Shared copies of the qualified names, so captured changes need not
    /// allocate one per row.
    names: HashMap<String, Arc<str>>,
    /// The routes file's text (empty for routes built in code).
    text: Arc<str>,
    /// Deliveries beyond the open socket.
    sinks: SinkRoutes,
}

/// The routes file's webhooks and push rules.
#[derive(Debug, Default)]
pub struct SinkRoutes {
    /// `[[webhook]]` sections, in file order.
    pub webhooks: Vec<Webhook>,
    /// Push rules by event name.
    pub push: BTreeMap<String, PushRule>,
}

/// The live catalog: qualified table name to its columns.
pub type Catalog = HashMap<String, Vec<String>>;

impl Router {
    /// Loads the built-in routes (the demo schema's defaults).
    pub fn builtin() -> Result<Self, RouteError> {
        Self::from_text(include_str!("../../routes.toml"), "built-in routes.toml")
    }

    /// Parses a routes file's text; `source_name` names it in errors.
    pub fn from_text(text: &str, source_name: &str) -> Result<Self, RouteError> {
        let mut router = file::parse(text, source_name)?;
        router.text = Arc::from(text);
        Ok(router)
    }

    /// The routes file's text, as loaded.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Loads a routes file.
    pub fn from_path(path: &std::path::Path) -> Result<Self, RouteError> {
        let text = std::fs::read_to_string(path).map_err(|e| RouteError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_text(&text, &path.display().to_string())
    }

    pub(crate) fn new(tables: BTreeMap<String, TableRoutes>) -> Self {
        let names = tables
            .keys()
            .map(|k| (k.clone(), Arc::from(k.as_str())))
            .collect();
        Self {
            tables,
            names,
            text: Arc::from(""),
            sinks: SinkRoutes::default(),
        }
    }

    fn with_sinks(mut self, sinks: SinkRoutes) -> Self {
        self.sinks = sinks;
        self
    }

    /// The webhooks and push rules.
    pub fn sinks(&self) -> &SinkRoutes {
        &self.sinks
    }

    /// The routes of one table (`schema.table`).
    pub fn table(&self, qualified: &str) -> Option<&TableRoutes> {
        self.tables.get(qualified)
    }

    /// The shared name of a routed table (`schema.table`).
    pub fn table_name(&self, qualified: &str) -> Option<Arc<str>> {
        self.names.get(qualified).cloned()
    }

    /// The routed tables.
    pub fn tables(&self) -> impl Iterator<Item = &TableRoutes> {
        self.tables.values()
    }

    /// Refuses routes naming a table or column the database does not have.
    pub fn check(&self, catalog: &Catalog) -> Result<(), RouteError> {
        for table in self.tables.values() {
            let qualified = table.qualified();
            let Some(columns) = catalog.get(&qualified) else {
                return Err(RouteError::Catalog(format!(
                    "table {qualified} does not exist"
                )));
            };
            if let Some(missing) = table.columns.iter().find(|c| !columns.contains(c)) {
                let route = table
                    .routes
                    .iter()
                    .find(|r| route_reads(r, missing))
                    .map(|r| format!("route `{}`: ", r.event))
                    .unwrap_or_default();
                return Err(RouteError::Catalog(format!(
                    "{route}column `{missing}` does not exist in table {qualified}"
                )));
            }
        }
        Ok(())
    }

    /// Turns one captured change into its events (possibly none).
    pub fn route(&self, change: &Change) -> Vec<Event> {
        match &change.captured {
            Captured::Published(p) => vec![published_event(p, change.at)],
            Captured::Row(row) => match self.tables.get(&*row.table) {
                Some(table) => {
                    let mut events = Vec::new();
                    for route in &table.routes {
                        route.apply(row, change.at, &mut events);
                    }
                    events
                }
                None => Vec::new(),
            },
        }
    }

    /// What a captured change means for access (`None`: nothing to check).
    pub fn access(&self, change: &Change) -> Option<AccessChange> {
        let Captured::Row(row) = &change.captured else {
            return None;
        };
        let table = self.tables.get(&*row.table)?;
        let mut access = AccessChange::default();
        for rule in &table.access {
            rule.apply(row, &mut access);
        }
        (!access.is_empty()).then_some(access)
    }
}

fn route_reads(route: &Route, column: &str) -> bool {
    route.expose.iter().any(|c| c == column)
        || route.changed.iter().any(|c| c == column)
        || route.when.iter().any(|w| w.column() == column)
        || route.rooms.iter().any(|r| r.columns().any(|c| c == column))
}

fn published_event(p: &Published, at: OffsetDateTime) -> Event {
    let mut rooms: Vec<String> = Vec::with_capacity(p.rooms.len());
    for room in &p.rooms {
        if is_room_name(room) && !rooms.contains(room) {
            rooms.push(room.clone());
        }
    }
    Event {
        name: Arc::from(p.event.as_str()),
        rooms,
        data: p.data.to_string(),
        old: None,
        at,
        count: None,
        coalesce: None,
    }
}

impl Route {
    /// The events this route makes of a change, if it matches: one for the
    /// rooms the row is in, and, for an update that moved the row out of
    /// rooms, one for those rooms carrying only what they knew already.
    fn apply(&self, change: &RowChange, at: OffsetDateTime, out: &mut Vec<Event>) {
        if !self.ops.contains(&change.op) || !self.matches(change) {
            return;
        }
        let shown = match change.op {
            Op::Delete => change.old.as_ref(),
            Op::Insert | Op::Update => change.new.as_ref(),
        };
        let Some(shown) = shown else {
            return;
        };
        let rooms = self.rooms_of(shown, &[]);
        let updated = change.op == Op::Update;
        let event = |rooms: Vec<String>, data: Row| Event {
            name: self.event.clone(),
            rooms,
            data: Value::Object(data).to_string(),
            old: updated.then(|| Value::Object(self.changed_exposed(change)).to_string()),
            at,
            count: None,
            coalesce: self.coalesce,
        };
        let left = match (&change.old, updated) {
            (Some(old), true) => self.rooms_of(old, &rooms),
            _ => Vec::new(),
        };
        if !rooms.is_empty() {
            out.push(event(rooms, self.exposed(shown)));
        }
        if !left.is_empty() {
            out.push(event(left, self.unchanged_exposed(change)));
        }
    }

    fn matches(&self, change: &RowChange) -> bool {
        if change.op == Op::Update && !self.changed.iter().any(|c| column_changed(change, c)) {
            return false;
        }
        self.when.iter().all(|w| w.holds(change))
    }

    /// The rooms one version of the row belongs to (templates rendered from
    /// it whose conditions it meets), leaving out those in `except`.
    fn rooms_of(&self, row: &Row, except: &[String]) -> Vec<String> {
        let mut rooms = Vec::with_capacity(self.rooms.len());
        for room in &self.rooms {
            if !room.when.iter().all(|w| w.holds_on(row)) {
                continue;
            }
            if let Some(name) = room.template.render(row) {
                if !rooms.contains(&name) && !except.contains(&name) {
                    rooms.push(name);
                }
            }
        }
        rooms
    }

    /// The exposed columns an update left as they were.
    fn unchanged_exposed(&self, change: &RowChange) -> Row {
        let Some(old) = change.old.as_ref() else {
            return Row::new();
        };
        self.expose
            .iter()
            .filter(|c| !column_changed(change, c))
            .filter_map(|c| old.get(c).map(|v| (c.clone(), v.clone())))
            .collect()
    }

    fn exposed(&self, row: &Row) -> Row {
        self.expose
            .iter()
            .filter_map(|c| row.get(c).map(|v| (c.clone(), v.clone())))
            .collect()
    }

    fn changed_exposed(&self, change: &RowChange) -> Row {
        let Some(old) = change.old.as_ref() else {
            return Row::new();
        };
        self.expose
            .iter()
            .filter(|c| column_changed(change, c))
            .filter_map(|c| old.get(c).map(|v| (c.clone(), v.clone())))
            .collect()
    }
}

/// Whether a column differs between the old and new row. Inserts and
/// deletes count every column as changed.
fn column_changed(change: &RowChange, column: &str) -> bool {
    match (&change.old, &change.new) {
        (Some(old), Some(new)) => old.get(column) != new.get(column),
        _ => true,
    }
}

#[cfg(test)]
mod tests;
