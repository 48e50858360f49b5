//! Config push: `tessera.v1.ConfigDiscovery`, one stream per proxy. Each session compiles
//! its proxy's snapshot whenever the world changes and sends it only when it differs from
//! the last one sent (so a change reaches only the proxies it affects), then records the
//! proxy's ACK or NACK for `proxy-status`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tessera_ca::issuance::Issuer;
use tessera_ca::service::bearer;
use tessera_ca::token::TokenClaims;
use tessera_contract::config::ProxyConfig;
use tessera_contract::push::config_discovery_server::{ConfigDiscovery, ConfigDiscoveryServer};
use tessera_contract::push::{ConfigRequest, ConfigResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::compile::{compile_parts, CompileError, CompiledService, OutboundScope};
use crate::world::World;

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A snapshot sent to a proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushed {
    pub version: String,
    pub nonce: String,
    pub at_unix: u64,
}

/// A proxy's answer to a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub version: String,
    pub nonce: String,
    pub at_unix: u64,
    /// NACK only: the proxy's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the control plane knows of one proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub proxy_version: String,
    pub connected: bool,
    /// Connected since, or disconnected since.
    pub since_unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<Pushed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<Answer>,
    /// The last NACK; cleared by a later ACK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nacked: Option<Answer>,
    /// Why nothing can be compiled for it yet (e.g. its pod is not registered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The store revision its configuration was last compiled from (pushed, or found
    /// unchanged): SYNCED with `evaluated ≥ R` means the proxy runs what revision R implies.
    #[serde(default)]
    pub evaluated: u64,
    #[serde(skip)]
    session: u64,
}

/// `proxy-status`'s verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "UPPERCASE")]
pub enum SyncState {
    /// The last push was acknowledged.
    Synced,
    /// The last push is not acknowledged yet, for `age_secs`.
    Stale { age_secs: u64 },
    /// The proxy refused the last push and runs an older version.
    Nacked { reason: String },
    /// Connected, but nothing can be compiled for it (its pod is not registered, or no
    /// longer); it serves what it had.
    Waiting { reason: String },
    /// The stream is gone since `age_secs` ago; the proxy serves its last snapshot.
    Disconnected { age_secs: u64 },
}

impl ProxyStatus {
    pub fn state(&self, now_unix: u64) -> SyncState {
        if !self.connected {
            return SyncState::Disconnected {
                age_secs: now_unix.saturating_sub(self.since_unix),
            };
        }
        if let Some(reason) = &self.waiting {
            return SyncState::Waiting {
                reason: reason.clone(),
            };
        }
        let Some(pushed) = &self.pushed else {
            return SyncState::Waiting {
                reason: "nothing pushed yet".into(),
            };
        };
        if let Some(n) = self.nacked.as_ref().filter(|n| n.nonce == pushed.nonce) {
            return SyncState::Nacked {
                reason: n.reason.clone().unwrap_or_default(),
            };
        }
        if self.acked.as_ref().is_some_and(|a| a.nonce == pushed.nonce) {
            return SyncState::Synced;
        }
        SyncState::Stale {
            age_secs: now_unix.saturating_sub(pushed.at_unix),
        }
    }
}

/// Every proxy that has connected, by node id.
/// One proxy in `proxy-status`: what it was pushed and acknowledged, and how in sync it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyStatusRow {
    #[serde(flatten)]
    pub status: ProxyStatus,
    pub sync: SyncState,
}

pub type ProxyTable = Arc<Mutex<BTreeMap<String, ProxyStatus>>>;

/// The push service.
#[derive(Clone)]
pub struct PushService {
    world: watch::Receiver<Arc<World>>,
    issuer: Arc<Issuer>,
    proxies: ProxyTable,
    counter: Arc<AtomicU64>,
    /// Whole snapshots sent and not yet answered, across sessions (see [`WHOLE_IN_FLIGHT`]).
    whole: Arc<tokio::sync::Semaphore>,
}

impl PushService {
    pub fn new(
        world: watch::Receiver<Arc<World>>,
        issuer: Arc<Issuer>,
        proxies: ProxyTable,
    ) -> PushService {
        PushService {
            world,
            issuer,
            proxies,
            counter: Arc::new(AtomicU64::new(0)),
            whole: Arc::new(tokio::sync::Semaphore::new(WHOLE_IN_FLIGHT)),
        }
    }

