//! The accept loop of the control plane's HTTPS servers (the Kubernetes API, the admission
//! webhooks): a cap on open connections (past it a new one is closed, logged the first
//! time), a bounded TLS handshake, and every connection ending with the server, as a
//! restarted server's do (watches too).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts on `listener` until `shutdown`, at most `limit` connections at once, and runs
/// `serve` on each once its handshake is done. `what` names the server in logs.
pub(crate) async fn serve_tls<S, F>(
    what: &'static str,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limit: usize,
    shutdown: impl Future<Output = ()>,
    serve: S,
) where
    S: Fn(TlsStream<TcpStream>, SocketAddr) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut refused_once = false;
    let mut open = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while open.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "{what}: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => {
                open.abort_all();
                return;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !refused_once {
                refused_once = true;
                tracing::warn!(peer = %peer, limit, "{what}: connection limit reached; new connections are closed");
            }
            continue;
        };
        let (acceptor, serve) = (acceptor.clone(), serve.clone());
        open.spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve(stream, peer).await,
                Ok(Err(e)) => {
                    tracing::info!(peer = %peer, error = %e, "{what}: TLS handshake refused")
                }
                Err(_) => {}
            }
        });
    }
}
