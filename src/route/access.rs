//! Access rules: which committed changes may take a right away. The routes
//! file declares them next to the routes (`[[access]]`), so a deployer's
//! authorization rule needs no Rust: a matching change names the rooms whose
//! members, and the users whose joined rooms, the gateway authorizes again.

use super::template::Template;
use crate::event::{AccessChange, Op, RowChange};

/// One compiled `[[access]]` rule.
#[derive(Debug)]
pub struct AccessRule {
    /// Which operations it matches.
    pub ops: Vec<Op>,
    /// Updates match only when one of these changed (empty: any update).
    pub changed: Vec<String>,
    /// Rooms whose members are authorized again.
    pub rooms: Vec<Template>,
    /// Users (`sub`) whose joined rooms are authorized again.
    pub users: Vec<Template>,
}

impl AccessRule {
    /// The columns the rule reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.changed
            .iter()
            .map(String::as_str)
            .chain(self.rooms.iter().flat_map(|t| t.columns()))
            .chain(self.users.iter().flat_map(|t| t.columns()))
    }

    /// Adds what a change means for access, if the rule matches it. Rooms
    /// and users come from both versions of an updated row.
    pub fn apply(&self, change: &RowChange, into: &mut AccessChange) {
        if !self.ops.contains(&change.op) {
            return;
        }
        if change.op == Op::Update && !self.changed.is_empty() {
            let (Some(old), Some(new)) = (&change.old, &change.new) else {
                return;
            };
            if self.changed.iter().all(|c| old.get(c) == new.get(c)) {
                return;
            }
        }
        let rows = [change.old.as_ref(), change.new.as_ref()];
        for (templates, out) in [
            (&self.rooms, &mut into.rooms),
            (&self.users, &mut into.users),
        ] {
            for template in templates {
                for row in rows.iter().flatten() {
                    if let Some(name) = template.render(row) {
                        if !out.contains(&name) {
                            out.push(name);
                        }
                    }
                }
            }
        }
    }
}
