//! SHA-1 piece verification (BEP 3: `pieces` holds the SHA-1 of each piece).

use sha1::{Digest, Sha1};

/// SHA-1 of one piece, fed in order, block by block, so the shell never
/// needs the whole piece in memory.
#[derive(Clone, Debug, Default)]
pub struct PieceHasher {
    sha: Sha1,
    len: u64,
}

impl PieceHasher {
    /// An empty hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the next bytes of the piece.
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len = self.len.saturating_add(data.len() as u64);
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if nothing was hashed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest.
    pub fn finish(self) -> [u8; 20] {
        self.sha.finalize().into()
    }

    /// True if the digest equals `expected`.
    pub fn matches(self, expected: &[u8; 20]) -> bool {
        &self.finish() == expected
    }
}

/// SHA-1 of a piece whose blocks arrive in any order: a block that
/// continues the hashed prefix is hashed as it comes ([`Self::feed`]);
/// after a gap the caller feeds the rest itself, e.g. read back from its
/// store ([`Self::update`], from [`Self::hashed`] on). One hasher for the
/// picker (which hashes blocks in its slots) and for a shell that hashes
/// on its own threads.
#[derive(Clone, Debug, Default)]
pub struct InOrderHasher {
    h: PieceHasher,
    next: u32,
}

impl InOrderHasher {
    /// Nothing hashed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `data` lies at offset `begin` of the piece: hashed if it continues
    /// the prefix hashed so far (returns true), else left alone.
    pub fn feed(&mut self, begin: u32, data: &[u8]) -> bool {
        if begin != self.next {
            return false;
        }
        self.update(data);
        true
    }

    /// Hashes the bytes right after the prefix (the caller's read-back).
    pub fn update(&mut self, data: &[u8]) {
        self.h.update(data);
        self.next = self
            .next
            .saturating_add(u32::try_from(data.len()).unwrap_or(u32::MAX));
    }

    /// Bytes hashed from the start of the piece.
    pub fn hashed(&self) -> u32 {
        self.next
    }

    /// The digest of what was hashed.
    pub fn finish(self) -> [u8; 20] {
        self.h.finish()
    }
}

/// True if `data` hashes to `expected`.
pub fn verify_piece(data: &[u8], expected: &[u8; 20]) -> bool {
    let mut h = PieceHasher::new();
    h.update(data);
    h.matches(expected)
}
