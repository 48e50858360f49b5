//! The proxy's configuration snapshot: everything a proxy needs to decide, precomputed.
//!
//! The control plane compiles it from policies and the registry and pushes it; `tessera
//! proxy --config FILE` reads the very same type from YAML or JSON (static mode: tests, VMs,
//! benchmarks). The proxy evaluates no policy: per-port modes and per-endpoint TLS are
//! already decided here, each with the reason it was decided, for `config_dump` and
//! `explain`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One immutable configuration of one proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Changes with every new snapshot; shown by `/config_dump` and in ACKs.
    pub version: String,
    pub node: Node,
    /// Where this proxy's certificate comes from.
    pub certificates: CertificateSource,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub runtime: ProxyRuntime,
    #[serde(default)]
    pub listeners: Listeners,
    /// Services this proxy can call (outbound), with their endpoints.
    #[serde(default)]
    pub services: Vec<Service>,
    /// What this proxy's workload serves (inbound).
    #[serde(default)]
    pub inbound: Inbound,
    /// The AuthorizationPolicies that apply to this workload (or gateway), compiled.
    #[serde(default, skip_serializing_if = "crate::authz::Authorization::is_empty")]
    pub authorization: crate::authz::Authorization,
    /// Pushed mode: the control plane to take snapshots from. A file with this section is a
    /// bootstrap: the proxy serves it until the first push arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlaneEndpoint>,
    /// Where the pod's volume mounts live on this host (local runtime): file paths in this
    /// config (`/etc/istio/tls-certs/tls.crt`) are read through it.
    #[serde(default, skip_serializing_if = "VolumeTable::is_empty")]
    pub volumes: VolumeTable,
    /// Gateway mode: listeners built from Gateway servers and the VirtualServices bound to
    /// them, one per gateway pod port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<GatewayListener>,
    /// Key material of `credentialName` Secrets, by SDS name (`kubernetes://<name>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretMaterial>,
}

impl ProxyConfig {
    /// A pushed snapshot as this proxy runs it: the sections that describe the local host
    /// (certificates, admin, runtime, listeners, control plane) stay as the bootstrap says;
    /// the mesh's decisions (node identity, services, inbound) come from the push.
    pub fn with_local_sections_of(mut self, bootstrap: &ProxyConfig) -> ProxyConfig {
        self.certificates = bootstrap.certificates.clone();
        self.admin = bootstrap.admin.clone();
        self.runtime = bootstrap.runtime.clone();
        self.listeners = bootstrap.listeners.clone();
        self.control_plane = bootstrap.control_plane.clone();
        self.volumes = bootstrap.volumes.clone();
        self
    }

    /// The config with the file paths of DestinationRule TLS read through `volumes` (the
    /// pod's mounts). Server TLS keeps the manifest's paths: they are the names
    /// `proxy-config secret` shows (`file-cert:/etc/istio/...`), resolved when read.
    pub fn resolved_through(mut self, volumes: &VolumeTable) -> ProxyConfig {
        if volumes.is_empty() {
            return self;
        }
        let fix = |p: &mut PathBuf| *p = volumes.resolve(p);
        if let Some(f) = &mut self.certificates.files {
            fix(&mut f.cert_chain);
            fix(&mut f.private_key);
            fix(&mut f.root_cert);
        }
        for port in self.services.iter_mut().flat_map(|s| s.ports.iter_mut()) {
            for ep in &mut port.endpoints {
                let tls = &mut ep.tls;
                for p in [
                    &mut tls.ca_certificates,
                    &mut tls.client_certificate,
                    &mut tls.private_key,
                ]
                .into_iter()
                .flatten()
                {
                    fix(p);
                }
            }
        }
        self
    }
}

/// A pod's volume table: each mount path of its manifest and the host directory that holds
/// the volume's files. Programs that know about it (the proxy, the built-in apps) resolve
/// manifest paths through it, so a pod reads `/etc/nginx/ssl/tls.crt` without a private
/// filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeTable {
    #[serde(default)]
    pub mounts: Vec<VolumeMount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    /// The path the manifest names (`/etc/nginx/ssl`).
    pub mount_path: PathBuf,
    /// The directory holding the volume's files on this host.
    pub host_path: PathBuf,
}

