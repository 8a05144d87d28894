//! The compiler's build queue in the control store (claim, heartbeat, finish, release, sweep,
//! counts, log), run against SQLite and PostgreSQL with identical expectations.

mod common;

use std::collections::BTreeSet;

use cloacina::store::*;
use common::TestDb;
use uuid::Uuid;

fn pending(tenant: &str, name: &str, version: &str, archive: Vec<u8>) -> NewPackage {
    NewPackage {
        tenant: tenant.to_string(),
        name: name.to_string(),
        version: version.to_string(),
        archive,
        signature: Some(b"signature of the source-only archive".to_vec()),
        has_library: false,
        build_status: BuildStatus::Pending,
    }
}

async fn get(store: &Store, id: Uuid) -> PackageRecord {
    store.package_get(id).await.expect("get").expect("found")
}

async fn claims_heartbeats_and_finishes_are_fenced(db: &TestDb) {
    let store = db.open().await;
    assert_eq!(store.package_build_claim("w1").await.expect("claim"), None);
    let p1 = store
        .package_create(pending("acme", "etl", "1.0.0", vec![1, 2, 3]))
        .await
        .expect("create");
    let p2 = store
        .package_create(pending("acme", "etl", "1.1.0", vec![4]))
        .await
        .expect("create");
    // A package with a library is never queued; one being deleted is not claimed.
    let mut loaded = pending("acme", "lib", "1.0.0", vec![5]);
    loaded.has_library = true;
    loaded.build_status = BuildStatus::Success;
    store.package_create(loaded).await.expect("create");
    let doomed = store
        .package_create(pending("acme", "doomed", "1.0.0", vec![6]))
        .await
        .expect("create");
    assert!(store.package_set_unloading(doomed.id).await.expect("mark"));
    assert_eq!(
        store.package_build_counts().await.expect("counts"),
        BuildCounts {
            pending: 2,
            building: 0,
            failed: 0,
            success: 1
        }
    );

    // Oldest first, one package per claim.
    let g0 = store.package_generation().await.expect("generation");
    let c1 = store
        .package_build_claim("w1")
        .await
        .expect("claim")
        .expect("p1");
    assert_eq!((c1.package.id, c1.worker.as_str()), (p1.id, "w1"));
    assert_eq!(c1.package.build_status, BuildStatus::Building);
    assert_eq!(c1.package.build_claimed_by.as_deref(), Some("w1"));
    assert_eq!(c1.package.build_attempts, 1);
    assert!(c1.package.build_heartbeat_at.is_some() && c1.package.build_started_at.is_some());
    let c2 = store
        .package_build_claim("w2")
        .await
        .expect("claim")
        .expect("p2");
    assert_eq!(c2.package.id, p2.id);
    assert_eq!(store.package_build_claim("w3").await.expect("claim"), None);
    assert_eq!(
        store.package_generation().await.expect("generation"),
        g0,
        "claims change nothing a replica loads"
    );
    let counts = store.package_build_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.building), (0, 2));

    // Heartbeats only by the holder.
    let before = get(&store, p1.id).await.build_heartbeat_at.expect("beat");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert!(
        store
            .package_build_heartbeat(p1.id, "w1")
            .await
            .expect("beat")
    );
    assert!(get(&store, p1.id).await.build_heartbeat_at.expect("beat") > before);
    assert!(
        !store
            .package_build_heartbeat(p1.id, "w2")
            .await
            .expect("beat")
    );
    assert!(
        !store
            .package_build_heartbeat(Uuid::now_v7(), "w1")
            .await
            .expect("beat")
    );

    // A finish by anyone else changes nothing; the holder's records the built archive.
    let built = BuildFinish {
        outcome: BuildOutcome::Built {
            archive: vec![9, 9, 9, 9],
            signature: Some(b"compiler signature".to_vec()),
        },
        log: "Compiling etl\nFinished".to_string(),
    };
    assert!(
        !store
            .package_build_finish(p1.id, "w2", built.clone())
            .await
            .expect("finish")
    );
    assert_eq!(get(&store, p1.id).await.build_status, BuildStatus::Building);
    assert!(
        store
            .package_build_finish(p1.id, "w1", built.clone())
            .await
            .expect("finish")
    );
    let g1 = store.package_generation().await.expect("generation");
    assert!(g1 > g0, "a finish bumps the generation");
    let done = get(&store, p1.id).await;
    assert_eq!(done.build_status, BuildStatus::Success);
    assert!(done.has_library && done.signed);
    assert_eq!((done.build_error, done.build_claimed_by), (None, None));
    assert_eq!(done.build_heartbeat_at, None);
    assert!(done.build_finished_at.is_some());
    assert_eq!(done.size, 4);
    assert_ne!(done.sha256, p1.sha256);
    let (archive, signature) = store
        .package_archive(p1.id)
        .await
        .expect("archive")
        .expect("found");
    assert_eq!(archive, vec![9, 9, 9, 9]);
    assert_eq!(signature.as_deref(), Some(&b"compiler signature"[..]));
    assert_eq!(
        store
            .package_build_log(p1.id)
            .await
            .expect("log")
            .as_deref(),
        Some("Compiling etl\nFinished")
    );
    // Finished: the claim is gone.
    assert!(
        !store
            .package_build_finish(p1.id, "w1", built)
            .await
            .expect("finish")
    );
    assert!(
        !store
            .package_build_heartbeat(p1.id, "w1")
            .await
            .expect("beat")
    );

    // A failure keeps the stored archive and records the reason and the log.
    let failed = BuildFinish {
        outcome: BuildOutcome::Failed {
            error: "cargo build --release failed: error[E0425]".to_string(),
        },
        log: "error[E0425]: cannot find value".to_string(),
    };
    assert!(
        store
            .package_build_finish(p2.id, "w2", failed)
            .await
            .expect("finish")
    );
    let bad = get(&store, p2.id).await;
    assert_eq!(bad.build_status, BuildStatus::Failed);
    assert_eq!(
        bad.build_error.as_deref(),
        Some("cargo build --release failed: error[E0425]")
    );
    assert!(!bad.has_library);
    assert_eq!(bad.sha256, p2.sha256);
    assert!(bad.signed, "a failed build keeps the upload's signature");
    assert_eq!(
        store
            .package_build_log(p2.id)
            .await
            .expect("log")
            .as_deref(),
        Some("error[E0425]: cannot find value")
    );
    assert_eq!(
        store.package_build_log(Uuid::now_v7()).await.expect("log"),
        None
    );
    assert_eq!(
        store.package_build_counts().await.expect("counts"),
        BuildCounts {
            pending: 0,
            building: 0,
            failed: 1,
            success: 2
        }
    );

    // A built archive without a signature clears the upload's (it signed other bytes).
    let p3 = store
        .package_create(pending("acme", "etl", "2.0.0", vec![7]))
        .await
        .expect("create");
    let c3 = store
        .package_build_claim("w1")
        .await
        .expect("claim")
        .expect("p3");
    assert_eq!(c3.package.id, p3.id);
    assert!(
        store
            .package_build_finish(
                p3.id,
                "w1",
                BuildFinish {
                    outcome: BuildOutcome::Built {
                        archive: vec![8],
                        signature: None,
                    },
                    log: String::new(),
                },
            )
            .await
            .expect("finish")
    );
    let unsigned = get(&store, p3.id).await;
    assert!(!unsigned.signed && unsigned.has_library);
    assert_eq!(
        store
            .package_archive(p3.id)
            .await
            .expect("archive")
            .expect("found")
            .1,
        None
    );
    store.close().await;
}

