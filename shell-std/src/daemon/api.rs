//! The daemon's HTTP JSON API (axum on the session's tokio runtime).
//!
//! Every error is JSON `{"error": "…"}` with a 4xx that says what was
//! wrong (400 bad input, 401 no or wrong token, 403 a path outside the
//! download folder, 404 no such torrent, 409 already there — with the
//! `id` of the one that is —, 413 body too large,
//! 415 wrong content type). A refused request changes
//! nothing. Request bodies are bounded by [`MAX_BODY`]; headers, their
//! time and the connections by the server ([`super::serve`]).
//!
//! With a token (`--token`, or generated when bound to a non-loopback
//! address) every route needs `Authorization: Bearer TOKEN` (or
//! `?token=TOKEN`, for the browser's `EventSource`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::engine::{prio_name, Daemon, Refused};
use super::entry::{Entry, View};
use super::store;
use crate::client::select::Priority;
use crate::torrent::MAX_TORRENT_FILE;

/// Largest request body: a `.torrent` upload or a JSON request.
pub const MAX_BODY: usize = 8 << 20;

/// The API's shared state.
#[derive(Clone)]
pub struct Api {
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// The token every request must carry, if any.
    pub token: Option<Arc<str>>,
}

/// An API error: its status and message.
pub struct ApiError(StatusCode, String, Option<i64>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.2 {
            Some(id) => json!({ "error": self.1, "id": id }),
            None => json!({ "error": self.1 }),
        };
        (self.0, Json(body)).into_response()
    }
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Bad(m) => ApiError(StatusCode::BAD_REQUEST, m, None),
            Refused::Forbidden(m) => ApiError(StatusCode::FORBIDDEN, m, None),
            Refused::NotFound(id) => ApiError(
                StatusCode::NOT_FOUND,
                format!("no torrent with id {id}"),
                None,
            ),
            Refused::Conflict(m, id) => ApiError(StatusCode::CONFLICT, m, id),
            Refused::Internal(m) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, m, None),
        }
    }
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, m.into(), None)
}

type Result<T> = std::result::Result<T, ApiError>;

/// The routes.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(super::page::index))
        .route("/api/torrents", get(list).post(add))
        .route(
            "/api/torrents/{id}",
            get(one).delete(remove).put(set_torrent),
        )
        .route("/api/settings", get(settings).put(set_settings))
        .route("/api/torrents/{id}/files", get(files).put(set_files))
        .route("/api/torrents/{id}/peers", get(peers))
        .route("/api/torrents/{id}/trackers", get(trackers))
        .route("/api/torrents/{id}/pieces", get(pieces))
        .route("/api/torrents/{id}/pause", post(pause))
        .route("/api/torrents/{id}/resume", post(resume))
        .route("/api/torrents/{id}/recheck", post(recheck))
        .route(
            "/api/torrents/{id}/files/{n}/stream",
            get(super::stream::stream),
        )
        .route("/api/events", get(events))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route".into(), None) })
        .layer(middleware::from_fn_with_state(api.clone(), auth))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// Constant-time comparison (the token must not leak through timing).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(api): State<Api>, req: Request, next: Next) -> Response {
    let Some(token) = &api.token else {
        return next.run(req).await;
    };
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .map(String::from)
    });
    let ok = from_header.is_some_and(|t| same(t.as_bytes(), token.as_bytes()))
        || from_query.is_some_and(|t| same(t.as_bytes(), token.as_bytes()));
    if ok {
        next.run(req).await
    } else {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "this daemon needs its token: Authorization: Bearer TOKEN".into(),
            None,
        )
        .into_response()
    }
}

fn id_of(s: &str) -> Result<i64> {
    s.parse()
        .map_err(|_| bad(format!("torrent id {s:?} is not a number")))
}

fn entry(api: &Api, id: &str) -> Result<Arc<Entry>> {
    Ok(api.daemon.get(id_of(id)?)?)
}

async fn list(State(api): State<Api>) -> Json<serde_json::Value> {
    Json(json!(api.daemon.views()))
}

