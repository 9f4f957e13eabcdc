//! The HTTP API's OpenAPI document against the real relay: the `rowcast`
//! binary serves it at `/v1/openapi.json`, and schemathesis, a real OpenAPI
//! validator, sends generated requests to every operation and checks each
//! real response against it (documented status code, content type, headers
//! and body schema; schema-valid requests accepted, invalid ones refused with
//! a 4xx; operations that need a token refusing requests without one). It runs
//! once with a service token and once with a user token. SSE streams are
//! read for a moment and their messages checked too (settings in
//! `tests/openapi/schemathesis.toml`). Skipped, saying so, only where python3
//! or the schemathesis install is unavailable.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::schemathesis::{self, Schemathesis};
use common::ws::*;
use common::*;

/// Every operation of the HTTP API, as the document must list them.
const OPERATIONS: &[(&str, &str)] = &[
    ("/v1/sse", "get"),
    ("/v1/rooms/{room}/events", "get"),
    ("/v1/publish", "post"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/v1/openapi.json", "get"),
    ("/v1/push/vapid", "get"),
    ("/v1/push/subscriptions", "post"),
    ("/v1/push/subscriptions", "delete"),
];

/// Test cases per operation and phase: enough to reach every documented
/// response, few enough for about a minute per token.
const MAX_EXAMPLES: &str = "40";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_match_the_openapi_document() {
    let db = TestDb::demo().await;
    let client = db.client().await;
    let (relay, addr) = spawn_listening_relay(
        &db,
        "trigger",
        &[
            // The validator's requests are not the abuse these limits are for.
            ("ROWCAST_HISTORY_RATE", "100000"),
            ("ROWCAST_CONNECT_RATE", "100000"),
            ("ROWCAST_MAX_CONNECTIONS_PER_USER", "100000"),
            // Web Push on, so that its operations answer (RFC 8291's example
            // application server key).
            (
                "ROWCAST_VAPID_PRIVATE_KEY",
                "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw",
            ),
            ("ROWCAST_VAPID_SUBJECT", "mailto:openapi@example.com"),
        ],
    )
    .await;
    insert_history_rows(&client).await;

    let (status, document) = http(addr, "GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200, "{document}");
    assert!(
        document["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    for (path, method) in OPERATIONS {
        assert!(
            document["paths"][path][method].is_object(),
            "the document lacks {method} {path}"
        );
    }

    let validator = match tokio::task::spawn_blocking(schemathesis::installed)
        .await
        .unwrap()
    {
        Ok(validator) => validator,
        Err(why) => {
            let why = format!("schemathesis {}: {why}", schemathesis::VERSION);
            // Fails here unless ROWCAST_TEST_SKIP names schemathesis.
            required("schemathesis", Some(why));
            drop(relay);
            return;
        }
    };
    for (who, bearer) in [("service", service_token()), ("user", token("3"))] {
        validate(&validator, addr, who, bearer).await;
    }
    drop(relay);
}

/// Runs schemathesis with one token and fails the test on any finding.
async fn validate(validator: &Schemathesis, addr: std::net::SocketAddr, who: &str, bearer: String) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/schemathesis.toml");
    let args = [
        // Every operation, the document's own included (schemathesis leaves
        // out the operation that served the document unless a filter names it).
        "--include-path-regex",
        "^/",
        // Every check (schemathesis's default: all of them), as
        // schemathesis.toml leaves them per operation.
        "--max-examples",
        MAX_EXAMPLES,
        "--request-timeout",
        "5",
        "--seed",
        "20261201",
        // One worker: Hypothesis's source inspection is not thread-safe on
        // every CPython (3.11 can fail with "AST constructor recursion depth
        // mismatch").
        "--workers",
        "1",
        "--generation-database",
        "none",
    ];
    // The relay is another process: nothing of this runtime runs meanwhile.
    let (command, output) =
        tokio::task::block_in_place(|| validator.run(&config, addr, &bearer, &args));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("$ {command}  # {who} token\n{report}");
    assert!(
        output.status.success(),
        "schemathesis found mismatches with the {who} token ({}):\n$ {command}\n{report}",
        output.status
    );
    let tested = format!("Tested: {}", OPERATIONS.len());
    assert!(
        report.contains(&tested),
        "schemathesis did not test every operation ({tested} expected):\n{report}"
    );
}

/// A public content row with a few events of its room (an insert, an
/// update with `old`, coalesced views with `count`), for the document's
/// example room `content_42`, which every user may read.
async fn insert_history_rows(client: &tokio_postgres::Client) {
    insert_basic_rows(client).await;
    client
        .batch_execute(
            "INSERT INTO content (id, author_id, title, visibility) VALUES (42, 1, 'first', 'public');
             UPDATE content SET title = 'second' WHERE id = 42;
             INSERT INTO content_views (content_id, user_id) VALUES (42, 2), (42, 3), (42, 4);",
        )
        .await
        .expect("seed content_42");
    barrier(client).await;
    wait_for("the coalesced views", Duration::from_secs(10), || async {
        let n = scalar(
            client,
            "SELECT count(*) FROM realtime.outbox
                 WHERE event = 'content-viewed' AND count IS NOT NULL",
        )
        .await?;
        (n > 0).then_some(())
    })
    .await;
}
