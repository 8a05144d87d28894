//! `cloacinactl admin cleanup-events [--older-than D] [--dry-run] [--database-url URL]`:
//! deletes execution events older than a threshold straight in the database, in every tenant
//! (spec: CLI reference, "admin").
//!
//! The database is `--database-url`, else `DATABASE_URL`, else `database_url` in config.toml
//! (as for `server start`). The control store lists the tenants; `public` is the server's own
//! store, every other tenant's store is where the server keeps it
//! ([`cloacina::tenant::tenant_store_location`]: a PostgreSQL schema, or a SQLite file under
//! `<home>/tenants/`, so `--home` must be the server's home on SQLite). A tenant whose store
//! cannot be opened is reported and the others are still cleaned; the exit code is then 1.

use std::path::Path;

use cloacina::config::Home;
use cloacina::store::{DatabaseUrl, SqliteTarget, Store, StoreError, StoreOptions, redact_url};
use cloacina::tenant::{ADMIN_TENANT, tenant_sqlite_path, tenant_store_location};
use serde_json::json;

use crate::cli::{AdminCommand, CleanupEventsArgs};
use crate::error::CliError;
use crate::output::{Report, emit, rfc3339_ms};
use crate::settings::Settings;

/// Connections per store: the command runs one statement at a time.
const CONNECTIONS: usize = 2;

pub fn run(settings: &Settings, command: &AdminCommand) -> Result<(), CliError> {
    match command {
        AdminCommand::CleanupEvents(args) => cleanup_events(settings, args),
    }
}

/// One tenant's outcome: how many events (deleted, or that would be), or why not.
struct Outcome {
    tenant: String,
    events: Result<i64, String>,
}

fn cleanup_events(settings: &Settings, args: &CleanupEventsArgs) -> Result<(), CliError> {
    let older = cloacina::duration::parse(&args.older_than)
        .map_err(|e| CliError::User(format!("--older-than: {e}")))?;
    let home = Home::at(settings.home()?);
    let url = super::database_url(
        settings,
        args.database_url.as_deref(),
        "admin cleanup-events",
    )?;
    let shown_url = redact_url(&url);
    match DatabaseUrl::parse(&url).map_err(|e| CliError::User(e.to_string()))? {
        DatabaseUrl::Sqlite {
            target: SqliteTarget::Memory,
            ..
        } => {
            return Err(CliError::User(
                "an in-memory SQLite database holds no server's events; pass the server's database URL".to_string(),
            ));
        }
        // Opening a store creates a missing file: refuse rather than clean a new empty one.
        DatabaseUrl::Sqlite {
            target: SqliteTarget::File(path),
            ..
        } if !path.exists() => {
            return Err(CliError::User(format!(
                "no database at {} ({shown_url}); pass the server's database with --database-url or DATABASE_URL",
                path.display()
            )));
        }
        _ => {}
    }
    let older_ms = i64::try_from(older.as_millis()).unwrap_or(i64::MAX);
    let before = cloacina::store::now_ms().saturating_sub(older_ms);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::User(format!("cannot start the async runtime: {e}")))?;
    let outcomes = rt.block_on(clean_all(&url, home.root(), before, args.dry_run))?;

    let total: i64 = outcomes.iter().filter_map(|o| o.events.as_ref().ok()).sum();
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.events.is_err())
        .map(|o| o.tenant.as_str())
        .collect();
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let threshold = format!(
        "older than {} (created before {})",
        args.older_than,
        rfc3339_ms(before)
    );
    let width = outcomes
        .iter()
        .map(|o| o.tenant.chars().count())
        .chain(["TENANT".len()])
        .max()
        .unwrap_or(0);
    let column = if args.dry_run {
        "WOULD DELETE"
    } else {
        "DELETED"
    };
    let mut text = format!("{:<width$}  {column}\n", "TENANT");
    for o in &outcomes {
        let n = match &o.events {
            Ok(n) => n.to_string(),
            Err(e) => format!("error: {e}"),
        };
        text.push_str(&format!("{:<width$}  {n}\n", o.tenant));
    }
    text.push_str(&format!(
        "{verb} {total} events {threshold} in {} tenant{}{}\n",
        outcomes.len(),
        if outcomes.len() == 1 { "" } else { "s" },
        if args.dry_run {
            "; nothing was deleted (--dry-run)"
        } else {
            ""
        }
    ));
    let tenants: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| match &o.events {
            Ok(n) => json!({"tenant": o.tenant, "events": n}),
            Err(e) => json!({"tenant": o.tenant, "error": e}),
        })
        .collect();
    emit(
        settings,
        &Report {
            id: total.to_string(),
            value: json!({
                "dry_run": args.dry_run,
                "older_than": args.older_than,
                "before": rfc3339_ms(before),
                "database": shown_url,
                "tenants": tenants,
                "total": total,
            }),
            text,
        },
    )?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::User(format!(
            "the events of {} could not be cleaned (see above); the other tenants were",
            failed.join(", ")
        )))
    }
}

/// A store's failure as the exit-code table classes it: a PostgreSQL server that cannot be
/// reached is a network failure (2); anything else (a bad URL, a local file) a user error.
fn open_failure(url: &str, e: StoreError) -> CliError {
    let message = format!("cannot open the database {}: {e}", redact_url(url));
    if url.starts_with("postgres") && !matches!(e, StoreError::InvalidUrl { .. }) {
        CliError::Network(message)
    } else {
        CliError::User(message)
    }
}

/// `public` (the control store itself), then every tenant, each counted or cleaned.
async fn clean_all(
    url: &str,
    home: &Path,
    before: i64,
    dry_run: bool,
) -> Result<Vec<Outcome>, CliError> {
    let options = StoreOptions {
        max_connections: CONNECTIONS,
        ..StoreOptions::default()
    };
    let control = Store::open_with(url, options)
        .await
        .map_err(|e| open_failure(url, e))?;
    let tenants = match control.tenant_list().await {
        Ok(t) => t,
        Err(e) => {
            control.close().await;
            return Err(open_failure(url, e));
        }
    };
    let mut out = vec![Outcome {
        tenant: ADMIN_TENANT.to_string(),
        events: control
            .event_cleanup(before, dry_run)
            .await
            .map_err(|e| e.to_string()),
    }];
    for t in tenants {
        let events = clean_tenant(url, home, &t.name, before, dry_run).await;
        out.push(Outcome {
            tenant: t.name,
            events,
        });
    }
    control.close().await;
    Ok(out)
}

async fn clean_tenant(
    url: &str,
    home: &Path,
    name: &str,
    before: i64,
    dry_run: bool,
) -> Result<i64, String> {
    if url.starts_with("sqlite:") {
        let file = tenant_sqlite_path(home, name);
        if !file.exists() {
            return Err(format!(
                "no store at {} (on SQLite, --home must be the server's home)",
                file.display()
            ));
        }
    }
    let (tenant_url, mut options) =
        tenant_store_location(url, home, name).map_err(|e| e.to_string())?;
    options.max_connections = CONNECTIONS;
    let store = Store::open_with(&tenant_url, options)
        .await
        .map_err(|e| e.to_string())?;
    let result = store
        .event_cleanup(before, dry_run)
        .await
        .map_err(|e| e.to_string());
    store.close().await;
    result
}
