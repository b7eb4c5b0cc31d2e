//! The shell's one HTTP client: tracker announces (BEP 3) and `.torrent`
//! downloads, over `http://` and `https://`.
//!
//! GET only, HTTP/1.1 with `Connection: close`; the response head is read
//! with `httparse`, chunked bodies are reassembled. TLS is rustls with the
//! `ring` provider; the trusted roots are the system's, or those of the
//! files named by `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (as OpenSSL
//! does), loaded once per process.
//!
//! Bounded: the head at [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers,
//! the body at the caller's limit (a `Content-Length` over it is refused
//! before the body is read), redirects at [`MAX_REDIRECTS`]. Time is the
//! caller's to bound (`tokio::time::timeout`). Every failure is an
//! [`Error`] that prints as one line a user can act on.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ourtorrent_core::tracker::url::{Scheme, TrackerUrl};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::torrent::{TorrentFile, MAX_TORRENT_FILE};

/// Most redirects (HTTP 301, 302, 303, 307, 308) followed for one GET.
pub const MAX_REDIRECTS: usize = 5;
/// Largest response head (status line and headers).
pub const MAX_HEAD: usize = 16 << 10;
/// Most response headers read.
pub const MAX_HEADERS: usize = 64;
/// Chunked framing allowed on top of the body limit while reading (the
/// body itself is checked against the limit once decoded).
const CHUNK_SLACK: usize = 64 << 10;

