//! [`main_loop`]: one torrent's life in the session: dialer, tick, DHT and
//! announce tasks started; the download watched until complete, failed,
//! unreachable (direct peers only) or interrupted; then seeding until
//! Ctrl-C, `--seed-time` or `--seed-ratio`; then the `stopped` announces
//! (BEP 3) and the torrent's removal from the session.
//!
//! Limits: the stop announces get [`STOP_ANNOUNCE_TIMEOUT`] + 1 s.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;

use super::announce::{announce_loop, Statuses, TrackerStatus, STOP_ANNOUNCE_TIMEOUT};
use super::peers::Source;
use super::session::Session;
use super::signals::Interrupted;
use super::swarm::{self, Ctx};
use super::{dht, ui, Plan};

pub(super) async fn main_loop(
    session: Arc<Session>,
    ctx: Arc<Ctx>,
    plan: Plan,
    signals: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let quiet = plan.choices.common.quiet;
    tokio::spawn(swarm::dialer(ctx.clone(), session.conns.clone()));
    // Direct peers: booked for good, dialled (and re-dialled with backoff)
    // while not connected.
    ctx.learn(&plan.choices.common.peers, Source::Direct);
    for (addr, source) in &plan.learned {
        ctx.learn(&[*addr], *source);
    }
    for addr in &plan.banned {
        ctx.lock().book.ban(*addr, std::time::Instant::now());
    }
    {
        let c = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => c.tick(),
                    _ = c.stopped() => return,
                }
            }
        });
    }
    // BEP 5, not for private torrents (BEP 27).
    if let Some(d) = session.dht.get().filter(|_| !ctx.info.private) {
        tokio::spawn(dht::torrent_loop(
            d.clone(),
            ctx.clone(),
            session.listen.port(),
        ));
    }
    let statuses: Statuses = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let announcer = (!plan.choices.common.no_trackers).then(|| {
        let mut rows = statuses.lock().unwrap_or_else(|e| e.into_inner());
        for (tier, url) in &ctx.info.trackers {
            rows.push(TrackerStatus {
                tier: *tier,
                url: url.clone(),
                status: "connecting".into(),
                reply: None,
                told_complete: ctx.complete.load(Relaxed),
            });
        }
        tokio::spawn(announce_loop(
            session.clone(),
            ctx.clone(),
            statuses.clone(),
            stop_rx,
        ))
    });
    let table = ui::TrackerTable::new(statuses.clone(), quiet);
    let downloading = !ctx.complete.load(Relaxed);
    // No download bar when there is nothing to download.
    let mut bar = ui::Progress::start(ctx.clone(), table.clone(), quiet || !downloading);
    let t0 = std::time::Instant::now();
    let start_verified = ctx.stats.verified.load(Relaxed);
    let mut signals = signals;
    let ctrl_c = signals.wait_for(|s| *s);
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    let mut failed = None;
    // Only `--peer`s can ever give data (no tracker, no DHT for this
    // torrent): once each has failed, say why and stop rather than wait
    // forever.
    let only_direct = (plan.choices.common.no_trackers || ctx.info.trackers.is_empty())
        && (session.dht.get().is_none() || ctx.info.private);
    let mut unreachable = None;
    if !ctx.complete.load(Relaxed) {
        loop {
            tokio::select! {
                _ = ctx.done.notified() => {}
                _ = &mut ctrl_c => { interrupted = true; break }
                _ = tokio::time::sleep(Duration::from_millis(250)), if only_direct => {}
            }
            if ctx.complete.load(Relaxed) {
                break;
            }
            if let Some(why) = ctx.failure() {
                failed = Some(why);
                break;
            }
            if let Some(errs) = only_direct.then(|| ctx.lock().book.unreachable()).flatten() {
                unreachable = Some(errs);
                break;
            }
            let n = ctx.stats.fetched_pieces.load(Relaxed);
            if ctx.max_pieces.is_some_and(|m| n >= m) {
                bar.finish();
                println!("stopped after {n} pieces (--max-pieces)");
                return Ok(());
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let bytes = ctx.stats.verified.load(Relaxed) - start_verified;
        bar.finish();
        for (addr, why) in unreachable.iter().flatten() {
            eprintln!("{addr}: {why}");
        }
        if !interrupted && failed.is_none() && unreachable.is_none() {
            let st = ctx.snapshot();
            // Two short lines (they fit an 80-column terminal).
            println!(
                "downloaded: {} pieces, {} bytes in {:.3} s ({:.1} MiB/s)",
                st.fetched,
                bytes,
                secs,
                bytes as f64 / secs.max(1e-9) / (1 << 20) as f64,
            );
            println!(
                "integrity: {} hash failures, {} peers banned",
                st.hash_failures, st.banned
            );
            if !quiet {
                print!("{}", ui::swarm_table(&st));
                println!();
                let known: Vec<String> = st
                    .known
                    .iter()
                    .map(|(src, n)| format!("{} {n}", src.name()))
                    .collect();
                println!("peers known: {}", known.join(", "));
            }
            println!(
                "complete: {}{}",
                ctx.storage.root.display(),
                ctx.selection_note()
            );
        }
    } else if plan.download {
        println!(
            "complete: {} (already on disk){}",
            ctx.storage.root.display(),
            ctx.selection_note()
        );
    }
    let seeded = !interrupted && failed.is_none() && unreachable.is_none() && !plan.choices.no_seed;
    if seeded {
        if !quiet {
            println!(
                "seeding on {} (Ctrl-C to stop{})",
                ctx.listen,
                plan.choices
                    .seed_ratio
                    .map(|r| format!(", or at ratio {r}"))
                    .unwrap_or_default()
            );
        }
        println!("seeding: listening on {}", ctx.listen);
        let mut bar = ui::Progress::seeding(ctx.clone(), table.clone(), quiet);
        let until = plan
            .choices
            .common
            .seed_time
            .map(|d| tokio::time::Instant::now() + d);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            if until.is_some_and(|t| tokio::time::Instant::now() >= t) {
                break;
            }
            if let Some(r) = plan.choices.seed_ratio {
                let up = ctx.stats.uploaded.load(Relaxed) as f64;
                if up >= r * ctx.info.total as f64 {
                    break;
                }
            }
        }
        bar.finish();
    }
    // Only where it means something: after seeding, or when a download
    // also served bytes; never after an error line.
    let up = ctx.stats.uploaded.load(Relaxed);
    if (seeded || up > 0) && failed.is_none() && unreachable.is_none() {
        println!("uploaded: {up} bytes");
    }
    // BEP 3: tell the trackers we leave (best effort, bounded), after
    // `completed` if the download finished since the last announce (e.g.
    // with --no-seed), so that they count the completion.
    let _ = stop_tx.send(true);
    if let Some(h) = announcer {
        let _ = tokio::time::timeout(STOP_ANNOUNCE_TIMEOUT + Duration::from_secs(1), h).await;
    }
    // This torrent alone stops: no more inbound routing, its tasks end;
    // the session's other torrents go on.
    session.remove(&ctx.info.info_hash);
    ctx.stop();
    if interrupted {
        return Err(Interrupted(format!(
            "{}/{} pieces verified",
            ctx.picker_have(),
            ctx.info.pieces()
        ))
        .into());
    }
    if unreachable.is_some() {
        bail!(
            "nothing to connect to: no --peer completed a handshake and {}",
            if plan.choices.common.no_trackers {
                "--no-trackers was given"
            } else {
                "the torrent lists no tracker"
            }
        );
    }
    if let Some(why) = failed {
        bail!(
            "storage failed: {why} ({} of {} pieces verified; free space and run the same command to resume)",
            ctx.picker_have(),
            ctx.info.pieces()
        );
    }
    Ok(())
}
