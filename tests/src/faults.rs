//! Fault injection: what goes wrong in production, made to happen on purpose. Each fault is
//! real (another process holds the lock; the server drops the connections), not simulated.

use std::io::BufRead;
use std::path::{Path, PathBuf};
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

/// Whether this process may mount filesystems and run commands as another user (root).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Under `CI=true` a fault test must run; elsewhere it may be skipped with a line saying why.
fn skip_or_fail(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "this fault test must run under CI=true: {why}"
    );
    eprintln!("SKIPPED: {why}");
}

/// A small tmpfs mounted over a directory of the test's own (a home), so the test can fill
/// the disk or make it read-only without touching anything else. Unmounted on drop (lazily if
/// something still has a file open), even when the test panics.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_kib` KiB over `dir` (which exists and is empty); `None` (with a
    /// SKIPPED line) when mounting is not permitted, except under `CI=true`.
    pub fn mount(dir: &Path, size_kib: u64) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_kib}k,mode=0755"))
            .arg("tmpfs")
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir: dir.to_path_buf(),
            }),
            Ok(o) => {
                skip_or_fail(&format!(
                    "cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                None
            }
            Err(e) => {
                skip_or_fail(&format!("cannot run mount: {e}"));
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Remounts read-only (`ro`) or read-write. Read-only fails while a file on it is open for
    /// writing; the error says so.
    pub fn remount(&self, ro: bool) -> Result<(), String> {
        let out = Command::new("mount")
            .args(["-o", if ro { "remount,ro" } else { "remount,rw" }])
            .arg(&self.dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Fills the filesystem to the last byte with `<dir>/filler`; returns the bytes written.
    pub fn fill(&self) -> u64 {
        use std::io::Write as _;
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler file");
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // The last partial pages.
        for size in [4096usize, 512, 1] {
            while file.write(&chunk[..size]).is_ok_and(|n| n > 0) {
                written += size as u64;
            }
        }
        let _ = file.flush();
        written
    }

    /// Removes the filler: the space is back.
    pub fn free(&self) {
        std::fs::remove_file(self.dir.join("filler")).expect("remove the filler file");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        }
    }
}

/// Files made immutable (`chattr +i`) until dropped: nobody, root included, can open them for
/// writing, and writes through descriptors already open fail (`EPERM`). Root ignores file
/// modes, so this is how a test run as root gets a read-only database file.
pub struct Immutable {
    files: Vec<PathBuf>,
}

impl Immutable {
    /// Makes each of `files` that exists immutable; `None` (with a SKIPPED line) when `chattr`
    /// is missing or the filesystem does not support it, except under `CI=true`.
    pub fn set(files: &[PathBuf]) -> Option<Immutable> {
        let files: Vec<PathBuf> = files.iter().filter(|f| f.exists()).cloned().collect();
        let out = Command::new("chattr").arg("+i").args(&files).output();
        match out {
            Ok(o) if o.status.success() => Some(Immutable { files }),
            Ok(o) => {
                let _ = Command::new("chattr").arg("-i").args(&files).output();
                skip_or_fail(&format!(
                    "chattr +i failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                None
            }
            Err(e) => {
                skip_or_fail(&format!("cannot run chattr: {e}"));
                None
            }
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.files).output();
    }
}

/// `PRAGMA integrity_check` of a SQLite file, read by `python3`'s `sqlite3` module in a
/// separate process: `"ok"` for an undamaged database, else SQLite's findings.
pub fn sqlite_integrity(db: &Path) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             print('\\n'.join(r[0] for r in c.execute('PRAGMA integrity_check')))",
        ])
        .arg(db)
        .output()
        .expect("python3");
    if !out.status.success() {
        return format!(
            "integrity check failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A private PostgreSQL cluster (its own data directory under a temporary directory and its
/// own port), which a test may stop and start as a database restart or failover would, without
/// touching the shared server other tests use. Stopped (immediately) and removed on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PgCluster {
    /// `initdb` and start a cluster; `None` (with a SKIPPED line) when the PostgreSQL server
    /// binaries are not installed or cannot be run, except under `CI=true`.
    pub fn start() -> Option<PgCluster> {
        let bin = match Self::find_bin() {
            Some(b) => b,
            None => {
                skip_or_fail("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin");
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        if is_root() {
            // The server refuses to run as root: the directory is given to `postgres`.
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                skip_or_fail("cannot give a directory to the postgres user");
                return None;
            }
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            l.local_addr().expect("local addr").port()
        };
        let cluster = PgCluster { dir, bin, port };
        let out = cluster
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(cluster.data())
            .output()
            .expect("run initdb");
        if !out.status.success() {
            skip_or_fail(&format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return None;
        }
        cluster.start_server();
        Some(cluster)
    }

    fn find_bin() -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("pg_ctl").is_file() && b.join("initdb").is_file())
            .collect();
        found.sort();
        found.pop()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command of the server's binaries, run as `postgres` when we are root.
    fn command(&self, name: &str) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(name));
            c
        } else {
            Command::new(self.bin.join(name))
        }
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_server(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c shared_buffers=16MB -c max_connections=60",
                self.port,
                self.dir.path().display()
            ))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Stops the server: `fast` (connections terminated, a clean shutdown, as a restart
    /// does) or `immediate` (as a crash of the database host does).
    pub fn stop_server(&self, mode: &str) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// The URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `db`; its URL.
    pub fn create_database(&self, db: &str) -> String {
        let out = Command::new("psql")
            .arg(self.url("postgres"))
            .args(["-Atq", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE {db}"))
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "CREATE DATABASE {db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(db)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        format!(
            "--- private PostgreSQL log ---\n{}",
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The rows `sql` returns from `url`, read with `psql` (fields split on `|`).
pub fn psql_rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-Atq", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(sql)
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// Sends `signal` (a `kill` name: `TERM`, `INT`, `HUP`, `KILL`) to process `pid`; fails the
/// test if it cannot be sent.
pub fn send_signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} {pid} failed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloacina::Store;
    use cloacina::store::{ExecutionFilter, StoreOptions};

    /// The store under test loses its connections and rides through: a read after the
    /// termination still answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn terminated_connections_are_ended_and_the_store_reconnects() {
        let app = format!("e2e_faults_{}", std::process::id());
        let url = format!(
            "{}?application_name={app}",
            crate::server::postgres_base_url()
        );
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
            let (url, app) = (crate::server::postgres_base_url(), app.clone());
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