    pub fn into_server(self) -> ConfigDiscoveryServer<PushService> {
        ConfigDiscoveryServer::new(self)
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[tonic::async_trait]
impl ConfigDiscovery for PushService {
    type StreamStream = ReceiverStream<Result<ConfigResponse, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<ConfigRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let claims = match self
            .issuer
            .tokens
            .verify(bearer(&request), SystemTime::now())
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(reason = %e, "config stream refused");
                return Err(Status::unauthenticated(e.to_string()));
            }
        };
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream closed before naming its node"))?;
        let node_id = first.node_id.clone();
        let node_ns = node_id.rsplit_once('.').map(|(_, ns)| ns);
        if node_ns != Some(claims.ns.as_str()) {
            let reason = format!(
                "node {node_id:?} is not in namespace {}, the namespace of the token ({}/{})",
                claims.ns, claims.ns, claims.sa
            );
            tracing::warn!(node = %node_id, %reason, "config stream refused");
            return Err(Status::permission_denied(reason));
        }
        let (tx, rx) = mpsc::channel(4);
        let session = self.next();
        tracing::info!(node = %node_id, version = %first.version_info, "proxy connected");
        let version = first.proxy_version.clone();
        tokio::spawn(
            self.clone()
                .session(node_id, claims, session, version, inbound, tx),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl PushService {
    fn update(&self, node_id: &str, session: u64, f: impl FnOnce(&mut ProxyStatus)) {
        let mut table = self.proxies.lock().unwrap();
        if let Some(s) = table.get_mut(node_id).filter(|s| s.session == session) {
            f(s);
        }
    }

    /// Makes `session` the one `proxy-status` reports for the node. A session whose
    /// identity is verified (`identity` set) always takes over; an unverified one (its pod
    /// is not registered yet) never displaces a connected session.
    fn claim(&self, node_id: &str, session: u64, proxy_version: &str, identity: Option<&str>) {
        let mut table = self.proxies.lock().unwrap();
        if let Some(existing) = table.get(node_id) {
            if existing.session == session {
                return;
            }
            if identity.is_none() && existing.connected {
                return;
            }
        }
        table.insert(
            node_id.to_string(),
            ProxyStatus {
                node_id: node_id.to_string(),
                identity: identity.map(str::to_string),
                proxy_version: proxy_version.to_string(),
                connected: true,
                since_unix: unix_now(),
                pushed: None,
                acked: None,
                nacked: None,
                waiting: None,
                evaluated: 0,
                session,
            },
        );
    }

    async fn session(
        self,
        node_id: String,
        claims: TokenClaims,
        session: u64,
        proxy_version: String,
        mut inbound: Streaming<ConfigRequest>,
        tx: mpsc::Sender<Result<ConfigResponse, Status>>,
    ) {
        let mut world_rx = self.world.clone();
        let mut last: Option<Sent> = None;
        // An incremental push the proxy refuses is followed by a whole one.
        let mut last_incremental: Option<String> = None;
        let mut in_flight: Option<InFlight> = None;
        let mut recompute = true;
        let end = loop {
            if recompute {
                recompute = false;
                let world = world_rx.borrow_and_update().clone();
                match self.prepare(&world, &node_id, &claims) {
                    Ok((config, scope)) => {
                        self.claim(
                            &node_id,
                            session,
                            &proxy_version,
                            Some(&config.node.identity),
                        );
                        self.update(&node_id, session, |s| s.waiting = None);
                        let permit = if last.is_none() {
                            match self.whole.clone().acquire_owned().await {
                                Ok(p) => Some(p),
                                Err(_) => break "the control plane is shutting down".to_string(),
                            }
                        } else {
                            None
                        };
                        let response = match next_response(&config, scope, &mut last, || {
                            self.next().to_string()
                        }) {
                            Ok(r) => r,
                            Err(e) => break format!("cannot encode the snapshot: {e}"),
                        };
                        if let Some(parts) = response {
                            let nonce = parts[0].nonce.clone();
                            last_incremental = parts[0].incremental.then(|| nonce.clone());
                            if let Some(p) = permit {
                                in_flight = Some(InFlight::new(nonce.clone(), p));
                            }
                            let mut gone = false;
                            for part in parts {
                                if tx.send(Ok(part)).await.is_err() {
                                    gone = true;
                                    break;
                                }
                            }
                            if gone {
                                break "the proxy went away".to_string();
                            }
                            tracing::debug!(node = %node_id, version = %config.version, "pushed");
                            let identity = config.node.identity.clone();
                            self.update(&node_id, session, |s| {
                                s.identity = Some(identity);
                                s.waiting = None;
                                s.pushed = Some(Pushed {
                                    version: config.version.clone(),
                                    nonce,
                                    at_unix: unix_now(),
                                });
                            });
                        }
                        let revision = world.revision;
                        self.update(&node_id, session, |s| s.evaluated = revision);
                    }
                    Err(Refuse::Wait(e)) => {
                        self.claim(&node_id, session, &proxy_version, None);
                        let text = e.to_string();
                        self.update(&node_id, session, |s| s.waiting = Some(text));
                    }
                    Err(Refuse::Deny(reason)) => {
                        tracing::warn!(node = %node_id, %reason, "config stream refused");
                        let _ = tx
                            .send(Err(Status::permission_denied(reason.clone())))
                            .await;
                        break reason;
                    }
                }
            }
            tokio::select! {
                changed = world_rx.changed() => {
                    if changed.is_err() {
                        break "the control plane is shutting down".to_string();
                    }
                    recompute = true;
                }
                message = inbound.message() => match message {
                    Ok(Some(answer)) => {
                        if in_flight.as_ref().is_some_and(|f| f.nonce == answer.response_nonce) {
                            if let Some(f) = in_flight.take() {
                                f.permit.lock().unwrap().take();
                            }
                        }
                        if !answer.error_detail.is_empty()
                            && last_incremental.as_deref() == Some(answer.response_nonce.as_str())
                        {
                            last = None;
                            recompute = true;
                        }
                        self.record(&node_id, session, answer)
                    }
                    Ok(None) => break "the proxy closed the stream".to_string(),
                    Err(e) => break format!("stream error: {}", e.message()),
                },
            }
        };
        tracing::info!(node = %node_id, reason = %end, "proxy disconnected");
        self.update(&node_id, session, |s| {
            s.connected = false;
            s.since_unix = unix_now();
        });
    }

    fn prepare(
        &self,
        world: &World,
        node_id: &str,
        claims: &TokenClaims,
    ) -> Result<(ProxyConfig, Arc<OutboundScope>), Refuse> {
        let (config, scope) = compile_parts(world, node_id).map_err(Refuse::Wait)?;
        let expected = format!(
            "spiffe://{}/ns/{}/sa/{}",
            world.options.trust_domain, claims.ns, claims.sa
        );
        if config.node.identity != expected {
            return Err(Refuse::Deny(format!(
                "node {node_id:?} runs as {}, but the token is for {}/{}",
                config.node.identity, claims.ns, claims.sa
            )));
        }
        Ok((config, scope))
    }

    fn record(&self, node_id: &str, session: u64, answer: ConfigRequest) {
        if answer.response_nonce.is_empty() {
            return;
        }
        let entry = Answer {
            version: answer.version_info.clone(),
            nonce: answer.response_nonce.clone(),
            at_unix: unix_now(),
            reason: (!answer.error_detail.is_empty()).then(|| answer.error_detail.clone()),
        };
        if let Some(reason) = &entry.reason {
            tracing::warn!(node = %node_id, nonce = %entry.nonce, %reason, "proxy refused the configuration (NACK)");
        } else {
            tracing::debug!(node = %node_id, version = %entry.version, "ACK");
        }
        self.update(node_id, session, |s| {
            if entry.reason.is_some() {
                s.nacked = Some(entry);
            } else {
                s.nacked = None;
                s.acked = Some(entry);
            }
        });
    }
}

/// What a session last sent: the configuration without its version and services, and the
/// services.
struct Sent {
    rest: ProxyConfig,
    services: Arc<OutboundScope>,
    nonce: String,
}

/// The response (in parts) that brings the proxy from `last` to `config` (without
/// services) with `scope`'s services, and `last` updated; `None` when nothing changed. The
/// first push of a session is whole; later ones carry only the services that changed.
fn next_response(
    config: &ProxyConfig,
    scope: Arc<OutboundScope>,
    last: &mut Option<Sent>,
    nonce: impl FnOnce() -> String,
) -> Result<Option<Vec<ConfigResponse>>, serde_json::Error> {
    let mut rest = config.clone();
    rest.version = String::new();
    let (upserts, removed) = match last.as_ref() {
        None => (scope.services.iter().collect(), vec![]),
        Some(sent) if Arc::ptr_eq(&sent.services, &scope) => (vec![], vec![]),
        Some(sent) => delta(&sent.services, &scope),
    };
    if let Some(sent) = last.as_mut() {
        if sent.rest == rest && upserts.is_empty() && removed.is_empty() {
            // The same content: hold the newer world's services, so older ones are freed.
            sent.services = scope;
            return Ok(None);
        }
    }
    let nonce = nonce();
    let parts = parts(&upserts);
    let count = parts.len();
    let responses = parts
        .into_iter()
        .enumerate()
        .map(|(i, services_json)| {
            Ok(ConfigResponse {
                version_info: config.version.clone(),
                nonce: nonce.clone(),
                config_json: if i == 0 {
                    serde_json::to_vec(config)?
                } else {
                    vec![]
                },
                services_json,
                incremental: last.is_some(),
                base_nonce: last.as_ref().map(|s| s.nonce.clone()).unwrap_or_default(),
                removed_services: if i == 0 { removed.clone() } else { vec![] },
                more: i + 1 < count,
            })
        })
        .collect::<Result<Vec<_>, serde_json::Error>>()?;
    *last = Some(Sent {
        rest,
        services: scope,
        nonce,
    });
    Ok(Some(responses))
}

/// The size a part's services stay under (a single larger service is a part of its own).
pub const PART_BYTES: usize = 4 * 1024;

/// `services` as JSON arrays of at most about [`PART_BYTES`] each; at least one.
fn parts(services: &[&Arc<CompiledService>]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut chunk: Vec<&[u8]> = Vec::new();
    let mut size = 0;
    for c in services {
        if !chunk.is_empty() && size + c.json.len() > PART_BYTES {
            parts.push(json_array(chunk.drain(..)));
            size = 0;
        }
        size += c.json.len() + 1;
        chunk.push(&c.json);
    }
    parts.push(json_array(chunk.into_iter()));
    parts
}

/// The services of `new` that `old` lacks or has otherwise, and the hosts `new` lacks
/// (both lists are in host order).
fn delta<'a>(
    old: &OutboundScope,
    new: &'a OutboundScope,
) -> (Vec<&'a Arc<CompiledService>>, Vec<String>) {
    let (mut upserts, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    let (a, b) = (&old.services, &new.services);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => match x.service.host.cmp(&y.service.host) {
                std::cmp::Ordering::Equal => {
                    if !Arc::ptr_eq(x, y) && (x.digest != y.digest || x.json.len() != y.json.len())
                    {
                        upserts.push(y);
                    }
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    removed.push(x.service.host.clone());
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    upserts.push(y);
                    j += 1;
                }
            },
            (Some(x), None) => {
                removed.push(x.service.host.clone());
                i += 1;
            }
            (None, Some(y)) => {
                upserts.push(y);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (upserts, removed)
}

/// A JSON array of already serialised values.
fn json_array<'a>(items: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    out
}

enum Refuse {
    /// Nothing to send yet; keep the stream and try again on the next change.
    Wait(CompileError),
    /// The stream must end.
    Deny(String),
}

/// How long after a change the world is recomputed: changes inside the window are
/// coalesced into one recompute (and one push per affected proxy).
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Whole snapshots in flight at once. When thousands of proxies connect together (a
/// control-plane restart, a cluster's cold start), each whole snapshot sits in its stream's
/// buffers until its proxy reads it; sending them a bounded number at a time keeps the
/// control plane's memory to that number of snapshots, not one per proxy.
pub const WHOLE_IN_FLIGHT: usize = 64;

/// How long a whole snapshot holds its place in flight without an answer.
const WHOLE_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// A whole snapshot's place in flight, given back by the proxy's answer, the end of the
/// stream, or [`WHOLE_ANSWER_WAIT`].
struct InFlight {
    nonce: String,
    permit: Arc<Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>,
}

impl InFlight {
    fn new(nonce: String, permit: tokio::sync::OwnedSemaphorePermit) -> InFlight {
        let permit = Arc::new(Mutex::new(Some(permit)));
        let expiry = Arc::downgrade(&permit);
        tokio::spawn(async move {
            tokio::time::sleep(WHOLE_ANSWER_WAIT).await;
            if let Some(p) = expiry.upgrade() {
                p.lock().unwrap().take();
            }
        });
        InFlight { nonce, permit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_contract::config::Service;

    fn compiled(host: &str, vip: u8) -> Arc<CompiledService> {
        Arc::new(CompiledService::new(Service {
            host: host.into(),
            vips: vec![std::net::IpAddr::from([10, 96, 0, vip])],
            ports: vec![],
        }))
    }

    fn scope(services: &[Arc<CompiledService>]) -> Arc<OutboundScope> {
        Arc::new(OutboundScope {
            services: services.to_vec(),
        })
    }

    fn config(version: &str) -> ProxyConfig {
        use tessera_contract::config::Node;
        ProxyConfig {
            version: version.into(),
            node: Node {
                id: "a.ns".into(),
                identity: "spiffe://cluster.local/ns/ns/sa/a".into(),
                trust_domain: "cluster.local".into(),
            },
            certificates: Default::default(),
            admin: Default::default(),
            runtime: Default::default(),
            listeners: Default::default(),
            services: vec![],
            inbound: Default::default(),
            authorization: Default::default(),
            control_plane: None,
            volumes: Default::default(),
            gateway: vec![],
            secrets: vec![],
        }
    }

    fn one(mut parts: Vec<ConfigResponse>) -> ConfigResponse {
        assert_eq!(parts.len(), 1);
        parts.remove(0)
    }

    fn hosts(json: &[u8]) -> Vec<String> {
        let services: Vec<Service> = serde_json::from_slice(json).unwrap();
        services.into_iter().map(|s| s.host).collect()
    }

    #[test]
    fn a_session_pushes_whole_then_only_what_changed() {
        let (a, b, c) = (compiled("a", 1), compiled("b", 2), compiled("c", 3));
        let mut last = None;
        let mut n = 0;
        let mut nonce = || {
            n += 1;
            n.to_string()
        };
        let first = one(next_response(
            &config("1"),
            scope(&[a.clone(), b.clone()]),
            &mut last,
            &mut nonce,
        )
        .unwrap()
        .unwrap());
        assert!(!first.incremental);
        assert_eq!(hosts(&first.services_json), ["a", "b"]);

        // A new world with the same content (new allocations): nothing is sent.
        let same = scope(&[compiled("a", 1), compiled("b", 2)]);
        assert!(next_response(&config("2"), same, &mut last, &mut nonce)
            .unwrap()
            .is_none());

        // b changes, c arrives, a goes.
        let r = one(next_response(
            &config("3"),
            scope(&[compiled("b", 9), c]),
            &mut last,
            &mut nonce,
        )
        .unwrap()
        .unwrap());
        assert!(r.incremental);
        assert_eq!(r.base_nonce, first.nonce);
        assert_eq!(hosts(&r.services_json), ["b", "c"]);
        assert_eq!(r.removed_services, ["a"]);

        // Only the rest of the configuration changes: no services, still incremental.
        let services = last.as_ref().unwrap().services.clone();
        let mut other = config("4");
        other.node.trust_domain = "example.org".into();
        let r2 = one(next_response(&other, services, &mut last, &mut nonce)
            .unwrap()
            .unwrap());
        assert!(r2.incremental);
        assert_eq!(r2.base_nonce, r.nonce);
        assert_eq!(hosts(&r2.services_json), Vec::<String>::new());
        assert!(r2.removed_services.is_empty());

        // After the proxy refuses an incremental push, the session forgets what it sent.
        last = None;
        let whole = one(next_response(&other, scope(&[b]), &mut last, &mut nonce)
            .unwrap()
            .unwrap());
        assert!(!whole.incremental);
        assert_eq!(hosts(&whole.services_json), ["b"]);
    }

    #[test]
    fn a_large_snapshot_goes_in_parts_that_add_up_to_it() {
        let services: Vec<Arc<CompiledService>> = (0..1000)
            .map(|i| compiled(&format!("svc-{i:04}"), (i % 250) as u8))
            .collect();
        let total: usize = services.iter().map(|c| c.json.len()).sum();
        assert!(total > 2 * PART_BYTES);
        let mut last = None;
        let parts = next_response(&config("1"), scope(&services), &mut last, || "7".into())
            .unwrap()
            .unwrap();
        assert!(parts.len() >= 2);
        let mut all = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.nonce, "7");
            assert_eq!(p.more, i + 1 < parts.len());
            assert_eq!(p.config_json.is_empty(), i > 0);
            assert!(p.services_json.len() <= PART_BYTES + 200);
            all.extend(hosts(&p.services_json));
        }
        let want: Vec<String> = services.iter().map(|c| c.service.host.clone()).collect();
        assert_eq!(all, want);
    }
}
