//! Tracker URLs: `udp://host:port[/path]` (BEP 15, path and query as BEP 41
//! URL data), `http://host[:port][/path][?query]` and `https://…` (BEP 3).
//!
//! [`TrackerUrl::parse`] borrows from its input (zero copy) and refuses, with
//! a typed [`ErrorKind`] and the byte offset, every form a user slips into:
//! an empty string, whitespace or control bytes, several URLs joined by `,`
//! or `;`, a missing or malformed scheme separator (`udp//…`, `udp:/…`), an
//! unknown scheme (`htp://…`), no scheme at all (a bare `host:port`), a
//! missing host, bad host characters, a bad IPv6 literal, a missing UDP port
//! (BEP 15 has no default), a port that is not 1..=65535, and bad path bytes
//! or `%` escapes. Userinfo (`user@host`) and fragments (`#…`) are refused:
//! trackers use neither, and an announce query is appended to the path.
//!
//! Limits: [`MAX_URL_LEN`] bytes in all, [`MAX_HOST_LEN`] bytes of host (RFC
//! 1035: 253 characters in a DNS name). The scheme is case-insensitive (RFC
//! 3986 §3.1); everything else is kept as written, so [`fmt::Display`] gives
//! back the input with the scheme in lower case.

use core::fmt;
use core::net::Ipv6Addr;

/// Longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Longest host accepted, in bytes (RFC 1035 §2.3.4: a DNS name is at most
/// 253 characters written out).
pub const MAX_HOST_LEN: usize = 253;

/// The tracker protocol named by the URL's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `udp://` (BEP 15).
    Udp,
    /// `http://` (BEP 3).
    Http,
    /// `https://` (BEP 3 over TLS).
    Https,
}

impl Scheme {
    /// The scheme name, lower case, without `://`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Udp => "udp",
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port used when the URL gives none (RFC 9110 §4.2: 80 and 443);
    /// `None` for UDP, which has no default port (BEP 15).
    pub const fn default_port(self) -> Option<u16> {
        match self {
            Scheme::Udp => None,
            Scheme::Http => Some(80),
            Scheme::Https => Some(443),
        }
    }

    /// Matches a scheme name, ignoring ASCII case (RFC 3986 §3.1).
    fn from_name(name: &str) -> Option<Self> {
        [Scheme::Udp, Scheme::Http, Scheme::Https]
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was wrong with a tracker URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The empty string.
    Empty,
    /// Longer than [`MAX_URL_LEN`].
    TooLong,
    /// A space, tab, newline or other control byte (a URL has none; a
    /// trailing space is the usual slip).
    Whitespace,
    /// Two or more URLs joined by `,`, `;` or a space (give each its own
    /// flag); the offset is the separator's.
    JoinedList,
    /// A known scheme name without `://` after it (`udp//…`, `http:/…`).
    BadSchemeSeparator,
    /// A scheme other than `udp`, `http` and `https` (`htp://…`).
    UnsupportedScheme,
    /// No `scheme://` at all (a bare `host:port`).
    NoScheme,
    /// Nothing between `://` and the port or path.
    MissingHost,
    /// A byte not allowed in a host name (letters, digits, `-._~`), e.g.
    /// `@` of a userinfo part.
    BadHostChar,
    /// Host longer than [`MAX_HOST_LEN`].
    HostTooLong,
    /// `[…]` that is not an IPv6 address, or a missing `]`.
    BadIpv6,
    /// A `udp://` URL without `:port` (BEP 15 has no default port).
    MissingPort,
    /// Empty, non-digit or zero-padded port.
    BadPort,
    /// Port 0 or above 65535.
    PortOutOfRange,
    /// A byte not allowed in a path or query (RFC 3986 §3.3, §3.4), or `#`.
    BadPathChar,
    /// `%` not followed by two hex digits.
    BadEscape,
}

impl ErrorKind {
    /// A short phrase for users.
    pub const fn describe(self) -> &'static str {
        match self {
            ErrorKind::Empty => "empty tracker URL",
            ErrorKind::TooLong => "URL too long",
            ErrorKind::Whitespace => "space or control character in URL",
            ErrorKind::JoinedList => "several URLs in one (give each its own option)",
            ErrorKind::BadSchemeSeparator => "scheme must be followed by \"://\"",
            ErrorKind::UnsupportedScheme => "unsupported scheme (want udp://, http:// or https://)",
            ErrorKind::NoScheme => "no scheme (want udp://, http:// or https://)",
            ErrorKind::MissingHost => "no host",
            ErrorKind::BadHostChar => "character not allowed in a host name",
            ErrorKind::HostTooLong => "host name too long",
            ErrorKind::BadIpv6 => "bad IPv6 address (want [address])",
            ErrorKind::MissingPort => "udp:// tracker URL needs a port (udp://host:port)",
            ErrorKind::BadPort => "port is not a number",
            ErrorKind::PortOutOfRange => "port out of range (1-65535)",
            ErrorKind::BadPathChar => "character not allowed in a URL path or query",
            ErrorKind::BadEscape => "'%' not followed by two hex digits",
        }
    }
}

