//! `cloacinactl execution list|status|tasks|events|cancel|pause|resume`: a tenant's workflow
//! executions, through the server's `/v1/tenants/<tenant>/executions` routes.
//!
//! `events --follow` reads the live Server-Sent Events stream
//! (`GET .../executions/<id>/events/stream`, each event's SSE `id` its sequence number),
//! prints each event as it arrives and returns once the execution has ended. A stream that
//! breaks before then is resumed from the last event seen (`Last-Event-ID`), a few times with
//! a growing pause, before giving up with exit 2.

use std::io::{BufRead, Write};
use std::time::Duration;

use serde_json::{Value, json};

use crate::api::{self, enc, query, tenant_path};
use crate::cli::{ExecutionCommand, ExecutionEventsArgs, ExecutionListArgs, OutputFormat};
use crate::commands::workflow::{field, kv_lines};
use crate::error::CliError;
use crate::http::{Client, HttpError};
use crate::output::{self, Report, emit, to_yaml, truncate};
use crate::settings::Settings;

pub fn run(settings: &Settings, command: &ExecutionCommand) -> Result<(), CliError> {
    match command {
        ExecutionCommand::List(args) => list(settings, args),
        ExecutionCommand::Status(args) => status(settings, &args.target),
        ExecutionCommand::Tasks(args) => tasks(settings, &args.target),
        ExecutionCommand::Events(args) => events(settings, args),
        ExecutionCommand::Cancel(args) => act(settings, &args.target, Action::Cancel),
        ExecutionCommand::Pause(args) => act(settings, &args.target, Action::Pause),
        ExecutionCommand::Resume(args) => act(settings, &args.target, Action::Resume),
    }
}

/// The statuses an execution can have (spec: `execution status`).
const STATUSES: [&str; 6] = [
    "Pending",
    "Running",
    "Completed",
    "Failed",
    "Cancelled",
    "Paused",
];

/// Statuses after which nothing more happens to an execution.
fn is_terminal(status: &str) -> bool {
    matches!(status, "Completed" | "Failed" | "Cancelled")
}

/// `--status` in its canonical spelling (any case is accepted).
fn canonical_status(given: &str) -> Result<&'static str, CliError> {
    STATUSES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(given.trim()))
        .copied()
        .ok_or_else(|| {
            CliError::User(format!(
                "--status '{given}' is not an execution status; use one of {}",
                STATUSES.join(", ")
            ))
        })
}

/// `/v1/tenants/<tenant>/executions/<id>`.
fn execution_path(settings: &Settings, id: &str) -> String {
    tenant_path(settings, &format!("executions/{}", enc(id)))
}

fn list(settings: &Settings, args: &ExecutionListArgs) -> Result<(), CliError> {
    if !(1..=1000).contains(&args.limit) {
        return Err(CliError::User(format!(
            "--limit {} is out of range: it must be 1-1000",
            args.limit
        )));
    }
    let status = args.status.as_deref().map(canonical_status).transpose()?;
    let client = api::client(settings)?;
    let path = tenant_path(settings, "executions")
        + &query(&[
            ("workflow", args.workflow.clone()),
            ("status", status.map(str::to_string)),
            ("limit", Some(args.limit.to_string())),
            ("offset", Some(args.offset.to_string())),
        ]);
    let doc = client.get_json(&path)?;
    let items: Vec<Value> = doc
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = doc.get("total").and_then(Value::as_u64).unwrap_or(0);
    let mut report = Report::list(
        settings,
        doc,
        &items,
        &[
            "id",
            "workflow_name",
            "status",
            "started_at",
            "completed_at",
            "trigger_origin",
        ],
        "",
    );
    report.text = list_text(settings, &report.text, items.len() as u64, total, args);
    emit(settings, &report)
}

/// The table (if any rows) and a last line with the total.
fn list_text(
    settings: &Settings,
    table: &str,
    shown: u64,
    total: u64,
    args: &ExecutionListArgs,
) -> String {
    if shown == 0 {
        return if total == 0 {
            format!(
                "no executions in tenant '{}'{}",
                settings.tenant,
                if args.workflow.is_some() || args.status.is_some() {
                    " match the filters"
                } else {
                    ""
                }
            )
        } else {
            format!("no executions at offset {} (total: {total})", args.offset)
        };
    }
    let first = args.offset + 1;
    let last = args.offset + shown;
    let table = table.trim_end();
    if first == 1 && last >= total {
        return format!("{table}\ntotal: {total}");
    }
    let more = if last < total {
        format!("; --offset {last} shows the next")
    } else {
        String::new()
    };
    format!("{table}\ntotal: {total} (showing {first}-{last}{more})")
}

