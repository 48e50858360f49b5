//! Built-in programs for the Istio sample images (see the runtime's image table).
//!
//! When pods run locally as processes there are no container images, so the runtime starts
//! `tessera app <name>` in their place. Each app binds 0.0.0.0, logs one line per request to
//! stderr and serves until SIGTERM or SIGINT, then returns `Ok` (exit status 0).
//!
//! Every server also has an async entry point that takes an already-bound listener and a
//! shutdown future, for tests: [`httpbin::serve`], [`nginx::serve`] (with
//! [`nginx::tls_config`]) and [`sleep::wait`].

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use tessera_contract::config::VolumeTable;
use tokio::net::TcpListener;

pub mod httpbin;
pub mod nginx;
mod serve;
pub mod sleep;

/// A program the runtime can start in place of a sample image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum App {
    /// `docker.io/kennethreitz/httpbin`.
    Httpbin(HttpbinOptions),
    /// `curlimages/curl` running `sleep infinity`: a pod to `exec curl` in.
    Sleep,
    /// `bprashanth/nginxhttps`: the nginx welcome page over HTTP and HTTPS.
    NginxHttps(NginxOptions),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpbinOptions {
    pub port: u16,
}

impl Default for HttpbinOptions {
    fn default() -> HttpbinOptions {
        HttpbinOptions { port: 80 }
    }
}

/// Paths are as the pod's manifest names them; they are resolved through the pod's volume
/// table before use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxOptions {
    pub http_port: u16,
    pub https_port: u16,
    /// `*.conf` files here may name other `ssl_certificate` / `ssl_certificate_key` files.
    pub conf_dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for NginxOptions {
    fn default() -> NginxOptions {
        NginxOptions {
            http_port: 80,
            https_port: 443,
            conf_dir: PathBuf::from("/etc/nginx/conf.d"),
            cert: PathBuf::from("/etc/nginx/ssl/tls.crt"),
            key: PathBuf::from("/etc/nginx/ssl/tls.key"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}{}", privileged_hint(*.addr, .source))]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    #[error("cannot install the SIGTERM/SIGINT handler: {0}")]
    Signal(io::Error),
    /// A file the manifest names: `path` as the manifest says it, `host_path` where the
    /// volume table put it.
    #[error("{what} {} (host path {}): {reason}", .path.display(), .host_path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        host_path: PathBuf,
        reason: String,
    },
    #[error("TLS with certificate {} and key {}: {reason}", .cert.display(), .key.display())]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

fn privileged_hint(addr: SocketAddr, e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::PermissionDenied && addr.port() < 1024 {
        " (ports below 1024 need root or CAP_NET_BIND_SERVICE; pass another port)"
    } else {
        ""
    }
}

/// Runs `app` until SIGTERM or SIGINT.
pub fn run(app: App) -> Result<(), AppError> {
    let runtime = match app {
        // Nothing to serve: one thread is plenty.
        App::Sleep => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    }
    .map_err(AppError::Runtime)?;
    runtime.block_on(async move {
        // Installed before binding, so a signal during startup is not lost.
        let shutdown = termination_signal()?;
        match app {
            App::Httpbin(opts) => {
                let listener = bind(opts.port).await?;
                httpbin::serve(listener, shutdown).await;
            }
            App::Sleep => sleep::wait(shutdown).await,
            App::NginxHttps(opts) => {
                // Certificates first: a missing file should fail before any port is taken.
                let tls = nginx::tls_config(&opts, &VolumeTable::from_env())?;
                let http = bind(opts.http_port).await?;
                let https = bind(opts.https_port).await?;
                nginx::serve(http, https, tls, shutdown).await;
            }
        }
        Ok(())
    })
}

async fn bind(port: u16) -> Result<TcpListener, AppError> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

/// Resolves on the first SIGTERM (what the runtime sends on pod deletion) or SIGINT.
fn termination_signal() -> Result<impl Future<Output = ()> + Send + 'static, AppError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(AppError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AppError::Signal)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
