//! The control plane's storage (API keys, tenants, packages, audit log, trigger poll claims),
//! run against SQLite and PostgreSQL with identical expectations.

mod common;

use cloacina::auth::{Role, key_generate, key_hash};
use cloacina::error::ErrorCode;
use cloacina::store::*;
use cloacina::tenant::{tenant_schema, tenant_store_location};
use common::{Backend, TestDb};
use serde_json::json;
use uuid::Uuid;

fn key(name: &str, role: Role, tenant: Option<&str>) -> (String, NewApiKey) {
    let k = key_generate();
    (
        k.plaintext,
        NewApiKey {
            name: name.to_string(),
            hash: k.hash,
            role,
            tenant_id: tenant.map(str::to_string),
            is_admin: tenant.is_none() && role == Role::Admin,
        },
    )
}

fn package(tenant: &str, name: &str, version: &str, archive: Vec<u8>) -> NewPackage {
    NewPackage {
        tenant: tenant.to_string(),
        name: name.to_string(),
        version: version.to_string(),
        archive,
        signature: None,
        has_library: false,
        build_status: BuildStatus::Pending,
    }
}

async fn api_keys_create_find_list_revoke(db: &TestDb) {
    let store = db.open().await;
    assert_eq!(store.api_key_count().await.expect("count"), 0);
    let (admin_plain, admin) = key("bootstrap", Role::Admin, None);
    let created = store.api_key_create(admin).await.expect("create");
    assert_eq!(created.name, "bootstrap");
    assert_eq!((created.role, created.is_admin), (Role::Admin, true));
    assert_eq!(
        (created.tenant_id.clone(), created.revoked_at),
        (None, None)
    );
    let (_, acme_w) = key("ci", Role::Write, Some("acme"));
    let acme_w = store.api_key_create(acme_w).await.expect("create");
    let (_, acme_r) = key("viewer", Role::Read, Some("acme"));
    let acme_r = store.api_key_create(acme_r).await.expect("create");
    let (_, other) = key("other", Role::Read, Some("globex"));
    let other = store.api_key_create(other).await.expect("create");
    assert_eq!(store.api_key_count().await.expect("count"), 4);

    let found = store
        .api_key_find(&key_hash(&admin_plain))
        .await
        .expect("find");
    assert_eq!(found.as_ref(), Some(&created));
    assert_eq!(
        store
            .api_key_find(&key_hash("clk_nope"))
            .await
            .expect("find"),
        None
    );

    let all = store.api_key_list(None).await.expect("list");
    assert_eq!(
        all.iter().map(|k| k.id).collect::<Vec<_>>(),
        [created.id, acme_w.id, acme_r.id, other.id],
        "oldest first"
    );
    let acme = store.api_key_list(Some("acme")).await.expect("list");
    assert_eq!(
        acme.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
        ["ci", "viewer"]
    );

    // Revoking in another tenant finds nothing and changes nothing.
    assert_eq!(
        store
            .api_key_revoke(acme_w.id, Some("globex"))
            .await
            .expect("revoke"),
        None
    );
    assert_eq!(
        store
            .api_key_revoke(Uuid::now_v7(), None)
            .await
            .expect("revoke"),
        None
    );
    let revoked = store
        .api_key_revoke(acme_w.id, Some("acme"))
        .await
        .expect("revoke")
        .expect("found");
    let first = revoked.revoked_at.expect("revoked");
    assert!(revoked.is_revoked());
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // Twice: same answer, first revocation time kept (an admin may revoke without a tenant).
    let again = store
        .api_key_revoke(acme_w.id, None)
        .await
        .expect("revoke")
        .expect("found");
    assert_eq!(again.revoked_at, Some(first));
    assert_eq!(store.api_key_count().await.expect("count"), 3);
    // A revoked key is still found, so the caller can say "revoked".
    let by_hash = store.api_key_list(Some("acme")).await.expect("list");
    assert_eq!(by_hash[0].revoked_at, Some(first));

    assert_eq!(
        store.api_key_revoke_tenant("acme").await.expect("revoke"),
        1,
        "only the unrevoked key"
    );
    assert_eq!(
        store.api_key_revoke_tenant("acme").await.expect("revoke"),
        0
    );
    assert_eq!(store.api_key_count().await.expect("count"), 2);
    store.close().await;
}

