//! Test databases: a fresh SQLite file in a temp dir, or a fresh PostgreSQL schema.
//!
//! PostgreSQL comes from `CLOACINA_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it is unreachable, tests skip loudly,
//! except under `CI=true`, where that is a failure.
#![allow(dead_code)]

use cloacina::store::{Store, StoreOptions};

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

/// One test's database. Keep it alive for the test's duration; call `cleanup` at the end.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub schema: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh database, or `None` (after a loud message) when PostgreSQL is unavailable locally.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Some(TestDb {
                    backend,
                    url,
                    schema: "public".to_string(),
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let url = pg_url();
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let db = TestDb {
                    backend,
                    url,
                    schema,
                    _dir: None,
                };
                match db.try_open().await {
                    Ok(store) => {
                        drop(store);
                        Some(db)
                    }
                    Err(e) if in_ci() => panic!(
                        "PostgreSQL is required under CI=true but unreachable at {}: {e}",
                        db.url
                    ),
                    Err(e) => {
                        eprintln!(
                            "\n*** SKIPPING PostgreSQL test: cannot reach {} ({e}). Set CLOACINA_TEST_POSTGRES_URL or start PostgreSQL. ***\n",
                            db.url
                        );
                        None
                    }
                }
            }
        }
    }

    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            schema: self.schema.clone(),
            ..StoreOptions::default()
        }
    }

    pub async fn try_open(&self) -> Result<Store, cloacina::StoreError> {
        Store::open_with(&self.url, self.options()).await
    }

    pub async fn open(&self) -> Store {
        self.try_open()
            .await
            .unwrap_or_else(|e| panic!("opening {:?} store at {}: {e}", self.backend, self.url))
    }

    /// Drops the PostgreSQL schema (the SQLite temp dir goes with `self`).
    pub async fn cleanup(self) {
        if self.backend == Backend::Postgres
            && let Ok(store) = self.try_open().await
        {
            let _ = store.schema_drop().await;
        }
    }
}

/// Defines `mod sqlite { #[test] fn NAME }` and `mod postgres { #[test] fn NAME }` running the
/// same body (`async fn NAME(db: &TestDb)` in the enclosing module) on each backend.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::new($crate::common::Backend::Sqlite).await.expect("sqlite");
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::common::TestDb::new($crate::common::Backend::Postgres).await else { return };
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )+
        }
    };
}
