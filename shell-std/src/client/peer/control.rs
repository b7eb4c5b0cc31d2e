//! Step 3: under the shared lock, the torrent applies its commands for
//! this peer (cancels, the choker's decision, haves of pieces verified
//! since) and the session writes its control messages and our requests.

use std::sync::atomic::Ordering::Relaxed;

use ourtorrent_core::time::Instant;

use super::{closed, Conn, End, OUT_HIGH_WATER};

impl Conn<'_> {
    /// Returns when the session wants to be called again.
    pub(super) fn control(&mut self, now: Instant) -> Result<Instant, End> {
        let key = self.key;
        let mut g = self.ctx.lock();
        let g = &mut *g;
        if g.is_killed(key) || g.torrent.should_close(key) {
            return Err(closed("banned"));
        }
        if self.ctx.is_stopped() {
            return Err(closed("torrent stopped"));
        }
        g.torrent.uploaded(key, std::mem::take(&mut self.up_acc));
        let was_choking = self.session.am_choking();
        if self.out.len() - self.out_pos < OUT_HIGH_WATER {
            let n = g
                .torrent
                .poll_transmit(now, &mut self.session, &mut self.tmp);
            self.out.extend_from_slice(&self.tmp[..n]);
        }
        self.send_pex(now, g);
        g.wake();
        if was_choking != self.session.am_choking() {
            // The test of the choker reads these lines.
            let opt = g.torrent.choker().optimistic() == Some(key);
            tracing::debug!(
                target: "ourtorrent::choke",
                "{} {} (interested {}{})",
                if was_choking { "unchoke" } else { "choke" },
                self.addr,
                self.session.peer_interested(),
                if opt { ", optimistic" } else { "" }
            );
        }
        if self.session.am_choking() {
            // Requests queued before the choke: BEP 6 rejects each (as many
            // as the control queue takes now, the rest on the next rounds),
            // BEP 3 drops them.
            let mut queued = self.reqs.on_choke();
            while let Some(r) = queued.peek() {
                if self.session.reject(r).is_err() {
                    break;
                }
                queued.next();
            }
        }
        while self.session.poll_event().is_some() {}
        let is_seed = self.session.peer_has().is_complete();
        if is_seed != self.seed {
            self.seed = is_seed;
            if is_seed {
                self.ctx.stats.seeds.fetch_add(1, Relaxed);
            } else {
                self.ctx.stats.seeds.fetch_sub(1, Relaxed);
            }
        }
        if g.torrent.is_complete() && is_seed {
            return Err(closed("both complete"));
        }
        let deadline = self.session.poll_timeout(g.torrent.picker());
        self.session
            .handle_timeout(now, g.torrent.picker())
            .map_err(closed)?;
        Ok(deadline)
    }
}
