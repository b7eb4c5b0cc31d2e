//! `POST /api/torrents`: a `.torrent` upload (`application/x-bittorrent`,
//! options in the query), a path to one inside the download folder, or a
//! magnet (`application/json`). Limits: the body is bounded by
//! [`MAX_BODY`], a `.torrent` read from disk by [`MAX_TORRENT_FILE`] and
//! must resolve (symlinks followed) inside the download folder; unknown
//! JSON fields and malformed peers or priorities are refused (400).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::control::{parse_changes, FilePriority};
use super::{bad, Api, ApiError, Result, MAX_BODY};
use crate::client::select::Priority;
use crate::torrent::MAX_TORRENT_FILE;

/// `POST /api/torrents` as JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddJson {
    path: Option<String>,
    magnet: Option<String>,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    peers: Vec<String>,
    /// File priorities to start with, as `PUT /api/torrents/{id}/files`.
    #[serde(default)]
    files: Vec<FilePriority>,
}

/// `?files=skip,normal,high`: one priority per file, by index.
fn parse_file_list(v: &str) -> Result<Vec<(usize, Priority)>> {
    v.split(',')
        .enumerate()
        .map(|(i, w)| {
            w.trim()
                .parse::<Priority>()
                .map(|p| (i, p))
                .map_err(|e| bad(format!("files= entry {i}: priority {e}")))
        })
        .collect()
}

fn parse_peers<'a>(peers: impl Iterator<Item = &'a str>) -> Result<Vec<SocketAddr>> {
    peers
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse()
                .map_err(|_| bad(format!("peer {p:?} is not IP:PORT")))
        })
        .collect()
}

pub(super) async fn add(
    State(api): State<Api>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let body = body.map_err(|e| {
        let status = e.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("request body larger than {MAX_BODY} bytes")
        } else {
            e.body_text()
        };
        ApiError(status, msg, None)
    })?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (metainfo, paused, peers, files) = match ctype.as_str() {
        "application/json" if is_magnet(&body) => {
            let req: AddJson =
                serde_json::from_slice(&body).map_err(|e| bad(format!("JSON body: {e}")))?;
            let peers = parse_peers(req.peers.iter().map(String::as_str))?;
            let (Some(uri), None) = (req.magnet, req.path) else {
                return Err(bad("give \"path\" or \"magnet\", not both"));
            };
            let (id, ih) = api.daemon.add_magnet(&uri, req.paused, peers)?;
            return Ok((
                StatusCode::CREATED,
                Json(json!({ "id": id, "info_hash": ih, "state": "fetching_metadata" })),
            )
                .into_response());
        }
        "application/x-bittorrent" => {
            // Options in the query: ?paused=true&peers=IP:PORT,IP:PORT
            // &files=skip,normal,high
            let mut paused = false;
            let mut peers = Vec::new();
            let mut files = Vec::new();
            for kv in query.as_deref().unwrap_or("").split('&') {
                match kv.split_once('=') {
                    Some(("paused", v)) => paused = v == "true" || v == "1",
                    Some(("peers", v)) => {
                        peers = parse_peers(v.split(',').map(|p| p.trim()))?;
                    }
                    Some(("files", v)) => files = parse_file_list(v)?,
                    _ => {}
                }
            }
            (body.to_vec(), paused, peers, files)
        }
        "application/json" => {
            let req: AddJson =
                serde_json::from_slice(&body).map_err(|e| bad(format!("JSON body: {e}")))?;
            let peers = parse_peers(req.peers.iter().map(String::as_str))?;
            let files = parse_changes(req.files)?;
            match (req.path, req.magnet) {
                // Magnets took the branch above.
                (_, Some(_)) => return Err(bad("give \"path\" or \"magnet\", not both")),
                (None, None) => return Err(bad("give \"path\" (a .torrent) or \"magnet\"")),
                (Some(p), None) => (read_torrent(&api, &p)?, req.paused, peers, files),
            }
        }
        "" => {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "no Content-Type: send application/x-bittorrent or application/json".into(),
                None,
            ))
        }
        other => {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type {other} is not application/x-bittorrent or application/json"),
                None,
            ))
        }
    };
    let (id, ih) = api.daemon.add(metainfo, paused, peers, &files)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "info_hash": ih })),
    )
        .into_response())
}

/// True if a JSON add request names a magnet.
fn is_magnet(body: &[u8]) -> bool {
    serde_json::from_slice::<AddJson>(body).is_ok_and(|r| r.magnet.is_some())
}

/// Reads a `.torrent` from the daemon's disk: only inside the download
/// folder (the API must not become a way to read the daemon's files).
fn read_torrent(api: &Api, p: &str) -> Result<Vec<u8>> {
    let dir = api
        .daemon
        .download_dir
        .canonicalize()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))?;
    let path = std::path::Path::new(p);
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    };
    let real = full.canonicalize().map_err(|e| bad(format!("{p}: {e}")))?;
    if !real.starts_with(&dir) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{p}: outside the download folder {}", dir.display()),
            None,
        ));
    }
    let len = std::fs::metadata(&real)
        .map_err(|e| bad(format!("{p}: {e}")))?
        .len();
    if len > MAX_TORRENT_FILE {
        return Err(bad(format!(
            "{p}: {len} bytes, more than the {MAX_TORRENT_FILE}-byte limit"
        )));
    }
    std::fs::read(&real).map_err(|e| bad(format!("{p}: {e}")))
}
