//! The control plane's storage operations (API keys, tenants, packages, audit log, trigger poll
//! claims), written once. Like `ops.rs`, this file is a module of both `sqlite.rs` and
//! `postgres.rs` (`#[path]`), which define `Conn`. Every write runs through the writer's
//! ordinary per-write path (one savepoint each); none is merged.
//!
//! Each function runs inside a transaction opened by its caller; none commits.

use diesel::{
    BoolExpressionMethods, ExpressionMethods, OptionalExtension, QueryDsl, SelectableHelper,
};
use diesel_async::RunQueryDsl;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Conn;
use crate::store::control_rows::{
    ApiKeyRow, AuditRow, BuildClaimSql, NewAuditRow, NewPackageRow, PackageRow, PickedId, TenantRow,
};
use crate::store::control_types::{
    ApiKeyRecord, AuditRecord, BuildClaim, BuildCounts, BuildFinish, BuildOutcome, BuildStatus,
    NewApiKey, NewAuditEntry, NewPackage, PackageRecord, SweptBuild, TenantRecord,
};
use crate::store::error::StoreError;
use crate::store::schema::{
    api_keys as ak, audit_log as al, package_generation as pg, packages as pk, tenants as tn,
    trigger_polls as tp, workflow_pauses as wp,
};
use crate::store::types::Millis;

fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

// ---- API keys ---------------------------------------------------------------------------

pub(crate) async fn api_key_create(
    conn: &mut Conn,
    new: NewApiKey,
    now: Millis,
) -> Result<ApiKeyRecord, StoreError> {
    let row = ApiKeyRow {
        id: Uuid::now_v7().to_string(),
        name: new.name,
        key_hash: new.hash,
        role: new.role.as_str().to_string(),
        tenant_id: new.tenant_id,
        is_admin: new.is_admin,
        created_at: now,
        revoked_at: None,
    };
    diesel::insert_into(ak::table)
        .values(&row)
        .execute(conn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::InvalidRequest(
                    "an API key with this hash is already stored; generate a new key".to_string(),
                )
            } else {
                e.into()
            }
        })?;
    row.try_into()
}

pub(crate) async fn api_key_find(
    conn: &mut Conn,
    hash: String,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    // Every request's lookup: keyed (the hash is unique), without `first`'s `LIMIT ?`, which
    // makes SQLite re-prepare the statement on every call (see `ops::execution_get`).
    let query = ak::table
        .filter(ak::key_hash.eq(hash))
        .select(ApiKeyRow::as_select());
    super::keyed_row::<_, ApiKeyRow>(conn, query)
        .await?
        .map(TryInto::try_into)
        .transpose()
}

/// Keys of one tenant (`None`: of every tenant), oldest first.
pub(crate) async fn api_key_list(
    conn: &mut Conn,
    tenant: Option<String>,
) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let mut q = ak::table.select(ApiKeyRow::as_select()).into_boxed();
    if let Some(t) = tenant {
        q = q.filter(ak::tenant_id.eq(t));
    }
    let rows: Vec<ApiKeyRow> = q
        .order((ak::created_at.asc(), ak::id.asc()))
        .load(conn)
        .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// Revokes key `id` (of `tenant`, when given). Revoking a revoked key changes nothing and
/// answers it as it is. `None` when there is no such key (in that tenant).
pub(crate) async fn api_key_revoke(
    conn: &mut Conn,
    id: Uuid,
    tenant: Option<String>,
    now: Millis,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    let mut q = ak::table
        .find(id.to_string())
        .select(ApiKeyRow::as_select())
        .into_boxed();
    if let Some(t) = tenant {
        q = q.filter(ak::tenant_id.eq(t));
    }
    let Some(mut row) = q.first(conn).await.optional()? else {
        return Ok(None);
    };
    if row.revoked_at.is_none() {
        diesel::update(ak::table.find(&row.id).filter(ak::revoked_at.is_null()))
            .set(ak::revoked_at.eq(now))
            .execute(conn)
            .await?;
        row.revoked_at = Some(now);
    }
    row.try_into().map(Some)
}

