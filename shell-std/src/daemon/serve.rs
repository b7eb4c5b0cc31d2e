//! Serving the API: hyper's HTTP/1 server under explicit bounds — at most
//! [`MAX_API_CONNECTIONS`] connections at once (a newcomer past that is
//! closed at once), request headers complete within
//! [`HEADER_READ_TIMEOUT`] (a slow or silent client is dropped), at most
//! [`MAX_HEADERS`] headers in [`MAX_HEADER_BYTES`] (431 past either). The
//! body limit is the router's (`api::MAX_BODY`).

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// API connections open at once (SSE streams included).
pub const MAX_API_CONNECTIONS: usize = 64;
/// Time a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers in one request.
pub const MAX_HEADERS: usize = 100;
/// Bytes buffered for one request's head (hyper's minimum is 8 KiB).
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// Serves `app` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: axum::Router) {
    let slots = Arc::new(Semaphore::new(MAX_API_CONNECTIONS));
    loop {
        let Ok((io, addr)) = listener.accept().await else {
            // Out of file descriptors or similar: back off a little.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "api: {MAX_API_CONNECTIONS} connections open: closed");
            continue;
        };
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut b = http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_headers(MAX_HEADERS)
                .max_buf_size(MAX_HEADER_BYTES);
            if let Err(e) = b.serve_connection(TokioIo::new(io), svc).await {
                tracing::debug!(%addr, "api connection: {e}");
            }
            drop(slot);
        });
    }
}
