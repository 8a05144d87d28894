//! Scale-out: two real `cloacina-server` processes (replicas) sharing ONE PostgreSQL database,
//! each with its own home and port and the same bootstrap key. What a user of a replicated
//! deployment relies on: an upload through one replica is served by every replica, work is done
//! exactly once whichever replica took the request, cron instants and trigger polls happen once
//! per cluster (not once per replica), a revoked key is refused everywhere at once, and a
//! tenant created through one replica is usable through the other.
//!
//! Each test gets a fresh database (created with `psql`, dropped at the end) at
//! `CLOACINA_TEST_POSTGRES_URL`'s server; without PostgreSQL the tests are skipped, except under
//! `CI=true`, where they fail. The tests run one at a time: each starts two servers with their
//! runtimes, and the machine is small.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use cloacina_e2e::replicas::{Database, Replica, wait_ok};
use cloacina_e2e::{home::pack_example, wait_for};
use serde_json::json;

/// One test at a time (two servers each on a two-core machine).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Replicas on one fresh database, the bootstrap key they share, and a scratch directory for
/// archives. Fields drop in order: the servers stop before the database is dropped.
struct Cluster {
    replicas: Vec<Replica>,
    db: Database,
    key: String,
    scratch: tempfile::TempDir,
}

impl Cluster {
    /// `n` replicas on a fresh database, started one after the other (the first migrates the
    /// database and records the bootstrap key; the others find both). `None`: skipped.
    fn start(test: &str, n: usize) -> Option<Cluster> {
        let db = Database::create(test)?;
        let key = cloacina::auth::key_generate().plaintext;
        let names = ["A", "B", "C"];
        let replicas = names[..n]
            .iter()
            .map(|name| Replica::start(name, &db, &key))
            .collect();
        Some(Cluster {
            replicas,
            db,
            key,
            scratch: tempfile::tempdir().expect("scratch dir"),
        })
    }

    fn a(&self) -> &Replica {
        &self.replicas[0]
    }

    fn b(&self) -> &Replica {
        &self.replicas[1]
    }

    /// Every replica's recent logs.
    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(Replica::logs)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Example `name` packed into the scratch directory.
    fn archive(&self, name: &'static str) -> PathBuf {
        pack_example(name, self.scratch.path())
    }

    /// Uploads example `name` to `public` through replica A; the package id.
    fn upload_to_a(&self, name: &'static str) -> String {
        let archive = self.archive(name);
        let (status, body) = self.a().upload("public", &archive, &self.key);
        assert_eq!(status, 201, "upload {name} to A: {body}\n{}", self.logs());
        body["package_id"]
            .as_str()
            .expect("a package id")
            .to_string()
    }

    /// Waits until every replica serves `workflow` in `public`.
    fn wait_served_everywhere(&self, workflow: &str) {
        for r in &self.replicas {
            wait_for(
                &format!("replica {} serves workflow {workflow}", r.name),
                || r.workflows("public", &self.key).contains(workflow),
                || self.logs(),
            );
        }
    }

    /// Waits until none of `ids` is unfinished; their statuses.
    fn wait_finished(&self, ids: &[String]) -> BTreeMap<String, String> {
        let list = ids
            .iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!("SELECT id, status FROM workflow_executions WHERE id IN ({list})");
        wait_ok(&format!("{} executions finish", ids.len()), || {
            let statuses: BTreeMap<String, String> = self
                .db
                .rows(&sql)
                .into_iter()
                .map(|r| (r[0].clone(), r[1].clone()))
                .collect();
            let finished = statuses.len() == ids.len()
                && statuses
                    .values()
                    .all(|s| matches!(s.as_str(), "Completed" | "Failed" | "Cancelled"));
            if finished {
                Ok(statuses)
            } else {
                Err(format!("statuses: {statuses:?}\n{}", self.logs()))
            }
        })
    }
}

macro_rules! cluster {
    ($test:expr, $n:expr) => {
        match Cluster::start($test, $n) {
            Some(c) => c,
            None => return,
        }
    };
}