fn status(settings: &Settings, id: &str) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let doc = client.get_json(&execution_path(settings, id))?;
    let report = Report {
        id: field(&doc, "execution_id"),
        text: status_text(&doc),
        value: doc,
    };
    emit(settings, &report)
}

/// Widest the final context gets in the table view.
const RESULT_MAX: usize = 200;

/// The table view of an execution: its status first, then the other fields.
fn status_text(doc: &Value) -> String {
    let tasks = format!(
        "{} total, {} remaining, {} failed",
        field(doc, "total_tasks"),
        field(doc, "remaining_tasks"),
        field(doc, "failed_tasks")
    );
    let mut rows = vec![
        ("status", field(doc, "status")),
        ("execution_id", field(doc, "execution_id")),
        ("workflow", field(doc, "workflow_name")),
        ("workflow_version", field(doc, "workflow_version")),
        ("tasks", tasks),
        ("error", field(doc, "error")),
        ("created_at", field(doc, "created_at")),
        ("started_at", field(doc, "started_at")),
        ("completed_at", field(doc, "completed_at")),
    ];
    if let Some(result) = doc.get("result").filter(|r| !r.is_null()) {
        rows.push(("result", truncate(&result.to_string(), RESULT_MAX)));
    }
    kv_lines(&rows)
}

fn tasks(settings: &Settings, id: &str) -> Result<(), CliError> {
    let client = api::client(settings)?;
    let doc = client.get_json(&format!("{}/tasks", execution_path(settings, id)))?;
    let rows: Vec<Value> = doc
        .get("tasks")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(task_row).collect())
        .unwrap_or_default();
    let mut report = Report::list(
        settings,
        doc,
        &rows,
        &[
            "task_id",
            "status",
            "attempts",
            "started_at",
            "completed_at",
            "last_error",
        ],
        "no tasks (the execution has not been planned yet)",
    );
    report.id = rows
        .iter()
        .map(|t| field(t, "task_id"))
        .collect::<Vec<_>>()
        .join("\n");
    emit(settings, &report)
}

/// A task of `GET .../tasks` as a table row, its attempts as `attempt/max`.
fn task_row(t: &Value) -> Value {
    let mut row = t.clone();
    if let Value::Object(m) = &mut row {
        m.insert(
            "attempts".to_string(),
            json!(format!(
                "{}/{}",
                field(t, "attempt"),
                field(t, "max_attempts")
            )),
        );
    }
    row
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Cancel,
    Pause,
    Resume,
}

fn act(settings: &Settings, id: &str, action: Action) -> Result<(), CliError> {
    let (verb, done) = match action {
        Action::Cancel => ("cancel", "cancelled"),
        Action::Pause => ("pause", "paused"),
        Action::Resume => ("resume", "resumed"),
    };
    let client = api::client(settings)?;
    let doc = client.post_json(
        &format!("{}/{verb}", execution_path(settings, id)),
        &json!({}),
    )?;
    let report = Report {
        id: field(&doc, "execution_id"),
        text: format!(
            "{done} execution {}; its status is now {}",
            field(&doc, "execution_id"),
            field(&doc, "status")
        ),
        value: doc,
    };
    emit(settings, &report)
}

// ---------------------------------------------------------------------------------------------
// Events

/// The most events one `GET .../events` answers (the wire contract's maximum).
const EVENTS_PAGE: usize = 10_000;

