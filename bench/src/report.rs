//! What a scenario hands back: tables printed at the end, notes, and the
//! machine-readable results written as JSON (plus an SVG chart for latency)
//! into the results directory. Also the CPU meter that tells, for a phase,
//! how much CPU the relay, Postgres, the client processes and the bench
//! itself (writers) used.

use std::fmt;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::sys;

/// A table of text cells, printed with aligned columns.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with a title and column headers.
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Self {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        writeln!(f, "{}", self.title)?;
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    if i == 0 {
                        format!("{c}{}", " ".repeat(pad))
                    } else {
                        format!("{}{c}", " ".repeat(pad))
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        writeln!(f, "  {}", line(&self.headers))?;
        let total: usize = widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1);
        writeln!(f, "  {}", "-".repeat(total))?;
        for row in &self.rows {
            writeln!(f, "  {}", line(row))?;
        }
        Ok(())
    }
}

/// A scenario's results.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The scenario's name (the JSON file's name).
    pub name: String,
    /// Printed at the end.
    pub tables: Vec<Table>,
    /// Printed under the tables (limits hit, caveats).
    pub notes: Vec<String>,
    /// Everything measured, per run, and the summaries.
    pub json: Value,
    /// The latency chart.
    pub svg: Option<String>,
}

impl Report {
    /// A scenario's report: `args` (its options) head the JSON results,
    /// `summary` and `runs` follow, `tables` and `notes` are printed.
    pub fn of(
        name: &str,
        args: &impl serde::Serialize,
        summary: impl serde::Serialize,
        runs: impl serde::Serialize,
    ) -> Self {
        let mut json = header(name, serde_json::to_value(args).unwrap_or_default());
        json["summary"] = serde_json::to_value(summary).unwrap_or_default();
        json["runs"] = serde_json::to_value(runs).unwrap_or_default();
        Self {
            name: name.into(),
            json,
            ..Self::default()
        }
    }

    /// Adds tables to print.
    pub fn tables(mut self, tables: impl IntoIterator<Item = Table>) -> Self {
        self.tables.extend(tables);
        self
    }

    /// Adds notes to print under the tables.
    pub fn notes(mut self, notes: Vec<String>) -> Self {
        self.notes.extend(notes);
        self
    }

    /// Adds the chart written beside the JSON.
    pub fn chart(mut self, svg: String) -> Self {
        self.svg = Some(svg);
        self
    }

    /// Prints the tables and notes.
    pub fn print(&self) {
        println!();
        for table in &self.tables {
            println!("{table}");
        }
        for note in &self.notes {
            println!("note: {note}");
        }
    }
}

/// Writes `<dir>/<name>.json` (and `<dir>/<name>.svg` when there is a chart).
pub fn write(dir: &Path, name: &str, json: &Value, svg: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("results: {}", path.display());
    if let Some(svg) = svg {
        write_svg(dir, name, svg)?;
    }
    Ok(())
}

/// Writes `<dir>/<name>.svg`.
pub fn write_svg(dir: &Path, name: &str, svg: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.svg"));
    std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
    println!("chart:   {}", path.display());
    Ok(())
}

/// The header every results file starts with.
fn header(scenario: &str, args: Value) -> Value {
    serde_json::json!({
        "scenario": scenario,
        "date": sys::now_utc(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": sys::machine(),
        "postgres": if std::env::var_os("DATABASE_URL").is_some() { "DATABASE_URL" } else { "throwaway cluster, fsync on" },
        "args": args,
    })
}

/// CPU used by each party during a phase, in percent of one core.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct CpuShare {
    pub relay: f64,
    pub postgres: f64,
    pub clients: f64,
    pub bench: f64,
}

impl CpuShare {
    /// `relay 95% · pg 60% · clients 30% · writers 10%`.
    pub fn show(&self) -> String {
        format!(
            "relay {:.0}% · pg {:.0}% · clients {:.0}% · bench {:.0}%",
            self.relay, self.postgres, self.clients, self.bench
        )
    }
}

/// Takes CPU readings of the processes involved in a phase.
#[derive(Clone, Debug, Default)]
pub struct CpuMeter {
    pub relay: Option<u32>,
    pub postmaster: Option<u32>,
    pub clients: Vec<u32>,
}

/// One reading.
#[derive(Clone, Copy, Debug)]
pub struct CpuReading {
    at: std::time::Instant,
    relay: u64,
    postgres: u64,
    clients: u64,
    bench: u64,
}

impl CpuMeter {
    /// Reads the counters now.
    pub fn read(&self) -> CpuReading {
        CpuReading {
            at: std::time::Instant::now(),
            relay: self.relay.map(sys::cpu_ticks).unwrap_or(0),
            postgres: self
                .postmaster
                .map(sys::cpu_ticks_with_children)
                .unwrap_or(0),
            clients: self.clients.iter().map(|&p| sys::cpu_ticks(p)).sum(),
            bench: sys::cpu_ticks(std::process::id()),
        }
    }

    /// CPU seconds Postgres (every backend) used between two readings.
    pub fn postgres_seconds(before: &CpuReading, after: &CpuReading) -> f64 {
        after.postgres.saturating_sub(before.postgres) as f64 / sys::ticks_per_sec()
    }

    /// The share of each party between two readings.
    pub fn share(before: &CpuReading, after: &CpuReading) -> CpuShare {
        let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let per =
            |a: u64, b: u64| b.saturating_sub(a) as f64 / sys::ticks_per_sec() / seconds * 100.0;
        CpuShare {
            relay: per(before.relay, after.relay),
            postgres: per(before.postgres, after.postgres),
            clients: per(before.clients, after.clients),
            bench: per(before.bench, after.bench),
        }
    }
}
