//! The API routes that change something: remove, pause, resume, recheck
//! a torrent, its limits and file priorities, and the daemon's settings
//! (`GET /api/settings` too, whose JSON `PUT` answers). Limits: JSON
//! bodies are bounded by the router's [`MAX_BODY`](super::MAX_BODY) and
//! unknown fields are refused (400).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::views::files;
use super::{bad, entry, id_of, Api, ApiError, Result};
use crate::client::select::Priority;

pub(super) async fn remove(
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

pub(super) async fn pause(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(json!(api.daemon.pause(id_of(&id)?).await?)))
}

pub(super) async fn resume(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(json!(api.daemon.resume(id_of(&id)?).await?)))
}

pub(super) async fn recheck(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(json!(api.daemon.recheck(id_of(&id)?).await?)))
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

pub(super) async fn settings(State(api): State<Api>) -> Result<Json<serde_json::Value>> {
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

pub(super) async fn set_settings(
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

pub(super) async fn set_torrent(
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
pub(super) struct FilePriority {
    index: usize,
    priority: String,
}

/// `PUT /api/torrents/{id}/files` with `[{"index": N, "priority":
/// "skip"|"normal"|"high"}, …]`: the files' priorities, in force at once
/// and kept across restarts; answers every file as `GET` does.
pub(super) async fn set_files(
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

/// `(index, priority)` pairs from the JSON form; a word other than
/// `skip`, `normal`, `high` is refused.
pub(super) fn parse_changes(req: Vec<FilePriority>) -> Result<Vec<(usize, Priority)>> {
    req.into_iter()
        .map(|c| {
            c.priority
                .parse::<Priority>()
                .map(|p| (c.index, p))
                .map_err(|e| bad(format!("file {}: priority {e}", c.index)))
        })
        .collect()
}
