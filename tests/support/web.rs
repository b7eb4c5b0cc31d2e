//! A tiny HTTP/1.1 server for tests, plain or over TLS: a test CA made
//! with `rcgen` ([`TestCa`], its `ca.pem` for `SSL_CERT_FILE`), a server
//! on a free 127.0.0.1 port answering each request with what a handler
//! returns ([`Server`]), canned responses ([`response`]) and a forwarder
//! ([`forward`]) that puts a TLS front end before a plain HTTP service
//! such as `shell-std tracker`. One thread per connection, one request per
//! connection (`Connection: close`), every read and write bounded by
//! [`IO_TIMEOUT`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Longest wait for one read or write on a test connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head the server reads.
const MAX_REQUEST: usize = 64 << 10;

/// A certificate authority made for one test, and a leaf certificate it
/// signed for `localhost` and `127.0.0.1`.
pub struct TestCa {
    /// The CA certificate in PEM, written to a file (for `SSL_CERT_FILE`).
    pub ca_pem: PathBuf,
    /// The leaf's certificate chain (leaf, then CA) in PEM, for a
    /// third-party server.
    pub leaf_pem: PathBuf,
    /// The leaf's private key (PKCS #8 PEM).
    pub leaf_key: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// Makes the CA and the leaf; writes `dir/ca.pem`, `dir/leaf.pem` and
    /// `dir/leaf.key`.
    pub fn new(dir: &Path) -> TestCa {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "OurTorrent test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).expect("CA certificate");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf certificate");
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).expect("write ca.pem");
        let (leaf_pem, leaf_key_pem) = (dir.join("leaf.pem"), dir.join("leaf.key"));
        std::fs::write(&leaf_pem, leaf.pem() + &ca.pem()).expect("write leaf.pem");
        std::fs::write(&leaf_key_pem, leaf_key.serialize_pem()).expect("write leaf.key");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca.der().clone()];
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
        TestCa {
            ca_pem,
            leaf_pem,
            leaf_key: leaf_key_pem,
            server: Arc::new(server),
        }
    }

    /// The TLS configuration of a server presenting the leaf.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }
}

/// What a [`Server`] does with a request: given its head (request line
/// and headers), the whole response to send.
pub type Handler = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// A running test server; it lives as long as the test process (its
/// accept thread is never joined), so keep it for the test's length.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Server {
    /// Serves `handler` on a free 127.0.0.1 port, over TLS when `tls` is
    /// given.
    pub fn start(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server");
        let addr = listener.local_addr().expect("local addr");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { continue };
                let (tls, handler) = (tls.clone(), handler.clone());
                std::thread::spawn(move || serve(tcp, tls, &*handler));
            }
        });
        Server { addr }
    }

    /// `http://127.0.0.1:PORT` or `https://…` + `path`.
    pub fn url(&self, tls: bool, path: &str) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }
}

/// One connection: read the head, answer, close (with TLS close_notify).
fn serve(
    tcp: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: &(dyn Fn(&[u8]) -> Vec<u8> + Send + Sync),
) {
    let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
    match tls {
        None => exchange(tcp, handler),
        Some(cfg) => {
            let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                return;
            };
            let mut s = rustls::StreamOwned::new(conn, tcp);
            // A client that refuses our certificate ends here.
            if s.conn.complete_io(&mut s.sock).is_err() {
                return;
            }
            exchange(&mut s, handler);
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
}

fn exchange(mut s: impl Read + Write, handler: &(dyn Fn(&[u8]) -> Vec<u8> + Send + Sync)) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_REQUEST {
            return;
        }
    }
    let reply = handler(&head);
    // The client may hang up early (a body over its limit): fine.
    let _ = s.write_all(&reply);
    let _ = s.flush();
}

/// The request target of a request head (`/x.torrent`), or "".
pub fn target(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    String::from_utf8_lossy(line)
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// A whole response: status line, `Content-Type` when given,
/// `Content-Length` when `sized`, `Connection: close`, then `body`.
pub fn response(status: &str, content_type: Option<&str>, body: &[u8], sized: bool) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    if let Some(t) = content_type {
        r.push_str(&format!("Content-Type: {t}\r\n"));
    }
    if sized {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// A handler that sends each request on to the plain HTTP service at
/// `backend` and returns its whole reply (read until it closes): with
/// [`Server::start`] and a TLS configuration, an HTTPS front end.
pub fn forward(backend: SocketAddr) -> Handler {
    Arc::new(move |head: &[u8]| {
        let Ok(mut b) = TcpStream::connect_timeout(&backend, IO_TIMEOUT) else {
            return response("502 Bad Gateway", None, b"", true);
        };
        let _ = b.set_read_timeout(Some(IO_TIMEOUT));
        let _ = b.set_write_timeout(Some(IO_TIMEOUT));
        let mut reply = Vec::new();
        if b.write_all(head).is_err() || b.read_to_end(&mut reply).is_err() && reply.is_empty() {
            return response("502 Bad Gateway", None, b"", true);
        }
        reply
    })
}