impl VolumeTable {
    /// The environment variable the runtime passes a pod's table in (JSON).
    pub const ENV: &'static str = "TESSERA_VOLUMES";

    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }

    /// The table in [`VolumeTable::ENV`]; empty when unset or unreadable.
    pub fn from_env() -> VolumeTable {
        std::env::var(Self::ENV)
            .ok()
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default()
    }

    /// Where `path` is on this host: under the longest mount path that contains it (whole
    /// path components), else `path` itself.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.mounts
            .iter()
            .filter_map(|m| {
                path.strip_prefix(&m.mount_path)
                    .ok()
                    .map(|rest| (m.mount_path.components().count(), m.host_path.join(rest)))
            })
            .max_by_key(|(depth, _)| *depth)
            .map_or_else(|| path.to_path_buf(), |(_, p)| p)
    }
}

/// Where a proxy in pushed mode gets its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneEndpoint {
    /// The control plane's push socket (`<state dir>/xds.sock`).
    pub socket: PathBuf,
    /// The bootstrap token for this proxy's service account (re-read on every connect).
    pub token_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// `<pod>.<namespace>`, as `proxy-status` lists it.
    pub id: String,
    /// This workload's SPIFFE identity.
    pub identity: String,
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
}

fn default_trust_domain() -> String {
    "cluster.local".into()
}

/// Exactly one of `files` or `ca`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<CertificateFiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaSource>,
}

/// PEM files, re-read when they change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
    pub root_cert: PathBuf,
}

/// The mesh CA over gRPC on a Unix socket, with a bootstrap token file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaSource {
    pub socket: PathBuf,
    pub token_file: PathBuf,
    /// Requested certificate lifetime, e.g. "24h" (default: the CA's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Admin {
    /// `None` turns the admin endpoint off.
    #[serde(default = "default_admin")]
    pub address: Option<SocketAddr>,
}

impl Default for Admin {
    fn default() -> Admin {
        Admin {
            address: default_admin(),
        }
    }
}

fn default_admin() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 15000)))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyRuntime {
    /// Worker threads (Istio's sidecar default is 2).
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// One log line per connection and request.
    #[serde(default = "yes")]
    pub access_log: bool,
    /// On SIGTERM, how long open connections may finish.
    #[serde(default = "default_drain")]
    pub drain_seconds: u64,
    /// How long a connection may stay silent before its protocol is decided (server-first
    /// protocols are then treated as opaque TCP instead of hanging).
    #[serde(default = "default_detect")]
    pub protocol_detection_ms: u64,
    /// How long a request for a known service with no endpoints yet is held for the
    /// control plane's next push before it is answered 503 (a pod that just became Ready
    /// reaches the clients' sidecars a moment later).
    #[serde(default = "default_endpoint_hold")]
    pub endpoint_hold_ms: u64,
    /// What one client may make the proxy spend: connections, time, header bytes, streams.
    #[serde(default)]
    pub limits: ProxyLimits,
}

impl Default for ProxyRuntime {
    fn default() -> ProxyRuntime {
        ProxyRuntime {
            threads: default_threads(),
            access_log: true,
            drain_seconds: default_drain(),
            protocol_detection_ms: default_detect(),
            endpoint_hold_ms: default_endpoint_hold(),
            limits: ProxyLimits::default(),
        }
    }
}

