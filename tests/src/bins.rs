//! The workspace's binaries, found beside the test executable (`target/<profile>/`).

use std::path::{Path, PathBuf};

/// `target/<profile>/`: the test executable lives in its `deps/` folder.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("the test executable lives in target/<profile>/deps")
}

/// The binary `name` of this workspace, which must have been built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first with 'cargo build --workspace --all-targets' \
         (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn cloacinactl() -> PathBuf {
    bin("cloacinactl")
}

pub fn cloacina_daemon() -> PathBuf {
    bin("cloacina-daemon")
}
