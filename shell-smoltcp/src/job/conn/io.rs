//! A connection's socket I/O: reading whole frames (into the slot's small
//! buffer, or the shared frame buffer for long messages, one connection at
//! a time) and writing what is owed (the torrent's messages for the
//! session first, then the blocks we upload, each from the data store).

use ourtorrent_core::time::Instant;
use ourtorrent_core::wire::{piece_header, HANDSHAKE_LEN, LEN_PREFIX, PIECE_HEADER_LEN};
use smoltcp::phy::Device;

use super::{Closed, Conn, JobTorrent, Shared, SMALL_LEN};
use crate::job::store::StoreError;

/// Bytes of a block read from flash at once to upload.
const UPLOAD_CHUNK: usize = 1024;
use crate::stack::{Clock, Stack};

impl Conn<'_> {
    /// Reads until one whole frame (handshake or message) is buffered.
    pub(super) fn read_frame<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now: u64,
        shared: &mut Shared<'_, '_>,
        me: usize,
    ) -> nb::Result<(), Closed> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(nb::Error::WouldBlock);
        };
        if self.eof {
            return Err(nb::Error::WouldBlock);
        }
        let rx = &mut self.rx;
        loop {
            if rx.need == 0 {
                (rx.need, rx.body) = if self.framer.expecting_handshake() {
                    (HANDSHAKE_LEN, true)
                } else {
                    (LEN_PREFIX, false)
                };
            }
            if rx.have == rx.need {
                if rx.body {
                    return Ok(());
                }
                // The framer reads the length prefix: the whole message is
                // this long (0 more when it will refuse it from the prefix
                // alone: then the prefix is handed to it as it is).
                let whole = rx
                    .have
                    .saturating_add(self.framer.needed(&rx.small[..rx.have]));
                if whole <= SMALL_LEN {
                    (rx.need, rx.body) = (whole, true);
                    continue;
                }
                match shared.frame_owner {
                    None => shared.frame_owner = Some(me),
                    Some(o) if o == me => {}
                    // Another connection is assembling a message: wait.
                    Some(_) => return Err(nb::Error::WouldBlock),
                }
                shared.frame[..LEN_PREFIX].copy_from_slice(&rx.small[..LEN_PREFIX]);
                (rx.need, rx.body, rx.big) = (whole, true, true);
                continue;
            }
            let buf = if rx.big {
                &mut shared.frame[rx.have..rx.need]
            } else {
                &mut rx.small[rx.have..rx.need]
            };
            match stream.poll_recv(stack, now, buf) {
                Ok(0) => {
                    self.eof = true;
                    return Err(nb::Error::WouldBlock);
                }
                Ok(n) => rx.have += n,
                Err(nb::Error::WouldBlock) => return Err(nb::Error::WouldBlock),
                Err(nb::Error::Other(e)) => return Err(nb::Error::Other(Closed::Net(e))),
            }
        }
    }

    /// Writes what is owed, in whole messages: what the torrent has for
    /// the session (control messages, haves, cancels, requests) first, as
    /// they are small and keep the download going; then the blocks we
    /// upload (header, then data from the store). A block once begun is
    /// finished before anything else.
    pub(super) fn write<D: Device, C: Clock>(
        &mut self,
        stack: &mut Stack<'_, D, C>,
        now: u64,
        torrent: &mut JobTorrent<'_>,
        shared: &mut Shared<'_, '_>,
    ) -> Result<(), Closed> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        for _ in 0..32 {
            if self.out_at < self.out_len {
                match stream.poll_send(stack, now, &self.out[self.out_at..self.out_len]) {
                    Ok(n) => self.out_at += n,
                    Err(nb::Error::WouldBlock) => return Ok(()),
                    Err(nb::Error::Other(e)) => return Err(Closed::Net(e)),
                }
                continue;
            }
            (self.out_at, self.out_len) = (0, 0);
            let Some(session) = self.session.as_mut() else {
                return Ok(());
            };
            if self.upload_at == 0 {
                self.out_len =
                    torrent.poll_transmit(Instant::from_millis(now), session, &mut self.out);
                if session.am_choking() && !self.uploads.is_empty() {
                    // Choked by the choker: what is queued is not served.
                    // BEP 6 rejects each request; BEP 3's choke discards them.
                    for &r in self.uploads.iter() {
                        session.reject(r).map_err(Closed::Peer)?;
                    }
                    self.uploads.clear();
                }
                if self.out_len > 0 {
                    continue;
                }
            }
            let Some(&r) = self.uploads.first() else {
                return Ok(());
            };
            let header = piece_header(r.index, r.begin, r.length as usize).map_err(Closed::Wire)?;
            // The block is read from flash a chunk at a time; what the
            // socket did not take is read again next time.
            let mut chunk_buf = [0u8; UPLOAD_CHUNK];
            let chunk = if self.upload_at < PIECE_HEADER_LEN {
                header.get(self.upload_at..).unwrap_or_default()
            } else {
                let done = (self.upload_at - PIECE_HEADER_LEN) as u32;
                let n = (r.length.saturating_sub(done) as usize).min(UPLOAD_CHUNK);
                let buf = chunk_buf.get_mut(..n).unwrap_or_default();
                if let Err(e) = shared
                    .store
                    .read(r.index, r.begin.saturating_add(done), buf)
                {
                    if matches!(e, StoreError::Flash(_)) {
                        shared.report.flash_errors += 1;
                    }
                    return Err(Closed::Flash(e));
                }
                buf
            };
            match stream.poll_send(stack, now, chunk) {
                Ok(n) => self.upload_at += n,
                Err(nb::Error::WouldBlock) => return Ok(()),
                Err(nb::Error::Other(e)) => return Err(Closed::Net(e)),
            }
            if self.upload_at == PIECE_HEADER_LEN + r.length as usize {
                self.uploads.remove(0);
                self.upload_at = 0;
                self.uploaded += u64::from(r.length);
                shared.report.uploaded += u64::from(r.length);
                torrent.uploaded(session.key(), u64::from(r.length));
                if let Some(n) = self.served.get_mut(r.index as usize) {
                    *n = n.saturating_add(r.length);
                }
            }
        }
        Ok(())
    }
}
