//! `shell-std remote add|list|pause|resume|remove`: drives a running
//! daemon over its HTTP API (as `transmission-remote` does). Plain HTTP/1.1
//! over one TCP connection per call (`Connection: close`), bounded in time
//! ([`TIMEOUT`]) and size ([`MAX_REPLY`]); `http://` URLs only.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::units;

/// Time allowed for connecting, and for each read and write.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest reply read.
pub const MAX_REPLY: u64 = 16 << 20;

/// `remote` options.
#[derive(Args, Debug)]
pub struct RemoteArgs {
    /// The daemon's API.
    #[arg(long, default_value = "http://127.0.0.1:9080")]
    pub url: String,
    /// The daemon's token.
    #[arg(long)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub cmd: RemoteCmd,
}

/// What to ask the daemon.
#[derive(Subcommand, Debug)]
pub enum RemoteCmd {
    /// Add a .torrent file (uploaded to the daemon) or a magnet link.
    Add {
        /// The .torrent file, or `'magnet:?xt=urn:btih:…'`.
        torrent: PathBuf,
        /// Add it paused.
        #[arg(long)]
        paused: bool,
        /// Connect to this peer directly (repeatable).
        #[arg(long = "peer", value_name = "IP:PORT")]
        peers: Vec<std::net::SocketAddr>,
    },
    /// List the torrents.
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pause a torrent.
    Pause {
        /// Its id (from `list`).
        id: i64,
    },
    /// Resume a torrent.
    Resume {
        /// Its id.
        id: i64,
    },
    /// A torrent's files, with their progress and priority; with `--set`,
    /// change priorities first.
    Files {
        /// Its id.
        id: i64,
        /// `INDEX=skip|normal|high` (repeatable; indexes as listed).
        #[arg(long = "set", value_name = "INDEX=PRIORITY")]
        set: Vec<String>,
    },
    /// Show or set the rate limits: the global ones (and the connection
    /// limit), or with `--id` one torrent's own. Rates in bytes/s (`500K`,
    /// `2M`; `0`: no limit).
    Limits {
        /// One torrent's own limits instead of the global ones.
        #[arg(long)]
        id: Option<i64>,
        /// Download limit.
        #[arg(long, value_name = "RATE", value_parser = crate::create::parse_size)]
        down: Option<u64>,
        /// Upload limit.
        #[arg(long, value_name = "RATE", value_parser = crate::create::parse_size)]
        up: Option<u64>,
        /// Peer connections at once, all torrents (global only).
        #[arg(long, value_name = "N", conflicts_with = "id")]
        connections: Option<usize>,
    },
    /// Remove a torrent.
    Remove {
        /// Its id.
        id: i64,
        /// Also delete its files from the download folder.
        #[arg(long)]
        delete_data: bool,
    },
}

/// `host:port` of an `http://HOST:PORT[/]` URL.
fn host_of(url: &str) -> anyhow::Result<&str> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("--url {url}: only http:// URLs are supported");
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        bail!("--url {url}: give http://HOST:PORT");
    }
    Ok(host)
}

/// One request; returns the status and the body as JSON.
fn call(
    a: &RemoteArgs,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &[u8],
) -> anyhow::Result<(u16, Value)> {
    let host = host_of(&a.url)?;
    let addr = host
        .to_socket_addrs()
        .with_context(|| format!("--url {}", a.url))?
        .next()
        .with_context(|| format!("--url {}: no address", a.url))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("{}: is the daemon running?", a.url))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(c) = ctype {
        head.push_str(&format!("Content-Type: {c}\r\n"));
    }
    if let Some(t) = &a.token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.take(MAX_REPLY).read_to_end(&mut raw)?;
    parse_reply(&raw)
}

