//! What a connection does with each frame it reads: the peer's handshake
//! opens the [`PeerSession`] (BEP 6 if both sides set the bit) and sends
//! our BEP 10 extension handshake; each message goes through
//! [`Torrent::handle_message`](ourtorrent_core::torrent::Torrent::handle_message),
//! and what it returns is acted on here: blocks stored and complete pieces
//! verified, requests queued for upload (or rejected), cancels, the peer's
//! `reqq`.

use core::fmt::Write;

use ourtorrent_core::peer::{Handled, PeerConfig, PeerError, PeerSession};
use ourtorrent_core::pieces::PiecesError;
use ourtorrent_core::time::Instant;
use ourtorrent_core::torrent::{PieceOutcome, TorrentError};
use ourtorrent_core::wire::{
    ExtensionHandshake, Frame, Handshake, Message, Refused, Reserved, Status, WireError,
};

use super::{our_reserved, Closed, Conn, JobTorrent, Phase, Shared, CLIENT_NAME, UPLOAD_QUEUE};
use crate::job::{PIPELINE, REQUEST_TIMEOUT_MS};

impl Conn<'_> {
    /// Parses the buffered frame and acts on it.
    pub(super) fn handle_frame(
        &mut self,
        now: u64,
        torrent: &mut JobTorrent<'_>,
        shared: &mut Shared<'_, '_>,
        me: usize,
        log: &mut impl Write,
    ) -> Result<(), Closed> {
        let big = self.rx.big;
        let len = self.rx.need;
        (self.rx.have, self.rx.need, self.rx.body, self.rx.big) = (0, 0, false, false);
        if big && shared.frame_owner == Some(me) {
            // The frame stays readable below; no other connection writes
            // to it before this call returns.
            shared.frame_owner = None;
        }
        // The frame and the data store are borrowed separately (only piece
        // messages use both).
        let frame_buf = &shared.frame[..];
        let buf = if big {
            &frame_buf[..len]
        } else {
            &self.rx.small[..len]
        };
        let frame = match self.framer.parse(buf).map_err(Closed::Wire)? {
            Status::Complete((frame, _)) => frame,
            Status::Partial => return Err(Closed::Wire(WireError::Failed)),
        };
        let t = Instant::from_millis(now);
        let msg = match frame {
            Frame::Handshake(h) => {
                let ours = Handshake {
                    reserved: our_reserved(),
                    info_hash: shared.cfg.info_hash,
                    peer_id: shared.peer_id,
                };
                match h.accept(&ours) {
                    Ok(_) => {}
                    Err(Refused::WrongInfoHash) => return Err(Closed::WrongTorrent),
                    Err(Refused::OurSelf) => return Err(Closed::OurSelf),
                }
                if !self.outbound {
                    self.queue_handshake(shared)?;
                }
                return self.open_session(t, h.reserved, torrent, shared);
            }
            Frame::Message(msg) => msg,
        };
        let Some(session) = self.session.as_mut() else {
            return Err(Closed::Wire(WireError::Failed));
        };
        match torrent
            .handle_message(t, session, msg)
            .map_err(Closed::Peer)?
        {
            Handled::Block {
                request,
                data: block,
                received,
            } => {
                if !received.duplicate {
                    if let Err(e) = shared
                        .store
                        .write_block(request.index, request.begin, block)
                    {
                        // The piece is given up without blame: fetched
                        // again, its sectors erased again first.
                        shared.report.flash_errors += 1;
                        torrent.abandon(request.index);
                        shared.store.forget(request.index);
                        let _ = writeln!(
                            log,
                            "piece: {} not stored: {e}; fetched again",
                            request.index
                        );
                        return Ok(());
                    }
                }
                if received.piece_complete {
                    verify(torrent, shared, request.index, log)?;
                }
            }
            Handled::Request(r) => {
                if self.uploads.push(r).is_err() {
                    // Over our queue (the `reqq` we sent): BEP 6 rejects
                    // it; BEP 3 lets us drop it (the peer asks again).
                    session.reject(r).map_err(Closed::Peer)?;
                }
            }
            Handled::Cancel(r) => {
                // Only a request not yet started can be withdrawn.
                let started = self.upload_at > 0;
                let mut i = 0;
                self.uploads.retain(|q| {
                    let keep = *q != r || (i == 0 && started);
                    i += 1;
                    keep
                });
            }
            Handled::Extended { id: 0, payload } => {
                let theirs = ExtensionHandshake::decode(payload).map_err(Closed::Extension)?;
                if let Some(q) = theirs.reqq {
                    session.set_peer_reqq(q);
                }
            }
            // Extended messages we did not ask for (our `m` is empty), DHT
            // ports (no DHT here), and messages with nothing to do.
            Handled::Extended { .. } | Handled::Port(_) | Handled::Nothing => {}
        }
        Ok(())
    }

    /// After the peer's handshake: the torrent's key and the session
    /// (BEP 6 if both set the bit), and our extension handshake (BEP 10).
    fn open_session(
        &mut self,
        t: Instant,
        theirs: Reserved,
        torrent: &mut JobTorrent<'_>,
        shared: &Shared<'_, '_>,
    ) -> Result<(), Closed> {
        let ours = our_reserved();
        let pieces = torrent.picker().geometry().piece_count();
        let needed = (pieces as usize).div_ceil(8);
        // The slot's bitfield is back from its last session (see `end`).
        let bits = self.bits.take().ok_or(Closed::NoBitfield)?;
        if bits.len() < needed {
            self.bits = Some(bits);
            return Err(Closed::Peer(PeerError::StorageTooSmall(needed)));
        }
        let key = match torrent.add_peer(t) {
            Ok(k) => k,
            Err(e) => {
                self.bits = Some(bits);
                return Err(Closed::Torrent(e));
            }
        };
        let cfg = PeerConfig {
            pipeline: PIPELINE,
            snub_timeout_ms: REQUEST_TIMEOUT_MS,
            ..PeerConfig::default()
        };
        let fast = ours.fast() && theirs.fast();
        // The storage was checked above: this cannot fail.
        let session = PeerSession::new(key, bits, pieces, fast, cfg, t).map_err(Closed::Peer)?;
        self.session = Some(session);
        self.phase = Phase::Running;
        if ours.extension_protocol() && theirs.extension_protocol() {
            self.queue_extension_handshake(shared)?;
        }
        Ok(())
    }

    /// BEP 10: our extension handshake, sent once both sides set the bit.
    fn queue_extension_handshake(&mut self, shared: &Shared<'_, '_>) -> Result<(), Closed> {
        let room = self.out.get_mut(self.out_len..).unwrap_or_default();
        self.out_len += extension_handshake(shared.cfg.announce_port, room)?;
        Ok(())
    }
}

