//! Step 0: the BEP 3 handshake (ours first on an outgoing connection; on
//! an inbound one the session's listener already read theirs), then the
//! connection is registered with the torrent and its session created.

use std::net::SocketAddr;
use std::sync::Arc;

use ourtorrent_core::peer::{PeerConfig, PeerSession, UploadQueue};
use ourtorrent_core::wire::{
    max_message_len_for, Frame, Framer, Handshake, Refused, Reserved, Status,
};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::writes::Writer;
use super::{
    closed, flush, try_fill, Conn, End, HANDSHAKE_TIMEOUT, OUT_HIGH_WATER, PIPELINE, READ_BUF,
};
use crate::client::swarm::Ctx;

impl<'a> Conn<'a> {
    /// Exchanges handshakes and registers the peer.
    pub(super) async fn open(
        ctx: &'a Arc<Ctx>,
        stream: &'a TcpStream,
        addr: SocketAddr,
        inbound: Option<(Handshake, Vec<u8>)>,
    ) -> Result<Conn<'a>, End> {
        let pieces = ctx.info.pieces();
        let max_len = max_message_len_for(pieces);
        let mut rbuf = vec![0u8; READ_BUF.max(2 * max_len)];
        let mut filled = 0usize;
        let mut framer = if inbound.is_some() {
            Framer::new(max_len)
        } else {
            Framer::with_handshake(max_len)
        };
        let reserved = Reserved::default()
            .with_fast(true)
            .with_extension_protocol(true);
        let ours = Handshake {
            reserved,
            info_hash: ctx.info.info_hash,
            peer_id: ctx.peer_id,
        };
        let mut out: Vec<u8> = Vec::with_capacity(OUT_HIGH_WATER + (64 << 10));
        out.extend_from_slice(&ours.to_bytes());
        let mut out_pos = 0usize;
        let inbound_conn = inbound.is_some();
        let theirs = match inbound {
            Some((h, rest)) => {
                let n = rest.len().min(rbuf.len());
                rbuf[..n].copy_from_slice(&rest[..n]);
                filled = n;
                h
            }
            None => {
                let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
                loop {
                    flush(stream, &out, &mut out_pos).map_err(End::transient)?;
                    match framer.parse(&rbuf[..filled]) {
                        Ok(Status::Complete((Frame::Handshake(h), n))) => {
                            rbuf.copy_within(n..filled, 0);
                            filled -= n;
                            break h;
                        }
                        Ok(Status::Complete(_)) => {
                            return Err(End::Protocol("no handshake".into()))
                        }
                        Ok(Status::Partial) => {}
                        // Not a ban: e.g. an encrypted (MSE) attempt before a plain retry.
                        Err(e) => return Err(closed(e)),
                    }
                    tokio::select! {
                        r = stream.readable() => {
                            r.map_err(closed).map_err(End::transient)?;
                            if !try_fill(stream, &mut rbuf, &mut filled).map_err(End::transient)? {
                                // What came before the EOF says more than
                                // the EOF: garbage, or another torrent.
                                return Err(match framer.parse(&rbuf[..filled]) {
                                    Err(e) => closed(e),
                                    Ok(Status::Complete((Frame::Handshake(h), _))) => {
                                        match h.accept(&ours) {
                                            Err(Refused::WrongInfoHash) => closed("wrong info-hash"),
                                            _ => End::Reset("eof after the handshake".into()),
                                        }
                                    }
                                    _ => End::Reset("eof during handshake".into()),
                                });
                            }
                        }
                        _ = tokio::time::sleep_until(deadline) => return Err(closed("handshake timeout")),
                    }
                }
            }
        };
        let (fast, ext) = match theirs.accept(&ours) {
            Ok(a) => (a.fast, a.ext),
            Err(Refused::WrongInfoHash) => return Err(closed("wrong info-hash")),
            Err(Refused::OurSelf) => return Err(closed("connected to ourselves")),
        };

        let notify = Arc::new(Notify::new());
        let key = ctx.register(addr, notify.clone()).map_err(closed)?;
        if !inbound_conn {
            ctx.lock().set_reachable(key, addr);
        }
        let cfg = PeerConfig {
            pipeline: PIPELINE,
            ..PeerConfig::default()
        };
        let bits = vec![0u8; (pieces as usize).div_ceil(8)];
        let session = PeerSession::new(key, bits, pieces, fast, cfg, ctx.now()).map_err(closed)?;
        Ok(Conn {
            ctx,
            stream,
            addr,
            key,
            notify,
            session,
            framer,
            rbuf,
            filled,
            out,
            out_pos,
            tmp: vec![0u8; (16usize << 10).max(pieces as usize / 8 + 64)],
            reqs: UploadQueue::new(),
            writer: Writer::default(),
            up_acc: 0,
            ext_pending: ext,
            ext: super::extensions::ExtState::new(ctx.info.private),
            inbound: inbound_conn,
            seed: false,
        })
    }
}
