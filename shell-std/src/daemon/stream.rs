//! `GET /api/torrents/{id}/files/{n}/stream`: one file of a running
//! torrent served over HTTP with a single `Range` (RFC 9110 §14) while it
//! downloads, so a video player can play it before it is complete.
//!
//! Only bytes of verified pieces are ever sent. Bytes already verified go
//! out at once; at a piece not verified yet, that piece and the next
//! [`READ_AHEAD`] pieces of the file are made high priority in the picker
//! and the response waits for the piece (woken by `Ctx::piece_passed`, at
//! most [`PIECE_WAIT`]; past that the body ends with an error, which
//! closes the connection, and the client sees a short body).
//!
//! Limits: one range per request (a multi-range or malformed `Range` is
//! ignored and the whole file served, as RFC 9110 allows); the torrent must
//! be running and the file wanted (a paused or checking torrent, or a
//! skipped file, answers 409); the read-ahead priority replaces the files'
//! own high-priority pieces while a stream waits (they are given back when
//! it ends), and two streams of one torrent each set their own window (the
//! last one wins). The read position still waits behind the blocks already
//! requested from peers (up to the client's 128-block pipeline per peer):
//! queued requests of other pieces are not cancelled.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::api::{Api, ApiError};
use crate::client::select;
use crate::client::swarm::Ctx;
use axum::Json;

/// Pieces after the read position made high priority with it.
pub const READ_AHEAD: u32 = 4;
/// Longest wait for one piece before the response gives up.
pub const PIECE_WAIT: Duration = Duration::from_secs(60);
/// Largest body chunk read from disk at once.
pub const CHUNK: usize = 256 << 10;
/// Longest `Range` header looked at (longer ones are ignored).
pub const MAX_RANGE_HEADER: usize = 128;

/// A `Range` header's single byte range, before it meets the file size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=FIRST-` or `bytes=FIRST-LAST` (LAST inclusive).
    From(u64, Option<u64>),
    /// `bytes=-N`: the last N bytes.
    Suffix(u64),
}

/// Why a `Range` header was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// Longer than [`MAX_RANGE_HEADER`].
    TooLong,
    /// Not `bytes=…`, or a bound that is not a number, or LAST < FIRST.
    Malformed,
    /// More than one range (not supported: the whole file is served).
    Multiple,
}

/// Parses a `Range` header value: one range in the `bytes` unit.
pub fn parse_range(v: &str) -> Result<ByteRange, RangeError> {
    if v.len() > MAX_RANGE_HEADER {
        return Err(RangeError::TooLong);
    }
    let spec = v
        .trim()
        .strip_prefix("bytes=")
        .ok_or(RangeError::Malformed)?
        .trim();
    if spec.contains(',') {
        return Err(RangeError::Multiple);
    }
    let (a, b) = spec.split_once('-').ok_or(RangeError::Malformed)?;
    let num = |s: &str| -> Result<u64, RangeError> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(RangeError::Malformed);
        }
        s.parse().map_err(|_| RangeError::Malformed)
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return Ok(ByteRange::Suffix(num(b)?));
    }
    let first = num(a)?;
    if b.is_empty() {
        return Ok(ByteRange::From(first, None));
    }
    let last = num(b)?;
    if last < first {
        return Err(RangeError::Malformed);
    }
    Ok(ByteRange::From(first, Some(last)))
}

/// The half-open byte span `[start, end)` of a file of `size` bytes that
/// `r` selects, or `None` when it selects nothing (416).
pub fn resolve(r: ByteRange, size: u64) -> Option<(u64, u64)> {
    match r {
        ByteRange::From(first, _) if first >= size => None,
        ByteRange::From(first, last) => {
            let end = last.map_or(size, |l| l.saturating_add(1).min(size));
            Some((first, end))
        }
        ByteRange::Suffix(0) => None,
        ByteRange::Suffix(n) => Some((size.saturating_sub(n), size)),
    }
}

/// The `Content-Type` for a file name, by its extension.
pub fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "avi" => "video/x-msvideo",
        "mov" => "video/quicktime",
        "ts" => "video/mp2t",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" => "audio/ogg",
        "ogv" => "video/ogg",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        "txt" | "srt" => "text/plain; charset=utf-8",
        "vtt" => "text/vtt",
        "pdf" => "application/pdf",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

