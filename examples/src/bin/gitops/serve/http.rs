//! The HTTP server under `serve`: HTTP/1.1 connections served by hyper with a header read
//! timeout (which also bounds how long a kept-alive connection waits for its next request), an
//! idle timeout (no byte read or written), and a cap on open connections (past it, new
//! connections wait in the listen backlog). On shutdown it stops accepting and lets open
//! requests finish, unless told to stop at once. Each request carries its peer's address as
//! [`ConnectInfo`], for the dashboard's access rules.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::future::RouteFuture;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time for a request's headers to arrive (also: for the next request on a kept-alive
    /// connection to begin).
    pub header_timeout: Duration,
    /// Time without a byte read or written after which a connection is closed.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown`; then waits for open requests to finish,
/// or for `abort`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    abort: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let clock = Instant::now();
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, rather than spin.
                    tracing::warn!(error = %super::log_safe(&e), "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(AtomicU64::new(millis_since(clock)));
        let io = TokioIo::new(Watched {
            stream,
            activity: activity.clone(),
            clock,
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(
                io,
                WithPeer {
                    router: router.clone(),
                    peer,
                },
            );
        let connection = graceful.watch(connection);
        let (metrics, idle) = (metrics.clone(), limits.idle_timeout);
        metrics.connections().inc();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                _ = idle_for(&activity, clock, idle) => {}
            }
            metrics.connections().dec();
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = abort.cancelled() => {}
    }
}

/// The router of one connection: each request gets the peer's address as [`ConnectInfo`]
/// before the router sees it (a clone of the router is an `Arc`'s).
struct WithPeer {
    router: Router,
    peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<Incoming>> for WithPeer {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        tower_service::Service::call(&mut self.router.clone(), request)
    }
}

fn millis_since(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Ends once nothing moved on the connection for `idle`.
async fn idle_for(activity: &AtomicU64, clock: Instant, idle: Duration) {
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let since = clock.elapsed().saturating_sub(last);
        if since >= idle {
            return;
        }
        tokio::time::sleep(idle - since).await;
    }
}

/// A connection that notes when a byte last moved, in milliseconds since `clock`.
struct Watched {
    stream: TcpStream,
    activity: Arc<AtomicU64>,
    clock: Instant,
}

impl Watched {
    fn touch(&self) {
        self.activity
            .store(millis_since(self.clock), Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
