//! Every route of the API (taken from the generated OpenAPI document, so a new route is
//! covered without editing this file) called by every kind of caller: no key, a malformed
//! key, an unknown key, a revoked key, a read, write and admin key of the route's tenant, the
//! global admin, and a key of another tenant. Each answer's status and code are checked
//! against the wire contract, every error body is exactly `{"error", "code"}`, and every
//! answer carries the request id sent.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Backend, Key, TestServer, assert_error_shape};
use serde_json::{Value, json};
use uuid::Uuid;

/// The tenant whose paths the matrix calls.
const TENANT: &str = "acme";
/// Another tenant, whose admin key must not reach `TENANT`.
const OTHER: &str = "other_co";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Read,
    Write,
    Admin,
}

/// Who may call a route, as the wire contract says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// No authentication (operational routes).
    Public,
    /// Any valid key.
    AnyKey,
    /// Global admins only (key and tenant lifecycle).
    GlobalAdmin,
    /// A key of the path's `{tenant}` with at least this role (or a global admin).
    Tenant(Role),
    /// Any tenant's key with at least this role; it sees only its own tenant's resources.
    OwnTenant(Role),
}

fn access(doc_op: &Value, method: &str, path: &str) -> Access {
    let secured = doc_op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    if !secured {
        return Access::Public;
    }
    let by_method = if method == "get" {
        Role::Read
    } else {
        Role::Write
    };
    match path {
        "/v1/auth/whoami" | "/v1/health/status" => Access::AnyKey,
        p if p.starts_with("/v1/auth/keys") => Access::GlobalAdmin,
        "/v1/tenants" | "/v1/tenants/{name}" => Access::GlobalAdmin,
        p if p.starts_with("/v1/tenants/{tenant}/keys") => Access::Tenant(Role::Admin),
        p if p.contains("{tenant}") => Access::Tenant(by_method),
        _ => Access::OwnTenant(by_method),
    }
}

#[derive(Debug, Clone)]
enum Caller {
    NoHeader,
    /// Not `Bearer clk_...` at all.
    Malformed,
    /// `Bearer` with a key of the right form that no row has.
    Unknown,
    Revoked,
    Read,
    Write,
    TenantAdmin,
    GlobalAdmin,
    /// An admin key of another tenant.
    OtherTenant,
}

const CALLERS: [Caller; 9] = [
    Caller::NoHeader,
    Caller::Malformed,
    Caller::Unknown,
    Caller::Revoked,
    Caller::Read,
    Caller::Write,
    Caller::TenantAdmin,
    Caller::GlobalAdmin,
    Caller::OtherTenant,
];

struct Keys {
    revoked: Key,
    read: Key,
    write: Key,
    admin: Key,
    other: Key,
    unknown: String,
}

/// What a caller allowed through gets from the route, with the matrix's parameters (unknown
/// ids and names; a fresh package of the tenant for package-id routes).
fn allowed_answer(method: &str, path: &str) -> Option<(u16, Option<&'static str>)> {
    Some(match (method, path) {
        ("get", "/v1/auth/whoami") | ("get", "/v1/health/status") => (200, None),
        ("post", "/v1/auth/keys") => (201, None),
        ("get", "/v1/auth/keys") => (200, None),
        ("delete", "/v1/auth/keys/{id}") => (404, Some("key_not_found")),
        ("post", "/v1/tenants/{tenant}/keys") => (201, None),
        ("get", "/v1/tenants/{tenant}/keys") => (200, None),
        ("delete", "/v1/tenants/{tenant}/keys/{id}") => (404, Some("key_not_found")),
        ("post", "/v1/tenants") => (201, None),
        ("get", "/v1/tenants") => (200, None),
        ("delete", "/v1/tenants/{name}") => (404, Some("tenant_not_found")),
        ("post", "/v1/tenants/{tenant}/workflows") => (400, Some("archive_invalid")),
        ("get", "/v1/tenants/{tenant}/workflows") => (200, None),
        ("get", "/v1/tenants/{tenant}/workflows/{name}") => (404, Some("workflow_not_found")),
        ("delete", "/v1/tenants/{tenant}/workflows/{package_name}/{version}") => {
            (404, Some("package_not_found"))
        }
        ("post", "/v1/tenants/{tenant}/workflows/{name}/execute")
        | ("post", "/v1/tenants/{tenant}/workflows/{name}/pause")
        | ("post", "/v1/tenants/{tenant}/workflows/{name}/resume") => {
            (404, Some("workflow_not_found"))
        }
        ("get", "/v1/tenants/{tenant}/executions") => (200, None),
        ("get", "/v1/tenants/{tenant}/executions/{id}")
        | ("get", "/v1/tenants/{tenant}/executions/{id}/events")
        | ("get", "/v1/tenants/{tenant}/executions/{id}/events/stream")
        | ("get", "/v1/tenants/{tenant}/executions/{id}/tasks")
        | ("post", "/v1/tenants/{tenant}/executions/{id}/cancel")
        | ("post", "/v1/tenants/{tenant}/executions/{id}/pause")
        | ("post", "/v1/tenants/{tenant}/executions/{id}/resume") => {
            (404, Some("execution_not_found"))
        }
        ("get", "/v1/packages") => (200, None),
        ("get", "/v1/packages/{id}") => (200, None),
        ("delete", "/v1/packages/{id}") => (200, None),
        ("get", "/v1/health/graphs") | ("get", "/v1/health/accumulators") => (200, None),
        ("get", "/v1/health/graphs/{name}") => (404, Some("graph_not_found")),
        ("get", "/v1/tenants/{tenant}/triggers") => (200, None),
        ("get", "/v1/tenants/{tenant}/triggers/{name}") => (404, Some("trigger_not_found")),
        _ => return None,
    })
}

