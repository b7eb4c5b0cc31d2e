//! [`start`]: every plan and magnet of one command in one session (one
//! listener, one peer id, one DHT node), each torrent a task; then the
//! exit status: the first error, or [`Interrupted`] with how far each got.
//!
//! Limits: `--max-connections` (at least 1) for the whole session; the
//! runtime gets 500 ms to shut down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ourtorrent_core::id::PeerId;

use super::dht;
use super::magnet_job::{magnet_main, MagnetJob};
use super::main_loop::main_loop;
use super::open::prepare;
use super::session::Session;
use super::signals::{shutdown_signal, Interrupted};
use super::{random_u32, Plan, DEFAULT_LISTEN};

/// Runs every torrent in one session: one listener, one peer id.
pub(super) fn start(
    plans: Vec<Plan>,
    magnets: Vec<MagnetJob>,
    dht_state: PathBuf,
) -> anyhow::Result<()> {
    let Some(first) = plans
        .first()
        .map(|p| &p.choices.common)
        .or(magnets.first().map(|m| &m.choices.common))
    else {
        bail!("no torrent given");
    };
    let listen = first.listen;
    let max_conns = first.max_connections.max(1);
    let (no_dht, dht_bootstrap) = (first.no_dht, first.dht_bootstrap.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let id = PeerId::generate(random_u32);
    let signals = rt.block_on(async { shutdown_signal() })?;
    let (session, listener) = rt.block_on(async {
        match listen {
            Some(addr) => Session::bind(addr, id, max_conns).await,
            // The default port, or any if it is taken.
            None => match Session::bind(DEFAULT_LISTEN, id, max_conns).await {
                Ok(x) => Ok(x),
                Err(_) => {
                    Session::bind(SocketAddr::new(DEFAULT_LISTEN.ip(), 0), id, max_conns).await
                }
            },
        }
    })?;
    tracing::info!(listen = %session.listen, "listening");
    session.set_rate_limits(first.max_down.unwrap_or(0), first.max_up.unwrap_or(0));
    let mut torrents = Vec::new();
    let mut incomplete = 0;
    for plan in plans {
        let name = plan.info.name.clone();
        let ctx = prepare(&plan, &session).with_context(|| name.clone())?;
        if plan.choices.common.check_only {
            let st = ctx.snapshot();
            println!(
                "checked: {name}: {} of {} pieces verified ({} of {} bytes) in {}",
                st.pieces_verified,
                st.pieces,
                st.verified,
                st.total,
                ctx.storage.root.display()
            );
            incomplete += usize::from(!st.complete);
            continue;
        }
        session.add(ctx.clone())?;
        torrents.push((name, ctx, plan));
    }
    if incomplete > 0 {
        bail!("{incomplete} torrent(s) incomplete on disk");
    }
    // The DHT once every torrent opened (not for --check-only).
    let dht_wanted = !no_dht && (!magnets.is_empty() || !torrents.is_empty());
    if dht_wanted {
        if let Some(parent) = dht_state.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(parent);
        }
        let node = rt.block_on(dht::SessionDht::start(
            session.listen,
            &dht_bootstrap,
            dht_state,
        ));
        if let Some(node) = node {
            let _ = session.dht.set(Arc::new(node));
        }
    }
    rt.spawn(session.clone().accept_loop(listener));
    let several = torrents.len() + magnets.len() > 1;
    let results = rt.block_on(async {
        let mut handles: Vec<_> = torrents
            .into_iter()
            .map(|(name, ctx, plan)| {
                let main = main_loop(session.clone(), ctx, plan, signals.clone());
                (name, tokio::spawn(main))
            })
            .collect();
        for job in magnets {
            let name = job.link.label();
            let main = magnet_main(session.clone(), job, signals.clone());
            handles.push((name, tokio::spawn(main)));
        }
        let mut out = Vec::new();
        for (name, h) in handles {
            out.push((name, h.await));
        }
        // The DHT saves its table.
        if let Some(d) = session.dht.get() {
            d.stop().await;
        }
        out
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    let mut first_err = None;
    let mut stopped = Vec::new();
    for (name, r) in results {
        let r = r.map_err(|e| anyhow::anyhow!("{e}")).and_then(|r| r);
        if let Err(e) = r {
            if let Some(i) = e.downcast_ref::<Interrupted>() {
                stopped.push(if several {
                    format!("{name}: {}", i.0)
                } else {
                    i.0.clone()
                });
                continue;
            }
            let e = if several { e.context(name) } else { e };
            if first_err.is_none() {
                first_err = Some(e);
            } else {
                eprintln!("error: {e:#}");
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None if !stopped.is_empty() => Err(Interrupted(stopped.join(", ")).into()),
        None => Ok(()),
    }
}
