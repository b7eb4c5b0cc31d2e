//! Child processes for tests: [`Proc`] (stdout lines on a channel, waited
//! for with a bound; killed on drop) and [`run_bounded`] (run to the end
//! under a time limit).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) on drop. Its stdout lines go to a
/// channel (and to the test's stderr as `[name] line`); stdin is null,
/// stderr is what the caller set (inherited by default).
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    name: String,
}

impl Proc {
    /// Spawns `cmd` with stdout piped; `name` labels its lines and errors.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        let label = name.to_string();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("[{label}] {l}");
                // Keep reading after the receiver is gone, so the child
                // never blocks on a full pipe.
                let _ = tx.send(l);
            }
        });
        Proc {
            child,
            lines,
            name: name.to_string(),
        }
    }

    /// The next line not read yet, waiting up to `timeout`; `None` on
    /// timeout or once the child closed its stdout.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Reads lines until one starts with `prefix` (returned), for up to
    /// `timeout`; `None` on timeout or once the child closed its stdout.
    pub fn wait_line(&self, prefix: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let l = self.next_line(left)?;
            if l.starts_with(prefix) {
                return Some(l);
            }
        }
    }

    /// [`Proc::wait_line`], panicking when no such line comes.
    pub fn wait_for(&self, prefix: &str, timeout: Duration) -> String {
        self.wait_line(prefix, timeout).unwrap_or_else(|| {
            panic!(
                "{}: no line starting with {prefix:?} within {timeout:?}",
                self.name
            )
        })
    }

    /// The lines printed and not read yet (without waiting).
    pub fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Waits up to `timeout` for the child to exit; panics after that.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(
                Instant::now() < end,
                "timed out after {timeout:?}: {}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to its end with stdout and stderr captured; returns
/// (success, stdout, stderr). Killed, and the test failed with its output,
/// after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> (bool, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let end = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("wait").is_some() {
            let out = child.wait_with_output().expect("output");
            return (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{cmd:?} timed out after {timeout:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
