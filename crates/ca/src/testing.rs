//! Test helpers kept in the library (so every crate's tests can use them): a CA served on
//! a Unix socket in a directory the caller owns, stopped when dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use crate::authority::{Authority, CaError};
use crate::client::CaClient;
use crate::issuance::Issuer;
use crate::service::CaService;
use crate::token::TokenKey;
use tessera_contract::transport::serve_unix;

pub const CA_SOCKET: &str = "ca.sock";

/// A CA whose files live in `dir/ca` and whose gRPC service listens on `dir/ca.sock`.
pub struct LocalCa {
    pub socket: PathBuf,
    pub issuer: Arc<Issuer>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalCa {
    /// Loads or creates the CA in `dir/ca` and serves it. Must run inside a tokio runtime.
    pub fn start(dir: &Path, trust_domain: &str) -> Result<LocalCa, CaError> {
        let ca_dir = dir.join("ca");
        let (authority, _) = Authority::init(&ca_dir)?;
        let tokens = TokenKey::load_or_create(&ca_dir)?;
        let issuer = Arc::new(Issuer {
            authority,
            tokens,
            trust_domain: trust_domain.to_string(),
            default_ttl: None,
        });
        let socket = dir.join(CA_SOCKET);
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket).map_err(|source| CaError::Io {
            path: socket.clone(),
            source,
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_unix(
            listener,
            CaService::new(issuer.clone()).into_server(),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(LocalCa {
            socket,
            issuer,
            stop: Some(stop),
            task,
        })
    }

    pub fn client(&self) -> CaClient {
        CaClient::unix(&self.socket)
    }

    /// A bootstrap token for `ns`/`sa`, valid an hour.
    pub fn token(&self, ns: &str, sa: &str) -> String {
        self.issuer
            .tokens
            .mint(ns, sa, Duration::from_secs(3600), SystemTime::now())
    }
}

impl Drop for LocalCa {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}
