//! `/stats` (JSON) and `/metrics` (Prometheus text format 0.0.4): served
//! by [`Tracker::handle_http`] to addresses inside `--stats-from` only,
//! from one [`super::Snapshot`] (every front and shard locked one at a
//! time).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::json;

use super::Tracker;
use crate::tracker::db::{self, FLUSH_BUCKETS};

impl Tracker {
    /// Handles `GET target` from `peer` at `now_ms`: `/stats` and
    /// `/metrics` here (they read every front and shard), the rest on the
    /// HTTP front ([`State::handle_http`](super::State::handle_http)).
    pub fn handle_http(
        &self,
        now_ms: u64,
        peer: SocketAddr,
        target: &str,
    ) -> (u16, &'static str, Vec<u8>) {
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let kind = match path {
            "/stats" => "http_stats",
            "/metrics" => "http_metrics",
            _ => {
                return self
                    .front(self.http_front())
                    .handle_http(now_ms, peer, target)
            }
        };
        {
            let mut f = self.front(self.http_front());
            f.stats.total += 1;
            if !self.stats_from.iter().any(|p| p.contains(peer.ip())) {
                f.stats.err("http_stats_forbidden");
                return (
                    403,
                    "text/plain",
                    b"forbidden (see --stats-from)\n".to_vec(),
                );
            }
            f.stats.req(kind);
        }
        if kind == "http_stats" {
            (
                200,
                "application/json",
                self.stats_json().to_string().into_bytes(),
            )
        } else {
            (
                200,
                "text/plain; version=0.0.4",
                self.metrics_text().into_bytes(),
            )
        }
    }

