//! What every server-facing verb shares: the client built from the resolved profile
//! (spec: CLI reference, "Profile resolution"), URL-encoded paths, and the confirmation asked
//! before a destructive verb.

use std::io::{BufRead, IsTerminal, Write};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::CliError;
use serde_json::{Value, json};

use crate::http::{Client, DEFAULT_TIMEOUT};
use crate::settings::Settings;

/// Everything but RFC 3986's unreserved characters is escaped in a path segment or a query
/// value, so a name with `/`, `?`, `#`, `%` or spaces reaches the server as one value.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `value` escaped for use as one path segment or one query value.
pub fn enc(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// `?k=v&...` for the pairs whose value is present (values escaped); empty when none is.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// `/v1/tenants/<tenant>/<rest>` for the `--tenant` in force.
pub fn tenant_path(settings: &Settings, rest: &str) -> String {
    format!(
        "/v1/tenants/{}/{}",
        enc(&settings.tenant),
        rest.trim_start_matches('/')
    )
}

/// The client for the server the flags and profiles name, with its API key. Precedence:
/// `--server`/`--api-key`, then `--profile NAME`, then `default_profile`; with neither a
/// server nor a key configured it is a user error (exit 1) saying how to configure one.
pub fn client(settings: &Settings) -> Result<Client, CliError> {
    let config = settings.config()?;
    let server = settings.server_url(&config)?;
    let key = settings.api_key(&config)?;
    let hint = "pass --server URL and --api-key KEY, or save them in a profile: 'cloacinactl config profile set NAME --server URL --api-key KEY --default'";
    let server = match server {
        Some(s) => s,
        None => {
            return Err(CliError::User(format!("no server configured: {hint}")));
        }
    };
    let Some(key) = key else {
        return Err(CliError::User(format!("no API key configured: {hint}")));
    };
    Ok(Client::new(&server, Some(key), DEFAULT_TIMEOUT)?)
}

/// The rows per request when [`list_all`] pages through a list (the wire contract's maximum).
const PAGE: usize = 1000;

/// Every row of the list at `path` (which may carry a query already), fetched page by page
/// with `limit`/`offset`: the first page's document with `items` holding all the rows and
/// `total` their count, and the rows.
pub fn list_all(client: &Client, path: &str) -> Result<(Value, Vec<Value>), CliError> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items: Vec<Value> = Vec::new();
    let mut first: Option<Value> = None;
    loop {
        let doc = client.get_json(&format!("{path}{sep}limit={PAGE}&offset={}", items.len()))?;
        let page = match doc.get("items") {
            Some(Value::Array(rows)) => rows.clone(),
            _ => {
                return Err(CliError::Rejected(format!(
                    "the server's answer to GET {path} is not a list (it has no 'items' array)"
                )));
            }
        };
        let total = doc.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
        let got = page.len();
        items.extend(page);
        if first.is_none() {
            first = Some(doc);
        }
        if got == 0 || items.len() >= total {
            break;
        }
    }
    let mut doc = first.unwrap_or_else(|| json!({}));
    if let Value::Object(map) = &mut doc {
        map.insert("items".to_string(), Value::Array(items.clone()));
        map.insert("total".to_string(), json!(items.len()));
    }
    Ok((doc, items))
}

/// Asks `question` on the terminal unless `force`; `Ok` to go ahead. Without a terminal (a
/// script, CI) it refuses at once, exit 1, rather than hanging or proceeding silently.
pub fn confirm(force: bool, question: &str) -> Result<(), CliError> {
    if force {
        return Ok(());
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(CliError::User(format!(
            "{question}: refusing without confirmation because there is no terminal to ask on; pass --force to go ahead"
        )));
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{question}? [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::User(format!("cannot read the answer: {e}")))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(CliError::User("cancelled; nothing was changed".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_as_one_component() {
        assert_eq!(enc("a b/c?d#e%f"), "a%20b%2Fc%3Fd%23e%25f");
        assert_eq!(enc("my-tenant_1.x~"), "my-tenant_1.x~");
        assert_eq!(enc("ünï"), "%C3%BCn%C3%AF");
        assert_eq!(
            query(&[
                ("a", Some("x y".into())),
                ("b", None),
                ("c", Some("1".into()))
            ]),
            "?a=x%20y&c=1"
        );
        assert_eq!(query(&[("a", None)]), "");
    }
}
