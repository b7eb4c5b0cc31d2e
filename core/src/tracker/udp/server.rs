//! Server side (stub).
