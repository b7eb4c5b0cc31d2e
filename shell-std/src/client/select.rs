//! Selective download: a priority per file (skip, normal, high), the
//! picker's masks built from them, and the part file that holds a skipped
//! file's bytes in the pieces it shares with a wanted one.
//!
//! A piece is wanted when any byte of it belongs to a wanted file, and
//! high when any byte belongs to a high one. A skipped file is never
//! created; its pieces are not fetched, except those shared with a wanted
//! neighbour (a piece is verified whole), whose bytes for the skipped file
//! go to the part file `.<name>.parts` beside the torrent's data, never
//! into the skipped file. The part file's layout depends on the torrent
//! alone ([`PartsLayout`]): each file owns a fixed place there for its
//! first piece's bytes and its last piece's bytes when that piece is shared
//! (at most two pieces' worth; the file is sparse, only what is written
//! takes space), so a later run with another selection reads the same
//! bytes back (resume).
//!
//! Files are named on the command line by the index `shell-std info`
//! shows, or by a glob on their path in the torrent (`*` any run of
//! characters, `/` included; `?` one character), e.g. `--skip '*.iso'`.

use std::sync::atomic::Ordering::Relaxed;

use anyhow::bail;
use ourtorrent_core::pieces::Bitfield;

use super::meta::Info;
use super::swarm::{Ctx, StdTorrent};

/// Most file selectors one `--only`/`--skip` takes.
pub const MAX_SELECTORS: usize = 1024;

/// A file's priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Priority {
    /// Not downloaded (nor created).
    Skip,
    /// Downloaded.
    #[default]
    Normal,
    /// Downloaded before the normal ones.
    High,
}

impl Priority {
    /// Wanted (normal or high).
    pub fn wanted(self) -> bool {
        self != Priority::Skip
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(Priority::Skip),
            "normal" => Ok(Priority::Normal),
            "high" => Ok(Priority::High),
            _ => Err(format!("{s:?}: want skip, normal or high")),
        }
    }
}

/// `*` any run of characters, `?` one character; everything else itself.
fn glob(pat: &[char], s: &[char]) -> bool {
    // Iterative with one backtrack point (the last `*`): linear in
    // practice, never recursive.
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some('*') => {
                star = Some((p, i));
                p += 1;
            }
            Some(&c) if c == '?' || s.get(i) == Some(&c) => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pat.get(p..).is_some_and(|r| r.iter().all(|&c| c == '*'))
}

/// The files `list` names (`N[,N…]`: indexes as `info` shows them, or
/// globs on paths), as a mask over `info.files`. An index out of range, a
/// glob matching nothing, or an empty list is an error.
pub fn parse_list(info: &Info, list: &str) -> anyhow::Result<Vec<bool>> {
    let mut hit = vec![false; info.files.len()];
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    if items.len() > MAX_SELECTORS {
        bail!("{} file selectors; at most {MAX_SELECTORS}", items.len());
    }
    for item in items {
        if item.is_empty() {
            bail!("{list:?}: an empty file selector");
        }
        if let Ok(n) = item.parse::<usize>() {
            match hit.get_mut(n) {
                Some(h) => *h = true,
                None => bail!(
                    "file {n}: the torrent has files 0..={} (see `shell-std info`)",
                    info.files.len().saturating_sub(1)
                ),
            }
            continue;
        }
        let pat: Vec<char> = item.chars().collect();
        let mut any = false;
        for (f, h) in info.files.iter().zip(hit.iter_mut()) {
            let path: Vec<char> = f.path.join("/").chars().collect();
            let full: Vec<char> = format!("{}/{}", info.name, f.path.join("/"))
                .chars()
                .collect();
            if !f.padding && (glob(&pat, &path) || glob(&pat, &full)) {
                *h = true;
                any = true;
            }
        }
        if !any {
            bail!("{item:?} matches no file of the torrent (see `shell-std info`)");
        }
    }
    Ok(hit)
}

/// Priorities from `--only` / `--skip` (both `None`: every file normal).
pub fn from_flags(
    info: &Info,
    only: Option<&str>,
    skip: Option<&str>,
) -> anyhow::Result<Vec<Priority>> {
    let mut p = vec![Priority::Normal; info.files.len()];
    if let Some(l) = only {
        let hit = parse_list(info, l)?;
        for (p, h) in p.iter_mut().zip(hit) {
            if !h {
                *p = Priority::Skip;
            }
        }
    }
    if let Some(l) = skip {
        for (p, h) in p.iter_mut().zip(parse_list(info, l)?) {
            if h {
                *p = Priority::Skip;
            }
        }
    }
    let real = |i: &usize| info.files.get(*i).is_some_and(|f| !f.padding && f.len > 0);
    if !(0..p.len()).filter(real).any(|i| p[i].wanted()) {
        bail!("every file is skipped: nothing to download");
    }
    Ok(p)
}

