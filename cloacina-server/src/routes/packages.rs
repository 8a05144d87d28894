//! Packages: upload (stored in the database, so every replica loads the same bytes), list,
//! inspect (state, per-step load progress, last error, bound subscribers) and delete (the
//! six-step unload, run now; a guard refusal is a 409 carrying the guard's text and changes
//! nothing).

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use cloacina::auth::Role;
use cloacina::package::archive::{self, ArchiveSummary};
use cloacina::package::signing::{self, SignatureError};
use cloacina::reconciler::{PackageState, ReconcileError};
use cloacina::store::{BuildStatus, NewAuditEntry, NewPackage, PackageRecord};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Json, List, Page, Path, Query, rfc3339, state_word};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use crate::tenants::Tenant;

/// The parts of a multipart upload (the archive may also be the raw body).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The `.cloacina` archive.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Its detached signature (the `.sig` side-car's text).
    #[schema(value_type = Option<String>, format = Binary)]
    signature: Option<Vec<u8>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    pub package_id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub version: String,
    /// `loaded`, `waiting` (for a reactor another package provides), `superseded` (a higher
    /// version is served), or `pending` (source only: waits for the compiler).
    pub state: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriberInfo {
    pub reactor: String,
    /// Graphs of other packages bound to the reactor: what makes the guard refuse an unload.
    pub subscribers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PackageInfo {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub version: String,
    /// The reconciler's state on this replica (`loaded`, `waiting`, `failed`,
    /// `partially_unloaded`, `unload_refused`, `superseded`), or `pending`/`building` before a
    /// build, `build_failed` after a failed one.
    pub state: String,
    pub build_status: String,
    pub build_error: Option<String>,
    /// The last lines of the last build's log (the compiler's output); only in `GET
    /// /v1/packages/{id}`, never in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_log: Option<String>,
    pub sha256: String,
    pub size: i64,
    pub signed: bool,
    pub created_at: String,
    pub load_steps_done: Vec<String>,
    pub unload_steps_done: Vec<String>,
    pub last_error: Option<String>,
    pub waiting_for: Option<String>,
    pub superseded_by: Option<String>,
    /// For a publisher: each reactor it owns and the subscribers bound to it.
    pub reactors: Vec<SubscriberInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PackageDeleted {
    /// `unloaded` (or `planned` for a dry run).
    pub status: String,
    pub package_id: Uuid,
    pub name: String,
    pub version: String,
    /// The unload steps (done, or for a dry run, to do), in order.
    pub steps: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DeleteParams {
    /// Only report the unload plan and the guard's verdict; change nothing.
    pub dry_run: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PackageFilter {
    /// Only this tenant's packages (global admins; others always see their own tenant's).
    pub tenant: Option<String>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

fn build_word(b: BuildStatus) -> &'static str {
    match b {
        BuildStatus::Pending => "pending",
        BuildStatus::Building => "building",
        BuildStatus::Failed => "failed",
        BuildStatus::Success => "success",
    }
}

/// The package as this replica sees it.
pub fn package_info(state: &SharedState, row: &PackageRecord) -> PackageInfo {
    let tenant = state.tenants.get(&row.tenant).ok();
    let status = tenant
        .as_ref()
        .and_then(|t| t.host.reconciler().status(&row.id.to_string()));
    let id = row.id.to_string();
    let reactors = tenant
        .as_ref()
        .map(|t| {
            t.host
                .reactors()
                .reactors_list(Some(&row.tenant))
                .into_iter()
                .filter(|r| r.package_id == id)
                .map(|r| SubscriberInfo {
                    reactor: r.name,
                    subscribers: r.subscribers,
                })
                .collect()
        })
        .unwrap_or_default();
    let state_text = match (&status, row.build_status) {
        (Some(s), _) => state_word(s.state).to_string(),
        (None, _) if !row.desired() => "unloading".to_string(),
        (None, BuildStatus::Pending) => "pending".to_string(),
        (None, BuildStatus::Building) => "building".to_string(),
        (None, BuildStatus::Failed) => "build_failed".to_string(),
        (None, BuildStatus::Success) if !row.has_library => "pending".to_string(),
        (None, BuildStatus::Success) => "pending_load".to_string(),
    };
    PackageInfo {
        id: row.id,
        tenant_id: row.tenant.clone(),
        name: row.name.clone(),
        version: row.version.clone(),
        state: state_text,
        build_status: build_word(row.build_status).to_string(),
        build_error: row.build_error.clone(),
        build_log: None,
        sha256: row.sha256.clone(),
        size: row.size,
        signed: row.signed,
        created_at: rfc3339(row.created_at),
        load_steps_done: status
            .as_ref()
            .map(|s| s.load_steps_done.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default(),
        unload_steps_done: status
            .as_ref()
            .map(|s| s.unload_steps_done.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default(),
        last_error: status.as_ref().and_then(|s| s.last_error.clone()),
        waiting_for: status.as_ref().and_then(|s| s.waiting_for.clone()),
        superseded_by: status.as_ref().and_then(|s| s.superseded_by.clone()),
        reactors,
    }
}

/// The archive and optional signature of an upload, from a multipart form or a raw body.
async fn read_upload(req: Request) -> Result<(Vec<u8>, Option<String>), ApiError> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !is_multipart {
        let bytes = axum::body::Bytes::from_request(req, &())
            .await
            .map_err(|e| too_large_or(e.status(), e.body_text()))?;
        return Ok((bytes.to_vec(), None));
    }
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|e| too_large_or(e.status(), e.body_text()))?;
    let mut file = None;
    let mut signature = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| too_large_or(e.status(), e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| too_large_or(e.status(), e.body_text()))?;
        match name.as_str() {
            "file" => file = Some(bytes.to_vec()),
            "signature" => signature = Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
                ApiError::bad_request(
                    "invalid_upload",
                    "the 'signature' part is not UTF-8 text (send the .sig side-car's contents)",
                )
            })?),
            other => {
                return Err(ApiError::bad_request(
                    "invalid_upload",
                    format!(
                        "unexpected form part '{other}': send the archive as 'file' and its signature as 'signature'"
                    ),
                ));
            }
        }
    }
    let file = file.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_upload",
            "the form has no 'file' part: send the .cloacina archive in a part named 'file'",
        )
    })?;
    Ok((file, signature))
}

