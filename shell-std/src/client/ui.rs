//! What the user sees: the tracker table (status, interval, seeders,
//! leechers, peers) once the first announces are in, and an `indicatif`
//! progress bar with speed, ETA, peers and seeds, read from the torrent's
//! [`TorrentStats`](super::stats::TorrentStats) snapshots. Nothing with
//! `--quiet`.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::announce::{Statuses, TrackerStatus};
use super::swarm::Ctx;

/// The tracker table.
pub fn tracker_table(rows: &[TrackerStatus]) -> String {
    let mut t = crate::info::table();
    t.set_header([
        "Tier", "Tracker", "Status", "Interval", "Seeders", "Leechers", "Peers",
    ]);
    let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for r in rows {
        let rep = r.reply.as_ref();
        t.add_row([
            r.tier.to_string(),
            r.url.clone(),
            r.status.clone(),
            rep.map(|x| format!("{} s", x.interval))
                .unwrap_or_else(|| "-".into()),
            opt(rep.and_then(|x| x.seeders)),
            opt(rep.and_then(|x| x.leechers)),
            rep.map(|x| x.peers.len().to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    format!("{t}")
}

/// The tracker table, shown once by whichever bar runs when the trackers
/// have answered (or 5 s after start).
#[derive(Clone)]
pub struct TrackerTable {
    rows: Statuses,
    shown: Arc<std::sync::atomic::AtomicBool>,
    since: std::time::Instant,
}

impl TrackerTable {
    /// The table of these rows; `quiet`: never shown.
    pub fn new(rows: Statuses, quiet: bool) -> Self {
        TrackerTable {
            rows,
            shown: Arc::new(std::sync::atomic::AtomicBool::new(quiet)),
            since: std::time::Instant::now(),
        }
    }

    fn show_once(&self, bar: &ProgressBar) {
        use std::sync::atomic::Ordering::Relaxed;
        // A hidden bar prints nothing: leave the table to the next bar.
        if bar.is_hidden() || self.shown.load(Relaxed) {
            return;
        }
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let answered = rows.iter().all(|r| r.status != "connecting");
        if (answered || self.since.elapsed() > Duration::from_secs(5))
            && !self.shown.swap(true, Relaxed)
            && !rows.is_empty()
        {
            bar.println(tracker_table(&rows));
        }
    }
}

/// A running progress bar (hidden when quiet or not a terminal).
pub struct Progress {
    bar: ProgressBar,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Download progress: percent, verified bytes, speed, ETA, peers and
    /// seeds, in the terminal's width. `table` is shown once, through the
    /// bar, when the trackers have answered (or after 5 s).
    pub fn start(ctx: Arc<Ctx>, table: TrackerTable, quiet: bool) -> Progress {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(Some(ctx.wanted_bytes()), ProgressDrawTarget::stderr())
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {percent:>3}% [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let s = ctx.snapshot();
                b.set_position(ctx.wanted_verified_bytes());
                b.set_message(format!("peers {} seeds {}", s.peers, s.seeds));
                table.show_once(&b);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Progress {
            bar,
            task: Some(task),
        }
    }

    /// Seeding: uploaded bytes, upload speed, peers (and `table`, once, if
    /// the download bar did not show it).
    pub fn seeding(ctx: Arc<Ctx>, table: TrackerTable, quiet: bool) -> Progress {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} seeding: uploaded {binary_bytes} {binary_bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let s = ctx.snapshot();
                b.set_position(s.uploaded);
                b.set_message(format!("peers {}", s.peers));
                table.show_once(&b);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Progress {
            bar,
            task: Some(task),
        }
    }

    /// Stops updating and clears the bar.
    pub fn finish(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}
