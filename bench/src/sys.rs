//! What the bench reads from the operating system: a monotonic clock that
//! several processes can compare, the open-files limit, per-process CPU
//! read from `/proc`, and how busy the machine is.

use std::path::Path;

/// Nanoseconds of `CLOCK_MONOTONIC`.
///
/// `std::time::Instant` reads the same clock on Linux but cannot be sent to
/// another process; the bench compares a writer's commit time (this process)
/// with a client's receive time (a client process), so both sides call
/// `clock_gettime(CLOCK_MONOTONIC)` explicitly. The clock is system-wide on
/// one machine, so the values are comparable across processes.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The hard limit of open files for this process.
pub fn nofile_hard() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_max
}

/// Raises the soft limit of open files to the hard limit; returns it.
pub fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls only read or write the struct they are given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// User plus system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    stat_fields(pid)
        .map(|f| f.utime + f.stime)
        .unwrap_or_default()
}

struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
}

fn stat_fields(pid: u32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
    })
}

/// CPU ticks of a process and all its direct children (a Postgres
/// postmaster and its backends). Children that exited are not counted.
pub fn cpu_ticks_with_children(pid: u32) -> u64 {
    let mut total = cpu_ticks(pid);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(stat) = stat_fields(child).filter(|s| s.ppid == pid) {
                total += stat.utime + stat.stime;
            }
        }
    }
    total
}

/// Pins every thread of `pid` to `cpu`, and with `children` every thread
/// of the processes it forked; what they fork or spawn later inherits it.
pub fn pin(pid: u32, cpu: usize, children: bool) -> anyhow::Result<()> {
    let mut pids = vec![pid];
    if children {
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                    continue;
                };
                if stat_fields(child).is_some_and(|s| s.ppid == pid) {
                    pids.push(child);
                }
            }
        }
    }
    for process in pids {
        let tasks = std::fs::read_dir(format!("/proc/{process}/task"))?;
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and
            // sched_setaffinity only read and write the set passed.
            let result = unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
            };
            // A thread may end in between; only a refusal for a live one counts.
            if result != 0 && std::path::Path::new(&format!("/proc/{process}/task/{tid}")).exists()
            {
                anyhow::bail!(
                    "pinning thread {tid} of {process} to CPU {cpu}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    Ok(())
}

/// Clock ticks per second.
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no side effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The pid in a Postgres data directory's `postmaster.pid`.
pub fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The load average (1, 5, 15 minutes) now.
pub fn loadavg() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The load average when the bench started, before it added any load.
pub static LOAD_AT_START: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Busy CPU time of the whole machine, as (busy, total) jiffies.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// Waits (at most `max`) until the machine is nearly idle: less than
/// `threshold` percent of all cores busy over one second. Other work on a
/// shared machine would otherwise be measured too. Returns the last reading.
pub async fn wait_for_quiet(max: std::time::Duration, threshold: f64) -> f64 {
    let until = std::time::Instant::now() + max;
    loop {
        let (busy0, total0) = cpu_jiffies();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let (busy1, total1) = cpu_jiffies();
        let busy = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64 * 100.0;
        if busy < threshold || std::time::Instant::now() >= until {
            if busy >= threshold {
                eprintln!("bench: the machine is still {busy:.0}% busy; measuring anyway");
            }
            return busy;
        }
    }
}

/// What the results record about the machine.
pub fn machine() -> serde_json::Value {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "cpu": model,
        "kernel": kernel.trim(),
        "nofile_hard_limit": nofile_hard(),
        "loadavg_at_start": LOAD_AT_START.get().cloned().unwrap_or_default(),
        "loadavg_at_end": loadavg(),
    })
}

/// Now, as RFC 3339 UTC.
pub fn now_utc() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
