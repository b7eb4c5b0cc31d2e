//! Step 1: whole messages in the read buffer go to the torrent (under the
//! shared lock): blocks are queued for the writer, requests for upload.

use std::net::SocketAddr;

use ourtorrent_core::peer::Handled;
use ourtorrent_core::time::Instant;
use ourtorrent_core::wire::{Frame, Status};

use super::{Conn, End};

impl Conn<'_> {
    /// Handles the messages in `rbuf[..filled]`; returns how far it got
    /// and the error that ends the connection, if any.
    pub(super) fn receive(&mut self, now: Instant) -> (usize, Option<End>) {
        let mut pos = 0usize;
        let mut err = None;
        let mut g = self.ctx.lock();
        let g = &mut *g;
        loop {
            let (msg, n) = match self.framer.parse(&self.rbuf[pos..self.filled]) {
                Ok(Status::Complete((Frame::Message(m), n))) => (m, n),
                Ok(Status::Complete(_)) => {
                    err = Some(End::Protocol("second handshake".into()));
                    break;
                }
                Ok(Status::Partial) => break,
                Err(e) => {
                    err = Some(End::Protocol(format!("wire: {e}")));
                    break;
                }
            };
            tracing::trace!(addr = %self.addr, id = ?msg.id(), "recv");
            let h = match g.torrent.handle_message(now, &mut self.session, msg) {
                Ok(h) => h,
                Err(e) => {
                    err = Some(End::Protocol(e.to_string()));
                    break;
                }
            };
            match h {
                Handled::Block {
                    request,
                    data,
                    received,
                } if !received.duplicate => {
                    let start = data.as_ptr() as usize - self.rbuf.as_ptr() as usize;
                    self.writer.queue(request, start, data.len());
                    // Verified once every block (from any peer) is on disk.
                    g.unwritten.queued(request.index, received.piece_complete);
                }
                Handled::Request(r) => {
                    // Past our advertised `reqq` a request gets a BEP 6
                    // reject; a peer that keeps asking fills the control
                    // queue with them and is dropped.
                    let refused = self.reqs.push(r).is_err() && self.session.reject(r).is_err();
                    if refused {
                        err = Some(End::Protocol("too many requests past our reqq".into()));
                        break;
                    }
                }
                Handled::Cancel(r) => {
                    self.reqs.cancel(r);
                }
                Handled::Extended { id, payload } => {
                    super::extensions::on_extended(
                        &mut self.ext,
                        &mut self.session,
                        &self.ctx.info.metadata,
                        &mut self.out,
                        now,
                        self.addr,
                        id,
                        payload,
                    );
                    // BEP 10 `p`: where an inbound peer accepts connections.
                    if let Some(p) = self.ext.their_port.take().filter(|_| self.inbound) {
                        g.set_reachable(self.key, SocketAddr::new(self.addr.ip(), p));
                    }
                }
                _ => {}
            }
            pos += n;
        }
        // End-game cancels the torrent queued for other peers.
        g.wake();
        (pos, err)
    }
}
