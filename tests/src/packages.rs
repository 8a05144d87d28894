//! The example packages of `examples/packages/`, built once per test run.
//!
//! `build()` runs `cargo build --manifest-path examples/packages/Cargo.toml --workspace` with
//! `CARGO_TARGET_DIR=<workspace>/target/packages`, once per test process (a `OnceLock`: one per
//! test binary under `cargo test`, one per test under nextest) and one process at a time (a file
//! lock in that target directory); cargo makes the second and later builds no-ops. On failure
//! the test panics with cargo's output.
//!
//! Shared by every end-to-end test through `cloacina_e2e::packages`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The root of the Cloacina workspace (this crate lives in its `tests/` folder).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| here.to_path_buf())
}

/// `examples/packages/`.
pub fn examples_dir() -> PathBuf {
    workspace_root().join("examples").join("packages")
}

/// Where the examples are built: `<workspace>/target/packages`.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target").join("packages")
}

/// Builds the examples workspace (once per process) and returns the directory holding the
/// built libraries (`<target>/debug`).
pub fn build() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = target_dir();
        fs::create_dir_all(&target).expect("create the examples' target directory");
        let lock = File::create(target.join(".cloacina-test-build.lock"))
            .expect("create the build lock file");
        lock.lock().expect("take the build lock");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let output = Command::new(&cargo)
            .arg("build")
            .arg("--manifest-path")
            .arg(examples_dir().join("Cargo.toml"))
            .arg("--workspace")
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("run cargo to build the example packages");
        drop(lock);
        if !output.status.success() {
            panic!(
                "building the example packages failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        target.join("debug")
    })
}

/// The file name of crate `crate_name`'s cdylib on this platform (`libhello_orders.so`).
pub fn library_file_name(crate_name: &str) -> String {
    cloacina::package::archive::library_file_name(crate_name)
}

/// An example package: its source directory (with `package.toml`) and its built library.
#[derive(Debug, Clone)]
pub struct Example {
    pub name: &'static str,
    pub dir: PathBuf,
    pub library: PathBuf,
}

/// Example `name`, a directory under `examples/packages/` (e.g. `"hello-orders"` or
/// `"hostile/wrong-abi"`) whose crate has the directory's last component as its name. Builds
/// the examples first if needed.
pub fn example(name: &'static str) -> Example {
    let built = build();
    let crate_name = name.rsplit('/').next().unwrap_or(name);
    let library = built.join(library_file_name(crate_name));
    assert!(
        library.is_file(),
        "example library {} was not built",
        library.display()
    );
    Example {
        name,
        dir: examples_dir().join(name),
        library,
    }
}

/// Example `name` rebuilt as `version` (a copy of the example with the version in its
/// `Cargo.toml` and `package.toml` replaced; the example must be at 1.0.0), built once per
/// process and version into `<workspace>/target/packages-versions`: its source directory and
/// its library (copied out of the shared target directory, so versions never overwrite each
/// other's library).
pub fn example_as_version(name: &'static str, version: &str) -> (PathBuf, PathBuf) {
    variant(name, &format!("{name}-{version}"), version, None)
}

/// Example `name` with `from` replaced by `to` in its `src/lib.rs` (e.g. a subscriber bound to
/// another tenant's reactor), built once per process as [`example_as_version`] builds, under
/// the name `tag`: its source directory and its library.
pub fn example_rewritten(
    name: &'static str,
    tag: &str,
    from: &str,
    to: &str,
) -> (PathBuf, PathBuf) {
    let src = fs::read_to_string(examples_dir().join(name).join("src/lib.rs"))
        .expect("read the example's lib.rs");
    assert!(
        src.contains(from),
        "{name}'s lib.rs has no {from:?} to replace"
    );
    variant(name, tag, "1.0.0", Some(src.replace(from, to)))
}

/// A copy of example `name` as `version` (and with `lib_rs` as its source when given), built
/// once per process and `key`.
fn variant(
    name: &'static str,
    key: &str,
    version: &str,
    lib_rs: Option<String>,
) -> (PathBuf, PathBuf) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BUILT: OnceLock<Mutex<HashMap<String, (PathBuf, PathBuf)>>> = OnceLock::new();
    let key = key.to_string();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut built = cloacina::sync::lock(built);
    if let Some(found) = built.get(&key) {
        return found.clone();
    }
    let root = workspace_root();
    let base = root.join("target").join("packages-versions");
    let dir = base.join(&key);
    let src = examples_dir().join(name);
    let crate_name = name.rsplit('/').next().unwrap_or(name);
    fs::create_dir_all(dir.join("src")).expect("create the source directory");
    let lock =
        File::create(base.join(".cloacina-test-build.lock")).expect("create the build lock file");
    lock.lock().expect("take the build lock");
    let crates = root.join("crates").display().to_string();
    let versioned = format!("version = \"{version}\"");
    let cargo_toml = fs::read_to_string(src.join("Cargo.toml"))
        .expect("read the example's Cargo.toml")
        .replacen("version = \"1.0.0\"", &versioned, 1)
        .replace("../../../crates", &crates)
        + "\n[workspace]\n";
    write_atomically(&dir.join("Cargo.toml"), cargo_toml.as_bytes());
    let manifest = fs::read_to_string(src.join("package.toml"))
        .expect("read the example's package.toml")
        .replacen("version = \"1.0.0\"", &versioned, 1);
    write_atomically(&dir.join("package.toml"), manifest.as_bytes());
    let lib_rs = match lib_rs {
        Some(text) => text.into_bytes(),
        None => fs::read(src.join("src/lib.rs")).expect("read the example's lib.rs"),
    };
    write_atomically(&dir.join("src/lib.rs"), &lib_rs);
    let lock_file = fs::read(examples_dir().join("Cargo.lock")).expect("read Cargo.lock");
    write_atomically(&dir.join("Cargo.lock"), &lock_file);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .args(["build", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", base.join("target"))
        .output()
        .expect("run cargo to build the versioned example");
    assert!(
        output.status.success(),
        "building {key} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let file = library_file_name(crate_name);
    let library = dir.join(&file);
    let built_library = fs::read(base.join("target/debug").join(&file)).expect("read the library");
    write_atomically(&library, &built_library);
    drop(lock);
    let found = (dir, library);
    built.insert(key, found.clone());
    found
}

/// Writes `contents` to `path` as a whole: into a file beside it, renamed over it. A process
/// reading the old file meanwhile (another test process packing the same variant: nextest runs
/// each test in a process of its own) sees the old file or the new one, never a half-written
/// one. The file is always rewritten, so its modification time moves on and cargo rebuilds the
/// variant: every variant of one crate links the same library file in the shared target
/// directory, so only a fresh build says which variant that file is.
fn write_atomically(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename onto {}: {e}", path.display()));
}
