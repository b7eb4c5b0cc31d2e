//! A magnet's metadata phase (BEP 9): added, its metadata fetched in the
//! background (from its `x.pe`, the peers given, its trackers and the
//! DHT, BEP 5), then adopted as a `.torrent` under the same id.
//!
//! Limits: refused when there is nothing to connect to, or when the
//! info-hash is already added; metadata with pieces over
//! [`MAX_PIECE_LEN`] leaves the magnet in `error`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{parse, Daemon, Pending, Refused};
use crate::client::dht;
use crate::client::magnet::{self, MagnetLink};
use crate::client::storage::Storage;
use crate::client::{root_in, MAX_PIECE_LEN};
use crate::daemon::entry::{Entry, State};

impl Daemon {
    /// Adds a magnet link: its metadata is fetched (from its `x.pe`,
    /// `peers`, its trackers and the DHT), then it runs as a `.torrent`
    /// would, with the same id (`paused`: added paused once the metadata
    /// is in).
    pub fn add_magnet(
        self: &Arc<Self>,
        uri: &str,
        paused: bool,
        peers: Vec<SocketAddr>,
    ) -> Result<(i64, String), Refused> {
        let link = MagnetLink::parse(uri).map_err(|e| Refused::Bad(format!("magnet: {e:#}")))?;
        let ih = link.info_hash.to_string();
        if self.session.dht.get().is_none()
            && link.peers.is_empty()
            && peers.is_empty()
            && link.trackers.is_empty()
        {
            return Err(Refused::Bad(
                "nothing to connect to: the magnet has no x.pe and no tr, no peers were given and the DHT is off".into(),
            ));
        }
        let taken = self
            .map()
            .values()
            .find(|e| e.info.info_hash == link.info_hash)
            .map(|e| e.id)
            .or_else(|| {
                self.pending()
                    .values()
                    .find(|p| p.link.info_hash == link.info_hash)
                    .map(|p| p.id)
            });
        if let Some(id) = taken {
            return Err(Refused::Conflict(
                format!("torrent {ih} is already added (id {id})"),
                Some(id),
            ));
        }
        let peer_text: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
        let id = self.store().insert_magnet(&ih, uri, paused, &peer_text)?;
        tracing::info!(id, info_hash = %ih, "magnet added");
        self.emit("added", serde_json::json!({ "id": id, "info_hash": ih }));
        self.spawn_fetch(id, link, paused, peers);
        Ok((id, ih))
    }

    /// Runs magnet `id`'s metadata phase in the background, then adopts it.
    pub(super) fn spawn_fetch(
        self: &Arc<Self>,
        id: i64,
        link: MagnetLink,
        paused: bool,
        peers: Vec<SocketAddr>,
    ) {
        let (stop, stop_rx) = watch::channel(false);
        let p = Arc::new(Pending {
            id,
            link,
            paused,
            peers,
            stop,
            error: Mutex::new(None),
        });
        self.pending().insert(id, p.clone());
        let d = self.clone();
        tokio::spawn(async move {
            let (extra, feeder) = match d.session.dht.get().cloned() {
                Some(node) => {
                    let (tx, rx) = tokio::sync::mpsc::channel(64);
                    let f = tokio::spawn(dht::feed(node, p.link.info_hash, tx));
                    (Some(rx), Some(f))
                }
                None => (None, None),
            };
            let sources = magnet::Sources {
                direct: p.peers.clone(),
                trackers: true,
                extra,
            };
            let r = magnet::fetch(d.session.clone(), &p.link, sources, stop_rx).await;
            if let Some(f) = feeder {
                f.abort();
            }
            let r = match r {
                Ok(Some(f)) => d.adopt(&p, f),
                Ok(None) => return, // removed
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                tracing::error!(id, "magnet: {e:#}");
                *p.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{e:#}"));
                d.emit("state", serde_json::to_value(p.view()).unwrap_or_default());
            }
        });
    }

    /// A magnet whose metadata came: stored as its `.torrent` (never
    /// fetched again) and started as one, under the same id.
    fn adopt(self: &Arc<Self>, p: &Pending, f: magnet::Fetched) -> anyhow::Result<()> {
        let bytes = magnet::torrent_bytes(&f.metadata, &p.link.trackers);
        let info = parse(&bytes).map_err(|e| anyhow::anyhow!("the metadata: {e}"))?;
        if info.piece_len > MAX_PIECE_LEN {
            anyhow::bail!(
                "pieces of {} bytes are larger than the {} MiB this client handles",
                info.piece_len,
                MAX_PIECE_LEN >> 20
            );
        }
        let root = root_in(&self.download_dir, &info)?;
        Storage::paths(&info, &root)?;
        let mut map = self.map();
        if let Some(e) = map.values().find(|e| e.root == root) {
            anyhow::bail!(
                "{} is already the folder of torrent {} (id {})",
                root.display(),
                e.info.info_hash,
                e.id
            );
        }
        if self.pending().remove(&p.id).is_none() {
            return Ok(()); // removed meanwhile
        }
        self.store().set_metainfo(p.id, &bytes, &root)?;
        let mut peers = p.peers.clone();
        peers.extend(p.link.peers.iter().copied());
        peers.extend(f.learned.iter().map(|(a, _)| *a));
        peers.sort();
        peers.dedup();
        let n = info.pieces() as usize;
        tracing::info!(id = p.id, name = %info.name, bytes = f.metadata.len(), "metadata fetched");
        let entry = Arc::new(Entry {
            id: p.id,
            info,
            root,
            peers,
            state: Mutex::new(State::new(p.paused, vec![false; n], None)),
        });
        map.insert(p.id, entry.clone());
        drop(map);
        self.emit(
            "state",
            serde_json::to_value(entry.view()).unwrap_or_default(),
        );
        if !p.paused {
            self.clone().spawn_start(entry, None);
        }
        Ok(())
    }
}
