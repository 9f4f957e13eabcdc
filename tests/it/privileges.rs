//! Least privilege: an application role that holds only privileges on its
//! own tables can write every routed table in both capture modes, cannot
//! touch rowcast's schema, and can publish only once it is a member of
//! `rowcast_publisher`.

use crate::common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::*;
use tokio_postgres::Client;

/// A login role with privileges on the demo tables only; roles belong to
/// the cluster, so each test gets its own name.
async fn app_role(admin: &Client, db: &TestDb) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let role = format!(
        "app_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN;
             GRANT CONNECT ON DATABASE {db} TO {role};
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};",
            db = db.name
        ))
        .await
        .expect("create the application role");
    role
}

/// The database URL, connecting as `role`.
fn url_as(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{host}")
}

async fn an_app_role_writes_routed_tables_but_not_realtime(capture: &str) {
    let db = TestDb::demo().await;
    let admin = db.client().await;
    insert_basic_rows(&admin).await;
    let relay = start_relay(&db, capture).await;
    let role = app_role(&admin, &db).await;
    let app = connect(&url_as(&db.url, &role)).await;

    let before = head(&admin).await;
    app.batch_execute(
        "INSERT INTO content (author_id, title, body) VALUES (1, 'by the app', 'b');
         UPDATE users SET bio = 'written by the app role' WHERE id = 2;",
    )
    .await
    .expect("the app role writes its own tables in every capture mode");
    let upto = barrier(&admin).await;
    let names: Vec<String> = stored_between(&admin, before, upto)
        .await
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(names, vec!["content-created", "user-profile-updated"]);

    for forgery in [
        "INSERT INTO realtime.capture (tbl, op, new) VALUES ('', 'P', '{}')",
        "UPDATE realtime.state SET head = head",
        "SELECT count(*) FROM realtime.outbox",
        "SELECT realtime.publish(ARRAY['broadcast'], 'announcement', '{}')",
    ] {
        let refused = app.batch_execute(forgery).await.expect_err(forgery);
        let code = refused.code().map(|c| c.code().to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{forgery}: {refused}");
    }

    admin
        .batch_execute(&format!("GRANT rowcast_publisher TO {role}"))
        .await
        .unwrap();
    let app = connect(&url_as(&db.url, &role)).await;
    app.batch_execute(
        "SELECT realtime.publish(ARRAY['broadcast'], 'announcement', '{\"by\": \"app\"}')",
    )
    .await
    .expect("a member of rowcast_publisher may publish");
    let last = barrier(&admin).await;
    let published = stored_between(&admin, upto, last).await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].data["by"], "app");
    stop_relay(relay).await;
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role};
             REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role};
             REVOKE ALL ON SCHEMA public FROM {role};
             REVOKE ALL ON DATABASE {db} FROM {role};
             REVOKE rowcast_publisher FROM {role};
             DROP ROLE {role};",
            db = db.name
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_role_writes_routed_tables_but_not_realtime_in_trigger_mode() {
    an_app_role_writes_routed_tables_but_not_realtime("trigger").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_role_writes_routed_tables_but_not_realtime_in_logical_mode() {
    an_app_role_writes_routed_tables_but_not_realtime("logical").await;
}