/// Why a GET failed; `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The URL is not one we can fetch.
    Url(String),
    /// The TCP connection (or the name lookup) failed: `host:port` and why.
    Connect(String, String),
    /// The TLS handshake failed: already worded for a user.
    Tls(String),
    /// The server answered with another status than 200.
    Status(u16, String),
    /// The body is larger than the caller's limit (bytes).
    TooBig(usize),
    /// The response head is larger than [`MAX_HEAD`] or has more than
    /// [`MAX_HEADERS`] headers.
    HeadTooBig,
    /// More than [`MAX_REDIRECTS`] redirects.
    TooManyRedirects,
    /// A response that is not HTTP, or cut short: what was wrong.
    Bad(&'static str),
    /// Reading or writing failed after connecting.
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Url(why) => write!(f, "{why}"),
            Error::Connect(at, why) => write!(f, "{at}: {why}"),
            Error::Tls(why) => write!(f, "TLS: {why}"),
            Error::Status(code, reason) if reason.is_empty() => write!(f, "HTTP {code}"),
            Error::Status(code, reason) => write!(f, "HTTP {code} {reason}"),
            Error::TooBig(limit) => write!(f, "reply larger than the {limit}-byte limit"),
            Error::HeadTooBig => write!(
                f,
                "HTTP response head over {MAX_HEAD} bytes or {MAX_HEADERS} headers"
            ),
            Error::TooManyRedirects => write!(f, "more than {MAX_REDIRECTS} redirects"),
            Error::Bad(why) => write!(f, "{why}"),
            Error::Io(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for Error {}

/// A successful (200) response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The body, transfer coding undone.
    pub body: Vec<u8>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
}

/// GETs `url` (`http://` or `https://`, checked by the core's URL parser;
/// a `#fragment` is dropped), following up to [`MAX_REDIRECTS`] redirects;
/// the body is at most `max_body` bytes.
pub async fn get(url: &str, max_body: usize) -> Result<Response, Error> {
    let mut url = url.split('#').next().unwrap_or_default().to_string();
    for _ in 0..=MAX_REDIRECTS {
        match get_once(&url, max_body).await? {
            Reply::Done(r) => return Ok(r),
            Reply::Redirect(to) => url = resolve(&url, &to)?,
        }
    }
    Err(Error::TooManyRedirects)
}

/// Time allowed to fetch a `.torrent` (connecting, TLS, redirects, body).
pub const TORRENT_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// True if the command-line argument `arg` is an `http://` or `https://`
/// URL rather than a file.
pub fn is_url(arg: &str) -> bool {
    let lower = arg.get(..8).unwrap_or(arg).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// A `.torrent` named on the command line: read from its file, or, for a
/// URL, fetched first (at most [`MAX_TORRENT_FILE`] bytes, within
/// [`TORRENT_FETCH_TIMEOUT`]; blocking, on a runtime of its own). A reply
/// that is not a bencoded dictionary is refused as "not a torrent".
pub fn read_torrent(arg: &Path) -> anyhow::Result<TorrentFile> {
    let Some(url) = arg.to_str().filter(|a| is_url(a)) else {
        return TorrentFile::read(arg);
    };
    let limit = usize::try_from(MAX_TORRENT_FILE).unwrap_or(usize::MAX);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt
        .block_on(async { tokio::time::timeout(TORRENT_FETCH_TIMEOUT, get(url, limit)).await })
        .map_err(|_| {
            anyhow::anyhow!(
                "{url}: timed out after {} s",
                TORRENT_FETCH_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    if r.body.first() != Some(&b'd') {
        anyhow::bail!(
            "{url}: not a torrent (the server sent {} bytes{})",
            r.body.len(),
            r.content_type
                .map(|t| format!(" of {t}"))
                .unwrap_or_default()
        );
    }
    Ok(TorrentFile::from_bytes(r.body))
}

/// What one request gave.
enum Reply {
    Done(Response),
    Redirect(String),
}

/// One request, no redirect followed.
async fn get_once(url: &str, max_body: usize) -> Result<Reply, Error> {
    let u = TrackerUrl::parse(url).map_err(|e| Error::Url(format!("bad URL {url:?}: {e}")))?;
    if u.scheme == Scheme::Udp {
        return Err(Error::Url(format!("{url}: not an http:// or https:// URL")));
    }
    let host = if u.is_ipv6() {
        format!("[{}]", u.host)
    } else {
        u.host.to_string()
    };
    let at = format!("{host}:{}", u.port);
    let path = if u.path.is_empty() || u.path.starts_with('?') {
        format!("/{}", u.path)
    } else {
        u.path.to_string()
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {at}\r\nUser-Agent: OurTorrent/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let tcp = TcpStream::connect((u.host, u.port))
        .await
        .map_err(|e| Error::Connect(at.clone(), io_line(&e)))?;
    if u.scheme == Scheme::Https {
        let name = rustls::pki_types::ServerName::try_from(u.host.to_string())
            .map_err(|_| Error::Tls(format!("{:?} is not a valid TLS server name", u.host)))?;
        let tls = connector()?
            .connect(name, tcp)
            .await
            .map_err(|e| tls_error(&e, u.host))?;
        exchange(tls, &req, max_body).await
    } else {
        exchange(tcp, &req, max_body).await
    }
}

/// The redirect target `to` (absolute, or an absolute path on the same
/// server) seen from `from`.
fn resolve(from: &str, to: &str) -> Result<String, Error> {
    let lower = to.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(to.to_string());
    }
    let origin_end = from
        .find("://")
        .and_then(|i| {
            from.get(i + 3..)
                .and_then(|r| r.find('/'))
                .map(|j| i + 3 + j)
        })
        .unwrap_or(from.len());
    match (to.starts_with('/'), from.get(..origin_end)) {
        (true, Some(origin)) => Ok(format!("{origin}{to}")),
        _ => Err(Error::Bad("redirect to a location that is not a URL")),
    }
}

/// What we keep of a response head.
#[derive(Debug)]
struct Head {
    len: usize,
    code: u16,
    reason: String,
    content_length: Option<usize>,
    chunked: bool,
    location: Option<String>,
    content_type: Option<String>,
}

/// Parses the head at the start of `raw`; `None` while incomplete.
fn parse_head(raw: &[u8]) -> Result<Option<Head>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if raw.len() > MAX_HEAD => return Err(Error::HeadTooBig),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooBig),
        Err(_) => return Err(Error::Bad("bad HTTP response")),
    };
    if len > MAX_HEAD {
        return Err(Error::HeadTooBig);
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    let content_length = match header("content-length") {
        Some(v) => Some(
            v.parse::<usize>()
                .map_err(|_| Error::Bad("bad Content-Length"))?,
        ),
        None => None,
    };
    Ok(Some(Head {
        len,
        code: resp.code.unwrap_or(0),
        reason: resp.reason.unwrap_or("").to_string(),
        content_length,
        chunked: header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked")),
        location: header("location"),
        content_type: header("content-type"),
    }))
}

/// Sends `req` on `s` and reads the reply: a body of at most `max_body`
/// bytes, a redirect, or the error.
async fn exchange<S>(mut s: S, req: &str, max_body: usize) -> Result<Reply, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io = |e: std::io::Error| match tls_of(&e) {
        Some(t) => Error::Tls(t.to_string()),
        None => Error::Io(io_line(&e)),
    };
    s.write_all(req.as_bytes()).await.map_err(io)?;
    s.flush().await.map_err(io)?;
    let mut raw = Vec::new();
    let mut head = None;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify: the end of the
            // reply (a cut body is caught below by its length or chunks).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io(e)),
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(buf.get(..n).unwrap_or_default());
        if head.is_none() {
            head = parse_head(&raw)?;
        }
        let Some(h) = &head else { continue };
        if h.code != 200 {
            // The status line says it all.
            break;
        }
        if h.content_length.is_some_and(|l| l > max_body) {
            return Err(Error::TooBig(max_body));
        }
        let got = raw.len().saturating_sub(h.len);
        if h.content_length.is_some_and(|l| got >= l) {
            break;
        }
        let slack = if h.chunked { CHUNK_SLACK } else { 0 };
        if got > max_body.saturating_add(slack) {
            return Err(Error::TooBig(max_body));
        }
    }
    let h = match head {
        Some(h) => h,
        None if raw.is_empty() => return Err(Error::Bad("the server closed without a reply")),
        None => match parse_head(&raw)? {
            Some(h) => h,
            None => return Err(Error::Bad("HTTP response cut short")),
        },
    };
    match (h.code, h.location) {
        (301 | 302 | 303 | 307 | 308, Some(to)) => return Ok(Reply::Redirect(to)),
        (200, _) => {}
        (code, _) => return Err(Error::Status(code, h.reason)),
    }
    let rest = raw.get(h.len..).unwrap_or_default();
    let body = if h.chunked {
        dechunk(rest)?
    } else {
        match h.content_length {
            Some(n) => rest
                .get(..n)
                .ok_or(Error::Bad("body shorter than Content-Length"))?
                .to_vec(),
            None => rest.to_vec(),
        }
    };
    if body.len() > max_body {
        return Err(Error::TooBig(max_body));
    }
    Ok(Reply::Done(Response {
        body,
        content_type: h.content_type,
    }))
}

/// Undoes the chunked transfer coding (RFC 9112 §7.1); trailers ignored.
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    loop {
        let (start, size) = match httparse::parse_chunk_size(b) {
            Ok(httparse::Status::Complete(x)) => x,
            Ok(httparse::Status::Partial) => return Err(Error::Bad("chunked body cut short")),
            Err(_) => return Err(Error::Bad("bad chunk size")),
        };
        let size = usize::try_from(size).map_err(|_| Error::Bad("chunk too large"))?;
        if size == 0 {
            return Ok(out);
        }
        let end = start
            .checked_add(size)
            .ok_or(Error::Bad("chunk too large"))?;
        let data = b
            .get(start..end)
            .ok_or(Error::Bad("chunked body cut short"))?;
        out.extend_from_slice(data);
        b = b
            .get(end + 2..)
            .ok_or(Error::Bad("chunked body cut short"))?;
    }
}