/// Limits on what a client can make the proxy spend. Every limit refuses or closes
/// cleanly, and each hit is counted (`tessera_limits_total{reason}`) and logged once per
/// kind. The defaults follow Envoy's guidance for edge proxies where it has one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyLimits {
    /// Open downstream connections per listener; past it a new connection is reset.
    pub max_connections_per_listener: usize,
    /// From a connection's start, or a request's first byte, to the end of its headers
    /// (nginx's `client_header_timeout`, HAProxy's `timeout http-request`).
    pub header_read_timeout_ms: u64,
    /// A downstream HTTP connection with no request in flight is closed after this long
    /// (Envoy's `idle_timeout`).
    pub idle_timeout_ms: u64,
    /// A pooled upstream HTTP/1.1 connection unused for this long is closed rather than
    /// reused.
    pub upstream_idle_timeout_ms: u64,
    /// A request whose upstream answer (headers or the next body chunk), or whose
    /// downstream body, does not move for this long is ended (Envoy's
    /// `stream_idle_timeout`): 504 before the response started, a reset after.
    pub stream_idle_timeout_ms: u64,
    /// An opaque TCP connection with no bytes either way for this long is closed
    /// (Envoy's TCP proxy `idle_timeout`).
    pub tcp_idle_timeout_ms: u64,
    /// A downstream TLS handshake must finish within this.
    pub tls_handshake_timeout_ms: u64,
    /// The request line (or pseudo-headers) and headers of one request, in bytes
    /// (Envoy's `max_request_headers_kb`); larger requests get 431.
    pub max_request_headers_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Streams per HTTP/2 connection that the client may cancel (RST_STREAM) within one
    /// second; past it the connection is closed (the rapid-reset attack).
    pub h2_max_resets_per_second: u32,
    /// Per-stream HTTP/2 flow-control window, which bounds what one stream can buffer.
    pub h2_stream_window_bytes: u32,
    /// Per-connection HTTP/2 flow-control window.
    pub h2_connection_window_bytes: u32,
}

impl Default for ProxyLimits {
    fn default() -> ProxyLimits {
        ProxyLimits {
            max_connections_per_listener: 16_384,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 3_600_000,
            upstream_idle_timeout_ms: 60_000,
            stream_idle_timeout_ms: 300_000,
            tcp_idle_timeout_ms: 3_600_000,
            tls_handshake_timeout_ms: 10_000,
            max_request_headers_bytes: 60 * 1024,
            h2_max_concurrent_streams: 100,
            h2_max_resets_per_second: 100,
            h2_stream_window_bytes: 64 * 1024,
            h2_connection_window_bytes: 1024 * 1024,
        }
    }
}

/// HTTP/2's largest flow-control window (RFC 9113, 6.9.1).
pub const H2_MAX_WINDOW: u32 = (1 << 31) - 1;
/// HTTP/2's initial window, the smallest a receiver may advertise without stalling
/// peers that wait for the first WINDOW_UPDATE.
pub const H2_MIN_WINDOW: u32 = 65_535;

impl ProxyLimits {
    /// What is wrong with these limits, as (field under `runtime.limits`, what is allowed).
    /// A limit of zero would refuse everything (or, for a timeout, cut everything at once),
    /// so each must be at least 1.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let at_least = |out: &mut Vec<_>, field, value: u64, min: u64| {
            if value < min {
                out.push((
                    field,
                    format!("{value} is too small: must be at least {min}"),
                ));
            }
        };
        at_least(
            &mut out,
            "maxConnectionsPerListener",
            self.max_connections_per_listener as u64,
            1,
        );
        at_least(
            &mut out,
            "headerReadTimeoutMs",
            self.header_read_timeout_ms,
            1,
        );
        at_least(&mut out, "idleTimeoutMs", self.idle_timeout_ms, 1);
        at_least(
            &mut out,
            "upstreamIdleTimeoutMs",
            self.upstream_idle_timeout_ms,
            1,
        );
        at_least(
            &mut out,
            "streamIdleTimeoutMs",
            self.stream_idle_timeout_ms,
            1,
        );
        at_least(&mut out, "tcpIdleTimeoutMs", self.tcp_idle_timeout_ms, 1);
        at_least(
            &mut out,
            "tlsHandshakeTimeoutMs",
            self.tls_handshake_timeout_ms,
            1,
        );
        // hyper's HTTP/1 read buffer holds a whole request head and is at least 8 KiB.
        at_least(
            &mut out,
            "maxRequestHeadersBytes",
            self.max_request_headers_bytes as u64,
            8192,
        );
        at_least(
            &mut out,
            "h2MaxConcurrentStreams",
            u64::from(self.h2_max_concurrent_streams),
            1,
        );
        at_least(
            &mut out,
            "h2MaxResetsPerSecond",
            u64::from(self.h2_max_resets_per_second),
            1,
        );
        for (field, value) in [
            ("h2StreamWindowBytes", self.h2_stream_window_bytes),
            ("h2ConnectionWindowBytes", self.h2_connection_window_bytes),
        ] {
            if !(H2_MIN_WINDOW..=H2_MAX_WINDOW).contains(&value) {
                out.push((
                    field,
                    format!("{value} is outside {H2_MIN_WINDOW}..={H2_MAX_WINDOW} (HTTP/2 flow-control windows)"),
                ));
            }
        }
        out
    }
}

