//! `shell-std info FILE.torrent`: prints a torrent's data as tables.

use std::path::Path;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use ourtorrent_core::metainfo::Metainfo;

use crate::torrent::TorrentFile;
use crate::units;

/// Most files listed before the table is cut (the count is still shown).
pub const MAX_LISTED_FILES: usize = 1000;

/// Runs the subcommand: prints the tables to stdout.
pub fn run(path: &Path, all_files: bool) -> anyhow::Result<()> {
    let mut tf = TorrentFile::read(path)?;
    let m = tf
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    print!("{}", render(&m, all_files));
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
    for (i, f) in m.files().enumerate().take(limit) {
        let mut path = if m.is_multi_file() {
            format!("{}/", m.name())
        } else {
            String::new()
        };
        path += &f.path().collect::<Vec<_>>().join("/");
        if f.is_padding() {
            path += " (padding)";
        }
        ft.add_row(vec![
            Cell::new(i),
            Cell::new(path),
            Cell::new(units::bytes(f.length)).set_alignment(CellAlignment::Right),
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
