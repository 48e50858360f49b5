//! The sidecar's bootstrap: its configuration file (the control plane's sockets, the
//! pod's volume table) and a token for the pod's service account, renewed at half-life.

use super::*;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use tessera_contract::config::{self as pc, ProxyConfig};

use crate::capture::Capture;
use crate::programs::{program_for, Program};
use crate::{write_private, RuntimeError};
use tessera_model::names::{PROXY_CONTAINER, PROXY_UID};

pub(super) const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl Sandbox {
    pub(super) fn write_proxy_files(
        &mut self,
        host: &Host,
        control: &tessera_control::ControlState,
        proxy: &ContainerInfo,
    ) -> Result<(), RuntimeError> {
        let dir = self.dir.join("proxy");
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| RuntimeError::io(&dir, e))?;
        own_by_proxy(&dir)?;
        self.write_token(control)?;
        let ns = &self.info.namespace;
        let sa = self.pod.spec.service_account();
        let token_file = dir.join("token");
        let capture = self.pod.spec.init_containers.iter().find_map(|c| {
            match program_for(&self.pod.metadata, c) {
                Ok(Program::Capture) => Capture::from_args(&c.args).ok(),
                _ => None,
            }
        });
        let any = |port: u16| SocketAddr::from(([0, 0, 0, 0], port));
        let volumes = proxy.volumes.clone();
        let bootstrap = ProxyConfig {
            authorization: Default::default(),
            version: "bootstrap".into(),
            node: pc::Node {
                id: format!("{}.{ns}", self.info.pod),
                identity: format!("spiffe://{}/ns/{ns}/sa/{sa}", host.trust_domain),
                trust_domain: host.trust_domain.clone(),
            },
            certificates: pc::CertificateSource {
                files: None,
                ca: Some(pc::CaSource {
                    socket: host.state_dir.join(tessera_control::api::CA_SOCKET),
                    token_file: token_file.clone(),
                    ttl: None,
                }),
            },
            admin: pc::Admin::default(),
            runtime: pc::ProxyRuntime::default(),
            listeners: pc::Listeners {
                outbound_capture: capture.as_ref().map(|c| any(c.outbound_port)),
                inbound_capture: capture.as_ref().map(|c| any(c.inbound_port)),
                explicit: vec![],
            },
            services: vec![],
            inbound: pc::Inbound::default(),
            control_plane: Some(pc::ControlPlaneEndpoint {
                socket: host.state_dir.join(tessera_control::api::PUSH_SOCKET),
                token_file,
            }),
            volumes,
            gateway: vec![],
            secrets: vec![],
        };
        let path = dir.join("bootstrap.json");
        write_private(
            &path,
            serde_json::to_string_pretty(&bootstrap)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        own_by_proxy(&path)
    }

    /// The bootstrap token for the pod's service account (24 h; renewed at half-life).
    pub(super) fn write_token(
        &mut self,
        control: &tessera_control::ControlState,
    ) -> Result<(), RuntimeError> {
        let path = self.dir.join("proxy/token");
        let token = control.issuer().tokens.mint(
            &self.info.namespace,
            self.pod.spec.service_account(),
            TOKEN_TTL,
            std::time::SystemTime::now(),
        );
        write_private(&path, token.as_bytes())?;
        own_by_proxy(&path)?;
        self.token_written = Instant::now();
        Ok(())
    }

    /// Renews the proxy's bootstrap token at half its lifetime.
    pub fn renew_token(
        &mut self,
        control: &tessera_control::ControlState,
    ) -> Result<(), RuntimeError> {
        let has_proxy = self.supervised.iter().any(|s| s.name == PROXY_CONTAINER);
        if has_proxy && self.token_written.elapsed() > TOKEN_TTL / 2 {
            self.write_token(control)?;
        }
        Ok(())
    }
}

/// The proxy (uid 1337) reads its bootstrap files; nobody else but root does.
pub(super) fn own_by_proxy(path: &Path) -> Result<(), RuntimeError> {
    std::os::unix::fs::chown(path, Some(PROXY_UID), Some(PROXY_UID))
        .map_err(|e| RuntimeError::io(path, e))
}
