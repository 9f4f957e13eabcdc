//! Route matching against the built-in routes, without a database.

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::*;

fn change(table: &str, op: Op, old: Option<Value>, new: Option<Value>) -> Change {
    Change {
        captured: Captured::Row(RowChange {
            table: Arc::from(format!("public.{table}")),
            op,
            old: old.and_then(|v| v.as_object().cloned()),
            new: new.and_then(|v| v.as_object().cloned()),
        }),
        at: OffsetDateTime::UNIX_EPOCH,
    }
}

fn names_and_rooms(events: &[Event]) -> Vec<(String, Vec<String>)> {
    events
        .iter()
        .map(|e| (e.name.to_string(), e.rooms.clone()))
        .collect()
}

fn router() -> Router {
    Router::builtin().expect("built-in routes compile")
}

#[test]
fn content_insert_goes_to_content_and_author_rooms() {
    let events = router().route(&change(
        "content",
        Op::Insert,
        None,
        Some(json!({"id": 7, "author_id": 3, "title": "t", "body": "b", "visibility": "public"})),
    ));
    assert_eq!(
        names_and_rooms(&events),
        vec![(
            "content-created".into(),
            vec!["content_7".into(), "user_3".into()]
        )]
    );
    let data: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(data["title"], "t");
    assert!(events[0].old.is_none());
}

#[test]
fn updates_carry_changed_exposed_columns_in_old() {
    let events = router().route(&change(
        "content",
        Op::Update,
        Some(json!({"id": 7, "author_id": 3, "title": "a", "body": "b", "visibility": "public"})),
        Some(json!({"id": 7, "author_id": 3, "title": "z", "body": "b", "visibility": "public"})),
    ));
    assert_eq!(events.len(), 1);
    let old: Value = serde_json::from_str(events[0].old.as_deref().unwrap()).unwrap();
    assert_eq!(old, json!({"title": "a"}));
}

#[test]
fn secret_only_user_updates_produce_nothing() {
    let row = |email: &str| json!({"id": 1, "username": "u", "display_name": "U", "bio": null, "avatar_url": null, "status": "offline", "email": email});
    let events = router().route(&change(
        "users",
        Op::Update,
        Some(row("a@x")),
        Some(row("b@x")),
    ));
    assert!(events.is_empty());
}

#[test]
fn profile_updates_never_expose_secrets() {
    let events = router().route(&change(
        "users",
        Op::Update,
        Some(json!({"id": 1, "username": "u", "email": "a@x", "password_hash": "h1"})),
        Some(json!({"id": 1, "username": "v", "email": "b@x", "password_hash": "h2"})),
    ));
    assert_eq!(
        names_and_rooms(&events),
        vec![("user-profile-updated".into(), vec!["user_1".into()])]
    );
    for text in [&events[0].data, events[0].old.as_ref().unwrap()] {
        assert!(
            !text.contains("email") && !text.contains("password_hash") && !text.contains("a@x")
        );
    }
}

#[test]
fn friend_request_transitions() {
    let r = router();
    let row = |status: &str| {
        Some(json!({"id": 9, "requester_id": 1, "addressee_id": 2, "status": status}))
    };
    let sent = r.route(&change("friend_requests", Op::Insert, None, row("pending")));
    assert_eq!(
        names_and_rooms(&sent),
        vec![
            ("friend-request-sent".into(), vec!["user_1".into()]),
            ("friend-request-received".into(), vec!["user_2".into()]),
        ]
    );
    let accepted = r.route(&change(
        "friend_requests",
        Op::Update,
        row("pending"),
        row("accepted"),
    ));
    assert_eq!(
        names_and_rooms(&accepted),
        vec![(
            "friend-request-accepted".into(),
            vec!["user_1".into(), "user_2".into()]
        )]
    );
    let rejected = r.route(&change(
        "friend_requests",
        Op::Update,
        row("pending"),
        row("rejected"),
    ));
    assert_eq!(
        names_and_rooms(&rejected),
        vec![("friend-request-rejected".into(), vec!["user_1".into()])]
    );
    let reopened = r.route(&change(
        "friend_requests",
        Op::Update,
        row("rejected"),
        row("accepted"),
    ));
    assert!(reopened.is_empty());
}

#[test]
fn payments_complete_on_insert_or_transition_only() {
    let r = router();
    let row = |status: &str| {
        Some(
            json!({"id": 1, "user_id": 5, "amount_cents": 100, "status": status, "card_token": "tok_secret"}),
        )
    };
    let inserted = r.route(&change("payments", Op::Insert, None, row("completed")));
    assert_eq!(
        names_and_rooms(&inserted),
        vec![("payment-completed".into(), vec!["user_5".into()])]
    );
    assert!(!inserted[0].data.contains("tok_secret"));
    assert!(r
        .route(&change("payments", Op::Insert, None, row("pending")))
        .is_empty());
    assert_eq!(
        r.route(&change(
            "payments",
            Op::Update,
            row("pending"),
            row("completed")
        ))
        .len(),
        1
    );
    let mut same = row("completed");
    same.as_mut().unwrap()["amount_cents"] = json!(200);
    assert!(r
        .route(&change("payments", Op::Update, row("completed"), same))
        .is_empty());
}

