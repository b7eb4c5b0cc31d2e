//! A torrent's controls: file priorities, pause, resume, recheck and
//! remove.
//!
//! Limits: removing with the data deletes only files inside the download
//! folder (each checked, no symlinked folder on the way, before anything
//! is removed), never what a link points to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::priority::{apply_priorities, prio_to_text};
use super::{Daemon, Refused};
use crate::client::select::Priority;
use crate::client::storage::Storage;
use crate::daemon::entry::{Entry, Phase, View};
use crate::daemon::resume;
use crate::daemon::store;

impl Daemon {
    /// Sets file priorities of torrent `id` (`(index, priority)` pairs),
    /// stored, and in force at once when it runs; refused (nothing
    /// changed) for an index out of range or a padding file, or when every
    /// file with data would be skipped. Returns every file's priority.
    pub async fn set_priorities(
        self: &Arc<Self>,
        id: i64,
        changes: Vec<(usize, Priority)>,
    ) -> Result<Vec<Priority>, Refused> {
        let entry = self.get(id)?;
        let mut prio = entry.priorities();
        apply_priorities(&entry.info, &mut prio, &changes)?;
        self.store().set_priorities(id, &prio_to_text(&prio))?;
        let ctx = {
            let mut st = entry.lock();
            st.prio = prio.clone();
            st.live.as_ref().map(|l| l.ctx.clone())
        };
        if let Some(ctx) = ctx {
            // Disk I/O (a file made wanted is created): off the async threads.
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                for (i, p) in changes {
                    ctx.set_file_priority(i, p)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| Refused::Internal(e.to_string()))??;
        }
        tracing::info!(id, prios = %prio_to_text(&prio), "file priorities");
        self.emit(
            "state",
            serde_json::to_value(entry.view()).unwrap_or_default(),
        );
        Ok(prio)
    }

    /// Pauses torrent `id`.
    pub async fn pause(self: &Arc<Self>, id: i64) -> Result<View, Refused> {
        let entry = self.get(id)?;
        self.store().set_paused(id, true)?;
        entry.lock().phase = Phase::Paused;
        self.halt(&entry, false).await;
        self.save_one(&entry);
        let v = entry.view();
        self.emit("state", serde_json::to_value(&v).unwrap_or_default());
        Ok(v)
    }

    /// Resumes torrent `id` from the pieces it had (nothing hashed unless
    /// its files changed meanwhile).
    pub async fn resume(self: &Arc<Self>, id: i64) -> Result<View, Refused> {
        let entry = self.get(id)?;
        {
            let st = entry.lock();
            let failed = st.live.as_ref().is_some_and(|l| l.ctx.failure().is_some());
            if matches!(st.phase, Phase::Live | Phase::Checking) && !failed {
                return Ok(entry.view_unlocked(st));
            }
        }
        // From an error: whatever still runs stops first.
        self.halt(&entry, false).await;
        self.store().set_paused(id, false)?;
        let saved = entry.lock().saved.clone().and_then(|r| {
            store::unpack(&r.have, entry.info.pieces() as usize).map(|h| (h, r.files))
        });
        self.clone().spawn_start(entry.clone(), saved);
        let v = entry.view();
        self.emit("state", serde_json::to_value(&v).unwrap_or_default());
        Ok(v)
    }

    /// Stops torrent `id`, hashes everything on disk, and starts it again
    /// (unless it is paused).
    pub async fn recheck(self: &Arc<Self>, id: i64) -> Result<View, Refused> {
        let entry = self.get(id)?;
        let paused = entry.lock().phase == Phase::Paused;
        self.halt(&entry, false).await;
        entry.lock().saved = None;
        if paused {
            // Hash now, stay paused.
            let d = self.clone();
            let e = entry.clone();
            let have = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<bool>> {
                let info = &e.info;
                let paths = Storage::paths(info, &e.root)?;
                let check = resume::plan(info, None, &resume::stamps(info, &paths));
                let mut have = vec![false; info.pieces() as usize];
                let prio = e.lock().prio.clone();
                for i in d.hash(info, &e.root, &prio, &check.hash)? {
                    if let Some(h) = have.get_mut(i as usize) {
                        *h = true;
                    }
                }
                Ok(have)
            })
            .await
            .map_err(|e| Refused::Internal(e.to_string()))??;
            {
                let mut st = entry.lock();
                st.have = have;
                st.known = true;
            }
            self.save_one(&entry);
        } else {
            self.clone().spawn_start(entry.clone(), None);
        }
        Ok(entry.view())
    }

    /// Removes torrent `id`; with `delete_data` also its files (only files
    /// under the download folder: checked before anything is removed).
    pub async fn remove(self: &Arc<Self>, id: i64, delete_data: bool) -> Result<(), Refused> {
        let gone = self.pending().remove(&id);
        if let Some(p) = gone {
            let _ = p.stop.send(true);
            self.store().delete(id)?;
            tracing::info!(id, "magnet removed");
            self.emit("removed", serde_json::json!({ "id": id }));
            return Ok(());
        }
        let entry = self.get(id)?;
        let files = if delete_data {
            Some(self.data_files(&entry)?)
        } else {
            None
        };
        entry.lock().phase = Phase::Paused;
        self.map().remove(&id);
        self.halt(&entry, false).await;
        self.store().delete(id)?;
        if let Some(files) = files {
            remove_files(&entry.root, &files);
        }
        tracing::info!(id, delete_data, "removed");
        self.emit("removed", serde_json::json!({ "id": id }));
        Ok(())
    }

    /// The torrent's files to delete, each checked to lie inside the
    /// download folder (no symlinked folder on the way).
    fn data_files(&self, entry: &Entry) -> Result<Vec<PathBuf>, Refused> {
        let dir = self
            .download_dir
            .canonicalize()
            .map_err(|e| Refused::Internal(format!("{}: {e}", self.download_dir.display())))?;
        let outside = || {
            Refused::Forbidden(format!(
                "{}: not inside the download folder {}; nothing removed",
                entry.root.display(),
                dir.display()
            ))
        };
        let paths = Storage::paths(&entry.info, &entry.root).map_err(|_| outside())?;
        let mut out = Vec::new();
        for p in paths {
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue; // not there
            };
            if m.is_dir() {
                continue;
            }
            let parent = p
                .parent()
                .and_then(|x| x.canonicalize().ok())
                .ok_or_else(outside)?;
            if !parent.starts_with(&dir) || parent == dir && entry.info.multi_file {
                return Err(outside());
            }
            out.push(p);
        }
        Ok(out)
    }
}

/// Removes `files` (regular files and symlinks only, never what a link
/// points to), then the folders under `root` they leave empty, and `root`.
fn remove_files(root: &Path, files: &[PathBuf]) {
    for f in files {
        if let Err(e) = std::fs::remove_file(f) {
            tracing::warn!("{}: not removed: {e}", f.display());
        }
    }
    // Deepest folders first; remove_dir leaves a folder that is not empty.
    let mut dirs: Vec<&Path> = files
        .iter()
        .flat_map(|f| f.ancestors().skip(1))
        .filter(|d| d.starts_with(root))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}
