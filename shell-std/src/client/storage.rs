//! The torrent's bytes on disk: a flat byte range mapped onto files, read
//! and written with positional I/O (`read_at` / `write_at`), so any number
//! of peer tasks share the open files without seeking.
//!
//! Paths come only from the core's sanitizer (no `..`, no absolute paths,
//! no separators or NUL in a component; duplicates renamed by [`Info`]) and
//! are checked again here: every path is built under the root, each
//! component must be one plain name, and a component that already exists
//! as a symlink is refused, so nothing outside the output folder is ever
//! opened.
//!
//! BEP 47 symlinks are created last, with a relative target built from
//! plain components that the core checked strictly (no `..`, nothing
//! absolute), so every link resolves inside the torrent's folder; a link
//! whose target would not is skipped with a warning, the rest downloads.
//! BEP 47 `x` sets the executable bit; `h` (hidden) is not applied.
//!
//! Selective download ([`super::select`]): a skipped file that is not on
//! disk is never created; its bytes in pieces shared with wanted files map
//! to the part file, the rest reads as zeros and writes are dropped
//! ([`Storage::open_selected`]); [`Storage::want_file`] creates it later
//! and moves its bytes out of the part file.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use std::os::unix::fs::PermissionsExt;

use anyhow::{bail, Context};
use ourtorrent_core::pieces::PieceHasher;

use super::meta::Info;
use super::select::{parts_path, PartsLayout, Priority};

/// One file of the torrent, placed in the byte stream.
struct Slot {
    offset: u64,
    len: u64,
    /// `None` for a BEP 47 padding file: reads as zeros, writes are dropped.
    file: Option<File>,
    /// The file existed (with data) before we opened it: its pieces are
    /// worth verifying on resume.
    existed: bool,
    /// Where it is, for error messages.
    path: PathBuf,
    /// Position in `file` of the slot's first byte (0 but in the part file).
    base: u64,
    /// This slot stands for skipped file N (the part file, or nothing).
    skipped: Option<usize>,
}

/// The open files of one torrent.
pub struct Storage {
    slots: RwLock<Vec<Slot>>,
    total: u64,
    piece_len: u64,
    /// Where the data lives (the file, or the top folder).
    pub root: PathBuf,
}

/// Checks that `c` is exactly one plain path component.
fn plain(c: &str) -> anyhow::Result<&str> {
    let mut it = Path::new(c).components();
    match (it.next(), it.next()) {
        (Some(Component::Normal(_)), None) if !c.contains(['/', '\\', '\0']) => Ok(c),
        _ => bail!("unsafe path component {c:?} in the torrent"),
    }
}

/// Refuses `p` if it exists as a symlink.
fn not_symlink(p: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => {
            bail!(
                "{}: is a symlink; refusing to write through it",
                p.display()
            )
        }
        _ => Ok(()),
    }
}

/// Creates the BEP 47 symlink `link` (at `comps` under `root`) pointing to
/// `target` (relative to `root`), if that stays inside `root`; otherwise,
/// or if anything is in the way, warns and skips it.
fn make_symlink(root: &Path, comps: &[String], target: &Result<String, String>, link: &Path) {
    let shown = comps.join("/");
    let target = match target {
        Ok(t) => t,
        Err(why) => {
            eprintln!("warning: {shown}: symlink not created: target {why}");
            return;
        }
    };
    // From the link's folder back up to `root`, then down the target.
    let mut rel = PathBuf::new();
    for _ in 1..comps.len() {
        rel.push("..");
    }
    for c in target.split('/') {
        match plain(c) {
            Ok(c) => rel.push(c),
            Err(e) => {
                eprintln!("warning: {shown}: symlink not created: {e}");
                return;
            }
        }
    }
    if std::fs::read_link(link).is_ok_and(|t| t == rel) {
        return; // made by an earlier run
    }
    if !link.starts_with(root) || std::fs::symlink_metadata(link).is_ok() {
        eprintln!("warning: {shown}: symlink not created: the path exists");
        return;
    }
    if let Err(e) = std::os::unix::fs::symlink(&rel, link) {
        eprintln!("warning: {shown}: symlink not created: {e}");
    }
}

