//! The connection loop: HTTP/1.1 over hyper, with the limits that keep hostile or broken
//! clients from exhausting the server.
//!
//! - **Connections**: at most [`Limits::max_connections`] are served at once. One more is
//!   answered at once with a 503 `too_many_connections` (the one JSON error shape) and closed;
//!   at most [`MAX_REJECTING`] such answers are in flight, beyond that a connection is closed
//!   unanswered.
//! - **Headers**: a request's headers must arrive within [`Limits::header_read_timeout`] of the
//!   connection's first byte or of the previous answer; the same bound closes idle keep-alive
//!   connections. A connection that misses it is closed (slowloris, idle sockets).
//! - **Bodies**: a request's body must arrive within [`Limits::body_read_timeout`] of its
//!   headers, else the answer is a 408 `request_timeout` and the connection is closed (see
//!   [`crate::middleware::observe`], which applies it with [`DeadlineBody`]).
//! - **Answers**: a client that takes none of an answer's bytes for
//!   [`Limits::write_timeout`] (it stopped reading) has its connection closed ([`StallGuard`]).
//!
//! Stopping: the listener closes, idle connections close, requests in flight finish, then
//! [`run`] returns.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};

/// Answers to refused connections in flight at once; more are closed unanswered.
pub const MAX_REJECTING: usize = 64;

/// How long a refused connection is given to take its 503 (and have its request drained, so
/// the client reads the answer instead of a reset).
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// The connection limits (`cloacina-server --max-connections`, `--header-read-timeout-s`,
/// `--body-read-timeout-s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Counts of the connection loop (`/metrics`: `cloacina_http_connections_open`,
/// `cloacina_http_connections_refused_total`).
#[derive(Debug, Clone, Default)]
pub struct ConnectionStats {
    pub open: Gauge,
    pub refused: Counter,
}

/// Serves `router` on `listener` until `stop` completes, then stops gracefully.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stats: ConnectionStats,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    // Every connection task holds a receiver: the loop waits for all of them to go.
    let (closed_tx, closed_rx) = watch::channel(());
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let router = router.clone();
                let stats = stats.clone();
                let mut stopping = stopping_rx.clone();
                let closed = closed_rx.clone();
                stats.open.inc();
                tokio::spawn(async move {
                    serve_connection(stream, router, &limits, &mut stopping).await;
                    stats.open.dec();
                    drop(permit);
                    drop(closed);
                });
            }
            Err(_) => {
                stats.refused.inc();
                if let Ok(slot) = rejecting.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream, limits.max_connections).await;
                        drop(slot);
                    });
                }
                // Else: dropped, closed unanswered.
            }
        }
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    drop(closed_rx);
    closed_tx.closed().await;
    Ok(())
}

/// An `accept` failure: a connection that died before it was accepted is skipped; running
/// out of file descriptors (or memory) waits a little for some to be released.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) {
        return;
    }
    tracing::warn!("accepting a connection failed: {e}; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: &Limits,
    stopping: &mut watch::Receiver<bool>,
) {
    let service = TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let io = StallGuard::new(stream, limits.write_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("connection closed: {e}");
                }
                return;
            }
            changed = stopping.changed(), if !shutting_down => {
                // A closed channel means the loop is gone: stop as well.
                if changed.is_err() || *stopping.borrow() {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The answer to a connection over the limit: a 503 in the one error shape, then close.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let body = serde_json::to_string(&crate::error::ErrorBody {
        error: format!(
            "the server is serving its limit of {limit} connections; retry shortly (cloacina-server --max-connections)"
        ),
        code: "too_many_connections".to_string(),
    })
    .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(REJECT_LINGER, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent until it closes, so closing does not reset the answer.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// A connection whose writes fail once the client has taken no bytes for `limit`: a client
/// that stops reading its answers cannot hold the connection (and its slot) for ever.
pub struct StallGuard<S> {
    inner: S,
    limit: Duration,
    /// Running while a write is pending: since the client last took bytes.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> StallGuard<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After a pending write: starts the stall clock, or fails once it has run out.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took no bytes of the answer for {limit:?}"),
            )));
        }
        Poll::Pending
    }

    fn progress<T>(
        &mut self,
        result: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        match result {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(result, cx)
    }
}

/// The error a request body gives once its deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body that must arrive whole before a deadline; past it, reading fails with
/// [`BodyTimeout`] and `timed_out` is set, so the answer can say why.
pub struct DeadlineBody<B> {
    inner: B,
    sleep: Pin<Box<Sleep>>,
    limit: Duration,
    timed_out: Arc<AtomicBool>,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, limit: Duration, timed_out: Arc<AtomicBool>) -> Self {
        DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
            limit,
            timed_out,
        }
    }
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
