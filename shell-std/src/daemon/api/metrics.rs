//! `GET /metrics`: the daemon's figures in the Prometheus text format
//! (version 0.0.4): torrents by state and totals over every torrent.
//! Limits: no per-torrent series (their count would grow with the
//! torrents); rates are the engine's one-second samples.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::Api;
use crate::daemon::entry::View;

pub(super) async fn metrics(State(api): State<Api>) -> Response {
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
