//! Serving one downstream HTTP connection, the same way on every side (outbound, inbound,
//! gateway): hyper's HTTP/1.1 and HTTP/2 server configured from the limits, the
//! connection's [`ConnWatch`] (head, idle and reset clocks), and how the connection ended.
//! A drain, or the caller's `stop` (the port's policy changed), asks the connection to
//! finish (GOAWAY, or `Connection: close` after the request in flight) instead of cutting
//! it; so does the idle clock. A head that is late and a reset flood cut it.

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::http::Body;
use crate::limits::body::StreamClock;
use crate::limits::watch::{ConnWatch, Dormant, RequestGuard, Watched};
use crate::limits::{LimitEvent, Limits};
use crate::shared::Shared;

/// How a served connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Closed by the client, or finished after a drain, a policy change or the idle clock.
    Closed,
    /// The client's bytes were not HTTP.
    NotHttp,
    /// A limit cut it (already counted and logged).
    Limit(LimitEvent),
    /// Some other error (a reset, a broken pipe).
    Failed,
}

/// Serves `io` until the connection ends, each request answered by `handler` (given the
/// request's stream clock, for the stream idle timeout). The
/// connection's state (hyper's, several KiB) is allocated here, when serving starts, so
/// connections still in detection or a TLS handshake stay small.
pub(crate) async fn serve_http<S, H, F>(
    shared: &Shared,
    io: S,
    handler: H,
    stop: impl Future<Output = ()>,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Arc<StreamClock>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    Box::pin(serve(shared, io, handler, stop)).await
}

async fn serve<S, H, F>(shared: &Shared, io: S, handler: H, stop: impl Future<Output = ()>) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Arc<StreamClock>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let limits = shared.limits();
    let watch = ConnWatch::new(&limits, shared.telemetry.clone());
    let requests = watch.clone();
    let svc = service_fn(move |req| {
        let mut guard = requests.request_started();
        let answer = handler(req, guard.clock());
        async move {
            let resp = answer.await;
            guard.answered();
            Ok::<_, Infallible>(resp.map(|inner| GuardedBody {
                inner,
                _guard: guard,
            }))
        }
    });
    let builder = builder(&limits);
    let conn = builder.serve_connection(TokioIo::new(Watched::new(io, watch.clone())), svc);
    let mut conn = std::pin::pin!(conn);
    let mut expiry = std::pin::pin!(Dormant::new(watch.expired()));
    let mut drain = shared.drain.subscribe();
    let drain_started = async move {
        if drain.wait_for(|d| *d).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        out = conn.as_mut() => return ended(shared, out),
        event = &mut expiry => {
            shared.telemetry.limit_hit(event);
            if event != LimitEvent::IdleTimeout {
                return Ended::Limit(event);
            }
        }
        _ = stop => {}
        _ = drain_started => {}
    }
    conn.as_mut().graceful_shutdown();
    ended(shared, conn.await)
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The connection's watch times heads (from their first byte, not from idle).
        .header_read_timeout(None::<std::time::Duration>)
        // A head must fit in the read buffer; past it hyper answers 431.
        .max_buf_size(limits.max_request_headers.max(8192));
    builder
        .http2()
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_request_headers as u32)
        .initial_stream_window_size(limits.h2_stream_window)
        .initial_connection_window_size(limits.h2_connection_window)
        .max_send_buf_size(limits.h2_stream_window as usize);
    builder
}

fn ended(shared: &Shared, out: Result<(), Box<dyn Error + Send + Sync>>) -> Ended {
    let Err(e) = out else {
        return Ended::Closed;
    };
    let event = match e.downcast_ref::<hyper::Error>() {
        Some(h) if h.is_parse_too_large() => Some(LimitEvent::HeadersTooLarge),
        Some(h) if h.is_parse() => return Ended::NotHttp,
        _ if calmed_down(e.as_ref()) => Some(LimitEvent::H2ResetFlood),
        _ => None,
    };
    match event {
        Some(event) => {
            shared.telemetry.limit_hit(event);
            Ended::Limit(event)
        }
        None => Ended::Failed,
    }
}

/// Whether HTTP/2 sent GOAWAY ENHANCE_YOUR_CALM: the client reset more streams than the
/// server had accepted yet (h2's own rapid-reset guard).
fn calmed_down(e: &(dyn Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
        }
        source = s.source();
    }
    false
}

/// A response body that holds its request's place in the connection's watch until it
/// has been sent.
pub struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl HttpBody for GuardedBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
