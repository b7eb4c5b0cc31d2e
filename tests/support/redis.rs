//! Debian's `redis-server` for tests: started on 127.0.0.1 on a free port
//! in a temporary folder (append-only file on, so a restart keeps the
//! data), ready when it says so, killed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_tcp_port, require_tool, Proc};

/// A running `redis-server`.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl Redis {
    /// Starts one in `dir` on a free port, or `None` when `redis-server`
    /// is missing (see [`require_tool`]).
    pub fn start(dir: &Path) -> Option<Redis> {
        require_tool("redis-server")?;
        let mut r = Redis {
            port: free_tcp_port(),
            dir: dir.to_path_buf(),
            proc: None,
        };
        r.restart();
        Some(r)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against it; its trimmed output (panics when it
    /// fails: a test's setup step).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["--no-raw", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Kills the server (SIGKILL): clients see an outage.
    pub fn stop(&mut self) {
        self.proc.take();
    }

    /// Starts (again) on the same port and folder; waits until it accepts
    /// connections (bounded).
    pub fn restart(&mut self) {
        self.stop();
        let p = Proc::spawn(
            "redis",
            Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port"])
                .arg(self.port.to_string())
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .arg("--dir")
                .arg(&self.dir),
        );
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match p.next_line(left) {
                Some(l) if l.contains("Ready to accept connections") => break,
                Some(_) => {}
                None => panic!("redis-server on port {} did not get ready", self.port),
            }
        }
        self.proc = Some(p);
    }
}
