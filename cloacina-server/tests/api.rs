//! The one error shape everywhere: unknown routes, wrong methods, bad JSON, wrong content
//! types, oversized bodies and uploads, bad pagination, malformed and unknown ids, bad
//! execution contexts, malformed authorization headers. Each answer's status, code and body
//! shape (`{"error", "code"}` exactly) are checked.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Backend, Resp, TestServer};
use serde_json::json;

async fn server() -> TestServer {
    TestServer::start(Backend::Sqlite).await.expect("sqlite")
}

fn expect(r: &Resp, status: u16, code: &str, what: &str) {
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (status, code),
        "{what}: {}",
        r.text()
    );
}

async fn raw(s: &TestServer, method: Method, path: &str, ct: Option<&str>, body: Body) -> Resp {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", s.admin));
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    s.send(b.body(body).expect("request")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods() {
    let s = server().await;
    for path in [
        "/nope",
        "/v1/nope",
        "/v1/tenants/public/nope",
        "/v1/packages/x/y",
    ] {
        let r = s.call(Method::GET, path, None, None).await;
        expect(&r, 404, "route_not_found", path);
        // Authentication does not change an unknown route's answer.
        let r = s.get(path, &s.admin).await;
        expect(&r, 404, "route_not_found", path);
    }
    let r = s
        .call(Method::PUT, "/v1/tenants", Some(&s.admin), None)
        .await;
    expect(&r, 405, "method_not_allowed", "PUT /v1/tenants");
    let allow = r
        .headers
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow:?}"
    );
    let r = s.call(Method::POST, "/health", None, None).await;
    expect(&r, 405, "method_not_allowed", "POST /health");
    assert!(r.headers.contains_key("allow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies() {
    let s = server().await;
    let r = raw(
        &s,
        Method::POST,
        "/v1/tenants",
        Some("application/json"),
        Body::from("{not json"),
    )
    .await;
    expect(&r, 400, "invalid_json", "syntax error");
    let r = raw(
        &s,
        Method::POST,
        "/v1/tenants",
        Some("application/json"),
        Body::from(r#"{"description": "no name"}"#),
    )
    .await;
    expect(&r, 400, "invalid_json", "missing field");
    let r = raw(
        &s,
        Method::POST,
        "/v1/auth/keys",
        Some("application/json"),
        Body::from(r#"{"name": 5}"#),
    )
    .await;
    expect(&r, 400, "invalid_json", "wrong type");
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let r = raw(
            &s,
            Method::POST,
            "/v1/tenants",
            ct,
            Body::from(r#"{"name": "x"}"#),
        )
        .await;
        expect(
            &r,
            415,
            "unsupported_media_type",
            &format!("content type {ct:?}"),
        );
    }
    // Larger than the 1 MiB JSON limit.
    let big = json!({"name": "x", "description": "d".repeat(2 * 1024 * 1024)}).to_string();
    let r = raw(
        &s,
        Method::POST,
        "/v1/tenants",
        Some("application/json"),
        Body::from(big.clone()),
    )
    .await;
    expect(&r, 413, "body_too_large", "oversized JSON");
    let r = raw(
        &s,
        Method::POST,
        "/v1/tenants/public/workflows/w/execute",
        Some("application/json"),
        Body::from(big),
    )
    .await;
    expect(&r, 413, "body_too_large", "oversized execute body");
    let r = raw(
        &s,
        Method::POST,
        "/v1/tenants/public/workflows/w/execute",
        Some("application/json"),
        Body::from("{"),
    )
    .await;
    expect(&r, 400, "invalid_json", "execute syntax error");
}

/// Uploads have their own limit (`max_upload_bytes`), not the JSON one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_limit() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.max_upload_bytes = 4096)
        .await
        .expect("sqlite");
    let path = "/v1/tenants/public/workflows";
    let r = raw(
        &s,
        Method::POST,
        path,
        Some("application/octet-stream"),
        Body::from(vec![7u8; 8192]),
    )
    .await;
    expect(&r, 413, "body_too_large", "raw upload over the limit");
    let boundary = "XyZ";
    let mut form = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"p.cloacina\"\r\ncontent-type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    form.extend(vec![7u8; 8192]);
    form.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let r = raw(
        &s,
        Method::POST,
        path,
        Some(&format!("multipart/form-data; boundary={boundary}")),
        Body::from(form),
    )
    .await;
    expect(&r, 413, "body_too_large", "multipart upload over the limit");
    // Under the limit: read, then refused as not an archive.
    let r = raw(
        &s,
        Method::POST,
        path,
        Some("application/octet-stream"),
        Body::from(vec![7u8; 1024]),
    )
    .await;
    expect(&r, 400, "archive_invalid", "small garbage upload");
    let r = raw(
        &s,
        Method::POST,
        path,
        Some("multipart/form-data; boundary=XyZ"),
        Body::from(
            "--XyZ\r\ncontent-disposition: form-data; name=\"other\"\r\n\r\nx\r\n--XyZ--\r\n",
        ),
    )
    .await;
    expect(&r, 400, "invalid_upload", "multipart without a file part");

    // With the default limit, an upload larger than the JSON limit is read (not a 413).
    let s = server().await;
    let r = raw(
        &s,
        Method::POST,
        path,
        Some("application/octet-stream"),
        Body::from(vec![7u8; 2 * 1024 * 1024]),
    )
    .await;
    expect(
        &r,
        400,
        "archive_invalid",
        "2 MiB upload under a 64 MiB limit",
    );
}

/// Every list route (every GET documenting a `limit` parameter) refuses out-of-range pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination() {
    let s = server().await;
    let doc = s
        .call(Method::GET, "/v1/openapi.json", None, None)
        .await
        .json();
    let mut lists = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let Some(get) = item.get("get") else { continue };
        let has_limit = get["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "limit"));
        // A single object's route (ends with a parameter) is not a list, even when it
        // shares the list's query parameters.
        let path = path.replace("{tenant}", "public");
        if has_limit && !path.contains('{') {
            lists.push(path);
        }
    }
    for expected in [
        "/v1/auth/keys",
        "/v1/tenants",
        "/v1/tenants/public/keys",
        "/v1/tenants/public/executions",
        "/v1/packages",
    ] {
        assert!(
            lists.iter().any(|l| l == expected),
            "{expected} documents no limit parameter; lists: {lists:?}"
        );
    }
    for list in &lists {
        for query in ["limit=0", "limit=1001", "offset=-1", "limit=0&offset=5"] {
            let path = format!("{list}?{query}");
            let r = s.get(&path, &s.admin).await;
            expect(&r, 400, "invalid_pagination", &path);
        }
        let path = format!("{list}?limit=abc");
        let r = s.get(&path, &s.admin).await;
        expect(&r, 400, "invalid_query", &path);
        for query in ["limit=1", "limit=1000&offset=0", "offset=5"] {
            let path = format!("{list}?{query}");
            let r = s.get(&path, &s.admin).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
            let v = r.json();
            let items = v
                .get("items")
                .and_then(|i| i.as_array())
                .unwrap_or_else(|| panic!("{path}: no items: {v}"));
            let total = v["total"]
                .as_u64()
                .unwrap_or_else(|| panic!("{path}: no total: {v}"));
            assert!(items.len() as u64 <= total, "{path}: {v}");
        }
    }
    // total counts every row, not the page.
    let r = s.get("/v1/tenants?limit=1&offset=1", &s.admin).await.json();
    assert_eq!(r["items"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(r["total"], 1, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_ids_and_contexts() {
    let s = server().await;
    let base = "/v1/tenants/public/executions";
    for suffix in ["", "/events", "/events/stream", "/tasks"] {
        let path = format!("{base}/not-a-uuid{suffix}");
        expect(&s.get(&path, &s.admin).await, 400, "invalid_path", &path);
        let path = format!("{base}/{}{suffix}", uuid::Uuid::new_v4());
        expect(
            &s.get(&path, &s.admin).await,
            404,
            "execution_not_found",
            &path,
        );
    }
    for action in ["cancel", "pause", "resume"] {
        let path = format!("{base}/not-a-uuid/{action}");
        let r = s.call(Method::POST, &path, Some(&s.admin), None).await;
        expect(&r, 400, "invalid_path", &path);
        let path = format!("{base}/{}/{action}", uuid::Uuid::new_v4());
        let r = s.call(Method::POST, &path, Some(&s.admin), None).await;
        expect(&r, 404, "execution_not_found", &path);
    }
    let path = "/v1/auth/keys/not-a-uuid";
    let r = s.call(Method::DELETE, path, Some(&s.admin), None).await;
    expect(&r, 400, "invalid_path", path);
    let path = "/v1/packages/not-a-uuid";
    expect(&s.get(path, &s.admin).await, 400, "invalid_path", path);
    let r = s.get(&format!("{base}?status=Exploded"), &s.admin).await;
    expect(&r, 400, "invalid_query", "unknown status filter");

    let execute = "/v1/tenants/public/workflows/no_such_workflow/execute";
    for context in [json!([1, 2]), json!("text"), json!(5), json!(true)] {
        let r = s
            .call(
                Method::POST,
                execute,
                Some(&s.admin),
                Some(json!({ "context": context })),
            )
            .await;
        expect(&r, 400, "invalid_context", &format!("context {context}"));
    }
    // A valid (or absent) context reaches the workflow lookup.
    for body in [Some(json!({"context": {"a": 1}})), Some(json!({})), None] {
        let r = s.call(Method::POST, execute, Some(&s.admin), body).await;
        expect(&r, 404, "workflow_not_found", "unknown workflow");
    }
}

/// Authorization headers that are not `Bearer <key>` are 401s naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorization() {
    let s = server().await;
    let key = s.admin.clone();
    let cases = [
        (format!("Basic {key}"), "malformed_api_key"),
        (format!("bearer {key}"), "malformed_api_key"),
        (format!("Bearer  {key}"), "malformed_api_key"),
        (format!("Bearer {key}x"), "malformed_api_key"),
        ("Bearer clk_short".to_string(), "malformed_api_key"),
        (key.clone(), "malformed_api_key"),
        ("Bearer".to_string(), "malformed_api_key"),
        (String::new(), "missing_api_key"),
    ];
    for (header, code) in cases {
        let req = Request::builder()
            .uri("/v1/auth/whoami")
            .header("authorization", &header)
            .body(Body::empty())
            .expect("request");
        let r = s.send(req).await;
        expect(&r, 401, code, &format!("authorization {header:?}"));
        assert!(
            !r.text().contains(&key),
            "the answer echoes the key: {}",
            r.text()
        );
    }
    let r = s.get("/v1/auth/whoami", &key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["is_admin"], true, "{v}");
    assert_eq!(v["tenant_id"], serde_json::Value::Null, "{v}");
    assert_eq!(v["role"], "admin", "{v}");
}

/// The unauthenticated operational routes answer what the contract says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_routes() {
    let s = server().await;
    let r = s.call(Method::GET, "/health", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"status": "ok"}));
    let r = s.call(Method::GET, "/ready", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"status": "ready"}));
    let r = s.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("cloacina_"), "{}", r.text());
    let r = s.get("/v1/health/status", &s.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["backend"], "sqlite", "{v}");
    assert!(v["version"].is_string(), "{v}");
}
