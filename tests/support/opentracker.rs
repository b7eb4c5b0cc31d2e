//! opentracker for tests: one process on 127.0.0.1 with a whitelist
//! (Debian builds it with `WANT_ACCESSLIST_WHITE`: it tracks only the
//! listed info-hashes), killed on drop. Check for it first with
//! [`crate::require_tool`]`("opentracker")`.

use std::path::Path;
use std::process::Command;

use crate::bep15::wait_for_udp_tracker;
use crate::Proc;

/// A running opentracker, killed on drop.
pub struct Opentracker {
    /// The process (its stdout lines).
    pub proc: Proc,
    /// Its UDP port on 127.0.0.1.
    pub udp_port: u16,
}

impl Opentracker {
    /// Writes `dir/opentracker.conf` (UDP on `udp_port`, TCP on `tcp_port`,
    /// one UDP worker, `whitelist`: one hex info-hash a line) and starts
    /// opentracker in `dir`; returns once it answers a BEP 15 connect.
    pub fn start(dir: &Path, whitelist: &Path, udp_port: u16, tcp_port: u16) -> Opentracker {
        std::fs::write(
            dir.join("opentracker.conf"),
            format!(
                "listen.udp 127.0.0.1:{udp_port}\nlisten.tcp 127.0.0.1:{tcp_port}\n\
                 listen.udp.workers 1\naccess.whitelist {}\n",
                whitelist.display()
            ),
        )
        .expect("write opentracker.conf");
        let proc = Proc::spawn(
            "opentracker",
            Command::new("opentracker")
                .args(["-f", "opentracker.conf"])
                .current_dir(dir),
        );
        wait_for_udp_tracker(udp_port);
        Opentracker { proc, udp_port }
    }
}
