//! Property helpers for the fuzz targets in `fuzz/` (not a public API).
//!
//! Each helper decodes its input, re-encodes what it got, decodes again and
//! asserts that nothing changed; [`fuzz_peer_wire`] also asserts that the
//! framer yields the same messages (and the same error) whatever the
//! chunking. These are the only places in the wire module that assert.

use super::extension::ExtensionHandshake;
use super::framer::{Frame, Framer, Status};
use super::handshake::{Handshake, HANDSHAKE_LEN};
use super::message::Message;
use super::WireError;

/// Maximum message length the fuzz helper's framers use.
pub const FUZZ_MAX_MESSAGE_LEN: usize = 2048;

/// Largest extension handshake the round-trip helper tries.
pub const FUZZ_MAX_EXTENSION_LEN: usize = 4096;

fn roundtrip_message(m: &Message<'_>) {
    let mut buf = [0u8; FUZZ_MAX_MESSAGE_LEN];
    let n = m.encode(&mut buf);
    assert_eq!(n, Ok(m.encoded_len()));
    let n = m.encoded_len();
    assert_eq!(Message::decode(&buf[..n]).as_ref(), Ok(m));
}

/// Feeds `data` (after a 1-byte header choosing handshake-first and a
/// chunking seed) to two framers: one sees everything at once, the other
/// sees it arrive in pseudo-random chunks. Both must agree on every frame,
/// on the bytes consumed, and on the error that ends the stream.
pub fn fuzz_peer_wire(data: &[u8]) {
    let Some((&head, data)) = data.split_first() else {
        return;
    };
    let make = |head: u8| {
        if head & 1 == 1 {
            Framer::with_handshake(FUZZ_MAX_MESSAGE_LEN)
        } else {
            Framer::new(FUZZ_MAX_MESSAGE_LEN)
        }
    };
    let mut whole = make(head);
    let mut chunked = make(head);
    let mut seed = u32::from(head) | 0x9e37_0000;
    let mut next_chunk = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        1 + (seed % 97) as usize
    };
    let mut pos = 0usize; // bytes consumed
    let mut avail = 0usize; // bytes the chunked framer has "received"
    loop {
        let reference = whole.parse(&data[pos..]);
        // Grow the chunked view until it agrees that a frame (or error) is there.
        let got = loop {
            let r = chunked.parse(&data[pos..avail]);
            match r {
                Ok(Status::Partial) if avail < data.len() => {
                    avail = (avail + next_chunk()).min(data.len());
                }
                other => break other,
            }
        };
        assert_eq!(reference, got);
        match reference {
            Ok(Status::Complete((frame, n))) => {
                assert!(n > 0);
                match frame {
                    Frame::Message(m) => roundtrip_message(&m),
                    Frame::Handshake(h) => assert_eq!(Handshake::decode(&h.to_bytes()), Ok(h)),
                }
                pos += n;
                avail = avail.max(pos);
            }
            Ok(Status::Partial) => return,
            Err(e) => {
                assert!(whole.failed() && chunked.failed());
                assert_eq!(whole.parse(&data[pos..]), Err(WireError::Failed));
                let _ = e;
                return;
            }
        }
    }
}

/// Decodes a handshake; if it is valid its encoding must equal the input.
pub fn fuzz_handshake(data: &[u8]) {
    if let Ok(h) = Handshake::decode(data) {
        assert_eq!(data.len(), HANDSHAKE_LEN);
        assert_eq!(&h.to_bytes()[..], data);
    }
}

/// Decodes an extension handshake; if valid, re-encodes it and checks that
/// the encoding decodes to the same value and re-encodes to the same bytes.
pub fn fuzz_extension_handshake(data: &[u8]) {
    if data.len() > FUZZ_MAX_EXTENSION_LEN - 16 {
        return;
    }
    let Ok(h) = ExtensionHandshake::decode(data) else {
        return;
    };
    let mut buf = [0u8; FUZZ_MAX_EXTENSION_LEN];
    let n = match h.encode(&mut buf) {
        Ok(n) => n,
        // Names repeated in `m` are dropped on decode, so this cannot happen.
        Err(e) => panic!("re-encode failed: {e}"),
    };
    let again = ExtensionHandshake::decode(&buf[..n]);
    assert_eq!(again.as_ref(), Ok(&h));
    let mut buf2 = [0u8; FUZZ_MAX_EXTENSION_LEN];
    assert_eq!(h.encode(&mut buf2), Ok(n));
    assert_eq!(&buf[..n], &buf2[..n]);
}

/// Largest `ut_metadata` payload the fuzz helper round-trips.
pub const FUZZ_MAX_METADATA_MSG: usize = 64 + super::metadata::METADATA_PIECE_LEN;

