//! A gateway listener's filter chains (one per Gateway server), built from the snapshot:
//! the chain a TLS connection's SNI selects (Envoy's order: exact name, then the longest
//! `*.suffix`, then a chain without names), and the plaintext chains.

use std::sync::Arc;

use tessera_contract::config::{GatewayListener, ServerKind};

use crate::config::route::{self, CompiledVhost};
use crate::config::termination::{self, Material, SecretInUse, Termination};

/// One server (filter chain) of a gateway listener, ready to serve.
#[derive(Debug)]
pub struct ServerChain {
    pub name: String,
    pub source: String,
    pub kind: ServerKind,
    pub server_names: Vec<String>,
    pub termination: Option<Termination>,
    pub vhosts: Vec<CompiledVhost>,
    pub l4: Vec<tessera_contract::config::L4Route>,
}

/// A gateway listener's chains.
#[derive(Debug)]
pub struct GatewayTable {
    pub port: u16,
    pub server_port: u16,
    pub chains: Vec<Arc<ServerChain>>,
}

impl GatewayTable {
    pub fn build(
        l: &GatewayListener,
        material: &Material<'_>,
        used: &mut Vec<SecretInUse>,
    ) -> Result<GatewayTable, String> {
        let chains = l
            .servers
            .iter()
            .map(|s| {
                let alpn: &[&[u8]] = match s.kind {
                    ServerKind::TerminateHttp => termination::ALPN_HTTP,
                    _ => &[],
                };
                Ok(Arc::new(ServerChain {
                    name: s.name.clone(),
                    source: s.source.clone(),
                    kind: s.kind,
                    server_names: s.server_names.clone(),
                    termination: s
                        .tls
                        .as_ref()
                        .map(|t| termination::build(t, material, alpn, used)),
                    vhosts: route::compile(&s.virtual_hosts)?,
                    l4: s.l4_routes.clone(),
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(GatewayTable {
            port: l.port,
            server_port: l.server_port,
            chains,
        })
    }

    /// The chain for a TLS connection with `sni`.
    pub fn tls_chain(&self, sni: Option<&str>) -> Option<&Arc<ServerChain>> {
        let tls = self
            .chains
            .iter()
            .filter(|c| c.kind != ServerKind::Http && c.kind != ServerKind::Tcp);
        if let Some(sni) = sni.map(str::to_ascii_lowercase) {
            if let Some(c) = tls.clone().find(|c| c.server_names.contains(&sni)) {
                return Some(c);
            }
            let wildcard = tls
                .clone()
                .filter_map(|c| {
                    c.server_names
                        .iter()
                        .filter_map(|n| n.strip_prefix('*'))
                        .filter(|suffix| sni.ends_with(suffix) && sni.len() > suffix.len())
                        .map(str::len)
                        .max()
                        .map(|len| (len, c))
                })
                .max_by_key(|(len, _)| *len);
            if let Some((_, c)) = wildcard {
                return Some(c);
            }
        }
        tls.clone().find(|c| c.server_names.is_empty())
    }

    pub fn plain_chain(&self, kind: ServerKind) -> Option<&Arc<ServerChain>> {
        self.chains.iter().find(|c| c.kind == kind)
    }
}

/// `*.example.com` covers `a.example.com`; exact names compare case-insensitively.
pub fn sni_matches(pattern: &str, sni: &str) -> bool {
    let sni = sni.to_ascii_lowercase();
    match pattern.strip_prefix('*') {
        Some(suffix) => sni.ends_with(suffix) && sni.len() > suffix.len(),
        None => pattern.eq_ignore_ascii_case(&sni),
    }
}
