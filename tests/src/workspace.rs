//! Paths inside the workspace: the peer scripts and the built binaries.

use std::path::PathBuf;

/// Returns the workspace root (the folder holding the root `Cargo.toml`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the workspace root")
        .to_path_buf()
}

/// Returns the path of a peer script under `tests/peers/`.
pub fn peer_script(name: &str) -> PathBuf {
    root().join("tests").join("peers").join(name)
}

/// Returns the path of a workspace binary built with the same profile as the
/// running test (`target/<profile>/<name>`), or `$RACKHAND_BIN_DIR/<name>`
/// when that variable is set.
///
/// The binaries are not built by the test itself: `tests/run` builds every
/// target before running the suite, and a missing binary fails the test with
/// the command that builds it.
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("RACKHAND_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("the test knows its own executable path");
    // target/<profile>/deps/<test-binary> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "binary {} not found; build it first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}