/// The slots of skipped file `i` (`f`, not on disk): its shared segments
/// ([`PartsLayout`]) in the part file (opened, and created when `create`,
/// at the first need), the gaps between them as nothing (zeros; writes
/// dropped). Without `create` and without a part file: all gap.
#[allow(clippy::too_many_arguments)]
fn skipped_slots(
    slots: &mut Vec<Slot>,
    parts: &mut Option<(File, bool)>,
    i: usize,
    f: &super::meta::FileEntry,
    layout: &PartsLayout,
    path: &Path,
    create: bool,
) -> anyhow::Result<()> {
    if !create && parts.is_none() && !path.exists() {
        let gap = Slot {
            offset: f.offset,
            len: f.len,
            file: None,
            existed: false,
            path: path.to_path_buf(),
            base: 0,
            skipped: Some(i),
        };
        slots.push(gap);
        return Ok(());
    }
    let mut at = f.offset;
    let end = f.offset + f.len;
    let gap = |from: u64, to: u64| Slot {
        offset: from,
        len: to - from,
        file: None,
        existed: false,
        path: path.to_path_buf(),
        base: 0,
        skipped: Some(i),
    };
    for &(off, len, base) in layout.segments.get(i).into_iter().flatten() {
        if off > at {
            slots.push(gap(at, off));
        }
        if parts.is_none() {
            not_symlink(path)?;
            let existed = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
            let file = OpenOptions::new()
                .read(true)
                .write(create)
                .create(create)
                .truncate(false)
                .open(path)
                .with_context(|| format!("{}", path.display()))?;
            *parts = Some((file, existed));
        }
        let Some((file, existed)) = parts.as_ref() else {
            bail!("{}: part file not open", path.display());
        };
        slots.push(Slot {
            offset: off,
            len,
            file: Some(file.try_clone()?),
            existed: *existed,
            path: path.to_path_buf(),
            base,
            skipped: Some(i),
        });
        at = off + len;
    }
    if at < end {
        slots.push(gap(at, end));
    }
    Ok(())
}

