//! End to end: `package new` scaffolds a package that builds as it is, from a directory
//! outside the workspace; `build`, `pack --sign` and `verify` take it to a signed archive
//! holding its library.
//!
//! The build uses the shared target directory `<workspace>/target/packages` so dependencies
//! are compiled once per machine, not once per test run.

mod common;

use std::fs;

use cloacina::package::archive::{HOST_TARGET, library_file_name, library_for};
use common::{Env, unpack, workspace_root};

#[test]
fn new_build_pack_sign_verify() {
    let mut env = Env::new();
    env.set_env("CARGO_TARGET_DIR", workspace_root().join("target/packages"));
    env.run(&["package", "new", "demo"]).success();
    env.run(&["package", "build", "demo"])
        .success()
        .stdout_has("Built demo 0.1.0");
    env.run(&["package", "keygen", "demo.key"]).success();
    let out = env.run(&["--json", "package", "pack", "demo", "--sign", "demo.key"]);
    let v = out.success().json();
    assert_eq!(v["path"], "demo-0.1.0.cloacina");
    assert_eq!(v["signature"], "demo-0.1.0.cloacina.sig");
    assert_eq!(v["targets"], serde_json::json!([HOST_TARGET]));

    let lib_name = library_file_name("demo");
    let unpacked = unpack(&env.join("demo-0.1.0.cloacina"), &env.join("unpacked"));
    let lib = library_for(&unpacked, HOST_TARGET).expect("a library for this host");
    assert!(
        lib.ends_with(format!("lib/{HOST_TARGET}/{lib_name}")),
        "{}",
        lib.display()
    );
    assert!(fs::metadata(&lib).expect("library").len() > 0);
    for file in ["package.toml", "Cargo.toml", "Cargo.lock", "src/lib.rs"] {
        assert!(env.join("unpacked").join(file).is_file(), "{file}");
    }

    env.run(&[
        "package",
        "verify",
        "demo-0.1.0.cloacina",
        "--key",
        "demo.key.pub",
    ])
    .success()
    .stdout_has("Verified: demo-0.1.0.cloacina is signed by a trusted key");
}
