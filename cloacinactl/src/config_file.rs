//! `<home>/config.toml` as a document to read and edit (`cloacinactl config`).
//!
//! The file is parsed with `toml_edit`, so an edit keeps the user's comments, order and layout.
//! Every edit is checked before anything is written: the dotted key must be one the schema
//! knows ([`cloacina::config::Config`]), the value must have the key's type (the type of the
//! value already in the file, else the schema's), and the whole result must pass
//! [`Config::parse`] (unknown keys, ranges, log levels). The file is then replaced atomically
//! (a temporary file in the same directory, renamed over it) with mode 0600. A file that does
//! not parse is reported with its line and column and is never rewritten.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use cloacina::config::{Config, DaemonConfig, Profile};
use toml_edit::{DocumentMut, Item, Table, Value};

use crate::error::CliError;

/// The config file: its path, its document (empty when the file does not exist yet) and its
/// text as read.
#[derive(Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub doc: DocumentMut,
    pub exists: bool,
}

impl ConfigFile {
    /// Reads and parses `path`; a missing file is an empty document. A syntax error is a user
    /// error naming the line and column.
    pub fn load(path: &Path) -> Result<ConfigFile, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(CliError::io("read", path, &e)),
        };
        let exists = text.is_some();
        let text = text.unwrap_or_default();
        let doc = text
            .parse::<DocumentMut>()
            .map_err(|e| syntax_error(path, &text, &e))?;
        Ok(ConfigFile {
            path: path.to_path_buf(),
            doc,
            exists,
        })
    }

    /// The document checked against the schema: the configuration it gives.
    pub fn config(&self) -> Result<Config, CliError> {
        Config::parse(&self.doc.to_string(), &self.path).map_err(|e| CliError::User(e.to_string()))
    }

    /// Checks the edited document against the schema and, if it passes, writes it atomically
    /// with mode 0600. On failure nothing is written and the error says so.
    pub fn save(&self) -> Result<Config, CliError> {
        let text = self.doc.to_string();
        let config = Config::parse(&text, &self.path)
            .map_err(|e| CliError::User(format!("{e}; {} was not changed", self.path.display())))?;
        write_atomic(&self.path, &text)?;
        Ok(config)
    }

    /// The item at `path`, if the file sets it.
    pub fn get(&self, path: &[String]) -> Option<&Item> {
        let mut item = self.doc.as_item();
        for seg in path {
            item = item.as_table_like()?.get(seg)?;
        }
        Some(item)
    }

    /// Removes the item at `path`; what was there, if anything.
    pub fn remove(&mut self, path: &[String]) -> Option<Item> {
        let (last, parents) = path.split_last()?;
        let mut item = self.doc.as_item_mut();
        for seg in parents {
            item = item.as_table_like_mut()?.get_mut(seg)?;
        }
        item.as_table_like_mut()?.remove(last)
    }

    /// Sets the value at `path`, creating the tables on the way (as `[a.b]` headers). The new
    /// value keeps the old one's comments and spacing. A path through or onto a table is
    /// refused.
    pub fn set(&mut self, path: &[String], mut value: Value) -> Result<(), CliError> {
        let Some((last, parents)) = path.split_last() else {
            return Err(CliError::User("the key is empty".to_string()));
        };
        let mut item = self.doc.as_item_mut();
        for (i, seg) in parents.iter().enumerate() {
            let here = path[..=i].join(".");
            let table = item.as_table_like_mut().ok_or_else(|| {
                CliError::User(format!(
                    "{} is not a table in the file, so it has no key {seg}",
                    path[..i].join(".")
                ))
            })?;
            if table.get(seg).is_none() {
                let mut t = Table::new();
                t.set_implicit(true);
                table.insert(seg, Item::Table(t));
            }
            item = table
                .get_mut(seg)
                .ok_or_else(|| CliError::User(format!("cannot create the table {here}")))?;
            if !item.is_table_like() {
                return Err(CliError::User(format!(
                    "{here} is a value, not a table, so it has no key {}",
                    path[i + 1]
                )));
            }
        }
        let table = item
            .as_table_like_mut()
            .ok_or_else(|| CliError::User(format!("cannot set {}", path.join("."))))?;
        match table.get_mut(last) {
            Some(existing) if existing.is_table_like() => Err(CliError::User(format!(
                "{} is a table; set one of its keys instead (e.g. {}.KEY)",
                path.join("."),
                path.join(".")
            ))),
            Some(Item::Value(old)) => {
                *value.decor_mut() = old.decor().clone();
                *old = value;
                Ok(())
            }
            _ => {
                table.insert(last, Item::Value(value));
                Ok(())
            }
        }
    }

    /// The names of the profiles the file defines.
    pub fn profile_names(&self) -> Vec<String> {
        self.doc
            .get("profiles")
            .and_then(Item::as_table_like)
            .map(|t| t.iter().map(|(k, _)| k.to_string()).collect())
            .unwrap_or_default()
    }
}

