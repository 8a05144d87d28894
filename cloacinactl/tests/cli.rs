//! The `cloacinactl` binary: global flags, exit codes and the `package` verbs, each error path
//! with its exact message.

mod common;

use std::fs;

use cloacina::package::archive::HOST_TARGET;
use common::{Env, mode, unpack, workspace_root};

// ---------------------------------------------------------------------------------------------
// Global behaviour

#[test]
fn help_and_version_exit_zero() {
    let env = Env::new();
    for args in [
        &["--help"][..],
        &["-h"],
        &["package", "--help"],
        &["package", "pack", "--help"],
        &["help", "package"],
        &["--version"],
    ] {
        let out = env.run(args);
        out.success();
        assert!(!out.stdout.is_empty(), "{out}");
    }
    env.run(&["--help"])
        .stdout_has("Exit codes: 0 success, 1 user error");
    env.run(&["--version"]).stdout_has("cloacinactl 0.1.0");
}

#[test]
fn usage_errors_exit_one() {
    let env = Env::new();
    for args in [
        &["--bogus"][..],
        &["package", "keygen", "k", "--bogus"],
        &["frobnicate"],
        &["package", "frobnicate"],
        &[],
        &["package"],
        &["package", "verify", "x.cloacina"],
        &["-o", "xml", "package", "keygen", "k"],
        &["package", "keygen"],
    ] {
        let out = env.run(args);
        out.code(1);
        assert!(
            out.stderr.contains("error:") || out.stderr.contains("Usage:"),
            "{out}"
        );
    }
    env.run(&["--bogus"])
        .stderr_has("error: unexpected argument '--bogus' found");
    env.run(&["package", "verify", "x.cloacina"])
        .stderr_has("--key <PUBFILE>");
    assert!(!env.join("k").exists());
}

#[test]
fn json_and_output_must_agree() {
    let env = Env::new();
    env.run(&["--json", "-o", "yaml", "package", "keygen", "k"])
        .error(1, "--json conflicts with --output yaml; use one of them");
    assert!(!env.join("k").exists());
    // Agreeing is fine.
    let out = env.run(&["--json", "-o", "json", "package", "keygen", "k"]);
    out.success();
    assert!(out.json()["public_key"].is_string());
}

#[test]
fn global_flags_are_accepted_before_and_after_the_noun() {
    let env = Env::new();
    let home = env.join("home");
    let home = home.to_str().expect("utf-8");
    env.run(&[
        "-v",
        "--home",
        home,
        "--profile",
        "p",
        "--server",
        "http://127.0.0.1:1",
        "--api-key",
        "clk_x",
        "--tenant",
        "acme",
        "--no-color",
        "package",
        "keygen",
        "a.key",
    ])
    .success();
    env.run(&[
        "package",
        "-v",
        "keygen",
        "b.key",
        "--home",
        home,
        "--tenant",
        "acme",
        "--no-color",
        "--json",
    ])
    .success()
    .stdout_has("\"public_key\"");
    // -v turns on debug logs on stderr, and never shows the API key.
    let out = env.run(&[
        "-v",
        "--api-key",
        "clk_secret",
        "package",
        "keygen",
        "c.key",
    ]);
    out.success().stderr_has("DEBUG").stderr_has("settings");
    assert!(!out.stderr.contains("clk_secret"), "{out}");
    let quiet = env.run(&["package", "keygen", "d.key"]);
    assert!(quiet.stderr.is_empty(), "{quiet}");
}

#[test]
fn output_formats() {
    let env = Env::new();
    let out = env.run(&["-o", "json", "package", "keygen", "j.key"]);
    let v = out.success().json();
    assert_eq!(v["private_key_file"], "j.key");
    assert_eq!(v["public_key_file"], "j.key.pub");
    assert_eq!(v["algorithm"], "ed25519");
    let hex = v["public_key"].as_str().expect("hex").to_string();

    let out = env.run(&["package", "keygen", "y.key", "-o", "yaml"]);
    out.success()
        .stdout_has("private_key_file: \"y.key\"\n")
        .stdout_has("algorithm: \"ed25519\"\n");

    let out = env.run(&["package", "keygen", "i.key", "--output", "id"]);
    out.success();
    assert_eq!(out.stdout.trim().len(), 64, "{out}");

    let out = env.run(&["package", "keygen", "t.key"]);
    out.success()
        .stdout_has("Generated an Ed25519 key pair")
        .stdout_has("t.key (mode 0600)");
    assert!(!out.stdout.contains('\x1b'), "no colour in a pipe\n{out}");

    // The id of keygen is the public key.
    let pubfile = fs::read_to_string(env.join("j.key.pub")).expect("read");
    assert_eq!(pubfile, format!("cloacina-ed25519-public-key {hex}\n"));
}