/// Pieces touched by file `f` (none for an empty file).
fn pieces_of(info: &Info, f: usize) -> std::ops::Range<u32> {
    let Some(e) = info.files.get(f) else {
        return 0..0;
    };
    if e.len == 0 || info.piece_len == 0 {
        return 0..0;
    }
    let first = e.offset / info.piece_len;
    let last = (e.offset + e.len - 1) / info.piece_len;
    first as u32..last as u32 + 1
}

/// A piece mask in the shell's storage.
pub type Mask = Option<Bitfield<Box<[u8]>>>;

/// The picker's masks for `prio`: (wanted, high), each `None` when it
/// would not restrict anything (every piece wanted; no piece high).
pub fn masks(info: &Info, prio: &[Priority]) -> (Mask, Mask) {
    let n = info.pieces();
    let mk = || Bitfield::new(vec![0u8; (n as usize).div_ceil(8)].into_boxed_slice(), n).ok();
    let (Some(mut wanted), Some(mut high)) = (mk(), mk()) else {
        return (None, None);
    };
    for (i, f) in info.files.iter().enumerate() {
        // Files past the end of `prio` (all of them when it is empty) are
        // normal.
        let p = prio.get(i).copied().unwrap_or_default();
        if f.padding {
            continue;
        }
        for piece in pieces_of(info, i) {
            if p.wanted() {
                let _ = wanted.set(piece);
            }
            if p == Priority::High {
                let _ = high.set(piece);
            }
        }
    }
    (
        (!wanted.is_complete()).then_some(wanted),
        (high.count() > 0).then_some(high),
    )
}

