//! The HTTP side: `httparse` over tokio `TcpStream`s, keep-alive, bounded
//! request size, and a connection table that survives a slowloris.
//!
//! # Slow clients
//! A slowloris holds connections open by trickling a request (a byte a
//! second defeats any per-read timeout). Three bounds keep honest requests
//! answered:
//! - a whole-request deadline: a request head (or, on a keep-alive
//!   connection, the next one) must arrive within [`REQUEST_DEADLINE`] of
//!   when the connection started waiting for it;
//! - at most [`MAX_CONNECTIONS_PER_SOURCE`] connections per source (an IPv4
//!   address or IPv6 /64) and [`MAX_CONNECTIONS`] in all;
//! - when either is reached, the connection that has waited longest for an
//!   unfinished request is closed to make room (of the same source for the
//!   per-source cap). An honest request is sent at once after connecting,
//!   so it is the newest, never the oldest; a new connection is refused
//!   only when every slot is busy answering.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::abuse::Source;
use super::{lock, Clock, Shared};

/// Largest request head accepted (request line + headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Most headers parsed.
pub const MAX_HEADERS: usize = 32;
/// A request head must be complete this long after the connection started
/// waiting for it (accept, or the previous reply on keep-alive).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Most HTTP connections open at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most HTTP connections open at once from one source.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 256;
/// Most requests on one keep-alive connection.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 1000;

/// One open connection in the [`Table`].
struct Slot {
    source: Source,
    /// When it started waiting for its current request; `None` while the
    /// request is being answered (not evictable).
    waiting_since: Option<Instant>,
    close: Arc<Notify>,
}

/// Why a new connection got no slot.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// Every slot of its source is answering a request.
    SourceBusy,
    /// Every slot is answering a request.
    Busy,
}

/// The open connections (see the module docs).
#[derive(Default)]
struct Table {
    slots: HashMap<u64, Slot>,
    per_source: HashMap<Source, usize>,
    next: u64,
    max: usize,
    max_per_source: usize,
}

impl Table {
    fn new(max: usize, max_per_source: usize) -> Self {
        Table {
            max,
            max_per_source,
            ..Default::default()
        }
    }

    /// The slot waiting longest, among those of `source` if given.
    fn oldest_waiting(&self, source: Option<Source>) -> Option<u64> {
        self.slots
            .iter()
            .filter(|(_, s)| source.is_none_or(|src| s.source == src))
            .filter_map(|(id, s)| s.waiting_since.map(|t| (t, *id)))
            .min()
            .map(|(_, id)| id)
    }

    fn remove(&mut self, id: u64) -> Option<Slot> {
        let slot = self.slots.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&slot.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&slot.source);
            }
        }
        Some(slot)
    }

    /// A slot for a connection from `source` at `now`, closing (the
    /// returned) older waiting ones to make room.
    fn admit(
        &mut self,
        source: Source,
        now: Instant,
    ) -> Result<(u64, Arc<Notify>, usize), Refused> {
        let mut evicted = 0;
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            let victim = self
                .oldest_waiting(Some(source))
                .ok_or(Refused::SourceBusy)?;
            if let Some(v) = self.remove(victim) {
                v.close.notify_one();
                evicted += 1;
            }
        }
        if self.slots.len() >= self.max {
            let victim = self.oldest_waiting(None).ok_or(Refused::Busy)?;
            if let Some(v) = self.remove(victim) {
                v.close.notify_one();
                evicted += 1;
            }
        }
        let id = self.next;
        self.next += 1;
        let close = Arc::new(Notify::new());
        self.slots.insert(
            id,
            Slot {
                source,
                waiting_since: Some(now),
                close: close.clone(),
            },
        );
        *self.per_source.entry(source).or_default() += 1;
        Ok((id, close, evicted))
    }

    fn set_waiting(&mut self, id: u64, since: Option<Instant>) {
        if let Some(s) = self.slots.get_mut(&id) {
            s.waiting_since = since;
        }
    }
}

type SharedTable = Arc<Mutex<Table>>;

fn table_lock(t: &SharedTable) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// Frees a connection's slot when its task ends, however it ends.
struct SlotGuard {
    table: SharedTable,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        table_lock(&self.table).remove(self.id);
    }
}

