//! Adding torrents: from `.torrent` bytes (file priorities in force
//! before the first byte), and at start the stored torrents and magnets
//! restored (each running again unless it was paused).
//!
//! Limits: pieces over [`MAX_PIECE_LEN`] are refused, so is a second
//! torrent with the same info-hash or folder; a stored torrent that does
//! not load is logged and left out, the others load.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::priority::{apply_priorities, prio_from_text, prio_to_text};
use super::{parse, Daemon, Refused};
use crate::client::magnet::MagnetLink;
use crate::client::select::Priority;
use crate::client::storage::Storage;
use crate::client::{root_in, MAX_PIECE_LEN};
use crate::daemon::entry::{Entry, State};
use crate::daemon::resume::Stamp;
use crate::daemon::store::{self, Row};

impl Daemon {
    /// Loads the stored torrents and starts those not paused.
    pub fn restore(self: &Arc<Self>) -> anyhow::Result<()> {
        let rows = self.store().load()?;
        for row in rows {
            let id = row.id;
            match self.entry_from_row(row) {
                Ok((entry, saved, paused)) => {
                    self.map().insert(id, entry.clone());
                    if !paused {
                        self.clone().spawn_start(entry, saved);
                    }
                }
                Err(e) => tracing::error!(id, "stored torrent not loaded: {e:#}"),
            }
        }
        let magnets = self.store().load_magnets()?;
        for (id, uri, paused, peers) in magnets {
            match MagnetLink::parse(&uri) {
                Ok(link) => {
                    let peers = peers.iter().filter_map(|p| p.parse().ok()).collect();
                    self.spawn_fetch(id, link, paused, peers);
                }
                Err(e) => tracing::error!(id, "stored magnet not loaded: {e:#}"),
            }
        }
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn entry_from_row(
        &self,
        row: Row,
    ) -> anyhow::Result<(Arc<Entry>, Option<(Vec<bool>, Vec<Stamp>)>, bool)> {
        let info = parse(&row.metainfo).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let n = info.pieces() as usize;
        let kept = row.resume.clone();
        let saved = row
            .resume
            .and_then(|r| store::unpack(&r.have, n).map(|h| (h, r.files)));
        let peers = row.peers.iter().filter_map(|p| p.parse().ok()).collect();
        let have = match (&saved, row.paused) {
            (Some((h, _)), true) => h.clone(),
            _ => vec![false; n],
        };
        let mut state = State::new(row.paused, have, kept);
        state.base_down = row.downloaded;
        state.base_up = row.uploaded;
        state.known = row.paused && saved.is_some();
        state.limits = self.store().limits(row.id)?;
        if let Some(text) = self.store().priorities(row.id)? {
            state.prio = prio_from_text(&text, info.files.len()).ok_or_else(|| {
                anyhow::anyhow!("stored file priorities {text:?}: not understood")
            })?;
        }
        let entry = Arc::new(Entry {
            id: row.id,
            info,
            root: row.root,
            peers,
            state: Mutex::new(state),
        });
        Ok((entry, saved, row.paused))
    }

    /// Adds a torrent from its `.torrent` bytes, with file priorities
    /// `files` (`(index, priority)` pairs, as [`Self::set_priorities`]
    /// takes) in force before the first byte: a skipped file is never
    /// created. A bad priority refuses the whole add.
    pub fn add(
        self: &Arc<Self>,
        metainfo: Vec<u8>,
        paused: bool,
        peers: Vec<SocketAddr>,
        files: &[(usize, Priority)],
    ) -> Result<(i64, String), Refused> {
        let info = parse(&metainfo).map_err(Refused::Bad)?;
        let mut prio = vec![Priority::default(); info.files.len()];
        apply_priorities(&info, &mut prio, files)?;
        if info.piece_len > MAX_PIECE_LEN {
            return Err(Refused::Bad(format!(
                "pieces of {} bytes are larger than the {} MiB this client handles",
                info.piece_len,
                MAX_PIECE_LEN >> 20
            )));
        }
        let root = root_in(&self.download_dir, &info).map_err(|e| Refused::Bad(e.to_string()))?;
        Storage::paths(&info, &root).map_err(|e| Refused::Bad(format!("{e:#}")))?;
        let ih = info.info_hash.to_string();
        let waiting = self
            .pending()
            .values()
            .find(|p| p.link.info_hash == info.info_hash)
            .map(|p| p.id);
        if let Some(id) = waiting {
            return Err(Refused::Conflict(
                format!("torrent {ih} is already added as a magnet (id {id})"),
                Some(id),
            ));
        }
        let mut map = self.map();
        if let Some(e) = map.values().find(|e| e.info.info_hash == info.info_hash) {
            return Err(Refused::Conflict(
                format!("torrent {ih} is already added (id {})", e.id),
                Some(e.id),
            ));
        }
        if let Some(e) = map.values().find(|e| e.root == root) {
            return Err(Refused::Conflict(
                format!(
                    "{} is already the folder of torrent {} (id {})",
                    root.display(),
                    e.info.info_hash,
                    e.id
                ),
                Some(e.id),
            ));
        }
        let peer_text: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        let id = self
            .store()
            .insert(&ih, &metainfo, &root, paused, &peer_text)?;
        if !files.is_empty() {
            self.store().set_priorities(id, &prio_to_text(&prio))?;
        }
        let n = info.pieces() as usize;
        let mut state = State::new(paused, vec![false; n], None);
        state.prio = prio;
        let entry = Arc::new(Entry {
            id,
            info,
            root,
            peers,
            state: Mutex::new(state),
        });
        map.insert(id, entry.clone());
        drop(map);
        tracing::info!(id, info_hash = %ih, name = %entry.info.name, "added");
        self.emit("added", serde_json::json!({ "id": id, "info_hash": ih }));
        if !paused {
            self.clone().spawn_start(entry, None);
        }
        Ok((id, ih))
    }
}
