//! Room templates such as `content_{id}`: literal text with `{column}`
//! placeholders filled from a row. A null or missing column drops the room,
//! so `album_{album_id}` only applies when the media is in an album.

use serde_json::Value;

use crate::event::Row;
use crate::room::is_room_name;

/// Why one part of a routes file cannot be used: a sentence for the
/// operator, which [`RouteError::Invalid`](super::RouteError::Invalid)
/// places at its route.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Problem(pub String);

impl From<String> for Problem {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for Problem {
    fn from(message: &str) -> Self {
        Self(message.to_string())
    }
}

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    /// Copied as is.
    Literal(String),
    /// Replaced by the column's value.
    Column(String),
}

/// A parsed room template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// The source text, for messages.
    source: String,
    /// Literal and column parts in order.
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template, refusing unbalanced braces, empty placeholders
    /// and literal text that could never be part of a room name.
    pub fn parse(source: &str) -> Result<Self, Problem> {
        let mut parts = Vec::new();
        let mut rest = source;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("`{source}`: unclosed `{{`"))?;
                    let column = rest[1..end].trim();
                    if column.is_empty() || column.contains('{') {
                        return Err(format!("`{source}`: empty or nested placeholder").into());
                    }
                    parts.push(Part::Column(column.to_string()));
                    rest = &rest[end + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let literal = &rest[..end];
                    if literal.contains('}') || !is_room_name(literal) {
                        return Err(format!(
                            "`{source}`: `{literal}` cannot be part of a room name"
                        )
                        .into());
                    }
                    parts.push(Part::Literal(literal.to_string()));
                    rest = &rest[end..];
                }
            }
        }
        if parts.is_empty() {
            return Err("empty room template".into());
        }
        Ok(Self {
            source: source.to_string(),
            parts,
        })
    }

    /// The columns the template reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Column(c) => Some(c.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The template as written (`content_{id}`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The room for a row, or `None` when a column is null or missing, or
    /// its value would not make a valid room name.
    pub fn render(&self, row: &Row) -> Option<String> {
        let mut room = String::with_capacity(self.source.len() + 8);
        for part in &self.parts {
            match part {
                Part::Literal(text) => room.push_str(text),
                Part::Column(column) => match row.get(column)? {
                    Value::String(s) => room.push_str(s),
                    Value::Number(n) => room.push_str(&n.to_string()),
                    Value::Bool(b) => room.push_str(if *b { "true" } else { "false" }),
                    _ => return None,
                },
            }
        }
        is_room_name(&room).then_some(room)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn renders_columns() {
        let t = Template::parse("content_{id}").unwrap();
        assert_eq!(t.render(&row(json!({"id": 42}))), Some("content_42".into()));
        assert_eq!(t.columns().collect::<Vec<_>>(), vec!["id"]);
        let t = Template::parse("broadcast").unwrap();
        assert_eq!(t.render(&row(json!({}))), Some("broadcast".into()));
    }

    #[test]
    fn null_or_missing_drops_the_room() {
        let t = Template::parse("album_{album_id}").unwrap();
        assert_eq!(t.render(&row(json!({"album_id": null}))), None);
        assert_eq!(t.render(&row(json!({}))), None);
    }

    #[test]
    fn values_that_break_room_names_drop_the_room() {
        let t = Template::parse("tag_{name}").unwrap();
        assert_eq!(t.render(&row(json!({"name": "a b; drop"}))), None);
        assert_eq!(
            t.render(&row(json!({"name": "rust"}))),
            Some("tag_rust".into())
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(Template::parse("content_{id").is_err());
        assert!(Template::parse("content_{}").is_err());
        assert!(Template::parse("content {id}").is_err());
        assert!(Template::parse("").is_err());
        assert!(Template::parse("x}").is_err());
    }
}
