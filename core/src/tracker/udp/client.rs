//! Client session (stub).
