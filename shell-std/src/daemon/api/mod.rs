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
//!
//! Files: this one (the routes, the token check, [`ApiError`]), `add.rs`
//! (`POST /api/torrents`: parsing the upload, JSON or magnet, and reading
//! a `.torrent` only from inside the download folder), `views.rs` (the
//! read-only JSON views and the event stream), `control.rs` (what changes
//! a torrent or the settings) and `metrics.rs` (the Prometheus text).

mod add;
mod control;
mod metrics;
mod views;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::engine::{Daemon, Refused};
use super::entry::Entry;

use add::add;
use control::{pause, recheck, remove, resume, set_files, set_settings, set_torrent, settings};
use metrics::metrics;
use views::{events, files, list, one, peers, pieces, trackers};

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