async fn tenants_are_unique_case_insensitively(db: &TestDb) {
    let store = db.open().await;
    assert!(store.tenant_list().await.expect("list").is_empty());
    let acme = store
        .tenant_create("acme", Some("Acme Corp"))
        .await
        .expect("create");
    assert_eq!(acme.name, "acme");
    assert_eq!(acme.description.as_deref(), Some("Acme Corp"));
    let e = store
        .tenant_create("Acme", None)
        .await
        .expect_err("duplicate");
    assert!(
        matches!(e.inner(), StoreError::TenantExists(n) if n == "acme"),
        "{e:?}"
    );
    assert_eq!(e.code(), "tenant_exists");
    assert_eq!(e.kind().http_status(), 409);
    let e = store.tenant_create("acme", None).await.expect_err("dup");
    assert!(matches!(e.inner(), StoreError::TenantExists(_)));
    store.tenant_create("Beta_2", None).await.expect("create");
    store.tenant_create("Zeta", None).await.expect("create");

    assert_eq!(
        store.tenant_get("acme").await.expect("get"),
        Some(acme.clone())
    );
    assert_eq!(store.tenant_get("ACME").await.expect("get"), Some(acme));
    assert_eq!(store.tenant_get("nope").await.expect("get"), None);
    let names: Vec<String> = store
        .tenant_list()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        names,
        ["acme", "Beta_2", "Zeta"],
        "by name, case-insensitively"
    );

    assert!(store.tenant_delete("beta_2").await.expect("delete"));
    assert!(!store.tenant_delete("beta_2").await.expect("delete"));
    assert_eq!(store.tenant_get("Beta_2").await.expect("get"), None);
    // The name is free again.
    store.tenant_create("beta_2", None).await.expect("create");
    store.close().await;
}