/// `ut_metadata` (BEP 9): a decoded message re-encodes to bytes that decode
/// to the same message and encode the same again; data never exceeds 16 KiB;
/// an error's offset lies inside the input; answering a request never
/// serves out of range. Then the input drives a [`MetadataFetch`] as a
/// script (see [`fuzz_metadata_fetch`]).
///
/// [`MetadataFetch`]: super::metadata::MetadataFetch
pub fn fuzz_ut_metadata(data: &[u8]) {
    use super::metadata::{answer, piece_len, MetadataError, MetadataMsg, METADATA_PIECE_LEN};
    match MetadataMsg::decode(data) {
        Ok(m) => {
            if let MetadataMsg::Data { data: d, .. } = m {
                assert!(d.len() <= METADATA_PIECE_LEN);
            }
            let mut buf = [0u8; FUZZ_MAX_METADATA_MSG];
            let n = m.encode(&mut buf);
            assert_eq!(n, Ok(m.encoded_len()));
            let n = m.encoded_len();
            assert_eq!(MetadataMsg::decode(&buf[..n]), Ok(m));
            let mut buf2 = [0u8; FUZZ_MAX_METADATA_MSG];
            assert_eq!(m.encode(&mut buf2), Ok(n));
            assert_eq!(&buf[..n], &buf2[..n]);
            // Serving a 40 000-byte metadata: data only for pieces 0..3.
            let ours = [0x5au8; 40_000];
            match answer(Some(&ours), m.piece()) {
                MetadataMsg::Data {
                    piece,
                    total_size,
                    data: d,
                } => {
                    assert_eq!(total_size, 40_000);
                    assert_eq!(Some(d.len()), piece_len(40_000, piece));
                }
                MetadataMsg::Reject { piece } => assert!(piece >= 3),
                MetadataMsg::Request { .. } => panic!("answered with a request"),
            }
        }
        Err(
            MetadataError::BadValue { offset, .. }
            | MetadataError::UnknownMsgType { offset, .. }
            | MetadataError::DataTooLong { offset, .. }
            | MetadataError::TrailingBytes { offset },
        ) => assert!(offset < data.len()),
        Err(MetadataError::Bencode(e)) => assert!(e.offset <= data.len()),
        Err(_) => {}
    }
    let _ = fuzz_metadata_fetch(data);
}

/// Drives a [`MetadataFetch`](super::metadata::MetadataFetch) of a fixed
/// 40 000-byte metadata with the input as a script of operations (add a
/// peer with a size, a message from a peer, time passing, polling for
/// requests). Properties: requests in flight per peer stay within the
/// limit; requested pieces exist; pieces received never exceed the count;
/// completion only with the metadata whose SHA-1 is the info-hash.
/// Returns true if the script completed the fetch.
pub fn fuzz_metadata_fetch(script: &[u8]) -> bool {
    use super::metadata::{piece_count, FetchLimits, Handled, MetadataFetch, MetadataMsg};
    use crate::id::InfoHash;
    use crate::time::{Duration, Instant};
    use sha1::{Digest, Sha1};
    const SIZE: usize = 40_000;
    let meta = [0x5au8; SIZE];
    let hash = InfoHash(Sha1::digest(meta).into());
    let mut buf = [0u8; SIZE];
    let limits = FetchLimits {
        max_metadata_size: SIZE,
        requests_per_peer: 3,
        request_timeout: Duration::from_secs(5),
        backoff: Duration::from_secs(7),
    };
    let mut f = MetadataFetch::<u8, 4>::new(hash, &mut buf, limits);
    let mut now = Instant::ZERO;
    let mut s = script;
    while let Some((&op, rest)) = s.split_first() {
        s = rest;
        let peer = (op >> 2) & 7;
        match op & 3 {
            0 => {
                while let Some((p, piece)) = f.poll_request(now) {
                    let size = f.size().unwrap_or(0);
                    assert!(piece < piece_count(size));
                    assert!(f.requests_in_flight(p) <= limits.requests_per_peer);
                }
            }
            1 => {
                let Some((len, rest)) = s.split_first() else {
                    break;
                };
                let (msg, rest) = rest.split_at((*len as usize).min(rest.len()));
                s = rest;
                // A data message with one data byte stands for a whole
                // piece of that byte, so the script can send right pieces.
                let mut padded = [0x5au8; 256 + super::metadata::METADATA_PIECE_LEN];
                let n = msg.len();
                padded[..n].copy_from_slice(msg);
                let msg = match MetadataMsg::decode(msg) {
                    Ok(MetadataMsg::Data {
                        piece,
                        total_size,
                        data,
                    }) if data.len() == 1 => {
                        padded[n..].fill(data[0]);
                        let want = super::metadata::piece_len(total_size, piece).unwrap_or(1);
                        MetadataMsg::decode(&padded[..n - 1 + want])
                    }
                    other => other,
                };
                if let Ok(m) = msg {
                    match f.handle_message(now, peer, &m) {
                        Ok(Handled::Complete) => assert!(f.is_complete()),
                        Ok(Handled::HashMismatch) => assert_eq!(f.pieces_received(), 0),
                        _ => {}
                    }
                }
            }
            2 => {
                now = now.add_millis(u64::from(op) * 100);
                f.handle_timeout(now);
            }
            _ => {
                let Some((hi, rest)) = s.split_first() else {
                    break;
                };
                s = rest;
                let size = u64::from(*hi) * 200;
                let _ = f.add_peer(peer, size);
            }
        }
        if let Some(size) = f.size() {
            assert!(f.pieces_received() <= piece_count(size));
        }
        while f.poll_event().is_some() {}
    }
    if let Some(m) = f.metadata() {
        assert_eq!(m, &meta[..]);
    }
    f.is_complete()
}

