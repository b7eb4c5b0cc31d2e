//! The session: what the torrents of one process share — our peer id, one
//! TCP listener, the tracker clients, and the limit on connections of all
//! torrents at once (each torrent has its own too).
//!
//! The listener reads a peer's handshake *before* answering, routes the
//! connection by its info-hash to the torrent it names (BEP 3: the
//! receiver answers once it has seen the info-hash it serves), and only
//! then takes a peer slot of that torrent. A connection that names no
//! torrent of ours is closed without a word.
//!
//! Handshakes are read outside the peer slots, under a deadline
//! ([`HANDSHAKE_TIMEOUT`]), and the connections still waiting for theirs
//! are bounded in all ([`MAX_PENDING`]) and per address
//! ([`MAX_PENDING_PER_IP`]): when either is full the oldest waiting one
//! is dropped, so a flood of silent connections cannot keep an honest
//! peer out.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ourtorrent_core::id::{InfoHash, PeerId};
use ourtorrent_core::wire::{Frame, Framer, Handshake, Status, HANDSHAKE_LEN};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use super::announce::Trackers;
use super::peer;
use super::stats::SessionStats;
use super::swarm::Ctx;

/// Time a new connection has to send its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections waiting for their handshake, in all.
pub const MAX_PENDING: usize = 256;
/// Connections waiting for their handshake, per remote address.
pub const MAX_PENDING_PER_IP: usize = 32;

/// Connections still in their handshake, oldest first.
#[derive(Default)]
struct Pending {
    next: u64,
    list: VecDeque<(u64, IpAddr, AbortHandle)>,
    /// Dropped to make room (a flood, or a slow peer).
    evicted: u64,
}

impl Pending {
    /// Makes room for one more from `ip`: drops that address's oldest
    /// when it holds its share, else the oldest of all when full.
    fn make_room(&mut self, ip: IpAddr) {
        let from_ip = self.list.iter().filter(|(_, a, _)| *a == ip).count();
        let victim = if from_ip >= MAX_PENDING_PER_IP {
            self.list.iter().position(|(_, a, _)| *a == ip)
        } else if self.list.len() >= MAX_PENDING {
            Some(0)
        } else {
            None
        };
        if let Some(i) = victim {
            if let Some((_, _, h)) = self.list.remove(i) {
                h.abort();
                self.evicted += 1;
            }
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(i) = self.list.iter().position(|(x, _, _)| *x == id) {
            self.list.remove(i);
        }
    }
}

/// The torrents of one process and what they share.
pub struct Session {
    /// Our peer id (one for every torrent, as other clients do).
    pub peer_id: PeerId,
    /// Where the listener is bound.
    pub listen: SocketAddr,
    /// The tracker clients every torrent announces through.
    pub trackers: Trackers,
    /// Connections of all torrents at once.
    pub conns: Arc<Semaphore>,
    /// Rate limits of every torrent together (`super::rate`).
    pub limits: Arc<super::rate::Limiter>,
    torrents: Mutex<HashMap<InfoHash, Arc<Ctx>>>,
    pending: Mutex<Pending>,
}

impl Session {
    /// A session listening on `listen`. An explicit port that is busy is
    /// an error naming it; port 0 picks a free one.
    pub async fn bind(
        listen: SocketAddr,
        peer_id: PeerId,
        max_connections: usize,
    ) -> anyhow::Result<(Arc<Session>, TcpListener)> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("listen on {listen}: {e}"))?;
        let listen = listener.local_addr()?;
        let s = Arc::new(Session {
            peer_id,
            listen,
            trackers: Trackers::default(),
            conns: Arc::new(Semaphore::new(max_connections)),
            limits: Arc::default(),
            torrents: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending::default()),
        });
        Ok((s, listener))
    }

    /// Routes inbound connections for this torrent to it.
    pub fn add(&self, ctx: Arc<Ctx>) -> anyhow::Result<()> {
        let mut t = self.torrents.lock().unwrap_or_else(|e| e.into_inner());
        if t.contains_key(&ctx.info.info_hash) {
            anyhow::bail!("{} is given twice", ctx.info.info_hash);
        }
        ctx.limits.attach(self.limits.clone());
        t.insert(ctx.info.info_hash, ctx);
        Ok(())
    }

    /// Sets the session's rate limits, every torrent together, in bytes/s
    /// (0: unlimited); in force at once. Each torrent may have its own
    /// too ([`Ctx::set_rate_limits`]): the smaller applies.
    pub fn set_rate_limits(&self, down: u64, up: u64) {
        self.limits.set(down, up);
    }

    /// Stops routing inbound connections to this torrent.
    pub fn remove(&self, ih: &InfoHash) -> Option<Arc<Ctx>> {
        self.torrents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(ih)
    }

    /// The torrent with this info-hash, if we have it.
    pub fn torrent(&self, ih: &InfoHash) -> Option<Arc<Ctx>> {
        self.torrents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(ih)
            .cloned()
    }

    /// The session now, for the front ends.
    pub fn snapshot(&self) -> SessionStats {
        let torrents: Vec<_> = self
            .torrents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        SessionStats {
            listen: self.listen,
            torrents: torrents.iter().map(|t| t.snapshot()).collect(),
            evicted_handshakes: self.evicted(),
        }
    }

    /// Connections dropped while waiting for their handshake.
    pub fn evicted(&self) -> u64 {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .evicted
    }

    /// Accepts connections for as long as the session runs.
    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, addr)) = listener.accept().await else {
                // Out of file descriptors or similar: back off a little.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.make_room(addr.ip());
            let id = p.next;
            p.next += 1;
            let me = self.clone();
            let task = tokio::spawn(async move {
                let routed = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_handshake(&stream)).await;
                me.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
                let (theirs, rest) = match routed {
                    Ok(Ok(h)) => h,
                    Ok(Err(e)) => return tracing::debug!(%addr, "inbound: {e}"),
                    Err(_) => return tracing::debug!(%addr, "inbound: handshake timeout"),
                };
                let Some(ctx) = me.torrent(&theirs.info_hash) else {
                    return tracing::debug!(%addr, ih = %theirs.info_hash, "inbound: not our torrent");
                };
                if ctx.is_banned(&addr) {
                    return;
                }
                let (Ok(local), Ok(global)) = (
                    ctx.conns.clone().try_acquire_owned(),
                    me.conns.clone().try_acquire_owned(),
                ) else {
                    return tracing::debug!(%addr, "inbound: at the connection limit");
                };
                peer::peer_task(ctx, stream, addr, (local, global), Some((theirs, rest))).await;
            });
            p.list.push_back((id, addr.ip(), task.abort_handle()));
        }
    }
}

