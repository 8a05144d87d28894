//! Records of the control plane: API keys, tenants, uploaded packages and the audit log. They
//! live in the admin tenant's store (`public`); see `crate::auth` and `crate::tenant`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::types::Millis;
use crate::auth::Role;

/// A stored API key (never its plaintext, nor its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// The tenant the key acts in; `None` for a key of the admin tenant.
    pub tenant_id: Option<String>,
    pub is_admin: bool,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

impl ApiKeyRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// A key to store: `hash` is [`crate::auth::key_hash`] of the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub name: String,
    pub hash: String,
    pub role: Role,
    pub tenant_id: Option<String>,
    pub is_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub name: String,
    pub description: Option<String>,
    pub created_at: Millis,
}

/// Where an uploaded package's build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    Pending,
    Building,
    Failed,
    Success,
}

impl BuildStatus {
    pub const ALL: [BuildStatus; 4] = [
        BuildStatus::Pending,
        BuildStatus::Building,
        BuildStatus::Failed,
        BuildStatus::Success,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Pending => "pending",
            BuildStatus::Building => "building",
            BuildStatus::Failed => "failed",
            BuildStatus::Success => "success",
        }
    }
}

impl FromStr for BuildStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        BuildStatus::ALL
            .into_iter()
            .find(|b| b.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown build status '{s}'; expected pending, building, failed or success")
            })
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An uploaded package, without its archive bytes (see `Store::package_archive`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub version: String,
    /// Lowercase hex SHA-256 of the archive.
    pub sha256: String,
    /// The archive's length in bytes.
    pub size: i64,
    pub signed: bool,
    pub has_library: bool,
    pub build_status: BuildStatus,
    pub build_error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Set when a delete stopped at a failed unload step: the package is no longer desired
    /// (no replica loads it), and rerunning the delete finishes the unload.
    pub unloading_at: Option<Millis>,
    /// The compiler worker holding the build claim, while `build_status` is `Building`.
    pub build_claimed_by: Option<String>,
    /// The claim holder's last heartbeat.
    pub build_heartbeat_at: Option<Millis>,
    /// When the current (or last) build started.
    pub build_started_at: Option<Millis>,
    /// When the last build finished (built or failed).
    pub build_finished_at: Option<Millis>,
    /// Claims of this package that did not end in a release (a stale claim reclaimed counts).
    pub build_attempts: i32,
}

impl PackageRecord {
    /// Whether replicas should have this package loaded: not being deleted.
    pub fn desired(&self) -> bool {
        self.unloading_at.is_none()
    }
}

/// A package to store; the store computes `sha256` and `size`, and `signed` is
/// `signature.is_some()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPackage {
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub archive: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    pub has_library: bool,
    pub build_status: BuildStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// A pending package claimed for a build by one compiler worker (see
/// `Store::package_build_claim`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildClaim {
    /// The package as claimed: `build_status` is `Building`, held by `worker`.
    pub package: PackageRecord,
    pub worker: String,
}

/// How a build ended, as the compiler records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    /// The package compiled: `archive` (holding a library for the build host) replaces the
    /// stored one, with its detached `signature` (or none: the old one, which signed the
    /// source-only archive, no longer applies).
    Built {
        archive: Vec<u8>,
        signature: Option<Vec<u8>>,
    },
    /// It did not: why, in one message (the log holds the details).
    Failed { error: String },
}

/// A finished build: its outcome and the (bounded) tail of its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildFinish {
    pub outcome: BuildOutcome,
    pub log: String,
}

/// A stale build claim that a sweep handed back (or gave up on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweptBuild {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub version: String,
    /// The worker whose heartbeat stopped.
    pub claimed_by: Option<String>,
    /// The claims the package has had, the stale one included.
    pub attempts: i32,
    /// `true`: back to `Pending` for any compiler; `false`: it had used up its attempts and
    /// is now `Failed`.
    pub requeued: bool,
}

/// The build queue at a glance: packages not being deleted, per build status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildCounts {
    pub pending: i64,
    pub building: i64,
    pub failed: i64,
    pub success: i64,
}
