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
