//! End-to-end: what the daemon serves when a watch folder holds several versions (or copies)
//! of one package, what the operator sees of each package (ids, states, errors), unreadable
//! folders and files that cannot be packages — with the real binaries.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use cloacina::package::archive;
use cloacina_e2e::home::{Home, pack_example, pack_to, package_names};
use cloacina_e2e::packages;
use serde_json::Value;

const GUARD: &str = "reactor 'price_reactor' has 2 bound subscriber(s): ['analyzer_v1', 'aggregator']; unbind them first";

/// Every fired instant seen so far, with the schedules that fired it: an instant fired by two
/// schedules (two versions of one package both loaded) fails the test.
#[derive(Default)]
struct Fires(HashMap<i64, HashSet<String>>);

impl Fires {
    fn sample(&mut self, home: &Home) {
        for f in home.cron_fires() {
            self.0
                .entry(f.instant)
                .or_default()
                .insert(f.schedule_id.to_string());
        }
        let doubled: Vec<_> = self.0.iter().filter(|(_, s)| s.len() > 1).collect();
        assert!(
            doubled.is_empty(),
            "cron instants fired twice: {doubled:?}\n{}",
            home.logs()
        );
        let rows = home.cron_schedules();
        assert!(
            rows.len() <= 1,
            "more than one cron schedule row for one schedule: {rows:?}\n{}",
            home.logs()
        );
    }

    /// How many instants the schedule `id` fired (as far as seen).
    fn of(&self, schedule: &str) -> usize {
        self.0.values().filter(|s| s.contains(schedule)).count()
    }
}

/// The status lines whose path ends with `file`.
fn line_for(status: &Value, file: &str) -> Option<Value> {
    status["packages"]
        .as_array()?
        .iter()
        .find(|p| p["path"].as_str().is_some_and(|x| x.ends_with(file)))
        .cloned()
}

fn state_of(status: &Value, file: &str) -> String {
    line_for(status, file)
        .and_then(|l| l["state"].as_str().map(String::from))
        .unwrap_or_default()
}

/// Whitespace collapsed, so wrapped table text compares with the one-line original.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The one schedule row's id and package id.
fn only_schedule(home: &Home) -> (String, String) {
    let rows = home.cron_schedules();
    assert_eq!(rows.len(), 1, "{rows:?}\n{}", home.logs());
    (rows[0].id.to_string(), rows[0].package_id.clone())
}

fn pack_heartbeat(out: &Path) {
    let ex = packages::example("heartbeat");
    pack_to(&ex.dir, &ex.library, out);
}

