//! A stream whose first bytes were already read (for protocol detection) and are replayed
//! before the rest, so TLS, HTTP and TCP handlers see the connection from its start.

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::limits::LimitEvent;
use crate::telemetry::Telemetry;

pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Prefixed<S> {
        Prefixed { prefix, inner }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Either of two streams, as one type.
pub enum EitherIo<A, B> {
    Left(A),
    Right(B),
}

impl<A: AsyncRead + Unpin, B: AsyncRead + Unpin> AsyncRead for EitherIo<A, B> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EitherIo::Left(a) => Pin::new(a).poll_read(cx, buf),
            EitherIo::Right(b) => Pin::new(b).poll_read(cx, buf),
        }
    }
}

impl<A: AsyncWrite + Unpin, B: AsyncWrite + Unpin> AsyncWrite for EitherIo<A, B> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EitherIo::Left(a) => Pin::new(a).poll_write(cx, buf),
            EitherIo::Right(b) => Pin::new(b).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EitherIo::Left(a) => Pin::new(a).poll_write_vectored(cx, bufs),
            EitherIo::Right(b) => Pin::new(b).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            EitherIo::Left(a) => a.is_write_vectored(),
            EitherIo::Right(b) => b.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EitherIo::Left(a) => Pin::new(a).poll_flush(cx),
            EitherIo::Right(b) => Pin::new(b).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EitherIo::Left(a) => Pin::new(a).poll_shutdown(cx),
            EitherIo::Right(b) => Pin::new(b).poll_shutdown(cx),
        }
    }
}

/// After a refused handshake the alert (e.g. `certificate required`) has been written;
/// closing at once with the client's next bytes unread would turn it into a reset that
/// hides the alert. Half-close, then read what is in flight for a moment.
pub(crate) async fn close_after_alert<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    let _ = io.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(n) = io.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Closes with a TCP reset, as Envoy does when no filter chain matches.
pub fn reset_connection(tcp: TcpStream) {
    reset(tcp)
}

pub(crate) fn reset(tcp: TcpStream) {
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    drop(tcp);
}

/// How long a TCP flow may stay silent, and where to count the cut.
#[derive(Clone, Copy)]
pub(crate) struct IdleLimit<'a> {
    pub idle: Duration,
    pub telemetry: &'a Telemetry,
}

/// Bytes both ways until either side closes, or until nothing has moved either way for
/// the idle limit (counted as `tcp_idle_timeout`). Returns the bytes sent upstream
/// (`prefix` included), the bytes received, and how it ended.
pub(crate) async fn copy<D, U>(
    down: D,
    prefix: &[u8],
    up: U,
    limit: IdleLimit<'_>,
) -> (u64, u64, &'static str)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::default();
    let mut down = Active {
        inner: down,
        activity: &activity,
        read: &activity.down_read,
    };
    let mut up = Active {
        inner: up,
        activity: &activity,
        read: &activity.up_read,
    };
    let both_ways = async {
        if !prefix.is_empty() {
            up.write_all(prefix).await?;
        }
        tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, 16 * 1024, 16 * 1024).await
    };
    let ended = tokio::select! {
        _ = both_ways => "ok",
        _ = activity.silent_for(limit.idle) => {
            limit.telemetry.limit_hit(LimitEvent::TcpIdleTimeout);
            "closed: no bytes either way for the TCP idle timeout"
        }
    };
    let sent = activity.down_read.load(Ordering::Relaxed) + prefix.len() as u64;
    (sent, activity.up_read.load(Ordering::Relaxed), ended)
}

/// [`copy`], cut short when `stop` resolves.
pub(crate) async fn copy_until<D, U>(
    down: D,
    prefix: &[u8],
    up: U,
    limit: IdleLimit<'_>,
    stop: impl std::future::Future<Output = ()>,
) -> (u64, u64, &'static str)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        copied = copy(down, prefix, up, limit) => copied,
        _ = stop => (0, 0, "closed: the port's policy changed"),
    }
}

/// When a flow last moved, and the bytes read from each side.
#[derive(Default)]
struct Activity {
    last_ms: AtomicU64,
    down_read: AtomicU64,
    up_read: AtomicU64,
    started: OnceInstant,
}

/// An `Instant` fixed at creation (for `Default`).
struct OnceInstant(Instant);

impl Default for OnceInstant {
    fn default() -> OnceInstant {
        OnceInstant(Instant::now())
    }
}

impl Activity {
    fn moved(&self) {
        let ms = self.started.0.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn silent_for(&self, idle: Duration) {
        loop {
            let due =
                self.started.0 + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// One side of a flow, noting what moves through it.
struct Active<'a, S> {
    inner: S,
    activity: &'a Activity,
    read: &'a AtomicU64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            self.activity.moved();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.moved();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_flow_is_cut_after_the_idle_limit_and_a_busy_one_is_not() {
        let (mut client, down) = tokio::io::duplex(64);
        let (up, mut server) = tokio::io::duplex(64);
        let copying = tokio::spawn(async move { copy(down, b"hi", up, limit_static()).await });
        // Busy for longer than the limit: a byte every 50 ms for 400 ms.
        let mut buf = [0u8; 16];
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(b"x").await.unwrap();
            let _ = server.read(&mut buf).await.unwrap();
        }
        server.write_all(b"back").await.unwrap();
        let (sent, received, ended) = copying.await.unwrap();
        assert_eq!(
            ended,
            "closed: no bytes either way for the TCP idle timeout"
        );
        assert_eq!((sent, received), (2 + 8, 4));
        assert_eq!(
            limit_static()
                .telemetry
                .metrics
                .limits_of(LimitEvent::TcpIdleTimeout),
            1
        );
    }

    fn limit_static() -> IdleLimit<'static> {
        static TELEMETRY: std::sync::OnceLock<Telemetry> = std::sync::OnceLock::new();
        IdleLimit {
            idle: Duration::from_millis(150),
            telemetry: TELEMETRY.get_or_init(Telemetry::default),
        }
    }

    #[tokio::test]
    async fn the_prefix_is_read_first() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world")
            .await
            .unwrap();
        drop(a);
        let mut s = Prefixed::new(Bytes::from_static(b"hello"), b);
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