async fn packages_round_trip_and_bump_the_generation(db: &TestDb) {
    let store = db.open().await;
    let g0 = store.package_generation().await.expect("generation");
    // Every byte value, NULs included.
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0, 0xff, 0]).collect();
    let mut signed = package("acme", "reports", "1.0.0", bytes.clone());
    signed.signature = Some(vec![0, 1, 2, 0]);
    signed.has_library = true;
    let p1 = store.package_create(signed).await.expect("create");
    assert_eq!(p1.size, bytes.len() as i64);
    assert_eq!(p1.sha256, {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    });
    assert!(p1.signed && p1.has_library);
    assert_eq!(p1.build_status, BuildStatus::Pending);
    assert_eq!(
        (p1.tenant.as_str(), p1.name.as_str(), p1.version.as_str()),
        ("acme", "reports", "1.0.0")
    );
    let g1 = store.package_generation().await.expect("generation");
    assert!(g1 > g0, "create bumps the generation");

    let (archive, signature) = store
        .package_archive(p1.id)
        .await
        .expect("archive")
        .expect("found");
    assert_eq!(archive, bytes);
    assert_eq!(signature, Some(vec![0, 1, 2, 0]));
    assert_eq!(
        store.package_get(p1.id).await.expect("get"),
        Some(p1.clone())
    );
    assert_eq!(store.package_get(Uuid::now_v7()).await.expect("get"), None);
    assert_eq!(
        store
            .package_archive(Uuid::now_v7())
            .await
            .expect("archive"),
        None
    );

    // Duplicate (tenant, name, version): refused, nothing changes.
    let e = store
        .package_create(package("acme", "reports", "1.0.0", vec![1]))
        .await
        .expect_err("duplicate");
    assert!(
        matches!(e.inner(), StoreError::PackageExists { tenant, name, version }
            if tenant == "acme" && name == "reports" && version == "1.0.0"),
        "{e:?}"
    );
    assert_eq!((e.code(), e.kind().http_status()), ("package_exists", 409));
    assert_eq!(store.package_generation().await.expect("generation"), g1);
    // Same name and version in another tenant, another version in the same: fine.
    let p2 = store
        .package_create(package("globex", "reports", "1.0.0", vec![2]))
        .await
        .expect("create");
    assert!(!p2.signed);
    let p3 = store
        .package_create(package("acme", "reports", "1.1.0", vec![3]))
        .await
        .expect("create");
    let p4 = store
        .package_create(package("acme", "alerts", "0.1.0", vec![]))
        .await
        .expect("create");
    let g2 = store.package_generation().await.expect("generation");
    assert!(g2 >= g1 + 3);

    let ids = |v: Vec<PackageRecord>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.package_list(None).await.expect("list")),
        [p4.id, p1.id, p3.id, p2.id],
        "by tenant, name, upload time"
    );
    assert_eq!(
        ids(store.package_list(Some("acme")).await.expect("list")),
        [p4.id, p1.id, p3.id]
    );

    // Build status, with and without a new archive.
    assert!(
        store
            .package_set_build(p3.id, BuildStatus::Failed, Some("cargo failed"), None)
            .await
            .expect("set build")
    );
    let g3 = store.package_generation().await.expect("generation");
    assert!(g3 > g2, "set_build bumps the generation");
    let failed = store.package_get(p3.id).await.expect("get").expect("found");
    assert_eq!(failed.build_status, BuildStatus::Failed);
    assert_eq!(failed.build_error.as_deref(), Some("cargo failed"));
    assert!(failed.updated_at >= p3.updated_at);
    let built = vec![0u8, 9, 9, 0, 9];
    assert!(
        store
            .package_set_build(p3.id, BuildStatus::Success, None, Some(built.clone()))
            .await
            .expect("set build")
    );
    let ok = store.package_get(p3.id).await.expect("get").expect("found");
    assert_eq!(
        (ok.build_status, ok.build_error),
        (BuildStatus::Success, None)
    );
    assert_eq!(ok.size, 5);
    assert_ne!(ok.sha256, p3.sha256);
    let (archive, _) = store
        .package_archive(p3.id)
        .await
        .expect("a")
        .expect("found");
    assert_eq!(archive, built);
    assert!(
        !store
            .package_set_build(Uuid::now_v7(), BuildStatus::Success, None, None)
            .await
            .expect("set build")
    );
    let g4 = store.package_generation().await.expect("generation");
    assert!(g4 > g3);

    // Deletes.
    assert!(store.package_delete(p1.id).await.expect("delete"));
    let g5 = store.package_generation().await.expect("generation");
    assert!(g5 > g4, "delete bumps the generation");
    assert!(!store.package_delete(p1.id).await.expect("delete"));
    assert_eq!(store.package_generation().await.expect("generation"), g5);
    assert_eq!(
        store.package_delete_tenant("acme").await.expect("delete"),
        2
    );
    assert!(store.package_generation().await.expect("generation") > g5);
    assert_eq!(
        store.package_delete_tenant("acme").await.expect("delete"),
        0
    );
    assert_eq!(ids(store.package_list(None).await.expect("list")), [p2.id]);
    store.close().await;
}

async fn audit_log_lists_newest_first(db: &TestDb) {
    let store = db.open().await;
    assert!(store.audit_list(10).await.expect("list").is_empty());
    for i in 0..5 {
        store
            .audit_append(NewAuditEntry {
                actor: format!("key:{i}"),
                action: "tenant.create".to_string(),
                target: format!("tenant/t{i}"),
                detail: json!({"i": i, "nested": {"ok": true}, "text": "naïve \"quoted\""}),
            })
            .await
            .expect("append");
    }
    let all = store.audit_list(100).await.expect("list");
    assert_eq!(all.len(), 5);
    assert_eq!(
        all.iter().map(|a| a.actor.as_str()).collect::<Vec<_>>(),
        ["key:4", "key:3", "key:2", "key:1", "key:0"]
    );
    assert!(
        all.windows(2)
            .all(|w| w[0].id > w[1].id && w[0].at >= w[1].at)
    );
    assert_eq!(
        all[0].detail,
        json!({"i": 4, "nested": {"ok": true}, "text": "naïve \"quoted\""})
    );
    assert_eq!(
        (all[0].action.as_str(), all[0].target.as_str()),
        ("tenant.create", "tenant/t4")
    );
    let two = store.audit_list(2).await.expect("list");
    assert_eq!(two, all[..2].to_vec());
    store.close().await;
}

