//! End-to-end: hostile input against the real `cloacina-server` over real TCP connections.
//!
//! 1. Slow and idle clients (slowloris headers and bodies, idle sockets, a client that stops
//!    reading) and too many connections do not exhaust the server: each is cut off by its
//!    limit (`--header-read-timeout-s`, `--body-read-timeout-s`, `--write-timeout-s`,
//!    `--max-connections`), with an answer in the JSON error shape where HTTP allows one, and
//!    the server answers the next client.
//! 2. Oversized bodies are refused with 413 `body_too_large`, and unknown methods do not grow
//!    the metrics.
//! 3. Hostile archives uploaded over HTTP (path traversal, absolute paths, links out of the
//!    extraction directory, decompression and record bombs, truncated and random bytes,
//!    garbage manifests, libraries that cannot load here) are each refused with a 4xx in the
//!    JSON error shape, nothing is written outside the server's directories, nothing is kept,
//!    and the server keeps serving its other packages. On SQLite and PostgreSQL (the package
//!    rows live in the database).
//!
//! The connection tests run on SQLite only: the connection loop never touches the database.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloacina_e2e::both_backends;
use cloacina_e2e::packages;
use cloacina_e2e::server::{Backend, ServerHome, ServerProcess, Start};
use cloacina_e2e::wait::WAIT_LIMIT;
use cloacina_e2e::wait_for;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Raw HTTP: what a hostile client does, byte by byte.

/// An answer read off a raw connection.
#[derive(Debug, Default)]
struct RawAnswer {
    status: u16,
    head: String,
    body: String,
    /// The server closed the connection (EOF or reset) rather than our read timing out.
    closed: bool,
}

impl RawAnswer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

impl std::fmt::Display for RawAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n\n{} (closed: {})",
            self.head, self.body, self.closed
        )
    }
}

fn addr(server: &ServerProcess<'_>) -> String {
    server
        .url
        .strip_prefix("http://")
        .expect("http URL")
        .to_string()
}

fn connect(server: &ServerProcess<'_>) -> TcpStream {
    let s = TcpStream::connect(addr(server)).expect("connect to the server");
    s.set_read_timeout(Some(WAIT_LIMIT)).expect("read timeout");
    s
}

/// Reads whatever the server sends until it closes the connection (or [`WAIT_LIMIT`]).
fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

fn parse(bytes: &[u8], closed: bool) -> RawAnswer {
    let text = String::from_utf8_lossy(bytes).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    RawAnswer {
        status,
        head: head.to_string(),
        body: body.to_string(),
        closed,
    }
}

/// One request with `Connection: close`, its answer read to the end.
fn raw_request(
    server: &ServerProcess<'_>,
    method: &str,
    path: &str,
    key: Option<&str>,
) -> RawAnswer {
    let mut s = connect(server);
    let auth = key
        .map(|k| format!("authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: t\r\n{auth}connection: close\r\n\r\n"
    )
    .expect("send");
    let (bytes, closed) = read_until_closed(&mut s);
    parse(&bytes, closed)
}

/// Sends `head` and `body` from a thread (the server may answer and close before the body is
/// all sent) while reading the answer here.
fn send_and_read(server: &ServerProcess<'_>, head: String, body: Vec<u8>) -> RawAnswer {
    let mut s = connect(server);
    let mut writer = s.try_clone().expect("clone the socket");
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&body);
    });
    let (bytes, closed) = read_until_closed(&mut s);
    let _ = sender.join();
    parse(&bytes, closed)
}

/// Asserts the answer is an error in the one JSON shape with `status` and `code`.
fn assert_error(r: &RawAnswer, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {r}");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: {r}"
    );
    let body = r.json();
    let keys: Vec<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(keys.len(), 2, "{what}: only error and code: {r}");
    assert_eq!(body["code"], code, "{what}: {r}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: {r}"
    );
}

