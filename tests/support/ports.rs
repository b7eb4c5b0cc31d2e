//! Free loopback ports: bound to port 0 and released, so free a moment ago
//! (another process may take one before the test binds it; tests that
//! cannot retry should let the program under test bind port 0).

use std::net::{TcpListener, UdpSocket};

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free TCP port")
}

/// A UDP port on 127.0.0.1 that nothing was bound to a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port")
}

/// A port on 127.0.0.1 free for both TCP and UDP a moment ago (a
/// BitTorrent client's listener and its DHT share one).
pub fn free_tcp_udp_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("free UDP port");
        let port = u.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