/// Reads a peer's handshake (BEP 3: 68 bytes) and whatever followed it in
/// the same reads.
async fn read_handshake(stream: &TcpStream) -> anyhow::Result<(Handshake, Vec<u8>)> {
    let mut framer = Framer::with_handshake(HANDSHAKE_LEN);
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    loop {
        match framer.parse(&buf[..filled]) {
            Ok(Status::Complete((Frame::Handshake(h), n))) => {
                return Ok((h, buf[n..filled].to_vec()));
            }
            Ok(Status::Complete(_)) => anyhow::bail!("no handshake"),
            Ok(Status::Partial) => {}
            Err(e) => anyhow::bail!("handshake: {e}"),
        }
        if filled == buf.len() {
            anyhow::bail!("handshake too long");
        }
        stream.readable().await?;
        match stream.try_read(&mut buf[filled..]) {
            Ok(0) => anyhow::bail!("closed during the handshake"),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pending_task() -> AbortHandle {
        tokio::spawn(std::future::pending::<()>()).abort_handle()
    }

    #[tokio::test]
    async fn a_full_table_drops_the_oldest_and_an_address_its_own_oldest() {
        let mut p = Pending::default();
        let ip = |i: u8| IpAddr::from([127, 0, 0, i]);
        // One address fills its share: each newcomer drops its oldest.
        for id in 0..MAX_PENDING_PER_IP as u64 + 3 {
            p.make_room(ip(1));
            p.list.push_back((id, ip(1), pending_task().await));
        }
        assert_eq!(p.list.len(), MAX_PENDING_PER_IP);
        assert_eq!(p.evicted, 3);
        assert_eq!(p.list.front().map(|x| x.0), Some(3));
        // Other addresses get in up to the total ...
        let mut id = 1000;
        for a in 2..=(MAX_PENDING / MAX_PENDING_PER_IP) as u8 {
            for _ in 0..MAX_PENDING_PER_IP {
                p.make_room(ip(a));
                p.list.push_back((id, ip(a), pending_task().await));
                id += 1;
            }
        }
        assert_eq!(p.list.len(), MAX_PENDING);
        assert_eq!(p.evicted, 3);
        // ... then a newcomer drops the oldest of all.
        p.make_room(ip(200));
        assert_eq!(p.list.len(), MAX_PENDING - 1);
        assert_eq!(p.evicted, 4);
        assert_eq!(p.list.front().map(|x| x.0), Some(4));
        p.remove(4);
        assert!(p.list.iter().all(|x| x.0 != 4));
    }
}
