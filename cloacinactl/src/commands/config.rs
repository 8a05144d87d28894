//! `cloacinactl config get|set|list` and `config profile set|list|use|delete`: reading and
//! editing `<home>/config.toml` (spec: CLI reference, "config", "Profile resolution").
//!
//! Edits go through [`crate::config_file`]: comments survive, the value keeps its key's type,
//! the result is validated before anything is written, and the file is replaced atomically
//! with mode 0600. Nothing here prints a stored raw API key in full (it is masked: the first 8
//! characters and `…`) or a database password (`***`); `env:` and `file:` references are shown
//! as they are.

use cloacina::config::{Config, Home};
use serde_json::{Value as Json, json};
use toml_edit::{Item, Value};

use crate::cli::{ConfigCommand, ProfileCommand, ProfileSetArgs};
use crate::config_file::{
    ConfigFile, Kind, bare, effective, leaves, literal, mask_key, profiles_hint, redact,
    schema_kind, split_key, unknown_key,
};
use crate::error::CliError;
use crate::output::{Report, emit, table};
use crate::settings::Settings;

pub fn run(settings: &Settings, command: &ConfigCommand) -> Result<(), CliError> {
    let path = Home::at(settings.home()?).config();
    match command {
        ConfigCommand::Get(args) => get(settings, &path, &args.key),
        ConfigCommand::Set(args) => set(settings, &path, &args.key, &args.value),
        ConfigCommand::List(_) => list(settings, &path),
        ConfigCommand::Profile(p) => match p {
            ProfileCommand::Set(args) => profile_set(settings, &path, args),
            ProfileCommand::List(_) => profile_list(settings, &path),
            ProfileCommand::Use(args) => profile_use(settings, &path, &args.name),
            ProfileCommand::Delete(args) => profile_delete(settings, &path, &args.name),
        },
    }
}

/// The value at `path` in a TOML table, if any.
fn lookup(table: &toml::Table, path: &[String]) -> Option<toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for seg in parents {
        t = t.get(seg)?.as_table()?;
    }
    t.get(last).cloned()
}

/// The error for a profile that does not exist, naming those that do.
fn no_such_profile(name: &str, config: &Config) -> CliError {
    let names: Vec<String> = config.profiles.keys().cloned().collect();
    CliError::User(format!(
        "profile '{name}' does not exist; {}",
        profiles_hint(&names)
    ))
}

/// `config get KEY`: the effective value (the file's, else the default). Table output prints
/// it bare (strings unquoted, arrays comma-separated, a table as `key = value` lines); json
/// and yaml print `{"key", "value", "source": "file"|"default"}`.
fn get(settings: &Settings, path: &std::path::Path, key: &str) -> Result<(), CliError> {
    let file = ConfigFile::load(path)?;
    let config = file.config()?;
    let segs = split_key(key)?;
    if let Err((at, keys)) = schema_kind(&segs) {
        return Err(unknown_key(key, &segs, at, &keys));
    }
    if segs[0] == "profiles" && segs.len() >= 2 && !config.profiles.contains_key(&segs[1]) {
        return Err(no_such_profile(&segs[1], &config));
    }
    let Some(value) = lookup(&effective(&config), &segs) else {
        return Err(CliError::User(format!(
            "{key} is not set in {} and has no default; set it with 'cloacinactl config set {key} VALUE'",
            path.display()
        )));
    };
    let shown = redact(&segs, &value);
    let source = if file.get(&segs).is_some() {
        "file"
    } else {
        "default"
    };
    let text = bare(&shown);
    emit(
        settings,
        &Report {
            id: text.clone(),
            value: json!({
                "key": key,
                "value": serde_json::to_value(&shown).unwrap_or(Json::Null),
                "source": source,
            }),
            text,
        },
    )
}

