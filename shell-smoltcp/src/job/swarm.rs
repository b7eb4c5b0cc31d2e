//! The job's loop: one round polls the tracker, opens connection slots,
//! steps every connection through the torrent, runs the torrent's timers
//! when due, and decides whether the run is over.
//!
//! Slots: while pieces are missing an idle slot connects to the next
//! tracker peer, else (one at a time) listens on [`PEER_PORT`] so a peer
//! can fetch the pieces we have. Once complete, a connection with another
//! seed closes (nothing to trade); seeding lasts `seed_ms`, or until a
//! leecher has every piece; then each connection is flushed and closed.

use core::fmt::{self, Write};

use ourtorrent_core::time::Instant;
use ourtorrent_core::tracker::AnnounceEvent;
use smoltcp::phy::Device;

use super::announce::{Answered, Candidates, Tracker};
use super::conn::{Closed, Conn, JobTorrent, Phase, Shared};
use super::{totals, JobError, Report, MAX_PEERS};
use crate::config::{Remote, PEER_PORT};
use crate::error::Error;
use crate::stack::{Clock, Stack};
use crate::tcp::{TcpBuffers, TcpStream};

/// A peer as the log names it.
struct Who(u16);

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("inbound"),
            port => write!(f, "10.0.2.2:{port}"),
        }
    }
}

