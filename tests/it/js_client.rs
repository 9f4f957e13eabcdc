//! The JavaScript client (`clients/js`) as part of `cargo test`: its unit
//! tests, its integration tests against this crate's `rowcast` binary and
//! the test Postgres, and its browser tests, all through `npm test`.
//! Skipped, with a message, where node or npm is not installed.

use crate::common;

use common::node;

#[test]
fn js_client_suite() {
    if !common::required("node", node::missing().map(str::to_string)) {
        return;
    }
    // Another cargo run in this checkout would share node_modules and dist/.
    let _lock = node::prepared();
    let dir = node::client_dir();
    node::npm(&dir, &["run", "build"], &[]);
    let (admin_url, template) = common::server_urls();
    node::npm(
        &dir,
        &["test"],
        &[
            ("ROWCAST_BIN", env!("CARGO_BIN_EXE_rowcast")),
            ("ROWCAST_TEST_ADMIN_URL", &admin_url),
            ("ROWCAST_TEST_TEMPLATE", &template),
        ],
    );
}