/// `config set KEY VALUE`: the value takes the type of the value already in the file, else
/// the schema's type for the key; arrays are comma-separated. The result is validated as a
/// whole before it is written.
fn set(settings: &Settings, path: &std::path::Path, key: &str, text: &str) -> Result<(), CliError> {
    let mut file = ConfigFile::load(path)?;
    let segs = split_key(key)?;
    let schema = schema_kind(&segs).map_err(|(at, keys)| unknown_key(key, &segs, at, &keys))?;
    let kind = match file.get(&segs) {
        Some(Item::Value(Value::Array(a))) if a.is_empty() => schema,
        Some(Item::Value(v)) => Kind::of_edit(v),
        Some(_) => Kind::Table,
        None => schema,
    };
    let value = kind.parse(key, text)?;
    if key == "default_profile" {
        let names = file.profile_names();
        if !names.iter().any(|n| n == text) {
            return Err(CliError::User(format!(
                "default_profile: profile '{text}' does not exist; {}; {} was not changed",
                profiles_hint(&names),
                path.display()
            )));
        }
    }
    file.set(&segs, value.clone())?;
    let config = file.save()?;
    let stored = lookup(&effective(&config), &segs)
        .map(|v| redact(&segs, &v))
        .unwrap_or_else(|| toml::Value::String(text.to_string()));
    emit(
        settings,
        &Report {
            id: key.to_string(),
            value: json!({
                "key": key,
                "value": serde_json::to_value(&stored).unwrap_or(Json::Null),
                "file": path.display().to_string(),
            }),
            text: format!("{key} = {} (in {})", literal(&stored), path.display()),
        },
    )
}

/// `config list`: every value of the effective configuration, with where it comes from.
fn list(settings: &Settings, path: &std::path::Path) -> Result<(), CliError> {
    let file = ConfigFile::load(path)?;
    let config = file.config()?;
    let shown = match redact(&[], &toml::Value::Table(effective(&config))) {
        toml::Value::Table(t) => t,
        _ => toml::Table::new(),
    };
    let mut rows = Vec::new();
    leaves(&shown, &[], &mut rows);
    let from_file: Vec<String> = rows
        .iter()
        .filter(|(p, _)| file.get(p).is_some())
        .map(|(p, _)| p.join("."))
        .collect();
    let cells: Vec<[String; 3]> = rows
        .iter()
        .map(|(p, v)| {
            let key = p.join(".");
            let source = if from_file.contains(&key) {
                "file"
            } else {
                "default"
            };
            [key, literal(v), source.to_string()]
        })
        .collect();
    let mut text = if file.exists {
        format!("# {}\n", path.display())
    } else {
        format!(
            "# {} does not exist: every value is a default\n",
            path.display()
        )
    };
    text.push_str(&columns(&["KEY", "VALUE", "SOURCE"], &cells));
    emit(
        settings,
        &Report {
            id: cells
                .iter()
                .map(|c| c[0].clone())
                .collect::<Vec<_>>()
                .join("\n"),
            value: json!({
                "file": path.display().to_string(),
                "exists": file.exists,
                "config": serde_json::to_value(&shown).unwrap_or(Json::Null),
                "set_in_file": from_file,
            }),
            text,
        },
    )
}

/// Aligned columns, nothing cut (values such as URLs and paths are shown whole).
fn columns<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            out.push_str(c);
            out.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 2));
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// A flag's value, trimmed, if given and not empty.
fn given(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

/// A profile name that can be addressed as `profiles.NAME` in a dotted key.
fn check_profile_name(name: &str) -> Result<(), CliError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(CliError::User(format!(
            "invalid profile name '{name}': use 1-64 ASCII letters, digits, '-' or '_'"
        )))
    }
}