/// Bytes of our extension handshake's payload at most.
const EXTENSION_PAYLOAD_LEN: usize = 64;

/// Writes our BEP 10 extension handshake message into `out`; returns its
/// length. We take no extended messages (`m` is empty); `reqq` is our
/// upload queue, `p` the port we announce (if any).
fn extension_handshake(announce_port: u16, out: &mut [u8]) -> Result<usize, Closed> {
    let ours = ExtensionHandshake {
        v: Some(CLIENT_NAME),
        p: (announce_port != 0).then_some(announce_port),
        reqq: Some(UPLOAD_QUEUE as u32),
        ..ExtensionHandshake::default()
    };
    let mut payload = [0u8; EXTENSION_PAYLOAD_LEN];
    let len = ours.encode(&mut payload).map_err(Closed::Extension)?;
    let msg = Message::Extended {
        id: 0,
        payload: payload.get(..len).unwrap_or_default(),
    };
    msg.encode(out).map_err(Closed::Wire)
}

/// Verifies a complete piece through the torrent, whose reputation rule
/// bans the senders of a bad one (their connections see
/// [`Torrent::should_close`]).
fn verify(
    torrent: &mut JobTorrent<'_>,
    shared: &mut Shared<'_, '_>,
    index: u32,
    log: &mut impl Write,
) -> Result<(), Closed> {
    let expected = shared
        .cfg
        .hashes
        .get(index as usize)
        .ok_or(Closed::Torrent(TorrentError::Pieces(
            PiecesError::PieceOutOfRange(index),
        )))?;
    let mut outcome = torrent.verify(index, expected).map_err(Closed::Torrent)?;
    if let PieceOutcome::NeedsData { from } = outcome {
        // Blocks came out of order: hash the rest of the piece from flash.
        let mut fed = Ok(());
        let read = shared.store.each_chunk(index, from, |chunk| {
            if fed.is_ok() {
                fed = torrent.hash_data(index, chunk);
            }
        });
        fed.map_err(Closed::Torrent)?;
        if let Err(e) = read {
            shared.report.flash_errors += 1;
            torrent.abandon(index);
            shared.store.forget(index);
            let _ = writeln!(log, "piece: {index} not read back: {e}; fetched again");
            return Ok(());
        }
        outcome = torrent.verify(index, expected).map_err(Closed::Torrent)?;
    }
    match outcome {
        PieceOutcome::Passed { .. } => {
            shared.report.verified += 1;
            // Marked only now: a mark always means a verified piece.
            match shared.store.mark_verified(index) {
                Ok(()) => {
                    let _ = writeln!(log, "piece: {index} verified");
                }
                Err(e) => {
                    shared.report.flash_errors += 1;
                    let _ = writeln!(log, "piece: {index} verified, not marked: {e}");
                }
            }
        }
        PieceOutcome::Failed { .. } => {
            shared.report.rejected += 1;
            shared.store.forget(index);
            let _ = writeln!(
                log,
                "piece: {index} rejected: SHA-1 mismatch, data discarded"
            );
        }
        PieceOutcome::NeedsData { .. } => {
            // Every byte from `from` on was fed: the picker cannot ask
            // again. Give the piece up without blame; it is fetched again.
            torrent.abandon(index);
            shared.store.forget(index);
            let _ = writeln!(log, "piece: {index} could not be hashed, fetched again");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ourtorrent_core::wire::HANDSHAKE_LEN;

    #[test]
    fn our_extension_handshake_says_reqq_and_fits_after_the_handshake() {
        /// Our handshake's payload, decoded from the message in `out`.
        fn decoded(out: &[u8]) -> ExtensionHandshake<'_> {
            match Message::decode(out).unwrap() {
                Message::Extended { id: 0, payload } => {
                    ExtensionHandshake::decode(payload).unwrap()
                }
                other => panic!("not an extension handshake: {other:?}"),
            }
        }
        // It fits the connection's buffer after our 68-byte handshake.
        let mut out = [0u8; super::super::OUT_LEN - HANDSHAKE_LEN];
        let n = extension_handshake(u16::MAX, &mut out).unwrap();
        let h = decoded(&out[..n]);
        assert_eq!(h.reqq, Some(UPLOAD_QUEUE as u32));
        assert_eq!(h.p, Some(u16::MAX));
        assert_eq!(h.v, Some(CLIENT_NAME));
        assert!(h.m.is_empty(), "we take no extended messages");
        // A buffer one byte short is an error, not a panic.
        let mut short = [0u8; super::super::OUT_LEN];
        assert!(matches!(
            extension_handshake(u16::MAX, &mut short[..n - 1]),
            Err(Closed::Wire(WireError::BufferTooSmall { .. }))
        ));
        // No port announced: no `p`.
        let mut out = [0u8; super::super::OUT_LEN];
        let n = extension_handshake(0, &mut out).unwrap();
        assert_eq!(decoded(&out[..n]).p, None);
    }

    #[test]
    fn we_offer_fast_and_extensions() {
        let r = our_reserved();
        assert!(r.fast() && r.extension_protocol());
    }
}