fn default_threads() -> usize {
    2
}
fn yes() -> bool {
    true
}
fn default_drain() -> u64 {
    5
}
fn default_endpoint_hold() -> u64 {
    5000
}

fn default_detect() -> u64 {
    1000
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listeners {
    /// Captured outbound traffic (iptables REDIRECT; the original destination is read
    /// with SO_ORIGINAL_DST). Istio's 15001.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_capture: Option<SocketAddr>,
    /// Captured inbound traffic. Istio's 15006.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_capture: Option<SocketAddr>,
    /// Listeners bound to a fixed target, for hosts without iptables and for tests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub explicit: Vec<ExplicitListener>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExplicitListener {
    /// Names the listener in logs and in the addresses a running proxy reports.
    pub name: String,
    /// Port 0 picks a free port (tests); the proxy reports the one it bound.
    pub bind: SocketAddr,
    /// Outbound: connections are for this service port, `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<String>,
    /// Inbound: connections are for this workload port (the Service's target port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<u16>,
}

/// How a port is handled, from its declared protocol (Istio's listener classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PortProtocol {
    /// HTTP/1.1 (or h2 if the client speaks it) at L7.
    Http,
    /// HTTP at L7 with HTTP/2 to the upstream (http2, grpc).
    Http2,
    /// Opaque bytes: TCP, HTTPS, TLS, databases.
    Tcp,
    /// Undeclared: sniff the first bytes.
    Auto,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// FQDN, e.g. httpbin.full.svc.cluster.local.
    pub host: String,
    /// Cluster IPs (VIPs) the captured outbound listener matches on.
    #[serde(default)]
    pub vips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub protocol: PortProtocol,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// The workload behind it, for logs (`pod.namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    #[serde(default)]
    pub tls: EndpointTls,
}

/// The TLS this proxy originates toward one endpoint, decided by the control plane.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointTls {
    pub mode: TlsMode,
    /// ISTIO_MUTUAL: the server identities accepted (secure naming); empty accepts any
    /// identity of the trust domain. SIMPLE/MUTUAL: DNS or URI names to match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// SIMPLE/MUTUAL: the CA to verify the server with (no verification when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<PathBuf>,
    /// MUTUAL: the client certificate and key to present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<PathBuf>,
    /// Why this mode: "auto mTLS: the endpoint has a sidecar", "DestinationRule full/x", ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Plaintext.
    #[default]
    Disable,
    /// One-way TLS with the user's settings.
    Simple,
    /// Mutual TLS with the user's certificate.
    Mutual,
    /// Mesh mTLS with the workload certificate.
    IstioMutual,
}

/// The effective PeerAuthentication mode of an inbound port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InboundMode {
    #[default]
    Permissive,
    Strict,
    Disable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inbound {
    /// Where the application listens (its ports are the target ports).
    #[serde(default = "localhost")]
    pub app_host: IpAddr,
    /// The mode of ports no Service declares (Istio's passthrough chains).
    #[serde(default)]
    pub default_mode: InboundMode,
    #[serde(default)]
    pub ports: Vec<InboundPort>,
}

impl Default for Inbound {
    fn default() -> Inbound {
        Inbound {
            app_host: localhost(),
            default_mode: InboundMode::default(),
            ports: Vec::new(),
        }
    }
}

fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundPort {
    /// The workload port (a Service's targetPort).
    pub port: u16,
    pub protocol: PortProtocol,
    pub mode: InboundMode,
    /// Why this mode ("PeerAuthentication full/strict port 80", "mesh default").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Where the app receives this port's traffic, when not on the same port of
    /// `app_host` (a Sidecar ingress listener's `defaultEndpoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<SocketAddr>,
    /// Sidecar ingress TLS: the client's TLS is terminated with the user's
    /// certificate, and only TLS is accepted on the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    /// Sent back as `x-envoy-decorator-operation` (`<Sidecar>.<ns>:<port>/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

/// TLS a proxy terminates with the user's certificate: a Gateway server, or a Sidecar
/// ingress listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTls {
    pub mode: TerminationMode,
    pub key_pair: KeyPairSource,
    /// MUTUAL / OPTIONAL_MUTUAL: the CA client certificates must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<CaBundleSource>,
    /// Client certificates must carry one of these SANs (exact match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// `TLSV1_2` or `TLSV1_3`; older versions are not offered by this proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsVersion>,
    /// OpenSSL names of the TLS 1.2 suites allowed (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TerminationMode {
    Simple,
    Mutual,
    OptionalMutual,
    /// The proxy's workload certificate; clients need a mesh certificate.
    IstioMutual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "TLSV1_2")]
    V1_2,
    #[serde(rename = "TLSV1_3")]
    V1_3,
}

/// Where the served certificate and key come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum KeyPairSource {
    /// PEM files in the proxy's filesystem, re-read when they change (`file-cert:<crt>~<key>`).
    #[serde(rename_all = "camelCase")]
    Files {
        cert_chain: PathBuf,
        private_key: PathBuf,
    },
    /// A Secret pushed in [`ProxyConfig::secrets`] (`kubernetes://<name>`).
    Secret { name: String },
    /// The workload certificate (`default`).
    Workload,
}

/// Where a client CA bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum CaBundleSource {
    /// `file-root:<path>`.
    File { path: PathBuf },
    /// `kubernetes://<name>-cacert` or the `ca.crt` of `kubernetes://<name>`.
    Secret { name: String },
    /// The mesh roots (`ROOTCA`).
    MeshRoots,
}

impl KeyPairSource {
    /// The SDS resource name Istio shows for it.
    pub fn resource_name(&self) -> String {
        match self {
            KeyPairSource::Files {
                cert_chain,
                private_key,
            } => format!(
                "file-cert:{}~{}",
                cert_chain.display(),
                private_key.display()
            ),
            KeyPairSource::Secret { name } => name.clone(),
            KeyPairSource::Workload => "default".into(),
        }
    }
}

impl CaBundleSource {
    pub fn resource_name(&self) -> String {
        match self {
            CaBundleSource::File { path } => format!("file-root:{}", path.display()),
            CaBundleSource::Secret { name } => name.clone(),
            CaBundleSource::MeshRoots => "ROOTCA".into(),
        }
    }
}

/// A Secret's key material as the control plane found it. `error` says why it cannot be
/// served (missing Secret, wrong keys); the proxy then refuses handshakes that need it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretMaterial {
    /// `kubernetes://<name>` (key pair) or `kubernetes://<name>-cacert` (CA bundle).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_chain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One gateway pod port and the servers (filter chains) on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayListener {
    /// The port the gateway pod listens on (the Service's targetPort for the server port).
    pub port: u16,
    /// The server port clients addressed (for VirtualService `port` matches).
    pub server_port: u16,
    pub servers: Vec<GatewayServer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayServer {
    /// Istio's route name: `http.<port>` or `https.<port>.<portName>.<gateway>.<ns>`.
    pub name: String,
    /// Which Gateway and server it comes from, for logs.
    pub source: String,
    pub kind: ServerKind,
    /// SNI names this chain answers (`*.example.com` allowed); empty: any, also no SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    /// HTTP routing (kinds Http and TerminateHttp).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_hosts: Vec<VirtualHost>,
    /// L4 routing (Tcp, TerminateTcp, Passthrough by SNI).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub l4_routes: Vec<L4Route>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerKind {
    /// Plaintext HTTP.
    Http,
    /// HTTPS: TLS terminated here, then HTTP.
    TerminateHttp,
    /// TLS terminated here, then opaque bytes.
    TerminateTcp,
    /// TLS passed through to the backend chosen by SNI.
    Passthrough,
    /// Opaque TCP.
    Tcp,
}