/// Accepts connections forever.
pub async fn serve(listener: TcpListener, shared: Shared, clock: Clock) {
    let table: SharedTable = Arc::new(Mutex::new(Table::new(
        MAX_CONNECTIONS,
        MAX_CONNECTIONS_PER_SOURCE,
    )));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let admitted = table_lock(&table).admit(Source::of(peer.ip()), Instant::now());
        let (id, close) = match admitted {
            Ok((id, close, evicted)) => {
                if evicted > 0 {
                    let mut st = lock(&shared);
                    for _ in 0..evicted {
                        st.stats.err("http_evicted");
                    }
                }
                (id, close)
            }
            Err(r) => {
                lock(&shared).stats.err(match r {
                    Refused::SourceBusy => "http_refused_source_busy",
                    Refused::Busy => "http_refused_busy",
                });
                drop(stream);
                continue;
            }
        };
        let guard = SlotGuard {
            table: table.clone(),
            id,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            connection(stream, peer, &shared, clock, &guard, &close).await;
            drop(guard);
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
        403 => "Forbidden",
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

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    clock: Clock,
    slot: &SlotGuard,
    close: &Notify,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut filled = 0;
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        // Read until a whole request head is buffered, by the deadline.
        let since = Instant::now();
        table_lock(&slot.table).set_waiting(slot.id, Some(since));
        let deadline = since + REQUEST_DEADLINE;
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
            let read = tokio::time::timeout_at(deadline, stream.read(&mut buf[filled..]));
            tokio::select! {
                r = read => match r {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(n)) => filled += n,
                    Err(_) => {
                        if filled > 0 {
                            lock(shared).stats.err("http_timeout");
                        }
                        return;
                    }
                },
                // Evicted to make room (counted by the acceptor).
                _ = close.notified() => return,
            }
        };
        table_lock(&slot.table).set_waiting(slot.id, None);
        // GET requests carry no body: whatever follows is the next request.
        buf.copy_within(used..filled, 0);
        filled -= used;
        let (status, ctype, body) = if head.method != "GET" {
            lock(shared).stats.err("http_bad_method");
            (405, "text/plain", b"only GET\n".to_vec())
        } else {
            shared.handle_http(clock.now_ms(), peer, &head.target)
        };
        let keep = head.keep_alive && status == 200;
        // The reply is bounded by the deadline too (a reader that never
        // reads must not hold the slot).
        let sent = tokio::time::timeout(
            REQUEST_DEADLINE,
            respond(&mut stream, status, ctype, &body, keep),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) || !keep {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(last: u8) -> Source {
        Source::of(std::net::IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn full_table_evicts_the_oldest_waiting_connection() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut t = Table::new(3, 2);
        let (a, ca, _) = t.admit(src(1), at(0)).unwrap();
        let (b, _, _) = t.admit(src(1), at(1)).unwrap();
        // Per-source cap: a third from src(1) closes the oldest, a.
        let (_, _, ev) = t.admit(src(1), at(2)).unwrap();
        assert_eq!(ev, 1);
        assert!(!t.slots.contains_key(&a));
        // ca was notified (a permit is stored).
        assert!(futures_ready(ca.notified()));
        // Another source fills the table; then the oldest overall (b) goes.
        t.admit(src(2), at(3)).unwrap();
        let (_, _, ev) = t.admit(src(3), at(4)).unwrap();
        assert_eq!(ev, 1);
        assert!(!t.slots.contains_key(&b));
        // Busy answering is never evicted: with every slot busy, refused.
        let ids: Vec<u64> = t.slots.keys().copied().collect();
        for id in &ids {
            t.set_waiting(*id, None);
        }
        assert_eq!(t.admit(src(4), at(5)).err(), Some(Refused::Busy));
        assert_eq!(t.slots.len(), 3);
        // Per-source cap with every slot of that source busy: refused, even
        // with room in the table.
        let mut t = Table::new(10, 2);
        for ms in 0..2 {
            let (id, _, _) = t.admit(src(1), at(ms)).unwrap();
            t.set_waiting(id, None);
        }
        assert_eq!(t.admit(src(1), at(9)).err(), Some(Refused::SourceBusy));
        assert!(t.admit(src(2), at(9)).is_ok());
        assert_eq!(t.per_source.values().sum::<usize>(), t.slots.len());
    }

    /// True if `f` is ready at its first poll.
    fn futures_ready(f: impl std::future::Future<Output = ()>) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(1), f)
                .await
                .is_ok()
        })
    }
}
