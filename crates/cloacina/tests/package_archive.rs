//! `.cloacina` archives: round trip, determinism, limits, and hostile archives built byte by
//! byte, each rejected with an exact message and nothing left on disk.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cloacina::package::archive::{
    self, ArchiveError, HOST_TARGET, UnpackLimits, library_for, pack, sha256_file, unpack,
};
use flate2::{Compression, write::GzEncoder};
use tar::{EntryType, Header};

const MANIFEST: &str = "[package]\nname = \"demo\"\nversion = \"1.0.0\"\n";
const OTHER_TARGET: &str = "aarch64-apple-darwin";

/// A package directory with a manifest, crate source and two fake libraries.
fn package_dir(root: &Path) -> (PathBuf, Vec<(String, PathBuf)>) {
    let dir = root.join("demo");
    fs::create_dir_all(dir.join("src/nested")).expect("mkdir");
    fs::write(dir.join("package.toml"), MANIFEST).expect("write");
    fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"demo\"\nversion = \"1.0.0\"\n",
    )
    .expect("write");
    fs::write(dir.join("Cargo.lock"), "# lock\n").expect("write");
    fs::write(dir.join("build.rs"), "fn main() {}\n").expect("write");
    fs::write(dir.join("src/lib.rs"), "pub mod nested;\n").expect("write");
    fs::write(dir.join("src/nested/mod.rs"), "pub fn f() {}\n").expect("write");
    // Not part of a package: must not be packed.
    fs::create_dir_all(dir.join("target/debug")).expect("mkdir");
    fs::write(dir.join("target/debug/junk"), "junk").expect("write");
    fs::write(dir.join("README.md"), "readme").expect("write");

    let libs = root.join("libs");
    fs::create_dir_all(&libs).expect("mkdir");
    let host_lib = libs.join("libdemo.so");
    fs::write(&host_lib, tiny_elf(b"host library")).expect("write");
    let other_lib = libs.join("libdemo.dylib");
    fs::write(&other_lib, b"mach-o library").expect("write");
    (
        dir,
        vec![
            (HOST_TARGET.to_string(), host_lib),
            (OTHER_TARGET.to_string(), other_lib),
        ],
    )
}

/// The smallest well-formed ELF64 shared library header (no program or section headers),
/// followed by `tail`: enough for pack's structure check, not for a dynamic loader.
fn tiny_elf(tail: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // 64-bit
    b[5] = 1; // little-endian
    b[6] = 1; // version
    b[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    b[18..20].copy_from_slice(&62u16.to_le_bytes());
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    b[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    b.extend_from_slice(tail);
    b
}

fn entry_names(archive: &Path) -> Vec<(String, u32, u64, u64, u64)> {
    let file = fs::File::open(archive).expect("open");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in tar.entries().expect("entries") {
        let entry = entry.expect("entry");
        let h = entry.header();
        out.push((
            entry.path().expect("path").display().to_string(),
            h.mode().expect("mode"),
            h.mtime().expect("mtime"),
            h.uid().expect("uid"),
            h.gid().expect("gid"),
        ));
    }
    out
}

#[test]
fn round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, libs) = package_dir(tmp.path());
    let out = tmp.path().join("demo-1.0.0.cloacina");
    let packed = pack(&dir, &libs, &out).expect("pack");
    assert_eq!(packed.name, "demo");
    assert_eq!(packed.version, "1.0.0");
    assert_eq!(packed.path, out);
    assert_eq!(packed.size, fs::metadata(&out).expect("meta").len());
    assert_eq!(packed.sha256, sha256_file(&out).expect("hash"));
    let mut targets = vec![HOST_TARGET.to_string(), OTHER_TARGET.to_string()];
    targets.sort();
    assert_eq!(packed.targets, targets);

    let dest = tmp.path().join("unpacked/demo-1.0.0");
    let unpacked = unpack(&out, &dest, &UnpackLimits::default()).expect("unpack");
    assert_eq!(unpacked.root, dest);
    assert_eq!(unpacked.sha256, packed.sha256);
    assert_eq!(unpacked.manifest.name(), "demo");
    for file in [
        "package.toml",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src/lib.rs",
        "src/nested/mod.rs",
    ] {
        assert_eq!(
            fs::read(dest.join(file)).expect("unpacked file"),
            fs::read(dir.join(file)).expect("source file"),
            "{file}"
        );
    }
    assert!(!dest.join("target").exists());
    assert!(!dest.join("README.md").exists());

    let host = library_for(&unpacked, HOST_TARGET).expect("host library");
    assert_eq!(host, dest.join(format!("lib/{HOST_TARGET}/libdemo.so")));
    assert_eq!(fs::read(&host).expect("read"), tiny_elf(b"host library"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&host).expect("meta").permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "library is executable: {mode:o}");
    }
    assert_eq!(
        unpacked.targets(),
        targets.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // Nothing but the destination was left in its parent.
    let leftovers: Vec<_> = fs::read_dir(tmp.path().join("unpacked"))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("demo-1.0.0")]);

    // Unpacking again into the same place is refused.
    let e = unpack(&out, &dest, &UnpackLimits::default()).expect_err("exists");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot unpack {} into {}: it already exists; remove it or choose another destination",
            out.display(),
            dest.display()
        )
    );
}

#[test]
fn packing_is_deterministic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, libs) = package_dir(tmp.path());
    let a = pack(&dir, &libs, &tmp.path().join("a.cloacina")).expect("pack a");
    // New mtimes and a rewrite with the same content change nothing.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(dir.join("src/lib.rs"), "pub mod nested;\n").expect("rewrite");
    let b = pack(&dir, &libs, &tmp.path().join("b.cloacina")).expect("pack b");
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(fs::read(&a.path).expect("a"), fs::read(&b.path).expect("b"));
    // Library order given to pack does not matter either.
    let reversed: Vec<_> = libs.iter().rev().cloned().collect();
    let c = pack(&dir, &reversed, &tmp.path().join("c.cloacina")).expect("pack c");
    assert_eq!(a.sha256, c.sha256);

    let names = entry_names(&a.path);
    let expected = [
        "Cargo.lock".to_string(),
        "Cargo.toml".to_string(),
        "build.rs".to_string(),
        format!("lib/{}/libdemo.{}", OTHER_TARGET, "dylib"),
        format!("lib/{}/libdemo.so", HOST_TARGET),
        "package.toml".to_string(),
        "src/lib.rs".to_string(),
        "src/nested/mod.rs".to_string(),
    ];
    let mut sorted_expected = expected.to_vec();
    sorted_expected.sort();
    assert_eq!(
        names.iter().map(|n| n.0.clone()).collect::<Vec<_>>(),
        sorted_expected
    );
    for (name, mode, mtime, uid, gid) in &names {
        let want = if name.starts_with("lib/") {
            0o755
        } else {
            0o644
        };
        assert_eq!((*mode, *mtime, *uid, *gid), (want, 0, 0, 0), "{name}");
    }

    // A content change changes the identity.
    fs::write(dir.join("src/lib.rs"), "pub mod nested; // changed\n").expect("rewrite");
    let d = pack(&dir, &libs, &tmp.path().join("d.cloacina")).expect("pack d");
    assert_ne!(a.sha256, d.sha256);
}

