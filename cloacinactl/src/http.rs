//! The blocking HTTP client every server-facing verb talks through (wire contract:
//! `shared/wire.md`), so the exit-code mapping lives in one place: transport failures exit 2,
//! 404 exits 3, 401/403 exit 4, any other error status exits 5, each carrying the server's own
//! `{"error","code"}` message.
//!
//! Plain `http://` only: no TLS stack is linked yet, and an `https://` URL is refused up front
//! with a message saying so rather than failing mid-handshake.

use std::time::Duration;

use serde_json::Value;

use crate::error::CliError;

/// How long a connection attempt may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default bound on a whole request (a probe passes its own).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request did not produce the expected answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server URL cannot be used (a user error: fix the flag or the profile).
    #[error("invalid server URL '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    /// No HTTP answer: connection refused, DNS failure, timeout, broken connection.
    #[error("cannot reach the server at {url}: {message}")]
    Transport { url: String, message: String },
    /// The server answered with an error status; `message` is its `error` field (or a
    /// description of the status when the body is not the documented JSON). Shown as the
    /// server's message alone, so `Error: <message>` is exactly what the server said (a guard
    /// refusal reads as the guard's text); `-v` logs the status and code.
    #[error("{message}")]
    Status {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// A success status whose body is not the JSON the command expects.
    #[error("the server at {url} answered with a body that is not valid JSON: {message}")]
    Decode { url: String, message: String },
}

impl HttpError {
    /// The `cloacinactl` exit code for this failure (spec: CLI reference, "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            HttpError::BadUrl { .. } => 1,
            HttpError::Transport { .. } => 2,
            HttpError::Status { status, .. } => {
                CliError::from_status(*status, String::new()).exit_code()
            }
            HttpError::Decode { .. } => 5,
        }
    }
}

impl From<HttpError> for CliError {
    fn from(e: HttpError) -> Self {
        let message = e.to_string();
        match e.exit_code() {
            1 => CliError::User(message),
            2 => CliError::Network(message),
            3 => CliError::NotFound(message),
            4 => CliError::Auth(message),
            _ => CliError::Rejected(message),
        }
    }
}

/// A server's base URL, an optional API key, and the connection settings.
#[derive(Debug)]
pub struct Client {
    base: String,
    api_key: Option<String>,
    agent: ureq::Agent,
}

/// `url` with `http://` added when it has no scheme, and no trailing `/`. `https://` and other
/// schemes are refused.
pub fn normalize_base(url: &str) -> Result<String, HttpError> {
    let trimmed = url.trim();
    let bad = |reason: &str| HttpError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = match trimmed.split_once("://") {
        None => trimmed,
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err(bad(
                "https is not supported by cloacinactl yet (it is built without TLS); use an http:// URL, e.g. through a local TLS-terminating proxy",
            ));
        }
        Some((scheme, _)) => {
            return Err(bad(&format!(
                "unsupported scheme '{scheme}'; use http://HOST:PORT"
            )));
        }
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("no host; use http://HOST:PORT"));
    }
    Ok(format!("http://{rest}"))
}

impl Client {
    /// A client for `base_url` (see [`normalize_base`]); every request carries
    /// `Authorization: Bearer <api_key>` when a key is given, and gives up after `timeout`.
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Client, HttpError> {
        let base = normalize_base(base_url)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
            .timeout_global(Some(timeout))
            .user_agent(concat!("cloacinactl/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            base,
            api_key,
            agent: ureq::Agent::new_with_config(config),
        })
    }

    /// The base URL requests go to (`http://host:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// `GET path`: the status of a 2xx answer, or the failure.
    pub fn get_status(&self, path: &str) -> Result<u16, HttpError> {
        self.get_text(path).map(|(status, _)| status)
    }

    /// `GET path`, parsed as JSON.
    pub fn get_json(&self, path: &str) -> Result<Value, HttpError> {
        let url = self.url(path);
        let (_, body) = self.get_text(path)?;
        parse_json(&url, &body)
    }

