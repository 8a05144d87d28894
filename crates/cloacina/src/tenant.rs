//! Tenants: names, and where each tenant's store lives.
//!
//! A tenant is a PostgreSQL schema (its name lowercased) in the server's database, or a SQLite
//! file of its own under `<home>/tenants/`. The admin tenant, `public`, is the server's own
//! store: it also holds the control plane (keys, tenants, packages, audit log).

use std::path::{Path, PathBuf};

use crate::store::{DatabaseUrl, StoreError, StoreOptions};

/// The admin tenant: PostgreSQL's default schema, or the server's main SQLite file.
pub const ADMIN_TENANT: &str = "public";
/// Longest tenant name: PostgreSQL's identifier limit.
pub const TENANT_NAME_MAX: usize = 63;

/// Why a name is not a valid tenant name, or `None` when it is (syntax only).
fn name_problem(name: &str) -> Option<&'static str> {
    let mut bytes = name.bytes();
    match bytes.next() {
        None => Some("it is empty"),
        _ if name.len() > TENANT_NAME_MAX => Some("it is longer than 63 characters"),
        Some(first) if !(first.is_ascii_alphabetic() || first == b'_') => {
            Some("it must start with a letter or an underscore")
        }
        Some(_) if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') => {
            Some("it may contain only ASCII letters, digits, underscores and hyphens")
        }
        Some(_) => None,
    }
}

/// True for a syntactically valid name (`^[A-Za-z_][A-Za-z0-9_-]{0,62}$`); `public` is valid.
/// Hyphens are allowed (the unload guide's tenants are `my-tenant`, `publisher-tenant`): the
/// schema name is always quoted in SQL.
pub fn tenant_name_valid(name: &str) -> bool {
    name_problem(name).is_none()
}

/// Checks a name for creating a tenant: valid syntax, and not reserved (`public`, and names
/// starting with `pg_`, which PostgreSQL keeps for itself; in any case).
pub fn tenant_name_check(name: &str) -> Result<(), TenantError> {
    if let Some(reason) = name_problem(name) {
        return Err(TenantError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        });
    }
    let lower = name.to_ascii_lowercase();
    if lower == ADMIN_TENANT || lower.starts_with("pg_") {
        return Err(TenantError::Reserved(name.to_string()));
    }
    Ok(())
}

/// True for the admin tenant's name (any case, as its schema is the same).
pub fn is_admin_tenant(name: &str) -> bool {
    name.eq_ignore_ascii_case(ADMIN_TENANT)
}