#[test]
fn library_for_explains_missing_targets() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, libs) = package_dir(tmp.path());

    let other_only: Vec<_> = libs
        .iter()
        .filter(|(t, _)| t != HOST_TARGET)
        .cloned()
        .collect();
    let out = tmp.path().join("other.cloacina");
    pack(&dir, &other_only, &out).expect("pack");
    let unpacked = unpack(&out, &tmp.path().join("u1"), &UnpackLimits::default()).expect("unpack");
    let e = library_for(&unpacked, "x86_64-unknown-linux-gnu").expect_err("no library");
    assert_eq!(
        e.to_string(),
        "package 'demo' 1.0.0 has no library for x86_64-unknown-linux-gnu (it has: aarch64-apple-darwin); build it on this platform with 'cloacinactl package build' and pack again"
    );

    let out = tmp.path().join("source.cloacina");
    pack(&dir, &[], &out).expect("pack");
    let unpacked = unpack(&out, &tmp.path().join("u2"), &UnpackLimits::default()).expect("unpack");
    assert!(unpacked.libraries.is_empty());
    let e = library_for(&unpacked, "x86_64-unknown-linux-gnu").expect_err("source only");
    assert_eq!(
        e.to_string(),
        "package 'demo' 1.0.0 is source-only (its archive holds no compiled library, and x86_64-unknown-linux-gnu needs one); build it with 'cloacinactl package build' and pack again, or upload it to a server whose compiler service builds it"
    );
}

#[test]
fn pack_refuses_incomplete_packages() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, libs) = package_dir(tmp.path());
    let out = tmp.path().join("x.cloacina");

    fs::remove_file(dir.join("Cargo.toml")).expect("rm");
    let e = pack(&dir, &libs, &out).expect_err("no Cargo.toml");
    assert_eq!(
        e.to_string(),
        format!(
            "package directory {} has no Cargo.toml; a package is a Rust crate with package.toml, Cargo.toml and src/ (create one with 'cloacinactl package new NAME')",
            dir.display()
        )
    );

    fs::remove_file(dir.join("package.toml")).expect("rm");
    let e = pack(&dir, &libs, &out).expect_err("no package.toml");
    assert_eq!(
        e.to_string(),
        format!(
            "package manifest {} is missing; a package directory needs a package.toml beside its Cargo.toml",
            dir.join("package.toml").display()
        )
    );

    let (dir, libs) = package_dir(&tmp.path().join("second"));
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/etc/passwd", dir.join("src/passwd")).expect("symlink");
        let e = pack(&dir, &libs, &out).expect_err("symlink");
        assert_eq!(
            e.to_string(),
            format!(
                "cannot pack {}: it is a symbolic link (replace it with the file it points to); a package may only contain regular files",
                dir.join("src/passwd").display()
            )
        );
        fs::remove_file(dir.join("src/passwd")).expect("rm");
    }

    let e =
        pack(&dir, &[("../evil".to_string(), libs[0].1.clone())], &out).expect_err("bad triple");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot pack library {} for ../evil: that is not a valid target triple",
            libs[0].1.display()
        )
    );
    let e = pack(
        &dir,
        &[(HOST_TARGET.to_string(), tmp.path().join("nope.so"))],
        &out,
    )
    .expect_err("missing library");
    assert!(
        e.to_string().starts_with(&format!(
            "cannot pack library {} for {HOST_TARGET}: No such file",
            tmp.path().join("nope.so").display()
        )),
        "{e}"
    );
    assert!(!out.exists(), "no archive after failures");
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn pack_refuses_truncated_libraries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = package_dir(tmp.path());
    let out = tmp.path().join("x.cloacina");
    let refuse = |bytes: Vec<u8>, name: &str| {
        let lib = tmp.path().join(name);
        fs::write(&lib, &bytes).expect("write");
        let e = pack(&dir, &[(HOST_TARGET.to_string(), lib.clone())], &out)
            .expect_err("truncated library");
        assert!(!out.exists(), "no archive for {name}");
        (lib, e.to_string())
    };

    // A section header table past the end.
    let mut elf = tiny_elf(b"");
    elf[40..48].copy_from_slice(&4096u64.to_le_bytes()); // e_shoff
    elf[60..62].copy_from_slice(&3u16.to_le_bytes()); // e_shnum
    let (lib, e) = refuse(elf, "libsections.so");
    assert_eq!(
        e,
        format!(
            "cannot pack library {} for {HOST_TARGET}: it is truncated or corrupt: its section header table (file bytes 4096..4288) lies past the end of the file (64 bytes)",
            lib.display()
        )
    );

    // A segment whose file bytes run past the end: mapping it would be SIGBUS.
    let mut elf = tiny_elf(&[0u8; 56]);
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf[64 + 32..64 + 40].copy_from_slice(&(1u64 << 20).to_le_bytes()); // p_filesz
    let (lib, e) = refuse(elf, "libsegments.so");
    assert_eq!(
        e,
        format!(
            "cannot pack library {} for {HOST_TARGET}: it is truncated or corrupt: its segment 0 (file bytes 0..1048576) lies past the end of the file (120 bytes)",
            lib.display()
        )
    );

    // A real ELF file cut in half.
    #[cfg(target_os = "linux")]
    {
        let mut bytes = fs::read(std::env::current_exe().expect("test binary")).expect("read");
        bytes.truncate(bytes.len() / 2);
        let (lib, e) = refuse(bytes, "libhalf.so");
        assert!(
            e.starts_with(&format!(
                "cannot pack library {} for {HOST_TARGET}: it is truncated or corrupt: its ",
                lib.display()
            )) && e.contains("lies past the end of the file"),
            "{e}"
        );
    }

    // A library file name with a control character.
    let lib = tmp.path().join("lib\u{1b}[2Jdemo.so");
    fs::write(&lib, tiny_elf(b"")).expect("write");
    let e = pack(&dir, &[(HOST_TARGET.to_string(), lib.clone())], &out).expect_err("name");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot pack library {}/lib\\u{{1b}}[2Jdemo.so for {HOST_TARGET}: its file name has a control character; rename it",
            tmp.path().display()
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile archives, built header by header.

struct Raw {
    path: Vec<u8>,
    kind: EntryType,
    data: Vec<u8>,
    link: Vec<u8>,
    declared: Option<u64>,
}

fn file(path: &str, data: &[u8]) -> Raw {
    Raw {
        path: path.as_bytes().to_vec(),
        kind: EntryType::Regular,
        data: data.to_vec(),
        link: Vec::new(),
        declared: None,
    }
}

fn special(path: &str, kind: EntryType, link: &str) -> Raw {
    Raw {
        path: path.as_bytes().to_vec(),
        kind,
        data: Vec::new(),
        link: link.as_bytes().to_vec(),
        declared: None,
    }
}

fn dir_entry(path: &str) -> Raw {
    special(path, EntryType::Directory, "")
}

/// A tar of `entries`, with path and link bytes written verbatim (no checks), gzipped.
fn tar_bytes(entries: &[Raw]) -> Vec<u8> {
    let mut tar = Vec::new();
    for e in entries {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..e.path.len()].copy_from_slice(&e.path);
            old.linkname[..e.link.len()].copy_from_slice(&e.link);
        }
        h.set_entry_type(e.kind);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(e.declared.unwrap_or(e.data.len() as u64));
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(&e.data);
        let pad = (512 - e.data.len() % 512) % 512;
        tar.extend(std::iter::repeat_n(0u8, pad));
    }
    tar.extend(std::iter::repeat_n(0u8, 1024));
    tar
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