/// `ut_pex` (BEP 11): what decodes within the default limits re-encodes
/// and decodes to the same message with nothing cut, and encodes the same
/// twice; the kept lists are prefixes of what unbounded limits keep, and
/// kept + cut = all; the limits hold; errors do not depend on limits;
/// [`encode_update`](super::pex::encode_update) of the decoded peers gives
/// the same peers back; learned peers are added peers, usable, not skipped.
pub fn fuzz_ut_pex(data: &[u8]) {
    use super::pex::{
        encode_update, is_unusable, Cut, PexFlags, PexLimits, PexMessage, PexPeer, MAX_PEX_ADDED,
        MAX_PEX_DROPPED,
    };
    use crate::time::Instant;
    use core::net::{IpAddr, SocketAddr};
    let all = PexLimits {
        max_added: usize::MAX,
        max_dropped: usize::MAX,
    };
    let bounded = PexMessage::decode(data, PexLimits::default());
    let unbounded = PexMessage::decode(data, all);
    let ((m, cut), (full, full_cut)) = match (bounded, unbounded) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            return;
        }
        (a, b) => panic!("limits changed the outcome: {a:?} vs {b:?}"),
    };
    assert!(m.added_len() <= MAX_PEX_ADDED && m.dropped_len() <= MAX_PEX_DROPPED);
    assert_eq!(full_cut.added + full_cut.dropped, 0);
    assert_eq!(full_cut.flags_ignored, cut.flags_ignored);
    assert_eq!(m.added_len() + cut.added, full.added_len());
    assert_eq!(m.dropped_len() + cut.dropped, full.dropped_len());
    for (a, b) in [
        (m.added, full.added),
        (m.added_f, full.added_f),
        (m.added6, full.added6),
        (m.added6_f, full.added6_f),
        (m.dropped, full.dropped),
        (m.dropped6, full.dropped6),
    ] {
        assert!(b.starts_with(a));
    }
    let mut buf = [0u8; 4096];
    let n = match m.encode(&mut buf) {
        Ok(n) => n,
        Err(e) => panic!("re-encode failed: {e}"),
    };
    assert_eq!(
        PexMessage::decode(&buf[..n], PexLimits::default()),
        Ok((m, Cut::default()))
    );
    let mut buf2 = [0u8; 4096];
    assert_eq!(m.encode(&mut buf2), Ok(n));
    assert_eq!(&buf[..n], &buf2[..n]);

    // From addresses and back (IPv4-mapped IPv6 comes back as IPv4).
    let canon = |(a, f): (SocketAddr, PexFlags)| {
        let ip = match a.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            ip => ip,
        };
        (SocketAddr::new(ip, a.port()), f.0)
    };
    let added: heapless::Vec<(SocketAddr, PexFlags), MAX_PEX_ADDED> = m.added_peers().collect();
    let dropped: heapless::Vec<SocketAddr, MAX_PEX_DROPPED> = m.dropped_peers().collect();
    let e = match encode_update(&added, &dropped, &mut buf) {
        Ok(e) => e,
        Err(e) => panic!("encode_update failed: {e}"),
    };
    assert_eq!((e.added, e.dropped), (added.len(), dropped.len()));
    let Ok((again, _)) = PexMessage::decode(&buf[..e.len], PexLimits::default()) else {
        panic!("encode_update output does not decode");
    };
    let mut x: heapless::Vec<(SocketAddr, u8), MAX_PEX_ADDED> =
        added.iter().map(|&p| canon(p)).collect();
    let mut y: heapless::Vec<(SocketAddr, u8), MAX_PEX_ADDED> =
        again.added_peers().map(canon).collect();
    x.sort_unstable();
    y.sort_unstable();
    assert_eq!(x, y);
    assert_eq!(again.dropped_len(), dropped.len());

    let mut peer = PexPeer::new(false);
    let skip = |a: &SocketAddr| a.port() % 2 == 0;
    let Ok(learned) = peer.handle_message(Instant::ZERO, &m, skip) else {
        panic!("first message refused");
    };
    let mut count = 0;
    for (a, f) in learned {
        assert!(!is_unusable(&a) && !skip(&a));
        assert!(m.added_peers().any(|p| p == (a, f)));
        count += 1;
    }
    assert!(count <= m.added_len());
    assert!(PexPeer::new(true)
        .handle_message(Instant::ZERO, &m, skip)
        .is_err());
}