/// `cloacina_http_connections_open`, read over a connection of its own (counted in it).
fn open_connections(server: &ServerProcess<'_>) -> i64 {
    let r = raw_request(server, "GET", "/metrics", None);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix("cloacina_http_connections_open "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

fn health_ok(server: &ServerProcess<'_>) {
    let r = raw_request(server, "GET", "/health", None);
    assert_eq!(
        r.status,
        200,
        "the server still answers: {r}\n{}",
        server.logs()
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Slow, idle and too many clients

#[test]
fn connections_over_the_limit_get_a_json_503_and_slots_free_when_clients_leave() {
    let home = ServerHome::sqlite();
    let server = home.start(Start::direct().arg("--max-connections").arg("4"));
    // Clients that connect and stay (keep-alive) until one is refused. The start-up
    // probe's pooled connection may hold a slot too.
    let mut held: Vec<TcpStream> = Vec::new();
    let mut refused = None;
    for _ in 0..10 {
        let mut s = connect(&server);
        write!(s, "GET /health HTTP/1.1\r\nhost: t\r\n\r\n").expect("send");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        if parse(&buf[..n], false).status == 200 {
            held.push(s);
        } else {
            // The rest of the refusal, to the close.
            let (rest, closed) = read_until_closed(&mut s);
            let mut all = buf[..n].to_vec();
            all.extend(rest);
            refused = Some(parse(&all, closed));
            break;
        }
    }
    let first = refused.expect("a connection over the limit is refused");
    assert_error(&first, 503, "too_many_connections", "over the limit");
    assert!(
        held.len() <= 4,
        "at most the limit is served: {}",
        held.len()
    );

    // One more: an immediate 503 in the JSON error shape, with Retry-After, then closed.
    let r = raw_request(&server, "GET", "/health", None);
    assert_error(&r, 503, "too_many_connections", "over the limit");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"), "{r}");
    assert!(r.closed, "{r}");
    let r = raw_request(&server, "GET", "/v1/auth/whoami", Some(&server.key));
    assert_error(
        &r,
        503,
        "too_many_connections",
        "over the limit, with a key",
    );

    // The held connections are still served.
    if let Some(s) = held.first_mut() {
        s.set_read_timeout(Some(WAIT_LIMIT)).expect("timeout");
        write!(
            s,
            "GET /health HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
        )
        .expect("send");
        let (bytes, _) = read_until_closed(s);
        let r = parse(&bytes, true);
        assert_eq!(r.status, 200, "a held connection is served: {r}");
    }

    // Clients leave: their slots free, new clients are served.
    drop(held);
    wait_for(
        "a new client is served once the others left",
        || raw_request(&server, "GET", "/health", None).status == 200,
        || server.logs(),
    );
    let metrics = raw_request(&server, "GET", "/metrics", None);
    let refused: f64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("cloacina_http_connections_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(refused >= 3.0, "refusals are counted: {}", metrics.body);
}

#[test]
fn slow_idle_and_stalled_clients_are_cut_off_and_the_server_keeps_answering() {
    let home = ServerHome::sqlite();
    let server = home.start(
        Start::direct()
            .arg("--max-connections")
            .arg("8")
            .arg("--header-read-timeout-s")
            .arg("1")
            .arg("--body-read-timeout-s")
            .arg("1")
            .arg("--write-timeout-s")
            .arg("1"),
    );
    let key = server.key.clone();

    // Slowloris headers: a byte every 200 ms never completes the head; the server closes
    // the connection (no answer: there is no request to answer).
    let mut s = connect(&server);
    let mut writer = s.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        let head = b"GET /health HTTP/1.1\r\nhost: t\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in head.iter().cycle().take(10_000) {
            if writer.write_all(&[*byte]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    });
    let (bytes, closed) = read_until_closed(&mut s);
    assert!(
        closed,
        "the server closed the slow connection\n{}",
        server.logs()
    );
    assert!(
        bytes.is_empty(),
        "no answer to a request never sent: {}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        trickle.join().expect("trickle thread"),
        "writing failed once closed"
    );
    health_ok(&server);

    // Idle connections (nothing sent, or idle after an answer) are closed by the server.
    let mut silent: Vec<TcpStream> = (0..5).map(|_| connect(&server)).collect();
    let mut kept = connect(&server);
    write!(kept, "GET /health HTTP/1.1\r\nhost: t\r\n\r\n").expect("send");
    for s in silent.iter_mut().chain(std::iter::once(&mut kept)) {
        let (_, closed) = read_until_closed(s);
        assert!(closed, "an idle connection is closed\n{}", server.logs());
    }
    wait_for(
        "only the metrics connection is open",
        || open_connections(&server) == 1,
        || server.logs(),
    );

    // Slowloris bodies: the headers arrive, the body trickles; 408 request_timeout in the
    // JSON error shape, and the connection is closed.
    for (path, content_type) in [
        ("/v1/tenants", "application/json"),
        ("/v1/tenants/public/workflows", "application/octet-stream"),
    ] {
        let mut s = connect(&server);
        write!(
            s,
            "POST {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ncontent-type: {content_type}\r\ncontent-length: 1000\r\n\r\n{{"
        )
        .expect("send");
        let mut writer = s.try_clone().expect("clone");
        let trickle = std::thread::spawn(move || {
            for _ in 0..10_000 {
                if writer.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let (bytes, closed) = read_until_closed(&mut s);
        let r = parse(&bytes, closed);
        assert_error(&r, 408, "request_timeout", path);
        assert_eq!(r.header("connection").as_deref(), Some("close"), "{r}");
        assert!(r.closed, "{r}");
        let _ = trickle.join();
    }
    health_ok(&server);

    // A client that pipelines requests and never reads the answers: once nothing more can
    // be written to it, its connection is closed.
    let spec_len = raw_request(&server, "GET", "/v1/openapi.json", None)
        .body
        .len();
    assert!(spec_len > 10_000, "{spec_len}");
    let mut s = connect(&server);
    let requests = 60 * 1024 * 1024 / spec_len + 1;
    let pipelined = "GET /v1/openapi.json HTTP/1.1\r\nhost: t\r\n\r\n".repeat(requests);
    let mut writer = s.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(pipelined.as_bytes());
    });
    wait_for(
        "the stalled reader's connection is closed",
        || open_connections(&server) == 1,
        || server.logs(),
    );
    let (bytes, closed) = read_until_closed(&mut s);
    assert!(closed);
    assert!(
        bytes.len() < requests * spec_len,
        "not every answer was sent: {} of {}",
        bytes.len(),
        requests * spec_len
    );
    let _ = sender.join();

    // Through all of it, the API works.
    let r = server.post("/v1/tenants", &json!({"name": "after_slow_clients"}));
    assert_eq!(r.status, 201, "{r}\n{}", server.logs());
    health_ok(&server);
}

// ---------------------------------------------------------------------------------------------
// 2. Oversized bodies, unknown methods

#[test]
fn oversized_bodies_are_refused_with_413_and_the_server_keeps_answering() {
    let home = ServerHome::sqlite();
    let server = home.start(Start::direct().arg("--max-upload-mb").arg("1"));
    let key = server.key.clone();
    let two_mib = vec![b'x'; 2 * 1024 * 1024];

    // A JSON body over 1 MiB.
    let mut json_body = b"{\"name\":\"".to_vec();
    json_body.extend_from_slice(&two_mib);
    json_body.extend_from_slice(b"\"}");
    let head = format!(
        "POST /v1/tenants HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        json_body.len()
    );
    let r = send_and_read(&server, head, json_body);
    assert_error(&r, 413, "body_too_large", "JSON over 1 MiB");

    // An upload over --max-upload-mb, raw and as a form.
    let head = format!(
        "POST /v1/tenants/public/workflows HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        two_mib.len()
    );
    let r = send_and_read(&server, head, two_mib.clone());
    assert_error(&r, 413, "body_too_large", "raw upload over the limit");
    let boundary = "hostile-boundary";
    let mut form = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"p.cloacina\"\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&two_mib);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /v1/tenants/public/workflows HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ncontent-type: multipart/form-data; boundary={boundary}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        form.len()
    );
    let r = send_and_read(&server, head, form);
    assert_error(&r, 413, "body_too_large", "multipart upload over the limit");

    // Chunked (no length): refused once the limit is passed, all the same.
    let mut chunked = Vec::new();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", 1024 * 1024).as_bytes());
        chunked.extend_from_slice(&two_mib[..1024 * 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /v1/tenants/public/workflows HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {key}\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let r = send_and_read(&server, head, chunked);
    assert_error(&r, 413, "body_too_large", "chunked upload over the limit");

    assert_eq!(server.get_ok("/v1/packages")["total"], 0);
    health_ok(&server);
}

/// Regression: the metrics labelled requests by their raw method, so a client sending many
/// made-up methods grew `/metrics` (and the server's memory) without bound.
#[test]
fn made_up_methods_get_a_json_405_and_do_not_grow_the_metrics() {
    let home = ServerHome::sqlite();
    let server = home.start(Start::direct());
    for i in 0..20 {
        let method = format!("FUZZMETHOD{i}");
        let r = raw_request(&server, &method, "/v1/packages", Some(&server.key));
        assert_error(&r, 405, "method_not_allowed", &method);
        let r = raw_request(&server, &method, "/no/such/route", None);
        assert!(
            r.status == 404 || r.status == 405,
            "{method} on an unknown path: {r}"
        );
        assert!(r.json()["code"].is_string(), "{r}");
    }
    let metrics = raw_request(&server, "GET", "/metrics", None).body;
    assert!(!metrics.contains("FUZZMETHOD"), "{metrics}");
    assert!(metrics.contains("method=\"OTHER\""), "{metrics}");
}

// ---------------------------------------------------------------------------------------------
// 3. Hostile archives

/// A tar stream written by hand: any name, type, link or declared size (`tar::Builder` and
/// `archive::pack` refuse to make hostile ones).
#[derive(Default)]
struct Tar {
    out: Vec<u8>,
}

impl Tar {
    fn header(name: &[u8], kind: tar::EntryType, link: &[u8], size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        let old = h.as_old_mut();
        let n = name.len().min(old.name.len());
        old.name[..n].copy_from_slice(&name[..n]);
        let n = link.len().min(old.linkname.len());
        old.linkname[..n].copy_from_slice(&link[..n]);
        h.set_cksum();
        h
    }

    fn pad(&mut self, len: usize) {
        let rem = len % 512;
        if rem != 0 {
            self.out.extend(std::iter::repeat_n(0u8, 512 - rem));
        }
    }

    /// An entry with its data.
    fn entry(mut self, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Tar {
        let h = Tar::header(name.as_bytes(), kind, link.as_bytes(), data.len() as u64);
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        self.pad(data.len());
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Tar {
        self.entry(name, tar::EntryType::Regular, "", data)
    }

    /// A header only (its data follows, written by the caller).
    fn header_only(mut self, name: &str, kind: tar::EntryType, size: u64) -> Tar {
        let h = Tar::header(name.as_bytes(), kind, b"", size);
        self.out.extend_from_slice(h.as_bytes());
        self
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// Raw deflate of `input` with `flush`, appended to `out`.
fn deflate(c: &mut flate2::Compress, mut input: &[u8], flush: flate2::FlushCompress) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let (before_in, before_out) = (c.total_in(), c.total_out());
        let status = c.compress(input, &mut buf, flush).expect("deflate");
        let consumed = (c.total_in() - before_in) as usize;
        let produced = (c.total_out() - before_out) as usize;
        input = &input[consumed..];
        out.extend_from_slice(&buf[..produced]);
        if status == flate2::Status::StreamEnd
            || (flush != flate2::FlushCompress::Finish && input.is_empty() && produced < buf.len())
        {
            return out;
        }
    }
}

/// A gzip stream of `prefix`, then `mib` MiB of `fill` bytes, then `suffix`, made without
/// ever holding the expanded bytes: once the window is full of it, every 64 KiB chunk of one
/// byte value deflates (with a sync flush) to the same bytes, which are repeated. The
/// trailer's CRC is not computed: nothing reads that far.
fn gzip_bomb(prefix: &[u8], fill: u8, mib: usize, suffix: &[u8]) -> Vec<u8> {
    use flate2::FlushCompress::{Finish, Sync};
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff];
    out.extend(deflate(&mut c, prefix, Sync));
    let chunk = vec![fill; 64 * 1024];
    let first = deflate(&mut c, &chunk, Sync);
    let steady = deflate(&mut c, &chunk, Sync);
    let again = deflate(&mut c, &chunk, Sync);
    assert_eq!(steady, again, "deflate reached a steady state");
    out.extend(first);
    for _ in 1..mib * 16 {
        out.extend_from_slice(&steady);
    }
    out.extend(deflate(&mut c, suffix, Finish));
    out.extend_from_slice(&[0; 8]);
    out
}

/// Deterministic noise (xorshift), for "random" uploads that fail the same way every run.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The hello-orders sources under another package name: everything but the one hostile
/// entry is genuine, so only that entry can be the reason for a refusal.
struct Genuine {
    manifest: Vec<u8>,
    cargo_toml: Vec<u8>,
    lib_rs: Vec<u8>,
}

impl Genuine {
    fn load() -> Genuine {
        let hello = packages::example("hello-orders").dir;
        let manifest = std::fs::read_to_string(hello.join("package.toml"))
            .expect("read manifest")
            .replacen("name = \"hello-orders\"", "name = \"hostile-probe\"", 1);
        Genuine {
            manifest: manifest.into_bytes(),
            cargo_toml: std::fs::read(hello.join("Cargo.toml")).expect("read Cargo.toml"),
            lib_rs: std::fs::read(hello.join("src/lib.rs")).expect("read lib.rs"),
        }
    }

    /// The genuine entries with `hostile` added (before them, so no check can stop early).
    fn with(&self, hostile: impl FnOnce(Tar) -> Tar) -> Vec<u8> {
        let tar = hostile(Tar::default())
            .file("package.toml", &self.manifest)
            .file("Cargo.toml", &self.cargo_toml)
            .file("src/lib.rs", &self.lib_rs);
        gzip(&tar.finish())
    }

    /// A package whose package.toml is `manifest`.
    fn manifest(&self, manifest: &[u8]) -> Vec<u8> {
        let tar = Tar::default()
            .file("package.toml", manifest)
            .file("Cargo.toml", &self.cargo_toml)
            .file("src/lib.rs", &self.lib_rs);
        gzip(&tar.finish())
    }
}

/// Example `name` (e.g. `hostile/wrong-abi`) as an archive with its library for this host,
/// laid out as `archive::pack` lays it out but stored uncompressed: deflating a debug build's
/// 10 MiB library costs seconds, and compression is not what these tests are about.
fn quick_pack(name: &'static str) -> Vec<u8> {
    let ex = packages::example(name);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    let mut tar = tar::Builder::new(gz);
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, data).expect("append");
    };
    for file in ["package.toml", "Cargo.toml", "Cargo.lock", "build.rs"] {
        if let Ok(data) = std::fs::read(ex.dir.join(file)) {
            add(file, &data, 0o644);
        }
    }
    let mut sources = Vec::new();
    collect_files(&ex.dir.join("src"), &mut sources);
    sources.sort();
    for path in sources {
        let rel = path.strip_prefix(&ex.dir).expect("under the package");
        let data = std::fs::read(&path).expect("read source");
        add(&rel.to_string_lossy(), &data, 0o644);
    }
    let library = std::fs::read(&ex.library).expect("read library");
    let file = ex
        .library
        .file_name()
        .expect("library file name")
        .to_string_lossy()
        .to_string();
    add(
        &format!("lib/{}/{file}", cloacina::package::archive::HOST_TARGET),
        &library,
        0o755,
    );
    tar.into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip")
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Every file under `dir` named `name` (symlinks not followed).
fn find_named(dir: &Path, name: &str, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy() == name {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            find_named(&path, name, found);
        }
    }
}

fn package_names(server: &ServerProcess<'_>) -> Vec<(String, String)> {
    let list = server.get_ok("/v1/packages");
    let mut names: Vec<(String, String)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    names.sort();
    names
}

fn hostile_archives_are_refused_and_the_server_keeps_serving(backend: Backend) {
    let Some(home) = ServerHome::new(backend) else {
        return;
    };
    let server = home.start(Start::direct());
    let hello = quick_pack("hello-orders");
    let r = server.upload_raw("public", &hello);
    assert_eq!(r.status, 201, "{r}\n{}", server.logs());
    let before = package_names(&server);
    assert_eq!(
        before,
        vec![("hello-orders".to_string(), "loaded".to_string())]
    );

    // A directory outside the server's home, with a file a link could reach.
    let outside = tempfile::tempdir().expect("outside dir");
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, "untouched").expect("victim");
    let marker = format!("cloacina-escaped-{}", std::process::id());
    let abs_target = outside.path().join(&marker);
    let abs = abs_target.to_string_lossy().to_string();
    let victim_s = victim.to_string_lossy().to_string();

    let g = Genuine::load();
    let up = |n: usize| format!("{}{marker}", "../".repeat(n));
    let long_traversal = format!("src/{}/{}{marker}", "d".repeat(150), "../".repeat(12));
    let pax_record = |key: &str, value: &str| {
        let body = format!(" {key}={value}\n");
        // The length field counts itself.
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    };
    let real = hello.clone();
    let truncated_gzip = real[..real.len() / 2].to_vec();
    let mut random_after_magic = vec![0x1f, 0x8b, 8, 0];
    random_after_magic.extend(noise(64 * 1024, 2));

    // (what, bytes, status, code)
    let archive_invalid = (400, "archive_invalid");
    let too_large = (400, "archive_too_large");
    let manifest_invalid = (400, "manifest_invalid");
    let cases: Vec<(&str, Vec<u8>, (u16, &str))> = vec![
        // Paths out of the extraction directory.
        (
            "path traversal",
            g.with(|t| t.file(&up(2), b"out of the box")),
            archive_invalid,
        ),
        (
            "deep path traversal",
            g.with(|t| t.file(&format!("src/{}", up(12)), b"out")),
            archive_invalid,
        ),
        (
            "absolute path",
            g.with(|t| t.file(&abs, b"out")),
            archive_invalid,
        ),
        (
            "GNU long name with traversal",
            g.with(|t| {
                let mut name = long_traversal.clone().into_bytes();
                name.push(0);
                t.entry("././@LongLink", tar::EntryType::GNULongName, "", &name)
                    .file("src/placeholder.rs", b"out")
            }),
            archive_invalid,
        ),
        (
            "PAX path with traversal",
            g.with(|t| {
                t.entry(
                    "PaxHeader/x",
                    tar::EntryType::XHeader,
                    "",
                    &pax_record("path", &up(3)),
                )
                .file("src/placeholder.rs", b"out")
            }),
            archive_invalid,
        ),
        // Links out of it.
        (
            "symlink to a file outside",
            g.with(|t| t.entry("src/evil.rs", tar::EntryType::Symlink, &victim_s, b"")),
            archive_invalid,
        ),
        (
            "symlinked directory, then a file through it",
            g.with(|t| {
                t.entry(
                    "src",
                    tar::EntryType::Symlink,
                    &outside.path().to_string_lossy(),
                    b"",
                )
                .file("src/victim.txt", b"overwritten")
            }),
            archive_invalid,
        ),
        (
            "relative symlink out",
            g.with(|t| t.entry("src/up.rs", tar::EntryType::Symlink, &up(4), b"")),
            archive_invalid,
        ),
        (
            "hard link to a file outside",
            g.with(|t| {
                t.entry("src/hard.rs", tar::EntryType::Link, &victim_s, b"")
                    .file("src/hard.rs", b"overwritten")
            }),
            archive_invalid,
        ),
        (
            "character device",
            g.with(|t| t.entry("src/dev.rs", tar::EntryType::Char, "", b"")),
            archive_invalid,
        ),
        // Bombs: tiny uploads that expand beyond the unpack limits.
        (
            "decompression bomb (1 GiB of zeros in one entry)",
            {
                let prefix = Tar::default()
                    .file("package.toml", &g.manifest)
                    .header_only("src/lib.rs", tar::EntryType::Regular, 1 << 30)
                    .out;
                gzip_bomb(&prefix, 0, 1024, &[0u8; 1024])
            },
            too_large,
        ),
        (
            "long-name record bomb (300 MiB name)",
            {
                let prefix = Tar::default()
                    .header_only("././@LongLink", tar::EntryType::GNULongName, 300 << 20)
                    .out;
                let suffix = Tar::default().file("package.toml", &g.manifest).finish();
                gzip_bomb(&prefix, b'a', 300, &suffix)
            },
            too_large,
        ),
        (
            "entry-count bomb (10 050 empty files)",
            g.with(|mut t| {
                for i in 0..10_050 {
                    t = t.file(&format!("src/f{i}.rs"), b"");
                }
                t
            }),
            too_large,
        ),
        // Truncated and random bytes.
        ("random bytes", noise(64 * 1024, 1), archive_invalid),
        (
            "random bytes after the gzip magic",
            random_after_magic,
            archive_invalid,
        ),
        ("truncated archive", truncated_gzip, archive_invalid),
        (
            "truncated in the gzip header",
            real[..6].to_vec(),
            archive_invalid,
        ),
        (
            "gzip of random bytes",
            gzip(&noise(8192, 3)),
            archive_invalid,
        ),
        ("an empty tar", gzip(&[0u8; 1024]), archive_invalid),
        // Garbage manifests.
        (
            "binary manifest",
            g.manifest(&noise(4096, 4)),
            archive_invalid,
        ),
        (
            "manifest that is not TOML",
            g.manifest(b"[package\nname = = \"x\"\n\x00\x01"),
            manifest_invalid,
        ),
        (
            "manifest with wrong types",
            g.manifest(b"[package]\nname = 5\nversion = [1, 2]\n"),
            manifest_invalid,
        ),
        (
            "manifest naming a path",
            g.manifest(
                String::from_utf8_lossy(&g.manifest)
                    .replacen(
                        "name = \"hostile-probe\"",
                        "name = \"../../../etc/escape\"",
                        1,
                    )
                    .as_bytes(),
            ),
            manifest_invalid,
        ),
        (
            "manifest with a path for a version",
            g.manifest(
                String::from_utf8_lossy(&g.manifest)
                    .replacen("version = \"", "version = \"../../", 1)
                    .as_bytes(),
            ),
            manifest_invalid,
        ),
        (
            "manifest with a 10 000-character name",
            g.manifest(
                String::from_utf8_lossy(&g.manifest)
                    .replacen(
                        "name = \"hostile-probe\"",
                        &format!("name = \"{}\"", "n".repeat(10_000)),
                        1,
                    )
                    .as_bytes(),
            ),
            manifest_invalid,
        ),
        (
            "manifest of 1 MiB",
            g.manifest(
                format!(
                    "{}\n# {}\n",
                    String::from_utf8_lossy(&g.manifest),
                    "x".repeat(1 << 20)
                )
                .as_bytes(),
            ),
            too_large,
        ),
        (
            "no manifest",
            gzip(&Tar::default().file("src/lib.rs", b"fn main() {}").finish()),
            archive_invalid,
        ),
    ];

    let pid = server.pid();
    let rss_before = peak_rss_kib(pid);
    for (what, bytes, (status, code)) in &cases {
        let r = server.upload_raw("public", bytes);
        assert_eq!(
            (r.status, r.code().as_str()),
            (*status, *code),
            "{what}: {r}\n{}",
            server.logs()
        );
        assert!(
            r.content_type.starts_with("application/json"),
            "{what}: {r}"
        );
        assert_eq!(
            r.json().as_object().map(|o| o.len()),
            Some(2),
            "{what}: only error and code: {r}"
        );
        assert!(!r.error().is_empty(), "{what}: {r}");
        assert!(
            !r.error().contains("server-cache"),
            "{what}: the server's scratch paths stay private: {r}"
        );
    }
    // A few as forms too.
    for (what, bytes, (status, code)) in cases.iter().step_by(5) {
        let r = server.upload_multipart("public", bytes, None);
        assert_eq!(
            (r.status, r.code().as_str()),
            (*status, *code),
            "{what} (multipart): {r}"
        );
    }
    // Regression: the bombs are refused from their declared sizes, not by expanding them
    // (a 300 MiB long-name record was read whole into memory before).
    let grown_mib = peak_rss_kib(pid).saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 200,
        "peak memory grew by {grown_mib} MiB refusing bombs\n{}",
        server.logs()
    );

    // Libraries that cannot be loaded here (another plugin ABI; no Cloacina ABI at all):
    // refused, nothing kept.
    for (example, code) in [
        ("hostile/wrong-abi", "package_load_failed"),
        ("hostile/not-a-package", "package_load_failed"),
    ] {
        let bytes = quick_pack(example);
        let r = server.upload_raw("public", &bytes);
        assert_eq!(
            (r.status, r.code().as_str()),
            (422, code),
            "{example}: {r}\n{}",
            server.logs()
        );
        assert!(r.error().contains("cannot be loaded"), "{example}: {r}");
    }
    // A library whose initializer aborts the process that opens it: opened first in a probe
    // process, which it kills; refused with the reason, and this server never runs it.
    let bytes = quick_pack("hostile/abort-on-load");
    let r = server.upload_raw("public", &bytes);
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "package_load_failed"),
        "abort-on-load: {r}\n{}",
        server.logs()
    );
    assert!(
        r.error().contains(
            "cannot be loaded: the library killed the process that opened it (SIGABRT (signal 6))"
        ) && r.error().contains("this process is unharmed"),
        "abort-on-load: {r}"
    );

    // Nothing kept, nothing written outside the server's directories.
    assert_eq!(package_names(&server), before);
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "untouched"
    );
    let outside_files: Vec<_> = std::fs::read_dir(outside.path())
        .expect("outside")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(outside_files.len(), 1, "{outside_files:?}");
    let mut escaped = Vec::new();
    find_named(home.path(), &marker, &mut escaped);
    for dir in [home.path().parent(), Some(Path::new("/"))]
        .into_iter()
        .flatten()
    {
        let p = dir.join(&marker);
        if p.exists() {
            escaped.push(p);
        }
    }
    assert!(escaped.is_empty(), "{escaped:?}");
    let scratch: Vec<_> = std::fs::read_dir(home.path().join("server-cache/uploads"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(scratch.is_empty(), "no scratch copy is left: {scratch:?}");

    // A task that panics fails its run with the panic's message; the server is unharmed.
    let exec = server.execute("public", "orders", &json!({"explode": true, "delay_ms": 0}));
    assert_eq!(server.wait_execution("public", &exec)["status"], "Failed");
    let tasks = server.get_ok(&format!("/v1/tenants/public/executions/{exec}/tasks"));
    let fetch = tasks["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["task_id"] == "fetch_orders"))
        .unwrap_or_else(|| panic!("no fetch_orders task: {tasks}"));
    assert_eq!(
        (&fetch["status"], &fetch["last_error"]),
        (
            &json!("Failed"),
            &json!("panicked: fetch_orders exploded on purpose")
        ),
        "{tasks}"
    );

    // The server still serves its package.
    let exec = server.execute("public", "hello", &json!({}));
    assert_eq!(
        server.wait_execution("public", &exec)["status"],
        "Completed"
    );
    health_ok(&server);
}
both_backends!(hostile_archives_are_refused_and_the_server_keeps_serving);