/// An upload through A is served by B and C within a few seconds (they list it; B runs it); a
/// delete through A makes B and C stop serving it.
#[test]
fn an_upload_to_one_replica_is_served_by_every_replica_and_a_delete_everywhere() {
    let _serial = serial();
    let c = cluster!("upload", 3);
    let (a, b) = (c.a(), c.b());
    let package = c.upload_to_a("hello-orders");
    assert!(
        a.workflows("public", &c.key).contains("hello"),
        "A serves its own upload at once"
    );
    c.wait_served_everywhere("hello");
    assert_eq!(
        b.workflows("public", &c.key),
        BTreeSet::from(["hello".to_string(), "orders".to_string()]),
        "B serves the package's workflows"
    );

    let id = b.execute("public", "hello", &c.key, json!({ "name": "replica B" }));
    let statuses = c.wait_finished(std::slice::from_ref(&id));
    assert_eq!(statuses[&id], "Completed", "{}", c.logs());
    let (status, detail) = b.get(&format!("/v1/tenants/public/executions/{id}"), &c.key);
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        detail["result"]["greeting"], "hello, replica B",
        "the run's result: {detail}"
    );

    let (status, deleted) = a.delete(&format!("/v1/packages/{package}"), &c.key);
    assert_eq!(status, 200, "delete on A: {deleted}\n{}", c.logs());
    assert_eq!(deleted["status"], "unloaded", "{deleted}");
    for r in &c.replicas[1..] {
        wait_for(
            &format!(
                "replica {} stops serving the deleted package's workflows",
                r.name
            ),
            || r.workflows("public", &c.key).is_empty(),
            || c.logs(),
        );
    }
    let (status, refused) = b.post(
        "/v1/tenants/public/workflows/hello/execute",
        &c.key,
        json!({}),
    );
    assert_eq!(
        status, 404,
        "B refuses to run a deleted workflow: {refused}"
    );
    assert_eq!(refused["code"], "workflow_not_found", "{refused}");
    assert!(a.workflows("public", &c.key).is_empty(), "A stopped too");
}

/// The pid of the runner a `task_claimed` event's message names (`leased to server-<id>/<pid>-…`).
fn claimer_pid(message: &str) -> Option<u32> {
    // A server's runners claim as `server-<instance id>/<pid>-<token>/<runner>`.
    let owner = message.split("leased to ").nth(1)?.split(' ').next()?;
    let process = owner.split('/').nth(1)?;
    process.split('-').next()?.parse().ok()
}

