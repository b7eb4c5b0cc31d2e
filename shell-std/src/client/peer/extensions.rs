//! The extension protocol (BEP 10): our handshake right after the
//! bitfield, and the peer's (its `reqq` bounds our pipeline; its
//! `ut_metadata` and `ut_pex` ids are where we send those messages).
//!
//! - `ut_metadata` (BEP 9): we offer our metadata (`metadata_size`) and
//!   answer requests for its pieces through the core's [`ServeBudget`]
//!   (at most two copies of the largest metadata per peer and minute;
//!   past that, rejects).
//! - `ut_pex` (BEP 11): see `pex` (never offered for a private torrent,
//!   BEP 27).

use std::net::SocketAddr;

use ourtorrent_core::peer::PeerSession;
use ourtorrent_core::time::Instant;
use ourtorrent_core::wire::metadata::{MetadataMsg, ServeBudget, MAX_METADATA_SIZE};
use ourtorrent_core::wire::pex::{is_unusable, PexLimits, PexMessage};
use ourtorrent_core::wire::{ExtensionHandshake, Message};

use super::{Conn, OUR_REQQ};

/// Our id for `ut_metadata` messages sent to us (BEP 10: ours to choose).
pub(crate) const OUR_UT_METADATA: u8 = 3;
/// Our id for `ut_pex` messages sent to us.
pub(crate) const OUR_UT_PEX: u8 = 1;
/// BEP 10 `v`.
pub(crate) const CLIENT_NAME: &[u8] = b"OurTorrent 0.1";

/// What a connection knows of the peer's extensions.
#[derive(Default)]
pub(crate) struct ExtState {
    /// The peer's id for `ut_metadata`.
    pub(crate) their_metadata: Option<u8>,
    /// The peer's id for `ut_pex`.
    pub(crate) their_pex: Option<u8>,
    /// Our answers to its metadata requests.
    pub(crate) serve: ServeBudget,
    /// Metadata pieces served, requests rejected.
    pub(crate) served: u32,
}

/// Appends a BEP 10 extended message (`id`, `payload`) to `out`.
pub(crate) fn extended(out: &mut Vec<u8>, id: u8, payload: &[u8]) {
    let m = Message::Extended { id, payload };
    let at = out.len();
    out.resize(at + m.encoded_len(), 0);
    match m.encode(&mut out[at..]) {
        Ok(n) => out.truncate(at + n),
        Err(_) => out.truncate(at),
    }
}

/// The usable addresses a `ut_pex` payload adds (at most the core's
/// [`PexLimits`]), the sender `from` left out.
pub(crate) fn pex_added(payload: &[u8], from: SocketAddr) -> Vec<SocketAddr> {
    match PexMessage::decode(payload, PexLimits::default()) {
        Ok((m, _)) => m
            .added_peers()
            .map(|(a, _)| a)
            .filter(|a| !is_unusable(a) && *a != from)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// An extended message from the peer.
pub(super) fn on_extended(
    ext: &mut ExtState,
    session: &mut PeerSession<Vec<u8>>,
    metadata: &[u8],
    out: &mut Vec<u8>,
    now: Instant,
    id: u8,
    payload: &[u8],
) {
    match id {
        0 => {
            if let Ok(h) = ExtensionHandshake::decode(payload) {
                if let Some(q) = h.reqq {
                    session.set_peer_reqq(q);
                }
                ext.their_metadata = h.id_of(b"ut_metadata");
                ext.their_pex = h.id_of(b"ut_pex");
            }
        }
        OUR_UT_METADATA => {
            // BEP 9: answer requests; data and rejects from the peer are
            // not for us (we have the metadata).
            let (Some(theirs), Ok(MetadataMsg::Request { piece })) =
                (ext.their_metadata, MetadataMsg::decode(payload))
            else {
                return;
            };
            let a = ext.serve.answer(now, Some(metadata), piece);
            let mut buf = vec![0u8; a.encoded_len()];
            if let Ok(n) = a.encode(&mut buf) {
                if matches!(a, MetadataMsg::Data { .. }) {
                    ext.served += 1;
                }
                extended(out, theirs, &buf[..n]);
            }
        }
        _ => {}
    }
}

impl Conn<'_> {
    /// BEP 10: our handshake, once, after the first control messages (our
    /// bitfield) when both sides set the extension bit.
    pub(super) fn send_extension_handshake(&mut self) {
        if !self.ext_pending {
            return;
        }
        self.ext_pending = false;
        let size = self.ctx.info.metadata.len();
        let mut m = heapless::Vec::new();
        if size > 0 && size <= MAX_METADATA_SIZE {
            let _ = m.push((&b"ut_metadata"[..], OUR_UT_METADATA));
        }
        let h = ExtensionHandshake {
            m,
            v: Some(CLIENT_NAME),
            p: Some(self.ctx.listen.port()),
            reqq: Some(OUR_REQQ),
            metadata_size: (size > 0 && size <= MAX_METADATA_SIZE).then_some(size as u64),
            ..ExtensionHandshake::default()
        };
        if let Ok(n) = h.encode(&mut self.tmp) {
            extended(&mut self.out, 0, &self.tmp[..n]);
        }
    }
}
