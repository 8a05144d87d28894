//! End-to-end: packages through the real `cloacina-server` over HTTP, on SQLite and
//! PostgreSQL (a fresh database per test): upload (multipart and raw), inspect, run, events
//! (list, `since`, the SSE stream and its resumption), duplicates, source-only and broken
//! archives, delete; the unload guide's recipes (the cross-package guard, a dry run, an
//! upgrade with no gap).

use std::io::Write as _;
use std::path::Path;

use cloacina::package::archive;
use cloacina_e2e::both_backends;
use cloacina_e2e::home::{pack_example, pack_to};
use cloacina_e2e::packages;
use cloacina_e2e::server::{Backend, ServerHome, ServerProcess, Start};
use serde_json::{Value, json};

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read archive")
}

/// Uploads `bytes` raw, which must answer 201; the answer's JSON.
fn upload_ok(server: &ServerProcess<'_>, bytes: &[u8]) -> Value {
    let r = server.upload_raw("public", bytes);
    assert_eq!(r.status, 201, "{r}\n{}", server.logs());
    r.json()
}

fn id_of(v: &Value) -> String {
    v["package_id"].as_str().expect("package_id").to_string()
}

/// `(name, version, state)` of every package the admin sees.
fn package_states(server: &ServerProcess<'_>) -> Vec<(String, String, String)> {
    let list = server.get_ok("/v1/packages");
    let mut out: Vec<_> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["version"].as_str().unwrap_or_default().to_string(),
                p["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// 2. Packages

fn upload_run_stream_and_delete(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::ctl());
    let archive = pack_example("hello-orders", home.path());
    let bytes = read(&archive);
    assert_eq!(server.get_ok("/v1/packages")["total"], 0);

    // Multipart upload: loaded at once, all six load steps done.
    let r = server.upload_multipart("public", &bytes, None);
    assert_eq!(r.status, 201, "{r}\n{}", server.logs());
    let up = r.json();
    assert_eq!(
        (&up["name"], &up["version"], &up["state"], &up["tenant_id"]),
        (
            &json!("hello-orders"),
            &json!("1.0.0"),
            &json!("loaded"),
            &json!("public")
        ),
        "{up}"
    );
    let id = id_of(&up);
    let info = server.get_ok(&format!("/v1/packages/{id}"));
    assert_eq!(info["state"], "loaded", "{info}");
    assert_eq!(
        info["load_steps_done"].as_array().map(Vec::len),
        Some(6),
        "{info}"
    );
    assert_eq!(info["build_status"], "success", "{info}");

    // The same archive again: a conflict, nothing added.
    let r = server.upload_raw("public", &bytes);
    assert_eq!(
        (r.status, r.code().as_str()),
        (409, "package_exists"),
        "{r}"
    );
    assert_eq!(server.get_ok("/v1/packages")["total"], 1);

    // Run `orders` and follow it live: the stream delivers its events in order and ends
    // once the run has ended.
    let exec = server.execute("public", "orders", &json!({"delay_ms": 1500}));
    let stream_path = format!("/v1/tenants/public/executions/{exec}/events/stream");
    let streamed = server.sse(&stream_path, None);
    let status = server.get_ok(&format!("/v1/tenants/public/executions/{exec}"));
    assert_eq!(status["status"], "Completed", "{status}");
    let seqs: Vec<i64> = streamed
        .iter()
        .map(|e| {
            e.id.as_deref()
                .and_then(|i| i.parse().ok())
                .expect("numeric id")
        })
        .collect();
    assert!(seqs.len() >= 5, "{streamed:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");

    // The list says the same; `since` a sequence number gives only later events.
    let listed = server.get_ok(&format!("/v1/tenants/public/executions/{exec}/events"));
    let listed = listed["events"].as_array().expect("events").clone();
    let listed_seqs: Vec<i64> = listed
        .iter()
        .map(|e| e["sequence_num"].as_i64().expect("seq"))
        .collect();
    assert_eq!(listed_seqs, seqs);
    for (e, s) in listed.iter().zip(&streamed) {
        assert_eq!(e["event_type"].as_str(), s.event.as_deref(), "{e} vs {s:?}");
        let data: Value = serde_json::from_str(&s.data).expect("event data is JSON");
        assert_eq!(&data, e);
    }
    let mid = seqs[seqs.len() / 2];
    let later = server.get_ok(&format!(
        "/v1/tenants/public/executions/{exec}/events?since={mid}"
    ));
    let later: Vec<i64> = later["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["sequence_num"].as_i64().expect("seq"))
        .collect();
    assert_eq!(
        later,
        seqs.iter()
            .copied()
            .filter(|s| *s > mid)
            .collect::<Vec<_>>()
    );
    let r = server.get(&format!(
        "/v1/tenants/public/executions/{exec}/events?since=soon"
    ));
    assert_eq!(r.status, 400, "{r}");

    // Resuming with Last-Event-ID gives only the later events.
    let resumed = server.sse(&stream_path, Some(&mid.to_string()));
    let resumed: Vec<i64> = resumed
        .iter()
        .map(|e| e.id.as_deref().and_then(|i| i.parse().ok()).expect("id"))
        .collect();
    assert_eq!(resumed, later);

    // A long poll: `?wait=` answers with the status as it stands when the time runs out,
    // and as soon as the run has ended (one request instead of polling); a bad one is a 400.
    let slow = server.execute("public", "orders", &json!({"delay_ms": 1500}));
    let path = format!("/v1/tenants/public/executions/{slow}");
    let early = server.get_ok(&format!("{path}?wait=100ms"));
    assert!(
        matches!(early["status"].as_str(), Some("Pending" | "Running")),
        "{early}"
    );
    let ended = server.get_ok(&format!("{path}?wait=30s"));
    assert_eq!(ended["status"], "Completed", "{ended}");
    assert!(ended["result"].is_object(), "{ended}");
    let r = server.get(&format!("{path}?wait=soon"));
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_query"), "{r}");
    let r =
        server.get("/v1/tenants/public/executions/00000000-0000-4000-8000-000000000000?wait=1s");
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "execution_not_found"),
        "{r}"
    );

    // `hello` runs too.
    let exec = server.execute("public", "hello", &json!({}));
    assert_eq!(
        server.wait_execution("public", &exec)["status"],
        "Completed"
    );

    // Delete: unloaded, the workflows are gone.
    let r = server.delete(&format!("/v1/packages/{id}"));
    assert_eq!(r.status, 200, "{r}\n{}", server.logs());
    assert_eq!(r.json()["status"], "unloaded", "{r}");
    let r = server.post(
        "/v1/tenants/public/workflows/hello/execute",
        &json!({"context": {}}),
    );
    assert_eq!(r.status, 404, "{r}");
    assert_eq!(server.get(&format!("/v1/packages/{id}")).status, 404);
    assert_eq!(server.get_ok("/v1/packages")["total"], 0);
    let wf = server.get_ok("/v1/tenants/public/workflows");
    assert_eq!(wf["total"], 0, "{wf}");
}
both_backends!(upload_run_stream_and_delete);