/// What `caller` must get from a route with `access`: `Ok((status, code))` for a precise
/// answer, `Err(())` when the caller is allowed through (see [`allowed_answer`]).
fn expected(
    access: Access,
    caller: &Caller,
    path: &str,
) -> Result<(u16, Option<&'static str>), ()> {
    if access == Access::Public {
        return Ok((200, None));
    }
    let role = match caller {
        Caller::NoHeader => return Ok((401, Some("missing_api_key"))),
        Caller::Malformed => return Ok((401, Some("malformed_api_key"))),
        Caller::Unknown => return Ok((401, Some("invalid_api_key"))),
        Caller::Revoked => return Ok((401, Some("revoked_api_key"))),
        Caller::GlobalAdmin => return Err(()),
        Caller::Read => Role::Read,
        Caller::Write => Role::Write,
        Caller::TenantAdmin | Caller::OtherTenant => Role::Admin,
    };
    let other = matches!(caller, Caller::OtherTenant);
    match access {
        Access::Public => unreachable!(),
        Access::AnyKey => Err(()),
        Access::GlobalAdmin => Ok((403, Some("insufficient_role"))),
        Access::Tenant(_) if other => Ok((403, Some("tenant_forbidden"))),
        Access::Tenant(need) | Access::OwnTenant(need) => {
            // Another tenant's package is a 404, as if it did not exist.
            if other && path.starts_with("/v1/packages/{id}") {
                Ok((404, Some("package_not_found")))
            } else if role < need {
                Ok((403, Some("insufficient_role")))
            } else {
                Err(())
            }
        }
    }
}

async fn setup(s: &TestServer) -> Keys {
    s.create_tenant(TENANT).await;
    s.create_tenant(OTHER).await;
    let revoked = s.create_key(TENANT, "admin").await;
    let r = s
        .call(
            Method::DELETE,
            &format!("/v1/tenants/{TENANT}/keys/{}", revoked.id),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "revoke: {}", r.text());
    Keys {
        revoked,
        read: s.create_key(TENANT, "read").await,
        write: s.create_key(TENANT, "write").await,
        admin: s.create_key(TENANT, "admin").await,
        other: s.create_key(OTHER, "admin").await,
        unknown: cloacina::auth::key_generate().plaintext,
    }
}

fn authorization(keys: &Keys, admin: &str, caller: &Caller) -> Option<String> {
    let bearer = |k: &str| format!("Bearer {k}");
    match caller {
        Caller::NoHeader => None,
        Caller::Malformed => Some("Bearer not-a-key".to_string()),
        Caller::Unknown => Some(bearer(&keys.unknown)),
        Caller::Revoked => Some(bearer(&keys.revoked.plaintext)),
        Caller::Read => Some(bearer(&keys.read.plaintext)),
        Caller::Write => Some(bearer(&keys.write.plaintext)),
        Caller::TenantAdmin => Some(bearer(&keys.admin.plaintext)),
        Caller::GlobalAdmin => Some(bearer(admin)),
        Caller::OtherTenant => Some(bearer(&keys.other.plaintext)),
    }
}