fn events(settings: &Settings, args: &ExecutionEventsArgs) -> Result<(), CliError> {
    if let Some(since) = &args.since {
        cloacina::duration::parse(since).map_err(|e| CliError::User(format!("--since: {e}")))?;
    }
    let client = api::client(settings)?;
    let base = execution_path(settings, &args.id);
    if args.follow {
        let mut out = EventOut::new(settings.output, settings.color, std::io::stdout());
        return match follow(&client, &base, &args.id, args.since.as_deref(), &mut out) {
            Err(FollowError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(FollowError::Output(e)) => Err(CliError::User(format!(
                "cannot write to standard output: {e}"
            ))),
            Err(FollowError::Cli(e)) => Err(e),
            Ok(()) => Ok(()),
        };
    }
    let (doc, events) = fetch_events(&client, &base, args.since.as_deref())?;
    let text = if events.is_empty() {
        match &args.since {
            Some(since) => format!("no events in the last {since}"),
            None => "no events".to_string(),
        }
    } else {
        let mut text = event_header(settings.color);
        for e in &events {
            text.push_str(&event_line(e));
            text.push('\n');
        }
        text
    };
    let report = Report {
        id: events
            .iter()
            .map(output::id_of)
            .collect::<Vec<_>>()
            .join("\n"),
        text,
        value: doc,
    };
    emit(settings, &report)
}

/// The events of the execution at `base` (`since`: a duration, or a sequence number to get
/// the ones after it), every page of them: the first answer with `events` holding all, and
/// the events.
fn fetch_events(
    client: &Client,
    base: &str,
    since: Option<&str>,
) -> Result<(Value, Vec<Value>), CliError> {
    let mut all: Vec<Value> = Vec::new();
    let mut first: Option<Value> = None;
    let mut since = since.map(str::to_string);
    loop {
        let doc = client.get_json(&format!(
            "{base}/events{}",
            query(&[
                ("since", since.clone()),
                ("limit", Some(EVENTS_PAGE.to_string())),
            ])
        ))?;
        let page: Vec<Value> = doc
            .get("events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let full = page.len() >= EVENTS_PAGE;
        // Later pages: the events after the last one seen (newer than any duration).
        since = page.last().and_then(seq_of).map(|s| s.to_string());
        all.extend(page);
        if first.is_none() {
            first = Some(doc);
        }
        if !full || since.is_none() {
            break;
        }
    }
    let mut doc = first.unwrap_or_else(|| json!({}));
    if let Value::Object(m) = &mut doc {
        m.insert("events".to_string(), Value::Array(all.clone()));
    }
    Ok((doc, all))
}

/// An event's sequence number (`sequence_num`, else the number after the `:` of its `id`).
fn seq_of(e: &Value) -> Option<i64> {
    e.get("sequence_num").and_then(Value::as_i64).or_else(|| {
        e.get("id")
            .and_then(Value::as_str)
            .and_then(|id| id.rsplit(':').next())
            .and_then(|s| s.parse().ok())
    })
}

const TIME_WIDTH: usize = 24;
const TYPE_WIDTH: usize = 20;
const TASK_WIDTH: usize = 14;

/// The header of the event lines (bold with colours on).
fn event_header(color: bool) -> String {
    let head = format!(
        "{:<TIME_WIDTH$}  {:<TYPE_WIDTH$}  {:<TASK_WIDTH$}  DATA",
        "TIME", "EVENT", "TASK"
    );
    if color {
        format!("\x1b[1m{head}\x1b[0m\n")
    } else {
        format!("{head}\n")
    }
}

/// One event as a line: time, type, task (`-` for a run-level event) and its data as
/// `key=value` pairs. Fixed column widths, so lines printed as they arrive still line up.
fn event_line(e: &Value) -> String {
    let data = match e.get("event_data") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", output::cell(Some(v))))
            .collect::<Vec<_>>()
            .join(" "),
        None | Some(Value::Null) => String::new(),
        Some(other) => output::cell(Some(other)),
    };
    format!(
        "{:<TIME_WIDTH$}  {:<TYPE_WIDTH$}  {:<TASK_WIDTH$}  {data}",
        field(e, "created_at"),
        field(e, "event_type"),
        field(e, "task_name"),
    )
    .trim_end()
    .to_string()
}

/// Where `--follow` prints each event as it arrives, in the chosen format: table lines under
/// one header, one compact JSON object per line (NDJSON), one YAML document per event, or
/// the event ids.
struct EventOut<W: Write> {
    format: OutputFormat,
    color: bool,
    out: W,
    header_done: bool,
}

impl<W: Write> EventOut<W> {
    fn new(format: OutputFormat, color: bool, out: W) -> EventOut<W> {
        EventOut {
            format,
            color,
            out,
            header_done: false,
        }
    }

    fn print(&mut self, e: &Value) -> std::io::Result<()> {
        let text = match self.format {
            OutputFormat::Table => {
                let mut text = String::new();
                if !self.header_done {
                    self.header_done = true;
                    text.push_str(&event_header(self.color));
                }
                text.push_str(&event_line(e));
                text
            }
            OutputFormat::Json => e.to_string(),
            OutputFormat::Yaml => format!("---\n{}", to_yaml(e).trim_end()),
            OutputFormat::Id => output::id_of(e),
        };
        writeln!(self.out, "{text}")?;
        self.out.flush()
    }
}

/// Why `--follow` stopped early.
#[derive(Debug)]
enum FollowError {
    Cli(CliError),
    /// Standard output failed (a closed pipe ends the command quietly).
    Output(std::io::Error),
}

impl From<CliError> for FollowError {
    fn from(e: CliError) -> Self {
        FollowError::Cli(e)
    }
}

impl From<HttpError> for FollowError {
    fn from(e: HttpError) -> Self {
        FollowError::Cli(e.into())
    }
}

/// Reconnections in a row without a new event before `--follow` gives up (exit 2).
const RETRIES: u32 = 5;

/// The first pause before a reconnection (short in unit tests, which exercise the retries).
#[cfg(not(test))]
const BACKOFF_BASE_MS: u64 = 250;
#[cfg(test)]
const BACKOFF_BASE_MS: u64 = 10;

/// The pause before reconnection number `n` (1-based): 250 ms, doubling, at most 4 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(BACKOFF_BASE_MS << n.saturating_sub(1).min(4))
}

