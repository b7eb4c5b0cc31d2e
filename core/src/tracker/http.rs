//! The HTTP tracker protocol (BEP 3, 7, 23, 48).