    /// The `/metrics` document: Prometheus text exposition format 0.0.4
    /// (written by hand: a few `# TYPE` lines and samples need no crate).
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write;
        const P: &str = "ourtorrent_tracker";
        let mut o = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(o, "# HELP {P}_{name} {help}");
            let _ = writeln!(o, "# TYPE {P}_{name} {kind}");
            for (suffix_labels, value) in samples {
                let _ = writeln!(o, "{P}_{name}{suffix_labels} {value}");
            }
        };
        let one = |v: String| vec![(String::new(), v)];
        let snap = self.snapshot();
        let s = &snap.swarms;
        metric(
            "build_info",
            "gauge",
            "Version of the tracker.",
            &[(
                format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
                "1".into(),
            )],
        );
        metric(
            "uptime_seconds",
            "gauge",
            "Seconds since start.",
            &one(self.started.elapsed().as_secs().to_string()),
        );
        if let Some(rss) = rss_bytes() {
            metric(
                "resident_memory_bytes",
                "gauge",
                "Resident set size.",
                &one(rss.to_string()),
            );
        }
        metric(
            "received_total",
            "counter",
            "Requests received (UDP datagrams and HTTP requests), answered or not.",
            &one(snap.stats.total.to_string()),
        );
        let by = |label: &str, m: &BTreeMap<&'static str, u64>| -> Vec<(String, String)> {
            m.iter()
                .map(|(k, v)| (format!("{{{label}=\"{k}\"}}"), v.to_string()))
                .collect()
        };
        metric(
            "requests_total",
            "counter",
            "Requests answered, by kind.",
            &by("kind", &snap.stats.requests),
        );
        metric(
            "errors_total",
            "counter",
            "Errors and drops, by reason.",
            &by("reason", &snap.stats.errors),
        );
        for (name, help, v) in [
            ("torrents", "Torrents tracked.", s.torrent_count()),
            ("peers", "Peers stored.", s.peer_count()),
            ("seeders", "Seeders stored.", s.seeder_count()),
            (
                "leechers",
                "Leechers stored.",
                s.peer_count() - s.seeder_count(),
            ),
            (
                "pending_db_rows",
                "Changed rows waiting for the SQLite writer.",
                s.dirty_count(),
            ),
            (
                "abuse_sources",
                "Misbehaving UDP sources tracked.",
                snap.abuse.sources,
            ),
        ] {
            metric(name, "gauge", help, &one(v.to_string()));
        }
        for (name, help, v) in [
            (
                "completed_total",
                "Completed announces over all torrents.",
                s.completed_total(),
            ),
            (
                "peer_limit_hits_total",
                "Peers not stored because their torrent was full.",
                s.peer_limit_hits,
            ),
            (
                "abuse_bans_total",
                "Times a UDP source became ignored.",
                snap.abuse.bans,
            ),
        ] {
            metric(name, "counter", help, &one(v.to_string()));
        }
        if let Some(f) = &self.flush {
            let snap = f.snapshot();
            let mut samples: Vec<(String, String)> = FLUSH_BUCKETS
                .iter()
                .map(|b| b.to_string())
                .chain(std::iter::once("+Inf".to_string()))
                .zip(&snap.cumulative)
                .map(|(le, n)| (format!("_bucket{{le=\"{le}\"}}"), n.to_string()))
                .collect();
            let count = snap.cumulative.last().copied().unwrap_or(0);
            samples.push(("_sum".into(), snap.sum_secs.to_string()));
            samples.push(("_count".into(), count.to_string()));
            metric(
                "flush_duration_seconds",
                "histogram",
                "Duration of the SQLite writer's transactions.",
                &samples,
            );
            metric(
                "flush_rows_total",
                "counter",
                "Rows written to SQLite.",
                &one(snap.rows.to_string()),
            );
            metric(
                "flush_failures_total",
                "counter",
                "SQLite transactions that failed.",
                &one(snap.failed.to_string()),
            );
        }
        if let Some(j) = &self.journal {
            let g = db::JournalStats::get;
            for (name, help, v) in [
                (
                    "journal_rows_total",
                    "Journal rows appended to SQLite.",
                    g(&j.rows),
                ),
                (
                    "journal_bytes_total",
                    "Bytes of journal rows appended.",
                    g(&j.bytes),
                ),
                (
                    "journal_records_total",
                    "Change records appended to the journal.",
                    g(&j.records),
                ),
                (
                    "checkpoints_total",
                    "Checkpoints of the swarms completed.",
                    g(&j.checkpoints),
                ),
                (
                    "checkpoint_failures_total",
                    "Checkpoints that failed.",
                    g(&j.checkpoint_failures),
                ),
                (
                    "journal_replayed_records",
                    "Journal records replayed at start.",
                    g(&j.replayed),
                ),
                (
                    "journal_bad_rows",
                    "Journal rows that did not decode at start (skipped from the error on).",
                    g(&j.bad_rows),
                ),
                (
                    "checkpoint_bad_chunks",
                    "Checkpoint chunks that did not decode at start (skipped from the error on).",
                    g(&j.bad_chunks),
                ),
            ] {
                let kind = if name.ends_with("_total") {
                    "counter"
                } else {
                    "gauge"
                };
                metric(name, kind, help, &one(v.to_string()));
            }
            metric(
                "last_checkpoint_seconds",
                "gauge",
                "Duration of the last checkpoint.",
                &one((g(&j.last_checkpoint_us) as f64 / 1e6).to_string()),
            );
        }
        if let Some(p) = &self.db_path {
            metric(
                "db_size_bytes",
                "gauge",
                "Size of the SQLite database and its WAL.",
                &one(db::size_on_disk(p).to_string()),
            );
        }
        o
    }

    /// The `/stats` document.
    pub fn stats_json(&self) -> serde_json::Value {
        let snap = self.snapshot();
        let s = &snap.swarms;
        let (rate, span) = self.rate();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": self.started.elapsed().as_secs(),
            "rss_bytes": rss_bytes(),
            "completed_total": s.completed_total(),
            "access": {
                "stats_from": self.stats_from.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "allow_list": self.allow_len,
            },
            "torrents": s.torrent_count(),
            "peers": s.peer_count(),
            "seeders": s.seeder_count(),
            "leechers": s.peer_count() - s.seeder_count(),
            "requests": snap.stats.requests,
            "errors": snap.stats.errors,
            "requests_total": snap.stats.total,
            "requests_per_second": rate,
            "requests_per_second_window_secs": span,
            "peer_limit_hits": s.peer_limit_hits,
            "abuse": {
                "sources": snap.abuse.sources,
                "throttled": snap.abuse.throttled,
                "ignored": snap.abuse.ignored,
                "bans": snap.abuse.bans,
                "untracked": snap.abuse.untracked,
            },
            "pending_db_rows": s.dirty_count(),
            "db": self.journal.as_ref().map(|j| {
                let g = db::JournalStats::get;
                json!({
                    "journal_rows": g(&j.rows),
                    "journal_bytes": g(&j.bytes),
                    "journal_records": g(&j.records),
                    "records_since_checkpoint": g(&j.since_checkpoint),
                    "checkpoints": g(&j.checkpoints),
                    "checkpoint_failures": g(&j.checkpoint_failures),
                    "last_checkpoint_secs": g(&j.last_checkpoint_us) as f64 / 1e6,
                    "last_checkpoint_peers": g(&j.last_checkpoint_peers),
                    "last_checkpoint_max_lock_secs": g(&j.last_checkpoint_lock_us) as f64 / 1e6,
                    "replayed_at_start": g(&j.replayed),
                    "bad_journal_rows": g(&j.bad_rows),
                    "bad_checkpoint_chunks": g(&j.bad_chunks),
                })
            }),
            "workers": snap.workers,
            "shards": self.shards.len(),
            "store": self.store,
        })
    }
}

/// This process's resident set size in bytes (`VmRSS` of
/// `/proc/self/status`), if known.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
