//! libtorrent (python3-libtorrent) for tests: the helper scripts in
//! `tests/py/` and a seeder launcher. Find the interpreter with
//! [`crate::require_libtorrent`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{repo_root, run, Proc};

/// Path of the torrent helper script (`tests/py/lt_torrent.py`: create,
/// info, verdict).
pub fn lt_script() -> PathBuf {
    repo_root().join("tests/py/lt_torrent.py")
}

/// Path of the peer script (`tests/py/lt_swarm.py`; its docstring lists
/// the options and the lines it prints).
pub fn lt_swarm_script() -> PathBuf {
    repo_root().join("tests/py/lt_swarm.py")
}

/// What libtorrent says about `torrent` (`lt_torrent.py info`: info-hash,
/// name, files, trackers, ...).
pub fn lt_info(py: &Path, torrent: &Path) -> serde_json::Value {
    let out = run(Command::new(py).arg(lt_script()).arg("info").arg(torrent));
    serde_json::from_str(&out).expect("lt_torrent.py info JSON")
}

/// `PY lt_swarm.py ROLE TORRENT SAVE PORT` (`role`: "seed" or "leech");
/// the caller adds options and runs it.
pub fn lt_swarm(py: &Path, role: &str, torrent: &Path, save: &Path, port: u16) -> Command {
    let mut cmd = Command::new(py);
    cmd.arg(lt_swarm_script())
        .arg(role)
        .arg(torrent)
        .arg(save)
        .arg(port.to_string());
    cmd
}

/// A libtorrent seeder of `torrent` (data in `save`) on 127.0.0.1:`port`
/// for at most 90 s, returned once it listens (20 s at most).
pub fn lt_seeder(py: &Path, torrent: &Path, save: &Path, port: u16) -> Proc {
    lt_seeder_with(py, torrent, save, port, &[])
}

/// [`lt_seeder`] with `extra` options for `lt_swarm.py`.
pub fn lt_seeder_with(py: &Path, torrent: &Path, save: &Path, port: u16, extra: &[&str]) -> Proc {
    let p = Proc::spawn(
        "lt-seed",
        lt_swarm(py, "seed", torrent, save, port)
            .args(["--max-seconds", "90"])
            .args(extra),
    );
    p.wait_for("READY", Duration::from_secs(20));
    p
}