/// One Server-Sent Event: its `id`, `event` type and `data` (lines joined with `\n`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// The `text/event-stream` format, line by line (HTML Living Standard, "Server-sent
/// events"): fields accumulate until a blank line dispatches the event; `:` lines are
/// comments (keep-alives); an event without data is not dispatched.
#[derive(Debug, Default)]
struct SseParser {
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds one line (its line ending may still be on it); the event it completes, if any.
    fn line(&mut self, line: &str) -> Option<SseEvent> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let event = std::mem::take(&mut self.current);
            let dispatch = std::mem::take(&mut self.has_data);
            return dispatch.then_some(event);
        }
        if line.starts_with(':') {
            return None;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "id" if !value.contains('\0') => self.current.id = Some(value.to_string()),
            "event" => self.current.event = Some(value.to_string()),
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

/// How one connection to the stream ended.
enum StreamEnd {
    /// The server closed it (after the run ended, or because it is stopping).
    Closed,
    /// It broke (connection reset, truncated answer).
    Broken(String),
}

/// Reads events off `reader` until it ends, handing each to `on_event`.
fn pump(
    reader: &mut dyn BufRead,
    on_event: &mut dyn FnMut(SseEvent) -> Result<(), FollowError>,
) -> Result<StreamEnd, FollowError> {
    let mut parser = SseParser::default();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(StreamEnd::Closed),
            Ok(_) => {
                if let Some(event) = parser.line(&line) {
                    on_event(event)?;
                }
            }
            Err(e) => return Ok(StreamEnd::Broken(e.to_string())),
        }
    }
}