/// An error answer: JSON `{"error": …}` as the rest of the API.
fn refuse(status: StatusCode, m: String) -> Response {
    (status, Json(serde_json::json!({ "error": m }))).into_response()
}

/// `GET /api/torrents/{id}/files/{n}/stream`.
pub async fn stream(
    State(api): State<Api>,
    Path((id, n)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let id: i64 = id.parse().map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("torrent id {id:?} is not a number"),
        )
    })?;
    let entry = api
        .daemon
        .get(id)
        .map_err(|r| ApiError::from(r).into_response())?;
    let n: usize = n.parse().map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("file index {n:?} is not a number"),
        )
    })?;
    let file = entry.info.files.get(n).ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            format!(
                "torrent {id} has no file {n} (it has {})",
                entry.info.files.len()
            ),
        )
    })?;
    let Some(ctx) = entry.ctx() else {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!("torrent {id} is not running (paused, checking or stopped)"),
        ));
    };
    // A skipped file's pieces are never fetched: waiting would only time out.
    if ctx.file_priorities().get(n).is_some_and(|p| !p.wanted()) {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!("file {n} of torrent {id} is skipped: set its priority first"),
        ));
    }
    let size = file.len;
    let name = file.path.last().map(String::as_str).unwrap_or("");
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v).ok());
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, size),
        Some(r) => match resolve(r, size) {
            Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e),
            None => {
                let mut resp = refuse(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("range outside file {n} of {size} bytes"),
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(resp);
            }
        },
    };
    let base = file.offset;
    let reader = Reader {
        ctx,
        pos: base + start,
        end: base + end,
        file_last_piece: last_piece(&entry.info, base, size),
        boosted: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(reader, |mut r| async move {
        match r.next().await {
            Ok(Some(b)) => Some((Ok::<Bytes, std::io::Error>(b), r)),
            Ok(None) => {
                r.unboost();
                None
            }
            Err(e) => {
                r.unboost();
                r.pos = r.end;
                Some((Err(e), r))
            }
        }
    }));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) =
            HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end.saturating_sub(1)))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// The last piece holding a byte of the file at `base` of `size` bytes.
fn last_piece(info: &crate::client::meta::Info, base: u64, size: u64) -> u32 {
    let last_byte = (base + size).saturating_sub(1);
    (last_byte / info.piece_len.max(1)) as u32
}

/// Reads verified bytes of `[pos, end)` (torrent offsets) in order.
struct Reader {
    ctx: Arc<Ctx>,
    pos: u64,
    end: u64,
    file_last_piece: u32,
    /// The picker's high mask is ours (to give back at the end).
    boosted: bool,
}

