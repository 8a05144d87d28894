//! Who is calling: the `Authorization: Bearer <key>` header resolved against the key table on
//! every request. There is deliberately no cache: a revoked key is refused on its next request
//! on every replica, at the cost of one indexed lookup.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use cloacina::auth::{self, AuthError, Role};
use cloacina::store::ApiKeyRecord;
use cloacina::tenant::ADMIN_TENANT;

use crate::error::ApiError;
use crate::state::SharedState;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKeyRecord,
}

impl Caller {
    pub fn role(&self) -> Role {
        self.key.role
    }

    /// A global admin key (the bootstrap key): every tenant, every admin route.
    pub fn is_global_admin(&self) -> bool {
        self.key.is_admin && self.key.tenant_id.is_none()
    }

    /// The tenant the key belongs to (`public` for a global key).
    pub fn tenant(&self) -> &str {
        self.key.tenant_id.as_deref().unwrap_or(ADMIN_TENANT)
    }

    /// The name shown in the audit log.
    pub fn actor(&self) -> String {
        format!("{} ({})", self.key.name, self.key.id)
    }

    /// At least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.is_global_admin() || self.key.role >= role {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                needed: role,
                have: self.key.role,
            }
            .into())
        }
    }

    /// May act in `tenant` with at least `role`.
    pub fn require_in(&self, tenant: &str, role: Role) -> Result<(), ApiError> {
        if !self.is_global_admin() && self.tenant() != tenant {
            return Err(AuthError::WrongTenant {
                tenant: tenant.to_string(),
            }
            .into());
        }
        self.require(role)
    }

    /// A global admin only (key and tenant lifecycle).
    pub fn require_global_admin(&self) -> Result<(), ApiError> {
        if self.is_global_admin() {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                needed: Role::Admin,
                have: self.key.role,
            }
            .into())
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    SharedState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = SharedState::from_ref(state);
        let result = authenticate(&state, parts).await;
        if let Err(e) = &result {
            state.metrics.auth_failure(e.code);
        }
        result
    }
}

async fn authenticate(state: &SharedState, parts: &Parts) -> Result<Caller, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(AuthError::MissingKey)?;
    let header = header.to_str().map_err(|_| AuthError::MalformedKey)?;
    let key = auth::bearer_key(header)?;
    if !auth::key_is_well_formed(key) {
        return Err(AuthError::MalformedKey.into());
    }
    let hash = auth::key_hash(key);
    let record = state
        .control
        .api_key_find(&hash)
        .await?
        .ok_or(AuthError::UnknownKey)?;
    if record.revoked_at.is_some() {
        return Err(AuthError::RevokedKey.into());
    }
    Ok(Caller { key: record })
}
