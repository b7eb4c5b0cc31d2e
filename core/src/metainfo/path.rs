//! Safe file names from untrusted torrent paths: the strict check
//! ([`check_component`]) and the sanitizer ([`sanitize_component`]) that
//! turns any byte string into one safe, plain path component, plus the
//! duplicate renaming ([`unique_path`]) libtorrent applies (`name.1.ext`).
//!
//! Everything writes into caller buffers; nothing allocates. The rules, and
//! the attack each defeats, are listed in docs/PARSERS.md ("metainfo").

use super::MAX_COMPONENT_LEN;

/// Longest extension (including its dot) kept when a long name is cut.
pub const MAX_EXTENSION_LEN: usize = 16;
/// Most renames tried for one duplicate path (`name.1.ext` … `name.N.ext`).
pub const MAX_RENAMES: u32 = 1000;
/// What replaces a byte or character that may not appear in a name.
pub const REPLACEMENT: u8 = b'_';

/// What was wrong with a path component or name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Empty component.
    Empty,
    /// `.` or `..`.
    Dots,
    /// Contains `/` or `\` (would be a separator or absolute path).
    Separator,
    /// Contains NUL.
    Nul,
    /// A Windows drive prefix such as `C:`.
    Drive,
    /// Not UTF-8.
    NotUtf8,
    /// Longer than [`MAX_COMPONENT_LEN`].
    TooLong,
    /// A control character (0x01–0x1f, 0x7f).
    Control,
    /// A Unicode bidirectional control (U+200E/F, U+202A–E, U+2066–9).
    Bidi,
}

impl core::fmt::Display for PathError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PathError::Empty => "empty path component",
            PathError::Dots => "'.' or '..' path component",
            PathError::Separator => "path component contains '/' or '\\'",
            PathError::Nul => "path component contains NUL",
            PathError::Drive => "path component is a drive letter",
            PathError::NotUtf8 => "path component is not UTF-8",
            PathError::TooLong => "path component too long",
            PathError::Control => "path component contains a control character",
            PathError::Bidi => "path component contains a bidirectional control character",
        })
    }
}

/// Unicode bidirectional controls: they reorder how a name is shown, so
/// `a\u{202e}txt.exe` displays as `aexe.txt` (extension spoofing).
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Names of only dots and spaces: `.` and `..` walk the tree, and Windows
/// strips trailing dots and spaces, so `...` or `.. ` resolve like `..`.
fn only_dots_spaces(c: &[u8]) -> bool {
    c.iter().all(|&b| b == b'.' || b == b' ')
}

/// Checks one name or path component without changing it (`--strict-paths`).
pub fn check_component(c: &[u8]) -> Result<&str, PathError> {
    if c.is_empty() {
        return Err(PathError::Empty);
    }
    if c.len() > MAX_COMPONENT_LEN {
        return Err(PathError::TooLong);
    }
    if only_dots_spaces(c) {
        return Err(if c.contains(&b'.') {
            PathError::Dots
        } else {
            PathError::Empty
        });
    }
    if c.iter().any(|&b| b == b'/' || b == b'\\') {
        return Err(PathError::Separator);
    }
    if c.contains(&0) {
        return Err(PathError::Nul);
    }
    if c.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(PathError::Control);
    }
    if let [d, b':', ..] = c {
        if d.is_ascii_alphabetic() {
            return Err(PathError::Drive);
        }
    }
    let s = core::str::from_utf8(c).map_err(|_| PathError::NotUtf8)?;
    if s.chars().any(is_bidi) {
        return Err(PathError::Bidi);
    }
    Ok(s)
}

/// Calls `f` with each output piece of `raw` after the character rules
/// (before the length and dots rules); stops when `f` returns false.
fn mapped(raw: &[u8], mut f: impl FnMut(&str) -> bool) {
    const R: &str = "_";
    let drive = matches!(raw, [d, b':', ..] if d.is_ascii_alphabetic());
    let mut at = 0usize;
    for chunk in raw.utf8_chunks() {
        let valid = chunk.valid();
        for (i, c) in valid.char_indices() {
            let bad = c == '/'
                || c == '\\'
                || c.is_ascii_control()
                || is_bidi(c)
                || (drive && at + i == 1);
            let piece = if bad {
                R
            } else {
                valid.get(i..i + c.len_utf8()).unwrap_or(R)
            };
            if !f(piece) {
                return;
            }
        }
        at += valid.len();
        // One replacement per maximal invalid UTF-8 sequence.
        if !chunk.invalid().is_empty() {
            if !f(R) {
                return;
            }
            at += chunk.invalid().len();
        }
    }
}

/// A sanitized component: the safe name and whether it differs from the
/// torrent's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sanitized<'b> {
    /// One plain component: passes [`check_component`].
    pub name: &'b str,
    /// True if `name` is not the torrent's bytes.
    pub changed: bool,
}

