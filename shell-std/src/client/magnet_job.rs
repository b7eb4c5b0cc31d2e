//! A magnet link's job ([`MagnetJob`]) and its life ([`magnet_main`]):
//! the metadata phase (BEP 9, peers from the link, `--peer`, trackers and
//! the DHT), the metadata parsed and optionally saved as a `.torrent`,
//! then a [`Plan`] run by [`main_loop`] as a `.torrent` would be.
//!
//! Limits: those of [`magnet::fetch`]; a magnet with nothing to connect to
//! is refused at once.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::dht;
use super::magnet::{self, MagnetLink};
use super::main_loop::main_loop;
use super::meta::Info;
use super::open::prepare;
use super::plan::{storage_name, Choices, Plan};
use super::session::Session;
use super::signals::Interrupted;

/// A magnet link to open once its metadata is fetched, with the flags its
/// plan will take.
pub(super) struct MagnetJob {
    pub(super) link: MagnetLink,
    pub(super) out: PathBuf,
    /// `--save-torrent`: the path, and whether it is a folder.
    pub(super) save: Option<(PathBuf, bool)>,
    pub(super) choices: Choices,
}

/// A magnet's life: its metadata phase, then the torrent runs as one
/// opened from a file would (tables, output folder, resume).
pub(super) async fn magnet_main(
    session: Arc<Session>,
    job: MagnetJob,
    signals: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let quiet = job.choices.common.quiet;
    let link = &job.link;
    let t0 = std::time::Instant::now();
    println!(
        "magnet: {}: fetching the metadata ({} trackers, {} peers given)",
        match &link.name {
            Some(n) => format!("{n} ({})", link.info_hash),
            None => link.info_hash.to_string(),
        },
        link.trackers.len(),
        link.peers.len() + job.choices.common.peers.len()
    );
    let dht = session.dht.get().cloned();
    if dht.is_none()
        && link.peers.is_empty()
        && job.choices.common.peers.is_empty()
        && (job.choices.common.no_trackers || link.trackers.is_empty())
    {
        bail!(
            "nothing to connect to: the magnet has no x.pe, {}, no DHT and no --peer was given",
            if job.choices.common.no_trackers {
                "--no-trackers"
            } else {
                "no tr"
            }
        );
    }
    let (extra, feeder) = match dht {
        Some(d) => {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            (
                Some(rx),
                Some(tokio::spawn(dht::feed(d, link.info_hash, tx))),
            )
        }
        None => (None, None),
    };
    let sources = magnet::Sources {
        direct: job.choices.common.peers.clone(),
        trackers: !job.choices.common.no_trackers,
        extra,
    };
    let fetched = magnet::fetch(session.clone(), link, sources, signals.clone()).await;
    if let Some(f) = feeder {
        f.abort();
    }
    let Some(f) = fetched? else {
        return Err(Interrupted("before the metadata".into()).into());
    };
    println!(
        "metadata: {} bytes in {:.3} s ({} refused)",
        f.metadata.len(),
        t0.elapsed().as_secs_f64(),
        f.refused
    );
    let bytes = magnet::torrent_bytes(&f.metadata, &link.trackers);
    let mut tf = crate::torrent::TorrentFile::from_bytes(bytes.clone());
    let info = {
        let m = tf
            .parse_with(job.choices.common.strict_paths)
            .map_err(|e| anyhow::anyhow!("the metadata is no torrent: refused: {e}"))?;
        if !quiet {
            print!("{}", crate::info::render(&m, false));
        }
        Info::from_metainfo(&m)
    };
    if let Some((save, folder)) = &job.save {
        let path = if *folder {
            save.join(format!("{}.torrent", storage_name(&info.name)?))
        } else {
            save.clone()
        };
        std::fs::write(&path, &bytes).with_context(|| format!("{}", path.display()))?;
        println!("saved: {}", path.display());
    }
    let root = job.out.join(storage_name(&info.name)?);
    let plan = Plan {
        learned: f.learned,
        banned: f.banned,
        ..Plan::new(info, root, true, job.choices)
    };
    let ctx = {
        let s = session.clone();
        let p = &plan;
        tokio::task::block_in_place(move || prepare(p, &s))?
    };
    session.add(ctx.clone())?;
    main_loop(session, ctx, plan, signals).await
}