fn too_large_or(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the upload is larger than the server's limit (cloacina-server --max-upload-mb)",
        )
    } else {
        ApiError::bad_request("invalid_upload", format!("cannot read the upload: {text}"))
    }
}

/// A scratch copy of an upload under `<cache>/uploads`, removed (with anything unpacked from
/// it) on drop: the archive checks read files.
struct Scratch {
    path: std::path::PathBuf,
    unpacked: std::path::PathBuf,
}

impl Scratch {
    fn write(state: &SharedState, bytes: &[u8]) -> Result<Scratch, ApiError> {
        let dir = state.config.cache_dir().join("uploads");
        std::fs::create_dir_all(&dir)
            .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
        let id = Uuid::new_v4();
        let scratch = Scratch {
            path: dir.join(format!("{id}.cloacina")),
            unpacked: dir.join(id.to_string()),
        };
        std::fs::write(&scratch.path, bytes)
            .map_err(|e| ApiError::internal(format!("writing {}: {e}", scratch.path.display())))?;
        Ok(scratch)
    }

    /// Runs `check` on the scratch file off the async threads; its error names the upload,
    /// not the scratch path, which means nothing to the client.
    async fn check<T: Send + 'static>(
        &self,
        check: impl FnOnce(&std::path::Path, &std::path::Path) -> Result<T, archive::ArchiveError>
        + Send
        + 'static,
    ) -> Result<T, ApiError> {
        let (path, unpacked) = (self.path.clone(), self.unpacked.clone());
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || check(&path, &unpacked))
            .await
            .map_err(|e| ApiError::internal(format!("checking the upload: {e}")))?
            .map_err(|e| {
                let mut err = ApiError::from(e);
                err.message = err.message.replace(&shown, "the uploaded archive");
                err
            })
    }

    /// The manifest and library targets, read without unpacking anything.
    async fn summary(&self) -> Result<ArchiveSummary, ApiError> {
        self.check(|path, _| archive::read_summary(path)).await
    }

    /// The whole archive checked as a load would check it (layout, entry names, sizes,
    /// manifest) by unpacking it, so a broken or hostile archive is refused at upload and
    /// never stored.
    async fn validate(&self) -> Result<(), ApiError> {
        self.check(|path, unpacked| {
            let result = archive::unpack(path, unpacked, &archive::UnpackLimits::default());
            let _ = std::fs::remove_dir_all(unpacked);
            result.map(|_| ())
        })
        .await
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.unpacked);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Checks the signature against the policy: required ones must be present and signed by a
/// trusted key; one sent anyway is checked against the trusted keys when there are any.
fn check_signature(
    state: &SharedState,
    name: &str,
    sha256: &str,
    signature: Option<&str>,
) -> Result<(), ApiError> {
    let policy = &state.signatures;
    let shown = format!("upload of {name}");
    let refused = |e: SignatureError| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "signature_rejected",
            format!("signature rejected: {e}"),
        )
    };
    match signature {
        None if policy.requires_signatures() => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "signature_rejected",
            format!(
                "signature rejected: this server requires signed packages and the {shown} has none; sign it ('cloacinactl package pack --sign KEY') and send the .sig as the 'signature' part"
            ),
        )),
        None => Ok(()),
        Some(text) if !policy.trusted_keys().is_empty() => signing::verify_digest(
            &shown,
            "the 'signature' part",
            sha256,
            text,
            policy.trusted_keys(),
        )
        .map(|_| ())
        .map_err(refused),
        Some(_) => Ok(()),
    }
}

