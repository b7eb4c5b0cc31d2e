//! The API's read-only routes: the torrent list and one torrent
//! (the engine's views), a torrent's files, peers, trackers and verified
//! pieces, and the server-sent event stream. Limits: a slow event reader
//! misses events (it catches up with the next snapshot) rather than
//! holding the daemon's memory.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use serde_json::json;

use super::{entry, id_of, Api, Result};
use crate::daemon::engine::prio_name;
use crate::daemon::store;

pub(super) async fn list(State(api): State<Api>) -> Json<serde_json::Value> {
    Json(json!(api.daemon.views()))
}

pub(super) async fn one(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    Ok(Json(json!(api.daemon.view(id_of(&id)?)?)))
}

pub(super) async fn files(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
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

pub(super) async fn peers(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    let e = entry(&api, &id)?;
    let addrs = e.ctx().map(|c| c.peer_addrs()).unwrap_or_default();
    let out: Vec<_> = addrs
        .iter()
        .map(|a| json!({ "addr": a.to_string() }))
        .collect();
    Ok(Json(json!(out)))
}

pub(super) async fn trackers(
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

pub(super) async fn pieces(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
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

pub(super) async fn events(
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
