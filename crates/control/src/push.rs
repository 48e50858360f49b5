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

use crate::compile::{compile, CompileError};
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
        let mut last_sent: Option<ProxyConfig> = None;
        let mut recompute = true;
        let end = loop {
            if recompute {
                recompute = false;
                let world = world_rx.borrow_and_update().clone();
                match self.prepare(&world, &node_id, &claims) {
                    Ok(config) => {
                        self.claim(
                            &node_id,
                            session,
                            &proxy_version,
                            Some(&config.node.identity),
                        );
                        self.update(&node_id, session, |s| s.waiting = None);
                        let mut comparable = config.clone();
                        comparable.version = String::new();
                        if last_sent.as_ref() != Some(&comparable) {
                            let nonce = self.next().to_string();
                            let body = match serde_json::to_vec(&config) {
                                Ok(b) => b,
                                Err(e) => break format!("cannot encode the snapshot: {e}"),
                            };
                            let response = ConfigResponse {
                                version_info: config.version.clone(),
                                nonce: nonce.clone(),
                                config_json: body,
                            };
                            if tx.send(Ok(response)).await.is_err() {
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
                            last_sent = Some(comparable);
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
                    Ok(Some(answer)) => self.record(&node_id, session, answer),
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
    ) -> Result<ProxyConfig, Refuse> {
        let config = compile(world, node_id).map_err(Refuse::Wait)?;
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
        Ok(config)
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

enum Refuse {
    /// Nothing to send yet; keep the stream and try again on the next change.
    Wait(CompileError),
    /// The stream must end.
    Deny(String),
}

/// How long after a change the world is recomputed: changes inside the window are
/// coalesced into one recompute (and one push per affected proxy).
pub const DEBOUNCE: Duration = Duration::from_millis(100);
