//! The benchmark harness works end to end: `rowcast-bench smoke` runs every
//! scenario at a tiny size, exits 0, writes results with non-zero counts,
//! and leaves no process behind. No timing is asserted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rowcast_devkit::process::dies_with_parent;
use serde_json::Value;

/// The bench process, killed if the test fails before it exits.
struct Bench(Child);

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Processes whose environment carries `marker` (the bench and everything
/// it started: relay, clients, Postgres).
fn marked_processes(marker: &str) -> Vec<u32> {
    let needle = format!("ROWCAST_BENCH_SMOKE={marker}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn count(value: &Value, path: &[&str]) -> u64 {
    let mut at = value;
    for key in path {
        at = &at[*key];
    }
    at.as_u64()
        .or_else(|| at.as_f64().map(|f| f as u64))
        .unwrap_or_else(|| panic!("{path:?} is not a number in {value}"))
}

fn runs<'a>(results: &'a Value, scenario: &str) -> &'a Vec<Value> {
    let runs = results["scenarios"][scenario]["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("no runs for {scenario}"));
    assert!(!runs.is_empty(), "{scenario} has no runs");
    runs
}

fn out_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-smoke-{}", std::process::id()))
}

#[test]
fn the_benchmark_harness_runs_every_scenario() {
    let out = out_dir();
    let _ = std::fs::remove_dir_all(&out);
    let marker = format!("{}-{}", std::process::id(), line!());
    let mut command = Command::new(env!("CARGO_BIN_EXE_rowcast-bench"));
    command
        .arg("smoke")
        .arg("--out")
        .arg(&out)
        .env("ROWCAST_BENCH_SMOKE", &marker)
        .stdin(Stdio::null());
    dies_with_parent(&mut command);
    let mut bench = Bench(command.spawn().expect("start rowcast-bench"));
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(status) = bench.0.try_wait().expect("wait for rowcast-bench") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "rowcast-bench smoke did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "rowcast-bench smoke failed: {status}");

    let text = std::fs::read_to_string(out.join("smoke.json")).expect("smoke.json");
    let results: Value = serde_json::from_str(&text).expect("smoke.json is JSON");

    let latency = runs(&results, "latency");
    assert_eq!(
        latency.len(),
        4,
        "one window per capture mode and path (ws, sse)"
    );
    for run in latency {
        assert!(count(run, &["samples"]) > 0, "latency samples: {run}");
    }

    for run in runs(&results, "capture") {
        assert!(count(run, &["pg_rows"]) > 0, "rows without capture: {run}");
        let modes = run["modes"].as_array().expect("capture modes");
        assert_eq!(modes.len(), 2);
        for mode in modes {
            assert!(count(mode, &["rows"]) > 0, "rows with capture: {mode}");
            assert!(count(mode, &["stored_events"]) > 0, "stored: {mode}");
            assert!(count(mode, &["backlog_rows"]) > 0, "backlog: {mode}");
        }
    }

    for run in runs(&results, "fanout") {
        assert_eq!(count(run, &["connected"]), count(run, &["connections"]));
        assert!(count(run, &["hot", "frames"]) > 0, "hot room frames: {run}");
        assert!(
            count(run, &["small", "frames"]) > 0,
            "small room frames: {run}"
        );
    }

    for run in runs(&results, "replay") {
        let events = count(run, &["events"]);
        assert!(events > 0);
        assert_eq!(count(run, &["replayed"]), events, "{run}");
        assert_eq!(count(run, &["frames"]), events, "{run}");
    }

    for run in runs(&results, "slow") {
        assert!(count(run, &["baseline", "samples"]) > 0, "{run}");
        assert!(count(run, &["with_stalled", "samples"]) > 0, "{run}");
        assert!(count(run, &["stalled_joined"]) > 0, "{run}");
    }
    for run in runs(&results, "soak") {
        assert!(count(run, &["expected"]) > 0, "{run}");
        assert!(count(run, &["delivered"]) > 0, "{run}");
        assert!(
            run["samples"].as_array().is_some_and(|s| s.len() >= 2),
            "RSS samples: {run}"
        );
    }

    for run in runs(&results, "revocation") {
        assert!(count(run, &["idle", "samples"]) > 0, "{run}");
        assert!(count(run, &["loaded", "samples"]) > 0, "{run}");
    }
    for run in runs(&results, "failover") {
        assert!(count(run, &["rows_after_kill"]) > 0, "{run}");
        assert!(
            run["first_event_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "{run}"
        );
        assert!(
            run["leader_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "{run}"
        );
    }
    for run in runs(&results, "promotion") {
        assert!(
            run["first_event_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "{run}"
        );
        assert!(
            run["promote_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "{run}"
        );
    }
    for run in runs(&results, "bus") {
        assert!(count(run, &["samples"]) > 0, "{run}");
    }
    for run in runs(&results, "sinks") {
        let hook = &run["hook"];
        assert!(count(hook, &["events"]) > 0, "{run}");
        assert_eq!(
            count(hook, &["lost"]),
            0,
            "every webhook event arrived: {run}"
        );
        assert_eq!(count(hook, &["out_of_order"]), 0, "in seq order: {run}");
        let push = &run["push"][0];
        assert_eq!(
            count(push, &["received"]),
            count(push, &["pushes"]),
            "every push arrived: {run}"
        );
    }
    for run in runs(&results, "nodes") {
        assert_eq!(count(run, &["connected"]), count(run, &["connections"]));
        let nodes = run["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 3, "{run}");
        assert_eq!(
            nodes.iter().filter(|n| n["leader"] == true).count(),
            1,
            "one leader: {run}"
        );
    }
    assert!(out.join("smoke-latency.svg").is_file());

    // Everything the bench started is gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = marked_processes(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes left behind by rowcast-bench: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_dir_all(&out);
}