/// The unload guide's upgrade recipe — `mv heartbeat-1.0.1.cloacina` into the folder while
/// 1.0.0 is still there — serves 1.0.1 only (1.0.0 superseded, one log line naming both
/// files); removing 1.0.1 falls back to 1.0.0, whose cron keeps firing; a copy under another
/// name is superseded too. No cron instant ever fires twice, and there is never more than one
/// schedule row.
#[test]
fn upgrade_recipe_serves_one_version_and_falls_back() {
    let (v101_dir, v101_lib) = packages::example_as_version("heartbeat", "1.0.1");
    let mut home = Home::new();
    std::fs::create_dir_all(home.packages_dir()).expect("packages dir");
    pack_heartbeat(&home.packages_dir().join("heartbeat-1.0.0.cloacina"));
    home.start(&[]);
    let mut fires = Fires::default();
    home.wait_for("1.0.0 loaded and firing", |h| {
        fires.sample(h);
        state_of(&h.status(), "heartbeat-1.0.0.cloacina") == "loaded" && !fires.0.is_empty()
    });
    let (_, v100_id) = only_schedule(&home);

    // The recipe: built elsewhere, moved in beside the old version.
    let outside = home.path().join("heartbeat-1.0.1.cloacina");
    pack_to(&v101_dir, &v101_lib, &outside);
    std::fs::rename(
        &outside,
        home.packages_dir().join("heartbeat-1.0.1.cloacina"),
    )
    .expect("mv");
    home.wait_for("1.0.1 served, 1.0.0 superseded", |h| {
        fires.sample(h);
        let s = h.status();
        state_of(&s, "heartbeat-1.0.1.cloacina") == "loaded"
            && state_of(&s, "heartbeat-1.0.0.cloacina") == "superseded"
    });
    let s = home.status();
    assert_eq!(s["health"], "healthy", "{s}");
    assert_eq!(s["packages_loaded"], 1, "{s}");
    let old = line_for(&s, "heartbeat-1.0.0.cloacina").expect("old line");
    let new = line_for(&s, "heartbeat-1.0.1.cloacina").expect("new line");
    assert_eq!(old["id"], v100_id.as_str(), "{s}");
    assert!(
        old["superseded_by"]
            .as_str()
            .is_some_and(|b| b.contains("heartbeat-1.0.1.cloacina") && b.contains("1.0.1")),
        "{s}"
    );
    let new_id = new["id"].as_str().expect("id").to_string();
    assert_eq!(new_id.len(), 36, "a UUID: {new_id}");
    let logs = home.logs();
    let superseded: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("package superseded"))
        .collect();
    assert_eq!(superseded.len(), 1, "said once: {logs}");
    assert!(
        superseded[0].contains("heartbeat-1.0.0.cloacina")
            && superseded[0].contains("heartbeat-1.0.1.cloacina")
            && superseded[0].contains(&format!("package_id={v100_id}")),
        "{logs}"
    );
    // Every line about the new version carries its id, the loader's included.
    let tagged: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(&format!("package_id={new_id}")))
        .collect();
    for what in ["package library loaded", "package loaded"] {
        assert!(
            tagged.iter().any(|l| l.contains(what)),
            "no '{what}' line with package_id={new_id}: {logs}"
        );
    }
    let json = home.json_log();
    assert!(
        json.lines()
            .any(|l| l.contains("package library loaded") && l.contains(&new_id)),
        "{json}"
    );

    // The new version's cron fires, each instant once.
    let (schedule, owner) = only_schedule(&home);
    assert_eq!(owner, new_id);
    home.wait_for("1.0.1's cron fires three instants", |h| {
        fires.sample(h);
        fires.of(&schedule) >= 3
    });

    // Removing the served file falls back to 1.0.0, whose cron keeps firing.
    std::fs::remove_file(home.packages_dir().join("heartbeat-1.0.1.cloacina")).expect("rm");
    home.wait_for("back to 1.0.0", |h| {
        fires.sample(h);
        let s = h.status();
        state_of(&s, "heartbeat-1.0.0.cloacina") == "loaded"
            && line_for(&s, "heartbeat-1.0.1.cloacina").is_none()
    });
    let (schedule, owner) = only_schedule(&home);
    assert_eq!(owner, v100_id);
    home.wait_for("1.0.0's cron fires again", |h| {
        fires.sample(h);
        fires.of(&schedule) >= 2
    });

    // A copy of the served archive under another name: the same package id, superseded.
    std::fs::copy(
        home.packages_dir().join("heartbeat-1.0.0.cloacina"),
        home.packages_dir().join("copy-of-heartbeat.cloacina"),
    )
    .expect("cp");
    home.wait_for("the copy is superseded", |h| {
        fires.sample(h);
        state_of(&h.status(), "copy-of-heartbeat.cloacina") == "superseded"
    });
    let s = home.status();
    assert_eq!(s["packages_loaded"], 1, "{s}");
    assert_eq!(
        line_for(&s, "copy-of-heartbeat.cloacina").expect("copy")["id"],
        v100_id.as_str()
    );
    let before = fires.of(&schedule);
    home.wait_for("still firing, once per instant", |h| {
        fires.sample(h);
        fires.of(&schedule) >= before + 2
    });
    let stop = home.ctl(&["daemon", "stop"]);
    assert!(stop.status.success(), "{}", home.context(&stop));
}

