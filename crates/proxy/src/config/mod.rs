//! A [`ProxyConfig`] turned into lookup tables: VIP:port and endpoint address → upstream,
//! `host:port` → upstream, workload port → inbound rule, gateway port → filter chains, and
//! per-endpoint TLS with its rustls config built once. Building one checks everything, so a
//! bad config is refused as a whole and the proxy keeps its last good one. Serving code
//! only looks things up here.

pub mod gateway;
pub mod origination;
pub mod route;
pub mod termination;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tessera_ca::{CredentialStore, SpiffeId};
use tessera_contract::config::{InboundMode, PortProtocol, ProxyConfig};
use tessera_contract::inbound::PortRule;

use self::gateway::GatewayTable;
use self::origination::{origination, pool_key};
pub use self::origination::{Flavor, Origination, ALPN_SERVER};
use self::termination::{SecretInUse, Termination};
use crate::limits::Limits;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
}

pub(crate) fn invalid_config(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// Reads a config file: JSON when it ends in `.json`, else YAML.
pub fn read_config(path: &Path) -> Result<ProxyConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse {
        file: file.clone(),
        message: e.to_string(),
    })?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_norway::from_str(&text).map_err(|e| e.to_string())
    };
    let config: ProxyConfig = parsed.map_err(|message| ConfigError::Parse { file, message })?;
    let volumes = config.volumes.clone();
    Ok(config.resolved_through(&volumes))
}

#[derive(Debug)]
pub struct EndpointRoute {
    pub address: SocketAddr,
    pub workload: Option<String>,
    pub origination: Origination,
    /// The pool this endpoint's connections live in: equal settings share one across
    /// snapshots, so a config reload keeps the warm connections.
    pub pool_key: u64,
    /// Shared by the endpoints with the same reason (most of a snapshot's have one of a few).
    pub reason: Arc<str>,
    /// The inbound side's own app: its connections are not mesh edges.
    pub local_app: bool,
}

#[derive(Debug)]
pub struct Upstream {
    /// `host:port`, for logs and error bodies.
    pub name: String,
    pub protocol: PortProtocol,
    pub endpoints: Vec<Arc<EndpointRoute>>,
    next: AtomicUsize,
}

impl Upstream {
    /// Endpoints in round-robin order, starting from the next one.
    pub fn pick_order(&self) -> impl Iterator<Item = &Arc<EndpointRoute>> {
        let n = self.endpoints.len();
        let start = if n == 0 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        };
        (0..n).map(move |i| &self.endpoints[(start + i) % n])
    }
}

#[derive(Debug, Clone)]
pub struct InboundRule {
    pub protocol: PortProtocol,
    pub mode: InboundMode,
    pub reason: String,
    /// Where the app receives this port's traffic (None: the same port on `app_host`).
    pub forward_to: Option<SocketAddr>,
    /// Sidecar ingress TLS: only TLS is accepted, terminated with the user's certificate.
    pub termination: Option<Termination>,
    /// `x-envoy-decorator-operation` on responses.
    pub operation: Option<http::HeaderValue>,
}

impl InboundRule {
    /// The port as the inbound decision reads it.
    pub fn port_rule(&self) -> PortRule {
        PortRule {
            protocol: self.protocol,
            mode: self.mode,
            user_tls: self.termination.is_some(),
        }
    }

    /// Whether a connection accepted under `self` may go on under `now`.
    pub fn same_chain(&self, now: &InboundRule) -> bool {
        self.protocol == now.protocol
            && self.mode == now.mode
            && self.forward_to == now.forward_to
            && self.termination.is_some() == now.termination.is_some()
    }
}

pub struct Snapshot {
    pub config: ProxyConfig,
    pub identity: SpiffeId,
    by_address: HashMap<SocketAddr, Arc<Upstream>>,
    by_name: HashMap<String, Arc<Upstream>>,
    inbound: HashMap<u16, InboundRule>,
    pub default_inbound: InboundRule,
    pub app_host: IpAddr,
    /// User key material in use (files, pushed Secrets), for `proxy-config secret`.
    pub secrets_in_use: Vec<SecretInUse>,
    /// Files the snapshot read; a change rebuilds it (certificates rotate in place).
    pub watched_files: Vec<std::path::PathBuf>,
    /// Gateway mode: the chains of each listener, by pod port.
    gateway: HashMap<u16, Arc<GatewayTable>>,
    /// `runtime.limits`, checked.
    pub limits: Limits,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.config.version)
            .finish_non_exhaustive()
    }
}

