//! The fixed network configuration of QEMU's user-mode network, and
//! [`Remote`], the only way to name a host to talk to.
//!
//! QEMU's slirp network (QEMU docs, "Network emulation", `-netdev user`)
//! gives the guest `10.0.2.0/24` with the gateway/host at `10.0.2.2`. The
//! firmware must address nothing else: a remote other than `10.0.2.2` is a
//! typed [`ConfigError`], refused before any packet exists.

use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};

/// The guest's static address (slirp's first DHCP lease address, used here
/// without DHCP).
pub const GUEST_ADDR: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// The gateway: QEMU's user-mode network maps it to the host's `127.0.0.1`.
pub const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// Prefix length of the guest network (`10.0.2.0/24`).
pub const PREFIX_LEN: u8 = 24;
/// The port the firmware listens on for peers (the BitTorrent default,
/// BEP 3 suggests 6881–6889); the test harness forwards a host port to it.
pub const PEER_PORT: u16 = 6881;

/// Why a [`Remote`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// The address is not the gateway `10.0.2.2`.
    NotGateway,
    /// Port 0 is not a destination.
    ZeroPort,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::NotGateway => f.write_str("remote address is not the gateway 10.0.2.2"),
            ConfigError::ZeroPort => f.write_str("remote port is 0"),
        }
    }
}

/// A destination the firmware may talk to: always the gateway, on a
/// non-zero port. The address is checked once, here; the helpers take only
/// `Remote`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    port: u16,
}

impl Remote {
    /// `addr:port`, refused unless `addr` is [`GATEWAY`] and `port != 0`.
    pub fn new(addr: Ipv4Address, port: u16) -> Result<Self, ConfigError> {
        if addr != GATEWAY {
            return Err(ConfigError::NotGateway);
        }
        Self::gateway(port)
    }

    /// The gateway on `port` (refused if `port` is 0).
    pub fn gateway(port: u16) -> Result<Self, ConfigError> {
        if port == 0 {
            return Err(ConfigError::ZeroPort);
        }
        Ok(Remote { port })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The smoltcp endpoint (`10.0.2.2:port`).
    pub fn endpoint(&self) -> IpEndpoint {
        IpEndpoint::new(IpAddress::Ipv4(GATEWAY), self.port)
    }

    /// True if `ep` is this remote (used to drop datagrams from others).
    pub fn matches(&self, ep: &IpEndpoint) -> bool {
        *ep == self.endpoint()
    }
}

/// What the interface needs besides the fixed addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// The Ethernet address (the LAN9118 reports QEMU's, by default
    /// `52:54:00:12:34:56`).
    pub mac: [u8; 6],
    /// Seed for smoltcp's generator of TCP initial sequence numbers and
    /// ephemeral ports (RFC 6528 asks for unpredictable ISNs; pass
    /// something that changes between boots where it matters).
    pub random_seed: u64,
}