/// Revokes every unrevoked key of `tenant`; returns how many.
pub(crate) async fn api_key_revoke_tenant(
    conn: &mut Conn,
    tenant: String,
    now: Millis,
) -> Result<usize, StoreError> {
    Ok(diesel::update(
        ak::table
            .filter(ak::tenant_id.eq(tenant))
            .filter(ak::revoked_at.is_null()),
    )
    .set(ak::revoked_at.eq(now))
    .execute(conn)
    .await?)
}

pub(crate) async fn api_key_count(conn: &mut Conn) -> Result<i64, StoreError> {
    Ok(ak::table
        .filter(ak::revoked_at.is_null())
        .count()
        .get_result(conn)
        .await?)
}

// ---- tenants ----------------------------------------------------------------------------

/// Creates a tenant; [`StoreError::TenantExists`] (naming the existing tenant) when one of the
/// same name in any case exists.
pub(crate) async fn tenant_create(
    conn: &mut Conn,
    name: String,
    description: Option<String>,
    now: Millis,
) -> Result<TenantRecord, StoreError> {
    let lower = name.to_ascii_lowercase();
    // Checked first: after a failed insert PostgreSQL answers nothing more in the transaction.
    let existing: Option<String> = tn::table
        .filter(tn::name_lower.eq(&lower))
        .select(tn::name)
        .first(conn)
        .await
        .optional()?;
    if let Some(existing) = existing {
        return Err(StoreError::TenantExists(existing));
    }
    let row = TenantRow {
        name,
        name_lower: lower,
        description,
        created_at: now,
    };
    diesel::insert_into(tn::table)
        .values(&row)
        .execute(conn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::TenantExists(row.name.clone())
            } else {
                e.into()
            }
        })?;
    Ok(row.into())
}

