//! End-to-end: every server-mode recipe of the unload guide (`spec/000_*`), run as written with
//! the real `cloacinactl` against a real `cloacina-server`: the standalone unload and its
//! `graph list` / `trigger list` checks; the cross-package recipe with the publisher and the
//! subscriber in different tenants (the guard's exact error line and exit code, the subscriber
//! first, `graph status` showing 0 subscribers, then the publisher); the upgrade by upload of
//! a new version while a run of the old one is in flight; and the partial-unload recovery
//! (the tenant's database unreachable during step 6, the delete rerun, then nothing of the
//! package left in any listing).

use std::path::{Path, PathBuf};

use cloacina_e2e::both_backends;
use cloacina_e2e::ctl::{Ctl, CtlOut};
use cloacina_e2e::home::{pack_example, pack_to};
use cloacina_e2e::packages;
use cloacina_e2e::server::{Backend, ServerHome, ServerProcess, Start};
use serde_json::{Value, json};

fn create_tenant(server: &ServerProcess<'_>, name: &str) {
    let r = server.post("/v1/tenants", &json!({"name": name}));
    assert_eq!(r.status, 201, "{r}\n{}", server.logs());
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// `package upload FILE --tenant T -o json`: the answer, which must say `loaded`.
fn upload(ctl: &Ctl<'_, '_>, archive: &Path, tenant: &str) -> Value {
    let v = ctl.json(&["package", "upload", &shown(archive), "--tenant", tenant]);
    assert_eq!(v["state"], "loaded", "{v}\n{}", ctl.server.logs());
    v
}

fn id(v: &Value) -> String {
    v["package_id"].as_str().expect("package_id").to_string()
}

/// The line `subscribers: N` (in whatever alignment the table uses), as `N`.
fn subscribers_line(out: &CtlOut) -> Option<String> {
    out.stdout.lines().find_map(|l| {
        let words: Vec<&str> = l
            .split([' ', ':', '\t'])
            .filter(|w| !w.is_empty())
            .collect();
        match words.as_slice() {
            ["subscribers", n, ..] => Some(n.to_string()),
            _ => None,
        }
    })
}

fn standalone_unload(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::direct());
    let ctl = Ctl::new(&server);
    create_tenant(&server, "my-tenant");
    let publisher = upload(
        &ctl,
        &pack_example("price-publisher", home.path()),
        "my-tenant",
    );
    let pkg = id(&publisher);
    let graphs = ctl.ok(&["graph", "list", "--tenant", "my-tenant"]);
    assert!(graphs.stdout.contains("price_summary"), "{graphs}");

    // A delete asks first: with no terminal and no --force it refuses and changes nothing.
    let refused = ctl.fails(&["package", "delete", &pkg, "--tenant", "my-tenant"], 1);
    assert!(refused.stderr.contains("--force"), "{refused}");
    let listed = ctl.ok(&["package", "list", "--tenant", "my-tenant", "-o", "id"]);
    assert_eq!(listed.stdout.trim(), pkg, "{listed}");

    // # server mode
    // cloacinactl package delete <package-id> --tenant my-tenant
    let deleted = ctl.ok(&[
        "package",
        "delete",
        &pkg,
        "--tenant",
        "my-tenant",
        "--force",
    ]);
    assert!(
        deleted.stdout.contains("Unloaded price-publisher"),
        "{deleted}"
    );

    // cloacinactl graph list --tenant my-tenant  -> the package's graphs no longer appear.
    let graphs = ctl.ok(&["graph", "list", "--tenant", "my-tenant"]);
    assert!(!graphs.stdout.contains("price_summary"), "{graphs}");
    // cloacinactl trigger list --tenant my-tenant -> its triggers are gone.
    let triggers = ctl.ok(&["trigger", "list", "--tenant", "my-tenant", "-o", "json"]);
    assert_eq!(triggers.json()["items"], json!([]), "{triggers}");
    let accumulators = ctl.ok(&["graph", "accumulators", "--tenant", "my-tenant"]);
    assert!(
        !accumulators.stdout.contains("price_reactor"),
        "{accumulators}"
    );
    ctl.fails(&["package", "inspect", &pkg], 3);
}
both_backends!(standalone_unload);