/// The process's TLS client configuration: rustls with `ring`, the
/// system's roots (or `SSL_CERT_FILE` / `SSL_CERT_DIR`), built once.
struct TlsSetup {
    config: Result<Arc<rustls::ClientConfig>, String>,
    /// Why the trusted roots may be missing (a file that could not be
    /// read, or none found), for the "not trusted" message.
    roots_note: Option<String>,
}

fn tls_setup() -> &'static TlsSetup {
    static SETUP: OnceLock<TlsSetup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!("loading trusted certificates: {e}");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "trusted root certificates");
        let roots_note = match found.errors.first() {
            Some(e) => Some(e.to_string()),
            None if added == 0 => Some("no trusted CA certificates found".into()),
            None => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| format!("configuration: {e}"));
        TlsSetup { config, roots_note }
    })
}

fn connector() -> Result<tokio_rustls::TlsConnector, Error> {
    tls_setup()
        .config
        .clone()
        .map(tokio_rustls::TlsConnector::from)
        .map_err(Error::Tls)
}

/// The rustls error inside an I/O error, if it is one.
fn tls_of(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

/// A handshake failure as one line: the certificate problems a user meets
/// worded plainly, the rest as rustls says them.
fn tls_error(e: &std::io::Error, host: &str) -> Error {
    use rustls::CertificateError as C;
    let Some(t) = tls_of(e) else {
        return Error::Tls(format!("handshake failed: {}", io_line(e)));
    };
    Error::Tls(match t {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => format!(
                "certificate not trusted (unknown issuer; {})",
                tls_setup()
                    .roots_note
                    .as_deref()
                    .unwrap_or("SSL_CERT_FILE can name a CA file")
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("certificate not valid for {host}")
            }
            C::Expired | C::ExpiredContext { .. } => "certificate expired".to_string(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "certificate not valid yet".to_string()
            }
            C::Revoked => "certificate revoked".to_string(),
            other => format!(
                "bad certificate: {}",
                rustls::Error::InvalidCertificate(other.clone())
            ),
        },
        other => other.to_string(),
    })
}