/// "the profiles are: a, b" or how to create one: the tail of every unknown-profile message.
pub fn profiles_hint(names: &[String]) -> String {
    if names.is_empty() {
        "no profile is defined; create one with 'cloacinactl config profile set NAME --server URL --api-key KEY'".to_string()
    } else {
        format!("the profiles are: {}", names.join(", "))
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[start..].chars().count() + 1;
    (line, col)
}

fn syntax_error(path: &Path, text: &str, e: &toml_edit::TomlError) -> CliError {
    let at = match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("line {line}, column {col}: ")
        }
        None => String::new(),
    };
    CliError::User(format!(
        "cannot parse {}: {at}{}; fix the file by hand (cloacinactl does not rewrite a file it cannot parse)",
        path.display(),
        e.message().trim()
    ))
}

/// A dotted key (`daemon.poll_interval_ms`) as its segments.
pub fn split_key(key: &str) -> Result<Vec<String>, CliError> {
    let parts: Vec<String> = key.split('.').map(|s| s.trim().to_string()).collect();
    if key.trim().is_empty() || parts.iter().any(String::is_empty) {
        return Err(CliError::User(format!(
            "invalid key '{key}': use a dotted path such as daemon.poll_interval_ms or profiles.prod.server"
        )));
    }
    Ok(parts)
}

/// A value's type, as `set` converts its text argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Integer,
    Float,
    Bool,
    String,
    /// Comma-separated text; the element type.
    Array(Box<Kind>),
    /// A table: not settable as one value.
    Table,
}

impl Kind {
    fn name(&self) -> String {
        match self {
            Kind::Integer => "an integer".to_string(),
            Kind::Float => "a number".to_string(),
            Kind::Bool => "a boolean (true or false)".to_string(),
            Kind::String => "a string".to_string(),
            Kind::Array(k) => format!("a comma-separated list of {}s", k.bare()),
            Kind::Table => "a table".to_string(),
        }
    }

    fn bare(&self) -> &'static str {
        match self {
            Kind::Integer => "integer",
            Kind::Float => "number",
            Kind::Bool => "boolean",
            Kind::String | Kind::Array(_) | Kind::Table => "string",
        }
    }

    /// The kind of a value already in the file.
    pub fn of_edit(v: &Value) -> Kind {
        match v {
            Value::Integer(_) => Kind::Integer,
            Value::Float(_) => Kind::Float,
            Value::Boolean(_) => Kind::Bool,
            Value::Array(a) => Kind::Array(Box::new(
                a.iter()
                    .next()
                    .map(Kind::of_edit)
                    .filter(|k| !matches!(k, Kind::Array(_) | Kind::Table))
                    .unwrap_or(Kind::String),
            )),
            Value::InlineTable(_) => Kind::Table,
            Value::String(_) | Value::Datetime(_) => Kind::String,
        }
    }

    fn of_toml(v: &toml::Value) -> Kind {
        match v {
            toml::Value::Integer(_) => Kind::Integer,
            toml::Value::Float(_) => Kind::Float,
            toml::Value::Boolean(_) => Kind::Bool,
            toml::Value::Array(a) => Kind::Array(Box::new(
                a.first().map(Kind::of_toml).unwrap_or(Kind::String),
            )),
            toml::Value::Table(_) => Kind::Table,
            toml::Value::String(_) | toml::Value::Datetime(_) => Kind::String,
        }
    }

    /// The text of a `set` as a value of this kind.
    pub fn parse(&self, key: &str, text: &str) -> Result<Value, CliError> {
        let bad = || CliError::User(format!("{key} takes {}; '{text}' is not one", self.name()));
        Ok(match self {
            Kind::Integer => Value::from(text.trim().parse::<i64>().map_err(|_| bad())?),
            Kind::Float => Value::from(text.trim().parse::<f64>().map_err(|_| bad())?),
            Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
                "true" => Value::from(true),
                "false" => Value::from(false),
                _ => return Err(bad()),
            },
            Kind::String => Value::from(text),
            Kind::Array(elem) => {
                let mut array = toml_edit::Array::new();
                if !text.trim().is_empty() {
                    for part in text.split(',') {
                        array.push(elem.parse(key, part.trim())?);
                    }
                }
                Value::Array(array)
            }
            Kind::Table => {
                return Err(CliError::User(format!(
                    "{key} is a table; set one of its keys instead (e.g. {key}.KEY)"
                )));
            }
        })
    }
}