fn valid_entries() -> Vec<Raw> {
    vec![
        file("package.toml", MANIFEST.as_bytes()),
        file("Cargo.toml", b"[package]\nname = \"demo\"\n"),
        dir_entry("src/"),
        file("src/lib.rs", b"pub fn f() {}\n"),
    ]
}

struct Case {
    _tmp: tempfile::TempDir,
    archive: PathBuf,
    dest: PathBuf,
}

impl Case {
    fn new(bytes: &[u8]) -> Case {
        let tmp = tempfile::tempdir().expect("tempdir");
        let archive = tmp.path().join("hostile.cloacina");
        fs::write(&archive, bytes).expect("write archive");
        let dest = tmp.path().join("out/pkg");
        Case {
            _tmp: tmp,
            archive,
            dest,
        }
    }

    fn with(extra: Raw) -> Case {
        let mut entries = valid_entries();
        entries.insert(2, extra);
        Case::new(&gzip(&tar_bytes(&entries)))
    }

    /// Unpacks expecting failure; checks that nothing was left behind.
    fn reject(&self, limits: &UnpackLimits) -> ArchiveError {
        let e = unpack(&self.archive, &self.dest, limits).expect_err("must be rejected");
        assert!(!self.dest.exists(), "destination must not exist after {e}");
        if let Ok(dir) = fs::read_dir(self.dest.parent().expect("parent")) {
            let left: Vec<_> = dir.map(|e| e.expect("entry").file_name()).collect();
            assert!(left.is_empty(), "left behind {left:?} after {e}");
        }
        e
    }

    fn rejects(&self) -> String {
        self.reject(&UnpackLimits::default()).to_string()
    }

    fn unsafe_msg(&self, entry: &str, problem: &str) -> String {
        format!(
            "{}: entry '{entry}' {problem}; the archive was rejected and nothing was unpacked. A .cloacina archive holds only package.toml, Cargo.toml, Cargo.lock, build.rs, src/ and lib/<target-triple>/<library>, as regular files: pack it again with 'cloacinactl package pack' and do not use this file",
            self.archive.display()
        )
    }
}

#[test]
fn the_valid_hand_built_archive_unpacks() {
    let case = Case::new(&gzip(&tar_bytes(&valid_entries())));
    let unpacked = unpack(&case.archive, &case.dest, &UnpackLimits::default()).expect("unpack");
    assert_eq!(unpacked.manifest.name(), "demo");
    assert_eq!(unpacked.sha256, sha256_file(&case.archive).expect("sha256"));
    assert_eq!(
        fs::read_to_string(case.dest.join("src/lib.rs")).expect("read"),
        "pub fn f() {}\n"
    );
}

#[test]
fn rejects_absolute_paths() {
    let case = Case::with(file("/etc/cron.d/evil", b"* * * * * root rm -rf /\n"));
    assert_eq!(
        case.rejects(),
        case.unsafe_msg("/etc/cron.d/evil", "has an absolute path")
    );
}

#[test]
fn rejects_parent_directory_components() {
    for path in ["../evil.sh", "src/../../evil.sh", "src/.."] {
        let case = Case::with(file(path, b"x"));
        assert_eq!(
            case.rejects(),
            case.unsafe_msg(path, "has a '..' component"),
            "{path}"
        );
    }
}

#[test]
fn rejects_symlinks() {
    let case = Case::with(special("src/passwd", EntryType::Symlink, "/etc/passwd"));
    assert_eq!(
        case.rejects(),
        case.unsafe_msg("src/passwd", "is a symbolic link (to '/etc/passwd')")
    );
}

#[test]
fn rejects_hard_links() {
    let case = Case::with(special("src/shadow", EntryType::Link, "/etc/shadow"));
    assert_eq!(
        case.rejects(),
        case.unsafe_msg("src/shadow", "is a hard link (to '/etc/shadow')")
    );
}