/// The concrete path of `template` for one call.
async fn fill(s: &TestServer, template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing brace") + start;
        let param = &rest[start + 1..end];
        let value = match param {
            "tenant" => TENANT.to_string(),
            "id" if template.starts_with("/v1/packages/") => {
                s.package_row(TENANT).await.to_string()
            }
            "id" => Uuid::new_v4().to_string(),
            "name" if template == "/v1/tenants/{name}" => "ghost_tenant".to_string(),
            "name" => "no_such_thing".to_string(),
            "package_name" => "no_such_package".to_string(),
            "version" => "9.9.9".to_string(),
            other => panic!(
                "the matrix has no value for path parameter '{other}' of {template}; add one to fill()"
            ),
        };
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn body_for(method: &str, template: &str, n: usize) -> (Option<&'static str>, Body) {
    if method == "get" || method == "delete" {
        return (None, Body::empty());
    }
    if template == "/v1/tenants/{tenant}/workflows" {
        return (
            Some("application/octet-stream"),
            Body::from(&b"not a package archive"[..]),
        );
    }
    let v = match template {
        "/v1/tenants" => json!({"name": format!("matrix_{n}")}),
        t if t.ends_with("/keys") => json!({"name": format!("matrix-{n}"), "role": "read"}),
        _ => json!({}),
    };
    (Some("application/json"), Body::from(v.to_string()))
}

async fn matrix(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let keys = setup(&s).await;
    let doc = s
        .call(Method::GET, "/v1/openapi.json", None, None)
        .await
        .json();
    let paths = doc["paths"].as_object().expect("paths in the document");
    assert!(paths.len() > 20, "suspiciously few paths: {}", paths.len());
    let mut failures = Vec::new();
    let mut n = 0usize;
    for (template, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let acc = access(op, method, template);
            for caller in &CALLERS {
                n += 1;
                let path = fill(&s, template).await;
                let request_id = format!("matrix-{n}");
                let (content_type, body) = body_for(method, template, n);
                let mut b = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&path)
                    .header("x-request-id", &request_id);
                if let Some(a) = authorization(&keys, &s.admin, caller) {
                    b = b.header("authorization", a);
                }
                if let Some(ct) = content_type {
                    b = b.header("content-type", ct);
                }
                let r = s.send(b.body(body).expect("request")).await;
                let what = format!(
                    "{} {path} ({template}) as {caller:?} [{acc:?}]",
                    method.to_uppercase()
                );
                if r.request_id() != Some(request_id.as_str()) {
                    failures.push(format!(
                        "{what}: x-request-id {:?}, sent {request_id}",
                        r.request_id()
                    ));
                }
                let want = match expected(acc, caller, template) {
                    Ok(w) => w,
                    Err(()) => match allowed_answer(method, template) {
                        Some(w) => w,
                        None => {
                            // A route the table does not know: at least it let the caller in.
                            if matches!(r.status.as_u16(), 401 | 403 | 405)
                                || r.status == StatusCode::NOT_FOUND
                                    && r.json()["code"] == "route_not_found"
                            {
                                failures.push(format!(
                                    "{what}: {} {} (new route? add it to allowed_answer())",
                                    r.status,
                                    r.text()
                                ));
                            }
                            continue;
                        }
                    },
                };
                let status = r.status.as_u16();
                if status >= 400 {
                    assert_error_shape(&r);
                }
                let code = (status >= 400).then(|| r.json()["code"].as_str().map(String::from));
                let code = code.flatten();
                if status != want.0 || (want.1.is_some() && code.as_deref() != want.1) {
                    failures.push(format!(
                        "{what}: got {status} {code:?}, want {} {:?}; body {}",
                        want.0,
                        want.1,
                        r.text()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} calls answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A client's own request id is echoed when valid; otherwise (or when absent) the server
/// makes one.
async fn request_ids(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    for (sent, echoed) in [
        (Some("abc-123"), true),
        (Some("has space"), false),
        (Some(&*"x".repeat(200)), false),
        (None, false),
    ] {
        let mut b = Request::builder().uri("/v1/no/such/route");
        if let Some(v) = sent {
            b = b.header("x-request-id", v);
        }
        let r = s.send(b.body(Body::empty()).expect("request")).await;
        assert_eq!(r.error_code(), "route_not_found");
        let got = r.request_id().expect("x-request-id");
        if echoed {
            assert_eq!(Some(got), sent);
        } else {
            assert_ne!(Some(got), sent);
            assert!(Uuid::parse_str(got).is_ok(), "generated id {got:?}");
        }
    }
}

both_backends!(matrix, request_ids);
