//! gRPC over Unix sockets, both sides: on one host the control plane serves config push
//! and the CA on sockets in its state dir, and proxies reach them there.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint, Uri};

/// Who is on the other end of a connection (pid and uid of a Unix peer), for the logs of
/// the service that answers it. [`serve_unix`] sets it on every request's extensions.
#[derive(Debug, Clone)]
pub struct PeerLabel(pub String);

/// What a generated tonic server is, named once.
pub trait GrpcService: Clone + Send + Sync + 'static {
    fn call_grpc(
        &mut self,
        req: hyper::Request<Incoming>,
    ) -> impl Future<Output = Result<hyper::Response<Body>, Infallible>> + Send;
}

impl<S> GrpcService for S
where
    S: Service<hyper::Request<Incoming>, Response = hyper::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    fn call_grpc(
        &mut self,
        req: hyper::Request<Incoming>,
    ) -> impl Future<Output = Result<hyper::Response<Body>, Infallible>> + Send {
        self.call(req)
    }
}

/// Serves `service` (HTTP/2) on `listener` until `shutdown` resolves; every connection
/// ends with the server.
pub async fn serve_unix<S: GrpcService>(
    listener: UnixListener,
    service: S,
    shutdown: impl Future<Output = ()>,
) {
    accept_unix(listener, shutdown, |stream| {
        Some(serve_connection(stream, service.clone()))
    })
    .await
}

/// Accepts on `listener` until `shutdown`, running `serve` for each connection it returns
/// (`None` refuses one); every connection ends with the server.
pub async fn accept_unix<F>(
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(UnixStream) -> Option<F>,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Some(task) = serve(stream) {
            conns.spawn(task);
        }
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
}

async fn serve_connection<S: GrpcService>(stream: UnixStream, service: S) {
    let peer = PeerLabel(match stream.peer_cred() {
        Ok(c) => format!(
            "unix peer pid={} uid={}",
            c.pid().map_or("?".to_string(), |p| p.to_string()),
            c.uid()
        ),
        Err(_) => "unix peer".into(),
    });
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer.clone());
        let mut service = service.clone();
        async move { service.call_grpc(req).await }
    });
    if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), svc)
        .await
    {
        tracing::debug!(error = %e, "gRPC connection ended with an error");
    }
}

/// A lazily connecting gRPC channel to a Unix socket. `request_timeout` bounds each call;
/// long-lived streams pass `None`.
pub fn unix_channel(path: PathBuf, request_timeout: Option<Duration>) -> Channel {
    let mut endpoint =
        Endpoint::from_static("http://tessera.local").connect_timeout(Duration::from_secs(5));
    if let Some(t) = request_timeout {
        endpoint = endpoint.timeout(t);
    }
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { UnixStream::connect(path).await.map(TokioIo::new) }
    }))
}