#[test]
fn rejects_devices_and_fifos() {
    for (kind, what) in [
        (EntryType::Char, "is a character device"),
        (EntryType::Block, "is a block device"),
        (EntryType::Fifo, "is a FIFO"),
    ] {
        let case = Case::with(special("src/dev", kind, ""));
        assert_eq!(case.rejects(), case.unsafe_msg("src/dev", what));
    }
    for (kind, shown) in [(b'V', "'V'"), (b'g', "'g'"), (0x01, "0x01")] {
        let case = Case::with(special("src/odd", EntryType::new(kind), ""));
        assert_eq!(
            case.rejects(),
            case.unsafe_msg(
                "src/odd",
                &format!("has unsupported tar entry type {shown}")
            )
        );
    }
}

#[test]
fn rejects_unexpected_names() {
    for path in [
        "target/debug/libx.so",
        ".git/config",
        "README.md",
        "src\\evil.rs",
    ] {
        let case = Case::with(file(path, b"x"));
        assert_eq!(
            case.rejects(),
            case.unsafe_msg(path, "is not part of a package"),
            "{path}"
        );
    }
    let case = Case::with(file("lib/x86_64-unknown-linux-gnu/deep/libx.so", b"x"));
    assert_eq!(
        case.rejects(),
        case.unsafe_msg(
            "lib/x86_64-unknown-linux-gnu/deep/libx.so",
            "is not of the form lib/<target-triple>/<library>"
        )
    );
    let case = Case::with(file("lib/libx.so", b"x"));
    assert_eq!(
        case.rejects(),
        case.unsafe_msg("lib/libx.so", "is a file but must be a directory")
    );
    let case = Case::with(dir_entry("Cargo.lock/"));
    assert_eq!(
        case.rejects(),
        case.unsafe_msg("Cargo.lock/", "is a directory but must be a file")
    );
}

#[test]
fn rejects_duplicates_and_second_libraries() {
    let case = Case::with(file("package.toml", MANIFEST.as_bytes()));
    assert_eq!(
        case.rejects(),
        case.unsafe_msg("package.toml", "clashes with an earlier entry")
    );
    // A file below an earlier file ...
    let mut entries = valid_entries();
    entries.push(file("src/lib.rs/inner.rs", b"x"));
    let case = Case::new(&gzip(&tar_bytes(&entries)));
    assert_eq!(
        case.rejects(),
        case.unsafe_msg("src/lib.rs/inner.rs", "clashes with an earlier entry")
    );
    // ... and a file where an earlier entry implied a directory.
    let case = Case::with(file("src/lib.rs/inner.rs", b"x"));
    assert_eq!(
        case.rejects(),
        case.unsafe_msg("src/lib.rs", "clashes with an earlier entry")
    );

    let mut entries = valid_entries();
    entries.push(file("lib/x86_64-unknown-linux-gnu/liba.so", b"a"));
    entries.push(file("lib/x86_64-unknown-linux-gnu/libb.so", b"b"));
    let case = Case::new(&gzip(&tar_bytes(&entries)));
    assert_eq!(
        case.rejects(),
        case.unsafe_msg(
            "lib/x86_64-unknown-linux-gnu/libb.so",
            "is a second library for x86_64-unknown-linux-gnu (an archive holds at most one per target)"
        )
    );
}

#[test]
fn escapes_control_characters_in_entry_names() {
    let case = Case::with(file("evil\u{1b}[2J", b"x"));
    assert_eq!(
        case.rejects(),
        case.unsafe_msg(
            "evil\\u{1b}[2J",
            "has a control character in its name (shown escaped)"
        )
    );
}

#[test]
fn archive_file_names_are_shown_escaped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("evil\u{1b}[2J.cloacina");
    fs::write(&archive, b"not gzip").expect("write");
    let e = unpack(&archive, &tmp.path().join("out"), &UnpackLimits::default())
        .expect_err("corrupt")
        .to_string();
    assert!(
        !e.contains('\u{1b}') && e.contains("evil\\u{1b}[2J.cloacina is not a valid"),
        "{e}"
    );
}

#[test]
fn rejects_library_names_with_control_characters() {
    let name = format!("lib/{HOST_TARGET}/lib\nlibdemo.so");
    let case = Case::with(file(&name, b"x"));
    assert_eq!(
        case.rejects(),
        case.unsafe_msg(
            &format!("lib/{HOST_TARGET}/lib\\nlibdemo.so"),
            "has a control character in its name (shown escaped)"
        )
    );
}

/// A metadata record (GNU long name, PAX header) that describes the entry after it.
fn record(kind: EntryType, name: &str, data: Vec<u8>) -> Raw {
    Raw {
        path: name.as_bytes().to_vec(),
        kind,
        data,
        link: Vec::new(),
        declared: None,
    }
}

/// One PAX record, `"<len> <key>=<value>\n"`, whose length counts itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

#[test]
fn long_names_and_pax_paths_are_applied() {
    let long = format!("src/{}/deep.rs", "d".repeat(200));
    let pax_path = format!("src/{}.rs", "p".repeat(150));
    let mut name = long.clone().into_bytes();
    name.push(0);
    let mut entries = valid_entries();
    entries.push(record(EntryType::GNULongName, "././@LongLink", name));
    entries.push(file("src/truncated-name", b"long\n"));
    entries.push(record(
        EntryType::XHeader,
        "PaxHeaders/x",
        pax_record("path", &pax_path),
    ));
    entries.push(file("src/other-name", b"pax\n"));
    let case = Case::new(&gzip(&tar_bytes(&entries)));
    unpack(&case.archive, &case.dest, &UnpackLimits::default()).expect("unpack");
    assert_eq!(
        fs::read_to_string(case.dest.join(&long)).expect("long"),
        "long\n"
    );
    assert_eq!(
        fs::read_to_string(case.dest.join(&pax_path)).expect("pax"),
        "pax\n"
    );
    assert!(!case.dest.join("src/truncated-name").exists());
}

