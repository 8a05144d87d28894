//! Keys and tenants through their whole life, on SQLite and PostgreSQL: tenant name rules,
//! key create/list/revoke (a revoked key refused on its very next request, lists never
//! showing a hash or plaintext), tenant delete revoking its keys and removing its schema or
//! file, and the audit log recording each step.

mod common;

use axum::http::{Method, StatusCode};
use cloacina::store::AuditRecord;
use common::{Backend, Resp, TestServer};
use serde_json::{Value, json};

fn expect(r: &Resp, status: u16, code: &str, what: &str) {
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (status, code),
        "{what}: {}",
        r.text()
    );
}

async fn post(s: &TestServer, path: &str, key: &str, body: Value) -> Resp {
    s.call(Method::POST, path, Some(key), Some(body)).await
}

async fn delete(s: &TestServer, path: &str, key: &str) -> Resp {
    s.call(Method::DELETE, path, Some(key), None).await
}

/// Is the tenant's data (schema or SQLite file) there?
async fn tenant_data_exists(s: &TestServer, lower: &str) -> bool {
    match s.backend {
        Backend::Postgres => s.pg_schema_exists(lower).await,
        Backend::Sqlite => s
            .server_home()
            .join("tenants")
            .join(format!("{lower}.db"))
            .exists(),
    }
}

async fn audit(s: &TestServer) -> Vec<AuditRecord> {
    s.state.control.audit_list(1000).await.expect("audit list")
}

fn has_audit(rows: &[AuditRecord], action: &str, target: &str) -> bool {
    rows.iter()
        .any(|r| r.action == action && r.target == target && r.actor.contains("bootstrap"))
}

async fn tenant_names(s: &TestServer) -> Vec<String> {
    let v = s.get("/v1/tenants", &s.admin).await.json();
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect()
}

async fn tenant_rules(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    for bad in ["", "1abc", "-ab", "a b", "ä", "a\"b", &"a".repeat(64)] {
        let r = post(&s, "/v1/tenants", &s.admin, json!({"name": bad})).await;
        expect(&r, 400, "invalid_tenant_name", &format!("name {bad:?}"));
    }
    for reserved in ["public", "PUBLIC", "Public", "pg_x", "PG_catalog"] {
        let r = post(&s, "/v1/tenants", &s.admin, json!({"name": reserved})).await;
        expect(
            &r,
            400,
            "reserved_tenant_name",
            &format!("name {reserved:?}"),
        );
    }
    let longest = format!("_{}", "a".repeat(62));
    let r = post(&s, "/v1/tenants", &s.admin, json!({"name": longest})).await;
    assert_eq!(r.status, StatusCode::CREATED, "63 chars: {}", r.text());
    let r = post(
        &s,
        "/v1/tenants",
        &s.admin,
        json!({"name": "Acme", "description": "the first"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"name": "Acme", "description": "the first"})
    );
    for dup in ["Acme", "acme", "ACME"] {
        let r = post(&s, "/v1/tenants", &s.admin, json!({"name": dup})).await;
        assert_eq!(
            r.status,
            StatusCode::CONFLICT,
            "duplicate {dup}: {}",
            r.text()
        );
        assert!(!r.error_code().is_empty());
    }
    assert!(tenant_data_exists(&s, "acme").await);
    let list = s.get("/v1/tenants", &s.admin).await.json();
    let acme = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|t| t["name"] == "Acme")
        .unwrap_or_else(|| panic!("Acme not listed: {list}"))
        .clone();
    assert_eq!(acme["description"], "the first");
    assert!(
        acme["created_at"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{acme}"
    );
    assert_eq!(list["total"], 3, "public, the 63-char one, Acme: {list}");

    for public in ["public", "PUBLIC"] {
        let r = delete(&s, &format!("/v1/tenants/{public}"), &s.admin).await;
        expect(&r, 400, "reserved_tenant_name", &format!("delete {public}"));
    }
    let r = delete(&s, "/v1/tenants/ghost", &s.admin).await;
    expect(&r, 404, "tenant_not_found", "delete unknown");
    let r = s.get("/v1/tenants/ghost/workflows", &s.admin).await;
    expect(&r, 404, "tenant_not_found", "unknown tenant's path");
}

