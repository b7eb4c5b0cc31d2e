//! Stopping: [`shutdown_signal`] (SIGINT, SIGTERM, SIGHUP) and
//! [`Interrupted`], the error a torrent stopped early ends in (exit code
//! 130).
//!
//! Limits: Unix signals only.

/// The user stopped a download before it was complete (Ctrl-C, SIGTERM,
/// SIGHUP): how far it got. The process exits with 130.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted: {}; run the same command to resume", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Completes on SIGINT (Ctrl-C), SIGTERM (`kill`, systemd, docker) or
/// SIGHUP (the terminal closed): each stops the client the same way, with
/// its `stopped` announces.
/// The handlers are installed at once (before any output a user or a
/// test could react to); the returned receiver turns true on the first
/// signal.
pub(crate) fn shutdown_signal() -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}