/// Uploads a package archive to `tenant`. An archive with a library for this host is loaded at
/// once; a source-only one waits as `pending` for the compiler.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/workflows", tag = "packages", security(("api_key" = [])),
    params(("tenant" = String, Path)),
    request_body(content(
        (UploadForm = "multipart/form-data"),
        (Vec<u8> = "application/octet-stream"),
    )),
    responses((status = 201, body = Uploaded), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn package_upload(
    State(state): State<SharedState>,
    caller: Caller,
    Path(tenant_name): Path<String>,
    req: Request,
) -> ApiResult<(StatusCode, Json<Uploaded>)> {
    caller.require_in(&tenant_name, Role::Write)?;
    let tenant = state.tenants.get(&tenant_name)?;
    let (bytes, signature) = read_upload(req).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_upload",
            "the upload is empty: send a .cloacina archive",
        ));
    }
    let scratch = Scratch::write(&state, &bytes)?;
    let summary = scratch.summary().await?;
    let name = summary.manifest.name().to_string();
    let version = summary.manifest.version().to_string();
    let sha256 = archive::sha256_bytes(&bytes);
    // The signature first: an untrusted archive is not unpacked at all.
    check_signature(&state, &name, &sha256, signature.as_deref())?;
    scratch.validate().await?;
    drop(scratch);
    let has_library = summary.has_host_library();
    let record = state
        .control
        .package_create(NewPackage {
            tenant: tenant_name.clone(),
            name: name.clone(),
            version: version.clone(),
            archive: bytes,
            signature: signature.map(String::into_bytes),
            has_library,
            build_status: if has_library {
                BuildStatus::Success
            } else {
                BuildStatus::Pending
            },
        })
        .await?;
    let id = record.id;
    let state_text = if has_library {
        crate::sync::tenant_now(&state, &tenant).await?;
        match tenant.host.reconciler().status(&id.to_string()) {
            Some(s) if s.state == PackageState::Failed => {
                // Nothing is kept of a package that cannot load here: the row goes and the
                // reconciler forgets it.
                let reason = s.last_error.unwrap_or_else(|| "unknown reason".to_string());
                state.control.package_delete(id).await?;
                crate::sync::tenant_now(&state, &tenant).await?;
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "package_load_failed",
                    format!(
                        "package {name} {version} was not accepted: it cannot be loaded: {reason}"
                    ),
                ));
            }
            Some(s) => state_word(s.state).to_string(),
            None => "pending_load".to_string(),
        }
    } else {
        "pending".to_string()
    };
    state
        .control
        .audit_append(NewAuditEntry {
            actor: caller.actor(),
            action: "package.upload".to_string(),
            target: id.to_string(),
            detail: json!({"tenant": tenant_name, "name": name, "version": version, "sha256": sha256}),
        })
        .await?;
    tracing::info!(package_id = %id, package = %name, version = %version, tenant = %tenant_name, state = %state_text, "package uploaded");
    Ok((
        StatusCode::CREATED,
        Json(Uploaded {
            package_id: id,
            tenant_id: tenant_name,
            name,
            version,
            state: state_text,
        }),
    ))
}