/// A tracker URL error: what, and the byte offset into the URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    /// What was wrong.
    pub kind: ErrorKind,
    /// Byte offset into the URL.
    pub offset: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind.describe(), self.offset)
    }
}

impl core::error::Error for Error {}

/// A parsed tracker URL, borrowing from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrackerUrl<'a> {
    /// The protocol.
    pub scheme: Scheme,
    /// Host name or address, without the brackets of an IPv6 literal (ready
    /// for a resolver); never empty.
    pub host: &'a str,
    /// The port to connect to: as written, or the scheme's default.
    pub port: u16,
    /// True when the URL wrote the port (`:6969`).
    pub port_explicit: bool,
    /// Path and query as written, starting with `/` or `?`, or empty.
    pub path: &'a str,
}

fn err(kind: ErrorKind, offset: usize) -> Error {
    Error { kind, offset }
}

/// RFC 3986 §2.3 unreserved: the only bytes of a host name we accept.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §3.3/§3.4: pchar, `/` and `?` (`%` is checked separately).
fn is_path_byte(b: u8) -> bool {
    is_host_byte(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'?'
        )
}

/// True if `s` starts with `<scheme>://` for one of ours.
fn starts_with_url(s: &str) -> bool {
    s.split_once("://")
        .is_some_and(|(name, _)| Scheme::from_name(name).is_some())
}

