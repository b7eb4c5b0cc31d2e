//! The global settings (rate limits, connection limit, the listen port
//! of the next start) and a torrent's own rate limits: stored in the
//! state and in force at once.
//!
//! Limits: `max_connections` within 1..=[`MAX_CONNECTIONS_LIMIT`]; a
//! lowered connection limit is taken back as connections close.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use super::{
    Daemon, Refused, Settings, MAX_CONNECTIONS_LIMIT, SETTING_CONNS, SETTING_DOWN, SETTING_UP,
};
use crate::daemon::entry::View;

impl Daemon {
    /// The global settings in force.
    pub fn settings(&self) -> Settings {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the global settings (the rate limits at once; a lower
    /// connection limit as connections close), stored for the next run.
    pub fn set_settings(&self, new: Settings) -> Result<Settings, Refused> {
        if new.max_connections == 0 || new.max_connections > MAX_CONNECTIONS_LIMIT {
            return Err(Refused::Bad(format!(
                "max_connections {}: give 1..={MAX_CONNECTIONS_LIMIT}",
                new.max_connections
            )));
        }
        {
            let st = self.store();
            st.set_setting(SETTING_DOWN, &new.download_limit.to_string())?;
            st.set_setting(SETTING_UP, &new.upload_limit.to_string())?;
            st.set_setting(SETTING_CONNS, &new.max_connections.to_string())?;
        }
        let mut cur = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        self.session
            .set_rate_limits(new.download_limit, new.upload_limit);
        let debt = &self.conn_debt;
        if new.max_connections > cur.max_connections {
            // Pay what is owed first, then add permits.
            let mut more = new.max_connections - cur.max_connections;
            let owed = debt.load(Relaxed).min(more);
            debt.fetch_sub(owed, Relaxed);
            more -= owed;
            self.session.conns.add_permits(more);
        } else {
            debt.fetch_add(cur.max_connections - new.max_connections, Relaxed);
            self.take_back_permits();
        }
        *cur = new;
        tracing::info!(?new, "settings");
        Ok(new)
    }

    /// The peer port in use and the one the next start listens on (the
    /// stored listen address; `--listen` given at that start wins).
    pub fn listen_ports(&self) -> Result<(u16, u16), Refused> {
        let now = self.session.listen.port();
        let next = self
            .store()
            .setting(crate::daemon::SETTING_LISTEN)?
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map_or(now, |a| a.port());
        Ok((now, next))
    }

    /// Stores peer port `port` (1..=65535) for the next start, on the
    /// address in use; the running session keeps its port.
    pub fn set_listen_port(&self, port: u16) -> Result<(), Refused> {
        if port == 0 {
            return Err(Refused::Bad("listen_port 0: give 1..=65535".into()));
        }
        let addr = SocketAddr::new(self.session.listen.ip(), port);
        self.store()
            .set_setting(crate::daemon::SETTING_LISTEN, &addr.to_string())?;
        tracing::info!(%addr, "listen address for the next start");
        Ok(())
    }

    /// Takes back the connection permits owed, as far as they are free.
    pub(super) fn take_back_permits(&self) {
        let owed = self.conn_debt.load(Relaxed);
        if owed > 0 {
            let n = self.session.conns.forget_permits(owed);
            self.conn_debt.fetch_sub(n, Relaxed);
        }
    }

    /// Sets torrent `id`'s own rate limits (bytes/s, 0: none; the global
    /// ones apply too), stored, and in force at once when it runs.
    pub fn set_torrent_limits(&self, id: i64, down: u64, up: u64) -> Result<View, Refused> {
        let entry = self.get(id)?;
        self.store().set_limits(id, down, up)?;
        let ctx = {
            let mut st = entry.lock();
            st.limits = (down, up);
            st.live.as_ref().map(|l| l.ctx.clone())
        };
        if let Some(ctx) = ctx {
            ctx.set_rate_limits(down, up);
        }
        let v = entry.view();
        self.emit("state", serde_json::to_value(&v).unwrap_or_default());
        Ok(v)
    }
}