#[test]
fn notification_read_needs_null_to_set() {
    let r = router();
    let row = |read_at: Value| {
        Some(json!({"id": 1, "user_id": 4, "kind": "k", "body": "b", "read_at": read_at}))
    };
    let read = r.route(&change(
        "notifications",
        Op::Update,
        row(Value::Null),
        row(json!("2026-01-01T00:00:00+00:00")),
    ));
    assert_eq!(
        names_and_rooms(&read),
        vec![("notification-read".into(), vec!["user_4".into()])]
    );
    let again = r.route(&change(
        "notifications",
        Op::Update,
        row(json!("2026-01-01T00:00:00+00:00")),
        row(json!("2026-02-01T00:00:00+00:00")),
    ));
    assert!(again.is_empty());
}

#[test]
fn media_rooms_follow_the_album_and_a_move() {
    let r = router();
    let row = |album: Value, visibility: &str| {
        Some(
            json!({"id": 3, "owner_id": 2, "album_id": album, "url": "u", "caption": "c", "visibility": visibility}),
        )
    };
    let loose = r.route(&change(
        "media",
        Op::Insert,
        None,
        row(Value::Null, "public"),
    ));
    assert_eq!(loose[0].rooms, vec!["media_3", "user_2"]);
    let moved = r.route(&change(
        "media",
        Op::Update,
        row(json!(1), "public"),
        row(json!(2), "public"),
    ));
    assert_eq!(moved.len(), 2);
    assert_eq!(moved[0].rooms, vec!["media_3", "user_2", "album_2"]);
    // The album it left learns it left, and nothing of where it went.
    assert_eq!(moved[1].rooms, vec!["album_1"]);
    let data: Value = serde_json::from_str(&moved[1].data).unwrap();
    assert!(data.get("album_id").is_none(), "{data}");
    assert_eq!(data["url"], "u");
    let old: Value = serde_json::from_str(moved[1].old.as_deref().unwrap()).unwrap();
    assert_eq!(old, json!({"album_id": 1}));
}

#[test]
fn private_media_never_reaches_an_album_room() {
    let r = router();
    let row = |visibility: &str, caption: &str| {
        Some(
            json!({"id": 3, "owner_id": 2, "album_id": 1, "url": "u", "caption": caption, "visibility": visibility}),
        )
    };
    let private = r.route(&change("media", Op::Insert, None, row("private", "c")));
    assert_eq!(
        names_and_rooms(&private),
        vec![(
            "media-uploaded".into(),
            vec!["media_3".into(), "user_2".into()]
        )]
    );
    let edited = r.route(&change(
        "media",
        Op::Update,
        row("private", "c"),
        row("private", "secret caption"),
    ));
    assert!(edited
        .iter()
        .all(|e| !e.rooms.contains(&"album_1".to_string())));
    // Made private with a new caption: the album hears it left, not the caption.
    let hidden = r.route(&change(
        "media",
        Op::Update,
        row("public", "c"),
        row("private", "secret caption"),
    ));
    let to_album: Vec<&Event> = hidden
        .iter()
        .filter(|e| e.rooms.contains(&"album_1".to_string()))
        .collect();
    assert_eq!(to_album.len(), 1);
    assert_eq!(to_album[0].rooms, vec!["album_1"]);
    assert!(
        !to_album[0].data.contains("secret caption"),
        "{}",
        to_album[0].data
    );
    assert!(
        !to_album[0].data.contains("private"),
        "{}",
        to_album[0].data
    );
    let gone = r.route(&change("media", Op::Delete, row("private", "c"), None));
    assert!(gone
        .iter()
        .all(|e| !e.rooms.contains(&"album_1".to_string())));
}

#[test]
fn deletes_show_the_old_row() {
    let events = router().route(&change(
        "friendships",
        Op::Delete,
        Some(json!({"user_a": 1, "user_b": 2})),
        None,
    ));
    assert_eq!(
        names_and_rooms(&events),
        vec![(
            "friendship-ended".into(),
            vec!["user_1".into(), "user_2".into()]
        )]
    );
    assert_eq!(
        serde_json::from_str::<Value>(&events[0].data).unwrap(),
        json!({"user_a": 1, "user_b": 2})
    );
}

#[test]
fn content_views_coalesce() {
    let events = router().route(&change(
        "content_views",
        Op::Insert,
        None,
        Some(json!({"id": 1, "content_id": 8})),
    ));
    assert_eq!(events[0].coalesce, Some(Duration::from_secs(1)));
}

