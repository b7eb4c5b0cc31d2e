//! Test set-ups written once: the multi-file tree and its torrent
//! ([`tree_torrent`], [`assert_same_tree`]), the start of a libtorrent test
//! ([`lt_and_tempdir`]), our own seeder ([`OurSeeder`]: `shell-std client
//! seed`), a libtorrent seeder ([`LtSeeder`]: `tests/py/lt_swarm.py seed`)
//! and leecher ([`lt_leech_from`]), and the libtorrent DHT, magnet and PEX
//! peers ([`LtDhtPeer`]: `tests/py/lt_dht_swarm.py`; a router with a seeder
//! announcing there: [`LtDhtSwarm`]). Every child is a [`Proc`] (killed on
//! drop) and every wait is bounded (20 s for a peer to come up). Builders
//! keep options in the order given, so a test reads as the command it runs.

use std::ffi::{OsStr, OsString};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::libtorrent::{lt_seeder_with, lt_swarm};
use crate::{
    free_tcp_port, free_tcp_udp_port, make_tree, repo_root, run, run_bounded, write_data, Proc,
};

/// How long a peer may take to say it is up (`READY`, `seeding:`,
/// libtorrent's first second of `PROGRESS`).
pub const PEER_UP: Duration = Duration::from_secs(20);

/// The files [`tree_torrent`] writes, relative to the tree.
pub const TREE_FILES: [&str; 5] = [
    "a.bin",
    "sub/b.bin",
    "sub/deeper/c.txt",
    "empty-not.bin",
    "sub/big.bin",
];

/// `dir/src/tree` ([`make_tree`] plus `sub/big.bin` of `big` bytes) and
/// `dir/t.torrent` of it made by `bin create` with `piece` bytes a piece
/// and `tracker` (none when `None`); returns (torrent, tree).
pub fn tree_torrent(
    bin: impl AsRef<OsStr>,
    dir: &Path,
    piece: u32,
    big: usize,
    tracker: Option<&str>,
) -> (PathBuf, PathBuf) {
    let tree = dir.join("src/tree");
    make_tree(&tree);
    write_data(&tree.join("sub/big.bin"), big, 9);
    let torrent = dir.join("t.torrent");
    let mut cmd = Command::new(bin);
    cmd.arg("create")
        .arg(&tree)
        .args(["--piece-length", &piece.to_string(), "-o"])
        .arg(&torrent);
    if let Some(t) = tracker {
        cmd.args(["--tracker", t]);
    }
    run(&mut cmd);
    (torrent, tree)
}

/// Asserts that every file of [`TREE_FILES`] under `b` has the bytes of
/// the one under `a`.
pub fn assert_same_tree(a: &Path, b: &Path) {
    for rel in TREE_FILES {
        let x = std::fs::read(a.join(rel)).expect("read source");
        let y = std::fs::read(b.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(x == y, "{rel} differs");
    }
}

/// The info-hash (hex) of `torrent`, from `bin info --json`.
pub fn info_hash_hex(bin: impl AsRef<OsStr>, torrent: &Path) -> String {
    let info = run(Command::new(bin).arg("info").arg(torrent).arg("--json"));
    let v: serde_json::Value = serde_json::from_str(&info).expect("info --json");
    v["info_hash"].as_str().expect("info_hash").to_string()
}

/// `BIN client seed TORRENT… --data DATA… --listen ADDR OPTS…`: our
/// seeder, one data path per torrent, options in the order given.
pub struct OurSeeder {
    cmd: Command,
    name: String,
    torrents: Vec<OsString>,
    data: Vec<OsString>,
    listen: String,
    opts: Vec<OsString>,
}

impl OurSeeder {
    /// A seeder run by `bin` on 127.0.0.1:0 with no torrent yet; its
    /// lines are labelled `shell-std`.
    pub fn new(bin: impl AsRef<OsStr>) -> OurSeeder {
        OurSeeder {
            cmd: Command::new(bin),
            name: "shell-std".into(),
            torrents: Vec::new(),
            data: Vec::new(),
            listen: "127.0.0.1:0".into(),
            opts: Vec::new(),
        }
    }

    /// Seeds `torrent` from `data` (a file or the torrent's folder).
    pub fn torrent(mut self, torrent: &Path, data: &Path) -> OurSeeder {
        self.torrents.push(torrent.into());
        self.data.push(data.into());
        self
    }

    /// Listens on 127.0.0.1:`port`.
    pub fn port(mut self, port: u16) -> OurSeeder {
        self.listen = format!("127.0.0.1:{port}");
        self
    }

    /// Options after `--listen`, in this order.
    pub fn opts<S: AsRef<OsStr>>(mut self, opts: impl IntoIterator<Item = S>) -> OurSeeder {
        self.opts
            .extend(opts.into_iter().map(|o| o.as_ref().to_os_string()));
        self
    }

    /// The label of its lines and errors.
    pub fn name(mut self, name: &str) -> OurSeeder {
        self.name = name.into();
        self
    }

    /// An environment variable for the seeder.
    pub fn env(mut self, key: &str, value: &str) -> OurSeeder {
        self.cmd.env(key, value);
        self
    }

    /// Where its stderr goes (inherited by default).
    pub fn stderr(mut self, to: impl Into<Stdio>) -> OurSeeder {
        self.cmd.stderr(to);
        self
    }

    /// The command line, not started (for a run that must fail).
    pub fn command(mut self) -> Command {
        self.cmd
            .args(["client", "seed"])
            .args(&self.torrents)
            .args(self.data.iter().flat_map(|d| [OsStr::new("--data"), d]))
            .args(["--listen", &self.listen])
            .args(&self.opts);
        self.cmd
    }

    /// Started, not waited for.
    pub fn spawn(self) -> Proc {
        let name = self.name.clone();
        Proc::spawn(&name, &mut self.command())
    }

    /// Started and waited for: one `seeding:` line a torrent, each within
    /// [`PEER_UP`].
    pub fn start(self) -> Proc {
        let n = self.torrents.len();
        let p = self.spawn();
        for _ in 0..n {
            p.wait_for("seeding:", PEER_UP);
        }
        p
    }
}

/// A libtorrent seeder (`tests/py/lt_swarm.py seed`, at most 90 s) of a
/// torrent whose data is in `save`, on 127.0.0.1; see [`LtSeed`].
pub struct LtSeeder<'a> {
    py: &'a Path,
    torrent: &'a Path,
    save: &'a Path,
    port: Option<u16>,
    opts: Vec<&'a str>,
}