/// Removing a publisher whose reactor a subscriber is bound to is refused: the status shows
/// `unload_refused` with the guard's text, the removed path marked, health degraded — in JSON
/// and in the table.
#[test]
fn refused_unload_is_its_own_state() {
    let mut home = Home::new();
    std::fs::create_dir_all(home.packages_dir()).expect("packages dir");
    let publisher = pack_example("price-publisher", &home.packages_dir());
    pack_example("price-subscriber", &home.packages_dir());
    home.start(&[]);
    home.wait_for("both loaded", |h| h.status()["packages_loaded"] == 2);
    std::fs::remove_file(&publisher).expect("rm");
    home.wait_for("the publisher's unload is refused", |h| {
        state_of(&h.status(), "price-publisher.cloacina") == "unload_refused"
    });
    let s = home.status();
    let line = line_for(&s, "price-publisher.cloacina").expect("publisher");
    assert_eq!(line["last_error"], GUARD, "{s}");
    assert_eq!(line["path_missing"], true, "{s}");
    assert_eq!(s["health"], "degraded", "{s}");
    let table = home.ctl(&["--no-color", "daemon", "status"]);
    let text = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        text.contains("unload_refused") && text.contains("price-publisher.cloacina (removed)"),
        "{text}"
    );
    assert!(squeeze(&text).contains(GUARD), "{text}");
    let refusals = home
        .logs()
        .lines()
        .filter(|l| l.contains("unload refused"))
        .count();
    assert_eq!(refusals, 1, "said once: {}", home.logs());

    // The subscriber goes too: both unloaded, healthy again.
    std::fs::remove_file(home.packages_dir().join("price-subscriber.cloacina")).expect("rm");
    home.wait_for("both unloaded", |h| {
        let s = h.status();
        s["packages"].as_array().is_some_and(|a| a.is_empty()) && s["health"] == "healthy"
    });
}

