//! Step 2: received blocks go to disk with positional writes straight from
//! the read buffer, and are hashed there, on a blocking thread while the
//! task reads the next batch into a second buffer. One batch in flight per
//! peer, so its writes stay in order; a piece is verified once all its
//! blocks, from every peer, are on disk (`Shared::unwritten`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use ourtorrent_core::pieces::BlockRequest;

use super::{closed, End};
use crate::client::swarm::Ctx;

/// A received block to store: its piece, its offset in the piece, and
/// where its bytes sit in the read buffer.
#[derive(Clone, Copy)]
pub(crate) struct BlockWrite {
    pub(crate) index: u32,
    pub(crate) begin: u32,
    start: usize,
    len: usize,
}

/// The read buffer the blocks sit in, handed back with the (emptied)
/// write list and the outcome.
type Written = (Vec<u8>, Vec<BlockWrite>, std::io::Result<()>);

/// One peer's writer: the blocks of the current read buffer, and the batch
/// on its way to disk.
#[derive(Default)]
pub(super) struct Writer {
    writes: Vec<BlockWrite>,
    pending: Option<tokio::task::JoinHandle<Written>>,
    /// The second read buffer, before the first batch.
    spare: Option<Vec<u8>>,
    spare_writes: Vec<BlockWrite>,
}

impl Writer {
    /// A block at `rbuf[start..start + len]` to store.
    pub(super) fn queue(&mut self, r: BlockRequest, start: usize, len: usize) {
        self.writes.push(BlockWrite {
            index: r.index,
            begin: r.begin,
            start,
            len,
        });
    }

    /// Hands the blocks of `rbuf[..pos]` to a blocking thread and gives the
    /// task the other buffer with the unparsed rest `rbuf[pos..filled]`.
    /// Waits for the previous batch first; its write error (a full disk…)
    /// fails the torrent and ends the connection, after this batch was
    /// handed over (its blocks are counted as pending: they must reach
    /// the disk or be abandoned).
    pub(super) async fn submit(
        &mut self,
        ctx: &Arc<Ctx>,
        rbuf: &mut Vec<u8>,
        filled: &mut usize,
        pos: usize,
    ) -> Result<(), End> {
        if self.writes.is_empty() {
            rbuf.copy_within(pos..*filled, 0);
            *filled -= pos;
            return Ok(());
        }
        let mut err = None;
        let mut next = match self.pending.take() {
            Some(h) => match h.await {
                Ok((buf, w, res)) => {
                    self.spare_writes = w;
                    if let Err(e) = res {
                        // A disk that fails (full, gone, read-only) fails
                        // the torrent, not just this peer.
                        ctx.fail(format!("write {e}"));
                        err = Some(closed(e));
                    }
                    buf
                }
                Err(e) => return Err(closed(e)),
            },
            None => self.spare.take().unwrap_or_else(|| vec![0u8; rbuf.len()]),
        };
        next[..*filled - pos].copy_from_slice(&rbuf[pos..*filled]);
        let full = std::mem::replace(rbuf, next);
        *filled -= pos;
        let batch = std::mem::replace(&mut self.writes, std::mem::take(&mut self.spare_writes));
        for w in &batch {
            ctx.stats.downloaded.fetch_add(w.len as u64, Relaxed);
        }
        let c = ctx.clone();
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let mut res = Ok(());
            let mut n = 0;
            for w in &batch {
                let data = &full[w.start..w.start + w.len];
                let off = u64::from(w.index) * c.info.piece_len + u64::from(w.begin);
                if let Err(e) = c.storage.write_at(off, data) {
                    res = Err(e);
                    break;
                }
                // SHA-1 here, overlapped with the task reading the next
                // batch, not under the shared lock.
                c.hashes.written(w.index, w.begin, data);
                n += 1;
            }
            for index in c.written(&batch, n) {
                if let Err(e) = c.verify_piece(index) {
                    tracing::error!(index, "verify: {e}");
                }
            }
            let mut batch = batch;
            batch.clear();
            (full, batch, res)
        }));
        err.map_or(Ok(()), Err)
    }
}