/// The routes for the hosts a server and its VirtualServices share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHost {
    /// Lower-case host names, `*` and `*.suffix` allowed; the Host header's port is ignored.
    pub domains: Vec<String>,
    pub routes: Vec<HttpRouteRule>,
    /// From a server with `tls.httpsRedirect`: every request gets a 301 to https.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    /// `VirtualService <ns>/<name> http[<i>]`, for logs.
    pub source: String,
    /// Any one matches (empty: everything).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RequestMatch>,
    pub action: RouteAction,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<ValueMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<ValueMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<ValueMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<ValueMatch>,
    /// Lower-case names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, ValueMatch)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub without_headers: Vec<(String, ValueMatch)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<(String, ValueMatch)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ValueMatch {
    Exact(String),
    /// Raw string prefix (`/status` matches `/statusfoo`, as Istio's VirtualService).
    Prefix(String),
    /// RE2 syntax, matching the whole value.
    Regex(String),
    /// The header is present, whatever its value.
    Present,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum RouteAction {
    #[serde(rename_all = "camelCase")]
    Forward {
        destinations: Vec<WeightedDestination>,
        /// Replaces the matched prefix (the whole path for exact and regex matches).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rewrite_uri: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rewrite_authority: Option<String>,
        /// No answer within this time: 504 `upstream request timeout`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        #[serde(default)]
        retries: RetryPolicy,
    },
    #[serde(rename_all = "camelCase")]
    Redirect {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uri: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authority: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheme: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        code: u16,
    },
    #[serde(rename_all = "camelCase")]
    DirectResponse {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
}

/// Istio's default since 1.24: 2 retries on connect failure, refused stream, unavailable,
/// cancelled; no status codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// `connect-failure`, `refused-stream`, `unavailable`, `cancelled`, `5xx`,
    /// `gateway-error`, `reset`, `retriable-status-codes`, or status codes.
    #[serde(default)]
    pub retry_on: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            per_try_timeout_ms: None,
            retry_on: [
                "connect-failure",
                "refused-stream",
                "unavailable",
                "cancelled",
                "retriable-status-codes",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedDestination {
    /// A service port of [`ProxyConfig::services`], `host:port`.
    pub service: String,
    pub weight: u32,
}

/// An L4 route: for Passthrough servers chosen by SNI, else the first whose port matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4Route {
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    pub destinations: Vec<WeightedDestination>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_paths_resolve_under_the_longest_mount() {
        let table = VolumeTable {
            mounts: vec![
                VolumeMount {
                    mount_path: "/etc/nginx".into(),
                    host_path: "/state/v/conf".into(),
                },
                VolumeMount {
                    mount_path: "/etc/nginx/ssl".into(),
                    host_path: "/state/v/secret".into(),
                },
            ],
        };
        for (path, want) in [
            ("/etc/nginx/ssl/tls.crt", "/state/v/secret/tls.crt"),
            ("/etc/nginx/nginx.conf", "/state/v/conf/nginx.conf"),
            ("/etc/nginx/ssl", "/state/v/secret"),
            // Whole components only: /etc/nginx/sslx is not under /etc/nginx/ssl.
            ("/etc/nginx/sslx/a", "/state/v/conf/sslx/a"),
            ("/etc/other/tls.crt", "/etc/other/tls.crt"),
        ] {
            assert_eq!(
                table.resolve(Path::new(path)),
                PathBuf::from(want),
                "{path}"
            );
        }
    }

    #[test]
    fn limits_default_to_safe_values_and_zero_is_refused() {
        assert!(ProxyLimits::default().problems().is_empty());
        let parsed: ProxyRuntime = serde_json::from_str(
            r#"{"limits": {"headerReadTimeoutMs": 0, "h2StreamWindowBytes": 1024, "maxRequestHeadersBytes": 100}}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.limits.idle_timeout_ms, 3_600_000,
            "unset fields keep defaults"
        );
        let fields: Vec<_> = parsed
            .limits
            .problems()
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "headerReadTimeoutMs",
                "maxRequestHeadersBytes",
                "h2StreamWindowBytes"
            ]
        );
        let err = serde_json::from_str::<ProxyRuntime>(r#"{"limits": {"headerTimeout": 1}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `headerTimeout`"), "{err}");
    }
}
