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

/// True if `data` hashes to `expected`.
pub fn verify_piece(data: &[u8], expected: &[u8; 20]) -> bool {
    let mut h = PieceHasher::new();
    h.update(data);
    h.matches(expected)
}
