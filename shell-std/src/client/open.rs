//! Opening one torrent of the session: its plan checked (piece size,
//! something to connect to, paths, free space), its files opened, what is
//! on disk verified, and the core's [`Torrent`](ourtorrent_core::torrent::Torrent)
//! built over boxed storage sized for it.

use std::sync::Arc;

use anyhow::{bail, Context};
use ourtorrent_core::choker::{Candidate, ChokerConfig};
use ourtorrent_core::pieces::{
    Availability, Bitfield, BlockSlot, Geometry, PeerKey, Picker, PickerConfig, PickerParts, Slot,
};
use ourtorrent_core::time::Instant;
use ourtorrent_core::torrent::{PeerEntry, TorrentConfig, TorrentParts};

use super::session::Session;
use super::storage::Storage;
use super::swarm::{Ctx, Heap, StdTorrent};
use super::{random_u32, Plan};

/// Largest piece this client handles (a piece is read whole to verify it).
pub const MAX_PIECE_LEN: u64 = 16 << 20;
/// Bytes of pieces in progress at once (slots = this / piece length,
/// within [`MIN_SLOTS`]..=[`MAX_SLOTS`]).
pub const IN_PROGRESS_BYTES: u64 = 256 << 20;
/// Fewest pieces in progress at once.
pub const MIN_SLOTS: u64 = 32;
/// Most pieces in progress at once.
pub const MAX_SLOTS: u64 = 256;

/// Opens, checks and resumes one torrent's data: its state, ready to run.
pub(super) fn prepare(plan: &Plan, session: &Session) -> anyhow::Result<Arc<Ctx>> {
    let info = plan.info.clone();
    let common = &plan.choices.common;
    if info.piece_len > MAX_PIECE_LEN {
        bail!(
            "pieces of {} bytes are larger than the {} MiB this client handles",
            info.piece_len,
            MAX_PIECE_LEN >> 20
        );
    }
    // (The daemon, giving `have`, checks its own plan: peers may come later.)
    if plan.download && plan.have.is_none() {
        // No source can ever appear: say so rather than wait forever.
        // (A public torrent may still find peers through the DHT.)
        let dht = !common.no_dht && !info.private;
        if !common.check_only
            && !dht
            && common.peers.is_empty()
            && plan.learned.is_empty()
            && (common.no_trackers || info.trackers.is_empty())
        {
            bail!(
                "nothing to connect to: {}, no DHT and no --peer was given",
                if common.no_trackers {
                    "--no-trackers"
                } else {
                    "the torrent lists no tracker"
                }
            );
        }
        if common.check_only && !plan.root.exists() {
            bail!(
                "{}: not there: 0 of {} pieces",
                plan.root.display(),
                info.pieces()
            );
        }
        if let Some(parent) = plan.root.parent() {
            if !parent.as_os_str().is_empty() && !parent.is_dir() {
                std::fs::create_dir_all(parent).with_context(|| format!("{}", parent.display()))?;
            }
        }
    }
    // Which files (`--only` / `--skip`): only a download skips any.
    let prio = if plan.download {
        super::select::from_flags(
            &info,
            plan.choices.only.as_deref(),
            plan.choices.skip.as_deref(),
        )?
    } else {
        Vec::new()
    };
    // Check every path, and the free space, before creating anything.
    Storage::paths(&info, &plan.root)?;
    if plan.download && !plan.choices.skip_space_check {
        Storage::check_space_selected(&info, &plan.root, &prio)?;
    }
    let storage = Storage::open_selected(
        &info,
        &plan.root,
        plan.download && !common.check_only,
        &prio,
    )?;
    let n = info.pieces();
    let have = if let Some(h) = &plan.have {
        h.clone()
    } else if plan.skip_verify {
        vec![true; n as usize]
    } else {
        storage.verify_all(&info, 2, !plan.download)
    };
    let on_disk = have.iter().filter(|&&h| h).count();
    println!("resumed: {on_disk} of {n} pieces verified on disk");
    if !plan.download && !common.check_only && on_disk != n as usize {
        bail!(
            "{}: only {on_disk} of {n} pieces match the torrent; refusing to seed",
            plan.root.display()
        );
    }
    let geo =
        Geometry::new(info.total, info.piece_len as u32).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The picker's storage: boxed slices owned by the picker.
    let have_bytes = vec![0u8; (n as usize).div_ceil(8)].into_boxed_slice();
    let avail = vec![0u16; n as usize].into_boxed_slice();
    let mut bits = Bitfield::new(have_bytes, n).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut verified = 0u64;
    for (i, _) in have.iter().enumerate().filter(|(_, h)| **h) {
        let _ = bits.set(i as u32);
        verified += storage.piece_range(i as u32).1 as u64;
    }
    let avail = Availability::new(avail, n).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = PickerConfig {
        // Pieces are hashed on the writing threads (`writes::PieceHashes`).
        hash_blocks: false,
        ..PickerConfig::default()
    };
    let slots = (IN_PROGRESS_BYTES / info.piece_len.max(1)).clamp(MIN_SLOTS, MAX_SLOTS) as usize;
    // Headroom over the connection limit: a closing task frees its entry
    // just before its permit.
    let peers = common
        .max_peers
        .saturating_add(8)
        .min(usize::from(u16::MAX));
    let parts = TorrentParts {
        picker: PickerParts {
            have: bits,
            avail,
            slots: vec![Slot::default(); slots].into_boxed_slice(),
            blocks: vec![BlockSlot::default(); Picker::<Heap>::blocks_needed(&geo, slots)]
                .into_boxed_slice(),
            // Keys are peer table indices: all counted, none scanned.
            flight: vec![0u16; peers].into_boxed_slice(),
        },
        peers: vec![PeerEntry::default(); peers].into_boxed_slice(),
        log: vec![0u32; n as usize].into_boxed_slice(),
        candidates: vec![Candidate::new(PeerKey(0), Instant::ZERO); peers].into_boxed_slice(),
    };
    let tcfg = TorrentConfig {
        picker: cfg,
        choker: ChokerConfig {
            slots: common.upload_slots,
            rechoke_ms: common.rechoke_ms,
            optimistic_ms: common.rechoke_ms.saturating_mul(3),
        },
    };
    let mut torrent =
        StdTorrent::new(geo, parts, tcfg, random_u32()).map_err(|e| anyhow::anyhow!("{e}"))?;
    super::select::apply(&mut torrent, &info, &prio)?;
    torrent.set_sequential(plan.choices.sequential);
    let ctx = Arc::new(Ctx::new(
        torrent,
        storage,
        info,
        session.peer_id,
        plan.choices.max_pieces,
        common.max_peers,
        session.listen,
        verified,
    ));
    *ctx.priorities.lock().unwrap_or_else(|e| e.into_inner()) = prio;
    Ok(ctx)
}
