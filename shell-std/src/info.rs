//! `shell-std info FILE.torrent`: prints a torrent's data as tables, with
//! the files as they would be stored (safe, unique paths), every rename
//! listed (the torrent's path → the path on disk) and its magnet link, or
//! (`--json`) one JSON object for scripts.

use std::fmt::Write as _;
use std::path::Path;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, ContentArrangement, Table};
use ourtorrent_core::bencode::{self, DecodeOptions, Token};
use ourtorrent_core::magnet::MAX_TRACKERS;
use ourtorrent_core::metainfo::Metainfo;
use ourtorrent_core::percent::Encoded;
use serde_json::json;

use crate::client::meta::Info;
use crate::torrent::TorrentFile;
use crate::units;

/// Most files listed before the table is cut (the count is still shown).
pub const MAX_LISTED_FILES: usize = 1000;

/// Runs the subcommand: prints the tables, renames and magnet link (or the
/// JSON object) to stdout.
pub fn run(path: &Path, all_files: bool, as_json: bool, strict_paths: bool) -> anyhow::Result<()> {
    let mut tf = TorrentFile::read(path)?;
    let m = tf
        .parse_with(strict_paths)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if as_json {
        println!("{:#}", json_value(&m));
    } else {
        print!("{}", render(&m, all_files));
        print!("{}", renames(&Info::from_metainfo(&m)));
        println!("Magnet: {}", magnet(&m));
    }
    Ok(())
}

/// The torrent's magnet link (BEP 9): `xt=urn:btih:` with the hex
/// info-hash, `dn` the name, one `tr` per distinct tracker in tier order
/// (at most the core parser's [`MAX_TRACKERS`], so the link reads back);
/// values percent-encoded (RFC 3986 unreserved bytes left as they are).
pub fn magnet(m: &Metainfo<'_, '_>) -> String {
    let mut s = format!("magnet:?xt=urn:btih:{}", m.info_hash());
    let _ = write!(s, "&dn={}", Encoded(m.name().as_bytes()));
    let mut seen: Vec<&str> = Vec::new();
    for (_, url) in m.trackers() {
        if seen.len() < MAX_TRACKERS && !seen.contains(&url) {
            seen.push(url);
            let _ = write!(s, "&tr={}", Encoded(url.as_bytes()));
        }
    }
    s
}

/// Path of a file as it lands on disk, relative to the download folder
/// (`name/…` for a multi-file torrent, `name` for a single file).
fn file_path(info: &Info, f: &crate::client::meta::FileEntry) -> String {
    if info.multi_file {
        format!("{}/{}", info.name, f.path.join("/"))
    } else {
        info.name.clone()
    }
}

/// The info dictionary's `source` tag, if any (not read by the core's
/// metainfo: decoded here from the exact info bytes).
fn source(m: &Metainfo<'_, '_>) -> Option<String> {
    let info = m.info_bytes();
    let mut toks = vec![Token::EMPTY; info.len() / 2 + 1];
    let doc = bencode::decode(info, &mut toks, DecodeOptions::lenient()).ok()?;
    let v = doc.root()?.get(b"source")?.as_str()?.to_string();
    Some(v)
}

/// Everything `info` shows, as one JSON object: `name`, `info_hash` (hex),
/// `piece_length`, `pieces`, `total_size`, `private`, `files` (`path`,
/// `length`, `padding`), `trackers` (`tier`, `url`), `magnet`, and when
/// present `comment`, `created_by`, `creation_date` and `source`.
pub fn json_value(m: &Metainfo<'_, '_>) -> serde_json::Value {
    let info = Info::from_metainfo(m);
    let files: Vec<_> = info
        .files
        .iter()
        .map(|f| json!({"path": file_path(&info, f), "length": f.len, "padding": f.padding}))
        .collect();
    let trackers: Vec<_> = m
        .trackers()
        .map(|(tier, url)| json!({"tier": tier, "url": url}))
        .collect();
    let mut v = json!({
        "name": m.name(),
        "info_hash": m.info_hash().to_string(),
        "piece_length": m.piece_length(),
        "pieces": m.piece_count(),
        "total_size": m.total_length(),
        "private": m.is_private(),
        "files": files,
        "trackers": trackers,
        "magnet": magnet(m),
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(c) = m.comment() {
            obj.insert("comment".into(), c.into());
        }
        if let Some(c) = m.created_by() {
            obj.insert("created_by".into(), c.into());
        }
        if let Some(d) = m.creation_date() {
            obj.insert("creation_date".into(), d.into());
        }
        if let Some(src) = source(m) {
            obj.insert("source".into(), src.into());
        }
    }
    v
}

/// A table in our style that fits the terminal it is printed on (cells
/// wrap; no width limit when the output is not a terminal).
pub fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t
}