// ---------------------------------------------------------------------------------------------
// keygen

#[test]
fn keygen_writes_a_private_key_only_its_owner_can_read() {
    let env = Env::new();
    env.run(&["package", "keygen", "signing.key"]).success();
    let private = fs::read_to_string(env.join("signing.key")).expect("read");
    assert!(
        private.starts_with("cloacina-ed25519-private-key\n"),
        "{private}"
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&env.join("signing.key")), 0o600);
        assert_eq!(mode(&env.join("signing.key.pub")) & 0o600, 0o600);
    }

    // Never overwrites, and says so.
    let before = fs::read(env.join("signing.key")).expect("read");
    env.run(&["package", "keygen", "signing.key"]).error(
        1,
        "signing.key already exists; refusing to overwrite a key. Choose another file name, or remove the old key first if you really mean to replace it",
    );
    assert_eq!(fs::read(env.join("signing.key")).expect("read"), before);

    env.write("other.key.pub", "not mine");
    env.run(&["package", "keygen", "other.key"]).error(
        1,
        "other.key.pub already exists; refusing to overwrite a key. Choose another file name, or remove the old key first if you really mean to replace it",
    );
    assert!(!env.join("other.key").exists());
    assert_eq!(
        fs::read_to_string(env.join("other.key.pub")).expect("read"),
        "not mine"
    );

    env.run(&["package", "keygen", "missing/dir/k"]).error(
        1,
        "cannot create missing/dir/k: No such file or directory (os error 2)",
    );
}

// ---------------------------------------------------------------------------------------------
// new

#[test]
fn new_scaffolds_a_package() {
    let env = Env::new();
    let out = env.run(&["package", "new", "demo"]);
    out.success()
        .stdout_has("Created package 'demo' in ./demo")
        .stdout_has("cloacinactl package build demo");
    for file in [
        "Cargo.toml",
        "package.toml",
        "src/lib.rs",
        ".gitignore",
        "Cargo.lock",
    ] {
        assert!(env.join("demo").join(file).is_file(), "{file}\n{out}");
    }
    let cargo = fs::read_to_string(env.join("demo/Cargo.toml")).expect("read");
    let root = workspace_root();
    for needle in [
        "crate-type = [\"cdylib\"]".to_string(),
        "\n[workspace]\n".to_string(),
        format!(
            "cloacina-workflow = {{ path = \"{}\", default-features = false, features = [\"plugin\"] }}",
            root.join("crates/cloacina-workflow").display()
        ),
        format!(
            "cloacina-macros = {{ path = \"{}\" }}",
            root.join("crates/cloacina-macros").display()
        ),
    ] {
        assert!(cargo.contains(&needle), "{needle}\n{cargo}");
    }
    let manifest =
        cloacina::package::manifest::Manifest::from_dir(&env.join("demo")).expect("valid");
    assert_eq!((manifest.name(), manifest.version()), ("demo", "0.1.0"));
    assert!(manifest.package.description.is_some());
    let lib = fs::read_to_string(env.join("demo/src/lib.rs")).expect("read");
    assert!(lib.contains("cloacina_workflow::export_package!"), "{lib}");

    // Never over an existing directory.
    env.run(&["package", "new", "demo"]).error(
        1,
        "./demo already exists; choose another name or remove it first",
    );

    let out = env.run(&["-o", "json", "package", "new", "other_pkg"]);
    assert_eq!(out.success().json()["path"], "./other_pkg");
}