/// Gives the torrent's picker the masks of `prio`.
pub fn apply(torrent: &mut StdTorrent, info: &Info, prio: &[Priority]) -> anyhow::Result<()> {
    let (wanted, high) = masks(info, prio);
    torrent
        .set_wanted(wanted)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    torrent.set_high(high).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

impl Ctx {
    /// Each file's priority now (in torrent order).
    pub fn file_priorities(&self) -> Vec<Priority> {
        let p = self.priorities.lock().unwrap_or_else(|e| e.into_inner());
        (0..self.info.files.len())
            .map(|i| p.get(i).copied().unwrap_or_default())
            .collect()
    }

    /// Sets file `i`'s priority, in force at once: the picker's masks
    /// change (pieces in progress are finished), a skipped file made
    /// wanted is created and its bytes moved out of the part file (disk
    /// I/O: call it off the async threads), and the torrent is complete
    /// again only once its newly wanted pieces are. Peers we were not
    /// interested in learn of it at their next `have`.
    pub fn set_file_priority(&self, i: usize, p: Priority) -> anyhow::Result<()> {
        let mut prio = self.file_priorities();
        let Some(slot) = prio.get_mut(i) else {
            bail!(
                "file {i}: the torrent has files 0..={}",
                self.info.files.len().saturating_sub(1)
            );
        };
        if p.wanted() {
            self.storage.want_file(&self.info, i)?;
        }
        *slot = p;
        let mut g = self.lock();
        apply(&mut g.torrent, &self.info, &prio)?;
        let complete = g.torrent.picker().wanted_complete();
        *self.priorities.lock().unwrap_or_else(|e| e.into_inner()) = prio;
        self.complete.store(complete, Relaxed);
        g.wake();
        drop(g);
        if complete {
            self.done.notify_one();
        }
        Ok(())
    }

    /// Sequential mode on or off (`--sequential`), in force at once.
    pub fn set_sequential(&self, on: bool) {
        self.lock().torrent.set_sequential(on);
    }

    /// Bytes of the wanted pieces (the whole torrent when nothing is
    /// skipped): the progress bar's length.
    pub fn wanted_bytes(&self) -> u64 {
        let g = self.lock();
        let p = g.torrent.picker();
        (0..self.info.pieces())
            .filter(|&i| p.is_wanted(i))
            .map(|i| self.storage.piece_range(i).1 as u64)
            .sum()
    }

    /// Bytes of the wanted pieces verified.
    pub fn wanted_verified_bytes(&self) -> u64 {
        let g = self.lock();
        let p = g.torrent.picker();
        p.have()
            .iter_set()
            .filter(|&i| p.is_wanted(i))
            .map(|i| self.storage.piece_range(i).1 as u64)
            .sum()
    }

    /// For the `complete:` line: empty when every file is wanted, else
    /// ` (wanted files: N of M; skipped: LIST)`.
    pub fn selection_note(&self) -> String {
        let prio = self.file_priorities();
        let real: Vec<usize> = (0..self.info.files.len())
            .filter(|&i| !self.info.files[i].padding)
            .collect();
        let skipped: Vec<usize> = real
            .iter()
            .copied()
            .filter(|&i| !prio[i].wanted())
            .collect();
        if skipped.is_empty() {
            return String::new();
        }
        let names: Vec<String> = skipped
            .iter()
            .take(5)
            .map(|&i| format!("{i} {}", self.info.files[i].path.join("/")))
            .collect();
        format!(
            " (wanted files: {} of {}; skipped: {}{})",
            real.len() - skipped.len(),
            real.len(),
            names.join(", "),
            if skipped.len() > 5 { ", …" } else { "" }
        )
    }
}

/// Where a file's shared bytes live in the part file: (torrent offset,
/// length, part-file offset) for its first piece's bytes and for its last
/// piece's, when those pieces hold bytes of other files.
#[derive(Debug, Clone, Default)]
pub struct PartsLayout {
    /// Per file of the torrent (padding files: none).
    pub segments: Vec<Vec<(u64, u64, u64)>>,
}

impl PartsLayout {
    /// The layout of `info` (depends on nothing else).
    pub fn of(info: &Info) -> Self {
        let p = info.piece_len.max(1);
        let mut at = 0u64;
        let mut segments = Vec::with_capacity(info.files.len());
        for f in &info.files {
            let mut segs = Vec::new();
            if !f.padding && f.len > 0 {
                let (s, e) = (f.offset, f.offset + f.len);
                let first = s / p;
                let last = (e - 1) / p;
                let piece_end = |i: u64| ((i + 1) * p).min(info.total);
                if first * p < s || piece_end(first) > e {
                    let len = e.min(piece_end(first)) - s;
                    segs.push((s, len, at));
                    at += len;
                }
                if last != first && piece_end(last) > e {
                    let len = e - last * p;
                    segs.push((last * p, len, at));
                    at += len;
                }
            }
            segments.push(segs);
        }
        PartsLayout { segments }
    }
}

/// The part file's path: `.<name>.parts` beside the torrent's data.
pub fn parts_path(info: &Info, root: &std::path::Path) -> std::path::PathBuf {
    root.parent()
        .unwrap_or(std::path::Path::new("."))
        .join(format!(".{}.parts", info.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::meta::FileEntry;

    fn info(lens: &[u64], piece: u64) -> Info {
        let mut off = 0;
        let files = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let f = FileEntry {
                    path: vec![format!("d{}", i % 2), format!("f{i}.bin")],
                    renamed_from: None,
                    symlink: None,
                    executable: false,
                    len,
                    offset: off,
                    padding: false,
                };
                off += len;
                f
            })
            .collect();
        let total = off;
        Info {
            name: "t".into(),
            name_renamed_from: None,
            info_hash: ourtorrent_core::id::InfoHash([0; 20]),
            piece_len: piece,
            total,
            hashes: vec![[0; 20]; total.div_ceil(piece) as usize],
            files,
            multi_file: true,
            private: false,
            trackers: vec![],
            metadata: std::sync::Arc::from(&[][..]),
        }
    }

    #[test]
    fn globs() {
        let g = |p: &str, s: &str| {
            glob(
                &p.chars().collect::<Vec<_>>(),
                &s.chars().collect::<Vec<_>>(),
            )
        };
        assert!(g("*.bin", "d0/f1.bin"));
        assert!(g("d?/f1.*", "d1/f1.bin"));
        assert!(!g("*.iso", "d0/f1.bin"));
        assert!(g("*", ""));
        assert!(!g("?", ""));
        assert!(g("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn lists_and_their_errors() {
        let i = info(&[10, 20, 30], 16);
        assert_eq!(parse_list(&i, "0,2").unwrap(), [true, false, true]);
        assert_eq!(parse_list(&i, "d1/*").unwrap(), [false, true, false]);
        assert_eq!(parse_list(&i, "t/d0/f2.bin").unwrap(), [false, false, true]);
        assert!(parse_list(&i, "3").is_err());
        assert!(parse_list(&i, "*.iso").is_err());
        assert!(parse_list(&i, "0,").is_err());
        let many = vec!["0"; MAX_SELECTORS].join(",");
        assert!(parse_list(&i, &many).is_ok());
        let too_many = vec!["0"; MAX_SELECTORS + 1].join(",");
        assert!(parse_list(&i, &too_many).is_err());
        assert!(from_flags(&i, None, Some("0,1,2")).is_err());
        assert_eq!(
            from_flags(&i, Some("1"), None).unwrap(),
            [Priority::Skip, Priority::Normal, Priority::Skip]
        );
    }

    /// A skipped file is not created; its shared bytes go to the part
    /// file, the rest is dropped; made wanted, it is created with them.
    #[test]
    fn part_file_then_wanted_at_runtime() {
        use crate::client::storage::Storage;
        let d = tempfile::tempdir().unwrap();
        let i = info(&[10, 20, 30], 16);
        let root = d.path().join("t");
        let prio = [Priority::Normal, Priority::Skip, Priority::Normal];
        let s = Storage::open_selected(&i, &root, true, &prio).unwrap();
        let data: Vec<u8> = (1..=60u8).collect();
        s.write_at(0, &data).unwrap();
        let b = root.join("d1/f1.bin");
        assert!(!b.exists() && !root.join("d1").exists());
        assert!(s.is_skipped(1));
        // Every byte of file 1 is in a shared piece here: all read back.
        let mut back = vec![0u8; 60];
        s.read_at(0, &mut back).unwrap();
        assert_eq!(back, data);
        let parts = std::fs::read(parts_path(&i, &root)).unwrap();
        assert_eq!(&parts[10..30], &data[10..30]);
        s.want_file(&i, 1).unwrap();
        assert!(!s.is_skipped(1));
        assert_eq!(std::fs::read(&b).unwrap(), &data[10..30]);
        // A reopen (resume) with the file wanted uses it.
        drop(s);
        let s = Storage::open_selected(&i, &root, true, &[]).unwrap();
        let mut back = vec![0u8; 60];
        s.read_at(0, &mut back).unwrap();
        assert_eq!(back, data);
    }

    /// A skipped file's bytes in pieces of its own are dropped (never
    /// fetched anyway) and read as zeros.
    #[test]
    fn unshared_bytes_of_a_skipped_file_are_not_stored() {
        use crate::client::storage::Storage;
        let d = tempfile::tempdir().unwrap();
        // File 1 is [16, 64): pieces 1..=3, none shared.
        let i = info(&[16, 48, 16], 16);
        let root = d.path().join("t");
        let prio = [Priority::Normal, Priority::Skip, Priority::Normal];
        let s = Storage::open_selected(&i, &root, true, &prio).unwrap();
        s.write_at(0, &[7u8; 80]).unwrap();
        let mut back = vec![0u8; 80];
        s.read_at(0, &mut back).unwrap();
        assert_eq!(&back[..16], &[7; 16]);
        assert_eq!(&back[16..64], &[0; 48]);
        assert_eq!(&back[64..], &[7; 16]);
        assert!(!parts_path(&i, &root).exists(), "no part file needed");
    }

    /// Files of 10, 20, 30 bytes in pieces of 16: file 1 ([10, 30)) shares
    /// piece 0 with file 0 and piece 1 with file 2.
    #[test]
    fn masks_and_shared_segments() {
        let i = info(&[10, 20, 30], 16);
        let prio = [Priority::Normal, Priority::Skip, Priority::High];
        let (w, h) = masks(&i, &prio);
        // Pieces: 0 [0,16) 1 [16,32) 2 [32,48) 3 [48,60): all touched by a
        // wanted file, so nothing is restricted ...
        assert!(w.is_none());
        let h = h.expect("high pieces");
        assert_eq!(h.iter_set().collect::<Vec<_>>(), [1, 2, 3]);
        // No priorities at all: every file normal, no mask.
        assert!(matches!(masks(&i, &[]), (None, None)));
        // ... while skipping file 2 leaves pieces 2 and 3 out.
        let (w, _) = masks(&i, &[Priority::Normal, Priority::Normal, Priority::Skip]);
        assert_eq!(w.unwrap().iter_set().collect::<Vec<_>>(), [0, 1]);
        let l = PartsLayout::of(&i);
        assert_eq!(l.segments[0], [(0, 10, 0)]);
        // File 1: [10,16) in piece 0, [16,30) in piece 1 (shared with 2).
        assert_eq!(l.segments[1], [(10, 6, 10), (16, 14, 16)]);
        // File 2: [30,32) in piece 1; its last piece holds only its own bytes.
        assert_eq!(l.segments[2], [(30, 2, 30)]);
    }
}
