//! The OpenAPI document at `/v1/openapi.json` and the router agree with each other and with
//! the wire contract: every route of the contract is documented, every documented path and
//! method is routed, and no path answers a method the document does not list.

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{Backend, TestServer};

/// Every route of the wire contract (/work/shared/wire.md), plus the live event stream this
/// project designed (SSE). A new route must be added here (and to docs/http-api.md).
const WIRE_ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
    ("get", "/v1/health/status"),
    ("post", "/v1/auth/keys"),
    ("get", "/v1/auth/keys"),
    ("delete", "/v1/auth/keys/{id}"),
    ("post", "/v1/tenants/{tenant}/keys"),
    ("get", "/v1/tenants/{tenant}/keys"),
    ("delete", "/v1/tenants/{tenant}/keys/{id}"),
    ("get", "/v1/auth/whoami"),
    ("post", "/v1/tenants"),
    ("get", "/v1/tenants"),
    ("delete", "/v1/tenants/{name}"),
    ("post", "/v1/tenants/{tenant}/workflows"),
    ("get", "/v1/tenants/{tenant}/workflows"),
    ("get", "/v1/tenants/{tenant}/workflows/{name}"),
    (
        "delete",
        "/v1/tenants/{tenant}/workflows/{package_name}/{version}",
    ),
    ("post", "/v1/tenants/{tenant}/workflows/{name}/execute"),
    ("post", "/v1/tenants/{tenant}/workflows/{name}/pause"),
    ("post", "/v1/tenants/{tenant}/workflows/{name}/resume"),
    ("get", "/v1/packages"),
    ("get", "/v1/packages/{id}"),
    ("delete", "/v1/packages/{id}"),
    ("get", "/v1/tenants/{tenant}/executions"),
    ("get", "/v1/tenants/{tenant}/executions/{id}"),
    ("get", "/v1/tenants/{tenant}/executions/{id}/events"),
    ("get", "/v1/tenants/{tenant}/executions/{id}/events/stream"),
    ("get", "/v1/tenants/{tenant}/executions/{id}/tasks"),
    ("post", "/v1/tenants/{tenant}/executions/{id}/cancel"),
    ("post", "/v1/tenants/{tenant}/executions/{id}/pause"),
    ("post", "/v1/tenants/{tenant}/executions/{id}/resume"),
    ("get", "/v1/health/graphs"),
    ("get", "/v1/health/graphs/{name}"),
    ("get", "/v1/health/accumulators"),
    ("get", "/v1/tenants/{tenant}/triggers"),
    ("get", "/v1/tenants/{tenant}/triggers/{name}"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// A concrete path for `template` (values need not exist: only routing is checked).
fn concrete(template: &str) -> String {
    template
        .replace("{tenant}", "public")
        .replace("{id}", "00000000-0000-4000-8000-000000000000")
        .replace("{name}", "some_name")
        .replace("{package_name}", "some_package")
        .replace("{version}", "1.0.0")
}

fn documented(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_lists_exactly_the_wire_routes() {
    let s = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let r = s.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "not an OpenAPI 3 document: {}",
        doc["openapi"]
    );
    let documented = documented(&doc);
    let wire: BTreeSet<(String, String)> = WIRE_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = wire.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&wire).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the OpenAPI document and the wire contract differ.\nmissing from the document: {missing:?}\nin the document but not in the contract list (add to WIRE_ROUTES and docs/http-api.md): {extra:?}"
    );
    // Every secured operation names the bearer scheme, which the document defines.
    assert!(
        doc["components"]["securitySchemes"]["api_key"].is_object(),
        "no api_key security scheme"
    );
}

/// Every documented path answers its documented methods (never `route_not_found` or
/// `method_not_allowed`), and every other method with a 405 whose `Allow` lists exactly the
/// documented ones: nothing is routed that is not documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_routed_and_nothing_else() {
    let s = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let doc = s
        .call(Method::GET, "/v1/openapi.json", None, None)
        .await
        .json();
    let documented = documented(&doc);
    let mut failures = Vec::new();
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for template in paths {
        let path = concrete(template);
        let allowed: BTreeSet<String> = documented
            .iter()
            .filter(|(_, p)| p == template)
            .map(|(m, _)| m.to_uppercase())
            .collect();
        for method in METHODS {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&path)
                .header("authorization", format!("Bearer {}", s.admin))
                .body(Body::empty())
                .expect("request");
            let r = s.send(req).await;
            let code = if r.status.is_success() {
                String::new()
            } else {
                serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v["code"].as_str().map(String::from))
                    .unwrap_or_default()
            };
            let what = format!("{} {path} ({template})", method.to_uppercase());
            if allowed.contains(&method.to_uppercase()) {
                if code == "route_not_found" || code == "method_not_allowed" {
                    failures.push(format!(
                        "{what}: documented but answers {} {code}",
                        r.status
                    ));
                }
                continue;
            }
            if r.status != StatusCode::METHOD_NOT_ALLOWED || code != "method_not_allowed" {
                failures.push(format!(
                    "{what}: not documented but answers {} {code} (want 405 method_not_allowed)",
                    r.status
                ));
                continue;
            }
            let allow: BTreeSet<String> = r
                .headers
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .split(',')
                .map(|m| m.trim().to_uppercase())
                .filter(|m| !m.is_empty() && m != "HEAD")
                .collect();
            if allow != allowed {
                failures.push(format!(
                    "{what}: Allow {allow:?}, documented methods {allowed:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