/// Upstreams by service `host:port` and by address (VIP:port, and each endpoint's own
/// address for connections straight to a pod).
type UpstreamTables = (
    HashMap<SocketAddr, Arc<Upstream>>,
    HashMap<String, Arc<Upstream>>,
);

impl Snapshot {
    pub fn build(config: ProxyConfig, store: &CredentialStore) -> Result<Snapshot, ConfigError> {
        let identity: SpiffeId = config
            .node
            .identity
            .parse()
            .map_err(|e: tessera_ca::SpiffeError| invalid_config("node.identity", e.to_string()))?;
        if identity.trust_domain() != config.node.trust_domain {
            return Err(invalid_config(
                "node.identity",
                format!(
                    "{identity} is outside the trust domain {}",
                    config.node.trust_domain
                ),
            ));
        }
        if let Some((field, message)) = config.runtime.limits.problems().into_iter().next() {
            return Err(invalid_config(format!("runtime.limits.{field}"), message));
        }
        let limits = Limits::from(&config.runtime.limits);
        let (by_address, by_name) = upstreams(&config, store)?;
        let mut secrets_in_use = Vec::new();
        let material = termination::Material {
            secrets: &config.secrets,
            store,
            volumes: &config.volumes,
        };
        let inbound = inbound_rules(&config, &material, &mut secrets_in_use)?;
        let gateway = gateway_tables(&config, &material, &mut secrets_in_use)?;
        check_explicit_listeners(&config, &by_name)?;
        Ok(Snapshot {
            app_host: config.inbound.app_host,
            default_inbound: InboundRule {
                protocol: PortProtocol::Auto,
                mode: config.inbound.default_mode,
                reason: "no Service declares this port: the workload's mode".into(),
                forward_to: None,
                termination: None,
                operation: None,
            },
            watched_files: watched_files(&config),
            gateway,
            limits,
            secrets_in_use,
            identity,
            by_address,
            by_name,
            inbound,
            config,
        })
    }

    pub fn upstream_for_address(&self, addr: &SocketAddr) -> Option<&Arc<Upstream>> {
        self.by_address.get(addr)
    }

    pub fn upstream_named(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name)
    }

    pub fn gateway_table(&self, port: u16) -> Option<Arc<GatewayTable>> {
        self.gateway.get(&port).cloned()
    }

    pub fn inbound_rule(&self, port: u16) -> &InboundRule {
        self.inbound.get(&port).unwrap_or(&self.default_inbound)
    }
}

/// Every service port's upstream, with each endpoint's TLS made ready (mesh client
/// configs shared between endpoints that expect the same identities).
fn upstreams(config: &ProxyConfig, store: &CredentialStore) -> Result<UpstreamTables, ConfigError> {
    let mut mesh_configs: HashMap<Vec<String>, Arc<origination::ClientConfigs>> = HashMap::new();
    let mut by_address = HashMap::new();
    let mut by_name = HashMap::new();
    let mut reasons: HashMap<&str, Arc<str>> = HashMap::new();
    for (si, service) in config.services.iter().enumerate() {
        for (pi, port) in service.ports.iter().enumerate() {
            let path = format!("services[{si}].ports[{pi}]");
            let mut endpoints = Vec::new();
            for (ei, ep) in port.endpoints.iter().enumerate() {
                let path = format!("{path}.endpoints[{ei}].tls");
                let origination = origination(
                    &ep.tls,
                    &service.host,
                    port.port,
                    store,
                    &mut mesh_configs,
                    &path,
                )?;
                endpoints.push(Arc::new(EndpointRoute {
                    address: ep.address,
                    workload: ep.workload.clone(),
                    origination,
                    pool_key: pool_key(ep.address, &ep.tls),
                    reason: reasons
                        .entry(ep.tls.reason.as_str())
                        .or_insert_with(|| Arc::from(ep.tls.reason.as_str()))
                        .clone(),
                    local_app: false,
                }));
            }
            let upstream = Arc::new(Upstream {
                name: format!("{}:{}", service.host, port.port),
                protocol: port.protocol,
                endpoints,
                next: AtomicUsize::new(0),
            });
            if by_name
                .insert(upstream.name.clone(), upstream.clone())
                .is_some()
            {
                return Err(invalid_config(
                    &path,
                    format!("{} is listed twice", upstream.name),
                ));
            }
            for vip in &service.vips {
                by_address.insert(SocketAddr::new(*vip, port.port), upstream.clone());
            }
        }
    }
    // A connection straight to a pod address (headless services) goes to that endpoint
    // with its own TLS settings.
    let mut direct = HashMap::new();
    for upstream in by_name.values() {
        for ep in &upstream.endpoints {
            direct.entry(ep.address).or_insert_with(|| {
                Arc::new(Upstream {
                    name: upstream.name.clone(),
                    protocol: upstream.protocol,
                    endpoints: vec![ep.clone()],
                    next: AtomicUsize::new(0),
                })
            });
        }
    }
    for (addr, upstream) in direct {
        by_address.entry(addr).or_insert(upstream);
    }
    Ok((by_address, by_name))
}

