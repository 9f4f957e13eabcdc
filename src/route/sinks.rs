//! The routes file's deliveries beyond the open socket: `[[webhook]]`
//! sections and a route's `push` rule, parsed strictly and checked on
//! their own (a webhook's secret is read from the environment when the
//! relay starts, never from the file).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::template::{Problem, Template};
use crate::event::is_event_name;

/// `[[webhook]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebhookFile {
    name: String,
    url: String,
    events: Option<Vec<String>>,
    secret_env: String,
    #[serde(default)]
    allow_insecure: bool,
    attempts: Option<u32>,
    backoff: Option<String>,
    max_backoff: Option<String>,
    timeout: Option<String>,
}

impl WebhookFile {
    /// Its name, for messages.
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

/// A route's `push = { user = "{recipient_id}", when = "offline" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PushFile {
    user: String,
    #[serde(default)]
    when: PushWhen,
}

/// When an event is pushed to its user.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PushWhen {
    /// Only while the user has no live connection on any node.
    #[default]
    Offline,
    /// Whether or not the user is connected.
    Always,
}

/// Which user a route's events are pushed to, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRule {
    /// The user's id, rendered from the event's data.
    pub user: Template,
    /// Whether a connected user is pushed to as well.
    pub when: PushWhen,
}

/// One webhook: where every matching event is POSTed, signed.
#[derive(Clone, Debug)]
pub struct Webhook {
    /// Its cursor's and its metrics' label.
    pub name: String,
    /// Where events are POSTed.
    pub url: reqwest::Url,
    /// The events it gets; empty for every event.
    pub events: Vec<String>,
    /// The environment variable holding its `whsec_` signing secret.
    pub secret_env: String,
    /// Whether `http://` and private, loopback or link-local addresses may
    /// be its target.
    pub allow_insecure: bool,
    /// Attempts per event before it is dead-lettered.
    pub attempts: u32,
    /// The delay before the first retry; each retry doubles it.
    pub backoff: Duration,
    /// The longest delay between two attempts (a `Retry-After` included).
    pub max_backoff: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl Webhook {
    /// Whether it gets events of this name.
    pub fn wants(&self, event: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event)
    }
}

