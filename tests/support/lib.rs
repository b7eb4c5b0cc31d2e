//! Shared support for OurTorrent's end-to-end tests, each helper once:
//! finding third-party tools (a missing tool fails the test under `CI=true`,
//! and skips it with a message elsewhere), test data, child processes with
//! line waiting ([`proc`]), free loopback ports ([`ports`]), libtorrent peers
//! ([`libtorrent`]), opentracker ([`opentracker`]), BEP 15 by hand
//! ([`bep15`]), the `shell-std` binary for tests outside its package
//! ([`bin`]), the QEMU firmware runs ([`qemu`]; the host side:
//! [`qemu_setup`]) and the set-ups many tests share: seeders, libtorrent
//! peers, the test tree ([`fixtures`]).

pub mod bep15;
pub mod bin;
pub mod fixtures;
pub mod libtorrent;
pub mod opentracker;
pub mod ports;
pub mod proc;
pub mod qemu;
pub mod qemu_setup;
pub mod qemu_swarm;
pub mod redis;
pub mod web;

pub use bin::shell_std;
pub use libtorrent::{lt_info, lt_script, lt_swarm_script};
pub use ports::{free_tcp_port, free_tcp_udp_port, free_udp_port};
pub use proc::{run_bounded, Proc};

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when running under CI (`CI=true`): missing tools are failures.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Finds `tool` on PATH. Missing: panics under CI, otherwise prints a skip
/// note and returns `None` (the caller returns early).
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        missing(&format!("`{tool}` not found on PATH"));
    }
    found
}

/// Debian's python3 with `python3-libtorrent` (a pyenv python3 on PATH
/// does not see the module), or `None` (see [`require_tool`]).
pub fn require_libtorrent() -> Option<PathBuf> {
    let py = PathBuf::from("/usr/bin/python3");
    let ok = Command::new(&py)
        .args(["-c", "import libtorrent"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(py)
    } else {
        missing("python3-libtorrent is not importable by /usr/bin/python3");
        None
    }
}

fn missing(what: &str) {
    if in_ci() {
        panic!("{what}: required under CI (the README's test command installs it)");
    }
    eprintln!("SKIP: {what}; run scripts/test.sh to install it");
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `len` bytes of deterministic pseudo-random data to `path`.
pub fn write_data(path: &Path, len: usize, seed: u64) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(path, data).expect("write data");
}

/// A small multi-file tree: sizes chosen so files straddle piece edges.
pub fn make_tree(root: &Path) {
    write_data(&root.join("a.bin"), 100_000, 1);
    write_data(&root.join("sub/b.bin"), 40_000, 2);
    write_data(&root.join("sub/deeper/c.txt"), 17, 3);
    write_data(&root.join("empty-not.bin"), 1, 4);
}
