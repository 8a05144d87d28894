//! Fault injection: what goes wrong in production, made to happen on purpose. Each fault is
//! real (another process holds the lock; the server drops the connections), not simulated.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Another process holding a SQLite database's write lock (`BEGIN EXCLUSIVE`) until dropped.
/// Readers go on (WAL); writers wait out their busy timeout and then fail.
pub struct SqliteLock {
    holder: Child,
}

impl SqliteLock {
    /// Takes `db`'s write lock from a separate `python3` process (its standard `sqlite3`
    /// module) and returns once the lock is held.
    pub fn hold(db: &Path) -> SqliteLock {
        let mut holder = Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys, time\n\
                 c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                 c.execute('BEGIN EXCLUSIVE')\n\
                 print('locked', flush=True)\n\
                 time.sleep(3600)",
            ])
            .arg(db)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 holds the database's write lock");
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().expect("the holder's stdout"))
            .read_line(&mut line)
            .expect("read from the lock holder");
        assert_eq!(
            line.trim(),
            "locked",
            "the lock holder did not take the lock"
        );
        SqliteLock { holder }
    }
}

impl Drop for SqliteLock {
    /// Ending the holder releases the lock (SQLite rolls its transaction back).
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Terminates, from a separate connection (`psql`), every PostgreSQL connection whose
/// `application_name` is `application`, as an administrator or a failover would; returns how
/// many were ended. Give the process under test its own `application_name` (the URL's
/// `application_name=` parameter) so no other test's connections are touched.
pub fn postgres_terminate(url: &str, application: &str) -> usize {
    assert!(
        !application.is_empty()
            && application
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "application names here are plain words: {application:?}"
    );
    let out = Command::new("psql")
        .arg(url)
        .args(["-At", "-c"])
        .arg(format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{application}' AND pid <> pg_backend_pid()"
        ))
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloacina::Store;
    use cloacina::store::{ExecutionFilter, StoreOptions};

    fn postgres_url() -> String {
        std::env::var("CLOACINA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
    }

    /// The store under test loses its connections and rides through: a read after the
    /// termination still answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn terminated_connections_are_ended_and_the_store_reconnects() {
        let app = format!("e2e_faults_{}", std::process::id());
        let url = format!("{}?application_name={app}", postgres_url());
        // A schema of its own, dropped at the end: no other test's tables are touched.
        let options = StoreOptions {
            schema: format!("e2e_faults_{}", std::process::id()),
            ..StoreOptions::default()
        };
        let store = match Store::open_with(&url, options).await {
            Ok(s) => s,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("SKIPPED: PostgreSQL not reachable ({e})");
                return;
            }
            Err(e) => panic!("PostgreSQL must be reachable under CI=true: {e}"),
        };
        store
            .execution_list(ExecutionFilter::default())
            .await
            .expect("list");
        let ended = tokio::task::spawn_blocking({
            let (url, app) = (postgres_url(), app.clone());
            move || postgres_terminate(&url, &app)
        })
        .await
        .expect("join");
        assert!(ended >= 1, "the store's connections were ended: {ended}");
        store
            .execution_list(ExecutionFilter::default())
            .await
            .expect("the store reconnects after its connections were terminated");
        store.schema_drop().await.expect("drop the test schema");
        store.close().await;
    }

    #[test]
    fn a_held_sqlite_lock_stops_writers_until_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("x.db");
        let run = |sql: &str| {
            Command::new("python3")
                .args([
                    "-c",
                    "import sqlite3, sys\n\
                     c = sqlite3.connect(sys.argv[1], timeout=0.2, isolation_level=None)\n\
                     c.execute(sys.argv[2])",
                ])
                .arg(&db)
                .arg(sql)
                .output()
                .expect("python3")
        };
        assert!(run("CREATE TABLE t (x)").status.success());
        let lock = SqliteLock::hold(&db);
        let blocked = run("INSERT INTO t VALUES (1)");
        assert!(
            String::from_utf8_lossy(&blocked.stderr).contains("locked"),
            "{blocked:?}"
        );
        drop(lock);
        assert!(run("INSERT INTO t VALUES (1)").status.success());
    }
}
