//! The firmware's arguments: QEMU's `-append "…"` text (which the firmware
//! reads with the semihosting `SYS_GET_CMDLINE` call), parsed as
//! `key=value` words into [`Args`]. Here rather than in the firmware so
//! that it is tested on the host.
//!
//! Limits: at most [`CMDLINE_MAX`] bytes; unknown keys, repeated keys, bad
//! values and words without `=` are errors (a typo must not silently fall
//! back to a default). QEMU puts the kernel's file name first
//! (`semihosting_arg_fallback`); a first word without `=` is skipped.

use core::fmt;
use core::net::Ipv4Addr;

use ourtorrent_core::id::InfoHash;

use crate::config::GATEWAY;
use crate::flash::Fault;

/// Longest command line the firmware reads: room for the piece hashes of
/// the largest torrent ([`crate::job::MAX_PIECES`] × 40 hex digits) and
/// every other key.
pub const CMDLINE_MAX: usize = 12 * 1024;

/// What the firmware was asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
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
    /// `info_hash=HEX40`: the torrent to download and seed.
    pub info_hash: Option<InfoHash>,
    /// `tracker=PORT`: the BEP 15 (UDP) tracker at `host:PORT`. Giving it
    /// runs the BitTorrent job instead of the network check.
    pub tracker_port: Option<u16>,
    /// `length=N`: the torrent's total length in bytes.
    pub length: Option<u64>,
    /// `piece_len=N`: the torrent's piece length in bytes.
    pub piece_len: Option<u32>,
    /// `pieces=HEX`: the SHA-1 of every piece, 40 hex digits each,
    /// concatenated in piece order (checked by
    /// [`crate::job::TorrentConfig::from_args`]).
    pub pieces_hex: Option<&'a str>,
    /// `port=N`: the port announced to the tracker (default 6881; use the
    /// host port QEMU forwards to the guest's 6881). Tracker peers on this
    /// port are taken to be this node itself and skipped.
    pub announce_port: u16,
    /// `seed_ms=N`: how long to seed after the download (default 10 000;
    /// 0: no seeding). Seeding ends earlier once a leecher has everything.
    pub seed_ms: u32,
    /// `crash=panic|fault`: fail on purpose before any network work, to
    /// test that a panic or a hard fault ends the run with a failure.
    pub crash: Option<Crash>,
    /// `flash_fault=write:N|erase:N`: the flash model fails its `N`-th
    /// write or erase once (a test knob: a storage error must fail a
    /// piece, not the board).
    pub flash_fault: Option<Fault>,
}

/// A deliberate failure (`crash=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// `crash=panic`: a Rust panic.
    Panic,
    /// `crash=fault`: an undefined instruction (a HardFault).
    Fault,
}

