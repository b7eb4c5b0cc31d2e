//! What a node keeps across restarts: the state file (our node id and the
//! routing table; format at [`save_state`]) and [`choose_id`], the id a
//! start takes (BEP 42 on a public address).
//!
//! Limits: a state file of at most [`MAX_STATE_BYTES`]; bad lines are
//! skipped and counted, never fatal.

use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use anyhow::{bail, Context, Result};
use ourtorrent_core::dht::{bep42, NodeId, RoutingTable};

use super::{hex, MAX_STATE_BYTES};

/// First line of a state file.
pub(super) const STATE_HEADER: &str = "# ourtorrent dht state v1";

fn unhex20(s: &str) -> Option<[u8; 20]> {
    let b = s.as_bytes();
    if b.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// A loaded state file: our node id and the saved nodes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Our node id, if the file had one.
    pub id: Option<NodeId>,
    /// Saved nodes (id, address).
    pub nodes: Vec<(NodeId, SocketAddrV4)>,
    /// Lines that did not parse (skipped).
    pub bad_lines: usize,
    /// The first of them (1-based line number).
    pub first_bad: Option<usize>,
}

/// Parses a state file's text (see [`save_state`]); bad lines are
/// skipped and counted, never fatal.
pub fn parse_state(text: &str) -> State {
    let mut st = State::default();
    for (no, line) in text.lines().map(str::trim).enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad_before = st.bad_lines;
        let mut f = line.split_whitespace();
        let (a, b, rest) = (f.next(), f.next(), f.next());
        match (a, b, rest) {
            (Some("id"), Some(h), None) if st.id.is_none() => match unhex20(h) {
                Some(id) => st.id = Some(NodeId(id)),
                None => st.bad_lines += 1,
            },
            (Some(h), Some(addr), None) => match (unhex20(h), addr.parse::<SocketAddrV4>()) {
                (Some(id), Ok(addr)) => st.nodes.push((NodeId(id), addr)),
                _ => st.bad_lines += 1,
            },
            _ => st.bad_lines += 1,
        }
        if st.bad_lines > bad_before && st.first_bad.is_none() {
            st.first_bad = Some(no + 1);
        }
    }
    st
}

/// Reads `path` (missing: `None`; over [`MAX_STATE_BYTES`] or not UTF-8:
/// an error).
pub fn load_state(path: &Path) -> Result<Option<State>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
    };
    let mut text = String::new();
    f.take(MAX_STATE_BYTES + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("read {}", path.display()))?;
    if text.len() as u64 > MAX_STATE_BYTES {
        bail!(
            "{}: longer than {MAX_STATE_BYTES} bytes: not a DHT state file",
            path.display()
        );
    }
    Ok(Some(parse_state(&text)))
}

/// Writes the state file atomically (a temporary file beside it, synced,
/// then renamed over it). Format, one item a line:
///
/// ```text
/// # ourtorrent dht state v1
/// id <our node id, 40 hex digits>
/// <node id, 40 hex digits> <IPv4:port>
/// ...
/// ```
///
/// Blank lines and `#` comments are ignored when loading.
pub fn save_state(path: &Path, id: NodeId, table: &RoutingTable<'_>) -> Result<usize> {
    let mut text = format!("{STATE_HEADER}\nid {}\n", hex(&id.0));
    let mut n = 0;
    for s in table.nodes() {
        let _ = writeln!(text, "{} {}", hex(&s.id.0), s.addr);
        n += 1;
    }
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dht.state".into());
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("write {}", path.display()));
    }
    Ok(n)
}

/// Our node id: the saved one, else `random`. BEP 42: on a public listen
/// address the id must match it (else nodes that enforce BEP 42 keep us out
/// of their tables), so one that does not is replaced.
pub fn choose_id(saved: Option<NodeId>, listen: Ipv4Addr, random: [u8; 20]) -> NodeId {
    let public = !listen.is_unspecified() && !bep42::is_exempt(listen);
    match saved {
        Some(id) if !public || bep42::is_valid(&id, listen) => id,
        _ if public => bep42::generate(listen, random),
        _ => NodeId(random),
    }
}