/// price-subscriber, its graphs bound to `publisher-tenant`'s `price_reactor`.
fn remote_subscriber(dir: &Path) -> PathBuf {
    let (src, library) = packages::example_rewritten(
        "price-subscriber",
        "price-subscriber-remote",
        ".bound_to(\"price_reactor\")",
        ".bound_to(\"publisher-tenant/price_reactor\")",
    );
    let out = dir.join("price-subscriber-remote.cloacina");
    pack_to(&src, &library, &out);
    out
}

fn cross_package_unload(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::direct());
    let ctl = Ctl::new(&server);
    create_tenant(&server, "publisher-tenant");
    create_tenant(&server, "subscriber-tenant");
    let a = id(&upload(
        &ctl,
        &pack_example("price-publisher", home.path()),
        "publisher-tenant",
    ));
    let b = id(&upload(
        &ctl,
        &remote_subscriber(home.path()),
        "subscriber-tenant",
    ));

    // Unloading A directly fails with the guard's exact line, exit 5, and changes nothing.
    let refused = ctl.fails(
        &[
            "package",
            "delete",
            &a,
            "--tenant",
            "publisher-tenant",
            "--force",
        ],
        5,
    );
    assert_eq!(
        refused.stderr,
        "Error: reactor 'price_reactor' has 2 bound subscriber(s): ['analyzer_v1', 'aggregator']; unbind them first\n",
        "{refused}"
    );
    let still = ctl.json(&["package", "inspect", &a]);
    assert_eq!(still["state"], "loaded", "{still}");
    // The dry run gives the same verdict without --force, asking nothing.
    let plan = ctl.fails(
        &[
            "package",
            "delete",
            &a,
            "--tenant",
            "publisher-tenant",
            "--dry-run",
        ],
        5,
    );
    assert!(plan.stdout.contains("the guard refuses"), "{plan}");
    assert!(plan.stdout.contains("6. cron schedules deleted"), "{plan}");

    // 1. Identify the subscribers: cloacinactl graph list --tenant subscriber-tenant
    let graphs = ctl.ok(&["graph", "list", "--tenant", "subscriber-tenant"]);
    for g in ["analyzer_v1", "aggregator"] {
        assert!(graphs.stdout.contains(g), "{g}: {graphs}");
    }
    let before = ctl.ok(&[
        "graph",
        "status",
        "price_reactor",
        "--tenant",
        "publisher-tenant",
    ]);
    assert_eq!(subscribers_line(&before).as_deref(), Some("2"), "{before}");

    // 2. Unload the subscriber package.
    ctl.ok(&[
        "package",
        "delete",
        &b,
        "--tenant",
        "subscriber-tenant",
        "--force",
    ]);

    // 3. Confirm the reactor is now unbound: should show subscribers: 0
    let after = ctl.ok(&[
        "graph",
        "status",
        "price_reactor",
        "--tenant",
        "publisher-tenant",
    ]);
    assert_eq!(subscribers_line(&after).as_deref(), Some("0"), "{after}");

    // 4. Unload the publisher.
    ctl.ok(&[
        "package",
        "delete",
        &a,
        "--tenant",
        "publisher-tenant",
        "--force",
    ]);
    let graphs = ctl.ok(&["graph", "list", "--tenant", "publisher-tenant"]);
    assert!(!graphs.stdout.contains("price_summary"), "{graphs}");
    ctl.fails(
        &[
            "graph",
            "status",
            "price_reactor",
            "--tenant",
            "publisher-tenant",
        ],
        3,
    );
}
both_backends!(cross_package_unload);

