//! The session's DHT (BEP 5): one node per client session, on a UDP
//! socket bound to the same address and port as the TCP listener (as
//! libtorrent does), run by the same driver as `shell-std dht`
//! ([`crate::dht::drive`]).
//!
//! - Bootstrap: `--dht-bootstrap HOST:PORT` (repeatable) replaces
//!   [`DEFAULT_ROUTERS`]; names resolve in the background and a name that
//!   does not resolve costs nothing but a debug line (default routers) or a
//!   warning (given ones).
//! - The routing table is saved on exit and loaded on start: `--dht-state
//!   FILE`, by default [`DHT_STATE_FILE`] in the output folder (`download`)
//!   or beside the first `--data` (`seed`).
//! - Each live torrent that is not private (BEP 27) runs [`torrent_loop`]:
//!   an announce lookup at once (get_peers, feeding the address book as
//!   [`Source::Dht`], then announce_peer of our port), retried after
//!   [`RETRY_MIN`] doubling to [`RETRY_MAX`] while the node knows nobody or
//!   nobody took the announce, then every [`REANNOUNCE`]. A magnet's
//!   metadata phase runs [`feed`] (get_peers only).
//!
//! `--no-dht`: no socket, no lookups. IPv4 only (as the core's node).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ourtorrent_core::id::InfoHash;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::peers::Source;
use super::swarm::Ctx;
use crate::dht::{drive, Cmd, Found, NodeSetup};

/// Bootstrap routers used unless `--dht-bootstrap` is given.
pub const DEFAULT_ROUTERS: [&str; 3] = [
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
];
/// The routing table's file name in the output folder (or beside the data).
pub const DHT_STATE_FILE: &str = ".ourtorrent-dht.state";
/// First wait before a lookup that found nobody (or announced nowhere) is
/// tried again.
pub const RETRY_MIN: Duration = Duration::from_secs(2);
/// Longest wait between such retries.
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// A torrent announces itself again this often (stored peers expire after
/// 30 min in most nodes, ours included).
pub const REANNOUNCE: Duration = Duration::from_secs(15 * 60);
/// A metadata phase asks again this often once it found peers.
pub const META_LOOKUP_EVERY: Duration = Duration::from_secs(30);
/// Events one lookup can report: one per reply (the core sends at most
/// `Config::max_lookup_messages`, 64, queries per lookup), plus its end.
const LOOKUP_EVENTS: usize = 128;
/// Time the node has to save its table when the session ends.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A running session node.
pub struct SessionDht {
    cmds: mpsc::Sender<Cmd>,
    task: Mutex<Option<tokio::task::JoinHandle<anyhow::Result<()>>>>,
    /// Where the UDP socket is bound.
    pub addr: SocketAddr,
}

impl SessionDht {
    /// Binds UDP on `listen` (the TCP listener's address and port) and
    /// starts the node; `None`, with a warning, when the port is taken or
    /// the address is IPv6.
    pub async fn start(listen: SocketAddr, routers: &[String], state: PathBuf) -> Option<Self> {
        if listen.is_ipv6() {
            tracing::warn!(%listen, "DHT: IPv4 only; not started");
            return None;
        }
        let sock = match UdpSocket::bind(listen).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%listen, "DHT: bind udp: {e}; not started");
                return None;
            }
        };
        let addr = sock.local_addr().ok()?;
        let quiet = routers.is_empty();
        let routers = if quiet {
            DEFAULT_ROUTERS.iter().map(|s| s.to_string()).collect()
        } else {
            routers.to_vec()
        };
        let (tx, rx) = mpsc::channel(64);
        let setup = NodeSetup {
            state,
            routers,
            quiet_routers: quiet,
            standalone: false,
        };
        let task = tokio::spawn(drive(sock, setup, rx));
        tracing::info!(%addr, "DHT node started");
        Some(SessionDht {
            cmds: tx,
            task: Mutex::new(Some(task)),
            addr,
        })
    }

    /// One lookup of `info_hash` (announcing `announce` if given); peers
    /// go to `on_peers` as they come. Returns (peers, announces) at its
    /// end, `None` if the node is gone.
    pub async fn lookup(
        &self,
        info_hash: InfoHash,
        announce: Option<u16>,
        mut on_peers: impl FnMut(Vec<SocketAddr>),
    ) -> Option<(u32, u16)> {
        // Room for every event of one lookup (one per reply, at most the
        // core's message budget) and its end: the driver never blocks on
        // us, and never has to drop the `Done`.
        let (tx, mut rx) = mpsc::channel(LOOKUP_EVENTS);
        self.cmds
            .send(Cmd::Lookup {
                info_hash,
                announce,
                reply: tx,
            })
            .await
            .ok()?;
        loop {
            match rx.recv().await? {
                Found::Peers(p) => on_peers(p),
                Found::Done { peers, announced } => return Some((peers, announced)),
            }
        }
    }

    /// Saves the table and ends the node (bounded by [`STOP_TIMEOUT`]).
    pub async fn stop(&self) {
        let _ = self.cmds.send(Cmd::Stop).await;
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            match tokio::time::timeout(STOP_TIMEOUT, t).await {
                Ok(Ok(Err(e))) => tracing::warn!("DHT: {e:#}"),
                Err(_) => tracing::warn!("DHT: the table was not saved in time"),
                _ => {}
            }
        }
    }
}

/// The next wait after a lookup: `done` says it did its job.
fn next_wait(done: bool, retry: &mut Duration, every: Duration) -> Duration {
    if done {
        *retry = RETRY_MIN;
        every
    } else {
        let w = *retry;
        *retry = (*retry * 2).min(RETRY_MAX);
        w
    }
}

/// A live torrent's DHT duty: find peers and announce our port (see the
/// module docs), until the torrent stops.
pub async fn torrent_loop(dht: Arc<SessionDht>, ctx: Arc<Ctx>, port: u16) {
    let mut retry = RETRY_MIN;
    loop {
        let c = ctx.clone();
        let r = tokio::select! {
            r = dht.lookup(ctx.info.info_hash, Some(port), move |p| c.learn(&p, Source::Dht)) => r,
            _ = ctx.stopped() => return,
        };
        let Some((_, announced)) = r else { return };
        let wait = next_wait(announced > 0, &mut retry, REANNOUNCE);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.stopped() => return,
        }
    }
}

/// A magnet's metadata phase: get_peers lookups of `info_hash`, the peers
/// sent on `tx`, until its receiver is gone.
pub async fn feed(
    dht: Arc<SessionDht>,
    info_hash: InfoHash,
    tx: mpsc::Sender<(Vec<SocketAddr>, Source)>,
) {
    let mut retry = RETRY_MIN;
    while !tx.is_closed() {
        let t = tx.clone();
        let r = dht
            .lookup(info_hash, None, move |p| {
                let _ = t.try_send((p, Source::Dht));
            })
            .await;
        let Some((peers, _)) = r else { return };
        let wait = next_wait(peers > 0, &mut retry, META_LOOKUP_EVERY);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookups_events_fit_its_reply_channel() {
        let budget = ourtorrent_core::dht::Config::default().max_lookup_messages;
        assert!(LOOKUP_EVENTS > usize::from(budget));
    }

    #[test]
    fn retries_double_to_their_cap_and_reset_on_success() {
        let mut r = RETRY_MIN;
        let waits: Vec<u64> = (0..8)
            .map(|_| next_wait(false, &mut r, REANNOUNCE).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(next_wait(true, &mut r, REANNOUNCE), REANNOUNCE);
        assert_eq!(next_wait(false, &mut r, REANNOUNCE), RETRY_MIN);
    }
}
