//! `tessera control --kubeconfig FILE | --in-cluster`: where Kubernetes mode's API server is.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tessera_control::ControlState;

pub enum Source {
    Kubeconfig(PathBuf),
    InCluster,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Kubeconfig(p) => write!(f, "the API server of {}", p.display()),
            Source::InCluster => write!(f, "the cluster's API server (in-cluster configuration)"),
        }
    }
}

async fn client(source: &Source) -> Result<kube::Client, String> {
    let config = match source {
        Source::Kubeconfig(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?
        }
        Source::InCluster => kube::Config::incluster().map_err(|e| e.to_string())?,
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// Mirrors `source` into `control`'s store; a source that cannot be read is logged and the
/// control plane keeps serving what it has.
pub async fn mirror_from(source: Source, control: Arc<ControlState>) {
    match client(&source).await {
        Ok(client) => tessera_cluster::mirror(client, control).await,
        Err(e) => {
            tracing::error!(source = %source, error = %e, "Kubernetes mode: cannot reach the API server")
        }
    }
}
