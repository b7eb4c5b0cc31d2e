//! The `shell-std` binary for tests outside its package (integration tests
//! of `shell-std` itself use `env!("CARGO_BIN_EXE_shell-std")`).

use std::path::PathBuf;

use crate::repo_root;

/// `OURTORRENT_SHELL_STD` if set, else the workspace's debug build
/// (`$CARGO_TARGET_DIR` or `target/`, then `debug/shell-std`; `cargo test
/// --workspace` builds it). Not checked to exist: the caller runs it.
pub fn shell_std() -> PathBuf {
    std::env::var_os("OURTORRENT_SHELL_STD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("target"))
                .join("debug/shell-std")
        })
}
