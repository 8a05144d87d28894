//! Rows of the control-plane tables and their conversion to records.

use diesel::prelude::*;
use uuid::Uuid;

use super::control_types::{ApiKeyRecord, AuditRecord, BuildStatus, PackageRecord, TenantRecord};
use super::error::{StoreError, corrupt};
use super::schema::{api_keys, audit_log, packages, tenants};
use crate::auth::Role;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub key_hash: String,
    pub role: String,
    pub tenant_id: Option<String>,
    pub is_admin: bool,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = StoreError;
    fn try_from(r: ApiKeyRow) -> Result<Self, StoreError> {
        Ok(ApiKeyRecord {
            id: Uuid::parse_str(&r.id)
                .map_err(|e| corrupt(format!("API key id '{}': {e}", r.id)))?,
            role: Role::parse(&r.role)
                .map_err(|e| corrupt(format!("role of API key {}: {e}", r.id)))?,
            name: r.name,
            tenant_id: r.tenant_id,
            is_admin: r.is_admin,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tenants)]
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct TenantRow {
    pub name: String,
    pub name_lower: String,
    pub description: Option<String>,
    pub created_at: i64,
}

impl From<TenantRow> for TenantRecord {
    fn from(r: TenantRow) -> Self {
        TenantRecord {
            name: r.name,
            description: r.description,
            created_at: r.created_at,
        }
    }
}

/// A package row without its archive and signature (listing never reads the blobs).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = packages)]
pub(crate) struct PackageRow {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub size: i64,
    pub signed: bool,
    pub has_library: bool,
    pub build_status: String,
    pub build_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub unloading_at: Option<i64>,
    pub build_claimed_by: Option<String>,
    pub build_heartbeat_at: Option<i64>,
    pub build_started_at: Option<i64>,
    pub build_finished_at: Option<i64>,
    pub build_attempts: i32,
}

impl TryFrom<PackageRow> for PackageRecord {
    type Error = StoreError;
    fn try_from(r: PackageRow) -> Result<Self, StoreError> {
        Ok(PackageRecord {
            id: Uuid::parse_str(&r.id)
                .map_err(|e| corrupt(format!("package id '{}': {e}", r.id)))?,
            build_status: r
                .build_status
                .parse::<BuildStatus>()
                .map_err(|e| corrupt(format!("package {}: {e}", r.id)))?,
            tenant: r.tenant,
            name: r.name,
            version: r.version,
            sha256: r.sha256,
            size: r.size,
            signed: r.signed,
            has_library: r.has_library,
            build_error: r.build_error,
            created_at: r.created_at,
            updated_at: r.updated_at,
            unloading_at: r.unloading_at,
            build_claimed_by: r.build_claimed_by,
            build_heartbeat_at: r.build_heartbeat_at,
            build_started_at: r.build_started_at,
            build_finished_at: r.build_finished_at,
            build_attempts: r.build_attempts,
        })
    }
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = packages)]
#[diesel(treat_none_as_default_value = false)]
pub(crate) struct NewPackageRow {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub size: i64,
    pub archive: Vec<u8>,
    pub signature: Option<Vec<u8>>,
    pub signed: bool,
    pub has_library: bool,
    pub build_status: String,
    pub build_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_log)]
pub(crate) struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> Result<Self, StoreError> {
        Ok(AuditRecord {
            detail: serde_json::from_str(&r.detail)
                .map_err(|e| corrupt(format!("audit entry {} detail: {e}", r.id)))?,
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
        })
    }
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_log)]
pub(crate) struct NewAuditRow {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// The SQL of a build claim's first step, which differs by backend: the oldest pending package
/// not being deleted, locked on PostgreSQL (`FOR UPDATE SKIP LOCKED`: concurrent claimers each
/// get another row, or none, without waiting); SQLite's single writer needs no lock, and the
/// claim's update checks the status again anyway.
pub(crate) trait BuildClaimSql {
    const PICK_PENDING: &'static str;
}

impl BuildClaimSql for diesel::pg::Pg {
    const PICK_PENDING: &'static str = "SELECT id FROM packages \
         WHERE build_status = 'pending' AND unloading_at IS NULL \
         ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED";
}

impl BuildClaimSql for diesel::sqlite::Sqlite {
    const PICK_PENDING: &'static str = "SELECT id FROM packages \
         WHERE build_status = 'pending' AND unloading_at IS NULL \
         ORDER BY created_at, id LIMIT 1";
}

#[derive(Debug, QueryableByName)]
pub(crate) struct PickedId {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub id: String,
}