async fn releases_and_sweeps_hand_claims_back(db: &TestDb) {
    let store = db.open().await;
    let p = store
        .package_create(pending("public", "etl", "1.0.0", vec![1]))
        .await
        .expect("create");
    let c = store
        .package_build_claim("w1")
        .await
        .expect("claim")
        .expect("claimed");
    assert_eq!(c.package.build_attempts, 1);

    // A release by the holder only; it does not count as an attempt.
    assert!(
        !store
            .package_build_release(p.id, "w2")
            .await
            .expect("release")
    );
    assert!(
        store
            .package_build_release(p.id, "w1")
            .await
            .expect("release")
    );
    let back = get(&store, p.id).await;
    assert_eq!(back.build_status, BuildStatus::Pending);
    assert_eq!((back.build_claimed_by, back.build_attempts), (None, 0));
    assert!(
        !store
            .package_build_release(p.id, "w1")
            .await
            .expect("release")
    );

    // A live claim is not swept; a stale one is handed back, and its old holder is fenced out.
    let c = store
        .package_build_claim("w1")
        .await
        .expect("claim")
        .expect("claimed");
    assert_eq!(c.package.build_attempts, 1);
    let an_hour_ago = now_ms() - 3_600_000;
    assert!(
        store
            .package_build_sweep(an_hour_ago, 3)
            .await
            .expect("sweep")
            .is_empty()
    );
    let later = now_ms() + 1_000;
    let swept = store.package_build_sweep(later, 3).await.expect("sweep");
    assert_eq!(swept.len(), 1, "{swept:?}");
    let s = &swept[0];
    assert_eq!((s.id, s.requeued, s.attempts), (p.id, true, 1));
    assert_eq!(s.claimed_by.as_deref(), Some("w1"));
    assert_eq!(
        (s.tenant.as_str(), s.name.as_str(), s.version.as_str()),
        ("public", "etl", "1.0.0")
    );
    assert_eq!(get(&store, p.id).await.build_status, BuildStatus::Pending);
    assert!(
        !store
            .package_build_heartbeat(p.id, "w1")
            .await
            .expect("beat")
    );
    assert!(
        !store
            .package_build_finish(
                p.id,
                "w1",
                BuildFinish {
                    outcome: BuildOutcome::Failed {
                        error: "late".to_string()
                    },
                    log: String::new(),
                },
            )
            .await
            .expect("finish")
    );
    // Sweeping again finds nothing.
    assert!(
        store
            .package_build_sweep(later, 3)
            .await
            .expect("sweep")
            .is_empty()
    );

    // Once the package has used up its attempts, a stale claim fails it.
    let c = store
        .package_build_claim("w2")
        .await
        .expect("claim")
        .expect("claimed");
    assert_eq!(c.package.build_attempts, 2);
    let g = store.package_generation().await.expect("generation");
    let swept = store
        .package_build_sweep(now_ms() + 1_000, 2)
        .await
        .expect("sweep");
    assert_eq!(swept.len(), 1);
    assert!(!swept[0].requeued);
    let failed = get(&store, p.id).await;
    assert_eq!(failed.build_status, BuildStatus::Failed);
    let error = failed.build_error.expect("error");
    assert!(error.contains("gave up after 2 builds"), "{error}");
    assert!(store.package_generation().await.expect("generation") > g);
    assert_eq!(store.package_build_claim("w3").await.expect("claim"), None);
    store.close().await;
}

/// Many workers on two stores claim concurrently: every package is claimed exactly once.
async fn concurrent_claims_never_share_a_package(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let mut ids = BTreeSet::new();
    for i in 0..12 {
        let p = a
            .package_create(pending("public", &format!("p{i}"), "1.0.0", vec![i]))
            .await
            .expect("create");
        ids.insert(p.id);
    }
    let mut tasks = Vec::new();
    for w in 0..6 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut mine = Vec::new();
            while let Some(c) = store.package_build_claim(&worker).await.expect("claim") {
                assert_eq!(c.package.build_claimed_by.as_deref(), Some(worker.as_str()));
                mine.push(c.package.id);
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.expect("task"));
    }
    assert_eq!(
        claimed.len(),
        ids.len(),
        "each package claimed once: {claimed:?}"
    );
    assert_eq!(claimed.into_iter().collect::<BTreeSet<_>>(), ids);
    let counts = a.package_build_counts().await.expect("counts");
    assert_eq!((counts.pending, counts.building), (0, 12));
    a.close().await;
    b.close().await;
}

conformance!(
    claims_heartbeats_and_finishes_are_fenced,
    releases_and_sweeps_hand_claims_back,
    concurrent_claims_never_share_a_package,
);
