//! What every app server shares: the accept loop (plain or TLS), HTTP/1.1 and h2 on each
//! connection, one stderr line per request, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How long requests in flight may finish after shutdown (Kubernetes' grace period is 30s;
/// the runtime's is shorter, and a sample app has nothing worth waiting longer for).
const DRAIN: Duration = Duration::from_secs(5);
/// A client that opens a TLS port and says nothing must not hold a task forever.
const HANDSHAKE: Duration = Duration::from_secs(10);

pub(crate) type Body = Full<Bytes>;

/// Shutdown as a value several accept loops can wait on.
#[derive(Clone)]
pub(crate) struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A [`Stop`] that fires when `trigger` resolves; the trigger must be polled (joined
    /// with the loops) for that to happen.
    pub(crate) fn new(
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (Stop, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = watch::channel(false);
        let trigger = async move {
            shutdown.await;
            let _ = tx.send(true);
        };
        (Stop(rx), trigger)
    }

    async fn wait(&mut self) {
        // A dropped sender also means stop: nobody is left to keep us serving.
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}

/// Serves `handler` on every connection `listener` accepts until `stop`, then lets requests in
/// flight finish (for at most [`DRAIN`]).
pub(crate) async fn accept_loop<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: H,
    mut stop: Stop,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    let watcher = graceful.watcher();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls {
                            None => connection(stream, peer, handler, watcher).await,
                            Some(acceptor) => {
                                match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => connection(stream, peer, handler, watcher).await,
                                    Ok(Err(e)) => eprintln!("TLS handshake from {peer} failed: {e}"),
                                    Err(_) => eprintln!("TLS handshake from {peer} timed out"),
                                }
                            }
                        }
                    });
                }
                Err(e) => {
                    // Usually out of file descriptors: transient, but don't spin on it.
                    eprintln!("accept on {local}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.wait() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "{local}: requests still in flight after {}s; closing",
            DRAIN.as_secs()
        );
    }
}

/// HTTP/1.1 or h2 (prior knowledge, or ALPN over TLS) on one connection.
async fn connection<I, H, F>(io: I, peer: SocketAddr, handler: H, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        async move {
            let method = req.method().clone();
            let target = req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_string(), |pq| pq.to_string());
            let mut resp = handler(req, peer).await;
            if method == Method::HEAD {
                without_body(&mut resp);
            }
            eprintln!("{method} {target} {} from {peer}", resp.status().as_u16());
            Ok::<_, Infallible>(resp)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        eprintln!("connection from {peer}: {e}");
    }
}

/// HEAD: the GET response's headers, no body. HTTP/1 drops the body by itself, but HTTP/2
/// would send it (a protocol error for the client), so drop it here for both.
fn without_body(resp: &mut Response<Body>) {
    let bodyless = matches!(
        resp.status(),
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
    );
    if let Some(len) = resp.body().size_hint().exact().filter(|_| !bodyless) {
        resp.headers_mut()
            .entry(http::header::CONTENT_LENGTH)
            .or_insert_with(|| len.into());
    }
    *resp.body_mut() = Body::default();
}