/// Every key the schema knows, with a value of its type: the defaults, plus the optional keys
/// filled in (a profile is named `_`).
fn schema() -> toml::Table {
    let full = Config {
        database_url: Some(String::new()),
        default_profile: Some(String::new()),
        profiles: BTreeMap::from([(
            "_".to_string(),
            Profile {
                server: Some(String::new()),
                api_key: Some(String::new()),
            },
        )]),
        daemon: DaemonConfig {
            cron_max_catchup: Some(1),
            trusted_keys: vec![String::new()],
            ..DaemonConfig::default()
        },
        compiler: Default::default(),
        watch: cloacina::config::WatchConfig {
            directories: vec![String::new()],
        },
    };
    match toml::Value::try_from(&full) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}

/// `path` with a profile name replaced by the schema's `_`.
fn schema_path(path: &[String]) -> Vec<String> {
    let mut out = path.to_vec();
    if out.len() >= 2 && out[0] == "profiles" {
        out[1] = "_".to_string();
    }
    out
}

/// What the schema says about `path`: its kind; for an unknown key, the index of the first
/// unknown segment and the keys its table does take.
pub fn schema_kind(path: &[String]) -> Result<Kind, (usize, Vec<String>)> {
    let schema = schema();
    let path = schema_path(path);
    let mut table = &schema;
    for (i, seg) in path.iter().enumerate() {
        match table.get(seg) {
            Some(toml::Value::Table(t)) if i + 1 < path.len() => table = t,
            Some(v) if i + 1 == path.len() => return Ok(Kind::of_toml(v)),
            _ => {
                let keys = if i == 1 && path[0] == "profiles" {
                    vec!["NAME".to_string()]
                } else {
                    table.keys().cloned().collect()
                };
                return Err((i, keys));
            }
        }
    }
    Ok(Kind::Table)
}

/// The error for a key the schema does not know: the keys its table does take.
pub fn unknown_key(key: &str, path: &[String], at: usize, keys: &[String]) -> CliError {
    let parent = &path[..at.min(path.len())];
    let what = if at + 1 < path.len() {
        format!("{} is not a table of config.toml", path[..=at].join("."))
    } else {
        format!("unknown key '{key}'")
    };
    let takes = if keys.is_empty() {
        "it takes no keys".to_string()
    } else {
        format!("{} takes: {}", table_label(parent), keys.join(", "))
    };
    CliError::User(format!(
        "{what}: {takes} (see the config file format in the CLI reference)"
    ))
}

/// How a user writes a table in messages: `[daemon]`, `[profiles.NAME]` or "the top level".
pub fn table_label(parent: &[String]) -> String {
    if parent.is_empty() {
        "the top level".to_string()
    } else {
        let shown: Vec<&str> = parent
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i == 1 && parent[0] == "profiles" {
                    "NAME"
                } else {
                    s.as_str()
                }
            })
            .collect();
        format!("[{}]", shown.join("."))
    }
}

/// Writes `text` to `path` atomically: a temporary file (mode 0600) in the same directory,
/// flushed to disk, then renamed over `path`. The directory is created if missing. A symbolic
/// link at `path` is followed (its target is replaced). On failure the temporary file is
/// removed and `path` is untouched.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(path).map_err(|e| CliError::io("resolve", path, &e))?
        }
        _ => path.to_path_buf(),
    };
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| CliError::io("create", &dir, &e))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.toml".to_string());
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &target)?;
        // The rename is durable once the directory is (best effort).
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::io("write", &target, &e)
    })
}

/// An API key as it may be shown: `env:` / `file:` / `keyring:` references as they are, a raw
/// key as its first 8 characters and `…` (all of it hidden when it is 12 characters or fewer).
pub fn mask_key(spec: &str) -> String {
    if ["env:", "file:", "keyring:"]
        .iter()
        .any(|p| spec.starts_with(p))
    {
        return spec.to_string();
    }
    if spec.chars().count() <= 12 {
        return "…".to_string();
    }
    let head: String = spec.chars().take(8).collect();
    format!("{head}…")
}