impl<'a> TrackerUrl<'a> {
    /// Parses `s`; see the module docs for what is refused.
    pub fn parse(s: &'a str) -> Result<Self, Error> {
        if s.is_empty() {
            return Err(err(ErrorKind::Empty, 0));
        }
        if s.len() > MAX_URL_LEN {
            return Err(err(ErrorKind::TooLong, MAX_URL_LEN));
        }
        // Whole-string checks first: they explain the slip better than
        // whatever part they would break.
        for (i, _) in s.match_indices([',', ';', ' ']) {
            let before = s.get(..i).unwrap_or_default().trim();
            let next = s.get(i + 1..).unwrap_or_default().trim_start();
            if !before.is_empty() && starts_with_url(next) {
                return Err(err(ErrorKind::JoinedList, i));
            }
        }
        if let Some(i) = s
            .bytes()
            .position(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(err(ErrorKind::Whitespace, i));
        }

        let (scheme, auth_at) = match s.split_once("://") {
            Some((name, _)) => match Scheme::from_name(name) {
                Some(sc) => (sc, name.len() + 3),
                None if name.starts_with(|c: char| c.is_ascii_alphabetic())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
                {
                    return Err(err(ErrorKind::UnsupportedScheme, 0))
                }
                None => return Err(Self::no_scheme(s)),
            },
            None => return Err(Self::no_scheme(s)),
        };
        let rest = s.get(auth_at..).unwrap_or_default();
        let auth_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at_checked(auth_len).unwrap_or((rest, ""));

        // Host: `[v6]` or a name / IPv4 address.
        let (host, host_len) = if let Some(inner) = authority.strip_prefix('[') {
            let close = inner.find(']').ok_or(err(ErrorKind::BadIpv6, auth_at))?;
            let addr = inner.get(..close).unwrap_or_default();
            if addr.parse::<Ipv6Addr>().is_err() {
                return Err(err(ErrorKind::BadIpv6, auth_at));
            }
            (addr, close + 2)
        } else {
            let end = authority.find(':').unwrap_or(authority.len());
            let name = authority.get(..end).unwrap_or_default();
            if let Some(i) = name.bytes().position(|b| !is_host_byte(b)) {
                return Err(err(ErrorKind::BadHostChar, auth_at + i));
            }
            (name, end)
        };
        if host.is_empty() {
            return Err(err(ErrorKind::MissingHost, auth_at));
        }
        if host.len() > MAX_HOST_LEN {
            return Err(err(ErrorKind::HostTooLong, auth_at + MAX_HOST_LEN));
        }

        // Port.
        let after_host = authority.get(host_len..).unwrap_or_default();
        let port_at = auth_at + host_len + 1;
        let (port, port_explicit) = match after_host.strip_prefix(':') {
            Some(p) => (Self::port(p, port_at)?, true),
            None if after_host.is_empty() => match scheme.default_port() {
                Some(d) => (d, false),
                None => return Err(err(ErrorKind::MissingPort, auth_at + host_len)),
            },
            // Only after `]`: `[::1]x`.
            None => return Err(err(ErrorKind::BadIpv6, auth_at)),
        };

        // Path and query.
        let path_at = auth_at + auth_len;
        let bytes = path.as_bytes();
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == b'%' {
                let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return Err(err(ErrorKind::BadEscape, path_at + i));
                }
                i += 3;
            } else if is_path_byte(b) {
                i += 1;
            } else {
                return Err(err(ErrorKind::BadPathChar, path_at + i));
            }
        }

        Ok(TrackerUrl {
            scheme,
            host,
            port,
            port_explicit,
            path,
        })
    }

    /// The error for a URL without `://`: a known scheme with a bad
    /// separator (`udp//`, `http:/`), or no scheme at all.
    fn no_scheme(s: &str) -> Error {
        let name_len = s
            .bytes()
            .position(|b| !b.is_ascii_alphabetic())
            .unwrap_or(s.len());
        let name = s.get(..name_len).unwrap_or_default();
        let next = s.as_bytes().get(name_len).copied();
        if Scheme::from_name(name).is_some() && matches!(next, Some(b':' | b'/')) {
            err(ErrorKind::BadSchemeSeparator, name_len)
        } else {
            err(ErrorKind::NoScheme, 0)
        }
    }

    /// Decimal port, 1..=65535, no sign or leading zero.
    fn port(p: &str, at: usize) -> Result<u16, Error> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.starts_with('0') && p != "0"
        {
            return Err(err(ErrorKind::BadPort, at));
        }
        // More than 5 digits is out of range whatever the value.
        p.parse::<u32>()
            .ok()
            .filter(|_| p.len() <= 5)
            .and_then(|v| u16::try_from(v).ok())
            .filter(|&v| v != 0)
            .ok_or(err(ErrorKind::PortOutOfRange, at))
    }

    /// True when the host is an IPv6 literal (written `[…]`).
    pub fn is_ipv6(&self) -> bool {
        self.host.contains(':')
    }
}