/// The tenant named `name` in any case.
pub(crate) async fn tenant_get(
    conn: &mut Conn,
    name: String,
) -> Result<Option<TenantRecord>, StoreError> {
    Ok(tn::table
        .filter(tn::name_lower.eq(name.to_ascii_lowercase()))
        .select(TenantRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(Into::into))
}

pub(crate) async fn tenant_list(conn: &mut Conn) -> Result<Vec<TenantRecord>, StoreError> {
    let rows: Vec<TenantRow> = tn::table
        .select(TenantRow::as_select())
        .order((tn::name_lower.asc(), tn::name.asc()))
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Deletes the tenant named `name` in any case; false when there is none.
pub(crate) async fn tenant_delete(conn: &mut Conn, name: String) -> Result<bool, StoreError> {
    let n = diesel::delete(tn::table.filter(tn::name_lower.eq(name.to_ascii_lowercase())))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

// ---- packages ---------------------------------------------------------------------------

/// Bumps the package generation; every change to `packages` calls it in its transaction.
pub(crate) async fn bump_generation(conn: &mut Conn) -> Result<(), StoreError> {
    let n = diesel::update(pg::table.find(1))
        .set(pg::generation.eq(pg::generation + 1))
        .execute(conn)
        .await?;
    if n == 1 {
        return Ok(());
    }
    // The migration inserts the row; recreate it if it was deleted by hand.
    diesel::insert_into(pg::table)
        .values((pg::id.eq(1), pg::generation.eq(1i64)))
        .execute(conn)
        .await?;
    Ok(())
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) async fn package_create(
    conn: &mut Conn,
    new: NewPackage,
    now: Millis,
) -> Result<PackageRecord, StoreError> {
    let row = NewPackageRow {
        id: Uuid::now_v7().to_string(),
        sha256: digest(&new.archive),
        size: new.archive.len() as i64,
        signed: new.signature.is_some(),
        tenant: new.tenant,
        name: new.name,
        version: new.version,
        archive: new.archive,
        signature: new.signature,
        has_library: new.has_library,
        build_status: new.build_status.as_str().to_string(),
        build_error: None,
        created_at: now,
        updated_at: now,
    };
    diesel::insert_into(pk::table)
        .values(&row)
        .execute(conn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::PackageExists {
                    tenant: row.tenant.clone(),
                    name: row.name.clone(),
                    version: row.version.clone(),
                }
            } else {
                e.into()
            }
        })?;
    bump_generation(conn).await?;
    PackageRow {
        id: row.id,
        tenant: row.tenant,
        name: row.name,
        version: row.version,
        sha256: row.sha256,
        size: row.size,
        signed: row.signed,
        has_library: row.has_library,
        build_status: row.build_status,
        build_error: row.build_error,
        created_at: row.created_at,
        updated_at: row.updated_at,
        unloading_at: None,
        build_claimed_by: None,
        build_heartbeat_at: None,
        build_started_at: None,
        build_finished_at: None,
        build_attempts: 0,
    }
    .try_into()
}

pub(crate) async fn package_get(
    conn: &mut Conn,
    id: Uuid,
) -> Result<Option<PackageRecord>, StoreError> {
    pk::table
        .find(id.to_string())
        .select(PackageRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(TryInto::try_into)
        .transpose()
}

/// Packages of one tenant (`None`: of all), by tenant, name, then upload time.
pub(crate) async fn package_list(
    conn: &mut Conn,
    tenant: Option<String>,
) -> Result<Vec<PackageRecord>, StoreError> {
    let mut q = pk::table.select(PackageRow::as_select()).into_boxed();
    if let Some(t) = tenant {
        q = q.filter(pk::tenant.eq(t));
    }
    let rows: Vec<PackageRow> = q
        .order((
            pk::tenant.asc(),
            pk::name.asc(),
            pk::created_at.asc(),
            pk::id.asc(),
        ))
        .load(conn)
        .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

pub(crate) async fn package_archive(
    conn: &mut Conn,
    id: Uuid,
) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, StoreError> {
    Ok(pk::table
        .find(id.to_string())
        .select((pk::archive, pk::signature))
        .first::<(Vec<u8>, Option<Vec<u8>>)>(conn)
        .await
        .optional()?)
}

pub(crate) async fn package_delete(conn: &mut Conn, id: Uuid) -> Result<bool, StoreError> {
    let n = diesel::delete(pk::table.find(id.to_string()))
        .execute(conn)
        .await?;
    if n > 0 {
        bump_generation(conn).await?;
    }
    Ok(n > 0)
}

/// Marks a package as being unloaded (no longer desired); false when there is none.
pub(crate) async fn package_set_unloading(
    conn: &mut Conn,
    id: Uuid,
    now: Millis,
) -> Result<bool, StoreError> {
    let n = diesel::update(pk::table.find(id.to_string()))
        .set((pk::unloading_at.eq(Some(now)), pk::updated_at.eq(now)))
        .execute(conn)
        .await?;
    if n > 0 {
        bump_generation(conn).await?;
    }
    Ok(n > 0)
}

pub(crate) async fn package_delete_tenant(
    conn: &mut Conn,
    tenant: String,
) -> Result<usize, StoreError> {
    let n = diesel::delete(pk::table.filter(pk::tenant.eq(tenant)))
        .execute(conn)
        .await?;
    if n > 0 {
        bump_generation(conn).await?;
    }
    Ok(n)
}

/// Records a build's status and error; with `archive`, replaces the stored archive (and its
/// digest and size) with the built one. False when there is no such package.
pub(crate) async fn package_set_build(
    conn: &mut Conn,
    id: Uuid,
    status: BuildStatus,
    error: Option<String>,
    archive: Option<Vec<u8>>,
    now: Millis,
) -> Result<bool, StoreError> {
    let target = pk::table.find(id.to_string());
    let set = (
        pk::build_status.eq(status.as_str()),
        pk::build_error.eq(error),
        pk::updated_at.eq(now),
    );
    let n = match archive {
        Some(archive) => {
            diesel::update(target)
                .set((
                    set,
                    pk::sha256.eq(digest(&archive)),
                    pk::size.eq(archive.len() as i64),
                    pk::archive.eq(archive),
                ))
                .execute(conn)
                .await?
        }
        None => diesel::update(target).set(set).execute(conn).await?,
    };
    if n > 0 {
        bump_generation(conn).await?;
    }
    Ok(n > 0)
}

// ---- package builds (the compiler service) ---------------------------------------------
//
// A build claim is the row's `build_status = 'building'` with `build_claimed_by` naming the
// worker; every step after the claim is fenced by both, so a worker whose claim was swept
// (its heartbeat stopped) can no longer heartbeat, finish or release it. Claims, heartbeats,
// releases and sweeps leave the package generation alone (they change nothing a replica
// loads); a finish bumps it, so every replica loads a built package at once.

/// The backend of this module's `Conn`, whose claim SQL differs.
type Db = <Conn as diesel_async::AsyncConnectionCore>::Backend;

const PENDING: &str = "pending";
const BUILDING: &str = "building";

/// Claims the oldest pending package (not being deleted) for `worker`: `None` when there is
/// none. The candidate is picked with the backend's `PICK_PENDING` (locked and skipped by
/// concurrent claimers on PostgreSQL) and updated only while still pending, so two workers
/// never hold one package.
pub(crate) async fn package_build_claim(
    conn: &mut Conn,
    worker: String,
    now: Millis,
) -> Result<Option<BuildClaim>, StoreError> {
    let picked: Vec<PickedId> =
        crate::store::stmt::Stmt::<Db>::new(<Db as BuildClaimSql>::PICK_PENDING)
            .load(conn)
            .await?;
    let Some(PickedId { id }) = picked.into_iter().next() else {
        return Ok(None);
    };
    let n = diesel::update(pk::table.find(&id).filter(pk::build_status.eq(PENDING)))
        .set((
            (
                pk::build_status.eq(BUILDING),
                pk::build_claimed_by.eq(Some(&worker)),
                pk::build_heartbeat_at.eq(Some(now)),
                pk::build_started_at.eq(Some(now)),
                pk::build_attempts.eq(pk::build_attempts + 1),
            ),
            (
                pk::build_error.eq(None::<String>),
                pk::build_log.eq(None::<String>),
                pk::updated_at.eq(now),
            ),
        ))
        .execute(conn)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    let row: PackageRow = pk::table
        .find(&id)
        .select(PackageRow::as_select())
        .first(conn)
        .await?;
    Ok(Some(BuildClaim {
        package: row.try_into()?,
        worker,
    }))
}

/// Stamps `worker`'s heartbeat on its claim of package `id`; false when it no longer holds
/// the claim (swept as stale, finished, or the package deleted): the build should stop.
pub(crate) async fn package_build_heartbeat(
    conn: &mut Conn,
    id: Uuid,
    worker: String,
    now: Millis,
) -> Result<bool, StoreError> {
    let n = diesel::update(
        pk::table
            .find(id.to_string())
            .filter(pk::build_status.eq(BUILDING))
            .filter(pk::build_claimed_by.eq(worker)),
    )
    .set(pk::build_heartbeat_at.eq(Some(now)))
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// Records the outcome of `worker`'s build of package `id` (with the log's tail) and bumps
/// the package generation. A built package gets its new archive (digest, size, signature and
/// `has_library` with it) and `success`; a failed one keeps its archive and gets `failed`
/// with the reason. False, changing nothing, when `worker` no longer holds the claim.
pub(crate) async fn package_build_finish(
    conn: &mut Conn,
    id: Uuid,
    worker: String,
    finish: BuildFinish,
    now: Millis,
) -> Result<bool, StoreError> {
    let target = pk::table
        .find(id.to_string())
        .filter(pk::build_status.eq(BUILDING))
        .filter(pk::build_claimed_by.eq(worker));
    let ended = (
        pk::build_claimed_by.eq(None::<String>),
        pk::build_heartbeat_at.eq(None::<i64>),
        pk::build_finished_at.eq(Some(now)),
        pk::build_log.eq(Some(finish.log)),
        pk::updated_at.eq(now),
    );
    let n = match finish.outcome {
        BuildOutcome::Built { archive, signature } => {
            diesel::update(target)
                .set((
                    ended,
                    (
                        pk::build_status.eq(BuildStatus::Success.as_str()),
                        pk::build_error.eq(None::<String>),
                        pk::has_library.eq(true),
                    ),
                    (
                        pk::sha256.eq(digest(&archive)),
                        pk::size.eq(archive.len() as i64),
                        pk::archive.eq(archive),
                        pk::signed.eq(signature.is_some()),
                        pk::signature.eq(signature),
                    ),
                ))
                .execute(conn)
                .await?
        }
        BuildOutcome::Failed { error } => {
            diesel::update(target)
                .set((
                    ended,
                    (
                        pk::build_status.eq(BuildStatus::Failed.as_str()),
                        pk::build_error.eq(Some(error)),
                    ),
                ))
                .execute(conn)
                .await?
        }
    };
    if n > 0 {
        bump_generation(conn).await?;
    }
    Ok(n > 0)
}

/// Hands `worker`'s claim of package `id` back to `pending` without an outcome (the compiler
/// is stopping): any compiler claims it next, and the attempt does not count. False when
/// `worker` no longer holds the claim.
pub(crate) async fn package_build_release(
    conn: &mut Conn,
    id: Uuid,
    worker: String,
    now: Millis,
) -> Result<bool, StoreError> {
    let n = diesel::update(
        pk::table
            .find(id.to_string())
            .filter(pk::build_status.eq(BUILDING))
            .filter(pk::build_claimed_by.eq(worker)),
    )
    .set((
        pk::build_status.eq(PENDING),
        pk::build_claimed_by.eq(None::<String>),
        pk::build_heartbeat_at.eq(None::<i64>),
        pk::build_attempts.eq(pk::build_attempts - 1),
        pk::updated_at.eq(now),
    ))
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// Reclaims builds whose heartbeat is older than `stale_before` (or missing): back to
/// `pending` for any compiler, or `failed` once the package has had `max_attempts` claims
/// (a package that kills every compiler that builds it must not do so forever). Each row is
/// updated only while still stale, so concurrent sweeps report each reclaim once.
pub(crate) async fn package_build_sweep(
    conn: &mut Conn,
    stale_before: Millis,
    max_attempts: i32,
    now: Millis,
) -> Result<Vec<SweptBuild>, StoreError> {
    let stale: Vec<PackageRow> = pk::table
        .filter(pk::build_status.eq(BUILDING))
        .filter(
            pk::build_heartbeat_at
                .is_null()
                .or(pk::build_heartbeat_at.lt(stale_before)),
        )
        .select(PackageRow::as_select())
        .order((pk::created_at.asc(), pk::id.asc()))
        .load(conn)
        .await?;
    let mut swept = Vec::with_capacity(stale.len());
    for row in stale {
        let requeued = row.build_attempts < max_attempts;
        let target = pk::table
            .find(&row.id)
            .filter(pk::build_status.eq(BUILDING))
            .filter(
                pk::build_heartbeat_at
                    .is_null()
                    .or(pk::build_heartbeat_at.lt(stale_before)),
            );
        let released = (
            pk::build_claimed_by.eq(None::<String>),
            pk::build_heartbeat_at.eq(None::<i64>),
            pk::updated_at.eq(now),
        );
        let n = if requeued {
            diesel::update(target)
                .set((released, pk::build_status.eq(PENDING)))
                .execute(conn)
                .await?
        } else {
            let error = format!(
                "gave up after {} builds whose compiler stopped heartbeating (killed, out of memory, or cut off from the database); check the compilers' logs, then delete the package and upload it again",
                row.build_attempts
            );
            diesel::update(target)
                .set((
                    released,
                    (
                        pk::build_status.eq(BuildStatus::Failed.as_str()),
                        pk::build_error.eq(Some(error)),
                        pk::build_finished_at.eq(Some(now)),
                    ),
                ))
                .execute(conn)
                .await?
        };
        if n == 0 {
            continue;
        }
        let record: PackageRecord = row.try_into()?;
        swept.push(SweptBuild {
            id: record.id,
            tenant: record.tenant,
            name: record.name,
            version: record.version,
            claimed_by: record.build_claimed_by,
            attempts: record.build_attempts,
            requeued,
        });
    }
    if swept.iter().any(|s| !s.requeued) {
        bump_generation(conn).await?;
    }
    Ok(swept)
}

/// Packages not being deleted, per build status.
pub(crate) async fn package_build_counts(conn: &mut Conn) -> Result<BuildCounts, StoreError> {
    let rows: Vec<(String, i64)> = pk::table
        .filter(pk::unloading_at.is_null())
        .group_by(pk::build_status)
        .select((pk::build_status, diesel::dsl::count_star()))
        .load(conn)
        .await?;
    let mut counts = BuildCounts::default();
    for (status, n) in rows {
        match status.parse::<BuildStatus>() {
            Ok(BuildStatus::Pending) => counts.pending += n,
            Ok(BuildStatus::Building) => counts.building += n,
            Ok(BuildStatus::Failed) => counts.failed += n,
            Ok(BuildStatus::Success) => counts.success += n,
            Err(e) => return Err(crate::store::error::corrupt(format!("packages: {e}"))),
        }
    }
    Ok(counts)
}

/// The tail of package `id`'s last build log; `None` when there is none (or no package).
pub(crate) async fn package_build_log(
    conn: &mut Conn,
    id: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(pk::table
        .find(id.to_string())
        .select(pk::build_log)
        .first::<Option<String>>(conn)
        .await
        .optional()?
        .flatten())
}

pub(crate) async fn package_generation(conn: &mut Conn) -> Result<i64, StoreError> {
    Ok(pg::table
        .find(1)
        .select(pg::generation)
        .first::<i64>(conn)
        .await
        .optional()?
        .unwrap_or(0))
}

// ---- audit log --------------------------------------------------------------------------

pub(crate) async fn audit_append(
    conn: &mut Conn,
    entry: NewAuditEntry,
    now: Millis,
) -> Result<(), StoreError> {
    diesel::insert_into(al::table)
        .values(&NewAuditRow {
            at: now,
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            detail: entry.detail.to_string(),
        })
        .execute(conn)
        .await?;
    Ok(())
}

/// The newest `limit` entries, newest first.
pub(crate) async fn audit_list(
    conn: &mut Conn,
    limit: i64,
) -> Result<Vec<AuditRecord>, StoreError> {
    let rows: Vec<AuditRow> = al::table
        .select(AuditRow::as_select())
        .order(al::id.desc())
        .limit(limit.clamp(1, 100_000))
        .load(conn)
        .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

// ---- trigger poll claims ----------------------------------------------------------------

/// Claims poll `slot` of a trigger: true for the first caller, false for every later one (in
/// any process). Concurrent inserts of one key wait for each other (PostgreSQL's unique index,
/// SQLite's single writer), so exactly one sees its row inserted.
pub(crate) async fn trigger_poll_claim(
    conn: &mut Conn,
    tenant: String,
    trigger: String,
    slot: i64,
    now: Millis,
) -> Result<bool, StoreError> {
    let n = diesel::insert_into(tp::table)
        .values((
            tp::tenant.eq(tenant),
            tp::trigger_name.eq(trigger),
            tp::slot.eq(slot),
            tp::claimed_at.eq(now),
        ))
        .on_conflict((tp::tenant, tp::trigger_name, tp::slot))
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Deletes claims made before `before`; returns how many.
pub(crate) async fn trigger_poll_prune(
    conn: &mut Conn,
    before: Millis,
) -> Result<usize, StoreError> {
    Ok(diesel::delete(tp::table.filter(tp::claimed_at.lt(before)))
        .execute(conn)
        .await?)
}

// ---- paused workflows -------------------------------------------------------------------

/// Records `workflow` of `tenant` as paused (or not); bumps the package generation so other
/// replicas apply it on their next check. Returns whether anything changed.
pub(crate) async fn workflow_pause_set(
    conn: &mut Conn,
    tenant: String,
    workflow: String,
    paused: bool,
    now: Millis,
) -> Result<bool, StoreError> {
    let n = if paused {
        diesel::insert_into(wp::table)
            .values((
                wp::tenant.eq(&tenant),
                wp::workflow.eq(&workflow),
                wp::paused_at.eq(now),
            ))
            .on_conflict((wp::tenant, wp::workflow))
            .do_nothing()
            .execute(conn)
            .await?
    } else {
        diesel::delete(
            wp::table
                .filter(wp::tenant.eq(&tenant))
                .filter(wp::workflow.eq(&workflow)),
        )
        .execute(conn)
        .await?
    };
    if n > 0 {
        bump_generation(conn).await?;
    }
    Ok(n > 0)
}

/// The paused workflows of `tenant`, by name.
pub(crate) async fn workflow_pause_list(
    conn: &mut Conn,
    tenant: String,
) -> Result<Vec<String>, StoreError> {
    Ok(wp::table
        .filter(wp::tenant.eq(tenant))
        .select(wp::workflow)
        .order(wp::workflow.asc())
        .load(conn)
        .await?)
}

/// Deletes `tenant`'s paused-workflow records.
pub(crate) async fn workflow_pause_delete_tenant(
    conn: &mut Conn,
    tenant: String,
) -> Result<usize, StoreError> {
    Ok(diesel::delete(wp::table.filter(wp::tenant.eq(tenant)))
        .execute(conn)
        .await?)
}
