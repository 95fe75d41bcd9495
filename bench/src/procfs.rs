//! What the benchmark reads about a server process from `/proc`: its CPU
//! time (user + system, all threads, from `/proc/PID/stat`) and its memory
//! (`VmRSS`, `VmHWM` from `/proc/PID/status`; PSS from
//! `/proc/PID/smaps_rollup`).

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The fields of `/proc/PID/stat` after the command name (field 2, in
/// parentheses, may contain spaces): field 3 (state) is index 0, so utime
/// (field 14) is 11, stime (15) is 12, cutime 13, cstime 14.
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/PID/stat")?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

fn ticks(t: u64) -> Duration {
    Duration::from_secs_f64(t as f64 / clock_ticks() as f64)
}

/// User + system CPU time the process has used so far, all its threads
/// included (the kernel folds finished threads into these counters too).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let (user, system) = cpu_split(pid)?;
    Ok(user + system)
}

/// User and system CPU time the process has used so far, apart (all its
/// threads, as [`cpu_time`]).
pub fn cpu_split(pid: u32) -> Result<(Duration, Duration)> {
    let fields = stat_fields(pid)?;
    if fields.len() < 13 {
        bail!("malformed /proc/{pid}/stat");
    }
    Ok((ticks(fields[11].parse()?), ticks(fields[12].parse()?)))
}

/// CPU time of a process and its children: its own user + system time,
/// that of its children it has waited for (`cutime`, `cstime`), and that
/// of its live children (PostgreSQL's backends, whose postmaster reaps them
/// as they exit).
pub fn tree_cpu_time(pid: u32) -> Result<Duration> {
    // state, ppid, …: ppid is index 1.
    let fields = |pid: u32| -> Result<Vec<u64>> {
        Ok(stat_fields(pid)?
            .iter()
            .skip(1)
            .take(14)
            .map(|f| f.parse::<i64>().unwrap_or(0).max(0) as u64)
            .collect())
    };
    let own = fields(pid)?;
    if own.len() < 14 {
        bail!("malformed /proc/{pid}/stat");
    }
    let mut ticks = own[10] + own[11] + own[12] + own[13];
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(f) = fields(child)
            && f.len() >= 14
            && f[0] == pid as u64
        {
            ticks += f[10] + f[11] + f[12] + f[13];
        }
    }
    Ok(self::ticks(ticks))
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the stat counters (100 on Linux, so
/// CPU time is known to 10 ms; the load windows are long enough for that).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Memory figures of a process, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Resident now.
    pub rss_kib: u64,
    /// The peak resident size so far ("high water mark").
    pub hwm_kib: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let status = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&status).with_context(|| format!("reading {status}"))?;
    Ok(Memory {
        rss_kib: kib_field(&text, "VmRSS:", &status)?,
        hwm_kib: kib_field(&text, "VmHWM:", &status)?,
    })
}

/// The `NAME:   123 kB` line of a `/proc` file's `text`, in KiB.
fn kib_field(text: &str, name: &str, file: &str) -> Result<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .with_context(|| format!("no {name} in {file}"))?;
    Ok(line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}

/// The process's proportional set size, KiB (`Pss` of
/// `/proc/PID/smaps_rollup`): each resident page divided by the number of
/// times it is mapped, so a page shared by many mappings — a copy-on-write
/// memory image mapped into every instance's slot — counts once in all,
/// where RSS counts it once per mapping.
pub fn pss_kib(pid: u32) -> Result<u64> {
    let rollup = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&rollup).with_context(|| format!("reading {rollup}"))?;
    kib_field(&text, "Pss:", &rollup)
}

/// The machine, for the report: CPU count and model, kernel, memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim())
        .to_owned();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!(
        "{cpus} CPUs ({model}), Linux {kernel}, {} GiB RAM",
        (mem_kib + (1 << 19)) >> 20
    )
}

/// CPU time the whole machine spent busy so far (all CPUs: user, nice,
/// system, irq, softirq, and steal — time the hypervisor gave elsewhere).
/// With the server's and the benchmark's own time taken off, what is left
/// over a window is background load that would skew the figures.
pub fn machine_busy() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        bail!("malformed /proc/stat");
    }
    // user nice system idle iowait irq softirq steal
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    Ok(Duration::from_secs_f64(busy as f64 / clock_ticks() as f64))
}