/// An I/O error as a short lower-case phrase: `connection refused`, not
/// `Connection refused (os error 111)`.
pub fn io_line(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s.split(" (os error").next().unwrap_or_default();
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => format!("{:?}", e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `exchange` against a scripted server reply.
    fn reply(server: &'static [u8], max_body: usize) -> Result<Reply, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, mut server_end) = tokio::io::duplex(1 << 16);
            let srv = tokio::spawn(async move {
                let mut req = [0u8; 1024];
                let _ = server_end.read(&mut req).await;
                let _ = server_end.write_all(server).await;
                // Dropping the end closes the connection.
            });
            let r = exchange(client, "GET / HTTP/1.1\r\n\r\n", max_body).await;
            let _ = srv.await;
            r
        })
    }

    fn body(server: &'static [u8], max_body: usize) -> Result<Vec<u8>, Error> {
        match reply(server, max_body)? {
            Reply::Done(r) => Ok(r.body),
            Reply::Redirect(to) => panic!("redirect to {to}"),
        }
    }

    #[test]
    fn bodies_plain_sized_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nd8:intervali60ee";
        assert_eq!(body(plain, 100).unwrap(), b"d8:intervali60ee");
        let sized = b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nde!!junk";
        assert_eq!(body(sized, 100).unwrap(), b"de!!");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nd8:in\r\nb;ext=1\r\ntervali60ee\r\n0\r\n\r\n";
        assert_eq!(body(chunked, 100).unwrap(), b"d8:intervali60ee");
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let e = body(b"HTTP/1.1 404 Not Found\r\n\r\nnope", 100).unwrap_err();
        assert_eq!(e.to_string(), "HTTP 404 Not Found");
        assert!(body(b"HTTP/1.1 200 OK\r\nContent-Le", 100).is_err());
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort";
        assert_eq!(
            body(cut, 100).unwrap_err().to_string(),
            "chunked body cut short"
        );
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert_eq!(
            body(short, 100).unwrap_err(),
            Error::Bad("body shorter than Content-Length")
        );
        assert_eq!(
            body(b"garbage\r\n\r\n", 100).unwrap_err(),
            Error::Bad("bad HTTP response")
        );
        assert_eq!(
            body(b"", 100).unwrap_err().to_string(),
            "the server closed without a reply"
        );
    }

    #[test]
    fn the_body_limit_holds_at_its_edge() {
        // Exactly the limit passes; one byte more fails, with and without
        // Content-Length, and chunked.
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\n\r\n0123456789", 10)
                .unwrap()
                .len(),
            10
        );
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\n\r\n0123456789X", 10).unwrap_err(),
            Error::TooBig(10)
        );
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0", 10).unwrap_err(),
            Error::TooBig(10)
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n5\r\n67890\r\n0\r\n\r\n";
        assert_eq!(body(chunked, 10).unwrap_err(), Error::TooBig(10));
        assert_eq!(body(chunked, 11).unwrap(), b"01234567890");
        assert_eq!(
            Error::TooBig(10).to_string(),
            "reply larger than the 10-byte limit"
        );
    }

    /// A 200 head of exactly `len` bytes (`headers` of them), no body.
    fn head_of(len: usize, headers: usize) -> &'static [u8] {
        let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..headers {
            h.extend_from_slice(format!("H{i}: ").as_bytes());
            let pad = if i + 1 == headers {
                len.saturating_sub(h.len() + 4)
            } else {
                1
            };
            h.extend(std::iter::repeat_n(b'x', pad));
            h.extend_from_slice(b"\r\n");
        }
        h.extend_from_slice(b"\r\n");
        assert_eq!(h.len(), len);
        h.leak()
    }

    #[test]
    fn the_head_limits_hold_at_their_edge() {
        assert!(body(head_of(MAX_HEAD, 3), 10).is_ok());
        assert_eq!(body(head_of(MAX_HEAD + 1, 3), 10), Err(Error::HeadTooBig));
        assert!(body(head_of(1000, MAX_HEADERS), 10).is_ok());
        assert_eq!(
            body(head_of(1000, MAX_HEADERS + 1), 10),
            Err(Error::HeadTooBig)
        );
    }

    #[test]
    fn the_head_is_bounded() {
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() <= MAX_HEAD {
            big.extend_from_slice(b"X-Filler: 0123456789abcdef\r\n");
        }
        let big: &'static [u8] = big.leak();
        assert_eq!(body(big, 10).unwrap_err(), Error::HeadTooBig);
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"A: b\r\n");
        }
        many.extend_from_slice(b"\r\n");
        let many: &'static [u8] = many.leak();
        assert_eq!(body(many, 10).unwrap_err(), Error::HeadTooBig);
    }

    #[test]
    fn redirects_are_resolved() {
        match reply(b"HTTP/1.1 302 Found\r\nLocation: /b.torrent\r\n\r\n", 10).unwrap() {
            Reply::Redirect(to) => assert_eq!(to, "/b.torrent"),
            Reply::Done(_) => panic!("not followed"),
        }
        assert_eq!(
            resolve("http://h:1/a/b.torrent", "/c").unwrap(),
            "http://h:1/c"
        );
        assert_eq!(resolve("https://h", "/c").unwrap(), "https://h/c");
        assert_eq!(resolve("http://h/x", "HTTPS://g/y").unwrap(), "HTTPS://g/y");
        assert!(resolve("http://h/x", "relative").is_err());
        // A redirect without Location is a plain status.
        assert!(matches!(
            reply(b"HTTP/1.1 302 Found\r\n\r\n", 10),
            Err(Error::Status(302, _))
        ));
    }

    #[test]
    fn io_errors_read_as_short_phrases() {
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(io_line(&e), "connection refused");
    }
}