async fn one(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<serde_json::Value>> {
    Ok(Json(json!(api.daemon.view(id_of(&id)?)?)))
}

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

/// `(index, priority)` pairs from the JSON form; a word other than
/// `skip`, `normal`, `high` is refused.
fn parse_changes(req: Vec<FilePriority>) -> Result<Vec<(usize, Priority)>> {
    req.into_iter()
        .map(|c| {
            c.priority
                .parse::<Priority>()
                .map(|p| (c.index, p))
                .map_err(|e| bad(format!("file {}: priority {e}", c.index)))
        })
        .collect()
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

async fn add(
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

async fn remove(
    State(api): State<Api>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>> {
    let id = id_of(&id)?;
    let mut delete_data = false;
    for kv in query.as_deref().unwrap_or("").split('&') {
        match kv.split_once('=') {
            Some(("delete_data", "true" | "1")) => delete_data = true,
            Some(("delete_data", "false" | "0")) => delete_data = false,
            Some(("delete_data", v)) => {
                return Err(bad(format!("delete_data={v}: say true or false")))
            }
            _ => {}
        }
    }
    api.daemon.remove(id, delete_data).await?;
    Ok(Json(
        json!({ "id": id, "removed": true, "data_deleted": delete_data }),
    ))
}

async fn pause(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<serde_json::Value>> {
    Ok(Json(json!(api.daemon.pause(id_of(&id)?).await?)))
}

async fn resume(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<serde_json::Value>> {
    Ok(Json(json!(api.daemon.resume(id_of(&id)?).await?)))
}

async fn recheck(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(json!(api.daemon.recheck(id_of(&id)?).await?)))
}

async fn files(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<serde_json::Value>> {
    let e = entry(&api, &id)?;
    let have = e.have();
    let prio = e.priorities();
    let info = &e.info;
    let out: Vec<_> = info
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.padding)
        .map(|(i, f)| {
            // Bytes of the file inside verified pieces.
            let mut done = 0u64;
            if f.len > 0 && info.piece_len > 0 {
                let first = f.offset / info.piece_len;
                let last = (f.offset + f.len - 1) / info.piece_len;
                for p in first..=last {
                    if have.get(p as usize).copied().unwrap_or(false) {
                        let ps = p * info.piece_len;
                        let pe = ps + info.piece_len;
                        done += pe.min(f.offset + f.len) - ps.max(f.offset);
                    }
                }
            }
            json!({
                "index": i,
                "path": if info.multi_file { f.path.join("/") } else { info.name.clone() },
                "size": f.len,
                "offset": f.offset,
                "done": done,
                "progress": if f.len == 0 { 1.0 } else { done as f64 / f.len as f64 },
                "priority": prio_name(prio.get(i).copied().unwrap_or_default()),
            })
        })
        .collect();
    Ok(Json(json!(out)))
}

/// The JSON body of a PUT, bounded by the router's body limit.
fn json_body<T: serde::de::DeserializeOwned>(
    body: std::result::Result<Bytes, BytesRejection>,
    want: &str,
) -> Result<T> {
    let body = body.map_err(|e| ApiError(e.status(), e.body_text(), None))?;
    serde_json::from_slice(&body).map_err(|e| bad(format!("JSON body: want {want}: {e}")))
}

/// The settings as JSON: the live ones, `listen_port` (the peer port of
/// the next start), and `restart_required` while that differs from the
/// port in use.
fn settings_json(api: &Api, s: crate::daemon::engine::Settings) -> Result<serde_json::Value> {
    let (now, next) = api.daemon.listen_ports()?;
    let mut v = json!(s);
    if let Some(o) = v.as_object_mut() {
        o.insert("listen_port".into(), json!(next));
        o.insert("listen_port_in_use".into(), json!(now));
        o.insert("restart_required".into(), json!(now != next));
    }
    Ok(v)
}

async fn settings(State(api): State<Api>) -> Result<Json<serde_json::Value>> {
    Ok(Json(settings_json(&api, api.daemon.settings())?))
}

/// `PUT /api/settings`: any of `download_limit`, `upload_limit` (bytes/s,
/// 0: none), `max_connections` (in force at once), `listen_port` (stored,
/// in force at the next start); the others stay.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsJson {
    download_limit: Option<u64>,
    upload_limit: Option<u64>,
    max_connections: Option<usize>,
    listen_port: Option<u16>,
}

async fn set_settings(
    State(api): State<Api>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>> {
    let req: SettingsJson = json_body(
        body,
        r#"{"download_limit": B, "upload_limit": B, "max_connections": N, "listen_port": P}"#,
    )?;
    let mut s = api.daemon.settings();
    s.download_limit = req.download_limit.unwrap_or(s.download_limit);
    s.upload_limit = req.upload_limit.unwrap_or(s.upload_limit);
    s.max_connections = req.max_connections.unwrap_or(s.max_connections);
    if req.listen_port == Some(0) {
        // Checked before anything changes.
        return Err(bad("listen_port 0: give 1..=65535"));
    }
    let s = api.daemon.set_settings(s)?;
    if let Some(p) = req.listen_port {
        api.daemon.set_listen_port(p)?;
    }
    Ok(Json(settings_json(&api, s)?))
}

/// `PUT /api/torrents/{id}`: the torrent's own `download_limit`,
/// `upload_limit` (bytes/s, 0: none); an absent one stays.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TorrentJson {
    download_limit: Option<u64>,
    upload_limit: Option<u64>,
}

async fn set_torrent(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>> {
    let e = entry(&api, &id)?;
    let req: TorrentJson = json_body(body, r#"{"download_limit": B, "upload_limit": B}"#)?;
    let v = e.view();
    let down = req.download_limit.unwrap_or(v.download_limit);
    let up = req.upload_limit.unwrap_or(v.upload_limit);
    Ok(Json(json!(api
        .daemon
        .set_torrent_limits(e.id, down, up)?)))
}

/// One change of `PUT /api/torrents/{id}/files`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePriority {
    index: usize,
    priority: String,
}

/// `PUT /api/torrents/{id}/files` with `[{"index": N, "priority":
/// "skip"|"normal"|"high"}, …]`: the files' priorities, in force at once
/// and kept across restarts; answers every file as `GET` does.
async fn set_files(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>> {
    let n = id_of(&id)?;
    let body = body.map_err(|e| ApiError(e.status(), e.body_text(), None))?;
    let req: Vec<FilePriority> = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "JSON body: want [{{\"index\": N, \"priority\": \"skip|normal|high\"}}]: {e}"
        ))
    })?;
    let changes = parse_changes(req)?;
    api.daemon.set_priorities(n, changes).await?;
    files(State(api), Path(id)).await
}

async fn peers(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<serde_json::Value>> {
    let e = entry(&api, &id)?;
    let addrs = e.ctx().map(|c| c.peer_addrs()).unwrap_or_default();
    let out: Vec<_> = addrs
        .iter()
        .map(|a| json!({ "addr": a.to_string() }))
        .collect();
    Ok(Json(json!(out)))
}

async fn trackers(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    let e = entry(&api, &id)?;
    let rows = if e.ctx().is_some() {
        e.trackers()
    } else {
        Vec::new()
    };
    let out: Vec<_> = if rows.is_empty() {
        e.info
            .trackers
            .iter()
            .map(|(tier, url)| json!({ "tier": tier, "url": url, "status": "idle" }))
            .collect()
    } else {
        rows.iter()
            .map(|r| {
                json!({
                    "tier": r.tier,
                    "url": r.url,
                    "status": r.status,
                    "interval": r.reply.as_ref().map(|x| x.interval),
                    "seeders": r.reply.as_ref().and_then(|x| x.seeders),
                    "leechers": r.reply.as_ref().and_then(|x| x.leechers),
                    "peers": r.reply.as_ref().map(|x| x.peers.len()),
                })
            })
            .collect()
    };
    Ok(Json(json!(out)))
}

async fn pieces(State(api): State<Api>, Path(id): Path<String>) -> Result<Json<serde_json::Value>> {
    let e = entry(&api, &id)?;
    let have = e.have();
    let hex: String = store::pack(&have)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Json(json!({
        "pieces": have.len(),
        "verified": have.iter().filter(|h| **h).count(),
        "bitfield": hex,
    })))
}

async fn events(
    State(api): State<Api>,
) -> Sse<impl futures_util::Stream<Item = std::result::Result<Event, Infallible>>> {
    let rx = api.daemon.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(msg) => return Some((Ok(Event::default().data(msg)), rx)),
                // A slow reader misses events; the next snapshot catches up.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(api): State<Api>) -> Response {
    let views: Vec<_> = api.daemon.list().iter().map(|e| e.view()).collect();
    let mut out = String::new();
    let mut line = |name: &str, kind: &str, help: &str, rows: &[(String, u64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in rows {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let states = ["checking", "downloading", "seeding", "paused", "error"];
    let by_state: Vec<(String, u64)> = states
        .iter()
        .map(|s| {
            (
                format!("{{state=\"{s}\"}}"),
                views.iter().filter(|v| v.state == *s).count() as u64,
            )
        })
        .collect();
    line(
        "ourtorrent_torrents",
        "gauge",
        "Torrents by state.",
        &by_state,
    );
    let sum = |f: fn(&View) -> u64| -> Vec<(String, u64)> {
        vec![(String::new(), views.iter().map(f).sum())]
    };
    line(
        "ourtorrent_downloaded_bytes_total",
        "counter",
        "Payload bytes received.",
        &sum(|v| v.downloaded),
    );
    line(
        "ourtorrent_uploaded_bytes_total",
        "counter",
        "Payload bytes sent.",
        &sum(|v| v.uploaded),
    );
    line(
        "ourtorrent_verified_bytes",
        "gauge",
        "Bytes of verified pieces.",
        &sum(|v| v.verified),
    );
    line(
        "ourtorrent_download_rate_bytes",
        "gauge",
        "Payload bytes/s received over the last second.",
        &sum(|v| v.down_rate),
    );
    line(
        "ourtorrent_upload_rate_bytes",
        "gauge",
        "Payload bytes/s sent over the last second.",
        &sum(|v| v.up_rate),
    );
    line(
        "ourtorrent_peers",
        "gauge",
        "Connected peers.",
        &sum(|v| u64::from(v.peers)),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }
}
