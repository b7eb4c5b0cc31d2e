//! The firmware's command line: QEMU's `-append "…"` text, read with the
//! semihosting `SYS_GET_CMDLINE` call (ARM "Semihosting for AArch32 and
//! AArch64", §6.4), parsed as `key=value` words into [`Args`].
//!
//! Limits: at most [`CMDLINE_MAX`] bytes; unknown keys, repeated keys, bad
//! values and words without `=` are errors (a typo must not silently fall
//! back to a default). QEMU puts the kernel's file name first
//! (`semihosting_arg_fallback`); a first word without `=` is skipped.

use core::fmt;
use core::net::Ipv4Addr;

use shell_smoltcp::core_protocol::id::InfoHash;
use shell_smoltcp::GATEWAY;

/// Longest command line read.
pub const CMDLINE_MAX: usize = 512;

/// What the firmware was asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Args {
    /// `host=A.B.C.D`: the host to talk to (must be `10.0.2.2`; anything
    /// else is refused when the remotes are made).
    pub host: Ipv4Addr,
    /// `udp=PORT`: UDP request/response check against this port.
    pub udp_port: Option<u16>,
    /// `tcp=PORT`: TCP echo check against this port.
    pub tcp_port: Option<u16>,
    /// `kib=N`: KiB sent in the TCP echo check (default 64, at most 65536).
    pub kib: u32,
    /// `serve=1`: after the outbound checks, accept one connection on
    /// port 6881 and echo it until the remote closes.
    pub serve: bool,
    /// `deadline_ms=N`: the whole run's deadline (default 20 000).
    pub deadline_ms: u32,
    /// `info_hash=HEX40`: the torrent to work on (parsed and reported; the
    /// BitTorrent job is not wired yet).
    pub info_hash: Option<InfoHash>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            host: GATEWAY,
            udp_port: None,
            tcp_port: None,
            kib: 64,
            serve: false,
            deadline_ms: 20_000,
            info_hash: None,
        }
    }
}

/// Why the command line was refused, with the offending word.
#[derive(Debug, Clone, Copy)]
pub enum ArgError<'a> {
    /// Not valid UTF-8.
    NotUtf8,
    /// A word without `=`.
    NoEquals(&'a str),
    /// A key this firmware does not know.
    UnknownKey(&'a str),
    /// The same key twice.
    Repeated(&'a str),
    /// A value that does not parse or is out of range.
    BadValue(&'a str),
}

impl fmt::Display for ArgError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::NotUtf8 => f.write_str("command line is not UTF-8"),
            ArgError::NoEquals(w) => write!(f, "`{w}` is not key=value"),
            ArgError::UnknownKey(w) => write!(f, "unknown key in `{w}`"),
            ArgError::Repeated(w) => write!(f, "repeated key in `{w}`"),
            ArgError::BadValue(w) => write!(f, "bad value in `{w}`"),
        }
    }
}

/// Parses the command line.
pub fn parse(line: &[u8]) -> Result<Args, ArgError<'_>> {
    let line = core::str::from_utf8(line).map_err(|_| ArgError::NotUtf8)?;
    let mut args = Args::default();
    let mut seen = 0u8;
    for (i, word) in line.split_ascii_whitespace().enumerate() {
        let Some((key, value)) = word.split_once('=') else {
            if i == 0 {
                continue; // the kernel's file name
            }
            return Err(ArgError::NoEquals(word));
        };
        let bad = ArgError::BadValue(word);
        let bit = match key {
            "host" => {
                args.host = value.parse().map_err(|_| bad)?;
                0
            }
            "udp" => {
                args.udp_port = Some(port(value).ok_or(bad)?);
                1
            }
            "tcp" => {
                args.tcp_port = Some(port(value).ok_or(bad)?);
                2
            }
            "kib" => {
                args.kib = value.parse().ok().filter(|k| *k <= 65_536).ok_or(bad)?;
                3
            }
            "serve" => {
                args.serve = match value {
                    "1" => true,
                    "0" => false,
                    _ => return Err(bad),
                };
                4
            }
            "deadline_ms" => {
                args.deadline_ms = value.parse().ok().filter(|d| *d > 0).ok_or(bad)?;
                5
            }
            "info_hash" => {
                args.info_hash = Some(InfoHash::from_hex(value.as_bytes()).map_err(|_| bad)?);
                6
            }
            _ => return Err(ArgError::UnknownKey(word)),
        };
        if seen & (1 << bit) != 0 {
            return Err(ArgError::Repeated(word));
        }
        seen |= 1 << bit;
    }
    Ok(args)
}

fn port(value: &str) -> Option<u16> {
    value.parse().ok().filter(|p| *p != 0)
}

/// Reads the command line into `buf`; returns its bytes (empty if the
/// debugger has none).
pub fn read(buf: &mut [u8; CMDLINE_MAX]) -> &[u8] {
    // SYS_GET_CMDLINE takes a two-word block {buffer, length} and writes
    // the actual length back into its second word (NUL excluded).
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: the block and the buffer it points to are live, writable and
    // `buf.len()` long for the duration of the call; the host writes at
    // most that many bytes (semihosting spec §6.4).
    let status = unsafe {
        cortex_m_semihosting::syscall1(
            cortex_m_semihosting::nr::GET_CMDLINE,
            block.as_mut_ptr() as usize,
        )
    };
    if status != 0 {
        return &[];
    }
    let len = block[1].min(buf.len());
    &buf[..len]
}