/// The tables as text: torrent data, trackers, files.
pub fn render(m: &Metainfo<'_, '_>, all_files: bool) -> String {
    let mut out = String::new();
    let mut t = table();
    t.set_header(["Torrent", ""]);
    t.add_row(["Name", m.name()]);
    t.add_row(["Info-hash", &m.info_hash().to_string()]);
    t.add_row([
        "Total size".to_string(),
        format!(
            "{} ({} bytes)",
            units::bytes(m.total_length()),
            m.total_length()
        ),
    ]);
    t.add_row([
        "Piece length".to_string(),
        format!(
            "{} ({} bytes)",
            units::bytes(m.piece_length()),
            m.piece_length()
        ),
    ]);
    t.add_row(["Pieces".to_string(), m.piece_count().to_string()]);
    t.add_row(["Files".to_string(), m.file_count().to_string()]);
    t.add_row(["Private", if m.is_private() { "yes" } else { "no" }]);
    if let Some(c) = m.created_by() {
        t.add_row(["Created by", c]);
    }
    if let Some(d) = m.creation_date() {
        let when = u64::try_from(d)
            .ok()
            .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_else(|| d.to_string());
        t.add_row(["Creation date".to_string(), when]);
    }
    if let Some(c) = m.comment() {
        t.add_row(["Comment", c]);
    }
    out += &format!("{t}\n");

    let mut tr = table();
    tr.set_header(["Tier", "Tracker"]);
    let mut any = false;
    for (tier, url) in m.trackers() {
        tr.add_row([tier.to_string(), url.to_string()]);
        any = true;
    }
    if any {
        out += &format!("{tr}\n");
    } else {
        out += "No trackers (trackerless torrent)\n";
    }

    let mut ft = table();
    ft.set_header(["#", "Path", "Size"]);
    let limit = if all_files {
        usize::MAX
    } else {
        MAX_LISTED_FILES
    };
    let info = Info::from_metainfo(m);
    let top = |p: &str| {
        if m.is_multi_file() {
            format!("{}/{p}", info.name)
        } else {
            p.to_string()
        }
    };
    for (i, f) in info.files.iter().enumerate().take(limit) {
        let mut path = top(&f.path.join("/"));
        if f.padding {
            path += " (padding)";
        }
        match &f.symlink {
            Some(Ok(t)) => path += &format!(" → {t} (symlink)"),
            Some(Err(why)) => path += &format!(" (symlink refused: {why})"),
            None => {}
        }
        if f.executable {
            path += " (executable)";
        }
        ft.add_row(vec![
            Cell::new(i),
            Cell::new(path),
            Cell::new(units::bytes(f.len)).set_alignment(CellAlignment::Right),
        ]);
    }
    out += &format!("{ft}\n");
    if m.file_count() > limit {
        out += &format!(
            "… {} more files (use --all-files)\n",
            m.file_count() - limit
        );
    }
    out
}

/// One line per renamed path (the client prints these when it opens the
/// files): `renamed: "torrent's path" → on-disk path`
/// (the torrent's path quoted, so control characters show).
pub fn renames(info: &Info) -> String {
    let mut out = String::new();
    if let Some(from) = &info.name_renamed_from {
        out += &format!("renamed: {from:?} → {}\n", info.name);
    }
    for f in info.files.iter().filter(|f| !f.padding) {
        if let Some(from) = &f.renamed_from {
            out += &format!("renamed: {from:?} → {}\n", f.path.join("/"));
        }
    }
    out
}