#[test]
fn new_refuses_invalid_names() {
    let env = Env::new();
    for name in [
        "9lives",
        "_x",
        "a/b",
        "..",
        "has space",
        &"x".repeat(65),
        "",
    ] {
        env.run(&["package", "new", name]).error(
            1,
            &format!(
                "invalid package name: '{name}' is not valid: use 1-64 letters, digits, '-' or '_', starting with a letter"
            ),
        );
    }
    env.run(&["package", "new", "fn"]).error(
        1,
        "invalid package name: 'fn' cannot be used because it is a Rust keyword; choose another name",
    );
    env.run(&["package", "new", "cloacina-workflow"]).error(
        1,
        "invalid package name: 'cloacina-workflow' cannot be used because it is the name of a Cloacina crate the package depends on; choose another name",
    );
    assert_eq!(
        fs::read_dir(env.path()).expect("read_dir").count(),
        0,
        "nothing created"
    );
}

// ---------------------------------------------------------------------------------------------
// build

#[test]
fn build_refuses_incomplete_package_directories() {
    let env = Env::new();
    env.run(&["package", "build", "nowhere"]).error(
        1,
        "package directory nowhere not found; create one with 'cloacinactl package new NAME'",
    );

    env.write(
        "nocargo/package.toml",
        "[package]\nname = \"x\"\nversion = \"1.0.0\"\n",
    );
    env.run(&["package", "build", "nocargo"]).error(
        1,
        "nocargo has no Cargo.toml; a package directory needs both Cargo.toml and package.toml (create one with 'cloacinactl package new NAME')",
    );
    env.run(&["package", "pack", "nocargo"]).error(
        1,
        "nocargo has no Cargo.toml; a package directory needs both Cargo.toml and package.toml (create one with 'cloacinactl package new NAME')",
    );

    env.write("nomanifest/Cargo.toml", "[package]\nname = \"x\"\n");
    env.run(&["package", "build", "nomanifest"]).error(
        1,
        "nomanifest has no package.toml; a package directory needs both Cargo.toml and package.toml (create one with 'cloacinactl package new NAME')",
    );

    env.write("badmanifest/Cargo.toml", "[package]\nname = \"x\"\n");
    env.write(
        "badmanifest/package.toml",
        "[package]\nname = \"x\"\nversion = \"1.0\"\n",
    );
    env.run(&["package", "build", "badmanifest"]).error(
        1,
        "package manifest badmanifest/package.toml: package.version '1.0' is not a semantic version like 1.2.3",
    );
    env.run(&["package", "pack", "badmanifest"]).error(
        1,
        "package manifest badmanifest/package.toml: package.version '1.0' is not a semantic version like 1.2.3",
    );
}

#[test]
fn build_shows_cargo_output_and_fails_with_it() {
    let mut env = Env::new();
    env.set_env("CARGO_TARGET_DIR", env.join("target"));
    env.fake_package("broken", "broken");
    env.write(
        "broken/src/lib.rs",
        "pub fn f() -> u32 { \"not a number\" }\n",
    );
    let out = env.run(&["package", "build", "broken"]);
    out.error(
        1,
        "cargo build failed for package 'broken' in broken (exit status: 101); fix the errors shown above and run 'cloacinactl package build broken' again",
    )
    .stderr_has("error[E0308]: mismatched types")
    .stderr_has("Compiling broken v0.3.0");
    assert!(out.stdout.is_empty(), "results only on stdout\n{out}");
}

#[test]
fn build_then_pack_a_real_library() {
    let mut env = Env::new();
    env.set_env("CARGO_TARGET_DIR", env.join("target"));
    env.fake_package("tiny", "tiny-pkg");
    let out = env.run(&["-o", "json", "package", "build", "tiny"]);
    let v = out.success().stderr_has("Compiling tiny-pkg v0.3.0").json();
    let lib = env.join("target/debug/libtiny_pkg.so");
    assert_eq!(v["library"], lib.display().to_string(), "{out}");
    assert_eq!(v["profile"], "debug");
    assert!(lib.is_file());

    let out = env.run(&["package", "build", "tiny", "--release"]);
    out.success()
        .stdout_has("Built tiny-pkg 0.3.0")
        .stdout_has("release");
    let release = env.join("target/release/libtiny_pkg.so");
    assert!(release.is_file(), "{out}");

    // Release preferred over debug.
    let out = env.run(&["--json", "package", "pack", "tiny"]);
    let v = out.success().json();
    assert_eq!(v["profile"], "release");
    assert_eq!(v["library"], release.display().to_string());
    assert_eq!(v["path"], "tiny-pkg-0.3.0.cloacina");
    let unpacked = unpack(&env.join("tiny-pkg-0.3.0.cloacina"), &env.join("u"));
    let packed_lib =
        cloacina::package::archive::library_for(&unpacked, HOST_TARGET).expect("host library");
    assert_eq!(
        fs::read(&packed_lib).expect("read"),
        fs::read(&release).expect("read")
    );
    assert!(packed_lib.ends_with(format!("lib/{HOST_TARGET}/libtiny_pkg.so")));
}