/// Executions submitted alternately to A and B each run exactly once: every one Completed,
/// every task Completed with exactly one `task_completed` event (for its last attempt) and one
/// claim per attempt, and every claim made by one of the two replicas.
#[test]
fn executions_submitted_to_both_replicas_each_run_exactly_once() {
    let _serial = serial();
    let c = cluster!("once", 2);
    c.upload_to_a("hello-orders");
    c.wait_served_everywhere("orders");

    const N: usize = 60;
    let ids: Vec<String> = (0..N)
        .map(|i| {
            let replica = &c.replicas[i % 2];
            replica.execute(
                "public",
                "orders",
                &c.key,
                json!({ "run_id": format!("run-{i}") }),
            )
        })
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), N, "every submission got its own execution");
    let statuses = c.wait_finished(&ids);
    let not_completed: Vec<_> = statuses.iter().filter(|(_, s)| *s != "Completed").collect();
    assert!(
        not_completed.is_empty(),
        "every execution completed: {not_completed:?}\n{}",
        c.logs()
    );

    let list = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let tasks = c.db.rows(&format!(
        "SELECT execution_id, task_id, status, attempt FROM task_executions \
         WHERE execution_id IN ({list})"
    ));
    assert_eq!(tasks.len(), N * 4, "four task rows per run of orders");
    let events = c.db.rows(&format!(
        "SELECT execution_id, COALESCE(task_id, ''), kind, COALESCE(attempt, 0), \
         COALESCE(message, '') FROM execution_events WHERE execution_id IN ({list})"
    ));
    let mut claimers: BTreeMap<u32, usize> = BTreeMap::new();
    for task in &tasks {
        let (exec, task_id, status, attempt) = (&task[0], &task[1], &task[2], &task[3]);
        let attempt: i64 = attempt.parse().expect("attempt");
        assert_eq!(status, "Completed", "task {exec}/{task_id}");
        let mine: Vec<&Vec<String>> = events
            .iter()
            .filter(|e| &e[0] == exec && &e[1] == task_id)
            .collect();
        let of_kind = |kind: &str| -> Vec<i64> {
            mine.iter()
                .filter(|e| e[2] == kind)
                .map(|e| e[3].parse().expect("event attempt"))
                .collect()
        };
        assert_eq!(
            of_kind("task_completed"),
            vec![attempt],
            "task {exec}/{task_id} completed exactly once, at its last attempt {attempt}: {mine:?}"
        );
        let mut claims = of_kind("task_claimed");
        claims.sort_unstable();
        assert_eq!(
            claims,
            (1..=attempt).collect::<Vec<_>>(),
            "task {exec}/{task_id}: one claim per attempt: {mine:?}"
        );
        if task_id != "check_stock" {
            assert!(
                of_kind("task_failed").is_empty(),
                "task {exec}/{task_id} never failed: {mine:?}"
            );
        }
        for e in mine.iter().filter(|e| e[2] == "task_claimed") {
            let pid = claimer_pid(&e[4])
                .unwrap_or_else(|| panic!("a claim names its runner: {:?}", e[4]));
            *claimers.entry(pid).or_default() += 1;
        }
    }
    for exec in &ids {
        let completed = events
            .iter()
            .filter(|e| &e[0] == exec && e[2] == "execution_completed")
            .count();
        assert_eq!(completed, 1, "execution {exec} completed once");
    }
    let replicas: BTreeSet<u32> = c.replicas.iter().map(Replica::pid).collect();
    assert!(
        claimers.keys().all(|p| replicas.contains(p)),
        "every claim was made by a replica ({replicas:?}): {claimers:?}"
    );
    eprintln!("claims per replica pid: {claimers:?} (replicas {replicas:?})");
}

/// With every replica serving `heartbeat` (cron every second), each instant of the schedule
/// is fired exactly once: one `cron_fires` row and one `beat` execution per instant, the
/// execution's input naming that instant, and the instants consecutive seconds (any gap is
/// counted as missed by the schedule).
#[test]
fn a_cron_instant_fires_once_across_replicas() {
    let _serial = serial();
    let c = cluster!("cron", 2);
    c.upload_to_a("heartbeat");
    c.wait_served_everywhere("beat");
    let served_since =
        c.db.count("SELECT COALESCE(MAX(instant), 0) FROM cron_fires");
    wait_for(
        "six cron instants fire while both replicas serve the schedule",
        || {
            c.db.count(&format!(
                "SELECT count(*) FROM cron_fires WHERE instant > {served_since}"
            )) >= 6
        },
        || c.logs(),
    );
    let instants = c.db.beat_instants(&c.logs());
    assert!(instants.len() >= 6, "{instants:?}");
    assert!(
        instants.iter().all(|i| i % 1000 == 0),
        "instants are whole seconds: {instants:?}"
    );
    let span = (instants[instants.len() - 1] - instants[0]) / 1000 + 1;
    let missed =
        c.db.count("SELECT COALESCE(SUM(missed_count), 0) FROM cron_schedules");
    assert!(
        instants.len() as i64 + missed >= span,
        "every second between the first and last fire fired once or was counted missed: \
         {} fires over {span} s, {missed} missed: {instants:?}",
        instants.len()
    );
}

