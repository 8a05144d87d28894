//! Trace export against a real OTLP/gRPC receiver: the real `cloacina-server` binary with
//! OTEL_EXPORTER_OTLP_ENDPOINT set sends its request spans there; unset, it runs as before;
//! an unusable endpoint is a startup error naming the variable.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

const KEY: &str = "clk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().expect("lock").push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts the receiver on a free port; returns its address.
async fn start_receiver(receiver: Receiver) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver))
            .serve_with_incoming(incoming),
    );
    addr
}

struct Run {
    _dir: tempfile::TempDir,
    home: PathBuf,
    stderr: PathBuf,
    child: Child,
}

fn spawn_server(env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let stderr = dir.path().join("stderr.txt");
    let db = dir.path().join("control.db");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cloacina-server"));
    cmd.arg("--bind")
        .arg("127.0.0.1:0")
        .arg("--home")
        .arg(&home)
        .arg("--database-url")
        .arg(format!("sqlite://{}", db.display()))
        .arg("--bootstrap-key")
        .arg(KEY)
        .arg("--no-color")
        .env_remove("RUST_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_SERVICE_NAME")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn cloacina-server");
    Run {
        _dir: dir,
        home,
        stderr,
        child,
    }
}

impl Run {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The bound address from `<home>/server.pid`, once the server listens.
    fn addr(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(addr) = read_addr(&self.home.join("server.pid")) {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "server exited ({status}) before listening:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server never listened:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) -> (ExitStatus, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        let stderr = self.stderr();
        (status, stderr)
    }
}

fn read_addr(pid_file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("addr="))
        .map(str::to_string)
}

/// A raw HTTP/1.1 GET; returns the status code and the whole answer.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    attrs.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
            Some(any_value::Value::IntValue(i)) => Some(*i),
            _ => None,
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_the_collector() {
    let receiver = Receiver::default();
    let collector = start_receiver(receiver.clone()).await;
    let endpoint = format!("http://{collector}");
    let (status, stderr, body) = tokio::task::spawn_blocking(move || {
        let mut run = spawn_server(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "cloacina-test"),
        ]);
        let addr = run.addr();
        let (code, body) = get(&addr, "/health");
        assert_eq!(code, 200, "{body}\n{}", run.stderr());
        let (code, _) = get(&addr, "/no/such/route");
        assert_eq!(code, 404);
        let (status, stderr) = run.stop();
        (status, stderr, body)
    })
    .await
    .expect("join");
    assert!(status.success(), "exit {status}:\n{stderr}");
    assert!(body.contains("ok") || !body.is_empty());

    let requests = receiver.0.lock().expect("lock").clone();
    let context = format!("server stderr:\n{stderr}\nreceived: {requests:#?}");
    let resource_spans: Vec<_> = requests.iter().flat_map(|r| &r.resource_spans).collect();
    assert!(!resource_spans.is_empty(), "no spans received\n{context}");
    for rs in &resource_spans {
        let attrs = rs.resource.as_ref().map(|r| r.attributes.as_slice());
        assert_eq!(
            attrs.and_then(|a| string_attr(a, "service.name")),
            Some("cloacina-test"),
            "{context}"
        );
    }
    let spans: Vec<_> = resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let health = spans
        .iter()
        .find(|s| string_attr(&s.attributes, "http.route") == Some("/health"))
        .unwrap_or_else(|| panic!("no span for /health\n{context}"));
    assert_eq!(health.name, "GET /health", "{context}");
    assert_eq!(
        int_attr(&health.attributes, "http.response.status_code"),
        Some(200),
        "{context}"
    );
    assert_eq!(
        string_attr(&health.attributes, "http.request.method"),
        Some("GET")
    );
    assert!(string_attr(&health.attributes, "http.request.id").is_some());
    assert!(
        spans.iter().any(|s| {
            string_attr(&s.attributes, "http.route") == Some("unmatched")
                && int_attr(&s.attributes, "http.response.status_code") == Some(404)
        }),
        "{context}"
    );
    // The export-only span stays out of the logs.
    assert!(!stderr.contains("http.request"), "{stderr}");
}

#[test]
fn without_the_variable_the_server_runs_as_before() {
    let mut run = spawn_server(&[]);
    let addr = run.addr();
    let (code, body) = get(&addr, "/health");
    assert_eq!(code, 200, "{body}\n{}", run.stderr());
    let (status, stderr) = run.stop();
    assert!(status.success(), "exit {status}:\n{stderr}");
    assert!(!stderr.contains("exporting traces"), "{stderr}");
    assert!(!stderr.contains("http.request"), "{stderr}");
}

#[test]
fn an_unusable_endpoint_is_a_startup_error() {
    for endpoint in ["not a url", "127.0.0.1:4317", "https://collector:4317"] {
        let mut run = spawn_server(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]);
        let status = run.child.wait().expect("wait");
        let stderr = run.stderr();
        assert_eq!(status.code(), Some(1), "{endpoint}: {stderr}");
        assert!(
            stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{endpoint}: {stderr}"
        );
        assert!(!run.home.join("server.pid").exists(), "{endpoint}");
    }
}

#[test]
fn an_unreachable_collector_costs_spans_not_service() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut run = spawn_server(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);
    let addr = run.addr();
    for _ in 0..3 {
        let (code, body) = get(&addr, "/health");
        assert_eq!(code, 200, "{body}\n{}", run.stderr());
    }
    let (status, stderr) = run.stop();
    assert!(status.success(), "exit {status}:\n{stderr}");
    assert!(stderr.contains("trace export failed"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