// ---------------------------------------------------------------------------------------------
// pack

/// A package whose "build" is a file placed where cargo would put the library.
fn packable(env: &mut Env) {
    env.set_env("CARGO_TARGET_DIR", env.join("target"));
    env.fake_package("pkg", "fake");
}

#[test]
fn pack_needs_a_build_first() {
    let mut env = Env::new();
    packable(&mut env);
    let target = env.join("target");
    env.run(&["package", "pack", "pkg"]).error(
        1,
        &format!(
            "no build of package 'fake' found (looked for {} and {}); run 'cloacinactl package build pkg' first",
            target.join("release/libfake.so").display(),
            target.join("debug/libfake.so").display()
        ),
    );
    assert!(!env.join("fake-0.3.0.cloacina").exists());
}

#[test]
fn pack_refuses_crates_that_are_not_dynamic_libraries() {
    let mut env = Env::new();
    packable(&mut env);
    env.write(
        "pkg/Cargo.toml",
        "[package]\nname = \"fake\"\nversion = \"0.3.0\"\nedition = \"2024\"\n\n[workspace]\n",
    );
    env.run(&["package", "pack", "pkg"]).error(
        1,
        "package 'fake' in pkg does not build a dynamic library; add [lib] crate-type = [\"cdylib\"] to its Cargo.toml",
    );
}

#[test]
fn pack_writes_the_archive_and_reports_it() {
    let mut env = Env::new();
    packable(&mut env);
    env.write("target/debug/libfake.so", b"debug library");

    // Default name in the current directory, human output.
    let out = env.run(&["package", "pack", "pkg"]);
    out.success()
        .stdout_has("Packed fake 0.3.0")
        .stdout_has("path       fake-0.3.0.cloacina")
        .stdout_has("signature  none (sign with --sign KEYFILE)");
    let archive = env.join("fake-0.3.0.cloacina");
    let sha = cloacina::package::archive::sha256_file(&archive).expect("sha");
    out.stdout_has(&format!("sha256     {sha}"));
    let size = fs::metadata(&archive).expect("meta").len();
    out.stdout_has(&format!("size       {size} bytes"));

    let unpacked = unpack(&archive, &env.join("u"));
    assert_eq!(unpacked.manifest.name(), "fake");
    assert_eq!(unpacked.targets(), vec![HOST_TARGET]);
    assert_eq!(
        fs::read(env.join(&format!("u/lib/{HOST_TARGET}/libfake.so"))).expect("lib"),
        b"debug library"
    );
    assert!(env.join("u/src/lib.rs").is_file());

    // `-o FILE` after the verb is the archive; `-o json` before the noun is the format.
    let out = env.run(&["-o", "json", "package", "pack", "pkg", "-o", "x.cloacina"]);
    let v = out.success().json();
    assert_eq!(v["path"], "x.cloacina");
    assert_eq!(v["sha256"], sha, "same inputs, same bytes");
    assert_eq!(v["size"], size);
    assert_eq!(v["name"], "fake");
    assert_eq!(v["version"], "0.3.0");
    assert_eq!(v["targets"], serde_json::json!([HOST_TARGET]));
    assert_eq!(v["signature"], serde_json::Value::Null);
    assert!(env.join("x.cloacina").is_file());

    let out = env.run(&[
        "package",
        "pack",
        "pkg",
        "--out",
        "sub/y.cloacina",
        "--output",
        "id",
    ]);
    out.error(
        1,
        "cannot write sub/y.cloacina: No such file or directory (os error 2)",
    );
    fs::create_dir(env.join("sub")).expect("mkdir");
    let out = env.run(&[
        "package",
        "pack",
        "pkg",
        "--out",
        "sub/y.cloacina",
        "--output",
        "id",
    ]);
    assert_eq!(out.success().stdout, "sub/y.cloacina\n");

    let out = env.run(&["package", "pack", "pkg", "-o", "z.cloacina", "--json"]);
    assert_eq!(out.success().json()["path"], "z.cloacina");

    // `-o FORMAT` after the verb would silently write a file called "json": refused.
    env.run(&["package", "pack", "pkg", "-o", "json"]).error(
        1,
        "after 'package pack', -o names the archive FILE, not the output format; use --output json (or put -o json before 'package'), or name the file json.cloacina",
    );
    assert!(!env.join("json").exists());
}

