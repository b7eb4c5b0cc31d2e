//! The HTTP side: `httparse` over tokio `TcpStream`s, keep-alive, bounded
//! request size, read timeout and connection count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{lock, Clock, Shared};

/// Largest request head accepted (request line + headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Most headers parsed.
pub const MAX_HEADERS: usize = 32;
/// A connection idle (or trickling a request) this long is closed.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most HTTP connections open at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most requests on one keep-alive connection.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 1000;

/// Accepts connections forever.
pub async fn serve(listener: TcpListener, shared: Shared, clock: Clock) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            lock(&shared).stats.err("http_too_many_connections");
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            connection(stream, peer, &shared, clock).await;
            drop(permit);
        });
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &[u8],
    keep_alive: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    let mut msg = head.into_bytes();
    msg.extend_from_slice(body);
    stream.write_all(&msg).await
}

struct Head {
    method: String,
    target: String,
    keep_alive: bool,
}

fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let version = req.version.unwrap_or(0);
            let conn = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("connection"))
                .map(|h| h.value.to_ascii_lowercase());
            let keep_alive = match conn.as_deref() {
                Some(b"close") => false,
                Some(b"keep-alive") => true,
                _ => version == 1,
            };
            Ok(Some((
                Head {
                    method: req.method.unwrap_or("").to_string(),
                    target: req.path.unwrap_or("").to_string(),
                    keep_alive,
                },
                n,
            )))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(()),
    }
}

async fn connection(mut stream: TcpStream, peer: SocketAddr, shared: &Shared, clock: Clock) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut filled = 0;
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        // Read until a whole request head is buffered.
        let (head, used) = loop {
            match parse_head(&buf[..filled]) {
                Ok(Some(x)) => break x,
                Ok(None) if filled == buf.len() => {
                    lock(shared).stats.err("http_request_too_large");
                    let _ = respond(
                        &mut stream,
                        431,
                        "text/plain",
                        b"request too large\n",
                        false,
                    )
                    .await;
                    return;
                }
                Ok(None) => {}
                Err(()) => {
                    lock(shared).stats.err("http_malformed");
                    let _ = respond(
                        &mut stream,
                        400,
                        "text/plain",
                        b"malformed request\n",
                        false,
                    )
                    .await;
                    return;
                }
            }
            match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf[filled..])).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => filled += n,
                Err(_) => {
                    if filled > 0 {
                        lock(shared).stats.err("http_timeout");
                    }
                    return;
                }
            }
        };
        // GET requests carry no body: whatever follows is the next request.
        buf.copy_within(used..filled, 0);
        filled -= used;
        let (status, ctype, body) = if head.method != "GET" {
            lock(shared).stats.err("http_bad_method");
            (405, "text/plain", b"only GET\n".to_vec())
        } else {
            lock(shared).handle_http(clock.now_ms(), peer, &head.target)
        };
        let keep = head.keep_alive && status == 200;
        if respond(&mut stream, status, ctype, &body, keep)
            .await
            .is_err()
            || !keep
        {
            return;
        }
    }
}