    /// `POST path` with a JSON body, the answer parsed as JSON.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value, HttpError> {
        let url = self.url(path);
        let mut req = self.agent.post(&url).content_type("application/json");
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let text = finish(&url, req.send(body.to_string()))?;
        parse_json(&url, &text.1)
    }

    /// `POST path` with `body` (of `len` bytes) as `content_type`, streamed from a reader so
    /// the caller can show progress; the answer parsed as JSON.
    pub fn post_reader(
        &self,
        path: &str,
        content_type: &str,
        len: u64,
        body: &mut dyn std::io::Read,
    ) -> Result<Value, HttpError> {
        let url = self.url(path);
        let mut req = self
            .agent
            .post(&url)
            .content_type(content_type)
            .header("Content-Length", len.to_string());
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let text = finish(&url, req.send(ureq::SendBody::from_reader(body)))?;
        parse_json(&url, &text.1)
    }

    /// `GET path` as a stream with no overall time limit (a live event stream), with extra
    /// `headers`; the open body on a 2xx answer, else the failure.
    pub fn get_stream(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<Box<dyn std::io::BufRead>, HttpError> {
        let url = self.url(path);
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(None)
            .timeout_recv_body(None)
            .user_agent(concat!("cloacinactl/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let mut req = agent.get(&url).header("Accept", "text/event-stream");
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let mut response = req.call().map_err(|e| HttpError::Transport {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            return Err(status_error(
                status.as_u16(),
                status.canonical_reason(),
                &body,
            ));
        }
        Ok(Box::new(std::io::BufReader::new(
            response.into_body().into_reader(),
        )))
    }

    /// `DELETE path`, the answer parsed as JSON.
    pub fn delete_json(&self, path: &str) -> Result<Value, HttpError> {
        let url = self.url(path);
        let mut req = self.agent.delete(&url);
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        let text = finish(&url, req.call())?;
        parse_json(&url, &text.1)
    }

    fn get_text(&self, path: &str) -> Result<(u16, String), HttpError> {
        let url = self.url(path);
        let mut req = self.agent.get(&url);
        if let Some(key) = &self.api_key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        finish(&url, req.call())
    }
}

fn parse_json(url: &str, body: &str) -> Result<Value, HttpError> {
    serde_json::from_str(body).map_err(|e| HttpError::Decode {
        url: url.to_string(),
        message: e.to_string(),
    })
}

/// A 2xx answer's status and body; an error status becomes [`HttpError::Status`] carrying the
/// server's `{"error","code"}`.
fn finish(
    url: &str,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, String), HttpError> {
    let mut response = result.map_err(|e| HttpError::Transport {
        url: url.to_string(),
        message: e.to_string(),
    })?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| HttpError::Transport {
            url: url.to_string(),
            message: format!("cannot read the answer: {e}"),
        })?;
    if status.is_success() {
        return Ok((status.as_u16(), body));
    }
    Err(status_error(
        status.as_u16(),
        status.canonical_reason(),
        &body,
    ))
}

/// The error for a non-2xx answer: the documented `{"error","code"}` body when there is one,
/// else the status line and the start of whatever the body was.
fn status_error(status: u16, reason: Option<&str>, body: &str) -> HttpError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let message = field("error").unwrap_or_else(|| {
        let snippet: String = body.trim().chars().take(200).collect();
        let reason = reason.unwrap_or("error");
        if snippet.is_empty() {
            format!("the server answered {status} {reason}")
        } else {
            format!("the server answered {status} {reason}: {snippet}")
        }
    });
    let code = field("code");
    tracing::debug!(status, code = ?code, "the server refused the request");
    HttpError::Status {
        status,
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(
            normalize_base("127.0.0.1:8080").expect("ok"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(normalize_base("http://h:1/").expect("ok"), "http://h:1");
        let err = normalize_base("https://api.example.com").expect_err("no TLS");
        assert!(err.to_string().contains("https is not supported"), "{err}");
        assert_eq!(err.exit_code(), 1);
        assert!(normalize_base("ftp://x").is_err());
        assert!(normalize_base("http://").is_err());
    }

    #[test]
    fn error_statuses_map_to_exit_codes_with_the_servers_message() {
        let body = r#"{"error":"no such key","code":"unauthorized"}"#;
        let e = status_error(401, Some("Unauthorized"), body);
        assert_eq!(e.exit_code(), 4);
        assert_eq!(e.to_string(), "no such key");
        assert_eq!(status_error(403, None, body).exit_code(), 4);
        assert_eq!(status_error(404, None, body).exit_code(), 3);
        assert_eq!(status_error(409, None, body).exit_code(), 5);
        let e = status_error(502, Some("Bad Gateway"), "<html>proxy</html>");
        assert_eq!(e.exit_code(), 5);
        assert_eq!(
            e.to_string(),
            "the server answered 502 Bad Gateway: <html>proxy</html>"
        );
        let transport = HttpError::Transport {
            url: "u".into(),
            message: "refused".into(),
        };
        assert_eq!(transport.exit_code(), 2);
    }
}
