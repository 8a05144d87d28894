//! End-to-end: `cloacinactl tenant`, `key`, `status` and `admin cleanup-events` — the real
//! binary against a real `cloacina-server` on SQLite and PostgreSQL (a fresh database per
//! test).

use std::time::Duration;

use cloacina_e2e::both_backends;
use cloacina_e2e::ctl::Ctl;
use cloacina_e2e::home::pack_example;
use cloacina_e2e::server::{Backend, ServerHome, ServerProcess, Start};
use serde_json::{Value, json};

/// The `-o id` lines of a run.
fn ids(ctl: &Ctl<'_, '_>, args: &[&str]) -> Vec<String> {
    let mut all = args.to_vec();
    all.extend(["-o", "id"]);
    ctl.ok(&all)
        .stdout
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

fn str_of(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {v}"))
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Tenants and keys

fn tenants_and_keys(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::direct());
    let admin = Ctl::new(&server);

    // Tenants: create, list, delete (refused without a terminal unless --force).
    let created = admin.json(&["tenant", "create", "acme", "--description", "Acme Corp"]);
    assert_eq!(
        (str_of(&created, "name"), str_of(&created, "description")),
        ("acme".into(), "Acme Corp".into())
    );
    let listed = admin.ok(&["tenant", "list"]);
    assert!(
        listed.stdout.contains("NAME") && listed.stdout.contains("Acme Corp"),
        "{listed}"
    );
    assert_eq!(ids(&admin, &["tenant", "list"]), vec!["public", "acme"]);
    let refused = admin.fails(&["tenant", "delete", "acme"], 1);
    assert!(
        refused.stderr.contains("no terminal") && refused.stderr.contains("--force"),
        "{refused}"
    );
    assert!(ids(&admin, &["tenant", "list"]).contains(&"acme".to_string()));

    // Keys: the plaintext is shown once (table: clearly; -o id: the id; json: the document),
    // with a warning on stderr.
    let out = admin.ok(&["key", "create", "viewer"]);
    assert!(
        out.stdout.contains("key: clk_")
            && out.stdout.contains("read")
            && out.stderr.contains("cannot be retrieved later"),
        "{out}"
    );
    let out = admin.ok(&["key", "create", "ci", "--role", "write", "-o", "json"]);
    let ci = out.json();
    let (ci_id, ci_key) = (str_of(&ci, "id"), str_of(&ci, "key"));
    assert_eq!(str_of(&ci, "permissions"), "write");
    assert!(out.stderr.contains("cannot be retrieved later"), "{out}");
    let id_only = admin.ok(&["key", "create", "ops", "-o", "id"]);
    assert_eq!(id_only.stdout.trim().len(), 36, "{id_only}");

    let keys = admin.json(&["key", "list"]);
    let items = keys["items"].as_array().expect("items");
    assert!(items.iter().any(|k| k["id"] == ci["id"]), "{keys}");
    assert!(
        items.iter().all(|k| k.get("key").is_none()),
        "no plaintext: {keys}"
    );
    let table = admin.ok(&["key", "list"]);
    assert!(
        table.stdout.contains("ROLE")
            && table.stdout.contains(&ci_id)
            && !table.stdout.contains(&ci_key),
        "{table}"
    );

    // The new key works; it is not an admin (exit 4 on tenant verbs); revoked, it is refused.
    let as_ci = Ctl::with_key(&server, &ci_key);
    as_ci.ok(&["server", "status"]);
    as_ci.fails(&["tenant", "list"], 4);
    as_ci.fails(&["key", "list"], 4);
    admin.fails(&["key", "revoke", &ci_id], 1);
    as_ci.ok(&["server", "status"]);
    let revoked = admin.ok(&["key", "revoke", &ci_id, "--force"]);
    assert!(revoked.stdout.contains("revoked"), "{revoked}");
    as_ci.fails(&["server", "status"], 4);
    admin.fails(&["key", "revoke", "not-a-uuid", "--force"], 1);
    admin.fails(
        &[
            "key",
            "revoke",
            "00000000-0000-4000-8000-000000000000",
            "--force",
        ],
        3,
    );

    // A tenant's keys go through its own route; deleting the tenant revokes them.
    let t = admin.json(&[
        "--tenant",
        "acme",
        "key",
        "create",
        "acme-admin",
        "--role",
        "admin",
    ]);
    assert_eq!(str_of(&t, "tenant_id"), "acme");
    let acme_key = str_of(&t, "key");
    assert_eq!(
        ids(&admin, &["--tenant", "acme", "key", "list"]),
        vec![str_of(&t, "id")]
    );
    Ctl::with_key(&server, &acme_key).ok(&["--tenant", "acme", "key", "list"]);
    let removed = admin.ok(&["tenant", "delete", "acme", "--force"]);
    assert!(
        removed.stdout.contains("removed tenant 'acme'") && removed.stdout.contains("revoked keys"),
        "{removed}"
    );
    let doc = admin.json(&["tenant", "list"]);
    assert_eq!(doc["total"], 1, "{doc}");
    Ctl::with_key(&server, &acme_key).fails(&["server", "status"], 4);
    admin.fails(&["tenant", "delete", "acme", "--force"], 3);
}

both_backends!(tenants_and_keys);

// ---------------------------------------------------------------------------------------------
// status and admin cleanup-events

/// `(tenant, events)` of a cleanup run's JSON.
fn per_tenant(doc: &Value) -> Vec<(String, i64)> {
    doc["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| {
            (
                str_of(t, "tenant"),
                t["events"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("events in {doc}")),
            )
        })
        .collect()
}