/// The packages the key may see: its tenant's (a global admin: every tenant's, or `tenant`'s).
#[utoipa::path(get, path = "/v1/packages", tag = "packages", security(("api_key" = [])),
    params(PackageFilter),
    responses((status = 200, body = List<PackageInfo>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn package_list(
    State(state): State<SharedState>,
    caller: Caller,
    Query(filter): Query<PackageFilter>,
) -> ApiResult<Json<List<PackageInfo>>> {
    caller.require(Role::Read)?;
    let tenant = if caller.is_global_admin() {
        filter.tenant.clone()
    } else {
        Some(caller.tenant().to_string())
    };
    let rows = state.control.package_list(tenant.as_deref()).await?;
    let infos: Vec<PackageInfo> = rows.iter().map(|r| package_info(&state, r)).collect();
    let page = Page {
        limit: filter.limit,
        offset: filter.offset,
    };
    let (items, total) = page.slice(&infos)?;
    Ok(Json(match tenant {
        Some(t) => List::in_tenant(items, total, &t),
        None => List::of(items, total),
    }))
}

/// The row of `id` if the caller may see it; another tenant's is a 404 like a missing one.
async fn visible(state: &SharedState, caller: &Caller, id: Uuid) -> ApiResult<PackageRecord> {
    match state.control.package_get(id).await? {
        Some(row) if caller.is_global_admin() || row.tenant == caller.tenant() => Ok(row),
        _ => Err(ApiError::not_found(
            "package_not_found",
            format!("no package has id {id}; 'cloacinactl package list' shows the packages"),
        )),
    }
}

/// Lines of the build log `package inspect` shows.
const BUILD_LOG_TAIL_LINES: usize = 60;

/// One package: state, per-step load progress, last error, bound subscribers, and the tail of
/// its last build's log.
#[utoipa::path(get, path = "/v1/packages/{id}", tag = "packages", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = PackageInfo), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn package_get(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<PackageInfo>> {
    caller.require(Role::Read)?;
    let row = visible(&state, &caller, id).await?;
    let mut info = package_info(&state, &row);
    info.build_log = state
        .control
        .package_build_log(id)
        .await?
        .map(|log| cloacina::compiler::tail_lines(&log, BUILD_LOG_TAIL_LINES).to_string())
        .filter(|tail| !tail.is_empty());
    Ok(Json(info))
}

/// Runs the six-step unload of a package and deletes it. A guard refusal is a 409 whose
/// `error` is the guard's text; nothing changes then.
#[utoipa::path(delete, path = "/v1/packages/{id}", tag = "packages", security(("api_key" = [])),
    params(("id" = Uuid, Path), DeleteParams),
    responses((status = 200, body = PackageDeleted), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 500, body = ErrorBody)))]
