//! One torrent's plan (what `open` needs to open it and `main_loop` to
//! run it), and the daemon's ways in: [`root_in`], [`open_resumed`],
//! [`open_resumed_skipping`].
//!
//! Limits: a torrent's name becomes one path component or is refused
//! ([`storage_name`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;

use super::cli::Common;
use super::meta::Info;
use super::open::prepare;
use super::peers::Source;
use super::session::Session;
use super::swarm::Ctx;

pub(super) struct Plan {
    pub(super) info: Info,
    /// Addresses learned before the torrent opened (a magnet's metadata
    /// phase), with their sources; and those banned there.
    pub(super) learned: Vec<(SocketAddr, Source)>,
    pub(super) banned: Vec<SocketAddr>,
    pub(super) root: PathBuf,
    pub(super) download: bool,
    pub(super) skip_verify: bool,
    pub(super) choices: Choices,
    /// Pieces known verified (the daemon's fast resume): trusted, nothing
    /// hashed, and no source required (peers may come later).
    pub(super) have: Option<Vec<bool>>,
}

impl Plan {
    /// A plan for a torrent opened from its metainfo (nothing learned
    /// before, no fast resume).
    pub(super) fn new(info: Info, root: PathBuf, download: bool, choices: Choices) -> Self {
        Plan {
            info,
            learned: Vec::new(),
            banned: Vec::new(),
            root,
            download,
            skip_verify: false,
            choices,
            have: None,
        }
    }
}

/// What the user chose for one torrent (command-line flags or the
/// daemon's settings): a [`Plan`]'s, and a magnet's until it becomes one.
#[derive(Clone)]
pub(super) struct Choices {
    pub(super) seed_ratio: Option<f64>,
    pub(super) no_seed: bool,
    pub(super) max_pieces: Option<u32>,
    pub(super) skip_space_check: bool,
    /// `--only` / `--skip` (download only).
    pub(super) only: Option<String>,
    pub(super) skip: Option<String>,
    pub(super) sequential: bool,
    pub(super) common: Common,
}

impl Choices {
    /// Seeding data already there: every piece, no space check.
    pub(super) fn seeding(common: Common, seed_ratio: Option<f64>) -> Self {
        Choices {
            seed_ratio,
            no_seed: false,
            max_pieces: None,
            skip_space_check: true,
            only: None,
            skip: None,
            sequential: false,
            common,
        }
    }
}

/// The torrent's name as one safe path component.
pub(super) fn storage_name(name: &str) -> anyhow::Result<&str> {
    let mut c = Path::new(name).components();
    match (c.next(), c.next()) {
        (Some(std::path::Component::Normal(_)), None) if !name.contains(['/', '\\', '\0']) => {
            Ok(name)
        }
        _ => bail!("refused: unsafe torrent name {name:?}"),
    }
}

/// The daemon's way in (`crate::daemon`): where torrent `info` lives under
/// `dir` (`dir/NAME`, the name one safe path component).
pub fn root_in(dir: &Path, info: &Info) -> anyhow::Result<PathBuf> {
    Ok(dir.join(storage_name(&info.name)?))
}

/// The daemon's way in: opens torrent `info` at `root` for download (and
/// then seeding) in `session`, trusting `have` (the pieces the daemon
/// verified or kept from its fast-resume state: nothing is hashed here).
/// The caller adds the returned torrent to the session and runs it.
pub fn open_resumed(
    session: &Session,
    info: Info,
    root: PathBuf,
    common: Common,
    have: Vec<bool>,
) -> anyhow::Result<Arc<Ctx>> {
    open_resumed_skipping(session, info, root, common, have, None)
}

/// [`open_resumed`] with files skipped from the start (`skip`: indexes,
/// as `--skip` takes them): skipped files are not created.
pub fn open_resumed_skipping(
    session: &Session,
    info: Info,
    root: PathBuf,
    common: Common,
    have: Vec<bool>,
    skip: Option<String>,
) -> anyhow::Result<Arc<Ctx>> {
    let plan = Plan {
        have: Some(have),
        ..Plan::new(
            info,
            root,
            true,
            Choices {
                skip,
                ..Choices::seeding(common, None)
            },
        )
    };
    prepare(&plan, session)
}