fn event_count(server: &ServerProcess<'_>, tenant: &str, id: &str) -> usize {
    server.get_ok(&format!("/v1/tenants/{tenant}/executions/{id}/events"))["events"]
        .as_array()
        .expect("events")
        .len()
}

fn status_and_cleanup(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    // No compiler: point its probe at a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    std::fs::write(
        home.path().join("config.toml"),
        format!("[compiler]\nlocal_addr = \"{closed}\"\n"),
    )
    .expect("config.toml");
    let mut server = home.start(Start::direct());
    let admin = Ctl::new(&server);

    // status: the server up, the daemon and the compiler down, all three shown.
    let out = admin.ok(&["status"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[1].starts_with("daemon") && lines[1].contains("down"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("server")
            && lines[2].contains(" up ")
            && lines[2].contains(&server.url),
        "{out}"
    );
    assert!(
        lines[3].starts_with("compiler")
            && lines[3].contains("down")
            && lines[3].contains(&closed.to_string()),
        "{out}"
    );
    let doc = admin.json(&["status"]);
    assert_eq!(
        (
            &doc["daemon"]["status"],
            &doc["server"]["status"],
            &doc["compiler"]["status"]
        ),
        (&json!("down"), &json!("up"), &json!("down")),
        "{doc}"
    );
    assert!(doc["server"]["report"]["version"].is_string(), "{doc}");

    // Events in two tenants: run the example's `hello` in public and in acme.
    admin.ok(&["tenant", "create", "acme"]);
    let archive = std::fs::read(pack_example("hello-orders", home.path())).expect("archive");
    let mut runs = Vec::new();
    for tenant in ["public", "acme"] {
        let r = server.upload_raw(tenant, &archive);
        assert_eq!(r.status, 201, "{r}\n{}", server.logs());
        let id = server.execute(tenant, "hello", &json!({}));
        assert_eq!(server.wait_execution(tenant, &id)["status"], "Completed");
        assert!(event_count(&server, tenant, &id) > 0);
        runs.push((tenant, id));
    }
    std::thread::sleep(Duration::from_millis(1200));

    let url = home.database_url.clone();
    let cleanup = |extra: &[&str]| {
        let mut args = vec!["admin", "cleanup-events", "--database-url", &url];
        args.extend_from_slice(extra);
        admin.json(&args)
    };
    // Nothing is 90 days old; everything is older than 1s.
    let doc = cleanup(&["--dry-run"]);
    assert_eq!(doc["total"], 0, "{doc}");
    let doc = cleanup(&["--older-than", "1S", "--dry-run"]);
    let counts = per_tenant(&doc);
    assert_eq!(
        counts.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        vec!["public", "acme"],
        "{doc}"
    );
    assert!(counts.iter().all(|(_, n)| *n > 0), "{doc}");
    let would = doc["total"].as_i64().expect("total");
    for (tenant, id) in &runs {
        assert!(
            event_count(&server, tenant, id) > 0,
            "a dry run deletes nothing"
        );
    }
    let table = admin.ok(&[
        "admin",
        "cleanup-events",
        "--database-url",
        &url,
        "--older-than",
        "1s",
        "--dry-run",
    ]);
    assert!(
        table.stdout.contains("WOULD DELETE")
            && table
                .stdout
                .contains(&format!("would delete {would} events")),
        "{table}"
    );

    let doc = cleanup(&["--older-than", "1s"]);
    assert_eq!(doc["total"].as_i64(), Some(would), "{doc}");
    for (tenant, id) in &runs {
        assert_eq!(
            event_count(&server, tenant, id),
            0,
            "{tenant}: events deleted"
        );
    }
    assert_eq!(cleanup(&["--older-than", "1s", "--dry-run"])["total"], 0);

    // Bad input: the duration grammar is named; no database is a user error.
    for bad in ["0s", "5x", "1h1d"] {
        let out = admin.fails(
            &[
                "admin",
                "cleanup-events",
                "--database-url",
                &url,
                "--older-than",
                bad,
            ],
            1,
        );
        assert!(out.stderr.contains("e.g. 90d, 7d12h, 1d2h30m45s"), "{out}");
    }
    let out = admin.fails(&["admin", "cleanup-events"], 1);
    assert!(out.stderr.contains("--database-url"), "{out}");

    // With the server gone as well, nothing is up: exit 2, every row still printed.
    server.signal("TERM");
    server.wait_exit();
    let out = Ctl::new(&server).fails(&["status"], 2);
    assert_eq!(out.stdout.matches("down").count(), 3, "{out}");
}

both_backends!(status_and_cleanup);