impl Reader {
    /// The next chunk, waiting for its piece if needed; `None` at the end.
    async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let piece_len = self.ctx.info.piece_len.max(1);
        let piece = (self.pos / piece_len) as u32;
        self.wait_for(piece).await?;
        let piece_end = (u64::from(piece) + 1) * piece_len;
        let n = (self.end.min(piece_end) - self.pos).min(CHUNK as u64) as usize;
        let (ctx, off) = (self.ctx.clone(), self.pos);
        let buf = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n];
            ctx.storage.read_at(off, &mut buf).map(|()| buf)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.pos += n as u64;
        Ok(Some(Bytes::from(buf)))
    }

    fn has(&self, piece: u32) -> bool {
        self.ctx.lock().torrent.picker().have().get(piece)
    }

    /// Returns once `piece` is verified: at once if it is, else after
    /// making it and the read-ahead window high priority and waiting for
    /// `piece_passed` (bounded by [`PIECE_WAIT`]).
    async fn wait_for(&mut self, piece: u32) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + PIECE_WAIT;
        let ctx = self.ctx.clone();
        loop {
            // Registered before the check, so a piece passing in between
            // still wakes us.
            let passed = ctx.piece_passed.notified();
            tokio::pin!(passed);
            passed.as_mut().enable();
            if self.has(piece) {
                return Ok(());
            }
            if self.ctx.is_stopped() {
                return Err(std::io::Error::other(format!(
                    "piece {piece}: the torrent stopped before it was verified"
                )));
            }
            self.boost(piece);
            tokio::select! {
                _ = &mut passed => {}
                _ = ctx.stopped() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("piece {piece} not verified within {PIECE_WAIT:?}"),
                    ));
                }
            }
        }
    }

    /// Makes `piece` and the next [`READ_AHEAD`] pieces of the file high
    /// priority (with the files' own high pieces).
    fn boost(&mut self, piece: u32) {
        let ctx = &self.ctx;
        let (_, high) = select::masks(&ctx.info, &ctx.file_priorities());
        let count = ctx.info.pieces();
        let mut high = match high {
            Some(h) => h,
            None => {
                match ourtorrent_core::pieces::Bitfield::new(
                    vec![0u8; (count as usize).div_ceil(8)].into_boxed_slice(),
                    count,
                ) {
                    Ok(b) => b,
                    Err(_) => return,
                }
            }
        };
        let last = piece
            .saturating_add(READ_AHEAD)
            .min(self.file_last_piece)
            .min(count.saturating_sub(1));
        for p in piece..=last {
            let _ = high.set(p);
        }
        let mut g = ctx.lock();
        if g.torrent.set_high(Some(high)).is_ok() {
            self.boosted = true;
        }
        g.wake();
    }

    /// Gives the picker back the files' own high-priority pieces.
    fn unboost(&mut self) {
        if !self.boosted {
            return;
        }
        self.boosted = false;
        let (_, high) = select::masks(&self.ctx.info, &self.ctx.file_priorities());
        let _ = self.ctx.lock().torrent.set_high(high);
    }
}

/// A client that goes away mid-stream (or a `HEAD`) gives the priority back.
impl Drop for Reader {
    fn drop(&mut self) {
        self.unboost();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(parse_range("bytes=0-99"), Ok(ByteRange::From(0, Some(99))));
        assert_eq!(parse_range("bytes=100-"), Ok(ByteRange::From(100, None)));
        assert_eq!(parse_range("bytes=-5"), Ok(ByteRange::Suffix(5)));
        assert_eq!(
            parse_range(" bytes= 7 - 9 "),
            Ok(ByteRange::From(7, Some(9)))
        );
    }

    #[test]
    fn refuses_bad_ones() {
        for v in [
            "",
            "bytes=",
            "bytes=-",
            "items=0-1",
            "bytes=a-1",
            "bytes=1-a",
            "bytes=5-4",
            "bytes=+1-2",
            "bytes=1",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(parse_range(v), Err(RangeError::Malformed), "{v:?}");
        }
        assert_eq!(parse_range("bytes=0-1,5-6"), Err(RangeError::Multiple));
    }

    #[test]
    fn header_length_limit_at_its_edge() {
        let pad = |n: usize| format!("bytes=0-{}", "0".repeat(n - "bytes=0-".len() - 1) + "1");
        let at = pad(MAX_RANGE_HEADER);
        assert_eq!(at.len(), MAX_RANGE_HEADER);
        assert_eq!(parse_range(&at), Ok(ByteRange::From(0, Some(1))));
        let over = pad(MAX_RANGE_HEADER + 1);
        assert_eq!(parse_range(&over), Err(RangeError::TooLong));
    }

    #[test]
    fn resolves_against_the_size() {
        let r = |a, b| ByteRange::From(a, b);
        assert_eq!(resolve(r(0, Some(9)), 100), Some((0, 10)));
        assert_eq!(resolve(r(90, Some(200)), 100), Some((90, 100)));
        assert_eq!(resolve(r(99, None), 100), Some((99, 100)));
        assert_eq!(resolve(r(100, None), 100), None);
        assert_eq!(resolve(r(0, Some(u64::MAX)), 100), Some((0, 100)));
        assert_eq!(resolve(ByteRange::Suffix(10), 100), Some((90, 100)));
        assert_eq!(resolve(ByteRange::Suffix(1000), 100), Some((0, 100)));
        assert_eq!(resolve(ByteRange::Suffix(0), 100), None);
        assert_eq!(resolve(r(0, None), 0), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("a/Movie.MP4"), "video/mp4");
        assert_eq!(content_type("x.mkv"), "video/x-matroska");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(content_type("x.bin"), "application/octet-stream");
    }
}
