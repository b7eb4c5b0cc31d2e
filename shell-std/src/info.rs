//! `shell-std info FILE.torrent`: prints a torrent's data as tables, with
//! the files as they would be stored (safe, unique paths) and every rename
//! listed (the torrent's path → the path on disk).

use std::path::Path;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use ourtorrent_core::metainfo::Metainfo;

use crate::client::meta::Info;
use crate::torrent::TorrentFile;
use crate::units;

/// Most files listed before the table is cut (the count is still shown).
pub const MAX_LISTED_FILES: usize = 1000;

/// Runs the subcommand: prints the tables to stdout.
pub fn run(path: &Path, all_files: bool, strict_paths: bool) -> anyhow::Result<()> {
    let mut tf = TorrentFile::read(path)?;
    let m = tf
        .parse_with(strict_paths)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    print!("{}", render(&m, all_files));
    print!("{}", renames(&Info::from_metainfo(&m)));
    Ok(())
}

/// The tables as text: torrent data, trackers, files.
pub fn render(m: &Metainfo<'_, '_>, all_files: bool) -> String {
    let mut out = String::new();
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["Torrent", ""]);
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

    let mut tr = Table::new();
    tr.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["Tier", "Tracker"]);
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

    let mut ft = Table::new();
    ft.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["#", "Path", "Size"]);
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
