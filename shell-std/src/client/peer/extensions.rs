//! The extension protocol (BEP 10): our handshake right after the
//! bitfield, and the peer's (its `reqq` bounds our pipeline).

use ourtorrent_core::peer::PeerSession;
use ourtorrent_core::wire::{ExtensionHandshake, Message};

use super::{Conn, OUR_REQQ};

/// An extended message from the peer.
pub(super) fn on_extended(session: &mut PeerSession<Vec<u8>>, id: u8, payload: &[u8]) {
    if id == 0 {
        if let Ok(h) = ExtensionHandshake::decode(payload) {
            if let Some(q) = h.reqq {
                session.set_peer_reqq(q);
            }
        }
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
        let h = ExtensionHandshake {
            v: Some(b"OurTorrent 0.1"),
            p: Some(self.ctx.listen.port()),
            reqq: Some(OUR_REQQ),
            ..ExtensionHandshake::default()
        };
        if let Ok(n) = h.encode(&mut self.tmp) {
            let m = Message::Extended {
                id: 0,
                payload: &self.tmp[..n],
            };
            let mut enc = vec![0u8; m.encoded_len() + 4];
            if let Ok(k) = m.encode(&mut enc) {
                self.out.extend_from_slice(&enc[..k]);
            }
        }
    }
}