/// A gzip stream of a tar with the given entries (`archive::pack` refuses to make such).
fn hand_packed(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // `append_data` refuses `..`; write the name into the header directly.
        let name = header.as_old_mut();
        name.name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        tar.append(&header, *data).expect("append");
    }
    let mut gz = tar.into_inner().expect("finish tar");
    gz.flush().expect("flush");
    gz.finish().expect("finish gzip")
}

fn raw_source_only_and_broken_uploads(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::direct());

    // A raw octet-stream upload works like the multipart one.
    let up = upload_ok(&server, &read(&pack_example("hello-orders", home.path())));
    assert_eq!(up["state"], "loaded", "{up}");

    // Source only (no library): accepted and pending, waiting for a compiler.
    let ex = packages::example("scheduled-reports");
    let src_only = home.path().join("source-only.cloacina");
    archive::pack(&ex.dir, &[], &src_only).expect("pack without a library");
    let up = upload_ok(&server, &read(&src_only));
    assert_eq!(up["state"], "pending", "{up}");
    let info = server.get_ok(&format!("/v1/packages/{}", id_of(&up)));
    assert_eq!(info["state"], "pending", "{info}");
    assert_eq!(info["build_status"], "pending", "{info}");

    let before = package_states(&server);
    assert_eq!(before.len(), 2, "{before:?}");

    // Broken and hostile archives: a 400 with a reason, nothing stored.
    let real = read(&pack_example("hello-orders", home.path()));
    // A package no other upload names, so only its own problem can refuse it.
    let hello = packages::example("hello-orders").dir;
    let manifest = std::fs::read_to_string(hello.join("package.toml"))
        .expect("read manifest")
        .replacen("name = \"hello-orders\"", "name = \"probe\"", 1);
    let cargo_toml = std::fs::read(hello.join("Cargo.toml")).expect("read Cargo.toml");
    let lib_rs = std::fs::read(hello.join("src/lib.rs")).expect("read lib.rs");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "not an archive",
            b"this is not a gzip archive at all".to_vec(),
        ),
        ("truncated", real[..real.len() / 2].to_vec()),
        (
            "path traversal",
            hand_packed(&[
                ("package.toml", manifest.as_bytes()),
                ("Cargo.toml", &cargo_toml),
                ("src/lib.rs", &lib_rs),
                ("../../escaped.txt", b"out of the box"),
            ]),
        ),
        (
            "no manifest",
            hand_packed(&[("src/lib.rs", b"fn main() {}")]),
        ),
    ];
    for (what, bytes) in cases {
        let r = server.upload_raw("public", &bytes);
        assert_eq!(r.status, 400, "{what}: {r}\n{}", server.logs());
        assert_eq!(r.code(), "archive_invalid", "{what}: {r}");
        assert!(
            !r.error().contains("server-cache"),
            "{what}: the server's scratch paths stay private: {r}"
        );
        let r = server.upload_multipart("public", &bytes, None);
        assert_eq!(r.status, 400, "{what} (multipart): {r}");
    }
    // An empty upload and a form without a file part.
    let r = server.upload_raw("public", b"");
    assert_eq!(r.status, 400, "{r}");
    let boundary = "e2e-no-file";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"signature\"\r\n\r\nx\r\n--{boundary}--\r\n"
    );
    let r = server.request(
        "POST",
        "/v1/tenants/public/workflows",
        Some(&server.key),
        &[(
            "content-type",
            &format!("multipart/form-data; boundary={boundary}"),
        )],
        form.into_bytes(),
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "invalid_upload"),
        "{r}"
    );
    assert!(r.error().contains("'file'"), "{r}");
    assert_eq!(package_states(&server), before);
    assert!(!home.path().join("escaped.txt").exists());
    // No scratch copy of any upload is left behind.
    let scratch: Vec<_> = std::fs::read_dir(home.path().join("server-cache/uploads"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(scratch.is_empty(), "{scratch:?}");
    assert!(!home.path().join("server-cache/escaped.txt").exists());

    // A library that cannot load here is refused too, and not kept.
    let wrong_abi = pack_example("hostile/wrong-abi", home.path());
    let r = server.upload_raw("public", &read(&wrong_abi));
    assert!((400..500).contains(&r.status), "{r}\n{}", server.logs());
    assert!(!r.error().is_empty(), "{r}");
    assert_eq!(package_states(&server), before);

    // The server still serves.
    let exec = server.execute("public", "hello", &json!({}));
    assert_eq!(
        server.wait_execution("public", &exec)["status"],
        "Completed"
    );
}
both_backends!(raw_source_only_and_broken_uploads);

// ---------------------------------------------------------------------------------------------
// 3. The cross-package guard

fn graph_names(server: &ServerProcess<'_>) -> Vec<String> {
    let graphs = server.get_ok("/v1/health/graphs");
    let mut names: Vec<String> = graphs["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|g| g["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

fn the_guard_refuses_unloading_a_publisher_with_subscribers(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::ctl());
    let publisher = upload_ok(
        &server,
        &read(&pack_example("price-publisher", home.path())),
    );
    assert_eq!(publisher["state"], "loaded", "{publisher}");
    let subscriber = upload_ok(
        &server,
        &read(&pack_example("price-subscriber", home.path())),
    );
    assert_eq!(subscriber["state"], "loaded", "{subscriber}");
    let (pub_id, sub_id) = (id_of(&publisher), id_of(&subscriber));

    let states = package_states(&server);
    let graphs = graph_names(&server);
    let inspect = server.get_ok(&format!("/v1/packages/{pub_id}"));
    let subscribers = inspect["reactors"][0]["subscribers"]
        .as_array()
        .expect("the publisher's reactor and its subscribers")
        .iter()
        .map(|s| format!("'{}'", s.as_str().expect("name")))
        .collect::<Vec<_>>();
    assert_eq!(
        inspect["reactors"][0]["reactor"], "price_reactor",
        "{inspect}"
    );
    let guard_text = format!(
        "reactor 'price_reactor' has {} bound subscriber(s): [{}]; unbind them first",
        subscribers.len(),
        subscribers.join(", ")
    );

    // A dry run reports the refusal and changes nothing.
    let r = server.delete(&format!("/v1/packages/{pub_id}?dry_run=true"));
    assert_eq!(r.status, 409, "{r}");
    assert_eq!(r.error(), guard_text, "{r}");
    // The subscriber's dry run: the plan, nothing done.
    let r = server.delete(&format!("/v1/packages/{sub_id}?dry_run=true"));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["status"], "planned", "{r}");
    assert!(
        !r.json()["steps"].as_array().expect("steps").is_empty(),
        "{r}"
    );
    assert_eq!(package_states(&server), states);

    // The real thing: 409, the guard's text verbatim, nothing changed.
    let r = server.delete(&format!("/v1/packages/{pub_id}"));
    assert_eq!(r.status, 409, "{r}\n{}", server.logs());
    assert_eq!(r.error(), guard_text, "{r}");
    assert!(
        r.error().starts_with("reactor 'price_reactor' has ")
            && r.error().contains("'analyzer_v1'"),
        "{r}"
    );
    assert_eq!(package_states(&server), states);
    assert_eq!(graph_names(&server), graphs);
    let after = server.get_ok(&format!("/v1/packages/{pub_id}"));
    assert_eq!(after["state"], "loaded", "{after}");
    assert_eq!(after["reactors"], inspect["reactors"], "{after}");
    let health = server.get_ok("/v1/health/graphs/price_summary");
    assert_eq!(health["name"], "price_summary", "{health}");

    // Subscriber first, then the publisher: both go.
    let r = server.delete(&format!("/v1/packages/{sub_id}"));
    assert_eq!(r.status, 200, "{r}\n{}", server.logs());
    let after = server.get_ok(&format!("/v1/packages/{pub_id}"));
    assert_eq!(
        after["reactors"][0]["subscribers"].as_array().map(Vec::len),
        Some(0),
        "{after}"
    );
    let r = server.delete(&format!("/v1/packages/{pub_id}"));
    assert_eq!(r.status, 200, "{r}\n{}", server.logs());
    assert_eq!(r.json()["status"], "unloaded", "{r}");
    assert!(package_states(&server).is_empty());
    assert!(
        graph_names(&server).is_empty(),
        "{:?}",
        graph_names(&server)
    );
}
both_backends!(the_guard_refuses_unloading_a_publisher_with_subscribers);

// ---------------------------------------------------------------------------------------------
// 4. An upgrade with no gap

fn an_upgrade_serves_the_new_version_without_a_gap(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::ctl());
    let v1 = upload_ok(&server, &read(&pack_example("hello-orders", home.path())));
    let (dir, library) = packages::example_as_version("hello-orders", "1.1.0");
    let v2_archive = home.path().join("hello-orders-1.1.0.cloacina");
    pack_to(&dir, &library, &v2_archive);
    let v2_bytes = read(&v2_archive);

    // A slow run of the old version is in flight during the upgrade.
    let slow = server.execute("public", "orders", &json!({"delay_ms": 3000}));

    // Runs are started without pause while the new version is uploaded: none may fail.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (up, starts) = std::thread::scope(|s| {
        let starter = s.spawn(|| {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = server.post(
                    "/v1/tenants/public/workflows/hello/execute",
                    &json!({"context": {}}),
                );
                answers.push((r.status, r.text.clone()));
            }
            answers
        });
        // Let the starter get going before the upload.
        cloacina_e2e::wait_for(
            "runs are being started",
            || {
                server.get_ok("/v1/tenants/public/executions?workflow=hello")["total"]
                    .as_i64()
                    .unwrap_or(0)
                    >= 2
            },
            || server.logs(),
        );
        let up = server.upload_raw("public", &v2_bytes);
        // A few more starts after the swap.
        let seen = server.get_ok("/v1/tenants/public/executions?workflow=hello")["total"]
            .as_i64()
            .unwrap_or(0);
        cloacina_e2e::wait_for(
            "runs are started after the upgrade",
            || {
                server.get_ok("/v1/tenants/public/executions?workflow=hello")["total"]
                    .as_i64()
                    .unwrap_or(0)
                    >= seen + 2
            },
            || server.logs(),
        );
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (up, starter.join().expect("the starter thread"))
    });
    assert_eq!(up.status, 201, "{up}\n{}", server.logs());
    assert_eq!(up.json()["state"], "loaded", "{up}");
    assert_eq!(up.json()["version"], "1.1.0", "{up}");
    let failed: Vec<_> = starts.iter().filter(|(s, _)| *s != 202).collect();
    assert!(
        failed.is_empty(),
        "every start during the upgrade was accepted: {failed:?}\n{}",
        server.logs()
    );

    // The new version serves; the old one is reported superseded.
    let wf = server.get_ok("/v1/tenants/public/workflows/hello");
    assert_eq!(wf["version"], "1.1.0", "{wf}");
    let old = server.get_ok(&format!("/v1/packages/{}", id_of(&v1)));
    assert!(
        matches!(old["state"].as_str(), Some("superseded" | "unloaded")),
        "{old}"
    );
    assert_eq!(old["superseded_by"].is_null(), old["state"] != "superseded");

    // The old version's slow run completes; every started run completes.
    assert_eq!(
        server.wait_execution("public", &slow)["status"],
        "Completed",
        "{}",
        server.logs()
    );
    for (_, text) in &starts {
        let id: Value = serde_json::from_str(text).expect("JSON");
        let id = id["execution_id"].as_str().expect("id");
        let status = server.wait_execution("public", id);
        assert_eq!(status["status"], "Completed", "{status}");
    }
}
both_backends!(an_upgrade_serves_the_new_version_without_a_gap);