/// Default attempts per event.
const ATTEMPTS: u32 = 12;
/// Default first retry delay.
const BACKOFF: Duration = Duration::from_secs(1);
/// Default longest delay.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Default time one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Checks a `[[webhook]]` section.
pub(super) fn webhook(file: &WebhookFile) -> Result<Webhook, Problem> {
    let name = &file.name;
    let name_ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        return Err("`name` must be 1 to 64 letters, digits, `_` or `-`".into());
    }
    let url =
        reqwest::Url::parse(&file.url).map_err(|e| Problem(format!("`url` is not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if file.allow_insecure => {}
        "http" => {
            return Err(
                "`url` is http://: use https, or set `allow_insecure = true` \
                        for a receiver on a trusted network"
                    .into(),
            )
        }
        other => return Err(format!("`url` has scheme `{other}`: use https").into()),
    }
    if url.host_str().is_none() {
        return Err("`url` names no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("`url` must not carry credentials: sign with the secret instead".into());
    }
    let events = file.events.clone().unwrap_or_default();
    if let Some(bad) = events.iter().find(|e| !is_event_name(e)) {
        return Err(format!("`events`: `{bad}` is not an event name").into());
    }
    if file.events.as_ref().is_some_and(Vec::is_empty) {
        return Err("`events` is empty: leave it out for every event".into());
    }
    let env_ok = !file.secret_env.is_empty()
        && file
            .secret_env
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !env_ok {
        return Err("`secret_env` must name an environment variable".into());
    }
    let attempts = file.attempts.unwrap_or(ATTEMPTS);
    if attempts == 0 {
        return Err("`attempts` must be at least 1".into());
    }
    let duration = |key: &str, value: &Option<String>, default: Duration| match value {
        None => Ok(default),
        Some(text) => match crate::duration::parse_duration(text) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(Problem(format!(
                "`{key}`: `{text}` is not a duration such as 2s"
            ))),
        },
    };
    let backoff = duration("backoff", &file.backoff, BACKOFF)?;
    let max_backoff = duration("max_backoff", &file.max_backoff, MAX_BACKOFF)?;
    if max_backoff < backoff {
        return Err("`max_backoff` is shorter than `backoff`".into());
    }
    Ok(Webhook {
        name: name.clone(),
        url,
        events,
        secret_env: file.secret_env.clone(),
        allow_insecure: file.allow_insecure,
        attempts,
        backoff,
        max_backoff,
        timeout: duration("timeout", &file.timeout, TIMEOUT)?,
    })
}

/// Checks a route's `push` rule: its user template reads only columns the
/// route exposes, since it is rendered from the stored event's data.
pub(super) fn push(file: &PushFile, expose: &[String]) -> Result<PushRule, Problem> {
    let user = Template::parse(&file.user).map_err(|p| Problem(format!("`push.user`: {}", p.0)))?;
    if let Some(hidden) = user.columns().find(|c| !expose.iter().any(|e| e == c)) {
        return Err(format!(
            "`push.user` reads `{hidden}`, which the route does not expose: \
             the user is read from the event's data"
        )
        .into());
    }
    Ok(PushRule {
        user,
        when: file.when,
    })
}

/// Every event's push rule; one event name has one rule.
pub(super) fn push_rules(
    rules: impl IntoIterator<Item = (String, PushRule)>,
) -> Result<BTreeMap<String, PushRule>, (String, Problem)> {
    let mut all = BTreeMap::new();
    for (event, rule) in rules {
        match all.get(&event) {
            Some(existing) if *existing != rule => {
                return Err((
                    event,
                    "two routes of this event push differently: give them one `push` rule".into(),
                ))
            }
            _ => {
                all.insert(event, rule);
            }
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use crate::route::{PushWhen, RouteError, Router};

    const ROUTE: &str = r#"
[tables.messages]
expose = ["id", "recipient_id", "body"]

[[route]]
event = "message-received"
table = "messages"
on = ["insert"]
rooms = ["user_{recipient_id}"]
"#;

    fn parse(extra: &str) -> Result<Router, RouteError> {
        Router::from_text(&format!("{ROUTE}{extra}"), "test.toml")
    }

    fn refused(extra: &str) -> String {
        match parse(extra) {
            Ok(_) => panic!("accepted: {extra}"),
            Err(e) => e.to_string(),
        }
    }

    const HOOK: &str = "\n[[webhook]]\nname = \"backend\"\nsecret_env = \"HOOK_SECRET\"\n";

    #[test]
    fn a_webhook_has_defaults_and_a_filter() {
        let router = parse(&format!(
            "{HOOK}url = \"https://api.example.com/hooks\"\nevents = [\"message-received\"]\n"
        ))
        .unwrap();
        let hook = &router.sinks().webhooks[0];
        assert_eq!(hook.name, "backend");
        assert_eq!(hook.attempts, super::ATTEMPTS);
        assert!(hook.wants("message-received") && !hook.wants("content-created"));
        assert!(!hook.allow_insecure);
    }

    #[test]
    fn unsafe_or_unclear_webhooks_are_refused_with_the_fix() {
        let plain = refused(&format!("{HOOK}url = \"http://api.example.com/hooks\"\n"));
        assert!(plain.contains("allow_insecure"), "{plain}");
        let creds = refused(&format!("{HOOK}url = \"https://u:p@api.example.com/\"\n"));
        assert!(creds.contains("credentials"), "{creds}");
        let ftp = refused(&format!("{HOOK}url = \"ftp://api.example.com/\"\n"));
        assert!(ftp.contains("scheme"), "{ftp}");
        let empty = refused(&format!(
            "{HOOK}url = \"https://a.example/\"\nevents = []\n"
        ));
        assert!(empty.contains("events"), "{empty}");
        let zero = refused(&format!(
            "{HOOK}url = \"https://a.example/\"\nattempts = 0\n"
        ));
        assert!(zero.contains("attempts"), "{zero}");
        let twice = refused(&format!(
            "{HOOK}url = \"https://a.example/\"\n{HOOK}url = \"https://b.example/\"\n"
        ));
        assert!(twice.contains("two webhooks"), "{twice}");
        let unknown = refused(&format!(
            "{HOOK}url = \"https://a.example/\"\nsecret = \"x\"\n"
        ));
        assert!(unknown.contains("secret"), "{unknown}");
    }

    #[test]
    fn a_push_rule_reads_exposed_columns_only() {
        let with = |push: &str| {
            ROUTE.replace(
                "rooms = [\"user_{recipient_id}\"]",
                &format!("rooms = [\"user_{{recipient_id}}\"]\npush = {push}"),
            )
        };
        let router =
            Router::from_text(&with(r#"{ user = "{recipient_id}" }"#), "test.toml").unwrap();
        let rule = &router.sinks().push["message-received"];
        assert_eq!(rule.when, PushWhen::Offline, "offline by default");
        let always = Router::from_text(
            &with(r#"{ user = "{recipient_id}", when = "always" }"#),
            "t",
        )
        .unwrap();
        assert_eq!(
            always.sinks().push["message-received"].when,
            PushWhen::Always
        );
        let hidden = Router::from_text(&with(r#"{ user = "{sender_id}" }"#), "t")
            .err()
            .unwrap()
            .to_string();
        assert!(hidden.contains("does not expose"), "{hidden}");
        let bad_when = Router::from_text(&with(r#"{ user = "{id}", when = "later" }"#), "t");
        assert!(bad_when.is_err());
    }

    #[test]
    fn the_demo_routes_push_the_personal_events_when_offline() {
        let router = Router::builtin().unwrap();
        let pushed: Vec<&str> = router.sinks().push.keys().map(String::as_str).collect();
        assert_eq!(
            pushed,
            [
                "calendar-invite-received",
                "friend-request-received",
                "message-received",
                "notification"
            ]
        );
        assert!(router
            .sinks()
            .push
            .values()
            .all(|rule| rule.when == PushWhen::Offline));
    }
}
