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