fn upgrade_with_a_run_in_flight(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::direct());
    let ctl = Ctl::new(&server);
    create_tenant(&server, "my-tenant");
    let v1 = upload(
        &ctl,
        &pack_example("hello-orders", home.path()),
        "my-tenant",
    );
    let (dir, library) = packages::example_as_version("hello-orders", "1.0.1");
    let v2_archive = home.path().join("hello-orders-1.0.1.cloacina");
    pack_to(&dir, &library, &v2_archive);

    // A slow run of the old version, started through the CLI with its context on stdin.
    let started = ctl.run_with_stdin(
        &[
            "workflow",
            "run",
            "orders",
            "--context",
            "-",
            "--tenant",
            "my-tenant",
        ],
        Some(br#"{"delay_ms": 3000}"#),
    );
    assert_eq!(started.code, 0, "{started}\n{}", server.logs());
    let slow = started.stdout.trim().to_string();

    // cloacinactl package upload my-package-1.0.1.cloacina --tenant my-tenant
    let v2 = upload(&ctl, &v2_archive, "my-tenant");
    assert_eq!(v2["version"], "1.0.1", "{v2}");
    let old = ctl.json(&["package", "inspect", &id(&v1)]);
    assert_eq!(old["state"], "superseded", "{old}");

    // New executions use the new version; the old one's run in flight completes.
    let fresh = ctl.ok(&["workflow", "run", "orders", "--tenant", "my-tenant"]);
    let fresh = fresh.stdout.trim().to_string();
    for run in [&slow, &fresh] {
        cloacina_e2e::wait_for(
            "the run completes",
            || {
                let s = ctl.json(&["execution", "status", run, "--tenant", "my-tenant"]);
                s["status"] == "Completed"
            },
            || server.logs(),
        );
    }
    // The run in flight finished on the old code, the new run ran the new code (a workflow's
    // version is its fingerprint), and the listing serves 1.0.1.
    let old_run = ctl.json(&["execution", "status", &slow, "--tenant", "my-tenant"]);
    let new_run = ctl.json(&["execution", "status", &fresh, "--tenant", "my-tenant"]);
    assert_ne!(
        old_run["workflow_version"], new_run["workflow_version"],
        "{old_run}\n{new_run}"
    );
    let listed = ctl.json(&["workflow", "list", "--tenant", "my-tenant"]);
    let versions: Vec<&Value> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|w| &w["version"])
        .collect();
    assert!(versions.iter().all(|v| *v == "1.0.1"), "{listed}");
}
both_backends!(upgrade_with_a_run_in_flight);

/// SQLite only: the fault is another process holding the tenant database's write lock (a
/// real lock, see `faults::SqliteLock`), so reads go on and step 6's delete fails after the
/// busy timeout, exactly as an unreachable database would fail it.
#[test]
fn partial_unload_recovery_sqlite() {
    let home = ServerHome::sqlite();
    let server = home.start(Start::direct());
    let ctl = Ctl::new(&server);
    create_tenant(&server, "my-tenant");
    let pkg = id(&upload(
        &ctl,
        &pack_example("scheduled-reports", home.path()),
        "my-tenant",
    ));
    let triggers = ctl.ok(&["trigger", "list", "--tenant", "my-tenant"]);
    for t in ["inbox_watch", "nightly_report"] {
        assert!(triggers.stdout.contains(t), "{t}: {triggers}");
    }
    ctl.ok(&["trigger", "inspect", "inbox_watch", "--tenant", "my-tenant"]);

    let lock = cloacina_e2e::faults::SqliteLock::hold(&home.path().join("tenants/my-tenant.db"));
    let failed = ctl.fails(
        &[
            "package",
            "delete",
            &pkg,
            "--tenant",
            "my-tenant",
            "--force",
        ],
        5,
    );
    assert!(failed.stderr.contains("step 6"), "{failed}");
    let partial = ctl.json(&["package", "inspect", &pkg]);
    assert_eq!(partial["state"], "partially_unloaded", "{partial}");
    drop(lock);

    // 1. Re-run the unload: steps already done are no-ops.
    let done = ctl.ok(&[
        "package",
        "delete",
        &pkg,
        "--tenant",
        "my-tenant",
        "--force",
    ]);
    assert!(done.stdout.contains("Unloaded scheduled-reports"), "{done}");

    // 2. Inspect runtime state: nothing of the package is left.
    let workflows = ctl.json(&["workflow", "list", "--tenant", "my-tenant"]);
    assert_eq!(workflows["items"], json!([]), "{workflows}");
    let graphs = ctl.json(&["graph", "list", "--tenant", "my-tenant"]);
    assert_eq!(graphs["items"], json!([]), "{graphs}");
    let accumulators = ctl.json(&["graph", "accumulators", "--tenant", "my-tenant"]);
    assert_eq!(accumulators["items"], json!([]), "{accumulators}");
    let triggers = ctl.json(&["trigger", "list", "--tenant", "my-tenant"]);
    assert_eq!(triggers["items"], json!([]), "{triggers}");
    ctl.fails(
        &["trigger", "inspect", "inbox_watch", "--tenant", "my-tenant"],
        3,
    );
    ctl.fails(&["package", "inspect", &pkg], 3);
}
