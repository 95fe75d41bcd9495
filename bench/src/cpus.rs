//! The pinned modes (`--pin`): the server on one CPU, the load generators
//! on the other, so that neither takes the other's CPU and the scheduler
//! never moves them. The server and Postfix's `smtp-source` start under
//! util-linux `taskset -c CPU` (which sets the affinity and execs the
//! program, so the PID measured is still the server's); the Rust generator
//! runs on the benchmark's own thread, pinned with `sched_setaffinity` for
//! the measurement.

use std::process::Command;

use anyhow::{Result, bail};

/// The CPU a pinned server runs on.
pub const SERVER: usize = 1;
/// The CPU the load generators run on in the pinned modes.
pub const CLIENT: usize = 0;

/// Whether the pinned modes can run here: both CPUs in this process's
/// affinity mask, and `taskset` installed. The error says why not.
pub fn check() -> Result<()> {
    let mask = affinity()?;
    for cpu in [CLIENT, SERVER] {
        // SAFETY: CPU_ISSET reads a bit of a valid cpu_set_t.
        if cpu >= libc::CPU_SETSIZE as usize || !unsafe { libc::CPU_ISSET(cpu, &mask) } {
            bail!(
                "CPU {cpu} is not available to the benchmark ({} CPU(s) here); the pinned modes need CPUs {CLIENT} and {SERVER}",
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
        }
    }
    match Command::new("taskset")
        .args(["-c", &SERVER.to_string(), "true"])
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`taskset` is not installed (Debian: util-linux)")
        }
        Err(e) => bail!("running `taskset`: {e}"),
        Ok(out) if !out.status.success() => bail!(
            "`taskset -c {SERVER} true` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) => Ok(()),
    }
}

/// `cmd` run under `taskset -c cpu`: the same program, arguments,
/// environment and directory.
pub fn taskset(cmd: &Command, cpu: usize) -> Command {
    let mut pinned = Command::new("taskset");
    pinned
        .arg("-c")
        .arg(cpu.to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => pinned.env(key, value),
            None => pinned.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        pinned.current_dir(dir);
    }
    pinned
}

/// The calling thread pinned to one CPU until this is dropped (its
/// affinity is then restored). Processes it starts meanwhile inherit it.
pub struct Pinned {
    previous: libc::cpu_set_t,
}

impl Pinned {
    pub fn this_thread(cpu: usize) -> Result<Pinned> {
        let previous = affinity()?;
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes a bit of it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut set) };
        set_affinity(&set)?;
        Ok(Pinned { previous })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = set_affinity(&self.previous);
    }
}

/// The calling thread's affinity mask.
fn affinity() -> Result<libc::cpu_set_t> {
    // SAFETY: sched_getaffinity fills a cpu_set_t of the size given; pid 0
    // is the calling thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        bail!("sched_getaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(set)
}

fn set_affinity(set: &libc::cpu_set_t) -> Result<()> {
    // SAFETY: a valid cpu_set_t of the size given; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) } != 0 {
        bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
