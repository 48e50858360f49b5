//! The Kubernetes REST API of the control plane, for the machine's own `kubectl` and the
//! ecosystem's clients: discovery generated from the model's kinds, objects and Tables
//! from the store, over HTTPS with the cluster's own CA and an administrator's
//! credentials written to a kubeconfig.

pub mod answer;
pub mod discovery;
mod logs;
pub mod openapi;
pub mod path;
pub mod protobuf;
mod respond;
mod server;
pub mod watch;
pub mod write;

pub use server::{authorize, serve, tls_config, Caller, Denied};

/// What the API reads from the pods' runtime (the local runtime implements it): where a
/// container's output goes, for `kubectl logs`.
pub trait PodFiles: Send + Sync {
    /// The log file of `container` in the pod (`None`: its only or first container), or
    /// why there is none (an unknown container, a pod that has not started).
    fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
    ) -> Result<std::path::PathBuf, String>;
}
