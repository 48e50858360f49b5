//! The Kubernetes REST API of the control plane, for the machine's own `kubectl` and the
//! ecosystem's clients: discovery generated from the model's kinds, objects and Tables
//! from the store, over HTTPS with the cluster's own CA and an administrator's
//! credentials written to a kubeconfig.

pub mod answer;
mod attach;
pub mod crd;
pub mod discovery;
mod exec;
pub mod fields;
mod logs;
pub mod openapi;
pub mod patch;
pub mod path;
pub mod protobuf;
mod respond;
mod server;
pub mod token;
pub mod watch;
pub mod websocket;
pub mod write;

pub use server::{authorize, handle, serve, tls_config, Caller, Denied};

/// Whether a request path is the Kubernetes API's (the operator API's are not).
pub fn is_kubernetes_path(path: &str) -> bool {
    ["/api", "/apis", "/version", "/openapi"].iter().any(|p| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// What the API asks of the pods' runtime (the local runtime implements it): where a
/// container's output goes (`kubectl logs`), and a command to run in a container
/// (`kubectl exec`).
pub trait PodRuntime: Send + Sync {
    /// The log file of `container` in the pod (`None`: its only or first container), or
    /// why there is none (an unknown container, a pod that has not started).
    fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
    ) -> Result<std::path::PathBuf, String>;

    /// `argv` set up to run in the container, with what must live until it is spawned,
    /// and with `tty` a terminal for it.
    fn exec_command(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        argv: &[String],
        tty: bool,
    ) -> Result<Exec, String>;
}

/// A command ready to run in a container.
pub struct Exec {
    pub command: std::process::Command,
    /// What must live until the command is spawned.
    pub guard: Box<dyn std::any::Any + Send>,
    /// With a TTY: the terminal's controlling side (non-blocking), which carries the
    /// command's input and output, and how to resize it.
    pub terminal: Option<Terminal>,
}

pub struct Terminal {
    pub controller: std::fs::File,
    pub resize: Resize,
}

/// Sets a terminal's size (columns, rows) by its controlling side.
pub type Resize = Box<dyn Fn(&std::fs::File, u16, u16) -> std::io::Result<()> + Send + Sync>;
