//! TLS to a Postgres that, like most managed services, refuses TCP
//! connections without it: both capture modes, the pool and migrations run
//! over `sslmode=require`; `verify-full` works with the right authority and
//! refuses a wrong one with one clear line and a non-zero exit.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use rowcast_devkit::certs::TestCerts;
use rowcast_devkit::cluster::{Cluster, ClusterOptions};
use rowcast_devkit::demo;

/// A private cluster that serves TLS only over TCP, with its certificates
/// and a `demo` database (created over the Unix socket).
async fn tls_cluster(name: &str) -> (Cluster, TestCerts, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("rowcast-tls-{}-{name}", std::process::id()));
    let certs = TestCerts::generate(&dir).expect("test certificates (openssl)");
    let options = ClusterOptions {
        tls_only: Some(certs.server.clone()),
        ..ClusterOptions::default()
    };
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&options))
        .await
        .unwrap()
        .expect("a TLS-only Postgres");
    let admin = connect(&cluster.socket_url("postgres")).await;
    admin.batch_execute("CREATE DATABASE demo").await.unwrap();
    demo::apply_schema(&connect(&cluster.socket_url("demo")).await)
        .await
        .expect("demo schema");
    (cluster, certs, dir)
}

/// Relay sessions that are not encrypted (its pool, LISTEN and replication
/// connections all name themselves `rowcast...`).
async fn plain_relay_sessions(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name LIKE 'rowcast%'",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_capture_modes_run_over_tls_and_verify_full_checks_the_authority() {
    let (cluster, certs, dir) = tls_cluster("modes").await;
    let client = connect(&cluster.socket_url("demo")).await;
    let tcp = format!("postgres://postgres@127.0.0.1:{}/demo", cluster.port());

    // Plain TCP is refused by the server, as on a managed service.
    let plain =
        tokio_postgres::connect(&format!("{tcp}?sslmode=disable"), tokio_postgres::NoTls).await;
    assert!(plain.is_err(), "the server must refuse plain TCP");

    for (capture, query) in [
        ("trigger", "sslmode=require"),
        ("logical", "sslmode=require"),
        (
            "logical",
            &format!("sslmode=verify-full&sslrootcert={}", certs.ca.display()),
        ),
    ] {
        let relay = start_relay_with(config_for(&format!("{tcp}?{query}"), capture)).await;
        let before = head(&client).await;
        let title = format!("over tls, {capture}, {before}");
        client
            .execute(
                "INSERT INTO announcements (title, body) VALUES ($1, 'b')",
                &[&title],
            )
            .await
            .unwrap();
        let upto = barrier(&client).await;
        let stored = stored_between(&client, before, upto).await;
        assert!(
            stored
                .iter()
                .any(|e| e.event == "announcement" && e.data["title"] == title.as_str()),
            "{capture} {query}: {stored:?}"
        );
        let (encrypted, plain) = plain_relay_sessions(&client).await;
        assert!(
            encrypted > 0,
            "{capture} {query}: the relay's sessions use TLS"
        );
        assert_eq!(plain, 0, "{capture} {query}: no relay session without TLS");
        stop_relay(relay).await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_one_clear_line_and_a_failed_exit() {
    let (cluster, certs, dir) = tls_cluster("untrusted").await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/demo?sslmode=verify-full&sslrootcert={}",
        cluster.port(),
        certs.other_ca.display()
    );
    let mut command = relay_binary(
        &["serve"],
        &[
            ("DATABASE_URL", &url),
            ("SOCKET_PORT", "0"),
            ("ROWCAST_BIND", "127.0.0.1"),
        ],
    );
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn rowcast");
    let status = wait_for("the relay to give up", Duration::from_secs(30), || {
        let status = child.try_wait().ok().flatten();
        async move { status }
    })
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "an untrusted server must stop the relay");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains("certificate"),
        "names the certificate problem: {stderr}"
    );
    assert!(
        lines[0].contains("UnknownIssuer") || lines[0].contains("issuer"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