/// PostgreSQL schema of a tenant: its name lowercased (`public` for the admin tenant).
/// Unquoted identifiers fold to lowercase, so `Acme` and `acme` are one schema; tenant names
/// are unique case-insensitively for that reason.
pub fn tenant_schema(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// The SQLite file of a non-admin tenant: `<home>/tenants/<lowercased name>.db`
/// (lowercased like the schema, so both backends map names alike).
pub fn tenant_sqlite_path(home: &Path, name: &str) -> PathBuf {
    home.join("tenants")
        .join(format!("{}.db", tenant_schema(name)))
}

/// Where a tenant's store lives: the same PostgreSQL URL with schema = [`tenant_schema`];
/// on SQLite, `base_url` itself for `public`, and `sqlite://<home>/tenants/<name>.db` (see
/// [`tenant_sqlite_path`]) for another tenant, creating the `tenants` directory if needed.
pub fn tenant_store_location(
    base_url: &str,
    home: &Path,
    name: &str,
) -> Result<(String, StoreOptions), TenantError> {
    if let Some(reason) = name_problem(name) {
        return Err(TenantError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        });
    }
    match DatabaseUrl::parse(base_url)? {
        DatabaseUrl::Postgres { .. } => Ok((
            base_url.to_string(),
            StoreOptions {
                schema: tenant_schema(name),
                ..StoreOptions::default()
            },
        )),
        DatabaseUrl::Sqlite { .. } if is_admin_tenant(name) => {
            Ok((base_url.to_string(), StoreOptions::default()))
        }
        DatabaseUrl::Sqlite { .. } => {
            let path = tenant_sqlite_path(home, name);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|cause| TenantError::Io {
                    path: dir.display().to_string(),
                    cause,
                })?;
            }
            Ok((
                format!("sqlite://{}", path.display()),
                StoreOptions::default(),
            ))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(
        "invalid tenant name '{name}': {reason} (use 1-63 ASCII letters, digits, underscores and hyphens, starting with a letter or an underscore)"
    )]
    InvalidName { name: String, reason: String },
    #[error(
        "tenant name '{0}' is reserved ('public' is the admin tenant, and names starting with 'pg_' belong to PostgreSQL); choose another name"
    )]
    Reserved(String),
    #[error("tenant '{0}' does not exist")]
    NotFound(String),
    #[error("cannot create tenant directory {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::error::ErrorCode for TenantError {
    fn code(&self) -> &'static str {
        match self {
            TenantError::InvalidName { .. } => "invalid_tenant_name",
            TenantError::Reserved(_) => "reserved_tenant_name",
            TenantError::NotFound(_) => "tenant_not_found",
            TenantError::Io { .. } => "io_failed",
            TenantError::Store(e) => e.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn names_follow_the_identifier_rule() {
        for ok in [
            "a",
            "_",
            "Acme_1",
            "tenant_42",
            "_x9",
            "my-tenant",
            "publisher-tenant",
            &"a".repeat(63),
            "public",
        ] {
            assert!(tenant_name_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "1acme",
            "-acme",
            "ac me",
            "acmé",
            "a.b",
            "a/b",
            "a\"b",
            &"a".repeat(64),
        ] {
            assert!(!tenant_name_valid(bad), "{bad}");
            let e = tenant_name_check(bad).err();
            assert!(
                matches!(e, Some(TenantError::InvalidName { .. })),
                "{bad}: {e:?}"
            );
            assert_eq!(
                tenant_name_check(bad).err().map(|e| e.code()),
                Some("invalid_tenant_name")
            );
        }
    }

    #[test]
    fn public_and_pg_names_are_reserved_in_any_case() {
        for reserved in ["public", "PUBLIC", "Public", "pg_x", "PG_catalog", "Pg_"] {
            let e = tenant_name_check(reserved).err();
            assert!(matches!(e, Some(TenantError::Reserved(_))), "{reserved}");
            assert_eq!(e.map(|e| e.code()), Some("reserved_tenant_name"));
        }
        assert!(tenant_name_check("pgx").is_ok());
        assert!(tenant_name_check("publicity").is_ok());
        assert!(tenant_name_check("Acme_1").is_ok());
    }

    #[test]
    fn schemas_are_lowercased_names() {
        assert_eq!(tenant_schema("Acme_1"), "acme_1");
        assert_eq!(tenant_schema("public"), "public");
        assert_eq!(tenant_schema(ADMIN_TENANT), "public");
        // Every schema of a valid, non-reserved name is a schema the store accepts.
        for name in ["Acme_1", "_x", "my-tenant", &"Z".repeat(63)] {
            assert!(
                crate::store::schema_name_valid(&tenant_schema(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn postgres_tenants_share_the_url_with_their_own_schema() {
        let home = Path::new("/nonexistent-home");
        let url = "postgres://u:pw@h/db";
        let (u, o) = tenant_store_location(url, home, "Acme_1").expect("location");
        assert_eq!((u.as_str(), o.schema.as_str()), (url, "acme_1"));
        let (_, o) = tenant_store_location(url, home, ADMIN_TENANT).expect("location");
        assert_eq!(o.schema, "public");
        let (_, o) = tenant_store_location(url, home, "My-Tenant").expect("location");
        assert_eq!(o.schema, "my-tenant");
        assert!(matches!(
            tenant_store_location(url, home, "bad name"),
            Err(TenantError::InvalidName { .. })
        ));
    }

    #[test]
    fn sqlite_tenants_get_a_file_under_home() {
        let home = tempfile::tempdir().expect("temp dir");
        let base = format!("sqlite://{}", home.path().join("server.db").display());
        let (u, o) = tenant_store_location(&base, home.path(), "public").expect("location");
        assert_eq!((u.as_str(), o.schema.as_str()), (base.as_str(), "public"));
        let (u, _) = tenant_store_location(&base, home.path(), "Acme_1").expect("location");
        let file = home.path().join("tenants").join("acme_1.db");
        assert_eq!(u, format!("sqlite://{}", file.display()));
        assert!(home.path().join("tenants").is_dir());
        let e = tenant_store_location("mysql://x", home.path(), "acme").err();
        assert_eq!(e.map(|e| e.code()), Some("invalid_database_url"));
    }
}
