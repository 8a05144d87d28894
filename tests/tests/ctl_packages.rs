//! End-to-end: the package client verbs of the real `cloacinactl` against a real
//! `cloacina-server` that requires signatures: `package publish` (build, pack, sign, upload in
//! one step), `package upload` of an unsigned archive refused with the reason (exit 4), then of
//! a signed one; `package list --filter` and its output formats; `package inspect`; and quiet
//! output in pipes (no progress on stderr).

use cloacina_e2e::both_backends;
use cloacina_e2e::ctl::Ctl;
use cloacina_e2e::home::pack_example;
use cloacina_e2e::packages;
use cloacina_e2e::server::{Backend, ServerHome, Start};

fn publish_upload_list_inspect(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let keys = tempfile::tempdir().expect("temp dir");
    let key = keys.path().join("signing.key");
    let key_shown = key.display().to_string();
    let pubkey = format!("{key_shown}.pub");
    // `package keygen` is local (no server): the key pair exists before the server reads it.
    let status = std::process::Command::new(cloacina_e2e::bins::cloacinactl())
        .args(["package", "keygen", &key_shown])
        .status()
        .expect("run keygen");
    assert!(status.success());
    let server = home.start(
        Start::direct()
            .arg("--require-signatures")
            .arg("--trusted-key")
            .arg(&pubkey),
    );
    let ctl = Ctl::new(&server);

    // An unsigned archive: refused with the reason, exit 4, nothing stored.
    let unsigned = pack_example("hello-orders", home.path());
    let refused = ctl.fails(&["package", "upload", &unsigned.display().to_string()], 4);
    assert!(
        refused.stderr.starts_with("Error: signature rejected:"),
        "{refused}"
    );
    let none = ctl.json(&["package", "list"]);
    assert_eq!(none["items"], serde_json::json!([]), "{none}");

    // publish: build, pack, sign, upload. The example's build is already in the shared
    // examples target, so cargo only checks it.
    let example = packages::example("hello-orders");
    let mut cmd = ctl.command(&[
        "package",
        "publish",
        &example.dir.display().to_string(),
        "--sign",
        &key_shown,
        "-o",
        "id",
    ]);
    cmd.env("CARGO_TARGET_DIR", packages::target_dir());
    let out = cmd.output().expect("run publish");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", server.logs());
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 36, "a package id: {id:?}");

    // list: --filter, table, id, yaml; quiet stderr in a pipe.
    let table = ctl.ok(&["package", "list", "--filter", "orders"]);
    assert!(table.stdout.starts_with("ID "), "{table}");
    assert!(table.stdout.contains("hello-orders"), "{table}");
    assert!(table.stdout.contains("loaded"), "{table}");
    assert_eq!(table.stderr, "", "{table}");
    let ids = ctl.ok(&["package", "list", "-o", "id"]);
    assert_eq!(ids.stdout.trim(), id, "{ids}");
    let filtered = ctl.ok(&["package", "list", "--filter", "no-such-package"]);
    assert_eq!(filtered.stdout.trim(), "no packages", "{filtered}");
    let yaml = ctl.ok(&["package", "list", "-o", "yaml"]);
    assert!(yaml.stdout.contains("name: \"hello-orders\""), "{yaml}");

    // inspect: state, steps, signed.
    let inspect = ctl.ok(&["package", "inspect", &id]);
    for want in ["state", "loaded", "load steps done", "signed", "true"] {
        assert!(inspect.stdout.contains(want), "{want}: {inspect}");
    }
    let json = ctl.json(&["package", "inspect", &id]);
    assert_eq!(json["signed"], true, "{json}");
    ctl.fails(
        &["package", "inspect", "00000000-0000-0000-0000-000000000000"],
        3,
    );
    ctl.fails(&["package", "inspect", "not-a-uuid"], 5);

    // The published package serves.
    let run = ctl.ok(&["workflow", "run", "hello"]);
    let exec = run.stdout.trim().to_string();
    cloacina_e2e::wait_for(
        "the run completes",
        || ctl.json(&["execution", "status", &exec])["status"] == "Completed",
        || server.logs(),
    );
}
both_backends!(publish_upload_list_inspect);