/// The workload's ports, each with its rule (and the user's TLS made ready, for Sidecar
/// ingress listeners).
fn inbound_rules(
    config: &ProxyConfig,
    material: &termination::Material<'_>,
    secrets_in_use: &mut Vec<SecretInUse>,
) -> Result<HashMap<u16, InboundRule>, ConfigError> {
    let mut inbound = HashMap::new();
    for (i, port) in config.inbound.ports.iter().enumerate() {
        let termination = port.tls.as_ref().map(|tls| {
            let alpn: &[&[u8]] = match port.protocol {
                PortProtocol::Http | PortProtocol::Http2 => termination::ALPN_HTTP,
                _ => &[],
            };
            termination::build(tls, material, alpn, secrets_in_use)
        });
        let operation = match &port.operation {
            Some(op) => Some(http::HeaderValue::from_str(op).map_err(|_| {
                invalid_config(
                    format!("inbound.ports[{i}].operation"),
                    "not a valid header value",
                )
            })?),
            None => None,
        };
        let rule = InboundRule {
            protocol: port.protocol,
            mode: port.mode,
            reason: port.reason.clone(),
            forward_to: port.forward_to,
            termination,
            operation,
        };
        if inbound.insert(port.port, rule).is_some() {
            return Err(invalid_config(
                format!("inbound.ports[{i}]"),
                format!("port {} is listed twice", port.port),
            ));
        }
    }
    Ok(inbound)
}

/// Gateway mode: each listener's filter chains, by pod port.
fn gateway_tables(
    config: &ProxyConfig,
    material: &termination::Material<'_>,
    secrets_in_use: &mut Vec<SecretInUse>,
) -> Result<HashMap<u16, Arc<GatewayTable>>, ConfigError> {
    let mut gateway = HashMap::new();
    for (i, l) in config.gateway.iter().enumerate() {
        let table = GatewayTable::build(l, material, secrets_in_use)
            .map_err(|e| invalid_config(format!("gateway[{i}]"), e))?;
        if gateway.insert(l.port, Arc::new(table)).is_some() {
            return Err(invalid_config(
                format!("gateway[{i}]"),
                format!("port {} is listed twice", l.port),
            ));
        }
    }
    Ok(gateway)
}

/// An explicit listener names exactly one target, and an outbound one a known service
/// (in pushed mode the bootstrap may name services the first push brings).
fn check_explicit_listeners(
    config: &ProxyConfig,
    by_name: &HashMap<String, Arc<Upstream>>,
) -> Result<(), ConfigError> {
    for (i, l) in config.listeners.explicit.iter().enumerate() {
        let path = format!("listeners.explicit[{i}]");
        match (&l.outbound, l.inbound) {
            (Some(target), None) => {
                if !by_name.contains_key(target) && config.control_plane.is_none() {
                    return Err(invalid_config(
                        path,
                        format!("outbound target {target} is not a service port in services[] (host:port)"),
                    ));
                }
            }
            (None, Some(_)) => {}
            _ => {
                return Err(invalid_config(
                    path,
                    "set exactly one of outbound (host:port) or inbound (a workload port)",
                ))
            }
        }
    }
    Ok(())
}

/// The user certificate files a config names (Sidecar ingress and Gateway TLS).
fn watched_files(config: &ProxyConfig) -> Vec<std::path::PathBuf> {
    use tessera_contract::config::{CaBundleSource, KeyPairSource};
    let mut out = Vec::new();
    let tls = config
        .inbound
        .ports
        .iter()
        .filter_map(|p| p.tls.as_ref())
        .chain(
            config
                .gateway
                .iter()
                .flat_map(|l| &l.servers)
                .filter_map(|s| s.tls.as_ref()),
        );
    for t in tls {
        if let KeyPairSource::Files {
            cert_chain,
            private_key,
        } = &t.key_pair
        {
            out.push(cert_chain.clone());
            out.push(private_key.clone());
        }
        if let Some(CaBundleSource::File { path }) = &t.client_ca {
            out.push(path.clone());
        }
    }
    let mut out: Vec<_> = out.iter().map(|p| config.volumes.resolve(p)).collect();
    out.sort();
    out.dedup();
    out
}