#[test]
fn published_events_pass_through_with_valid_rooms_only() {
    let events = router().route(&Change {
        captured: Captured::Published(Published {
            rooms: vec!["broadcast".into(), "bad room".into(), "broadcast".into()],
            event: "announcement".into(),
            data: json!({"title": "hi"}),
            reply: None,
        }),
        at: OffsetDateTime::UNIX_EPOCH,
    });
    assert_eq!(
        names_and_rooms(&events),
        vec![("announcement".into(), vec!["broadcast".into()])]
    );
}

#[test]
fn captured_columns_exclude_secrets() {
    let r = router();
    for table in r.tables() {
        for secret in ["email", "password_hash", "card_token"] {
            assert!(
                !table.columns.iter().any(|c| c == secret),
                "{} captures {secret}",
                table.name
            );
        }
    }
}

#[test]
fn catalog_check_names_the_missing_piece() {
    let r = router();
    let mut catalog: Catalog = r
        .tables()
        .map(|t| (t.qualified(), t.columns.clone()))
        .collect();
    assert!(r.check(&catalog).is_ok());
    catalog
        .get_mut("public.content")
        .unwrap()
        .retain(|c| c != "author_id");
    let err = r.check(&catalog).unwrap_err().to_string();
    assert!(
        err.contains("author_id") && err.contains("public.content"),
        "{err}"
    );
    catalog.remove("public.content");
    let err = r.check(&catalog).unwrap_err().to_string();
    assert!(err.contains("public.content does not exist"), "{err}");
}

#[test]
fn bad_files_are_refused_with_a_line() {
    let err = file::parse("[[route]]\nevnt = \"x\"\n", "r.toml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("routes file r.toml: line"), "{err}");
    let base = "[[route]]\nevent = \"e\"\ntable = \"t\"\nexpose = [\"id\"]\nrooms = [\"t_{id}\"]\n";
    let err = file::parse(&format!("{base}on = [\"upsert\"]\n"), "r.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown operation `upsert`"), "{err}");
    let err = file::parse(
        &format!("{base}on = [\"insert\"]\nwhen.old.x = 1\n"),
        "r.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("insert-only"), "{err}");
    let err = file::parse(
        &format!("{base}on = [\"insert\"]\ncoalesce = \"forever\"\n"),
        "r.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("coalesce"), "{err}");
    let err = file::parse(
        "[[route]]\nevent = \"e\"\ntable = \"t\"\non = [\"insert\"]\nrooms = [\"t_{id}\"]\n",
        "r.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no exposed columns"), "{err}");
}

/// One route as docs/routes.md's catalog table lists it: event, table,
/// operations and room templates.
type Listed = (String, String, Vec<String>, Vec<String>);

/// The catalog table of docs/routes.md ("The default routes").
fn documented_catalog() -> Vec<Listed> {
    let doc = include_str!("../../docs/routes.md");
    let section = doc
        .split("## The default routes")
        .nth(1)
        .expect("docs/routes.md has the catalog section");
    let list = |cell: &str| -> Vec<String> {
        cell.split(',')
            .map(|item| item.trim().trim_matches('`').to_string())
            .filter(|item| !item.is_empty())
            .collect()
    };
    section
        .lines()
        .skip_while(|line| !line.starts_with("| `"))
        .take_while(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
            (
                cells[0].trim().trim_matches('`').to_string(),
                cells[1].trim().to_string(),
                list(cells[2]),
                list(cells[3]),
            )
        })
        .collect()
}

/// The documented catalog is the routes file's: every route, in order,
/// with its table, operations and rooms. The list is written once, in
/// routes.toml; the docs are checked against it.
#[test]
fn docs_list_every_route_of_the_routes_file() {
    let r = router();
    let mut routed: Vec<(usize, Listed)> = r
        .tables()
        .flat_map(|t| {
            t.routes.iter().map(|route| {
                let ops = route
                    .ops
                    .iter()
                    .map(|op| format!("{op:?}").to_lowercase())
                    .collect();
                let rooms = route
                    .rooms
                    .iter()
                    .map(|room| room.template.source().to_string())
                    .collect();
                (route.event.to_string(), t.name.clone(), ops, rooms)
            })
        })
        .enumerate()
        .collect();
    let documented = documented_catalog();
    assert!(
        documented.len() >= 37,
        "the table was found: {documented:?}"
    );
    // The docs follow the file's order; the router groups by table.
    let place = |event: &str| documented.iter().position(|(e, ..)| e == event);
    routed.sort_by_key(|(i, (event, ..))| (place(event), *i));
    let routed: Vec<Listed> = routed.into_iter().map(|(_, route)| route).collect();
    assert_eq!(routed, documented);
}