impl Default for Args<'_> {
    fn default() -> Self {
        Args {
            host: GATEWAY,
            udp_port: None,
            tcp_port: None,
            kib: 64,
            serve: false,
            deadline_ms: 20_000,
            info_hash: None,
            tracker_port: None,
            length: None,
            piece_len: None,
            pieces_hex: None,
            announce_port: crate::config::PEER_PORT,
            seed_ms: 10_000,
            crash: None,
            flash_fault: None,
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
pub fn parse(line: &[u8]) -> Result<Args<'_>, ArgError<'_>> {
    let line = core::str::from_utf8(line).map_err(|_| ArgError::NotUtf8)?;
    let mut args = Args::default();
    let mut seen = 0u32;
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
            "crash" => {
                args.crash = Some(match value {
                    "panic" => Crash::Panic,
                    "fault" => Crash::Fault,
                    _ => return Err(bad),
                });
                7
            }
            "tracker" => {
                args.tracker_port = Some(port(value).ok_or(bad)?);
                8
            }
            "length" => {
                args.length = Some(value.parse().ok().filter(|n| *n > 0).ok_or(bad)?);
                9
            }
            "piece_len" => {
                args.piece_len = Some(value.parse().ok().filter(|n| *n > 0).ok_or(bad)?);
                10
            }
            "pieces" => {
                let hex = value.len() % 40 == 0
                    && !value.is_empty()
                    && value.bytes().all(|b| b.is_ascii_hexdigit());
                if !hex {
                    return Err(bad);
                }
                args.pieces_hex = Some(value);
                11
            }
            "port" => {
                args.announce_port = port(value).ok_or(bad)?;
                12
            }
            "seed_ms" => {
                args.seed_ms = value.parse().map_err(|_| bad)?;
                13
            }
            "flash_fault" => {
                let (op, n) = value.split_once(':').ok_or(bad)?;
                let n = value_nonzero(n).ok_or(bad)?;
                args.flash_fault = Some(match op {
                    "write" => Fault::Write(n),
                    "erase" => Fault::Erase(n),
                    _ => return Err(bad),
                });
                14
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

fn value_nonzero(value: &str) -> Option<u32> {
    value.parse().ok().filter(|n| *n != 0)
}

fn port(value: &str) -> Option<u16> {
    value.parse().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn defaults_and_the_kernel_name() {
        let a = parse(b"/path/to/ourtorrent-firmware").unwrap();
        assert_eq!(a.host, GATEWAY);
        assert_eq!(
            (a.udp_port, a.tcp_port, a.kib, a.serve),
            (None, None, 64, false)
        );
        assert_eq!(a.deadline_ms, 20_000);
        assert!(parse(b"").is_ok());
    }

    #[test]
    fn every_key() {
        let a = parse(
            b"fw udp=6969 tcp=6882 kib=1024 serve=1 deadline_ms=5000 host=10.0.2.2 \
              info_hash=0123456789ABCDEF0123456789abcdef01234567",
        )
        .unwrap();
        assert_eq!((a.udp_port, a.tcp_port), (Some(6969), Some(6882)));
        assert_eq!((a.kib, a.serve, a.deadline_ms), (1024, true, 5000));
        assert_eq!(a.info_hash.unwrap().as_bytes()[..3], [0x01, 0x23, 0x45]);
        let h = "0123456789abcdef0123456789abcdef01234567";
        let line =
            format!("tracker=6969 length=65536 piece_len=16384 pieces={h}{h} port=5555 seed_ms=0");
        let a = parse(line.as_bytes()).unwrap();
        assert_eq!(a.tracker_port, Some(6969));
        assert_eq!((a.length, a.piece_len), (Some(65536), Some(16384)));
        assert_eq!(a.pieces_hex.map(str::len), Some(80));
        assert_eq!((a.announce_port, a.seed_ms), (5555, 0));
        assert_eq!(parse(b"crash=fault").unwrap().crash, Some(Crash::Fault));
        assert_eq!(parse(b"crash=panic").unwrap().crash, Some(Crash::Panic));
        assert_eq!(
            parse(b"flash_fault=write:3").unwrap().flash_fault,
            Some(Fault::Write(3))
        );
        assert_eq!(
            parse(b"flash_fault=erase:1").unwrap().flash_fault,
            Some(Fault::Erase(1))
        );
        // Parsing accepts any address; `Remote::new` refuses it later.
        assert_eq!(
            parse(b"host=10.0.2.3").unwrap().host,
            Ipv4Addr::new(10, 0, 2, 3)
        );
    }

    #[test]
    fn refusals() {
        let cases: &[(&[u8], &str)] = &[
            (b"fw udp", "NoEquals"),
            (b"udp=1 oops", "NoEquals"),
            (b"speed=11", "UnknownKey"),
            (b"udp=1 udp=2", "Repeated"),
            (b"udp=0", "BadValue"),
            (b"udp=65536", "BadValue"),
            (b"tcp=-1", "BadValue"),
            (b"kib=65537", "BadValue"),
            (b"serve=yes", "BadValue"),
            (b"deadline_ms=0", "BadValue"),
            (b"host=10.0.2", "BadValue"),
            (b"info_hash=0123", "BadValue"),
            (
                b"info_hash=zz23456789abcdef0123456789abcdef01234567",
                "BadValue",
            ),
            (b"crash=maybe", "BadValue"),
            (b"length=0", "BadValue"),
            (b"piece_len=x", "BadValue"),
            (b"pieces=0123", "BadValue"),
            (b"pieces=", "BadValue"),
            (
                b"pieces=zz23456789abcdef0123456789abcdef01234567",
                "BadValue",
            ),
            (b"tracker=0", "BadValue"),
            (b"seed_ms=-1", "BadValue"),
            (b"flash_fault=write", "BadValue"),
            (b"flash_fault=write:0", "BadValue"),
            (b"flash_fault=read:1", "BadValue"),
            (b"udp=\xff", "NotUtf8"),
        ];
        for (line, kind) in cases {
            let err = parse(line).unwrap_err();
            assert!(
                format!("{err:?}").starts_with(kind),
                "{:?}: {err:?}",
                core::str::from_utf8(line)
            );
        }
    }
}
