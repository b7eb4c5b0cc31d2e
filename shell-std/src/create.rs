//! `shell-std create PATH --tracker URL … -o FILE.torrent`: makes a BEP 3
//! torrent (BEP 12 announce-list, BEP 27 private, BEP 19 web seeds) with the
//! core's canonical bencode encoder.
//!
//! Refused before any hashing: a `--tracker` or `--web-seed` the core's
//! [`TrackerUrl`] parser refuses (named with the reason and byte offset), a
//! piece length that is not a power of two in 16 KiB..=256 MiB, an `-o` in a
//! folder that does not exist, and an existing `-o` without `--force`. The
//! torrent is written to a temporary file beside `-o` (which also proves the
//! folder writable) and renamed into place; "created" is printed only then.
//!
//! A folder becomes a multi-file torrent with its files in a stable order
//! (sorted by path, byte-wise); symlinks and special files are skipped
//! (with a warning) so a torrent never reaches outside `PATH`. Without
//! `--piece-length`, the piece length is the smallest power of two from
//! 16 KiB to 16 MiB that keeps the torrent at about 1500 pieces or fewer.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use ourtorrent_core::bencode::Encoder;
use ourtorrent_core::pieces::PieceHasher;
use ourtorrent_core::tracker::url::{Scheme, TrackerUrl};

/// Smallest piece length accepted (one BEP 3 block, 16 KiB).
pub const MIN_PIECE_LENGTH: u64 = 16 << 10;
/// Largest piece length accepted (libtorrent's limit is 128 MiB for
/// loading; we allow one more doubling for huge data sets).
pub const MAX_PIECE_LENGTH: u64 = 256 << 20;

/// `create` arguments.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A file (single-file torrent) or a folder (multi-file torrent).
    pub path: PathBuf,
    /// Tracker URL: udp://host:port/path, http://host:port/path or
    /// https://… (path optional; http and https ports default to 80 and
    /// 443). Repeatable; each one is its own BEP 12 tier.
    #[arg(long = "tracker", short = 't', value_name = "URL")]
    pub trackers: Vec<String>,
    /// Where to write the .torrent (its folder must exist).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Overwrite the output file if it exists.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Piece length: bytes or a size such as 256K, 1M, 16KiB (a power of
    /// two from 16 KiB to 256 MiB; default: about 1500 pieces).
    #[arg(long, value_name = "SIZE", value_parser = parse_piece_length)]
    pub piece_length: Option<u64>,
    /// Source tag stored in the info dictionary (`source`, as private
    /// trackers ask for); it changes the info-hash.
    #[arg(long)]
    pub source: Option<String>,
    /// BEP 19 web seed (http:// or https:// URL; repeatable), stored in
    /// `url-list`.
    #[arg(long = "web-seed", value_name = "URL")]
    pub web_seeds: Vec<String>,
    /// BEP 27: private torrent (peers only from its trackers).
    #[arg(long)]
    pub private: bool,
    /// Comment.
    #[arg(long)]
    pub comment: Option<String>,
    /// Leave out the creation date (reproducible output).
    #[arg(long)]
    pub no_date: bool,
}

/// Parses a size: decimal bytes, or a number with a binary suffix `K`,
/// `M`, `G` (also written `KB`/`KiB`, any case): `256K` = 262144.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (want e.g. 262144, 256K, 1M)"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "{s:?}: unknown size suffix {unit:?} (want K, M or G)"
            ))
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `--piece-length`: a size that is a power of two in
/// [`MIN_PIECE_LENGTH`]..=[`MAX_PIECE_LENGTH`].
pub fn parse_piece_length(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if !n.is_power_of_two() {
        return Err(format!(
            "{n} bytes is not a power of two (e.g. 16K, 256K, 1M, 4M)"
        ));
    }
    if !(MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&n) {
        return Err(format!(
            "{n} bytes is outside 16K..=256M ({MIN_PIECE_LENGTH}..={MAX_PIECE_LENGTH} bytes)"
        ));
    }
    Ok(n)
}

/// Checks a URL with the core's parser; `web` refuses `udp://` (BEP 19 web
/// seeds are HTTP).
fn check_url(flag: &str, url: &str, web: bool) -> anyhow::Result<()> {
    match TrackerUrl::parse(url) {
        Err(e) => bail!("{flag} {url:?}: {e}"),
        Ok(u) if web && u.scheme == Scheme::Udp => {
            bail!("{flag} {url:?}: a web seed is an http:// or https:// URL")
        }
        Ok(_) => Ok(()),
    }
}

