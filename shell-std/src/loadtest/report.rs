//! The report: latency percentiles per kind, responses per second, the
//! generator's own CPU seconds (so a run can tell whether the generator
//! was the bottleneck), errors and the `stopped` round, as a table or one
//! JSON object.
//!
//! Limits: CPU time from Linux `/proc/self/stat` at 100 ticks/s (none
//! elsewhere); latencies in µs, capped at `u32::MAX`.

use std::net::SocketAddr;

use comfy_table::{presets::UTF8_FULL, Table};
use serde_json::json;

use super::cli::LoadtestArgs;
use super::stop::Stopped;
use super::worker::{Tally, KINDS};

/// This process's user+system CPU seconds (Linux `/proc/self/stat`, at
/// the usual 100 ticks per second), if readable.
pub(super) fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

pub(super) fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(super) fn report(
    a: &LoadtestArgs,
    target: SocketAddr,
    t: &mut Tally,
    elapsed: f64,
    cpu: Option<f64>,
    stopped: Option<Stopped>,
) {
    let mut kinds = serde_json::Map::new();
    let mut total = 0usize;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL).set_header(vec![
        "kind",
        "responses",
        "responses/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "max µs",
    ]);
    for k in KINDS {
        let v = &mut t.lat[k.idx()];
        v.sort_unstable();
        total += v.len();
        let rps = v.len() as f64 / elapsed;
        let row = (
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99),
            v.last().copied().unwrap_or(0),
        );
        table.add_row(vec![
            k.name().to_string(),
            v.len().to_string(),
            format!("{rps:.0}"),
            row.0.to_string(),
            row.1.to_string(),
            row.2.to_string(),
            row.3.to_string(),
        ]);
        kinds.insert(
            k.name().into(),
            json!({"responses": v.len(), "per_second": rps,
                   "p50_us": row.0, "p90_us": row.1, "p99_us": row.2, "max_us": row.3}),
        );
    }
    let rps = total as f64 / elapsed;
    if a.json {
        let doc = json!({
            "target": target.to_string(),
            "stopped": stopped.map(|s| json!({"sent": s.sent, "acknowledged": s.acknowledged})),
            "seconds": elapsed,
            "concurrency": a.concurrency,
            "sockets": a.sockets,
            "sent": t.sent,
            "responses": total,
            "responses_per_second": rps,
            "generator_cpu_seconds": cpu,
            "kinds": kinds,
            "errors": {
                "error_replies": t.error_replies,
                "timeouts": t.timeouts,
                "stale": t.stale,
                "unparsable": t.unparsable,
                "send_errors": t.send_errors,
            },
        });
        println!("{doc}");
    } else {
        println!(
            "loadtest {} ({target}) for {elapsed:.2}s, {} in flight over {} socket(s), mix {}",
            a.target, a.concurrency, a.sockets, a.mix
        );
        println!("{table}");
        println!(
            "total: {total} responses, {rps:.0}/s; error replies {}, timeouts {}, stale {}, unparsable {}, send errors {}",
            t.error_replies, t.timeouts, t.stale, t.unparsable, t.send_errors
        );
        if let Some(cpu) = cpu {
            println!(
                "generator CPU: {cpu:.2} s ({:.0}% of one core)",
                100.0 * cpu / elapsed
            );
        }
        match stopped {
            Some(s) => println!(
                "stopped: {} fake peers sent `stopped`, {} acknowledged",
                s.sent, s.acknowledged
            ),
            None => println!("fake peers left in the target's swarms (--no-stop)"),
        }
    }
}
