//! A stream whose first bytes were already read (for protocol detection) and are replayed
//! before the rest, so TLS, HTTP and TCP handlers see the connection from its start.

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

pub(crate) async fn copy<D, U>(mut down: D, prefix: &[u8], mut up: U) -> (u64, u64)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    if !prefix.is_empty() && up.write_all(prefix).await.is_err() {
        return (0, 0);
    }
    match tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, 16 * 1024, 16 * 1024).await {
        Ok((a, b)) => (a + prefix.len() as u64, b),
        Err(_) => (prefix.len() as u64, 0),
    }
}

/// [`copy`], cut short when `stop` resolves; the result names which ended it.
pub(crate) async fn copy_until<D, U>(
    down: D,
    prefix: &[u8],
    up: U,
    stop: impl std::future::Future<Output = ()>,
) -> (u64, u64, &'static str)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        (sent, received) = copy(down, prefix, up) => (sent, received, "ok"),
        _ = stop => (0, 0, "closed: the port's policy changed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

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
