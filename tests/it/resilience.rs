//! The relay under failure: SIGKILL in the middle of a write burst, a
//! Postgres restart under load, bad settings at startup, schema order, and
//! retention bookkeeping.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

in_versions! {
    sigkill_mid_burst_loses_and_repeats_nothing => sigkill_mid_burst,
    postgres_restart_under_load_loses_nothing => postgres_restart,
}

async fn wait_for_head(client: &tokio_postgres::Client, at_least: i64) {
    wait_for("stored events", Duration::from_secs(60), || async {
        (head(client).await >= at_least).then_some(())
    })
    .await;
}

/// Kills the relay binary with SIGKILL at several points of an 8-writer
/// burst, restarting it each time.
async fn sigkill_mid_burst(pg: Pg, mode: &str) {
    let db = pg.demo_db().await;
    let client = db.client().await;
    burst::setup(&client).await;
    let mut relay = spawn_capturing_relay(&db, &client, mode).await;
    barrier(&client).await;
    let writers = burst::start(&db.url, 8, 500);
    for threshold in [300, 1200, 2400] {
        wait_for_head(&client, threshold).await;
        relay.kill();
        relay = spawn_relay_binary(&db, mode, &[]);
    }
    burst::join(writers).await;
    let until = barrier(&client).await;
    burst::verify(&client, until).await;
    drop(relay);
}

/// Restarts Postgres while writers and the relay are busy.
async fn postgres_restart(pg: Pg, mode: &str) {
    let cluster = pg.private_cluster();
    let db = private_demo_db(&cluster).await;
    let client = db.client().await;
    burst::setup(&client).await;
    let relay = start_relay(&db, mode).await;
    let writers = burst::start(&db.url, 8, 500);
    wait_for_head(&client, 400).await;
    drop(client);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster
            .restart(rowcast_devkit::cluster::StopMode::Fast)
            .expect("restart postgres");
        cluster
    })
    .await
    .unwrap();
    burst::join(writers).await;
    let client = db.client().await;
    let until = barrier(&client).await;
    burst::verify(&client, until).await;
    assert!(relay.capture_status.is_running(), "capture recovered");
    stop_relay(relay).await;
    drop(cluster);
}

fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = relay_binary(args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run rowcast");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_one_clear_line(stderr: &str, mentions: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].contains(mentions),
        "`{}` does not mention {mentions}",
        lines[0]
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn bad_settings_fail_with_one_line() {
    let db = TestDb::demo().await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bad-routes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_column = dir.join("bad_column.toml");
    std::fs::write(
        &bad_column,
        "[[route]]\nevent = \"x\"\ntable = \"content\"\non = [\"insert\"]\nexpose = [\"id\", \"nope\"]\nrooms = [\"content_{id}\"]\n",
    )
    .unwrap();
    let bad_table = dir.join("bad_table.toml");
    std::fs::write(
        &bad_table,
        "[[route]]\nevent = \"x\"\ntable = \"contnt\"\non = [\"insert\"]\nexpose = [\"id\"]\nrooms = [\"content_{id}\"]\n",
    )
    .unwrap();
    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "[[route]]\nevent = \n").unwrap();

    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("ROWCAST_ROUTES", bad_column.display().to_string())],
            "nope",
        ),
        (
            vec![("ROWCAST_ROUTES", bad_table.display().to_string())],
            "public.contnt does not exist",
        ),
        (
            vec![("ROWCAST_ROUTES", bad_toml.display().to_string())],
            "line 2",
        ),
        (
            vec![("ROWCAST_ROUTES", "/nonexistent/routes.toml".into())],
            "/nonexistent/routes.toml",
        ),
        (
            vec![("DATABASE_URL", "mysql://root:hunter2@localhost/x".into())],
            "DATABASE_URL",
        ),
        (
            vec![("DATABASE_URL", "postgres://u:hunter2@127.0.0.1:1/x".into())],
            "127.0.0.1:1",
        ),
        (vec![("SOCKET_PORT", "seventy".into())], "SOCKET_PORT"),
        (vec![("ROWCAST_CAPTURE", "magic".into())], "ROWCAST_CAPTURE"),
        (vec![("JWT_SECRET", "".into())], "JWT_SECRET"),
    ];
    for (overrides, mentions) in cases {
        let mut env: Vec<(&str, String)> = vec![
            ("DATABASE_URL", db.url.clone()),
            ("ROWCAST_CAPTURE", "trigger".into()),
        ];
        for (key, value) in &overrides {
            env.retain(|(k, _)| k != key);
            env.push((key, value.clone()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, stderr) = run_to_exit(&["serve"], &env);
        assert_ne!(code, 0, "{overrides:?} should fail");
        assert_one_clear_line(&stderr, mentions);
        assert!(
            !stderr.contains("hunter2"),
            "a password reached the output: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The demo's routes are built into `rowcast dev` only: `serve` without a
/// routes file exits 1 with one line that says what to do.
#[tokio::test]
async fn serve_without_a_routes_file_exits_with_one_line() {
    let db = TestDb::demo().await;
    let output = relay_binary(&["serve"], &[("DATABASE_URL", &db.url)])
        .env_remove("ROWCAST_ROUTES")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run rowcast");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_one_clear_line(&stderr, "ROWCAST_ROUTES");
    assert!(stderr.contains("rowcast dev"), "{stderr}");
}

#[tokio::test]
async fn migrate_applies_the_schema_before_or_after_the_demo() {
    let db = TestDb::blank().await;
    let (code, stderr) = run_to_exit(&["migrate"], &[("DATABASE_URL", &db.url)]);
    assert_eq!(code, 0, "{stderr}");
    let client = db.client().await;
    rowcast_devkit::demo::apply_schema(&client)
        .await
        .expect("demo after migrations");
    rowcast_devkit::demo::apply_schema(&client)
        .await
        .expect("demo twice");
    let (code, stderr) = run_to_exit(&["migrate"], &[("DATABASE_URL", &db.url)]);
    assert_eq!(code, 0, "migrate twice: {stderr}");
    let rule: bool = client
        .query_one("SELECT realtime.authorize('1', 'diary_999', '{}')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !rule,
        "the demo's rule is installed and refuses a missing diary"
    );
    let views: i64 = client
        .query_one("SELECT count(*) FROM realtime.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(views, 0);
}

#[tokio::test]
async fn help_lists_the_subcommands() {
    let output = relay_binary(&["--help"], &[]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    for sub in ["serve", "migrate", "dev"] {
        assert!(text.contains(sub), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_and_reports_the_gap() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    let mut config = config_for(&db.url, "trigger");
    config.retention.max_events = 10;
    config.retention.interval = Duration::from_millis(200);
    let relay = start_relay_with(config).await;
    for i in 0..30 {
        client
            .execute(
                "SELECT realtime.publish(ARRAY['room_1'], 'tick', jsonb_build_object('i', $1::int))",
                &[&i],
            )
            .await
            .unwrap();
    }
    let last = barrier(&client).await;
    let oldest: i64 = wait_for("retention", Duration::from_secs(10), || async {
        let row = client
            .query_one(
                "SELECT oldest, (SELECT count(*) FROM realtime.outbox) FROM realtime.state",
                &[],
            )
            .await
            .ok()?;
        let (oldest, count): (i64, i64) = (row.get(0), row.get(1));
        (count <= 10 && oldest > 1).then_some(oldest)
    })
    .await;
    assert_eq!(oldest, last - 9, "the newest 10 are kept");
    let room_rows: i64 = client
        .query_one(
            "SELECT count(*) FROM realtime.outbox_rooms WHERE seq < $1",
            &[&oldest],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(room_rows, 0);
    let pool = relay.pool.clone();
    let page = rowcast::room_events(
        &pool.get().await.unwrap(),
        "room_1",
        rowcast::Span::to_head(0, 100),
    )
    .await
    .unwrap();
    assert!(page.gap, "replay from 0 must report the gap");
    assert!(page.events.iter().all(|e| e.seq >= oldest));
    let page = rowcast::room_events(
        &pool.get().await.unwrap(),
        "room_1",
        rowcast::Span::to_head(oldest - 1, 100),
    )
    .await
    .unwrap();
    assert!(!page.gap);
    stop_relay(relay).await;
}

/// Trigger → logical → trigger ..., with writers running through every
/// switch and while no relay runs, and some relays stopped at once (in the
/// middle of reading a slot being retired): each change is stored exactly
/// once, in commit order per row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_capture_modes_loses_and_repeats_nothing() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    burst::setup(&client).await;
    // Changes before capture is first installed are not events.
    stop_relay(start_relay(&db, "trigger").await).await;
    let mut writers = Vec::new();
    let rounds = [
        ("trigger", 100),
        ("logical", 100),
        ("trigger", 0),
        ("logical", 50),
        ("trigger", 100),
        ("logical", 0),
        ("trigger", 100),
        ("logical", 100),
    ];
    for (mode, events) in rounds {
        writers.extend(burst::start(&db.url, 2, 150));
        let relay = start_relay(&db, mode).await;
        let at = head(&client).await;
        wait_for_head(&client, at + events).await;
        stop_relay(relay).await;
    }
    burst::join(writers).await;
    let relay = start_relay(&db, "trigger").await;
    let until = barrier(&client).await;
    burst::verify(&client, until).await;
    let slots: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0, "trigger capture leaves no slot behind");
    stop_relay(relay).await;
}

/// Retention deleting old events while a reader pages through a room: a
/// page either continues exactly where the last one ended, or says `gap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_racing_replay_reports_a_gap_never_a_silent_hole() {
    let db = TestDb::demo().await;
    let relay = start_relay(&db, "trigger").await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT realtime.publish(ARRAY['room_r'], 'tick', jsonb_build_object('i', i))
             FROM generate_series(1, 3000) AS i",
        )
        .await
        .unwrap();
    let head = barrier(&client).await;
    let seqs = bigints(
        &client,
        "SELECT seq FROM realtime.outbox_rooms WHERE room = 'room_r' ORDER BY seq",
    )
    .await;
    assert_eq!(seqs.len(), 3000);
    let cutoff = seqs[2000];
    let deleter = tokio::spawn({
        let url = db.url.clone();
        async move {
            let mut client = connect(&url).await;
            let mut oldest = 1;
            while oldest < cutoff {
                oldest += 7;
                let tx = client.transaction().await.unwrap();
                tx.execute("DELETE FROM realtime.outbox WHERE seq < $1", &[&oldest])
                    .await
                    .unwrap();
                tx.execute(
                    "DELETE FROM realtime.outbox_rooms WHERE seq < $1",
                    &[&oldest],
                )
                .await
                .unwrap();
                tx.execute("UPDATE realtime.state SET oldest = $1", &[&oldest])
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }
    });
    // Start reading once retention is under way, so the first page is
    // already past a hole.
    wait_for("retention to start", Duration::from_secs(20), || async {
        let oldest: i64 = client
            .query_one("SELECT oldest FROM realtime.state", &[])
            .await
            .ok()?
            .get(0);
        (oldest > 1).then_some(())
    })
    .await;
    let pool = relay.pool.clone();
    let (mut after, mut pages, mut gaps) = (0, 0, 0);
    while after < head {
        let page = rowcast::room_events(
            &pool.get().await.unwrap(),
            "room_r",
            rowcast::Span::to_head(after, 10),
        )
        .await
        .unwrap();
        let Some(first) = page.events.first() else {
            break;
        };
        pages += 1;
        if page.gap {
            gaps += 1;
        } else {
            let next = seqs.iter().find(|s| **s > after).copied();
            assert_eq!(
                Some(first.seq),
                next,
                "a page after {after} skipped events without a gap"
            );
        }
        assert!(page.events.windows(2).all(|w| w[0].seq < w[1].seq));
        after = page.events.last().unwrap().seq;
    }
    deleter.await.unwrap();
    assert!(
        pages > 0 && gaps > 0,
        "the reader met retention ({pages} pages, {gaps} gaps)"
    );
    stop_relay(relay).await;
}