impl Storage {
    fn slots(&self) -> RwLockReadGuard<'_, Vec<Slot>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner())
    }

    /// True if file `i` is skipped and not on disk (its bytes go to the
    /// part file).
    pub fn is_skipped(&self, i: usize) -> bool {
        self.slots().iter().any(|s| s.skipped == Some(i))
    }

    /// File `i` is wanted now: if it was skipped (not on disk), creates it
    /// (and its folders), copies its bytes out of the part file and maps
    /// it in. Reads and writes wait meanwhile, so no block lands in the
    /// part file after the copy.
    pub fn want_file(&self, info: &Info, i: usize) -> anyhow::Result<()> {
        let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
        if !slots.iter().any(|s| s.skipped == Some(i)) {
            return Ok(());
        }
        let Some(f) = info.files.get(i) else {
            bail!("no file {i}");
        };
        let paths = Self::paths(info, &self.root)?;
        let Some(p) = paths.get(i) else {
            bail!("no file {i}");
        };
        if info.multi_file {
            let mut dir = self.root.clone();
            not_symlink(&dir)?;
            std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
            for c in &f.path[..f.path.len().saturating_sub(1)] {
                dir.push(plain(c)?);
                not_symlink(&dir)?;
                if !dir.exists() {
                    std::fs::create_dir(&dir).with_context(|| format!("{}", dir.display()))?;
                }
            }
        }
        not_symlink(p)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .with_context(|| format!("{}", p.display()))?;
        file.set_len(f.len)
            .with_context(|| format!("{}: pre-allocate", p.display()))?;
        for s in slots.iter().filter(|s| s.skipped == Some(i)) {
            if let Some(parts) = &s.file {
                let mut buf = vec![0u8; s.len as usize];
                parts
                    .read_exact_at(&mut buf, s.base)
                    .or_else(|e| match e.kind() {
                        // Never written: the part file ends before it.
                        io::ErrorKind::UnexpectedEof => Ok(()),
                        _ => Err(e),
                    })
                    .with_context(|| format!("{}", s.path.display()))?;
                file.write_all_at(&buf, s.offset - f.offset)
                    .with_context(|| format!("{}", p.display()))?;
            }
        }
        slots.retain(|s| s.skipped != Some(i));
        slots.push(Slot {
            offset: f.offset,
            len: f.len,
            file: Some(file),
            existed: false,
            path: p.clone(),
            base: 0,
            skipped: None,
        });
        slots.sort_by_key(|s| s.offset);
        Ok(())
    }

    /// The path of every file under `root` (the data itself: the file of a
    /// single-file torrent or the top folder of a multi-file one), checked.
    pub fn paths(info: &Info, root: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(info.files.len());
        for f in &info.files {
            let mut p = root.to_path_buf();
            // Padding files are never stored (and may have no path).
            if info.multi_file && !f.padding {
                for c in &f.path {
                    p.push(plain(c)?);
                }
            }
            if !p.starts_with(root) {
                bail!("{}: escapes the output folder", p.display());
            }
            if !f.padding && !seen.insert(p.clone()) {
                bail!("{}: listed twice in the torrent", p.display());
            }
            out.push(p);
        }
        Ok(out)
    }

    /// Opens (creating folders and files, pre-allocated to their length
    /// when `create`) every file of the torrent under `root`.
    pub fn open(info: &Info, root: &Path, create: bool) -> anyhow::Result<Storage> {
        Self::open_selected(info, root, create, &[])
    }

    /// [`Self::open`], where a file whose priority in `prio` is skip and
    /// that is not on disk is not created (see the module docs); files
    /// past the end of `prio` are wanted.
    pub fn open_selected(
        info: &Info,
        root: &Path,
        create: bool,
        prio: &[Priority],
    ) -> anyhow::Result<Storage> {
        let paths = Self::paths(info, root)?;
        let layout = PartsLayout::of(info);
        let parts_file = parts_path(info, root);
        let mut parts: Option<(File, bool)> = None;
        let base = if info.multi_file {
            root.to_path_buf()
        } else {
            root.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let mut slots = Vec::new();
        for (i, (f, p)) in info.files.iter().zip(&paths).enumerate() {
            if f.padding {
                slots.push(Slot {
                    offset: f.offset,
                    len: f.len,
                    file: None,
                    existed: false,
                    path: p.clone(),
                    base: 0,
                    skipped: None,
                });
                continue;
            }
            if prio.get(i).is_some_and(|p| !p.wanted()) && !p.exists() {
                skipped_slots(&mut slots, &mut parts, i, f, &layout, &parts_file, create)?;
                continue;
            }
            // Check (and make) each folder from the root down.
            let mut dir = base.clone();
            if info.multi_file {
                not_symlink(&dir)?;
                if create && !dir.exists() {
                    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
                }
                for c in &f.path[..f.path.len().saturating_sub(1)] {
                    dir.push(c);
                    not_symlink(&dir)?;
                    if create && !dir.exists() {
                        std::fs::create_dir(&dir).with_context(|| format!("{}", dir.display()))?;
                    }
                }
            }
            if f.symlink.is_some() {
                continue; // made below, once every file exists
            }
            not_symlink(p)?;
            let existed = std::fs::metadata(p).is_ok_and(|m| m.len() > 0);
            let file = if create {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(p)
                    .with_context(|| format!("{}", p.display()))?;
                if file.metadata()?.len() < f.len {
                    file.set_len(f.len)
                        .with_context(|| format!("{}: pre-allocate", p.display()))?;
                }
                if f.executable {
                    // BEP 47 `x`: executable wherever it is readable.
                    let mode = file.metadata()?.permissions().mode();
                    file.set_permissions(std::fs::Permissions::from_mode(
                        mode | ((mode & 0o444) >> 2),
                    ))
                    .with_context(|| format!("{}: chmod", p.display()))?;
                }
                file
            } else {
                let file = File::open(p).with_context(|| format!("{}", p.display()))?;
                let len = file.metadata()?.len();
                if len != f.len {
                    bail!("{}: {len} bytes, the torrent says {}", p.display(), f.len);
                }
                file
            };
            if f.len > 0 {
                slots.push(Slot {
                    offset: f.offset,
                    len: f.len,
                    file: Some(file),
                    existed,
                    path: p.clone(),
                    base: 0,
                    skipped: None,
                });
            }
        }
        if create && info.multi_file {
            for (f, p) in info.files.iter().zip(&paths) {
                if let Some(target) = &f.symlink {
                    make_symlink(root, &f.path, target, p);
                }
            }
        }
        if create {
            print!("{}", crate::info::renames(info));
        }
        slots.retain(|s| s.len > 0);
        Ok(Storage {
            slots: RwLock::new(slots),
            total: info.total,
            piece_len: info.piece_len,
            root: root.to_path_buf(),
        })
    }

    fn each<F>(&self, mut off: u64, len: usize, mut f: F) -> io::Result<()>
    where
        F: FnMut(&Slot, u64, std::ops::Range<usize>) -> io::Result<()>,
    {
        if off + len as u64 > self.total {
            return Err(io::Error::other("access past the end of the torrent"));
        }
        let mut done = 0usize;
        let slots = self.slots();
        let mut i = slots.partition_point(|s| s.offset + s.len <= off);
        while done < len {
            let s = slots
                .get(i)
                .ok_or_else(|| io::Error::other("no file at offset"))?;
            let in_file = off - s.offset;
            let n = ((s.len - in_file) as usize).min(len - done);
            f(s, s.base + in_file, done..done + n)?;
            done += n;
            off += n as u64;
            i += 1;
        }
        Ok(())
    }

    /// Writes `data` at torrent offset `off`. An error names the file.
    pub fn write_at(&self, off: u64, data: &[u8]) -> io::Result<()> {
        self.each(off, data.len(), |s, at, r| match &s.file {
            Some(f) => f
                .write_all_at(&data[r], at)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", s.path.display()))),
            None => Ok(()),
        })
    }

    /// Bytes the files still need on disk: their lengths less what is
    /// already allocated to them (files are created sparse, so an existing
    /// file of the right length may still need its space).
    pub fn space_needed(info: &Info, paths: &[PathBuf]) -> u64 {
        Self::space_needed_selected(info, paths, &[])
    }

    /// [`Self::space_needed`] for the wanted files of `prio` (skipped ones
    /// take at most two pieces each in the part file: not counted).
    pub fn space_needed_selected(info: &Info, paths: &[PathBuf], prio: &[Priority]) -> u64 {
        use std::os::unix::fs::MetadataExt;
        info.files
            .iter()
            .zip(paths)
            .enumerate()
            .filter(|(i, _)| prio.get(*i).is_none_or(|p| p.wanted()))
            .map(|(_, x)| x)
            .filter(|(f, _)| !f.padding)
            .map(|(f, p)| {
                let have = std::fs::metadata(p).map_or(0, |m| m.blocks() * 512);
                f.len.saturating_sub(have)
            })
            .sum()
    }

    /// Refuses, before the first byte, a download that cannot fit in the
    /// free space of the file system that will hold `root`.
    pub fn check_space(info: &Info, root: &Path) -> anyhow::Result<()> {
        Self::check_space_selected(info, root, &[])
    }

    /// [`Self::check_space`] for the wanted files of `prio`.
    pub fn check_space_selected(info: &Info, root: &Path, prio: &[Priority]) -> anyhow::Result<()> {
        let paths = Self::paths(info, root)?;
        let needed = Self::space_needed_selected(info, &paths, prio);
        // The nearest folder that exists is on the file system files will
        // be created on.
        let mut dir = root;
        while !dir.is_dir() {
            match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => dir = p,
                _ => {
                    dir = Path::new(".");
                    break;
                }
            }
        }
        let st = rustix::fs::statvfs(dir).with_context(|| format!("{}: statvfs", dir.display()))?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if needed > free {
            bail!(
                "{}: not enough free space: the torrent needs {needed} more bytes, {free} are free there",
                dir.display()
            );
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at torrent offset `off`.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.each(off, buf.len(), |s, at, r| match &s.file {
            Some(f) => f.read_exact_at(&mut buf[r], at),
            None => {
                buf[r].fill(0);
                Ok(())
            }
        })
    }

    /// Byte range of piece `i`.
    pub fn piece_range(&self, i: u32) -> (u64, usize) {
        let start = u64::from(i) * self.piece_len;
        (start, (self.total - start).min(self.piece_len) as usize)
    }

    /// True if some file holding piece `i` existed before we opened it.
    fn worth_checking(&self, i: u32) -> bool {
        let (start, len) = self.piece_range(i);
        let end = start + len as u64;
        self.slots()
            .iter()
            .any(|s| s.existed && s.offset < end && start < s.offset + s.len)
    }

    /// Verifies every piece that may be on disk with up to `threads`
    /// threads; returns the pieces whose SHA-1 matches. Pieces lying only
    /// in files we just created are skipped (they are zeros).
    pub fn verify_all(&self, info: &Info, threads: usize, all: bool) -> Vec<bool> {
        let n = info.pieces();
        let threads = threads.max(1);
        let mut ok = vec![false; n as usize];
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        let mut buf = vec![0u8; self.piece_len as usize];
                        let mut good = Vec::new();
                        for i in (t as u32..n).step_by(threads) {
                            if !all && !self.worth_checking(i) {
                                continue;
                            }
                            let (off, len) = self.piece_range(i);
                            if self.read_at(off, &mut buf[..len]).is_err() {
                                continue;
                            }
                            let mut h = PieceHasher::new();
                            h.update(&buf[..len]);
                            if h.finish() == info.hashes[i as usize] {
                                good.push(i);
                            }
                        }
                        good
                    })
                })
                .collect();
            for h in handles {
                for i in h.join().unwrap_or_default() {
                    ok[i as usize] = true;
                }
            }
        });
        ok
    }
}
