//! `cloacinactl package upload|publish|list|inspect|delete`: the package verbs that talk to
//! the server (wire contract: `shared/wire.md`, "Packages and workflows").

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use cloacina::package::build::{self, Cargo, Profile};
use cloacina::package::signing;
use cloacina::reconciler::steps::UNLOAD_STEPS;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::api::{self, enc, query};
use crate::cli::{
    PackageCommand, PackageDeleteArgs, PackageListArgs, PublishArgs, TargetArgs, UploadArgs,
};
use crate::error::CliError;
use crate::output::{Report, cell, emit, fields, good, table};
use crate::progress::Spinner;
use crate::settings::{Settings, expand_tilde};

pub fn run(settings: &Settings, command: &PackageCommand) -> Result<(), CliError> {
    match command {
        PackageCommand::Upload(args) => upload(settings, args),
        PackageCommand::Publish(args) => publish(settings, args),
        PackageCommand::List(args) => list(settings, args),
        PackageCommand::Inspect(args) => inspect(settings, args),
        PackageCommand::Delete(args) => delete(settings, args),
        _ => Err(CliError::User(
            "internal error: a local package verb reached the server client".to_string(),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// upload, publish

fn upload(settings: &Settings, args: &UploadArgs) -> Result<(), CliError> {
    let file = expand_tilde(&args.file)?;
    let client = api::client(settings)?;
    let value = send_archive(settings, &client, &file)?;
    emit(settings, &uploaded_report(settings, value))
}

/// Build, pack (signed with `--sign`) and upload, stopping at the first failure.
fn publish(settings: &Settings, args: &PublishArgs) -> Result<(), CliError> {
    // Fail on configuration before spending a build on it.
    let client = api::client(settings)?;
    let manifest = build::package_dir(&args.dir)?;
    let key = match &args.sign {
        Some(k) => Some(signing::load_signing_key(&expand_tilde(k)?)?),
        None => None,
    };
    let profile = if args.release {
        Profile::Release
    } else {
        Profile::Debug
    };
    super::package::cargo_build(settings, &args.dir, &manifest, profile)?;
    let scratch = tempfile::Builder::new()
        .prefix("cloacinactl-publish-")
        .tempdir()
        .map_err(|e| CliError::User(format!("cannot create a temporary directory: {e}")))?;
    let out = scratch.path().join(build::archive_file_name(&manifest));
    let spinner = Spinner::start(
        settings.progress,
        format!("Packing {} {}", manifest.name(), manifest.version()),
    );
    let packed = build::pack(
        &args.dir,
        &out,
        key.as_ref(),
        &Cargo::default(),
        &mut |note| spinner.println(&note.to_string()),
    );
    spinner.finish();
    packed?;
    let value = send_archive(settings, &client, &out)?;
    emit(settings, &uploaded_report(settings, value))
}

/// POSTs `file` (and `FILE.sig` beside it, when there is one) as a multipart form to the
/// tenant's workflows, with a progress bar on a terminal.
fn send_archive(
    settings: &Settings,
    client: &crate::http::Client,
    file: &Path,
) -> Result<Value, CliError> {
    let archive = std::fs::read(file).map_err(|e| CliError::io("read", file, &e))?;
    let sig_path = signature_path(file);
    let signature = match std::fs::read(&sig_path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(CliError::io("read", &sig_path, &e)),
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package.cloacina".to_string());
    let (content_type, body) = multipart(&name, &archive, signature.as_deref());
    let len = body.len() as u64;
    let path = api::tenant_path(settings, "workflows");
    if settings.progress {
        let bar = ProgressBar::new(len);
        if let Ok(style) =
            ProgressStyle::with_template("Uploading {msg} {bar:30} {bytes}/{total_bytes}")
        {
            bar.set_style(style);
        }
        bar.set_message(name);
        let mut reader = bar.wrap_read(Cursor::new(body));
        let answer = client.post_reader(&path, &content_type, len, &mut reader);
        bar.finish_and_clear();
        Ok(answer?)
    } else {
        let mut reader: Box<dyn Read> = Box::new(Cursor::new(body));
        Ok(client.post_reader(&path, &content_type, len, &mut reader)?)
    }
}

/// `FILE.sig`: where `package pack --sign` writes the detached signature.
fn signature_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// A `multipart/form-data` body with the archive as `file` and the signature as `signature`.
fn multipart(file_name: &str, archive: &[u8], signature: Option<&[u8]>) -> (String, Vec<u8>) {
    let boundary = format!("cloacinactl-{}", uuid_like());
    let mut body = Vec::with_capacity(archive.len() + 512);
    let safe_name: String = file_name
        .chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{safe_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(archive);
    body.extend_from_slice(b"\r\n");
    if let Some(sig) = signature {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"signature\"\r\nContent-Type: text/plain\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(sig);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A boundary that no archive realistically contains: time and pid in hex.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:032x}{:08x}", std::process::id())
}

fn uploaded_report(settings: &Settings, value: Value) -> Report {
    let s = |k: &str| cell(value.get(k));
    let state = s("state");
    let note = match state.as_str() {
        "pending" => {
            "\nThe archive has no library for the server's platform: it waits for the compiler ('cloacinactl package inspect ID' shows its build)."
        }
        "waiting" => "\nIt waits for a reactor another package provides.",
        "superseded" => "\nA higher version of this package is served.",
        _ => "",
    };
    let text = format!(
        "{} {} {}\n{}{note}",
        good(settings, "Uploaded"),
        s("name"),
        s("version"),
        fields(&[
            ("id", s("package_id")),
            ("tenant", s("tenant_id")),
            ("state", state.clone()),
        ])
    );
    Report {
        id: s("package_id"),
        value,
        text,
    }
}

// ---------------------------------------------------------------------------------------------
// list, inspect

fn list(settings: &Settings, args: &PackageListArgs) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let path = format!(
        "/v1/packages{}",
        query(&[
            ("tenant", Some(settings.tenant.clone())),
            ("limit", Some("1000".to_string())),
        ])
    );
    let mut value = client.get_json(&path)?;
    let mut items: Vec<Value> = value
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(filter) = &args.filter {
        items.retain(|p| {
            p.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.contains(filter.as_str()))
        });
        if let Value::Object(m) = &mut value {
            m.insert("items".to_string(), Value::Array(items.clone()));
            m.insert("total".to_string(), json!(items.len()));
        }
    }
    let report = Report::list(
        settings,
        value,
        &items,
        &[
            "id",
            "name",
            "version",
            "state",
            "build_status",
            "tenant_id",
        ],
        "no packages",
    );
    emit(settings, &report)
}

fn inspect(settings: &Settings, args: &TargetArgs) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let value = client.get_json(&format!("/v1/packages/{}", enc(&args.target)))?;
    let text = inspect_text(settings, &value);
    emit(
        settings,
        &Report {
            id: cell(value.get("id")),
            value,
            text,
        },
    )
}

/// The package's fields, then its reactors with their bound subscribers, then the build log's
/// tail when a build failed.
fn inspect_text(settings: &Settings, v: &Value) -> String {
    let s = |k: &str| cell(v.get(k));
    let mut rows = vec![
        ("id", s("id")),
        ("name", s("name")),
        ("version", s("version")),
        ("tenant", s("tenant_id")),
        ("state", s("state")),
        ("build", s("build_status")),
        ("load steps done", s("load_steps_done")),
        ("unload steps done", s("unload_steps_done")),
        ("sha256", s("sha256")),
        ("size", format!("{} bytes", s("size"))),
        ("signed", s("signed")),
        ("created", s("created_at")),
    ];
    for (label, key) in [
        ("last error", "last_error"),
        ("waiting for", "waiting_for"),
        ("superseded by", "superseded_by"),
        ("build error", "build_error"),
    ] {
        if v.get(key).is_some_and(|x| !x.is_null()) {
            rows.push((label, s(key)));
        }
    }
    let mut text = fields(&rows);
    let reactors: Vec<Value> = v
        .get("reactors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !reactors.is_empty() {
        let rows: Vec<Value> = reactors
            .iter()
            .map(|r| {
                let subs = r
                    .get("subscribers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                json!({"reactor": r.get("reactor"), "subscribers": subs.len(), "names": subs})
            })
            .collect();
        text.push('\n');
        text.push_str(&table(
            settings,
            &rows,
            &["reactor", "subscribers", "names"],
        ));
    }
    if let Some(log) = v
        .get("build_log")
        .and_then(Value::as_str)
        .filter(|l| !l.is_empty())
    {
        text.push_str("\nbuild log (tail):\n");
        text.push_str(log);
    }
    text
}

// ---------------------------------------------------------------------------------------------
// delete

fn delete(settings: &Settings, args: &PackageDeleteArgs) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let path = format!("/v1/packages/{}", enc(&args.id));
    if args.dry_run {
        return dry_run(settings, &client, &path, &args.id);
    }
    api::confirm(
        args.force,
        &format!("Unload and delete package {}", args.id),
    )?;
    let value = client.delete_json(&path)?;
    let s = |k: &str| cell(value.get(k));
    let steps = value
        .get("steps")
        .and_then(Value::as_array)
        .map(|a| a.len())
        .unwrap_or(0);
    let text = format!(
        "{} {} {} ({})\n{}",
        good(settings, "Unloaded"),
        s("name"),
        s("version"),
        s("package_id"),
        if steps == 0 {
            "  it was not loaded on this server; its record is removed\n".to_string()
        } else {
            format!("  all six unload steps done ({steps} had something to do)\n")
        }
    );
    emit(
        settings,
        &Report {
            id: s("package_id"),
            value,
            text,
        },
    )
}

/// `DELETE ...?dry_run=true`: the plan and the guard's verdict; a refusal is printed as the
/// verdict and exits 5 like the real delete would, so a script can test it.
fn dry_run(
    settings: &Settings,
    client: &crate::http::Client,
    path: &str,
    id: &str,
) -> Result<(), CliError> {
    let answer = client.delete_json(&format!("{path}?dry_run=true"));
    let (value, verdict, refused) = match answer {
        Ok(v) => (v, "the guard allows this unload".to_string(), None),
        Err(crate::http::HttpError::Status {
            status: 409,
            message,
            code,
        }) => (
            json!({"status": "refused", "package_id": id, "guard": message, "code": code}),
            format!("the guard refuses: {message}"),
            Some(message),
        ),
        Err(e) => return Err(e.into()),
    };
    let planned: Vec<String> = value
        .get("steps")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|x| cell(Some(x))).collect())
        .unwrap_or_default();
    let mut text = format!("Unload plan for package {id} (dry run: nothing is changed)\n");
    let loaded = refused.is_some() || !planned.is_empty();
    for (i, step) in UNLOAD_STEPS.iter().enumerate() {
        let n = i + 1;
        let mark = if refused.is_some() {
            "not run: refused"
        } else if planned.iter().any(|p| p.starts_with(&format!("{n}. "))) {
            "to do"
        } else if loaded {
            "done already"
        } else {
            "nothing to do (not loaded on this server)"
        };
        text.push_str(&format!("  {n}. {step:<36} {mark}\n"));
    }
    text.push_str(&format!("verdict: {verdict}\n"));
    emit(
        settings,
        &Report {
            id: id.to_string(),
            value,
            text,
        },
    )?;
    match refused {
        Some(message) => Err(CliError::Rejected(message)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_carry_the_archive_and_the_signature() {
        let (ct, body) = multipart("a\"b.cloacina", b"ARCHIVE", Some(b"SIG"));
        let boundary = ct
            .strip_prefix("multipart/form-data; boundary=")
            .expect("boundary");
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{boundary}\r\n")), "{text}");
        assert!(
            text.contains("name=\"file\"; filename=\"a_b.cloacina\""),
            "{text}"
        );
        assert!(text.contains("\r\n\r\nARCHIVE\r\n"), "{text}");
        assert!(text.contains("name=\"signature\""), "{text}");
        assert!(text.ends_with(&format!("--{boundary}--\r\n")), "{text}");
        let (_, body) = multipart("x", b"A", None);
        assert!(!String::from_utf8_lossy(&body).contains("signature"));
    }

    #[test]
    fn signatures_sit_beside_the_archive() {
        assert_eq!(
            signature_path(Path::new("/d/p-1.0.0.cloacina")),
            PathBuf::from("/d/p-1.0.0.cloacina.sig")
        );
    }
}