fn segs(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// `config profile set NAME --server URL --api-key KEY [--default]`: the server and key are
/// the global flags, stored as given (an `env:`/`file:` reference stays a reference).
fn profile_set(
    settings: &Settings,
    path: &std::path::Path,
    args: &ProfileSetArgs,
) -> Result<(), CliError> {
    check_profile_name(&args.name)?;
    let server = given(settings.server.as_deref());
    let key = given(settings.api_key.as_deref());
    let missing: Vec<&str> = [
        ("--server URL", server.is_none()),
        ("--api-key KEY", key.is_none()),
    ]
    .iter()
    .filter(|(_, m)| *m)
    .map(|(f, _)| *f)
    .collect();
    let (Some(server), Some(key)) = (server, key) else {
        return Err(CliError::User(format!(
            "'config profile set' needs --server URL and --api-key KEY (missing: {}); e.g. cloacinactl config profile set {} --server http://127.0.0.1:8080 --api-key env:CLOACINA_API_KEY --default",
            missing.join(", "),
            args.name
        )));
    };
    if let Err(e) = crate::http::normalize_base(server) {
        eprintln!("warning: profile '{}': {e}", args.name);
    }
    let mut file = ConfigFile::load(path)?;
    file.set(
        &segs(&["profiles", &args.name, "server"]),
        Value::from(server),
    )?;
    file.set(
        &segs(&["profiles", &args.name, "api_key"]),
        Value::from(key),
    )?;
    if args.default {
        file.set(&segs(&["default_profile"]), Value::from(args.name.as_str()))?;
    }
    file.save()?;
    let mut text = format!(
        "saved profile '{}' (server {server}, API key {}) in {}",
        args.name,
        mask_key(key),
        path.display()
    );
    if args.default {
        text.push_str("; it is the default profile");
    }
    emit(
        settings,
        &Report {
            id: args.name.clone(),
            value: json!({
                "name": args.name,
                "server": server,
                "api_key": mask_key(key),
                "default": args.default,
            }),
            text,
        },
    )
}

/// `config profile list`: names, servers, masked keys, and which one is the default.
fn profile_list(settings: &Settings, path: &std::path::Path) -> Result<(), CliError> {
    let config = ConfigFile::load(path)?.config()?;
    let default = config.default_profile.clone();
    let items: Vec<Json> = config
        .profiles
        .iter()
        .map(|(name, p)| {
            json!({
                "name": name,
                "server": p.server,
                "api_key": p.api_key.as_deref().map(mask_key),
                "default": default.as_deref() == Some(name.as_str()),
            })
        })
        .collect();
    let mut text = if items.is_empty() {
        "no profiles; create one with 'cloacinactl config profile set NAME --server URL --api-key KEY [--default]'\n".to_string()
    } else {
        let rows: Vec<Json> = items
            .iter()
            .map(|p| {
                let mut row = p.clone();
                row["default"] = json!(if p["default"] == json!(true) { "*" } else { "" });
                row
            })
            .collect();
        table(settings, &rows, &["name", "server", "api_key", "default"])
    };
    if let Some(d) = default
        .as_deref()
        .filter(|d| !config.profiles.contains_key(*d))
    {
        text.push_str(&format!(
            "warning: default_profile '{d}' names no profile; 'cloacinactl config profile use NAME' fixes it\n"
        ));
    }
    emit(
        settings,
        &Report {
            id: config
                .profiles
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            value: json!({"default_profile": default, "profiles": items}),
            text,
        },
    )
}

/// `config profile use NAME`: makes an existing profile the default.
fn profile_use(settings: &Settings, path: &std::path::Path, name: &str) -> Result<(), CliError> {
    let mut file = ConfigFile::load(path)?;
    let config = file.config()?;
    if !config.profiles.contains_key(name) {
        return Err(no_such_profile(name, &config));
    }
    file.set(&segs(&["default_profile"]), Value::from(name))?;
    file.save()?;
    emit(
        settings,
        &Report {
            id: name.to_string(),
            value: json!({"default_profile": name}),
            text: format!("the default profile is now '{name}'"),
        },
    )
}

/// `config profile delete NAME`: removes the profile, and `default_profile` if it named it.
fn profile_delete(settings: &Settings, path: &std::path::Path, name: &str) -> Result<(), CliError> {
    let mut file = ConfigFile::load(path)?;
    let config = file.config()?;
    if !config.profiles.contains_key(name) {
        return Err(no_such_profile(name, &config));
    }
    file.remove(&segs(&["profiles", name]));
    if file
        .get(&segs(&["profiles"]))
        .and_then(Item::as_table_like)
        .is_some_and(|t| t.is_empty())
    {
        file.remove(&segs(&["profiles"]));
    }
    let was_default = config.default_profile.as_deref() == Some(name);
    if was_default {
        file.remove(&segs(&["default_profile"]));
    }
    file.save()?;
    let mut text = format!("deleted profile '{name}'");
    if was_default {
        text.push_str("; it was the default, so no profile is the default now");
    }
    emit(
        settings,
        &Report {
            id: name.to_string(),
            value: json!({"deleted": name, "was_default": was_default}),
            text,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_whole() {
        let long = "x".repeat(80);
        let out = columns(
            &["KEY", "VALUE"],
            &[
                ["a".to_string(), long.clone()],
                ["bbbb".to_string(), "1".to_string()],
            ],
        );
        assert_eq!(out, format!("KEY   VALUE\na     {long}\nbbbb  1\n"));
        assert!(split_key("a..b").is_err());
    }
}