pub async fn package_delete(
    State(state): State<SharedState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(params): Query<DeleteParams>,
) -> ApiResult<Json<PackageDeleted>> {
    // The role first: a read key learns nothing about which ids exist.
    caller.require(Role::Write)?;
    let row = visible(&state, &caller, id).await?;
    caller.require_in(&row.tenant, Role::Write)?;
    let tenant = state.tenants.get(&row.tenant)?;
    delete(
        &state,
        &caller,
        &tenant,
        row,
        params.dry_run.unwrap_or(false),
    )
    .await
}

/// The same unload, addressed by package name and version (how older clients delete).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/workflows/{package_name}/{version}", tag = "packages",
    security(("api_key" = [])),
    params(("tenant" = String, Path), ("package_name" = String, Path), ("version" = String, Path), DeleteParams),
    responses((status = 200, body = PackageDeleted), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn package_delete_by_version(
    State(state): State<SharedState>,
    caller: Caller,
    Path((tenant_name, package_name, version)): Path<(String, String, String)>,
    Query(params): Query<DeleteParams>,
) -> ApiResult<Json<PackageDeleted>> {
    caller.require_in(&tenant_name, Role::Write)?;
    let tenant = state.tenants.get(&tenant_name)?;
    let row = state
        .control
        .package_list(Some(&tenant_name))
        .await?
        .into_iter()
        .find(|p| p.name == package_name && p.version == version)
        .ok_or_else(|| {
            ApiError::not_found(
                "package_not_found",
                format!("tenant '{tenant_name}' has no package {package_name} {version}"),
            )
        })?;
    delete(
        &state,
        &caller,
        &tenant,
        row,
        params.dry_run.unwrap_or(false),
    )
    .await
}

async fn delete(
    state: &SharedState,
    caller: &Caller,
    tenant: &Tenant,
    row: PackageRecord,
    dry_run: bool,
) -> ApiResult<Json<PackageDeleted>> {
    let id = row.id.to_string();
    let reconciler = tenant.host.reconciler();
    if dry_run {
        let steps = match reconciler.plan_unload(&id) {
            Ok(plan) => {
                // The verdict the real delete would get: the same 409 and guard text.
                if let Some(refusal) = plan.refused {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "guard_refused",
                        refusal,
                    ));
                }
                plan.steps
            }
            Err(ReconcileError::NotLoaded(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        return Ok(Json(PackageDeleted {
            status: "planned".to_string(),
            package_id: row.id,
            name: row.name,
            version: row.version,
            steps,
        }));
    }
    // No pass of this tenant runs between the unload and the row's deletion.
    let _serial = tenant.packages.lock().await;
    let steps = reconciler
        .plan_unload(&id)
        .map(|p| p.steps)
        .unwrap_or_default();
    match reconciler.unload(&id).await {
        Ok(()) | Err(ReconcileError::NotLoaded(_)) => {}
        Err(e @ ReconcileError::Refused(_)) => return Err(e.into()),
        Err(e @ ReconcileError::StepFailed { .. }) => {
            // The row stays, marked as unloading: no replica treats the package as desired
            // any more (their passes finish the unload from where it stopped), and a rerun of
            // this delete finds it, finishes the unload and removes it (the unload guide's
            // recovery).
            state.control.package_set_unloading(row.id).await?;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    }
    state.control.package_delete(row.id).await?;
    state
        .control
        .audit_append(NewAuditEntry {
            actor: caller.actor(),
            action: "package.delete".to_string(),
            target: id.clone(),
            detail: json!({"tenant": row.tenant, "name": row.name, "version": row.version}),
        })
        .await?;
    tracing::info!(package_id = %id, package = %row.name, version = %row.version, "package deleted");
    Ok(Json(PackageDeleted {
        status: "unloaded".to_string(),
        package_id: row.id,
        name: row.name,
        version: row.version,
        steps,
    }))
}