async fn keys(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    s.create_tenant("acme").await;
    s.create_tenant("other").await;
    // The tenant's admin (created by the global admin) manages the tenant's keys itself.
    let tadmin = s.create_key("acme", "admin").await;
    let r = post(
        &s,
        "/v1/tenants/acme/keys",
        &tadmin.plaintext,
        json!({"name": "ci", "role": "write"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let created = r.json();
    let mut fields: Vec<&str> = created
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created_at",
            "id",
            "is_admin",
            "key",
            "name",
            "permissions",
            "tenant_id"
        ]
    );
    let plaintext = created["key"].as_str().expect("key").to_string();
    assert!(
        plaintext.starts_with("clk_") && plaintext.len() == 47,
        "{plaintext}"
    );
    assert_eq!(created["permissions"], "write");
    assert_eq!(created["tenant_id"], "acme");
    assert_eq!(created["is_admin"], false);
    let id = created["id"].as_str().expect("id").to_string();

    let r = s.get("/v1/auth/whoami", &plaintext).await;
    assert_eq!(
        r.json(),
        json!({"tenant_id": "acme", "role": "write", "is_admin": false, "name": "ci"})
    );
    // Default role read; bad roles and names refused.
    let r = post(&s, "/v1/tenants/acme/keys", &s.admin, json!({"name": "r"})).await;
    assert_eq!(r.json()["permissions"], "read", "{}", r.text());
    let r = post(
        &s,
        "/v1/tenants/acme/keys",
        &s.admin,
        json!({"name": "x", "role": "root"}),
    )
    .await;
    expect(&r, 400, "invalid_role", "role root");
    for name in ["", "   ", "a\nb", &"n".repeat(129)] {
        let r = post(&s, "/v1/tenants/acme/keys", &s.admin, json!({"name": name})).await;
        expect(&r, 400, "invalid_key_name", &format!("key name {name:?}"));
    }
    let r = post(&s, "/v1/tenants/ghost/keys", &s.admin, json!({"name": "x"})).await;
    expect(&r, 404, "tenant_not_found", "key in unknown tenant");
    // A write key cannot make keys; a tenant admin cannot make keys elsewhere.
    let r = post(
        &s,
        "/v1/tenants/acme/keys",
        &plaintext,
        json!({"name": "x"}),
    )
    .await;
    expect(&r, 403, "insufficient_role", "write key creating a key");
    let r = post(
        &s,
        "/v1/tenants/other/keys",
        &tadmin.plaintext,
        json!({"name": "x"}),
    )
    .await;
    expect(&r, 403, "tenant_forbidden", "admin of acme in other");
    // Keys made on /v1/auth/keys are public's, never global.
    let r = post(
        &s,
        "/v1/auth/keys",
        &s.admin,
        json!({"name": "pub", "role": "admin"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let public_admin = r.json();
    assert_eq!(public_admin["tenant_id"], "public");
    let r = s
        .get("/v1/auth/keys", public_admin["key"].as_str().expect("key"))
        .await;
    expect(
        &r,
        403,
        "insufficient_role",
        "public admin on a global route",
    );

    // Lists: metadata only.
    let hash = cloacina::auth::key_hash(&plaintext);
    for (path, key) in [
        ("/v1/tenants/acme/keys", tadmin.plaintext.as_str()),
        ("/v1/auth/keys", s.admin.as_str()),
    ] {
        let r = s.get(path, key).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        let text = r.text();
        assert!(
            !text.contains(&plaintext) && !text.contains(&hash) && !text.contains("clk_"),
            "{path} shows a key or hash: {text}"
        );
        let v = r.json();
        for item in v["items"].as_array().expect("items") {
            let mut f: Vec<&str> = item
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            f.sort_unstable();
            assert_eq!(
                f,
                [
                    "created_at",
                    "id",
                    "is_admin",
                    "name",
                    "permissions",
                    "revoked",
                    "tenant_id"
                ],
                "{path}: {item}"
            );
        }
        assert_eq!(
            v["total"].as_u64(),
            Some(v["items"].as_array().expect("items").len() as u64)
        );
    }
    let acme_keys = s.get("/v1/tenants/acme/keys", &s.admin).await.json();
    assert_eq!(acme_keys["tenant_id"], "acme");
    assert!(
        acme_keys["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|k| k["tenant_id"] == "acme"),
        "{acme_keys}"
    );
    let all = s.get("/v1/auth/keys", &s.admin).await.json();
    assert!(
        all["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|k| k["name"] == "bootstrap" && k["is_admin"] == true && k["tenant_id"].is_null()),
        "{all}"
    );

    // Another tenant's key id through this tenant's route: not found, and not revoked.
    let other_key = s.create_key("other", "read").await;
    let r = delete(
        &s,
        &format!("/v1/tenants/acme/keys/{}", other_key.id),
        &tadmin.plaintext,
    )
    .await;
    expect(&r, 404, "key_not_found", "other tenant's key id");
    assert_eq!(
        s.get("/v1/auth/whoami", &other_key.plaintext).await.status,
        StatusCode::OK
    );

    // Revoke: refused on the very next request.
    assert_eq!(
        s.get("/v1/tenants/acme/workflows", &plaintext).await.status,
        StatusCode::OK
    );
    let r = delete(
        &s,
        &format!("/v1/tenants/acme/keys/{id}"),
        &tadmin.plaintext,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), json!({"status": "revoked", "id": id}));
    let r = s.get("/v1/tenants/acme/workflows", &plaintext).await;
    expect(&r, 401, "revoked_api_key", "revoked key");
    let listed = s.get("/v1/tenants/acme/keys", &s.admin).await.json();
    let row = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap_or_else(|| panic!("revoked key not listed: {listed}"))
        .clone();
    assert_eq!(row["revoked"], true);
    let r = delete(
        &s,
        &format!("/v1/auth/keys/{}", uuid::Uuid::new_v4()),
        &s.admin,
    )
    .await;
    expect(&r, 404, "key_not_found", "unknown key id");
    // The global route revokes any tenant's key.
    let r = delete(&s, &format!("/v1/auth/keys/{}", other_key.id), &s.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = s.get("/v1/auth/whoami", &other_key.plaintext).await;
    expect(
        &r,
        401,
        "revoked_api_key",
        "revoked through the global route",
    );

    let rows = audit(&s).await;
    assert!(rows.iter().any(|r| r.action == "key.bootstrap"), "{rows:?}");
    assert!(
        rows.iter().any(|r| r.action == "key.create"
            && r.target == id
            && r.actor.contains(&tadmin.id.to_string())),
        "no key.create by the tenant admin: {rows:?}"
    );
    assert!(
        rows.iter().any(|r| r.action == "key.revoke"
            && r.target == id
            && r.actor.contains(&tadmin.id.to_string())),
        "no key.revoke by the tenant admin: {rows:?}"
    );
    assert!(
        has_audit(&rows, "key.revoke", &other_key.id.to_string()),
        "{rows:?}"
    );
}

async fn tenant_delete(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    s.create_tenant("acme").await;
    let a = s.create_key("acme", "admin").await;
    let b = s.create_key("acme", "read").await;
    let already = s.create_key("acme", "read").await;
    let r = delete(&s, &format!("/v1/auth/keys/{}", already.id), &s.admin).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(tenant_data_exists(&s, "acme").await, "no data for acme");

    // A tenant admin cannot delete its own tenant.
    let r = delete(&s, "/v1/tenants/acme", &a.plaintext).await;
    expect(
        &r,
        403,
        "insufficient_role",
        "tenant admin deleting its tenant",
    );

    let r = delete(&s, "/v1/tenants/acme", &s.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "removed", "{v}");
    assert_eq!(v["name"], "acme", "{v}");
    assert_eq!(v["revoked_keys"], 2, "{v}");
    for k in [&a, &b] {
        let r = s.get("/v1/auth/whoami", &k.plaintext).await;
        expect(&r, 401, "revoked_api_key", "key of a deleted tenant");
    }
    assert!(
        !tenant_data_exists(&s, "acme").await,
        "acme's data is still there"
    );
    assert!(!tenant_names(&s).await.contains(&"acme".to_string()));
    let r = s.get("/v1/tenants/acme/workflows", &s.admin).await;
    expect(&r, 404, "tenant_not_found", "deleted tenant's path");
    let r = delete(&s, "/v1/tenants/acme", &s.admin).await;
    expect(&r, 404, "tenant_not_found", "second delete");

    let rows = audit(&s).await;
    assert!(has_audit(&rows, "tenant.create", "acme"), "{rows:?}");
    let del = rows
        .iter()
        .find(|r| r.action == "tenant.delete" && r.target == "acme")
        .unwrap_or_else(|| panic!("no tenant.delete: {rows:?}"));
    assert_eq!(del.detail["revoked_keys"], 2, "{del:?}");

    // The name is free again, and no key of the old tenant works in the new one (the old
    // keys stay listed, revoked, as history).
    s.create_tenant("acme").await;
    let r = s.get("/v1/tenants/acme/keys", &s.admin).await.json();
    assert!(
        r["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|k| k["revoked"] == true),
        "{r}"
    );
    for k in [&a, &b] {
        let r = s.get("/v1/tenants/acme/workflows", &k.plaintext).await;
        expect(&r, 401, "revoked_api_key", "old key in the re-made tenant");
    }
    assert!(tenant_data_exists(&s, "acme").await);
}

/// A delete naming the tenant in another case removes that tenant, not half of it.
async fn tenant_delete_other_case(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    s.create_tenant("Acme").await;
    let k = s.create_key("Acme", "read").await;
    assert_eq!(
        s.get("/v1/tenants/Acme/workflows", &k.plaintext)
            .await
            .status,
        StatusCode::OK
    );
    let r = delete(&s, "/v1/tenants/ACME", &s.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["name"], "Acme", "{v}");
    assert_eq!(v["revoked_keys"], 1, "{v}");
    let r = s.get("/v1/auth/whoami", &k.plaintext).await;
    expect(&r, 401, "revoked_api_key", "key of the deleted tenant");
    assert!(!tenant_data_exists(&s, "acme").await);
    let r = s.get("/v1/tenants/Acme/workflows", &s.admin).await;
    expect(&r, 404, "tenant_not_found", "deleted tenant's runtime");
    // And it can be made again.
    s.create_tenant("acme").await;
}

/// The last global admin key cannot be revoked (API keys are never global, so nobody could
/// manage tenants or keys again).
async fn last_admin_key(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let all = s.get("/v1/auth/keys", &s.admin).await.json();
    let id = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|k| k["name"] == "bootstrap")
        .and_then(|k| k["id"].as_str())
        .unwrap_or_else(|| panic!("no bootstrap key listed: {all}"))
        .to_string();
    let r = delete(&s, &format!("/v1/auth/keys/{id}"), &s.admin).await;
    expect(
        &r,
        409,
        "last_admin_key",
        "revoking the last global admin key",
    );
    assert_eq!(
        s.get("/v1/auth/whoami", &s.admin).await.status,
        StatusCode::OK
    );
    assert!(
        !audit(&s).await.iter().any(|r| r.action == "key.revoke"),
        "a refused revoke was audited"
    );
}

both_backends!(
    tenant_rules,
    keys,
    tenant_delete,
    tenant_delete_other_case,
    last_admin_key
);
