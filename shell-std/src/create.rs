//! `shell-std create PATH --tracker URL … -o FILE.torrent`: makes a BEP 3
//! torrent (BEP 12 announce-list, BEP 27 private) with the core's
//! canonical bencode encoder.
//!
//! A folder becomes a multi-file torrent with its files in a stable order
//! (sorted by path, byte-wise); symlinks and special files are skipped
//! (with a warning) so a torrent never reaches outside `PATH`. Without
//! `--piece-length`, the piece length is the smallest power of two from
//! 16 KiB to 16 MiB that keeps the torrent at about 1500 pieces or fewer.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use ourtorrent_core::bencode::Encoder;
use ourtorrent_core::pieces::PieceHasher;

/// `create` arguments.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// A file (single-file torrent) or a folder (multi-file torrent).
    pub path: PathBuf,
    /// Tracker URL (repeatable; each one is its own BEP 12 tier).
    #[arg(long = "tracker", short = 't', value_name = "URL")]
    pub trackers: Vec<String>,
    /// Where to write the .torrent.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Piece length in bytes (a power of two, at least 16 KiB).
    #[arg(long)]
    pub piece_length: Option<u64>,
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
    if piece_len < (16 << 10) || !piece_len.is_power_of_two() || piece_len > (256 << 20) {
        bail!("--piece-length must be a power of two from 16384 to 268435456");
    }

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
    e.end().map_err(err)?;
    e.end().map_err(err)?;
    let (bytes, _) = e.finish().map_err(err)?;
    // Our own parser must accept what we wrote.
    let mut tf = crate::torrent::TorrentFile::from_bytes(bytes.clone());
    let m = tf
        .parse()
        .map_err(|e| anyhow::anyhow!("created torrent does not parse: {e}"))?;
    println!(
        "created {}: {} ({} files, {} bytes, {} pieces of {} bytes), info-hash {}",
        a.output.display(),
        name,
        files.len(),
        total,
        m.piece_count(),
        piece_len,
        m.info_hash()
    );
    std::fs::write(&a.output, &bytes).with_context(|| format!("{}", a.output.display()))?;
    Ok(())
}
