//! Step 4: requested blocks are read from disk straight into the output
//! (header, then data), and served while the socket takes everything, up
//! to [`SERVE_BUDGET`] per wake-up so reads and timers are not starved,
//! and while the upload rate limits have tokens (`crate::client::rate`).

use std::sync::atomic::Ordering::Relaxed;

use ourtorrent_core::wire::{piece_header, PIECE_HEADER_LEN};

use super::{flush, Conn, End, OUT_HIGH_WATER, SERVE_BUDGET};
use crate::client::rate::Dir;

impl Conn<'_> {
    pub(super) fn serve(&mut self) -> Result<(), End> {
        let mut budget = SERVE_BUDGET;
        let mut read_failed = false;
        let mut throttled = false;
        loop {
            while self.out.len() - self.out_pos < OUT_HIGH_WATER
                && budget > 0
                && !self.session.am_choking()
            {
                if self.ctx.limits.available(Dir::Up) == 0 {
                    throttled = true;
                    break;
                }
                let Some(r) = self.reqs.pop() else {
                    break;
                };
                let Ok(hdr) = piece_header(r.index, r.begin, r.length as usize) else {
                    continue;
                };
                let at = self.out.len();
                self.out.extend_from_slice(&hdr);
                self.out
                    .resize(at + PIECE_HEADER_LEN + r.length as usize, 0);
                let off = u64::from(r.index) * self.ctx.info.piece_len + u64::from(r.begin);
                if let Err(e) = self
                    .ctx
                    .storage
                    .read_at(off, &mut self.out[at + PIECE_HEADER_LEN..])
                {
                    tracing::error!("read: {e}");
                    self.out.truncate(at);
                    read_failed = true;
                    break;
                }
                budget = budget.saturating_sub(r.length as usize);
                self.ctx.limits.take(Dir::Up, u64::from(r.length));
                self.up_acc += u64::from(r.length);
                self.ctx
                    .stats
                    .uploaded
                    .fetch_add(u64::from(r.length), Relaxed);
            }
            let sent = flush(self.stream, &self.out, &mut self.out_pos);
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
            } else if self.out_pos > OUT_HIGH_WATER {
                self.out.drain(..self.out_pos);
                self.out_pos = 0;
            }
            sent?;
            // Stop when the socket is full (wait for writable), nothing is
            // left, the budget is spent (the loop comes straight back: the
            // socket is still writable) or on an error.
            if read_failed
                || throttled
                || !self.out.is_empty()
                || self.reqs.is_empty()
                || budget == 0
            {
                return Ok(());
            }
        }
    }
}