impl<'a> LtSeeder<'a> {
    /// Seeds `torrent` from `save` (the folder holding its file or tree)
    /// with `py`, on a free port unless [`LtSeeder::port`] names one.
    pub fn new(py: &'a Path, torrent: &'a Path, save: &'a Path) -> LtSeeder<'a> {
        LtSeeder {
            py,
            torrent,
            save,
            port: None,
            opts: Vec::new(),
        }
    }

    /// Listens on 127.0.0.1:`port`.
    pub fn port(mut self, port: u16) -> LtSeeder<'a> {
        self.port = Some(port);
        self
    }

    /// `lt_swarm.py` options (its docstring lists them), in this order.
    pub fn opts(mut self, opts: &[&'a str]) -> LtSeeder<'a> {
        self.opts.extend_from_slice(opts);
        self
    }

    /// Started; returned once it listens (`READY`, within [`PEER_UP`]).
    pub fn start(self) -> LtSeed {
        let port = self.port.unwrap_or_else(free_tcp_port);
        let proc = lt_seeder_with(self.py, self.torrent, self.save, port, &self.opts);
        LtSeed { proc, port }
    }

    /// [`LtSeeder::start`], then [`LtSeed::warm_up`] (give it
    /// `--progress-every`).
    pub fn start_warm(self) -> LtSeed {
        let seed = self.start();
        seed.warm_up();
        seed
    }
}

/// A running libtorrent seeder: its process (killed on drop; derefs to
/// [`Proc`]) and its port.
pub struct LtSeed {
    pub proc: Proc,
    pub port: u16,
}

impl LtSeed {
    /// Waits (within [`PEER_UP`]) until it has reported progress for a
    /// second: libtorrent resets connections for a moment after it listens
    /// (its torrent is not started yet) and our redial backs off for 10 s.
    /// Needs `--progress-every`.
    pub fn warm_up(&self) {
        self.proc.wait_for("PROGRESS t=1.", PEER_UP);
    }
}

impl Deref for LtSeed {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

/// A libtorrent peer of `tests/py/lt_dht_swarm.py ROLE PORT ARGS…` (its
/// docstring says what each role and option does): the arguments in the
/// order given, started with [`LtDhtPeer::start`].
pub struct LtDhtPeer {
    role: &'static str,
    port: u16,
    args: Vec<OsString>,
}

impl LtDhtPeer {
    /// A DHT node that bootstraps from nobody, on `port` (TCP and UDP).
    pub fn router(port: u16) -> LtDhtPeer {
        LtDhtPeer {
            role: "router",
            port,
            args: Vec::new(),
        }
    }

    /// A seeder of `torrent` with its data in `save`, on `port`.
    pub fn seed(port: u16, torrent: &Path, save: &Path) -> LtDhtPeer {
        LtDhtPeer {
            role: "seed",
            port,
            args: vec![torrent.into(), save.into()],
        }
    }

    /// A leecher of `magnet` saving into `save`, on `port`.
    pub fn leech(port: u16, magnet: &str, save: &Path) -> LtDhtPeer {
        LtDhtPeer {
            role: "leech",
            port,
            args: vec![magnet.into(), save.into()],
        }
    }

    fn opt(mut self, name: &str, value: Option<String>) -> LtDhtPeer {
        self.args.push(name.into());
        self.args.extend(value.map(OsString::from));
        self
    }

    /// `--router R`: the DHT on, bootstrapping from 127.0.0.1:`r`.
    pub fn dht_router(self, r: u16) -> LtDhtPeer {
        self.opt("--router", Some(r.to_string()))
    }

    /// `--connect P`: also connect to 127.0.0.1:`p`.
    pub fn connect(self, p: u16) -> LtDhtPeer {
        self.opt("--connect", Some(p.to_string()))
    }

    /// `--report-peers`: `PEER ip:port` for each peer connected.
    pub fn report_peers(self) -> LtDhtPeer {
        self.opt("--report-peers", None)
    }

    /// `--upload-limit B` (bytes/s).
    pub fn upload_limit(self, b: u32) -> LtDhtPeer {
        self.opt("--upload-limit", Some(b.to_string()))
    }

    /// `--download-limit B` (bytes/s).
    pub fn download_limit(self, b: u32) -> LtDhtPeer {
        self.opt("--download-limit", Some(b.to_string()))
    }

    /// `--linger`: a leecher keeps seeding once done.
    pub fn linger(self) -> LtDhtPeer {
        self.opt("--linger", None)
    }

    /// `--no-pex`.
    pub fn no_pex(self) -> LtDhtPeer {
        self.opt("--no-pex", None)
    }

    /// `--max-seconds N`: gives up or stops after `n` s.
    pub fn max_seconds(self, n: u32) -> LtDhtPeer {
        self.opt("--max-seconds", Some(n.to_string()))
    }

    /// Started with `py` (lines labelled `lt-ROLE`); returned once it
    /// listens (`READY`, within [`PEER_UP`]).
    pub fn start(self, py: &Path) -> Proc {
        let p = Proc::spawn(
            &format!("lt-{}", self.role),
            Command::new(py)
                .arg(repo_root().join("tests/py/lt_dht_swarm.py"))
                .arg(self.role)
                .arg(self.port.to_string())
                .args(&self.args),
        );
        p.wait_for("READY", PEER_UP);
        p
    }
}

/// A libtorrent leecher (`tests/py/lt_swarm.py leech`) of `torrent` into
/// `save` (made here), on a free port, with `--connect 127.0.0.1:CONNECT`
/// and then `opts`, run to its end within `timeout` (killed and the test
/// failed after that); returns (success, stdout, stderr).
pub fn lt_leech_from(
    py: &Path,
    torrent: &Path,
    save: &Path,
    connect: u16,
    opts: &[&str],
    timeout: Duration,
) -> (bool, String, String) {
    std::fs::create_dir_all(save).expect("mkdir the leecher's folder");
    run_bounded(
        lt_swarm(py, "leech", torrent, save, free_tcp_port())
            .args(["--connect", &format!("127.0.0.1:{connect}")])
            .args(opts),
        timeout,
    )
}

/// BEP 5 on loopback: a libtorrent DHT router and a libtorrent seeder of a
/// torrent announcing to it, each for at most 90 s on free TCP+UDP ports
/// (killed on drop). Bootstrap from 127.0.0.1:`router_port`.
pub struct LtDhtSwarm {
    pub router_port: u16,
    pub router: Proc,
    pub seed: Proc,
}

impl LtDhtSwarm {
    /// The router, then the seeder of `torrent` (data in `save`), each
    /// returned once it listens.
    pub fn start(py: &Path, torrent: &Path, save: &Path) -> LtDhtSwarm {
        let router_port = free_tcp_udp_port();
        let router = LtDhtPeer::router(router_port).max_seconds(90).start(py);
        let seed = LtDhtPeer::seed(free_tcp_udp_port(), torrent, save)
            .dht_router(router_port)
            .max_seconds(90)
            .start(py);
        LtDhtSwarm {
            router_port,
            router,
            seed,
        }
    }
}

/// A libtorrent test's start: Debian's python3 with python3-libtorrent
/// ([`crate::require_libtorrent`]) and a fresh temp dir (removed on
/// drop); `None` when libtorrent is missing (the test returns; under
/// `CI=true` it has failed).
pub fn lt_and_tempdir() -> Option<(PathBuf, tempfile::TempDir)> {
    let py = crate::require_libtorrent()?;
    let d = tempfile::tempdir().expect("temp dir");
    Some((py, d))
}
