//! The web page at `/`: one HTML file embedded in the binary (no CDN, no
//! build step), plain JavaScript over the JSON API and its SSE stream.

use axum::http::header;
use axum::response::IntoResponse;

/// The page.
const INDEX: &str = include_str!("assets/index.html");

/// `GET /`.
pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
}