/// A key created through A works on B; once revoked through A, B refuses it on the very next
/// request.
#[test]
fn a_key_revoked_on_one_replica_is_refused_by_the_other_at_once() {
    let _serial = serial();
    let c = cluster!("revoke", 2);
    let (a, b) = (c.a(), c.b());
    let (status, created) = a.post(
        "/v1/auth/keys",
        &c.key,
        json!({ "name": "ci", "role": "write" }),
    );
    assert_eq!(status, 201, "{created}");
    let key = created["key"]
        .as_str()
        .expect("the plaintext key")
        .to_string();
    let id = created["id"].as_str().expect("the key id").to_string();

    let (status, who) = b.get("/v1/auth/whoami", &key);
    assert_eq!(status, 200, "B accepts a key created on A: {who}");
    assert_eq!(who["tenant_id"], "public", "{who}");
    assert_eq!(b.get("/v1/tenants/public/workflows", &key).0, 200);

    let (status, revoked) = a.delete(&format!("/v1/auth/keys/{id}"), &c.key);
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    let (status, refused) = b.get("/v1/tenants/public/workflows", &key);
    assert_eq!(
        status, 401,
        "B's very next request with the revoked key: {refused}"
    );
    assert_eq!(refused["code"], "revoked_api_key", "{refused}");
    let (status, refused) = a.get("/v1/auth/whoami", &key);
    assert_eq!((status, &refused["code"]), (401, &json!("revoked_api_key")));
    assert_eq!(
        b.get("/v1/auth/whoami", &c.key).0,
        200,
        "the bootstrap key still works on B"
    );
}

/// A tenant created through A is usable through B within the reconcile interval: a key made
/// for it on A uploads to it through B, and A lists the upload's workflows.
#[test]
fn a_tenant_created_on_one_replica_is_usable_on_the_other() {
    let _serial = serial();
    let c = cluster!("tenant", 2);
    let (a, b) = (c.a(), c.b());
    let (status, tenant) = a.post(
        "/v1/tenants",
        &c.key,
        json!({ "name": "acme", "description": "made on A" }),
    );
    assert_eq!(status, 201, "{tenant}\n{}", c.logs());
    let (status, created) = a.post(
        "/v1/tenants/acme/keys",
        &c.key,
        json!({ "name": "acme-ci", "role": "write" }),
    );
    assert_eq!(status, 201, "{created}");
    let acme_key = created["key"]
        .as_str()
        .expect("the plaintext key")
        .to_string();
    assert_eq!(created["tenant_id"], "acme", "{created}");

    let archive = c.archive("hello-orders");
    let uploaded = wait_ok("B accepts an upload to tenant acme", || {
        let (status, body) = b.upload("acme", &archive, &acme_key);
        if status == 201 {
            Ok(body)
        } else {
            Err(format!("last answer: {status} {body}\n{}", c.logs()))
        }
    });
    assert_eq!(uploaded["tenant_id"], "acme", "{uploaded}");
    wait_for(
        "A serves acme's workflows",
        || a.workflows("acme", &acme_key).contains("hello"),
        || c.logs(),
    );
    assert!(
        b.workflows("acme", &acme_key).contains("hello"),
        "B serves its own upload"
    );
    assert!(
        a.workflows("public", &c.key).is_empty(),
        "the upload went to acme only"
    );
    let id = a.execute("acme", "hello", &acme_key, json!({ "name": "acme" }));
    let detail = wait_ok("acme's run completes (read through B)", || {
        let (status, body) = b.get(&format!("/v1/tenants/acme/executions/{id}"), &acme_key);
        if status == 200 && body["status"] == "Completed" {
            Ok(body)
        } else {
            Err(format!("last answer: {status} {body}\n{}", c.logs()))
        }
    });
    assert_eq!(detail["result"]["greeting"], "hello, acme", "{detail}");
}

/// The 5 s poll slot of `inbox_watch`'s last poll on `r` (`YYYY-MM-DDTHH:MM/n`, n the
/// minute's fifth), read from its `next_run_at` (last poll + the 5 s interval): slots start at
/// multiples of 5 s since the epoch, so whole seconds decide the slot.
fn trigger_poll_slot(r: &Replica, key: &str) -> Option<String> {
    let (_, list) = r.get("/v1/tenants/public/triggers", key);
    let next = list["items"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == "inbox_watch")?["next_run_at"]
        .as_str()?
        .to_string();
    let minute = next.get(..16)?;
    let second: u32 = next.get(17..19)?.parse().ok()?;
    Some(format!("{minute}/{}", second / 5))
}

