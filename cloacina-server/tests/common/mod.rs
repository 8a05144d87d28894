//! In-process test servers: `Server::start` on a temp SQLite file or on a fresh PostgreSQL
//! database, driven through `cloacina_server::router(state)` with `tower::ServiceExt::oneshot`
//! (no socket, no serve loop).
//!
//! PostgreSQL comes from `CLOACINA_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test gets its own database (tenants create
//! schemas, so a schema per test is not enough), dropped when the server is dropped. When
//! PostgreSQL is unreachable the test skips loudly, except under `CI=true`, where it fails.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use cloacina::store::{BuildStatus, NewPackage};
use cloacina_server::ServerConfig;
use cloacina_server::state::SharedState;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn pg_url() -> String {
    std::env::var("CLOACINA_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.to_string())
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

async fn pg_admin() -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A fresh PostgreSQL database's URL and name, or `None` after a loud message.
async fn pg_database() -> Option<(String, String)> {
    let name = format!("cloacina_t_{}", Uuid::new_v4().simple());
    let created = async {
        let client = pg_admin().await?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
    }
    .await;
    match created {
        Ok(()) => Some((with_database(&pg_url(), &name), name)),
        Err(e) if in_ci() => panic!(
            "PostgreSQL is required under CI=true but cannot create a database at {}: {e}",
            pg_url()
        ),
        Err(e) => {
            eprintln!(
                "\n*** SKIPPING PostgreSQL test: cannot create a database at {} ({e}). Set CLOACINA_TEST_POSTGRES_URL or start PostgreSQL. ***\n",
                pg_url()
            );
            None
        }
    }
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", self.text()))
    }

    /// The error code, after checking the body is exactly `{"error": non-empty, "code"}`.
    pub fn error_code(&self) -> String {
        assert_error_shape(self);
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }

    pub fn request_id(&self) -> Option<&str> {
        self.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
    }
}

/// The body of an error answer is exactly `{"error": "<non-empty>", "code": "<non-empty>"}`.
pub fn assert_error_shape(r: &Resp) {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "error answer {} is not JSON ({e}): {:?}",
            r.status,
            r.text()
        )
    });
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "error"], "error body keys: {v}");
    assert!(
        obj["error"].as_str().is_some_and(|s| !s.trim().is_empty()),
        "error message must be a non-empty string: {v}"
    );
    assert!(
        obj["code"].as_str().is_some_and(|s| !s.is_empty()),
        "code must be a non-empty string: {v}"
    );
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "error content-type {ct:?}: {v}"
    );
}

/// A key made for a test.
#[derive(Debug, Clone)]
pub struct Key {
    pub id: Uuid,
    pub plaintext: String,
}

/// A started server (not serving on a socket) and its surroundings.
pub struct TestServer {
    pub backend: Backend,
    pub state: SharedState,
    pub router: Router,
    /// The global admin (bootstrap) key.
    pub admin: String,
    pub home: tempfile::TempDir,
    pub database_url: String,
    pg_database: Option<String>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server; `tweak` adjusts the config (e.g. `max_upload_bytes`).
    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> Option<TestServer> {
        let home = tempfile::tempdir().expect("temp home");
        let (database_url, pg_database) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", home.path().join("control.db").display()),
                None,
            ),
            Backend::Postgres => {
                let (url, name) = pg_database().await?;
                (url, Some(name))
            }
        };
        let admin = cloacina::auth::key_generate().plaintext;
        let mut config = ServerConfig::new(database_url.clone(), home.path().join("home"));
        config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        config.bootstrap_key = Some(admin.clone());
        config.shutdown_timeout = Duration::from_secs(2);
        tweak(&mut config);
        let server = cloacina_server::Server::start(config)
            .await
            .unwrap_or_else(|e| panic!("server start on {database_url}: {e}"));
        let state = server.state().clone();
        drop(server);
        let router = cloacina_server::router(state.clone());
        Some(TestServer {
            backend,
            state,
            router,
            admin,
            home,
            database_url,
            pg_database,
        })
    }

    /// The server's home (`ServerConfig::home`).
    pub fn server_home(&self) -> std::path::PathBuf {
        self.state.config.home.clone()
    }

    pub async fn send(&self, req: Request<Body>) -> Resp {
        let what = format!("{} {}", req.method(), req.uri());
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading body: {e}"))
            .to_bytes()
            .to_vec();
        let r = Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        };
        assert!(
            r.request_id().is_some_and(|v| !v.is_empty()),
            "{what}: no x-request-id on the answer {}",
            r.status
        );
        r
    }

    /// A request with an optional bearer key and an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        let req = match body {
            Some(v) => b
                .header("content-type", "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .expect("request");
        self.send(req).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, Some(key), None).await
    }

    /// Creates tenant `name` with the admin key (must succeed).
    pub async fn create_tenant(&self, name: &str) {
        let r = self
            .call(
                Method::POST,
                "/v1/tenants",
                Some(&self.admin),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "create tenant {name}: {}",
            r.text()
        );
    }

    /// Creates a key with `role` in `tenant` with the admin key (must succeed).
    pub async fn create_key(&self, tenant: &str, role: &str) -> Key {
        let r = self
            .call(
                Method::POST,
                &format!("/v1/tenants/{tenant}/keys"),
                Some(&self.admin),
                Some(json!({"name": format!("{tenant}-{role}"), "role": role})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "create key: {}", r.text());
        let v = r.json();
        Key {
            id: v["id"].as_str().expect("id").parse().expect("uuid"),
            plaintext: v["key"].as_str().expect("key").to_string(),
        }
    }

    /// A package row in `tenant` (not loaded: its archive is not a real package), for routes
    /// addressed by package id.
    pub async fn package_row(&self, tenant: &str) -> Uuid {
        self.state
            .control
            .package_create(NewPackage {
                tenant: tenant.to_string(),
                name: format!("pkg_{}", Uuid::new_v4().simple()),
                version: "1.0.0".to_string(),
                archive: b"not an archive".to_vec(),
                signature: None,
                has_library: false,
                build_status: BuildStatus::Success,
            })
            .await
            .expect("package row")
            .id
    }

    /// Does schema `name` exist (PostgreSQL)?
    pub async fn pg_schema_exists(&self, name: &str) -> bool {
        let (client, conn) = tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let rows = client
            .query(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1",
                &[&name],
            )
            .await
            .expect("query schemata");
        !rows.is_empty()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let Some(name) = self.pg_database.take() else {
            return;
        };
        // The server's pools may still hold connections: FORCE ends them.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(client) = pg_admin().await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Defines `mod sqlite { #[tokio::test] fn NAME }` and `mod postgres { ... }` running
/// `async fn NAME(backend: Backend)` of the enclosing module on each backend.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )+
        }
    };
}
