//! Piece bookkeeping (placeholder).
