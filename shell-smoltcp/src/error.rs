//! The driver's error type: one small `Copy` enum for every helper.

use crate::config::ConfigError;

/// What went wrong in the driver. `WouldBlock` is not an error: it is
/// `nb::Error::WouldBlock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// An address or port was refused by [`crate::Remote::new`].
    Config(ConfigError),
    /// Every socket slot handed to [`crate::Stack::new`] is in use.
    NoSocketSlot,
    /// A UDP bind or TCP listen/connect was refused by smoltcp (port 0,
    /// port already used by this socket, socket already open).
    Bind,
    /// A datagram could not be queued: the socket's send buffer is full or
    /// the datagram is larger than it.
    SendBuffer,
    /// A received datagram was larger than the caller's buffer (it is
    /// dropped; the caller's buffer is too small for the protocol).
    Truncated,
    /// The deadline of [`crate::Stack::block_until`] passed, or a
    /// [`crate::UdpRequest`] used all its tries without an answer.
    Timeout,
    /// The TCP connection was refused or reset by the remote, or timed out
    /// in smoltcp (the socket went back to `Closed`).
    ConnectionReset,
    /// The TCP connection is no longer in a state that allows this call
    /// (e.g. sending after [`crate::TcpStream::close`]).
    InvalidState,
    /// An inbound TCP connection came from an address other than the
    /// gateway; it was aborted.
    ForeignPeer,
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Config(e) => write!(f, "configuration: {e}"),
            Error::NoSocketSlot => f.write_str("no free socket slot"),
            Error::Bind => f.write_str("bind/listen/connect refused"),
            Error::SendBuffer => f.write_str("send buffer full or datagram too large"),
            Error::Truncated => f.write_str("received datagram larger than the buffer"),
            Error::Timeout => f.write_str("timed out"),
            Error::ConnectionReset => f.write_str("connection refused, reset or timed out"),
            Error::InvalidState => f.write_str("connection state does not allow this"),
            Error::ForeignPeer => f.write_str("inbound connection from a foreign address"),
        }
    }
}