#[test]
fn huge_long_name_and_pax_records_are_refused_unread() {
    let record_too_large = |case: &Case, entry: &str, what: &str, size: u64, limit: u64| {
        format!(
            "{}: entry '{entry}' is a {what} of {size} bytes, more than the {limit} allowed; the archive was rejected and nothing was unpacked. Check where this file came from, and pack it again with 'cloacinactl package pack'",
            case.archive.display()
        )
    };
    // 32 MiB of name: the tar crate would read it whole; it is refused from its header.
    let mut entries = valid_entries();
    entries.insert(
        2,
        record(
            EntryType::GNULongName,
            "././@LongLink",
            vec![b'a'; 32 << 20],
        ),
    );
    entries.insert(3, file("src/x.rs", b"x"));
    let case = Case::new(&gzip(&tar_bytes(&entries)));
    let e = case.rejects();
    assert_eq!(
        e,
        record_too_large(
            &case,
            "././@LongLink",
            "GNU long-name record",
            32 << 20,
            4096
        )
    );

    let mut entries = valid_entries();
    let mut pax = pax_record("path", "src/x.rs");
    pax.extend(pax_record("comment", &"c".repeat(32 << 20)));
    let size = pax.len() as u64;
    entries.insert(2, record(EntryType::XHeader, "PaxHeaders/\u{7}x", pax));
    entries.insert(3, file("src/x.rs", b"x"));
    let case = Case::new(&gzip(&tar_bytes(&entries)));
    assert_eq!(
        case.rejects(),
        record_too_large(
            &case,
            "PaxHeaders/\\u{7}x",
            "PAX extended header",
            size,
            65536
        )
    );

    // A PAX size that disagrees with the header would make other tools read another file.
    let mut entries = valid_entries();
    entries.insert(
        2,
        record(EntryType::XHeader, "PaxHeaders/x", pax_record("size", "1")),
    );
    entries.insert(3, file("src/x.rs", b"xyz"));
    let case = Case::new(&gzip(&tar_bytes(&entries)));
    assert!(
        case.rejects()
            .contains("entry 'src/x.rs': its PAX record gives size 1 but its header 3"),
        "{}",
        case.rejects()
    );

    // A record that describes nothing.
    let mut entries = valid_entries();
    entries.push(record(
        EntryType::GNULongName,
        "././@LongLink",
        b"src/y.rs\0".to_vec(),
    ));
    let case = Case::new(&gzip(&tar_bytes(&entries)));
    assert!(
        case.rejects()
            .contains("entry '././@LongLink' is a long-name or PAX record that no entry follows"),
        "{}",
        case.rejects()
    );
}

#[test]
fn rejects_non_utf8_paths() {
    let mut raw = file("src/x", b"x");
    raw.path = b"src/\xff\xfe.rs".to_vec();
    let case = Case::with(raw);
    assert_eq!(
        case.rejects(),
        case.unsafe_msg("src/\\xff\\xfe.rs", "has a path that is not valid UTF-8")
    );
}

#[test]
fn rejects_archives_without_a_valid_manifest() {
    let entries: Vec<Raw> = valid_entries().into_iter().skip(1).collect();
    let case = Case::new(&gzip(&tar_bytes(&entries)));
    assert_eq!(
        case.rejects(),
        format!(
            "{} has no package.toml, so it is not a package archive; nothing was unpacked. Pack a package directory with 'cloacinactl package pack DIR'",
            case.archive.display()
        )
    );

    let case = Case::new(&gzip(&tar_bytes(&[file(
        "package.toml",
        b"[package]\nname = \"demo\"\nversion = \"one\"\n",
    )])));
    assert_eq!(
        case.rejects(),
        format!(
            "package manifest {}:package.toml: package.version 'one' is not a semantic version like 1.2.3; nothing was unpacked. Fix package.toml and pack the archive again",
            case.archive.display()
        )
    );

    // An empty (but well-formed) archive.
    let case = Case::new(&gzip(&tar_bytes(&[])));
    assert!(
        case.rejects().contains("has no package.toml"),
        "empty archive"
    );
}

