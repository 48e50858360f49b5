//! The proxy's certificate: from files (re-read when they change) or from the mesh CA
//! (fetched with the bootstrap token and renewed at half-life). Either way it lands in a
//! [`CredentialStore`], which handshakes read; a swap never touches open connections.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tessera_ca::client::{self, CaClient, IdentityOptions, Renewal, TokenFile};
use tessera_ca::verify::TrustBundle;
use tessera_ca::{CredentialStore, Credentials, KeyAlgorithm, SpiffeId};
use tessera_contract::config::{CaSource, CertificateFiles, CertificateSource};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("the certificate is for {found}, but this proxy is {expected}")]
    WrongIdentity { found: String, expected: String },
    #[error("{0}")]
    Ca(#[from] client::ClientError),
    #[error("certificates: set exactly one of `files` (certChain, privateKey, rootCert) or `ca` (socket, tokenFile)")]
    Source,
    #[error("certificates.ca.ttl: {0:?} is not a duration (e.g. 24h, 90m)")]
    BadTtl(String),
}

/// Keeps the source alive: the renewal task, or the file watcher.
pub enum CertKeeper {
    Files(tokio::task::JoinHandle<()>),
    Ca(Renewal),
}

impl Drop for CertKeeper {
    fn drop(&mut self) {
        if let CertKeeper::Files(task) = self {
            task.abort();
        }
    }
}

pub async fn load(
    source: &CertificateSource,
    identity: &SpiffeId,
    trust_domain: &str,
) -> Result<(CredentialStore, CertKeeper), CertError> {
    match (&source.files, &source.ca) {
        (Some(files), None) => {
            let CertificateFiles {
                cert_chain,
                private_key,
                root_cert,
            } = files;
            let (creds, bundle) =
                read_files(cert_chain, private_key, root_cert, identity, trust_domain)?;
            tracing::info!(cert = %creds.describe(), "workload certificate loaded from files");
            let store = CredentialStore::new(creds, bundle);
            let task = tokio::spawn(watch_files(
                store.clone(),
                [cert_chain.clone(), private_key.clone(), root_cert.clone()],
                identity.clone(),
                trust_domain.to_string(),
            ));
            Ok((store, CertKeeper::Files(task)))
        }
        (
            None,
            Some(CaSource {
                socket,
                token_file,
                ttl,
            }),
        ) => {
            let ttl = match ttl {
                None => None,
                Some(t) => Some(
                    tessera_model::duration::parse(t)
                        .ok_or_else(|| CertError::BadTtl(t.clone()))?,
                ),
            };
            let (store, renewal) = client::start(
                CaClient::unix(socket),
                Arc::new(TokenFile(token_file.clone())),
                IdentityOptions {
                    trust_domain: trust_domain.to_string(),
                    identity: Some(identity.clone()),
                    ttl,
                    algorithm: KeyAlgorithm::EcdsaP256,
                },
            )
            .await?;
            Ok((store, CertKeeper::Ca(renewal)))
        }
        _ => Err(CertError::Source),
    }
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|e| CertError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

pub fn read_files(
    chain: &Path,
    key: &Path,
    root: &Path,
    identity: &SpiffeId,
    trust_domain: &str,
) -> Result<(Credentials, TrustBundle), CertError> {
    let creds = Credentials::from_pem(&read(chain)?, &read(key)?).map_err(|e| CertError::File {
        path: chain.to_path_buf(),
        reason: e.to_string(),
    })?;
    if &creds.identity != identity {
        return Err(CertError::WrongIdentity {
            found: creds.identity.to_string(),
            expected: identity.to_string(),
        });
    }
    let bundle =
        TrustBundle::from_pem(&read(root)?, trust_domain).map_err(|e| CertError::File {
            path: root.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok((creds, bundle))
}

fn stamp(paths: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
        })
        .collect()
}

/// Re-reads the files once a second when they change; a broken set (say, a key written
/// before its certificate) is logged and the current certificate stays.
async fn watch_files(
    store: CredentialStore,
    paths: [PathBuf; 3],
    identity: SpiffeId,
    trust_domain: String,
) {
    let mut last = stamp(&paths);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stamp(&paths);
        if now == last {
            continue;
        }
        last = now;
        match read_files(&paths[0], &paths[1], &paths[2], &identity, &trust_domain) {
            Ok((creds, bundle)) => {
                tracing::info!(cert = %creds.describe(), "workload certificate reloaded from files");
                store.replace(creds, Some(bundle));
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate files changed but cannot be used; keeping the current certificate");
            }
        }
    }
}