/// `execution events --follow`: with `since`, the events of that window first; then the live
/// stream from the newest event already known, until the execution has ended.
fn follow<W: Write>(
    client: &Client,
    base: &str,
    id: &str,
    since: Option<&str>,
    out: &mut EventOut<W>,
) -> Result<(), FollowError> {
    // The newest event printed or skipped: the stream resumes after it.
    let mut after: i64 = 0;
    if let Some(since) = since {
        // The newest event before the window is read first, so an event that arrives
        // between the two reads is in the window's answer rather than skipped.
        let (_, all) = fetch_events(client, base, None)?;
        let newest = all.last().and_then(seq_of).unwrap_or(0);
        let (_, recent) = fetch_events(client, base, Some(since))?;
        for e in &recent {
            out.print(e).map_err(FollowError::Output)?;
            after = after.max(seq_of(e).unwrap_or(0));
        }
        after = after.max(newest);
    }
    let stream = format!("{base}/events/stream");
    let mut connected = false;
    let mut failures: u32 = 0;
    loop {
        let headers: Vec<(&str, String)> = if after > 0 {
            vec![("Last-Event-ID", after.to_string())]
        } else {
            Vec::new()
        };
        let why = match client.get_stream(&stream, &headers) {
            Ok(mut reader) => {
                connected = true;
                let mut on_event = |event: SseEvent| -> Result<(), FollowError> {
                    if event.event.as_deref() == Some("error") {
                        eprintln!(
                            "warning: the server's event stream reported an error: {}",
                            event.data
                        );
                        return Ok(());
                    }
                    let Ok(doc) = serde_json::from_str::<Value>(&event.data) else {
                        eprintln!(
                            "warning: skipped an event that is not JSON: {}",
                            truncate(&event.data, 200)
                        );
                        return Ok(());
                    };
                    let seq = seq_of(&doc)
                        .or_else(|| event.id.as_deref().and_then(|i| i.parse().ok()))
                        .unwrap_or(after + 1);
                    if seq <= after {
                        return Ok(());
                    }
                    after = seq;
                    failures = 0;
                    out.print(&doc).map_err(FollowError::Output)
                };
                match pump(&mut reader, &mut on_event)? {
                    StreamEnd::Closed => "the server closed the stream".to_string(),
                    StreamEnd::Broken(e) => format!("the stream broke: {e}"),
                }
            }
            Err(e @ HttpError::Transport { .. }) if connected => e.to_string(),
            Err(e) => return Err(e.into()),
        };
        // Ended, or only the connection? The execution's status says.
        let why = match client.get_json(base) {
            Ok(doc) if is_terminal(&field(&doc, "status")) => {
                // Anything committed with the final status that the stream did not deliver.
                let (_, rest) = fetch_events(client, base, Some(&after.to_string()))?;
                for e in rest.iter().filter(|e| seq_of(e).is_none_or(|s| s > after)) {
                    out.print(e).map_err(FollowError::Output)?;
                }
                return Ok(());
            }
            Ok(_) => why,
            Err(e @ HttpError::Transport { .. }) => format!("{why}; {e}"),
            Err(e) => return Err(e.into()),
        };
        failures += 1;
        if failures > RETRIES {
            return Err(FollowError::Cli(CliError::Network(format!(
                "lost the event stream of execution {id} and could not resume it ({RETRIES} retries): {why}; 'cloacinactl execution events {id}' shows every event so far"
            ))));
        }
        eprintln!("{why}; resuming after event {after} ({failures}/{RETRIES})");
        std::thread::sleep(backoff(failures));
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write as _};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn sse_lines_make_events() {
        let mut p = SseParser::default();
        let lines = [
            ": keep-alive\n",
            "\n",
            "id: 3\r\n",
            "event: task_completed\n",
            "data: {\"a\":\n",
            "data:1}\n",
            "retry: 10\n",
            "\n",
            "id: 4\n",
            "\n",
            "data\n",
            "\n",
        ];
        let got: Vec<SseEvent> = lines.iter().filter_map(|l| p.line(l)).collect();
        assert_eq!(
            got,
            vec![
                SseEvent {
                    id: Some("3".into()),
                    event: Some("task_completed".into()),
                    data: "{\"a\":\n1}".into(),
                },
                SseEvent {
                    id: None,
                    event: None,
                    data: String::new(),
                },
            ]
        );
    }

    #[test]
    fn statuses_and_sequence_numbers() {
        assert_eq!(canonical_status("completed").expect("ok"), "Completed");
        assert_eq!(canonical_status(" PAUSED ").expect("ok"), "Paused");
        let err = canonical_status("done").expect_err("unknown");
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("Pending, Running"), "{err}");
        assert!(is_terminal("Cancelled") && !is_terminal("Paused"));
        assert_eq!(seq_of(&json!({"sequence_num": 7})), Some(7));
        assert_eq!(seq_of(&json!({"id": "abc:9"})), Some(9));
        assert_eq!(seq_of(&json!({})), None);
        let base = Duration::from_millis(BACKOFF_BASE_MS);
        assert_eq!(backoff(1), base);
        assert_eq!(backoff(3), base * 4);
        assert_eq!(backoff(9), base * 16);
    }

    #[test]
    fn event_lines_line_up() {
        let e = json!({
            "id": "x:2", "event_type": "task_retry_scheduled", "task_name": "check_stock",
            "created_at": "2024-05-01T10:00:00.123Z", "sequence_num": 2,
            "event_data": {"attempt": 1, "message": "warehouse busy"}
        });
        let line = event_line(&e);
        assert_eq!(
            line,
            "2024-05-01T10:00:00.123Z  task_retry_scheduled  check_stock     attempt=1 message=warehouse busy"
        );
        let run = json!({"event_type": "execution_completed", "created_at": "t", "event_data": {}});
        assert!(
            event_line(&run).ends_with("execution_completed   -"),
            "{}",
            event_line(&run)
        );
        assert!(event_header(false).starts_with("TIME "));
        let mut out = EventOut::new(OutputFormat::Json, false, Vec::new());
        out.print(&e).expect("print");
        out.print(&run).expect("print");
        let text = String::from_utf8(out.out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(serde_json::from_str::<Value>(lines[0]).expect("json"), e);
    }

    #[test]
    fn the_duration_grammar_is_named() {
        let err = cloacina::duration::parse("soon").expect_err("bad");
        assert!(err.to_string().contains("e.g. 90d, 7d12h"), "{err}");
    }

    /// A one-thread HTTP server answering each request with `answer(request head)`, which
    /// returns the raw response bytes (written, then the connection is closed).
    fn fake_server(
        answer: impl Fn(&str) -> Vec<u8> + Send + 'static,
    ) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                log.lock().expect("log").push(head.clone());
                let _ = conn.write_all(&answer(&head));
            }
        });
        (url, seen)
    }

    fn json_answer(body: &Value) -> Vec<u8> {
        let body = body.to_string();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn sse_event(seq: i64, kind: &str) -> String {
        let data = json!({
            "id": format!("e:{seq}"), "event_type": kind, "event_data": {},
            "task_name": null, "created_at": "t", "sequence_num": seq
        });
        format!("id: {seq}\nevent: {kind}\ndata: {data}\n\n")
    }

    #[test]
    fn a_broken_stream_is_resumed_after_the_last_event_seen() {
        let streams = Arc::new(Mutex::new(0));
        let (url, seen) = fake_server(move |head| {
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            if path.ends_with("/events/stream") {
                let mut n = streams.lock().expect("count");
                *n += 1;
                let (events, end) = if *n == 1 {
                    // Two events, then the connection dies inside a chunk.
                    (
                        sse_event(1, "execution_created") + &sse_event(2, "task_ready"),
                        "5\r\nid",
                    )
                } else {
                    (
                        sse_event(2, "task_ready") + &sse_event(3, "execution_completed"),
                        "0\r\n\r\n",
                    )
                };
                return format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{events}\r\n{end}",
                    events.len()
                )
                .into_bytes();
            }
            if path.contains("/events?") {
                return json_answer(&json!({"events": []}));
            }
            let done = *streams.lock().expect("count") >= 2;
            json_answer(&json!({"status": if done { "Completed" } else { "Running" }}))
        });
        let client = Client::new(&url, Some("k".into()), Duration::from_secs(10)).expect("client");
        let mut out = EventOut::new(OutputFormat::Id, false, Vec::new());
        follow(
            &client,
            "/v1/tenants/public/executions/e",
            "e",
            None,
            &mut out,
        )
        .expect("follow");
        let text = String::from_utf8(out.out).expect("utf8");
        assert_eq!(text, "e:1\ne:2\ne:3\n", "each event once, in order");
        let seen = seen.lock().expect("log");
        let streams: Vec<&String> = seen
            .iter()
            .filter(|h| h.contains("/events/stream"))
            .collect();
        assert_eq!(streams.len(), 2, "{seen:?}");
        assert!(
            !streams[0].to_ascii_lowercase().contains("last-event-id"),
            "{}",
            streams[0]
        );
        assert!(
            streams[1].to_ascii_lowercase().contains("last-event-id: 2"),
            "{}",
            streams[1]
        );
    }

    #[test]
    fn a_stream_that_never_comes_back_gives_up_with_exit_2() {
        let (url, _) = fake_server(|head| {
            if head.contains("/events/stream") {
                return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n".to_vec();
            }
            json_answer(&json!({"status": "Running"}))
        });
        let client = Client::new(&url, Some("k".into()), Duration::from_secs(10)).expect("client");
        let mut out = EventOut::new(OutputFormat::Table, false, Vec::new());
        let started = std::time::Instant::now();
        match follow(&client, "/x", "x", None, &mut out) {
            Err(FollowError::Cli(e)) => {
                assert_eq!(e.exit_code(), 2, "{e}");
                assert!(e.to_string().contains("could not resume"), "{e}");
            }
            other => panic!("expected a network error, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