/// Publisher and subscriber removed together (their folder goes away in one rename) are both
/// unloaded, subscriber first: no refusal is logged at all.
#[test]
fn removing_publisher_and_subscriber_together_refuses_nothing() {
    let mut home = Home::new();
    let extra = home.path().join("extra");
    std::fs::create_dir_all(&extra).expect("extra dir");
    pack_example("price-publisher", &extra);
    pack_example("price-subscriber", &extra);
    home.start(&["--watch-dir", &extra.display().to_string()]);
    home.wait_for("both loaded", |h| h.status()["packages_loaded"] == 2);
    std::fs::rename(&extra, home.path().join("gone")).expect("mv the folder away");
    home.wait_for("both unloaded", |h| {
        h.status()["packages"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    });
    let logs = home.logs();
    assert!(!logs.contains("unload refused"), "{logs}");
    assert!(!logs.contains(" ERROR "), "{logs}");
    assert_eq!(home.status()["health"], "healthy");
}

/// A watch folder that cannot be read (here replaced by a regular file: root ignores
/// permission bits) keeps its packages loaded and firing, reported as an error with health
/// degraded; once the path is really gone, its packages are unloaded.
#[test]
fn unreadable_folder_keeps_its_packages() {
    let mut home = Home::new();
    let extra = home.path().join("extra");
    std::fs::create_dir_all(&extra).expect("extra dir");
    pack_heartbeat(&extra.join("heartbeat.cloacina"));
    home.start(&["--watch-dir", &extra.display().to_string()]);
    let mut fires = Fires::default();
    home.wait_for("heartbeat loaded and firing", |h| {
        fires.sample(h);
        h.status()["packages_loaded"] == 1 && !fires.0.is_empty()
    });
    let (schedule, _) = only_schedule(&home);

    std::fs::rename(&extra, home.path().join("moved")).expect("mv");
    std::fs::write(&extra, b"not a folder").expect("a file in its place");
    home.wait_for("the folder error is reported", |h| {
        h.status()["folder_errors"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    let s = home.status();
    assert_eq!(s["health"], "degraded", "{s}");
    assert_eq!(s["packages_loaded"], 1, "kept: {s}");
    assert!(
        s["folder_errors"][0]
            .as_str()
            .is_some_and(|e| e.contains(&extra.display().to_string())),
        "{s}"
    );
    let before = fires.of(&schedule);
    home.wait_for("its cron keeps firing", |h| {
        fires.sample(h);
        fires.of(&schedule) >= before + 2
    });
    assert_eq!(only_schedule(&home).0, schedule);
    let table = home.ctl(&["--no-color", "daemon", "status"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("folder error: cannot read watch folder"),
        "{}",
        home.context(&table)
    );

    // Really gone: its packages go.
    std::fs::remove_file(&extra).expect("rm");
    home.wait_for("unloaded, healthy", |h| {
        let s = h.status();
        s["packages_loaded"] == 0 && s["health"] == "healthy"
    });
    assert!(home.cron_schedules().is_empty());
}

/// A failed package shows the name and version its manifest states, its path and the whole
/// error (JSON and table); a 4 GiB file named `.cloacina` fails at once, naming the limit,
/// without delaying the others.
#[test]
fn failed_packages_are_shown_in_full_and_huge_files_do_not_block() {
    let mut home = Home::new();
    let dir = home.packages_dir();
    std::fs::create_dir_all(&dir).expect("packages dir");
    pack_heartbeat(&dir.join("heartbeat.cloacina"));
    let junk = home.path().join(archive::library_file_name("hello-orders"));
    std::fs::write(&junk, b"not a shared library").expect("junk library");
    pack_to(
        &packages::example("hello-orders").dir,
        &junk,
        &dir.join("broken-orders.cloacina"),
    );
    let huge = std::fs::File::create(dir.join("huge.cloacina")).expect("create");
    huge.set_len(4 << 30).expect("a sparse 4 GiB file");
    drop(huge);

    let started = Instant::now();
    home.start(&[]);
    home.wait_for("heartbeat loaded, the others failed", |h| {
        let s = h.status();
        state_of(&s, "heartbeat.cloacina") == "loaded"
            && state_of(&s, "broken-orders.cloacina") == "failed"
            && state_of(&s, "huge.cloacina") == "failed"
    });
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let s = home.status();
    assert_eq!(s["health"], "degraded");
    let broken = line_for(&s, "broken-orders.cloacina").expect("broken");
    assert_eq!(
        (broken["name"].as_str(), broken["version"].as_str()),
        (Some("hello-orders"), Some("1.0.0")),
        "from the manifest: {s}"
    );
    let error = broken["last_error"].as_str().expect("error").to_string();
    let huge_line = line_for(&s, "huge.cloacina").expect("huge");
    let huge_error = huge_line["last_error"].as_str().unwrap_or_default();
    assert!(
        huge_error.contains("huge.cloacina") && huge_error.contains("MAX_ARCHIVE_BYTES"),
        "{s}"
    );
    let table = home.ctl(&["--no-color", "daemon", "status"]);
    let text = String::from_utf8_lossy(&table.stdout).to_string();
    let flat = squeeze(&text);
    assert!(flat.contains(&squeeze(&error)), "the whole error: {text}");
    assert!(flat.contains(&squeeze(huge_error)), "{text}");
    assert!(
        text.contains("hello-orders") && text.contains("broken-orders.cloacina"),
        "{text}"
    );
    assert_eq!(huge_line["name"], "(unreadable)", "{s}");
    assert!(
        package_names(&s).contains(&("heartbeat".to_string(), "loaded".to_string())),
        "{s}"
    );
}

/// Package ids are UUIDs stable across restarts; cron rows a daemon stored under the old id
/// scheme (the archive's SHA-256) are swept before the first load and never fire beside the
/// new rows.
#[test]
fn ids_are_stable_and_old_scheme_rows_never_fire() {
    let mut home = Home::new();
    let file = home.packages_dir().join("heartbeat.cloacina");
    std::fs::create_dir_all(home.packages_dir()).expect("packages dir");
    pack_heartbeat(&file);
    let sha = archive::sha256_file(&file).expect("sha");
    // What a daemon of the old id scheme left behind.
    home.with_store(async |s: &cloacina::Store| {
        s.cron_schedule_write(
            &sha,
            "public",
            vec![cloacina::store::NewCronSchedule {
                name: "every_second".into(),
                workflow: "beat".into(),
                expression: "* * * * * *".into(),
                timezone: "UTC".into(),
                catch_up: cloacina::workflow::CatchUp::Skip,
                next_run_at: cloacina::store::now_ms() - 5_000,
            }],
        )
        .await
        .expect("old row")
    });
    home.start(&[]);
    let mut fires = Fires::default();
    home.wait_for("loaded and firing three instants", |h| {
        fires.sample(h);
        h.status()["packages_loaded"] == 1 && fires.0.len() >= 3
    });
    let id = home.status()["packages"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_ne!(id, sha);
    assert_eq!(only_schedule(&home).1, id);
    let stop = home.ctl(&["daemon", "stop"]);
    assert!(stop.status.success(), "{}", home.context(&stop));
    home.exit_code();
    home.start(&[]);
    home.wait_for("loaded again", |h| h.status()["packages_loaded"] == 1);
    assert_eq!(home.status()["packages"][0]["id"], id.as_str());
    assert_eq!(only_schedule(&home).1, id);
}
