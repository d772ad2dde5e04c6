//! Child processes that are always stopped: killed by pid when the guard drops, even when the
//! test panics.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running child process, killed and reaped on drop.
pub struct Guarded {
    child: Child,
    name: String,
}

impl Guarded {
    /// Starts `command` with its output sent to `log` (a file the test can read on failure).
    pub fn spawn(name: &str, command: &mut Command, log: &Path) -> Self {
        let out = std::fs::File::create(log).expect("log file is writable");
        let err = out.try_clone().expect("log file handle can be cloned");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {name}: {e}"));
        Self {
            child,
            name: name.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.is_running() {
            // SIGKILL by pid: bounded, and the test does not depend on a graceful shutdown.
            if let Err(e) = self.child.kill() {
                eprintln!("could not kill {} (pid {}): {e}", self.name, self.pid());
            }
        }
        let _ = self.child.wait();
    }
}

/// Polls `ready` every 50 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The CPU time of process `pid` so far (all its threads): (user, system).
pub fn cpu_time(pid: u32) -> (Duration, Duration) {
    let (user, system, _) = stat_of(pid);
    (user, system)
}

/// The CPU time of process `pid` and of every process descending from it, so far: (user,
/// system). For servers that fork workers, such as Kamailio.
pub fn tree_cpu_time(pid: u32) -> (Duration, Duration) {
    let processes: Vec<(u32, (Duration, Duration, u32))> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .map(|p| (p, stat_of(p)))
        .collect();
    let mut tree = vec![pid];
    let mut grown = true;
    while grown {
        grown = false;
        for (p, (_, _, parent)) in &processes {
            if tree.contains(parent) && !tree.contains(p) {
                tree.push(*p);
                grown = true;
            }
        }
    }
    processes
        .iter()
        .filter(|(p, _)| tree.contains(p))
        .fold(Default::default(), |(user, system), (_, (u, s, _))| {
            (user + *u, system + *s)
        })
}

/// From `/proc/<pid>/stat`: user time, system time, parent pid (zeros for a gone process).
fn stat_of(pid: u32) -> (Duration, Duration, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ")".
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let number = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let time = |ticks: u64| Duration::from_micros(ticks * 1_000_000 / clock_ticks_per_second());
    (
        time(number(11)),
        time(number(12)),
        u32::try_from(number(1)).unwrap_or(0),
    )
}

/// `getconf CLK_TCK`, the unit of the times in `/proc/<pid>/stat`.
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}
