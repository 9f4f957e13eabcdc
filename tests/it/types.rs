//! `rowcast types` against the demo database: its output compiles, and a
//! small program using it type-checks under `tsc --strict` exactly where
//! it should (right shapes accepted, wrong ones and unexposed columns
//! refused). Skipped, with a message, where node or npm is not installed.

use crate::common;

use std::process::{Command, Stdio};

use common::*;

/// Uses the declarations; every `@ts-expect-error` line must be an error,
/// or tsc reports the directive as unused.
const PROGRAM: &str = r#"
import type { ContentCreatedData, RowcastEventFrame, RowcastEvents, UserProfileUpdatedData } from "./rowcast-events.js";

const created: ContentCreatedData = {
  id: 1,
  author_id: 2,
  title: null,
  body: "It was raining.",
  visibility: "public",
  created_at: "2026-01-01T00:00:00Z",
  updated_at: "2026-01-01T00:00:00Z",
};

// @ts-expect-error title is a string or null, never a number
const wrong: ContentCreatedData = { ...created, title: 42 };

// @ts-expect-error author_id may not be null
const orphan: ContentCreatedData = { ...created, author_id: null };

declare const profile: UserProfileUpdatedData;
// @ts-expect-error email is not exposed
profile.email;
// @ts-expect-error password_hash is not exposed
profile.password_hash;

export function describe(frame: RowcastEventFrame): string {
  switch (frame.event) {
    case "content-created":
      return frame.data.title ?? String(frame.data.id + frame.data.author_id);
    case "content-updated":
      return `${frame.seq} ${frame.at} ${frame.old.title ?? ""}`;
    case "user-status-changed":
      return frame.data.status === "online" ? "on" : "off";
    default:
      return frame.event;
  }
}

type Old = RowcastEvents["content-created"]["old"];
// @ts-expect-error inserts carry no old
const old: Old = { title: "x" };

export { created, wrong, orphan, old };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarations_type_check_with_tsc() {
    if !common::required("node", node::missing().map(str::to_string)) {
        return;
    }
    let db = TestDb::demo().await;
    let output = relay_binary(&["types"], &[("DATABASE_URL", db.url.as_str())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run rowcast types");
    assert!(
        output.status.success(),
        "rowcast types failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let declarations = String::from_utf8(output.stdout).expect("UTF-8 output");
    assert!(declarations.contains("export interface RowcastEvents {"));
    assert!(!declarations.contains("password_hash"), "{declarations}");

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(&db.name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rowcast-events.d.ts"), &declarations).unwrap();
    std::fs::write(dir.join("main.ts"), PROGRAM).unwrap();
    let _lock = node::prepared();
    let tsc = node::client_dir().join("node_modules/.bin/tsc");
    let checked = Command::new(tsc)
        .args([
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "esnext",
            "--moduleResolution",
            "bundler",
            "main.ts",
            "rowcast-events.d.ts",
        ])
        .current_dir(&dir)
        .output()
        .expect("run tsc");
    assert!(
        checked.status.success(),
        "tsc refused the program using `rowcast types`' output:\n{}{}\n--- declarations ---\n{declarations}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr),
    );
    std::fs::remove_dir_all(&dir).ok();
}
