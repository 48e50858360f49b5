//! The local runtime behind `tessera up`: pods as processes in network namespaces on a
//! sealed cluster network, with Kubernetes' controllers, kube-proxy's service VIPs, names
//! from hosts files, Secret and ConfigMap volumes, and Istio's traffic capture; pods are
//! admitted through the control plane's sidecar injection.
//!
//! Pure parts (what to run, which rules, which names) are in `capture`, `cluster`,
//! `workloads` and `programs`; the rest acts on them.

use std::path::{Path, PathBuf};

pub mod capture;
pub mod cluster;
pub mod exec;
pub mod install;
pub mod netns;
pub mod network;
pub mod observe;
pub mod programs;
pub mod publish;
pub mod runtime;
pub mod sandbox;
pub mod terminal;
pub mod up;
pub mod workloads;

pub use up::{down, up, DownReport, UpOptions};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {why}")]
    Command { command: String, why: String },
    #[error("{0}")]
    Pod(String),
    #[error("tessera up needs root: it creates network namespaces and iptables rules (run it with sudo)")]
    NotRoot,
    #[error("missing tools: {0} (on Debian: apt-get install iproute2 iptables)")]
    MissingTools(String),
    #[error("a mesh is already up on {state_dir} (pid {pid}); stop it with Ctrl-C or `tessera down`, or use another --state-dir")]
    AlreadyUp { state_dir: PathBuf, pid: i32 },
    #[error(transparent)]
    Control(#[from] tessera_control::ControlError),
    #[error("pod {0} is not running on this mesh (no sandbox); see `tessera get pods`")]
    NoSandbox(String),
}

impl RuntimeError {
    pub fn io(path: &Path, source: std::io::Error) -> RuntimeError {
        RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Writes a file only its owner can read (tokens, configs), replacing it atomically.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<(), RuntimeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| RuntimeError::io(&tmp, e))?;
    f.write_all(data).map_err(|e| RuntimeError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io(path, e))
}

/// The runtime's directory in a state dir.
pub fn runtime_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("runtime")
}

/// Every namespace of one mesh starts with this: `tsr-` and a hash of its state dir.
pub fn mesh_prefix(state_dir: &Path) -> String {
    use sha2::Digest;
    let canonical = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    let h = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let hex: String = h.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("tsr-{hex}-")
}