/// Status and JSON body of an HTTP/1.1 reply (Content-Length or read to
/// the end; the API never chunks its JSON replies).
fn parse_reply(raw: &[u8]) -> anyhow::Result<(u16, Value)> {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the daemon's reply has no end of headers")?;
    let head = std::str::from_utf8(raw.get(..at).unwrap_or_default())
        .context("the daemon's reply headers are not text")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("the daemon's reply has no status")?;
    let body = raw.get(at + 4..).unwrap_or_default();
    let v = serde_json::from_slice(body).unwrap_or(Value::Null);
    Ok((status, v))
}

/// A reply that is not a success becomes an error with the daemon's words.
fn ok(r: (u16, Value)) -> anyhow::Result<Value> {
    match r {
        (200..=299, v) => Ok(v),
        (st, v) => match v["error"].as_str() {
            Some(e) => bail!("{e} (HTTP {st})"),
            None => bail!("HTTP {st}"),
        },
    }
}

fn eta(s: Option<u64>) -> String {
    match s {
        None => String::new(),
        Some(s) if s < 60 => format!("{s} s"),
        Some(s) if s < 3600 => format!("{} min", s / 60),
        Some(s) => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// The torrents as a table (the client's style).
pub fn render(list: &[Value]) -> String {
    let mut t = crate::info::table();
    t.set_header([
        "ID", "Name", "Size", "Done", "State", "Down", "Up", "Peers", "ETA",
    ]);
    for v in list {
        let u = |k: &str| v[k].as_u64().unwrap_or(0);
        t.add_row([
            v["id"].to_string(),
            v["name"].as_str().unwrap_or("").to_string(),
            units::bytes(u("size")),
            format!("{:.1}%", v["progress"].as_f64().unwrap_or(0.0) * 100.0),
            match v["error"].as_str() {
                Some(e) => format!("error: {e}"),
                None => v["state"].as_str().unwrap_or("").to_string(),
            },
            format!("{}/s", units::bytes(u("down_rate"))),
            format!("{}/s", units::bytes(u("up_rate"))),
            format!("{} ({} seeds)", u("peers"), u("seeds")),
            eta(v["eta"].as_u64()),
        ]);
    }
    format!("{t}\n")
}

/// Runs a `remote` subcommand.
pub fn run(a: RemoteArgs) -> anyhow::Result<()> {
    match &a.cmd {
        RemoteCmd::Add {
            torrent,
            paused,
            peers,
        } if torrent
            .to_str()
            .is_some_and(crate::client::magnet::MagnetLink::is_magnet) =>
        {
            let body = serde_json::json!({
                "magnet": torrent.to_string_lossy(),
                "paused": paused,
                "peers": peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            });
            let v = ok(call(
                &a,
                "POST",
                "/api/torrents",
                Some("application/json"),
                body.to_string().as_bytes(),
            )?)?;
            println!(
                "added: id {} info-hash {} (fetching the metadata)",
                v["id"],
                v["info_hash"].as_str().unwrap_or("")
            );
        }
        RemoteCmd::Add {
            torrent,
            paused,
            peers,
        } => {
            let len = std::fs::metadata(torrent)
                .with_context(|| format!("{}", torrent.display()))?
                .len();
            if len > crate::torrent::MAX_TORRENT_FILE {
                bail!("{}: {len} bytes: not a .torrent", torrent.display());
            }
            let bytes = std::fs::read(torrent).with_context(|| format!("{}", torrent.display()))?;
            let peers: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
            let path = format!(
                "/api/torrents?paused={paused}{}",
                if peers.is_empty() {
                    String::new()
                } else {
                    format!("&peers={}", peers.join(","))
                }
            );
            let v = ok(call(
                &a,
                "POST",
                &path,
                Some("application/x-bittorrent"),
                &bytes,
            )?)?;
            println!(
                "added: id {} info-hash {}",
                v["id"],
                v["info_hash"].as_str().unwrap_or("")
            );
        }
        RemoteCmd::List { json } => {
            let v = ok(call(&a, "GET", "/api/torrents", None, b"")?)?;
            if *json {
                println!("{v}");
            } else {
                print!(
                    "{}",
                    render(v.as_array().map(Vec::as_slice).unwrap_or_default())
                );
            }
        }
        RemoteCmd::Pause { id } => {
            let v = ok(call(
                &a,
                "POST",
                &format!("/api/torrents/{id}/pause"),
                None,
                b"",
            )?)?;
            println!("{id}: {}", v["state"].as_str().unwrap_or(""));
        }
        RemoteCmd::Resume { id } => {
            let v = ok(call(
                &a,
                "POST",
                &format!("/api/torrents/{id}/resume"),
                None,
                b"",
            )?)?;
            println!("{id}: {}", v["state"].as_str().unwrap_or(""));
        }
        RemoteCmd::Files { id, set } => {
            let path = format!("/api/torrents/{id}/files");
            let v = if set.is_empty() {
                ok(call(&a, "GET", &path, None, b"")?)?
            } else {
                let mut changes = Vec::new();
                for s in set {
                    let Some((i, p)) = s.split_once('=') else {
                        bail!("--set {s}: want INDEX=skip|normal|high");
                    };
                    let i: usize = i
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--set {s}: {i:?} is not a file index"))?;
                    changes.push(serde_json::json!({ "index": i, "priority": p }));
                }
                let body = serde_json::Value::from(changes).to_string();
                ok(call(
                    &a,
                    "PUT",
                    &path,
                    Some("application/json"),
                    body.as_bytes(),
                )?)?
            };
            for f in v.as_array().map(Vec::as_slice).unwrap_or_default() {
                println!(
                    "{:>4} {:<7} {:>6.1}% {:>12}  {}",
                    f["index"],
                    f["priority"].as_str().unwrap_or(""),
                    f["progress"].as_f64().unwrap_or(0.0) * 100.0,
                    f["size"],
                    f["path"].as_str().unwrap_or("")
                );
            }
        }
        RemoteCmd::Limits {
            id,
            down,
            up,
            connections,
        } => {
            let path = match id {
                Some(id) => format!("/api/torrents/{id}"),
                None => "/api/settings".into(),
            };
            let mut body = serde_json::Map::new();
            if let Some(d) = down {
                body.insert("download_limit".into(), (*d).into());
            }
            if let Some(u) = up {
                body.insert("upload_limit".into(), (*u).into());
            }
            if let Some(c) = connections {
                body.insert("max_connections".into(), (*c).into());
            }
            let v = if body.is_empty() {
                ok(call(&a, "GET", &path, None, b"")?)?
            } else {
                let b = serde_json::Value::Object(body).to_string();
                ok(call(
                    &a,
                    "PUT",
                    &path,
                    Some("application/json"),
                    b.as_bytes(),
                )?)?
            };
            let rate = |k: &str| match v[k].as_u64() {
                Some(0) | None => "none".to_string(),
                Some(r) => format!("{r} B/s"),
            };
            print!(
                "download limit: {}\nupload limit: {}\n",
                rate("download_limit"),
                rate("upload_limit")
            );
            if id.is_none() {
                println!("max connections: {}", v["max_connections"]);
            }
        }
        RemoteCmd::Remove { id, delete_data } => {
            ok(call(
                &a,
                "DELETE",
                &format!("/api/torrents/{id}?delete_data={delete_data}"),
                None,
                b"",
            )?)?;
            println!(
                "{id}: removed{}",
                if *delete_data { " with its data" } else { "" }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_replies() {
        assert_eq!(host_of("http://127.0.0.1:9080/").unwrap(), "127.0.0.1:9080");
        assert!(host_of("https://x:1").is_err());
        assert!(host_of("http://x:1/api").is_err());
        let (st, v) =
            parse_reply(b"HTTP/1.1 404 Not Found\r\ncontent-length: 15\r\n\r\n{\"error\":\"no\"}")
                .unwrap();
        assert_eq!(st, 404);
        assert_eq!(ok((st, v)).unwrap_err().to_string(), "no (HTTP 404)");
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