/// With every replica serving `scheduled-reports` (trigger `inbox_watch`, polled every 5 s,
/// firing on every other poll of the process that polls), the trigger is polled once per
/// interval by the cluster, not once per replica: no poll slot is ever seen polled by both
/// replicas, and the runs started number at most half the slots claimed, plus one per
/// replica.
#[test]
fn a_trigger_is_polled_once_per_interval_across_replicas() {
    let _serial = serial();
    let c = cluster!("trigger", 2);
    c.upload_to_a("scheduled-reports");
    c.wait_served_everywhere("report");
    for r in &c.replicas {
        wait_for(
            &format!("replica {} polls inbox_watch", r.name),
            || {
                let (_, list) = r.get("/v1/tenants/public/triggers", &c.key);
                list["items"].as_array().is_some_and(|items| {
                    items
                        .iter()
                        .any(|t| t["name"] == "inbox_watch" && t["enabled"] == true)
                })
            },
            || c.logs(),
        );
    }
    let slots_sql = "SELECT count(*) FROM trigger_polls \
                     WHERE tenant = 'public' AND trigger_name = 'report:inbox_watch'";
    // Each replica's view shows its own last poll (as `next_run_at`, one interval later):
    // sampled through the window, no slot may ever show up on both replicas.
    let mut seen: Vec<BTreeSet<String>> = vec![BTreeSet::new(); c.replicas.len()];
    wait_ok("six poll slots pass", || {
        for (i, r) in c.replicas.iter().enumerate() {
            if let Some(slot) = trigger_poll_slot(r, &c.key) {
                seen[i].insert(slot);
            }
        }
        let slots = c.db.count(slots_sql);
        if slots >= 6 {
            Ok(())
        } else {
            Err(format!(
                "{slots} slots so far; polled: {seen:?}\n{}",
                c.logs()
            ))
        }
    });
    let shared: BTreeSet<&String> = seen[0].intersection(&seen[1]).collect();
    assert!(
        shared.is_empty(),
        "poll slots polled by both replicas: {shared:?} (A: {:?}, B: {:?})",
        seen[0],
        seen[1]
    );
    eprintln!("poll slots seen: A {:?}, B {:?}", seen[0], seen[1]);
    // Runs first, slots after: a run counted here comes from a slot counted below.
    let fires = c.db.count(
        "SELECT count(*) FROM workflow_executions e \
         JOIN contexts c ON c.execution_id = e.id AND c.owner = '/input' \
         WHERE e.workflow_name = 'report' AND c.data::json->>'source' = 'inbox'",
    );
    let slots = c.db.count(slots_sql);
    let replicas = c.replicas.len() as i64;
    assert!(fires >= 1, "the trigger fired: {fires}\n{}", c.logs());
    assert!(
        2 * fires <= slots + replicas,
        "{fires} runs from {slots} poll slots: some slot was polled by more than one replica\n{}",
        c.logs()
    );
}

/// Replicas started at the same moment on a fresh database all come up: one migrates (the
/// others wait on its lock) and the shared bootstrap key is recorded once, the others
/// accepting it as already there.
#[test]
fn replicas_started_together_on_a_fresh_database_all_come_up() {
    let _serial = serial();
    let Some(db) = Database::create("together") else {
        return;
    };
    let key = cloacina::auth::key_generate().plaintext;
    let mut replicas: Vec<Replica> = ["A", "B", "C"]
        .into_iter()
        .map(|name| Replica::spawn(name, &db, &key))
        .collect();
    for r in &mut replicas {
        r.wait_ready();
    }
    for r in &replicas {
        let (status, who) = r.get("/v1/auth/whoami", &key);
        assert_eq!(
            status, 200,
            "replica {} accepts the bootstrap key: {who}",
            r.name
        );
    }
    assert_eq!(
        db.count("SELECT count(*) FROM api_keys"),
        1,
        "the bootstrap key is recorded once"
    );
    drop(replicas);
}
