//! The first admin key. While the database holds no keys, the server creates a global admin
//! key: the one given (`--bootstrap-key`/`CLOACINA_BOOTSTRAP_KEY`), or a generated one whose
//! plaintext is written to `<home>/bootstrap-key`, created with mode 0600 in the same call
//! (never briefly readable by others) and never overwritten. A file left by a start that died
//! before recording its key is reused, so the key an operator may already have read stays
//! the key.

use std::io::Write;
use std::path::Path;

use cloacina::auth::{self, Role};
use cloacina::store::{NewApiKey, NewAuditEntry, Store};

/// Why no bootstrap key could be set up.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "the bootstrap key given is not a Cloacina API key (expected 'clk_' followed by 43 base64url characters); omit it to have one generated and written to <home>/bootstrap-key"
    )]
    Malformed,
    #[error("cannot write the bootstrap key file {path}: {cause}")]
    Write { path: String, cause: std::io::Error },
    #[error(
        "the bootstrap key file {path} exists but does not hold a valid key; remove it to have a new one generated"
    )]
    BadFile { path: String },
    #[error("the bootstrap key {which} was revoked and cannot be used again; {remedy}")]
    Revoked { which: String, remedy: &'static str },
    #[error(transparent)]
    Store(#[from] cloacina::StoreError),
}

/// What happened at start.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Keys exist: nothing done.
    KeysExist,
    /// The given key was recorded.
    Given,
    /// A key was generated (or recovered from the file) and recorded; the file holds it.
    Generated,
}

pub async fn ensure(
    control: &Store,
    given: Option<&str>,
    file: &Path,
) -> Result<Bootstrap, BootstrapError> {
    if control.api_key_count().await? > 0 {
        return Ok(Bootstrap::KeysExist);
    }
    let (plaintext, outcome) = match given {
        Some(key) => {
            let key = key.trim();
            if !auth::key_is_well_formed(key) {
                return Err(BootstrapError::Malformed);
            }
            (key.to_string(), Bootstrap::Given)
        }
        None => (generated_in(file)?, Bootstrap::Generated),
    };
    record(control, &plaintext, outcome, file).await
}

/// Records `plaintext` as the bootstrap key. The count said no usable keys, but a replica
/// started together with this one may have recorded the same key since: that counts as done.
/// A revoked key cannot come back.
async fn record(
    control: &Store,
    plaintext: &str,
    outcome: Bootstrap,
    file: &Path,
) -> Result<Bootstrap, BootstrapError> {
    let hash = auth::key_hash(plaintext);
    if let Some(found) = control.api_key_find(&hash).await? {
        if !found.is_revoked() {
            return Ok(Bootstrap::KeysExist);
        }
        return Err(match outcome {
            Bootstrap::Given => BootstrapError::Revoked {
                which: "given (--bootstrap-key/CLOACINA_BOOTSTRAP_KEY)".to_string(),
                remedy: "give a new one, or omit it to have one generated",
            },
            _ => BootstrapError::Revoked {
                which: format!("in {}", file.display()),
                remedy: "remove the file to have a new one generated",
            },
        });
    }
    let created = control
        .api_key_create(NewApiKey {
            name: "bootstrap".to_string(),
            hash: hash.clone(),
            role: Role::Admin,
            tenant_id: None,
            is_admin: true,
        })
        .await;
    let record = match created {
        Ok(record) => record,
        // Replicas started together with the same key: another one recorded it first.
        Err(e) => match control.api_key_find(&hash).await? {
            Some(found) if !found.is_revoked() => return Ok(Bootstrap::KeysExist),
            _ => return Err(e.into()),
        },
    };
    control
        .audit_append(NewAuditEntry {
            actor: "server".to_string(),
            action: "key.bootstrap".to_string(),
            target: record.id.to_string(),
            detail: serde_json::json!({ "generated": outcome == Bootstrap::Generated }),
        })
        .await?;
    Ok(outcome)
}

/// The key in `file`, written now (exclusively, mode 0600) if it does not exist.
fn generated_in(file: &Path) -> Result<String, BootstrapError> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = file.display().to_string();
    let write_err = |cause| BootstrapError::Write {
        path: shown.clone(),
        cause,
    };
    let generated = auth::key_generate();
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(mut f) => {
            f.write_all(format!("{}\n", generated.plaintext).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(write_err)?;
            Ok(generated.plaintext)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(file).map_err(write_err)?;
            let key = text.trim();
            if auth::key_is_well_formed(key) {
                Ok(key.to_string())
            } else {
                Err(BootstrapError::BadFile { path: shown })
            }
        }
        Err(e) => Err(write_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn control(dir: &Path) -> Store {
        let url = format!("sqlite://{}", dir.join("control.db").display());
        Store::open(&url).await.expect("open the control store")
    }

    /// The window after the count: another replica recorded the same key first.
    #[tokio::test]
    async fn a_key_recorded_meanwhile_by_another_replica_counts_as_done() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = control(dir.path()).await;
        let key = auth::key_generate().plaintext;
        let file = dir.path().join("bootstrap-key");
        let first = record(&store, &key, Bootstrap::Given, &file).await;
        assert_eq!(first.expect("first replica records it"), Bootstrap::Given);
        let second = record(&store, &key, Bootstrap::Given, &file).await;
        assert_eq!(
            second.expect("second replica accepts it"),
            Bootstrap::KeysExist
        );
        assert_eq!(store.api_key_count().await.expect("count"), 1);
    }
}