async fn trigger_poll_claims_are_exactly_once_across_stores(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    assert!(
        a.trigger_poll_claim("public", "wf:t", 1)
            .await
            .expect("claim")
    );
    assert!(
        !a.trigger_poll_claim("public", "wf:t", 1)
            .await
            .expect("claim")
    );
    assert!(
        !b.trigger_poll_claim("public", "wf:t", 1)
            .await
            .expect("claim")
    );
    // Another slot, trigger or tenant is another claim.
    assert!(
        b.trigger_poll_claim("public", "wf:t", 2)
            .await
            .expect("claim")
    );
    assert!(
        b.trigger_poll_claim("public", "wf:u", 1)
            .await
            .expect("claim")
    );
    assert!(
        b.trigger_poll_claim("acme", "wf:t", 1)
            .await
            .expect("claim")
    );

    // Many concurrent claims of each slot through two stores: exactly one wins per slot.
    for slot in 100..120 {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store.trigger_poll_claim("public", "wf:race", slot).await
            }));
        }
        let mut wins = 0;
        for t in tasks {
            if t.await.expect("task").expect("claim") {
                wins += 1;
            }
        }
        assert_eq!(wins, 1, "slot {slot}");
    }

    // Pruning removes old claims only: a pruned slot can be claimed again.
    assert_eq!(a.trigger_poll_prune(0).await.expect("prune"), 0);
    let pruned = a.trigger_poll_prune(i64::MAX).await.expect("prune");
    assert_eq!(pruned, 4 + 20);
    assert!(
        a.trigger_poll_claim("public", "wf:t", 1)
            .await
            .expect("claim")
    );
    a.close().await;
    b.close().await;
}

/// A tenant's store opens where `tenant_store_location` says: on PostgreSQL the lowercased
/// schema of a mixed-case name, on SQLite a file of its own under the home.
async fn tenant_store_location_opens(db: &TestDb) {
    let home = tempfile::tempdir().expect("home");
    let name = format!("Acme_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let (url, options) = tenant_store_location(&db.url, home.path(), &name).expect("location");
    let tenant = Store::open_with(&url, options.clone())
        .await
        .expect("open tenant store");
    assert!(
        tenant
            .trigger_poll_claim(&name, "wf:t", 1)
            .await
            .expect("claim")
    );
    match db.backend {
        Backend::Postgres => {
            assert_eq!(url, db.url);
            assert_eq!(options.schema, tenant_schema(&name));
            assert!(options.schema.starts_with("acme_"));
            // The tenant's schema is not the test's: the same claim is new there.
            let main = db.open().await;
            assert!(
                main.trigger_poll_claim(&name, "wf:t", 1)
                    .await
                    .expect("claim")
            );
            main.close().await;
            tenant.schema_drop().await.expect("drop");
        }
        Backend::Sqlite => {
            let file = home
                .path()
                .join("tenants")
                .join(format!("{}.db", name.to_ascii_lowercase()));
            assert_eq!(url, format!("sqlite://{}", file.display()));
            assert!(file.exists());
            let (public_url, _) =
                tenant_store_location(&db.url, home.path(), "public").expect("location");
            assert_eq!(public_url, db.url);
        }
    }
    tenant.close().await;
}

conformance!(
    api_keys_create_find_list_revoke,
    tenants_are_unique_case_insensitively,
    packages_round_trip_and_bump_the_generation,
    audit_log_lists_newest_first,
    trigger_poll_claims_are_exactly_once_across_stores,
    tenant_store_location_opens,
);