#[test]
fn pack_warns_about_a_stale_build() {
    let mut env = Env::new();
    packable(&mut env);
    env.write("target/debug/libfake.so", b"old library");
    std::thread::sleep(std::time::Duration::from_millis(50));
    env.write("pkg/src/lib.rs", "pub fn answer() -> u32 { 43 }\n");
    env.run(&["package", "pack", "pkg"]).success().stderr_has(&format!(
        "warning: {} is older than pkg/src/lib.rs; run 'cloacinactl package build pkg' to pack your latest changes",
        env.join("target/debug/libfake.so").display()
    ));
}

// ---------------------------------------------------------------------------------------------
// sign and verify

#[test]
fn pack_sign_verify_round_trip() {
    let mut env = Env::new();
    packable(&mut env);
    env.write("target/debug/libfake.so", b"library");
    env.run(&["package", "keygen", "release.key"]).success();
    env.run(&["package", "keygen", "other.key"]).success();
    let key_hex = fs::read_to_string(env.join("release.key.pub"))
        .expect("read")
        .trim()
        .rsplit(' ')
        .next()
        .expect("hex")
        .to_string();

    let out = env.run(&["package", "pack", "pkg", "--sign", "release.key"]);
    out.success().stdout_has(&format!(
        "signature  fake-0.3.0.cloacina.sig (key {key_hex})"
    ));
    let archive = env.join("fake-0.3.0.cloacina");
    assert!(env.join("fake-0.3.0.cloacina.sig").is_file());

    let out = env.run(&[
        "package",
        "verify",
        "fake-0.3.0.cloacina",
        "--key",
        "release.key.pub",
    ]);
    out.success()
        .stdout_has("Verified: fake-0.3.0.cloacina is signed by a trusted key")
        .stdout_has(&format!("key        {key_hex}"));
    // Several trusted keys: any one will do.
    let out = env.run(&[
        "--json",
        "package",
        "verify",
        "fake-0.3.0.cloacina",
        "--key",
        "other.key.pub",
        "--key",
        "release.key.pub",
    ]);
    let v = out.success().json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["public_key"], key_hex);
    assert_eq!(v["signature"], "fake-0.3.0.cloacina.sig");

    // The wrong key.
    let other_hex = fs::read_to_string(env.join("other.key.pub"))
        .expect("read")
        .trim()
        .rsplit(' ')
        .next()
        .expect("hex")
        .to_string();
    env.run(&["package", "verify", "fake-0.3.0.cloacina", "--key", "other.key.pub"])
        .error(
            1,
            &format!(
                "fake-0.3.0.cloacina is signed by key {key_hex}, which is not trusted (trusted: {other_hex}); verify it with the signer's public key, or sign it with a trusted key"
            ),
        );

    // A private key where a public one belongs.
    env.run(&["package", "verify", "fake-0.3.0.cloacina", "--key", "release.key"])
        .error(
            1,
            "release.key is a private key; pass the public key file (release.key.pub) instead, and keep the private key secret",
        );

    // A tampered archive.
    let signed_sha = cloacina::package::archive::sha256_file(&archive).expect("sha");
    let mut bytes = fs::read(&archive).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&archive, &bytes).expect("tamper");
    let tampered_sha = cloacina::package::archive::sha256_file(&archive).expect("sha");
    env.run(&["package", "verify", "fake-0.3.0.cloacina", "--key", "release.key.pub"])
        .error(
            1,
            &format!(
                "fake-0.3.0.cloacina changed after it was signed: its SHA-256 is {tampered_sha} but fake-0.3.0.cloacina.sig signs {signed_sha}; do not use it — pack and sign it again"
            ),
        );

    // Re-packing the same inputs gives the signed bytes back: the side-car is valid again.
    env.run(&["package", "pack", "pkg"]).success();
    env.run(&[
        "package",
        "verify",
        "fake-0.3.0.cloacina",
        "--key",
        "release.key.pub",
    ])
    .success();

    // Re-packing changed inputs without --sign removes the side-car that no longer matches.
    env.write("pkg/src/extra.rs", "// new file\n");
    env.run(&["package", "pack", "pkg"]).success().stderr_has(
        "note: removed fake-0.3.0.cloacina.sig, which signed an earlier version of the archive",
    );
    env.run(&["package", "verify", "fake-0.3.0.cloacina", "--key", "release.key.pub"])
        .error(
            1,
            "no signature for fake-0.3.0.cloacina: expected fake-0.3.0.cloacina.sig; sign with 'cloacinactl package pack --sign KEYFILE'",
        );

    // A malformed side-car.
    env.write("fake-0.3.0.cloacina.sig", "{\"algorithm\":\"ed25519\"}");
    env.run(&["package", "verify", "fake-0.3.0.cloacina", "--key", "release.key.pub"])
        .error(
            1,
            "signature file fake-0.3.0.cloacina.sig is malformed (not the expected JSON: missing field `sha256` at line 1 column 23); sign fake-0.3.0.cloacina again with 'cloacinactl package pack --sign KEYFILE'",
        );

    // No archive at all.
    env.run(&[
        "package",
        "verify",
        "nope.cloacina",
        "--key",
        "release.key.pub",
    ])
    .error(1, "archive nope.cloacina not found; check the path");
}