/// The folder `-o` writes into, after refusing an existing file (without
/// `force`), a folder as output and a missing folder.
fn check_output(out: &Path, force: bool) -> anyhow::Result<PathBuf> {
    let shown = out.display();
    match std::fs::metadata(out) {
        Ok(m) if m.is_dir() => bail!("-o {shown}: is a folder; give a file name"),
        Ok(_) if !force => bail!("-o {shown}: file exists (use --force to overwrite it)"),
        _ => {}
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => bail!("-o {shown}: {} is not a folder", dir.display()),
        Err(_) => bail!("-o {shown}: folder {} does not exist", dir.display()),
    }
}

/// A temporary file beside the output, removed on drop unless renamed.
struct Staged {
    path: PathBuf,
    done: bool,
}

impl Staged {
    /// Creates it (never over an existing file): proves the folder writable.
    fn create(dir: &Path, out: &Path) -> anyhow::Result<(Self, File)> {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = dir.join(format!(".{name}.{}.part", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("-o {}: cannot write in {}", out.display(), dir.display()))?;
        Ok((Staged { path, done: false }, f))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Smallest power of two in 16 KiB..=16 MiB giving at most ~1500 pieces.
pub fn auto_piece_length(total: u64) -> u64 {
    let mut p: u64 = 16 << 10;
    while p < (16 << 20) && total.div_ceil(p) > 1500 {
        p *= 2;
    }
    p
}

/// Files under `root` (sorted by their path components), skipping
/// symlinks and special files.
fn walk(
    root: &Path,
    rel: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, PathBuf, u64)>,
) -> anyhow::Result<()> {
    let dir = root.join(rel.iter().collect::<PathBuf>());
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e
            .file_name()
            .into_string()
            .map_err(|n| anyhow::anyhow!("{}: file name is not UTF-8", Path::new(&n).display()))?;
        let ft = e.file_type()?;
        rel.push(name);
        if ft.is_dir() {
            walk(root, rel, out)?;
        } else if ft.is_file() {
            out.push((rel.clone(), e.path(), e.metadata()?.len()));
        } else {
            eprintln!(
                "warning: skipping {} (not a regular file)",
                e.path().display()
            );
        }
        rel.pop();
    }
    Ok(())
}

/// Runs the subcommand.
pub fn run(a: &CreateArgs) -> anyhow::Result<()> {
    for t in &a.trackers {
        check_url("--tracker", t, false)?;
    }
    for w in &a.web_seeds {
        check_url("--web-seed", w, true)?;
    }
    let out_dir = check_output(&a.output, a.force)?;
    let meta =
        std::fs::symlink_metadata(&a.path).with_context(|| format!("{}", a.path.display()))?;
    let name = a
        .path
        .canonicalize()?
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .context("PATH has no UTF-8 file name")?;
    let multi = meta.is_dir();
    let mut files = Vec::new();
    if multi {
        walk(&a.path, &mut Vec::new(), &mut files)?;
        if files.is_empty() {
            bail!("{}: no files", a.path.display());
        }
    } else if meta.is_file() {
        files.push((vec![name.clone()], a.path.clone(), meta.len()));
    } else {
        bail!("{}: not a file or folder", a.path.display());
    }
    let total: u64 = files.iter().map(|f| f.2).sum();
    if total == 0 {
        bail!("{}: no data (all files are empty)", a.path.display());
    }
    let piece_len = a.piece_length.unwrap_or_else(|| auto_piece_length(total));
    let (mut staged, mut staged_file) = Staged::create(&out_dir, &a.output)?;

    // Hash the concatenated files piece by piece.
    let mut pieces = Vec::with_capacity((total.div_ceil(piece_len) * 20) as usize);
    let mut buf = vec![0u8; piece_len as usize];
    let mut fill = 0usize;
    for (_, p, len) in &files {
        let mut f = File::open(p).with_context(|| format!("{}", p.display()))?;
        let mut left = *len;
        while left > 0 {
            let want = ((piece_len as usize) - fill).min(left as usize);
            f.read_exact(&mut buf[fill..fill + want])
                .with_context(|| format!("{}: changed while hashing", p.display()))?;
            fill += want;
            left -= want as u64;
            if fill == piece_len as usize {
                let mut h = PieceHasher::new();
                h.update(&buf);
                pieces.extend_from_slice(&h.finish());
                fill = 0;
            }
        }
    }
    if fill > 0 {
        let mut h = PieceHasher::new();
        h.update(&buf[..fill]);
        pieces.extend_from_slice(&h.finish());
    }

    let err = |e| anyhow::anyhow!("encode: {e:?}");
    let mut e = Encoder::new(Vec::new());
    let date = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    e.begin_dict().map_err(err)?;
    if let Some(first) = a.trackers.first() {
        e.key(b"announce").map_err(err)?;
        e.bytes(first.as_bytes()).map_err(err)?;
    }
    if a.trackers.len() > 1 {
        e.key(b"announce-list").map_err(err)?;
        e.begin_list().map_err(err)?;
        for t in &a.trackers {
            e.begin_list().map_err(err)?;
            e.bytes(t.as_bytes()).map_err(err)?;
            e.end().map_err(err)?;
        }
        e.end().map_err(err)?;
    }
    if let Some(c) = &a.comment {
        e.key(b"comment").map_err(err)?;
        e.bytes(c.as_bytes()).map_err(err)?;
    }
    e.key(b"created by").map_err(err)?;
    e.bytes(concat!("OurTorrent ", env!("CARGO_PKG_VERSION")).as_bytes())
        .map_err(err)?;
    if !a.no_date {
        e.key(b"creation date").map_err(err)?;
        e.int(date).map_err(err)?;
    }
    e.key(b"info").map_err(err)?;
    e.begin_dict().map_err(err)?;
    if multi {
        e.key(b"files").map_err(err)?;
        e.begin_list().map_err(err)?;
        for (rel, _, len) in &files {
            e.begin_dict().map_err(err)?;
            e.key(b"length").map_err(err)?;
            e.int(*len as i64).map_err(err)?;
            e.key(b"path").map_err(err)?;
            e.begin_list().map_err(err)?;
            for c in rel {
                e.bytes(c.as_bytes()).map_err(err)?;
            }
            e.end().map_err(err)?;
            e.end().map_err(err)?;
        }
        e.end().map_err(err)?;
    } else {
        e.key(b"length").map_err(err)?;
        e.int(total as i64).map_err(err)?;
    }
    e.key(b"name").map_err(err)?;
    e.bytes(name.as_bytes()).map_err(err)?;
    e.key(b"piece length").map_err(err)?;
    e.int(piece_len as i64).map_err(err)?;
    e.key(b"pieces").map_err(err)?;
    e.bytes(&pieces).map_err(err)?;
    if a.private {
        e.key(b"private").map_err(err)?;
        e.int(1).map_err(err)?;
    }
    if let Some(src) = &a.source {
        e.key(b"source").map_err(err)?;
        e.bytes(src.as_bytes()).map_err(err)?;
    }
    e.end().map_err(err)?;
    if !a.web_seeds.is_empty() {
        // BEP 19: a string or a list of strings; always a list here.
        e.key(b"url-list").map_err(err)?;
        e.begin_list().map_err(err)?;
        for w in &a.web_seeds {
            e.bytes(w.as_bytes()).map_err(err)?;
        }
        e.end().map_err(err)?;
    }
    e.end().map_err(err)?;
    let (bytes, _) = e.finish().map_err(err)?;
    // Our own parser must accept what we wrote.
    let mut tf = crate::torrent::TorrentFile::from_bytes(bytes.clone());
    let m = tf
        .parse()
        .map_err(|e| anyhow::anyhow!("created torrent does not parse: {e}"))?;
    let shown = a.output.display();
    staged_file
        .write_all(&bytes)
        .and_then(|()| staged_file.sync_all())
        .with_context(|| format!("-o {shown}: write"))?;
    drop(staged_file);
    if !a.force && a.output.exists() {
        bail!("-o {shown}: file appeared while hashing (use --force to overwrite it)");
    }
    std::fs::rename(&staged.path, &a.output).with_context(|| format!("-o {shown}"))?;
    staged.done = true;
    println!(
        "created {shown}: {} ({} file{}, {} bytes, {} pieces of {} bytes), info-hash {}",
        name,
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        total,
        m.piece_count(),
        piece_len,
        m.info_hash()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_piece_lengths() {
        assert_eq!(parse_size("262144"), Ok(262_144));
        assert_eq!(parse_size("256K"), Ok(256 << 10));
        assert_eq!(parse_size("16KiB"), Ok(16 << 10));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("99999999999999G").is_err());
        assert_eq!(parse_piece_length("16K"), Ok(MIN_PIECE_LENGTH));
        assert_eq!(parse_piece_length("256M"), Ok(MAX_PIECE_LENGTH));
        assert!(parse_piece_length("8K").is_err());
        assert!(parse_piece_length("512M").is_err());
        assert!(parse_piece_length("1000K").is_err());
    }
}
