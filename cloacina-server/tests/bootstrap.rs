//! The first key: a given bootstrap key is recorded once; a generated one is written to
//! `<home>/bootstrap-key` (0600) and kept across restarts; a revoked key cannot come back.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use cloacina_server::bootstrap::Bootstrap;
use cloacina_server::{Server, ServerConfig};

fn config(dir: &std::path::Path, key: Option<&str>) -> ServerConfig {
    let mut c = ServerConfig::new(
        format!("sqlite://{}", dir.join("control.db").display()),
        dir.join("home"),
    );
    c.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    c.bootstrap_key = key.map(String::from);
    c
}

async fn shutdown(s: Server) {
    s.state()
        .tenants
        .shutdown(std::time::Duration::from_secs(2))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_key_is_written_and_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Server::start(config(dir.path(), None))
        .await
        .expect("start");
    assert_eq!(s.bootstrap, Bootstrap::Generated);
    let file = dir.path().join("home/bootstrap-key");
    let key = std::fs::read_to_string(&file).expect("key file");
    let key = key.trim().to_string();
    assert!(cloacina::auth::key_is_well_formed(&key), "{key}");
    let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key file mode {mode:o}");
    let rec = s
        .state()
        .control
        .api_key_find(&cloacina::auth::key_hash(&key))
        .await
        .expect("find")
        .expect("the file's key is recorded");
    assert!(rec.is_admin && rec.tenant_id.is_none());
    shutdown(s).await;
    let s = Server::start(config(dir.path(), None))
        .await
        .expect("restart");
    assert_eq!(s.bootstrap, Bootstrap::KeysExist);
    assert_eq!(
        std::fs::read_to_string(&file).expect("key file").trim(),
        key,
        "the key file changed on restart"
    );
    shutdown(s).await;
}

/// When every key was revoked, restarting with the same bootstrap key is refused with a
/// message saying what to do (not a unique-constraint failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_bootstrap_key_cannot_come_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = cloacina::auth::key_generate().plaintext;
    let s = Server::start(config(dir.path(), Some(&key)))
        .await
        .expect("start");
    assert_eq!(s.bootstrap, Bootstrap::Given);
    let control = s.state().control.clone();
    let rec = control
        .api_key_find(&cloacina::auth::key_hash(&key))
        .await
        .expect("find")
        .expect("recorded");
    control.api_key_revoke(rec.id, None).await.expect("revoke");
    shutdown(s).await;
    let err = Server::start(config(dir.path(), Some(&key)))
        .await
        .expect_err("a revoked bootstrap key must not start the server");
    let msg = err.to_string();
    assert!(msg.contains("revoked"), "{msg}");
    // A new key works.
    let fresh = cloacina::auth::key_generate().plaintext;
    let s = Server::start(config(dir.path(), Some(&fresh)))
        .await
        .expect("start with a new key");
    assert_eq!(s.bootstrap, Bootstrap::Given);
    shutdown(s).await;
}