/// A value of the effective configuration as it may be shown: API keys masked
/// ([`mask_key`]), a database URL's password replaced by `***`.
pub fn redact(path: &[String], value: &toml::Value) -> toml::Value {
    match value {
        toml::Value::String(s) if path.last().is_some_and(|k| k == "api_key") => {
            toml::Value::String(mask_key(s))
        }
        toml::Value::String(s) if path.last().is_some_and(|k| k == "database_url") => {
            toml::Value::String(cloacina::store::redact_url(s))
        }
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, v)| {
                    let mut p = path.to_vec();
                    p.push(k.clone());
                    (k.clone(), redact(&p, v))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The effective configuration (defaults included) as a TOML table.
pub fn effective(config: &Config) -> toml::Table {
    match toml::Value::try_from(config) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}

/// Every leaf of `table` as `(dotted path, value)`, in order; tables are walked into.
pub fn leaves(table: &toml::Table, prefix: &[String], out: &mut Vec<(Vec<String>, toml::Value)>) {
    for (k, v) in table {
        let mut p = prefix.to_vec();
        p.push(k.clone());
        match v {
            toml::Value::Table(t) => leaves(t, &p, out),
            _ => out.push((p, v.clone())),
        }
    }
}

/// A value as bare text: strings unquoted, arrays comma-separated (as `set` takes them).
pub fn bare(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => a.iter().map(bare).collect::<Vec<_>>().join(","),
        toml::Value::Table(_) => {
            let mut out = Vec::new();
            if let toml::Value::Table(t) = value {
                leaves(t, &[], &mut out);
            }
            out.iter()
                .map(|(p, v)| format!("{} = {}", p.join("."), literal(v)))
                .collect::<Vec<_>>()
                .join("\n")
        }
        other => literal(other),
    }
}

/// A value in TOML syntax (`"text"`, `[1, 2]`, `true`).
pub fn literal(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => toml::Value::String(s.clone()).to_string(),
        toml::Value::Array(a) => {
            format!("[{}]", a.iter().map(literal).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Vec<String> {
        split_key(k).expect("valid key")
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("a = 1\nb = é?", 10), (2, 5));
        assert_eq!(line_col("x", 0), (1, 1));
    }

    #[test]
    fn the_schema_gives_every_known_key_its_type() {
        assert_eq!(
            schema_kind(&key("daemon.poll_interval_ms")),
            Ok(Kind::Integer)
        );
        assert_eq!(
            schema_kind(&key("daemon.require_signatures")),
            Ok(Kind::Bool)
        );
        assert_eq!(
            schema_kind(&key("daemon.cron_max_catchup")),
            Ok(Kind::Integer)
        );
        assert_eq!(
            schema_kind(&key("watch.directories")),
            Ok(Kind::Array(Box::new(Kind::String)))
        );
        assert_eq!(schema_kind(&key("profiles.prod.api_key")), Ok(Kind::String));
        assert_eq!(schema_kind(&key("database_url")), Ok(Kind::String));
        assert_eq!(schema_kind(&key("daemon")), Ok(Kind::Table));
        let (at, known) = schema_kind(&key("daemon.poll")).expect_err("unknown");
        assert_eq!(at, 1);
        assert!(known.contains(&"poll_interval_ms".to_string()), "{known:?}");
        let (at, _) = schema_kind(&key("colour.x")).expect_err("unknown table");
        assert_eq!(at, 0);
        assert_eq!(table_label(&key("profiles.x")), "[profiles.NAME]");
        assert_eq!(table_label(&[]), "the top level");
        let e = unknown_key("daemon.poll", &key("daemon.poll"), 1, &known).to_string();
        assert!(
            e.starts_with("unknown key 'daemon.poll': [daemon] takes: "),
            "{e}"
        );
    }

    #[test]
    fn set_keeps_comments_and_types() {
        let mut f = ConfigFile {
            path: PathBuf::from("c.toml"),
            doc: "# top\n[daemon]\npoll_interval_ms = 500 # fast\n"
                .parse()
                .expect("toml"),
            exists: true,
        };
        f.set(&key("daemon.poll_interval_ms"), Value::from(900))
            .expect("set");
        f.set(&key("profiles.prod.server"), Value::from("http://h:1"))
            .expect("set");
        let text = f.doc.to_string();
        assert!(text.contains("# top"), "{text}");
        assert!(text.contains("poll_interval_ms = 900 # fast"), "{text}");
        assert!(
            text.contains("[profiles.prod]\nserver = \"http://h:1\""),
            "{text}"
        );
        assert!(!text.contains("[profiles]\n"), "{text}");
        assert!(f.set(&key("daemon"), Value::from(1)).is_err());
        assert!(
            f.set(&key("daemon.poll_interval_ms.x"), Value::from(1))
                .is_err()
        );
        let v = Kind::Array(Box::new(Kind::String))
            .parse("k", "a, b,c")
            .expect("array");
        assert_eq!(v.to_string(), "[\"a\", \"b\", \"c\"]");
        assert!(Kind::Integer.parse("k", "5x").is_err());
        assert!(Kind::Bool.parse("k", "yes").is_err());
    }

    #[test]
    fn keys_are_masked() {
        assert_eq!(mask_key("clk_abcdefghijklmnopqrstuvwxyz"), "clk_abcd…");
        assert_eq!(mask_key("short"), "…");
        assert_eq!(mask_key("env:KEY"), "env:KEY");
        assert_eq!(mask_key("file:/k"), "file:/k");
    }
}