/// Turns any byte string into one safe path component, deterministically,
/// in `out` (rules in docs/PARSERS.md):
/// 1. `/`, `\`, NUL, control characters, bidirectional controls, the `:`
///    of a drive prefix (`C:`) and each invalid UTF-8 sequence become `_`;
/// 2. longer than [`MAX_COMPONENT_LEN`] bytes: cut on a character boundary,
///    keeping an extension of at most [`MAX_EXTENSION_LEN`] bytes;
/// 3. empty, or only dots and spaces (`.`, `..`, `...`): every byte
///    becomes `_` (empty becomes `_`).
///
/// The result always passes [`check_component`], and equals the input
/// exactly when the input passes it.
pub fn sanitize_component<'b>(raw: &[u8], out: &'b mut [u8; MAX_COMPONENT_LEN]) -> Sanitized<'b> {
    // Pass 1: mapped length, and where the last '.' starts in the output.
    let mut len = 0usize;
    let mut last_dot = None;
    mapped(raw, |p| {
        if p == "." {
            last_dot = Some(len);
        }
        len += p.len();
        true
    });
    // Rule 2: keep `.ext` if the dot is not the first byte and it is short.
    let ext_len = match last_dot {
        Some(d) if d > 0 && len - d <= MAX_EXTENSION_LEN => len - d,
        _ => 0,
    };
    let (budget, ext_from) = if len > MAX_COMPONENT_LEN {
        (MAX_COMPONENT_LEN - ext_len, len - ext_len)
    } else {
        (MAX_COMPONENT_LEN, len)
    };
    // Pass 2: the head up to `budget` (whole characters only), then the
    // extension.
    let mut n = 0usize;
    let mut pos = 0usize;
    let mut head_done = false;
    mapped(raw, |p| {
        let start = pos;
        pos += p.len();
        let take = if start >= ext_from {
            true
        } else if head_done || n + p.len() > budget {
            head_done = true;
            false
        } else {
            true
        };
        if take {
            if let Some(dst) = out.get_mut(n..n + p.len()) {
                dst.copy_from_slice(p.as_bytes());
                n += p.len();
            }
        }
        true
    });
    // Rule 3.
    if n == 0 {
        if let Some(b) = out.first_mut() {
            *b = REPLACEMENT;
        }
        n = 1;
    } else if only_dots_spaces(out.get(..n).unwrap_or_default()) {
        out.iter_mut().take(n).for_each(|b| *b = REPLACEMENT);
    }
    let name = core::str::from_utf8(out.get(..n).unwrap_or_default()).unwrap_or("_");
    Sanitized {
        name,
        changed: name.as_bytes() != raw,
    }
}

/// Appends `s` to `buf` at `*n`; false if it does not fit.
fn put(buf: &mut [u8], n: &mut usize, s: &[u8]) -> bool {
    match buf.get_mut(*n..*n + s.len()) {
        Some(dst) => {
            dst.copy_from_slice(s);
            *n += s.len();
            true
        }
        None => false,
    }
}

/// Writes `path` with its last component renamed to `stem.K.ext` (the
/// extension is what follows the last dot of the last component, if that
/// dot is not its first byte), as libtorrent renames duplicate files.
/// `None` if `buf` is too small.
pub fn renamed<'b>(path: &str, k: u32, buf: &'b mut [u8]) -> Option<&'b str> {
    let last_start = path.rfind('/').map_or(0, |i| i + 1);
    let last = path.get(last_start..)?;
    let split = match last.rfind('.') {
        Some(d) if d > 0 => last_start + d,
        _ => path.len(),
    };
    let mut digits = [0u8; 10];
    let mut d = digits.len();
    let mut v = k;
    loop {
        d -= 1;
        *digits.get_mut(d)? = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Keep the last component within MAX_COMPONENT_LEN: cut its stem on a
    // character boundary.
    let suffix = 1 + (digits.len() - d) + (path.len() - split);
    let stem_max = MAX_COMPONENT_LEN.checked_sub(suffix)?;
    let mut stem_end = split.min(last_start + stem_max);
    while !path.is_char_boundary(stem_end) {
        stem_end -= 1;
    }
    let mut n = 0usize;
    let ok = put(buf, &mut n, path.get(..stem_end)?.as_bytes())
        && put(buf, &mut n, b".")
        && put(buf, &mut n, digits.get(d..)?)
        && put(buf, &mut n, path.get(split..)?.as_bytes());
    if !ok {
        return None;
    }
    core::str::from_utf8(buf.get(..n)?).ok()
}

/// Why [`unique_path`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UniqueError {
    /// `buf` cannot hold the renamed path.
    BufferTooSmall,
    /// [`MAX_RENAMES`] renames were all taken.
    TooManyDuplicates,
}

/// Picks the on-disk path for a file: `path` itself if `taken(path)` is
/// false, else the first of `renamed(path, 1..)` that is free. The caller
/// keeps the set (it compares case-insensitively if its file system does)
/// and records the result. Returns the path and the rename number (0: not
/// renamed).
pub fn unique_path<'b>(
    path: &str,
    buf: &'b mut [u8],
    mut taken: impl FnMut(&str) -> bool,
) -> Result<(&'b str, u32), UniqueError> {
    if !taken(path) {
        let mut n = 0;
        if !put(buf, &mut n, path.as_bytes()) {
            return Err(UniqueError::BufferTooSmall);
        }
        let s = buf.get(..n).and_then(|b| core::str::from_utf8(b).ok());
        return s.map(|s| (s, 0)).ok_or(UniqueError::BufferTooSmall);
    }
    for k in 1..=MAX_RENAMES {
        let free = match renamed(path, k, buf) {
            Some(p) => !taken(p),
            None => return Err(UniqueError::BufferTooSmall),
        };
        if free {
            return renamed(path, k, buf)
                .map(|p| (p, k))
                .ok_or(UniqueError::BufferTooSmall);
        }
    }
    Err(UniqueError::TooManyDuplicates)
}