/// The job's loop state.
pub(super) struct Job<'j, 's, 'a, 'c, 'b, const RX: usize, const TX: usize> {
    conns: [Conn<'s>; MAX_PEERS],
    /// Buffers of the slots whose socket is not created yet.
    tcp: [Option<&'a mut TcpBuffers<RX, TX>>; MAX_PEERS],
    tracker: &'j mut Tracker,
    candidates: Candidates,
    torrent: &'j mut JobTorrent<'s>,
    shared: &'j mut Shared<'c, 'b>,
    dl_start: u64,
    /// When the last piece was verified.
    complete_at: Option<u64>,
    /// A leecher has every piece.
    done: bool,
    listening_logged: bool,
    /// Why the loop stopped, if it failed.
    failure: Option<JobError>,
}

impl<'j, 's, 'a, 'c, 'b, const RX: usize, const TX: usize> Job<'j, 's, 'a, 'c, 'b, RX, TX> {
    /// The loop over these slots, tracker, torrent and buffers.
    pub fn new(
        conns: [Conn<'s>; MAX_PEERS],
        tcp: [&'a mut TcpBuffers<RX, TX>; MAX_PEERS],
        tracker: &'j mut Tracker,
        torrent: &'j mut JobTorrent<'s>,
        shared: &'j mut Shared<'c, 'b>,
    ) -> Self {
        Job {
            conns,
            tcp: tcp.map(Some),
            tracker,
            candidates: Candidates::default(),
            torrent,
            shared,
            dl_start: 0,
            complete_at: None,
            done: false,
            listening_logged: false,
            failure: None,
        }
    }

    /// When the last piece was verified, if it was.
    pub fn complete_at(&self) -> Option<u64> {
        self.complete_at
    }

    /// Runs rounds until the job is over, it fails, or `deadline` passes.
    pub fn drive<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'a, D, C>,
        deadline: u64,
        log: &mut impl Write,
    ) -> Result<Report, JobError> {
        // A failed round stores its error and ends the loop (block_until
        // carries only driver errors); anything else ending it is the
        // deadline.
        let r = stack.block_until(deadline, |stack, now| match self.round(stack, now, log) {
            Ok(true) => Ok(()),
            Ok(false) => Err(nb::Error::WouldBlock),
            Err(e) => {
                self.failure = Some(e);
                Err(nb::Error::Other(Error::InvalidState))
            }
        });
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        let report = self.shared.report;
        match r {
            Ok(()) => Ok(report),
            Err(_) if !self.tracker.started() => Err(self.tracker.failure(AnnounceEvent::Started)),
            Err(_) if self.complete_at.is_none() => Err(JobError::Deadline {
                verified: report.verified,
            }),
            // Seeding was cut by the deadline: the download is done (the
            // caller checks that `completed` got through).
            Err(_) => Ok(report),
        }
    }

    /// One round; `Ok(true)` when the job is over.
    fn round<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'a, D, C>,
        now: u64,
        log: &mut impl Write,
    ) -> Result<bool, JobError> {
        let (torrent, report) = (&*self.torrent, &self.shared.report);
        let answered = self.tracker.poll(
            stack,
            now,
            || totals(torrent, report),
            &mut self.candidates,
            log,
        )?;
        if let Some(Answered {
            event: AnnounceEvent::Started,
            peers,
        }) = answered
        {
            self.shared.report.tracker_peers = peers;
            self.dl_start = now;
        }
        // The peers come from the tracker's answer to `started`.
        if !self.tracker.started() {
            return Ok(false);
        }
        let finishing = self.finishing(now);
        if !finishing {
            self.open_slots(stack, now, log)?;
        }
        for i in 0..MAX_PEERS {
            self.step_conn(stack, now, i, finishing, log);
        }
        let t = Instant::from_millis(now);
        if self.torrent.poll_timeout().is_some_and(|w| w <= t) {
            self.torrent.handle_timeout(t);
        }
        // Every connection is stepped each round: a woken one needs
        // nothing more.
        while self.torrent.poll_wake().is_some() {}
        let complete = self.torrent.is_complete();
        if complete && self.complete_at.is_none() {
            self.completed(now, log);
        }
        if finishing && self.conns.iter().all(|c| c.phase == Phase::Idle) {
            return Ok(true);
        }
        let connected = self
            .conns
            .iter()
            .any(|c| matches!(c.phase, Phase::Opening | Phase::Running));
        if !complete && !connected && self.candidates.exhausted() {
            let r = &self.shared.report;
            return Err(JobError::NoPeers {
                verified: r.verified,
                rejected: r.rejected,
            });
        }
        Ok(false)
    }

    /// Complete, `completed` not in flight (answered, or failed and left
    /// to the schedule's last try when the job ends), and seeding over.
    fn finishing(&self, now: u64) -> bool {
        let Some(at) = self.complete_at else {
            return false;
        };
        let seed_ms = u64::from(self.shared.cfg.seed_ms);
        !self.tracker.completing() && (seed_ms == 0 || self.done || now >= at + seed_ms)
    }

    /// The last piece was verified at `now`: report; `completed` is owed.
    fn completed(&mut self, now: u64, log: &mut impl Write) {
        self.complete_at = Some(now);
        let r = &mut self.shared.report;
        let total = self.torrent.picker().geometry().total_len();
        r.download_ms = now.saturating_sub(self.dl_start);
        r.bytes = total;
        r.ready_to_boot = true;
        let _ = writeln!(
            log,
            "download: ok bytes={} pieces={} verified={} rejected={} peers={} ms={} kib_per_s={}",
            total,
            self.torrent.picker().geometry().piece_count(),
            r.verified,
            r.rejected,
            r.peers_used,
            r.download_ms,
            total * 1000 / 1024 / r.download_ms.max(1)
        );
        let _ = writeln!(
            log,
            "image: ready_to_boot=1 bytes={total} resumed={} flash_errors={}",
            r.resumed, r.flash_errors
        );
        self.tracker.set_complete(now);
    }

    /// Gives idle slots work: the next tracker peer while pieces are
    /// missing, else one listener for peers that want our pieces.
    fn open_slots<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'a, D, C>,
        now: u64,
        log: &mut impl Write,
    ) -> Result<(), JobError> {
        let complete = self.torrent.is_complete();
        let serve = !complete || self.shared.cfg.seed_ms > 0;
        let mut listening = self.conns.iter().any(|c| c.phase == Phase::Listening);
        for i in 0..MAX_PEERS {
            if self.conns.get(i).is_none_or(|c| c.phase != Phase::Idle) {
                continue;
            }
            // One slot is kept for a listener, so that peers (other boards)
            // can always reach us while we serve.
            let outbound = self
                .conns
                .iter()
                .filter(|c| c.port != 0 && c.phase != Phase::Idle)
                .count();
            if !complete && (outbound + 1 < MAX_PEERS || !serve) {
                let mut busy = [0u16; MAX_PEERS];
                for (b, c) in busy.iter_mut().zip(self.conns.iter()) {
                    if c.phase != Phase::Idle {
                        *b = c.port;
                    }
                }
                if let Some(port) = self.candidates.next(now, |p| busy.contains(&p)) {
                    match self.open(stack, i, port) {
                        Ok(()) => {
                            let _ = writeln!(log, "peer: connecting {}", Who(port));
                            if let Some(c) = self.conns.get_mut(i) {
                                c.start(port, now);
                            }
                        }
                        Err(e) => {
                            self.candidates.ended(port, now);
                            let _ = writeln!(log, "peer: {} not connected: {e}", Who(port));
                        }
                    }
                    continue;
                }
            }
            if serve && !listening {
                self.open(stack, i, 0)
                    .map_err(|e| JobError::Net("listen", e))?;
                if let Some(c) = self.conns.get_mut(i) {
                    c.start(0, now);
                }
                listening = true;
                if !self.listening_logged {
                    self.listening_logged = true;
                    let _ = writeln!(log, "seed: listening port={PEER_PORT}");
                }
            }
        }
        Ok(())
    }

    /// Opens slot `i`'s socket: to the gateway's `port`, or listening on
    /// [`PEER_PORT`] if `port` is 0. The socket is created on first use
    /// and reused after.
    fn open<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'a, D, C>,
        i: usize,
        port: u16,
    ) -> Result<(), Error> {
        let (Some(conn), Some(buf)) = (self.conns.get_mut(i), self.tcp.get_mut(i)) else {
            return Err(Error::NoSocketSlot);
        };
        let remote = (port != 0).then(|| Remote::gateway(port)).transpose()?;
        match (remote, conn.stream.as_mut()) {
            (Some(r), Some(s)) => s.reconnect(stack, r),
            (None, Some(s)) => s.relisten(stack, PEER_PORT),
            (r, None) => {
                let b = buf.take().ok_or(Error::NoSocketSlot)?;
                conn.stream = Some(match r {
                    Some(r) => TcpStream::connect(stack, b, r)?,
                    None => TcpStream::listen(stack, b, PEER_PORT)?,
                });
                Ok(())
            }
        }
    }

    /// Steps slot `i` and closes it if it failed, is done, or is not
    /// wanted any more.
    fn step_conn<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'a, D, C>,
        now: u64,
        i: usize,
        finishing: bool,
        log: &mut impl Write,
    ) {
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        if conn.phase == Phase::Idle {
            return;
        }
        let before = conn.phase;
        let stepped = conn.step(stack, now, self.torrent, self.shared, i, log);
        if before != Phase::Running && conn.phase == Phase::Running {
            self.shared.report.peers_used += 1;
            let _ = writeln!(log, "peer: {} handshake ok", Who(conn.port));
        }
        let r = stepped.and_then(|()| self.check_peer(stack, now, i, finishing, log));
        let Some(conn) = self.conns.get_mut(i) else {
            return;
        };
        let why = match r {
            Ok(false) => return,
            Ok(true) => {
                if conn.port != 0 {
                    self.candidates.ended(conn.port, now);
                }
                // Flushed: a FIN, not a reset.
                conn.end(stack, now, self.torrent, self.shared, i, false);
                return;
            }
            Err(why) => why,
        };
        if conn.port != 0 {
            if why == Closed::Banned {
                self.candidates.ban(conn.port);
            } else {
                self.candidates.ended(conn.port, now);
            }
        }
        match why {
            Closed::Banned => {
                let _ = writeln!(log, "peer: {} banned: sent a bad piece", Who(conn.port));
            }
            Closed::BothSeeds => {
                let _ = writeln!(log, "seed: peer {} is a seed, closed", Who(conn.port));
            }
            Closed::JobOver => {}
            _ => {
                let _ = writeln!(log, "peer: {} closed: {why}", Who(conn.port));
            }
        }
        // A leecher that finishes may hang up before its last have
        // messages: it is complete too if it was sent every block.
        if why == Closed::Eof
            && self.torrent.is_complete()
            && conn.sent_every_piece(self.torrent)
            && !self.done
        {
            let _ = writeln!(log, "seed: leecher was sent every piece and hung up");
            self.shared.report.leecher_complete = true;
            conn.end(stack, now, self.torrent, self.shared, i, true);
            self.done = !self.others_incomplete(i);
            return;
        }
        conn.end(stack, now, self.torrent, self.shared, i, true);
    }

    /// Whether a running connection other than slot `i` has a peer that
    /// still misses pieces.
    fn others_incomplete(&self, i: usize) -> bool {
        self.conns.iter().enumerate().any(|(j, c)| {
            j != i
                && c.phase == Phase::Running
                && c.session
                    .as_ref()
                    .is_some_and(|s| !s.peer_has().is_complete())
        })
    }

    /// What the job wants of a live connection once we are complete:
    /// `Err` to close it now, `Ok(true)` once flushed to close it
    /// gracefully (the job is finishing), `Ok(false)` to go on.
    fn check_peer<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'a, D, C>,
        now: u64,
        i: usize,
        finishing: bool,
        log: &mut impl Write,
    ) -> Result<bool, Closed> {
        let others_incomplete = self.others_incomplete(i);
        let Some(conn) = self.conns.get_mut(i) else {
            return Ok(false);
        };
        if finishing && conn.phase != Phase::Running {
            // A listener or a handshake in progress: nothing owed.
            return Err(Closed::JobOver);
        }
        let peer_complete = conn
            .session
            .as_ref()
            .is_some_and(|s| s.peer_has().is_complete());
        if self.torrent.is_complete() && peer_complete {
            if conn.uploaded == 0 {
                return Err(Closed::BothSeeds);
            }
            if !self.shared.report.leecher_complete {
                let _ = writeln!(log, "seed: leecher has every piece");
                self.shared.report.leecher_complete = true;
            }
            // Seeding ends early only when no connected peer still needs
            // pieces (in a fleet, other boards may be downloading).
            self.done |= !others_incomplete;
        }
        if !finishing || !conn.drained() {
            return Ok(false);
        }
        let Some(stream) = conn.stream.as_mut() else {
            return Ok(true);
        };
        match stream.poll_flush(stack, now) {
            Ok(()) => Ok(true),
            Err(nb::Error::WouldBlock) => Ok(false),
            Err(nb::Error::Other(e)) => Err(Closed::Net(e)),
        }
    }
}
