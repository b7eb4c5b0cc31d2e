//! The extension protocol (BEP 10): our handshake right after the
//! bitfield, and the peer's (its `reqq` bounds our pipeline; its
//! `ut_metadata` and `ut_pex` ids are where we send those messages).
//!
//! - `ut_metadata` (BEP 9): we offer our metadata (`metadata_size`) and
//!   answer requests for its pieces through the core's [`ServeBudget`]
//!   (at most two copies of the largest metadata per peer and minute;
//!   past that, rejects).
//! - `ut_pex` (BEP 11), never offered nor accepted for a private torrent
//!   (BEP 27): we send, at most once per [`PEX_INTERVAL`] per peer (the
//!   core's [`PexPeer`]), the connected peers' reachable addresses added
//!   and dropped since our last message to it (at most [`MAX_PEX_ADDED`]
//!   each; the rest next time); we book the usable addresses it adds as
//!   source PEX (our own address and addresses already booked keep their
//!   state), at most one message per [`MIN_RECEIVE_INTERVAL`].

use std::collections::HashSet;
use std::net::SocketAddr;

use ourtorrent_core::peer::PeerSession;
use ourtorrent_core::time::{Duration, Instant};
use ourtorrent_core::wire::metadata::{MetadataMsg, ServeBudget, MAX_METADATA_SIZE};
use ourtorrent_core::wire::pex::{
    encode_update, is_unusable, PexFlags, PexLimits, PexMessage, PexPeer,
};
#[allow(unused_imports)] // named in the docs
use ourtorrent_core::wire::pex::{MAX_PEX_ADDED, MIN_RECEIVE_INTERVAL, PEX_INTERVAL};
use ourtorrent_core::wire::{ExtensionHandshake, Message};

use super::{Conn, OUR_REQQ};

/// Our id for `ut_metadata` messages sent to us (BEP 10: ours to choose).
pub(crate) const OUR_UT_METADATA: u8 = 3;
/// Our id for `ut_pex` messages sent to us.
pub(crate) const OUR_UT_PEX: u8 = 1;
/// BEP 10 `v`.
pub(crate) const CLIENT_NAME: &[u8] = b"OurTorrent 0.1";

/// When there was nothing new to tell a peer, look again this much later.
const PEX_RECHECK: Duration = Duration::from_secs(5);
/// Room for one `ut_pex` message: 50 IPv6 peers added and 50 dropped.
const PEX_BUF: usize = 4096;

/// What a connection knows of the peer's extensions.
pub(crate) struct ExtState {
    /// The peer's id for `ut_metadata`.
    pub(crate) their_metadata: Option<u8>,
    /// The peer's id for `ut_pex`.
    pub(crate) their_pex: Option<u8>,
    /// Our answers to its metadata requests.
    pub(crate) serve: ServeBudget,
    /// Metadata pieces served, requests rejected.
    pub(crate) served: u32,
    /// Its BEP 10 `p`, until the connection records it.
    pub(crate) their_port: Option<u16>,
    /// BEP 11 rules for this peer (private torrents: off).
    pub(crate) pex: PexPeer,
    /// Addresses our PEX messages told it of (and not dropped since).
    pub(crate) pex_sent: HashSet<SocketAddr>,
    /// Nothing new to tell it before this.
    pub(crate) pex_next_check: Instant,
    /// Addresses its `ut_pex` messages added, to book once the torrent's
    /// lock is released.
    pub(crate) pex_learned: Vec<SocketAddr>,
}

impl ExtState {
    /// For a connection of a `private` torrent (BEP 27) or not.
    pub(crate) fn new(private: bool) -> Self {
        ExtState {
            their_metadata: None,
            their_pex: None,
            serve: ServeBudget::default(),
            served: 0,
            their_port: None,
            pex: PexPeer::new(private),
            pex_sent: HashSet::new(),
            pex_next_check: Instant::ZERO,
            pex_learned: Vec::new(),
        }
    }
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

/// An extended message from the peer at `from`.
#[allow(clippy::too_many_arguments)]
pub(super) fn on_extended(
    ext: &mut ExtState,
    session: &mut PeerSession<Vec<u8>>,
    metadata: &[u8],
    out: &mut Vec<u8>,
    now: Instant,
    from: SocketAddr,
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
                ext.their_pex = h.id_of(b"ut_pex").filter(|_| ext.pex.enabled());
                ext.their_port = h.p.filter(|&p| p != 0);
            }
        }
        OUR_UT_PEX => {
            let Ok((m, _)) = PexMessage::decode(payload, PexLimits::default()) else {
                return;
            };
            match ext.pex.handle_message(now, &m, move |a| *a == from) {
                Ok(added) => ext.pex_learned.extend(added.map(|(a, _)| a)),
                Err(e) => tracing::debug!(%from, "ut_pex refused: {e:?}"),
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
        if self.ext.pex.enabled() {
            let _ = m.push((&b"ut_pex"[..], OUR_UT_PEX));
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

impl Conn<'_> {
    /// BEP 11: when due, tells the peer which of our connected peers'
    /// addresses it has not heard of from us and which are gone (under the
    /// torrent's lock, `g`).
    pub(super) fn send_pex(&mut self, now: Instant, g: &crate::client::swarm::Shared) {
        let Some(theirs) = self.ext.their_pex else {
            return;
        };
        // Never before our own BEP 10 handshake: libtorrent drops a peer
        // that sends an extended message first.
        if self.ext_pending {
            return;
        }
        if !self.ext.pex.may_send(now) || now < self.ext.pex_next_check {
            return;
        }
        let current: HashSet<SocketAddr> = g.reachable_peers(self.key).into_iter().collect();
        let added: Vec<(SocketAddr, PexFlags)> = current
            .difference(&self.ext.pex_sent)
            .map(|a| (*a, PexFlags(0)))
            .collect();
        let dropped: Vec<SocketAddr> = self.ext.pex_sent.difference(&current).copied().collect();
        if added.is_empty() && dropped.is_empty() {
            self.ext.pex_next_check = now + PEX_RECHECK;
            return;
        }
        let mut buf = [0u8; PEX_BUF];
        let Ok(enc) = encode_update(&added, &dropped, &mut buf) else {
            return;
        };
        extended(
            &mut self.out,
            theirs,
            buf.get(..enc.len).unwrap_or_default(),
        );
        self.ext.pex.on_sent(now);
        for (a, _) in added.iter().take(enc.added) {
            self.ext.pex_sent.insert(*a);
        }
        for a in dropped.iter().take(enc.dropped) {
            self.ext.pex_sent.remove(a);
        }
    }
}