#[test]
fn signing_key_problems_stop_pack_before_it_writes() {
    let mut env = Env::new();
    packable(&mut env);
    env.write("target/debug/libfake.so", b"library");
    env.run(&["package", "pack", "pkg", "--sign", "missing.key"]).error(
        1,
        "key file missing.key not found; create a key pair with 'cloacinactl package keygen KEYFILE'",
    );
    assert!(!env.join("fake-0.3.0.cloacina").exists());

    env.run(&["package", "keygen", "k"]).success();
    env.run(&["package", "pack", "pkg", "--sign", "k.pub"]).error(
        1,
        "k.pub is not a Cloacina private key file: it is a public key; pass the private key file (without .pub); create a key pair with 'cloacinactl package keygen KEYFILE'",
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(env.join("k"), fs::Permissions::from_mode(0o640)).expect("chmod");
        env.run(&["package", "pack", "pkg", "--sign", "k"]).error(
            1,
            "private key k is accessible by other users (mode 0640); restrict it with 'chmod 600 k'",
        );
    }
    assert!(!env.join("fake-0.3.0.cloacina").exists());
}

// ---------------------------------------------------------------------------------------------
// daemon verbs without a daemon (the running daemon is tested in cloacina-daemon/tests)

#[test]
fn daemon_verbs_without_a_daemon_exit_2() {
    let env = Env::new();
    let home = env.join("home");
    let home = home.to_str().expect("utf-8 path");
    let out = env.run(&["--home", home, "daemon", "health"]);
    out.code(2);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out}");
    env.run(&["--home", home, "daemon", "status"])
        .code(2)
        .stderr_has("cannot reach the daemon at")
        .stderr_has("start it with 'cloacinactl daemon start'");
    env.run(&["--home", home, "daemon", "stop"]).code(2);
}

#[test]
fn daemon_start_says_where_it_looked_for_the_daemon() {
    let env = Env::new();
    // A copy of cloacinactl alone in a folder, with nothing on PATH.
    let lonely = env.join("bin/cloacinactl");
    fs::create_dir_all(env.join("bin")).expect("mkdir");
    fs::copy(env!("CARGO_BIN_EXE_cloacinactl"), &lonely).expect("copy");
    let out = std::process::Command::new(&lonely)
        .args(["--home"])
        .arg(env.join("home"))
        .args(["daemon", "start"])
        .env("PATH", env.join("empty"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot find cloacina-daemon beside cloacinactl")
            && err.contains("cargo build -p cloacina-daemon"),
        "{err}"
    );
}