impl fmt::Display for TrackerUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if self.is_ipv6() {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(self.host)?;
        }
        if self.port_explicit {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn ok(s: &str) -> TrackerUrl<'_> {
        TrackerUrl::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn bad(s: &str) -> (ErrorKind, usize) {
        let e = TrackerUrl::parse(s).unwrap_err();
        (e.kind, e.offset)
    }

    #[test]
    fn good_urls_and_defaults() {
        let u = ok("udp://tracker.example.org:6969/announce");
        assert_eq!(
            (u.scheme, u.host, u.port, u.port_explicit, u.path),
            (Scheme::Udp, "tracker.example.org", 6969, true, "/announce")
        );
        let u = ok("udp://127.0.0.1:1");
        assert_eq!((u.host, u.port, u.path), ("127.0.0.1", 1, ""));
        let u = ok("http://t.example/announce?passkey=a%2Fb&x=1");
        assert_eq!((u.port, u.port_explicit), (80, false));
        assert_eq!(u.path, "/announce?passkey=a%2Fb&x=1");
        let u = ok("https://t.example");
        assert_eq!((u.scheme, u.port, u.path), (Scheme::Https, 443, ""));
        let u = ok("http://t.example:65535?x");
        assert_eq!((u.port, u.path), (65535, "?x"));
        let u = ok("udp://[::1]:6969/a");
        assert_eq!((u.host, u.port, u.is_ipv6()), ("::1", 6969, true));
        let u = ok("HTTP://T:8080/");
        assert_eq!((u.scheme, u.host, u.port), (Scheme::Http, "T", 8080));
        // A comma inside a path that is not followed by a URL is fine.
        assert_eq!(ok("http://t/a,b;c").path, "/a,b;c");
    }

    #[test]
    fn display_gives_back_the_input() {
        for s in [
            "udp://tracker.example.org:6969/announce",
            "http://t.example/announce?passkey=a%2Fb&x=1",
            "https://t.example",
            "udp://[2001:db8::1]:80",
            "http://h:80/",
        ] {
            assert_eq!(ok(s).to_string(), s);
        }
        assert_eq!(ok("UDP://h:1").to_string(), "udp://h:1");
    }

    #[test]
    fn user_slips_refused_with_offsets() {
        use ErrorKind::*;
        let cases: &[(&str, ErrorKind, usize)] = &[
            ("", Empty, 0),
            ("udp//tracker:6969", BadSchemeSeparator, 3),
            ("udp:/tracker:6969", BadSchemeSeparator, 3),
            ("http:tracker/announce", BadSchemeSeparator, 4),
            ("htp://tracker/announce", UnsupportedScheme, 0),
            ("ftp://tracker/", UnsupportedScheme, 0),
            ("tracker.example:6969", NoScheme, 0),
            ("127.0.0.1:6969", NoScheme, 0),
            ("udp://tracker:69690", PortOutOfRange, 14),
            ("udp://tracker:65536", PortOutOfRange, 14),
            ("udp://tracker:0", PortOutOfRange, 14),
            ("udp://tracker:123456", PortOutOfRange, 14),
            ("udp://tracker:", BadPort, 14),
            ("udp://tracker:69a", BadPort, 14),
            ("udp://tracker:080", BadPort, 14),
            ("udp://tracker:+80", BadPort, 14),
            ("udp://tracker", MissingPort, 13),
            ("udp://tracker/announce", MissingPort, 13),
            ("udp://:6969", MissingHost, 6),
            ("http:///announce", MissingHost, 7),
            ("https://", MissingHost, 8),
            ("udp://a:1,udp://b:2", JoinedList, 9),
            ("http://a/x;https://b/", JoinedList, 10),
            ("udp://a:1 ", Whitespace, 9),
            ("udp://a:1, udp://b:2", JoinedList, 9),
            ("udp://a:1 http://b", JoinedList, 9),
            (" udp://a:1", Whitespace, 0),
            ("udp://a:1\n", Whitespace, 9),
            ("http://a/b c", Whitespace, 10),
            ("http://user@host/", BadHostChar, 11),
            ("http://ho^st/", BadHostChar, 9),
            ("udp://[::1:6969", BadIpv6, 6),
            ("udp://[zz]:1", BadIpv6, 6),
            ("udp://[::1]x:1", BadIpv6, 6),
            ("http://h/a#frag", BadPathChar, 10),
            ("http://h/<", BadPathChar, 9),
            ("http://h/%4", BadEscape, 9),
            ("http://h/%zz", BadEscape, 9),
        ];
        for &(s, kind, offset) in cases {
            assert_eq!(bad(s), (kind, offset), "{s:?}");
        }
    }

    #[test]
    fn limits_at_their_edges() {
        let host = "a".repeat(MAX_HOST_LEN);
        let s = std::format!("http://{host}/");
        assert_eq!(ok(&s).host.len(), MAX_HOST_LEN);
        let s = std::format!("http://{host}a/");
        assert_eq!(bad(&s), (ErrorKind::HostTooLong, 7 + MAX_HOST_LEN));

        let prefix = "http://h/";
        let s = std::format!("{prefix}{}", "p".repeat(MAX_URL_LEN - prefix.len()));
        assert_eq!(ok(&s).path.len(), MAX_URL_LEN - 8);
        let s = std::format!("{s}p");
        assert_eq!(bad(&s), (ErrorKind::TooLong, MAX_URL_LEN));
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = TrackerUrl::parse("udp://x:69690").unwrap_err();
        assert_eq!(e.to_string(), "port out of range (1-65535) at byte 8");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_round_trips(s in "[a-zA-Z0-9:/\\[\\]%?&=.,; @#-]{0,60}") {
            crate::tracker::fuzzing::fuzz_tracker_url(s.as_bytes());
        }

        #[test]
        fn well_formed_urls_parse_and_round_trip(
            scheme in "(udp|http|https|HTTP)",
            host in "[a-z0-9][a-z0-9.-]{0,30}",
            port in 1u16..,
            path in "(/[a-zA-Z0-9/?&=.~-]{0,30})?",
        ) {
            let s = std::format!("{scheme}://{host}:{port}{path}");
            let u = TrackerUrl::parse(&s).unwrap();
            proptest::prop_assert_eq!((u.host, u.port, u.path), (&*host, port, &*path));
            crate::tracker::fuzzing::fuzz_tracker_url(s.as_bytes());
        }
    }
}