#[test]
fn rejects_corrupt_data() {
    let corrupt = |case: &Case, detail: &str| {
        format!(
            "{} is not a valid .cloacina archive (corrupt or truncated gzip/tar data: {detail}); download it or pack it again",
            case.archive.display()
        )
    };

    // Not gzip at all (a plain tar).
    let case = Case::new(&tar_bytes(&valid_entries()));
    assert_eq!(case.rejects(), corrupt(&case, "invalid gzip header"));

    // Gzip of something that is not a tar.
    let case = Case::new(&gzip(&[b'x'; 2048]));
    assert_eq!(
        case.rejects(),
        corrupt(
            &case,
            &format!(
                "numeric field was not a number: xxxxxxxx when getting cksum for {}…",
                "x".repeat(56)
            )
        )
    );

    // Truncated in the middle of the compressed stream.
    let full = gzip(&tar_bytes(&valid_entries()));
    let case = Case::new(&full[..full.len() / 2]);
    let msg = case.rejects();
    assert!(
        msg.starts_with(&format!(
            "{} is not a valid .cloacina archive (corrupt or truncated gzip/tar data: ",
            case.archive.display()
        )),
        "{msg}"
    );

    // A flipped byte in the compressed data (the CRC or the inflate stream catches it).
    let mut flipped = full.clone();
    let at = flipped.len() - 12;
    flipped[at] ^= 0xff;
    let case = Case::new(&flipped);
    let msg = case.rejects();
    assert!(
        msg.contains("is not a valid .cloacina archive (corrupt or truncated gzip/tar data: "),
        "{msg}"
    );

    // An empty file.
    let case = Case::new(b"");
    let msg = case.rejects();
    assert!(msg.contains("is not a valid .cloacina archive"), "{msg}");

    // A file that does not exist.
    let tmp = tempfile::tempdir().expect("tempdir");
    let missing = tmp.path().join("missing.cloacina");
    let e = unpack(&missing, &tmp.path().join("d"), &UnpackLimits::default()).expect_err("missing");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot read {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn enforces_the_entry_count_limit() {
    let mut entries = valid_entries();
    for i in 0..20 {
        entries.push(file(&format!("src/m{i}.rs"), b"//"));
    }
    let case = Case::new(&gzip(&tar_bytes(&entries)));
    let limits = UnpackLimits {
        max_entries: 10,
        ..UnpackLimits::default()
    };
    assert_eq!(
        case.reject(&limits).to_string(),
        format!(
            "{} has more than 10 entries (at entry 'src/m6.rs'); the archive was rejected and nothing was unpacked. Check where this file came from, or raise the unpack limit if it is genuine",
            case.archive.display()
        )
    );
    // The same archive is fine under the default limits.
    unpack(&case.archive, &case.dest, &UnpackLimits::default()).expect("default limits");
}

#[test]
fn enforces_the_entry_size_limit() {
    let mut entries = valid_entries();
    entries.push(file("src/big.rs", &vec![b'a'; 5000]));
    let case = Case::new(&gzip(&tar_bytes(&entries)));
    let limits = UnpackLimits {
        max_entry_bytes: 4096,
        ..UnpackLimits::default()
    };
    assert_eq!(
        case.reject(&limits).to_string(),
        format!(
            "{}: entry 'src/big.rs' is larger than 4096 bytes; the archive was rejected and nothing was unpacked. Check where this file came from, or raise the unpack limit if it is genuine",
            case.archive.display()
        )
    );
}

#[test]
fn enforces_the_total_size_limit() {
    // A small gzip bomb: every entry is under the per-entry limit, together they are not.
    let mut entries = valid_entries();
    for i in 0..8 {
        entries.push(file(&format!("src/zeros{i}.bin"), &vec![0u8; 1 << 20]));
    }
    let bytes = gzip(&tar_bytes(&entries));
    assert!(bytes.len() < 64 * 1024, "compresses well: {}", bytes.len());
    let case = Case::new(&bytes);
    let limits = UnpackLimits {
        max_total_bytes: 3 << 20,
        max_entry_bytes: 2 << 20,
        ..UnpackLimits::default()
    };
    assert_eq!(
        case.reject(&limits).to_string(),
        format!(
            "{} expands to more than {} bytes (at entry 'src/zeros2.bin'); the archive was rejected and nothing was unpacked. Check where this file came from, or raise the unpack limit if it is genuine",
            case.archive.display(),
            3 << 20
        )
    );
}

#[test]
fn a_header_that_lies_about_its_size_is_corrupt() {
    // Declares 100 000 bytes but the stream ends early: the bytes actually read are what count.
    let mut entries = valid_entries();
    let mut liar = file("src/liar.rs", b"");
    liar.declared = Some(100_000);
    entries.push(liar);
    let mut tar = tar_bytes(&entries);
    tar.truncate(tar.len() - 1024); // drop the end-of-archive blocks too
    let case = Case::new(&gzip(&tar));
    let msg = case.rejects();
    assert!(
        msg.contains("is not a valid .cloacina archive (corrupt or truncated gzip/tar data: "),
        "{msg}"
    );
}

#[test]
fn sha256_identity_matches_the_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("x");
    fs::write(&path, b"abc").expect("write");
    assert_eq!(
        sha256_file(&path).expect("hash"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        archive::sha256_bytes(b"abc"),
        sha256_file(&path).expect("hash")
    );
    let mut buf = Vec::new();
    fs::File::open(&path)
        .expect("open")
        .read_to_end(&mut buf)
        .expect("read");
    assert_eq!(buf, b"abc");
}

#[test]
fn counts_decompressed_bytes_that_no_file_header_declares() {
    let limits = UnpackLimits {
        max_entries: 10,
        max_total_bytes: 1 << 20,
        max_entry_bytes: 1 << 20,
    };
    let too_large = |case: &Case, entry: &str| {
        format!(
            "{} expands to more than {} bytes (at entry '{entry}'); the archive was rejected and nothing was unpacked. Check where this file came from, or raise the unpack limit if it is genuine",
            case.archive.display(),
            1 << 20
        )
    };

    // 64 MiB of zeros after the end-of-archive marker.
    let mut tar = tar_bytes(&valid_entries());
    tar.extend(std::iter::repeat_n(0u8, 64 << 20));
    let case = Case::new(&gzip(&tar));
    assert_eq!(
        case.reject(&limits).to_string(),
        too_large(&case, "src/lib.rs")
    );
}

// ---------------------------------------------------------------------------------------------
// Signatures

mod signatures {
    use super::*;
    use cloacina::package::signing::{
        PublicKey, Sidecar, SignatureError, generate_keypair, load_public_key, load_signing_key,
        public_key_path, sign_archive, signature_path, verify_archive,
    };

    struct Fixture {
        tmp: tempfile::TempDir,
        archive: PathBuf,
        key: PathBuf,
        public: PublicKey,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (dir, libs) = package_dir(tmp.path());
        let archive = tmp.path().join("demo-1.0.0.cloacina");
        pack(&dir, &libs, &archive).expect("pack");
        let key = tmp.path().join("signing.key");
        let info = generate_keypair(&key).expect("keygen");
        assert_eq!(info.private_key_path, key);
        assert_eq!(info.public_key_path, tmp.path().join("signing.key.pub"));
        Fixture {
            tmp,
            archive,
            key,
            public: info.public_key,
        }
    }

    #[test]
    fn key_files() {
        let f = fixture();
        let text = fs::read_to_string(&f.key).expect("read");
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "cloacina-ed25519-private-key");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(
            fs::read_to_string(public_key_path(&f.key)).expect("read"),
            format!("cloacina-ed25519-public-key {}\n", f.public.to_hex())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&f.key).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let loaded = load_signing_key(&f.key).expect("load private");
        assert_eq!(loaded.public_key(), f.public);
        assert_eq!(
            load_public_key(&public_key_path(&f.key)).expect("load public"),
            f.public
        );

        // Never overwritten.
        let before = fs::read(&f.key).expect("read");
        let e = generate_keypair(&f.key).expect_err("exists");
        assert_eq!(
            e.to_string(),
            format!(
                "{} already exists; refusing to overwrite a key. Choose another file name, or remove the old key first if you really mean to replace it",
                f.key.display()
            )
        );
        assert_eq!(fs::read(&f.key).expect("read"), before);
        // Nor when only the .pub is in the way (and then nothing is written).
        let other = f.tmp.path().join("other.key");
        fs::write(public_key_path(&other), "x").expect("write");
        let e = generate_keypair(&other).expect_err("pub exists");
        assert!(e.to_string().starts_with(&format!(
            "{} already exists",
            public_key_path(&other).display()
        )));
        assert!(!other.exists());
    }

    #[test]
    fn key_loading_errors() {
        let f = fixture();
        let missing = f.tmp.path().join("missing.key");
        assert_eq!(
            load_signing_key(&missing).expect_err("missing").to_string(),
            format!(
                "key file {} not found; create a key pair with 'cloacinactl package keygen KEYFILE'",
                missing.display()
            )
        );
        // The public key where the private one is expected, and vice versa.
        let e = load_public_key(&f.key).expect_err("private given");
        assert_eq!(
            e.to_string(),
            format!(
                "{0} is a private key; pass the public key file ({0}.pub) instead, and keep the private key secret",
                f.key.display()
            )
        );
        let garbage = f.tmp.path().join("garbage.pub");
        fs::write(&garbage, "cloacina-ed25519-public-key zz\n").expect("write");
        assert_eq!(
            load_public_key(&garbage).expect_err("garbage").to_string(),
            format!(
                "{} is not a Cloacina public key file: expected 64 hex digits, found 2 characters; create a key pair with 'cloacinactl package keygen KEYFILE'",
                garbage.display()
            )
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let open = f.tmp.path().join("open.key");
            fs::copy(&f.key, &open).expect("copy");
            fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).expect("chmod");
            assert_eq!(
                load_signing_key(&open).expect_err("too open").to_string(),
                format!(
                    "private key {0} is accessible by other users (mode 0644); restrict it with 'chmod 600 {0}'",
                    open.display()
                )
            );
            let public_as_private = f.tmp.path().join("pub-as-private");
            fs::copy(public_key_path(&f.key), &public_as_private).expect("copy");
            fs::set_permissions(&public_as_private, fs::Permissions::from_mode(0o600))
                .expect("chmod");
            assert_eq!(
                load_signing_key(&public_as_private)
                    .expect_err("public")
                    .to_string(),
                format!(
                    "{} is not a Cloacina private key file: it is a public key; pass the private key file (without .pub); create a key pair with 'cloacinactl package keygen KEYFILE'",
                    public_as_private.display()
                )
            );
        }
    }

    #[test]
    fn sign_and_verify() {
        let f = fixture();
        let key = load_signing_key(&f.key).expect("load");
        let sig = sign_archive(&f.archive, &key).expect("sign");
        assert_eq!(sig, signature_path(&f.archive));
        assert_eq!(
            sig,
            f.tmp.path().join("demo-1.0.0.cloacina.sig"),
            "appends .sig"
        );
        let sidecar: Sidecar =
            serde_json::from_str(&fs::read_to_string(&sig).expect("read")).expect("json");
        assert_eq!(sidecar.algorithm, "ed25519");
        assert_eq!(sidecar.sha256, sha256_file(&f.archive).expect("hash"));
        assert_eq!(sidecar.public_key, f.public.to_hex());
        assert_eq!(sidecar.signature.len(), 128);

        let other = generate_keypair(&f.tmp.path().join("other.key"))
            .expect("keygen")
            .public_key;
        // Any one trusted key will do.
        let ok = verify_archive(&f.archive, &[other.clone(), f.public.clone()]).expect("valid");
        assert_eq!(ok.public_key, f.public);
        assert_eq!(ok.sha256, sidecar.sha256);
        assert_eq!(ok.signature_path, sig);

        // The wrong key.
        let e = verify_archive(&f.archive, std::slice::from_ref(&other)).expect_err("wrong key");
        assert_eq!(
            e.to_string(),
            format!(
                "{} is signed by key {}, which is not trusted (trusted: {}); verify it with the signer's public key, or sign it with a trusted key",
                f.archive.display(),
                f.public,
                other
            )
        );
        assert!(matches!(e, SignatureError::UntrustedKey { .. }));
    }

    #[test]
    fn verification_failures() {
        let f = fixture();
        let key = load_signing_key(&f.key).expect("load");
        let trusted = [f.public.clone()];
        let a = f.archive.display().to_string();
        let sig = signature_path(&f.archive);
        let s = sig.display().to_string();

        // No side-car.
        assert_eq!(
            verify_archive(&f.archive, &trusted)
                .expect_err("unsigned")
                .to_string(),
            format!(
                "no signature for {a}: expected {s}; sign with 'cloacinactl package pack --sign KEYFILE'"
            )
        );

        // Unparseable side-car.
        fs::write(&sig, "not json").expect("write");
        assert_eq!(
            verify_archive(&f.archive, &trusted)
                .expect_err("malformed")
                .to_string(),
            format!(
                "signature file {s} is malformed (not the expected JSON: expected ident at line 1 column 2); sign {a} again with 'cloacinactl package pack --sign KEYFILE'"
            )
        );

        // Another algorithm.
        sign_archive(&f.archive, &key).expect("sign");
        let good = fs::read_to_string(&sig).expect("read");
        fs::write(&sig, good.replace("\"ed25519\"", "\"rsa\"")).expect("write");
        assert_eq!(
            verify_archive(&f.archive, &trusted)
                .expect_err("algorithm")
                .to_string(),
            format!(
                "signature file {s} uses algorithm 'rsa', but only ed25519 is supported; sign {a} again with 'cloacinactl package pack --sign KEYFILE'"
            )
        );

        // A damaged signature from the trusted key.
        let mut sidecar: Sidecar = serde_json::from_str(&good).expect("json");
        let flipped = if sidecar.signature.starts_with('0') {
            "1"
        } else {
            "0"
        };
        sidecar.signature.replace_range(0..1, flipped);
        fs::write(&sig, sidecar.to_text()).expect("write");
        assert_eq!(
            verify_archive(&f.archive, &trusted)
                .expect_err("bad signature")
                .to_string(),
            format!(
                "the signature in {s} is not valid for {a} and key {}: the side-car was altered or damaged; sign the archive again",
                f.public
            )
        );

        // The archive changed after signing.
        fs::write(&sig, &good).expect("restore");
        verify_archive(&f.archive, &trusted).expect("valid again");
        let mut bytes = fs::read(&f.archive).expect("read");
        bytes.push(0);
        fs::write(&f.archive, &bytes).expect("tamper");
        let actual = sha256_file(&f.archive).expect("hash");
        assert_eq!(
            verify_archive(&f.archive, &trusted)
                .expect_err("tampered")
                .to_string(),
            format!(
                "{a} changed after it was signed: its SHA-256 is {actual} but {s} signs {}; do not use it — pack and sign it again",
                sidecar.sha256
            )
        );

        // No archive at all.
        fs::remove_file(&f.archive).expect("rm");
        assert_eq!(
            verify_archive(&f.archive, &trusted)
                .expect_err("gone")
                .to_string(),
            format!("archive {a} not found; check the path")
        );
    }

    #[test]
    fn files_that_are_not_regular_or_too_large_are_named_and_never_read() {
        let f = fixture();
        let trusted = [f.public.clone()];
        let a = f.archive.display().to_string();
        let sig = signature_path(&f.archive);
        let s = sig.display().to_string();
        let err = |trusted: &[PublicKey]| {
            verify_archive(&f.archive, trusted)
                .expect_err("must fail")
                .to_string()
        };

        // A side-car far larger than any genuine one (sparse: costs no disk).
        let big = fs::File::create(&sig).expect("create");
        big.set_len(64 << 20).expect("grow");
        drop(big);
        assert_eq!(
            err(&trusted),
            format!(
                "signature file {s} is larger than 4096 bytes, far larger than a genuine one; check the path"
            )
        );
        fs::remove_file(&sig).expect("rm");

        // A directory where the side-car should be.
        fs::create_dir(&sig).expect("mkdir");
        assert_eq!(
            err(&trusted),
            format!("signature file {s} is a directory; give the path of a regular file")
        );
        fs::remove_dir(&sig).expect("rmdir");

        // A device behind a symbolic link: never opened, never read.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/dev/zero", &sig).expect("symlink");
            assert_eq!(
                err(&trusted),
                format!(
                    "signature file {s} is not a regular file (it is a FIFO, device or socket); give the path of a regular file"
                )
            );
            fs::remove_file(&sig).expect("rm");
        }

        // The archive itself: a directory is a directory, not "not found".
        let dir_archive = f.tmp.path().join("dir.cloacina");
        fs::create_dir(&dir_archive).expect("mkdir");
        assert_eq!(
            verify_archive(&dir_archive, &trusted)
                .expect_err("directory")
                .to_string(),
            format!(
                "archive {} is a directory; give the path of a regular file",
                dir_archive.display()
            )
        );
        assert!(a.ends_with(".cloacina"));

        // Key files: too large, a directory.
        let big_key = f.tmp.path().join("big.pub");
        let file = fs::File::create(&big_key).expect("create");
        file.set_len(1 << 30).expect("grow");
        drop(file);
        assert_eq!(
            load_public_key(&big_key).expect_err("big").to_string(),
            format!(
                "key file {} is larger than 4096 bytes, far larger than a genuine one; check the path",
                big_key.display()
            )
        );
        assert_eq!(
            load_public_key(f.tmp.path()).expect_err("dir").to_string(),
            format!(
                "key file {} is a directory; give the path of a regular file",
                f.tmp.path().display()
            )
        );
    }

    #[test]
    fn signature_policy() {
        use cloacina::config::DaemonConfig;
        use cloacina::package::signing::SignaturePolicy;

        let f = fixture();
        let key = load_signing_key(&f.key).expect("load");
        let a = f.archive.display().to_string();
        let sig = signature_path(&f.archive);
        let s = sig.display().to_string();
        let permissive = SignaturePolicy::permissive();
        let strict = SignaturePolicy::new(true, vec![f.public.clone()]).expect("policy");

        // Unsigned: fine unless signatures are required.
        assert_eq!(permissive.check(&f.archive).expect("unsigned ok"), None);
        assert_eq!(
            strict.check(&f.archive).expect_err("required").to_string(),
            format!(
                "{a} is not signed (no {s}) and this host requires signatures (daemon.require_signatures); sign it with a trusted key: 'cloacinactl package pack DIR --sign KEYFILE'"
            )
        );

        // Signed by the trusted key: accepted by both.
        sign_archive(&f.archive, &key).expect("sign");
        let good = fs::read_to_string(&sig).expect("read");
        let verified = strict.check(&f.archive).expect("valid").expect("signed");
        assert_eq!(verified.public_key, f.public);
        assert_eq!(verified.sha256, sha256_file(&f.archive).expect("sha"));
        assert!(permissive.check(&f.archive).expect("valid").is_some());

        // A forged side-car: refused even when signatures are optional.
        let mut forged: Sidecar = serde_json::from_str(&good).expect("json");
        forged.signature = "00".repeat(64);
        fs::write(&sig, forged.to_text()).expect("write");
        for policy in [&permissive, &strict] {
            let e = policy.check(&f.archive).expect_err("forged").to_string();
            assert!(
                e.starts_with(&format!("the signature in {s} is not valid for {a}")),
                "{e}"
            );
        }
        fs::write(&sig, "garbage").expect("write");
        let e = permissive
            .check(&f.archive)
            .expect_err("malformed")
            .to_string();
        assert!(
            e.starts_with(&format!("signature file {s} is malformed")),
            "{e}"
        );

        // Signed by another key: refused where keys are trusted.
        let other = f.tmp.path().join("other.key");
        generate_keypair(&other).expect("keygen");
        sign_archive(&f.archive, &load_signing_key(&other).expect("load")).expect("sign");
        assert!(
            permissive
                .check(&f.archive)
                .expect("self-consistent")
                .is_some()
        );
        let e = strict.check(&f.archive).expect_err("untrusted").to_string();
        assert!(e.contains("which is not trusted"), "{e}");

        // Configuration: require without keys, a missing key file.
        assert_eq!(
            SignaturePolicy::new(true, vec![])
                .expect_err("no keys")
                .to_string(),
            "daemon.require_signatures is set but daemon.trusted_keys lists no public key file; add the signers' public key files (KEYFILE.pub, written by 'cloacinactl package keygen') to trusted_keys in config.toml"
        );
        let missing = f.tmp.path().join("missing.pub");
        let config = DaemonConfig {
            require_signatures: true,
            trusted_keys: vec![missing.display().to_string()],
            ..DaemonConfig::default()
        };
        assert_eq!(
            SignaturePolicy::from_daemon_config(&config, f.tmp.path())
                .expect_err("missing key")
                .to_string(),
            format!(
                "cannot use trusted key {m} (daemon.trusted_keys in config.toml): key file {m} not found; create a key pair with 'cloacinactl package keygen KEYFILE'",
                m = missing.display()
            )
        );
        // Relative to the base (the Cloacina home).
        let config = DaemonConfig {
            require_signatures: true,
            trusted_keys: vec!["signing.key.pub".to_string()],
            ..DaemonConfig::default()
        };
        let policy = SignaturePolicy::from_daemon_config(&config, f.tmp.path()).expect("policy");
        assert!(policy.requires_signatures());
        assert_eq!(policy.trusted_keys(), std::slice::from_ref(&f.public));
    }
}
