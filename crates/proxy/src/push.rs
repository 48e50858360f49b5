//! Pushed mode: a stream to the control plane's `ConfigDiscovery` service. Each snapshot
//! is applied whole or refused whole (NACK with the reason, the last good one keeps
//! serving); when the control plane is away the proxy keeps serving and reconnects with
//! backoff.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use std::collections::BTreeMap;
use tessera_ca::client::{TokenFile, TokenSource};

use tessera_contract::config::{ControlPlaneEndpoint, ProxyConfig, Service};
use tessera_contract::push::config_discovery_client::ConfigDiscoveryClient;
use tessera_contract::push::{ConfigRequest, ConfigResponse};
use tessera_contract::transport::unix_channel;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// What `/config_dump` shows of the link to the control plane.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushStatus {
    pub connected: bool,
    /// Why the last connection attempt or stream ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_received_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_acked_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_nack: Option<String>,
    /// Snapshots applied since start; 0 means the proxy still runs its bootstrap.
    pub applied: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_change_unix: Option<u64>,
}

pub type SharedPushStatus = Arc<Mutex<PushStatus>>;

/// The proxy pushed mode feeds.
pub trait ConfigTarget: Send + Sync + 'static {
    /// The version of the snapshot in force.
    fn current_version(&self) -> String;
    /// Applies a snapshot whole, or refuses it whole (recording and logging why).
    fn apply(&self, config: ProxyConfig) -> impl Future<Output = Result<(), String>> + Send;
    /// Records a snapshot refused before it could be applied.
    fn refused(&self, reason: &str);
}

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs forever: connect, follow the stream, reconnect after a pause that doubles up to
/// [`BACKOFF_MAX`] and resets once a stream delivered a snapshot.
pub async fn run<T: ConfigTarget>(
    control: Arc<T>,
    bootstrap: ProxyConfig,
    plane: ControlPlaneEndpoint,
    status: SharedPushStatus,
) {
    let client = ConfigDiscoveryClient::new(unix_channel(plane.socket.clone(), None));
    let tokens = TokenFile(plane.token_file.clone());
    let mut backoff = BACKOFF_START;
    loop {
        let mut delivered = false;
        let outcome = follow(
            control.as_ref(),
            &bootstrap,
            client.clone(),
            &tokens,
            &status,
            &mut delivered,
        )
        .await;
        let reason = match outcome {
            Ok(()) => "the control plane closed the stream".to_string(),
            Err(e) => e,
        };
        {
            let mut s = status.lock().unwrap();
            s.connected = false;
            s.last_error = Some(reason.clone());
        }
        if delivered {
            backoff = BACKOFF_START;
        }
        tracing::warn!(
            socket = %plane.socket.display(),
            reason = %reason,
            retry_in_ms = backoff.as_millis() as u64,
            "control plane stream ended; serving the last good configuration"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One stream, until it ends. `delivered` is set once a snapshot arrived, however the
/// stream ends afterwards (a control plane that restarts breaks it with an error), so that
/// a proxy reconnects quickly after every restart, not after a backoff grown by earlier ones.
async fn follow<T: ConfigTarget>(
    control: &T,
    bootstrap: &ProxyConfig,
    mut client: ConfigDiscoveryClient<tonic::transport::Channel>,
    tokens: &TokenFile,
    status: &SharedPushStatus,
    delivered: &mut bool,
) -> Result<(), String> {
    let token = tokens.token().map_err(|e| e.to_string())?;
    let node_id = bootstrap.node.id.clone();
    let (tx, rx) = mpsc::channel::<ConfigRequest>(4);
    let first = ConfigRequest {
        node_id: node_id.clone(),
        version_info: control.current_version(),
        proxy_version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    tx.send(first).await.map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| "the token file holds characters a header cannot carry".to_string())?;
    request.metadata_mut().insert("authorization", value);
    let mut responses = client
        .stream(request)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    {
        let mut s = status.lock().unwrap();
        s.connected = true;
        s.last_error = None;
    }
    tracing::info!(node = %node_id, "connected to the control plane");
    // The services of the snapshot this proxy runs, which incremental pushes change.
    let mut base: Option<Base> = None;
    // The parts of a snapshot that are still coming.
    let mut parts: Vec<ConfigResponse> = Vec::new();
    loop {
        let response: ConfigResponse = match responses.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
        };
        *delivered = true;
        if response.more {
            parts.push(response);
            continue;
        }
        let response = match join_parts(std::mem::take(&mut parts), response) {
            Ok(r) => r,
            Err((nonce, e)) => {
                control.refused(&e);
                tracing::warn!(reason = %e, "pushed configuration refused; keeping the last good one");
                status.lock().unwrap().last_nack = Some(e.clone());
                let reply = ConfigRequest {
                    node_id: node_id.clone(),
                    version_info: control.current_version(),
                    response_nonce: nonce,
                    error_detail: e,
                    proxy_version: String::new(),
                };
                if tx.send(reply).await.is_err() {
                    return Ok(());
                }
                continue;
            }
        };
        let answer = apply(control, bootstrap, &response, &mut base, status).await;
        let reply = ConfigRequest {
            node_id: node_id.clone(),
            version_info: control.current_version(),
            response_nonce: response.nonce.clone(),
            error_detail: answer.err().unwrap_or_default(),
            proxy_version: String::new(),
        };
        if tx.send(reply).await.is_err() {
            return Ok(());
        }
    }
}

/// The most a snapshot's parts may add up to.
const MAX_SNAPSHOT_BYTES: usize = 256 << 20;

/// One response from a snapshot's parts (`earlier`, then `last`): the first part's
/// configuration, every part's services. Parts of another snapshot, or too many bytes, are
/// refused (the last part's nonce, and why).
fn join_parts(
    earlier: Vec<ConfigResponse>,
    mut last: ConfigResponse,
) -> Result<ConfigResponse, (String, String)> {
    if earlier.is_empty() {
        return Ok(last);
    }
    if let Some(p) = earlier.iter().find(|p| p.nonce != last.nonce) {
        let e = format!(
            "version {}: a snapshot's parts came with two nonces ({:?} and {:?})",
            last.version_info, p.nonce, last.nonce
        );
        return Err((last.nonce, e));
    }
    let size: usize = earlier
        .iter()
        .chain([&last])
        .map(|p| p.services_json.len() + p.config_json.len())
        .sum();
    if size > MAX_SNAPSHOT_BYTES {
        let e = format!(
            "version {}: the snapshot's parts add up to {size} bytes, more than the {MAX_SNAPSHOT_BYTES} this proxy takes",
            last.version_info
        );
        return Err((last.nonce, e));
    }
    let mut services = vec![b'['];
    for p in earlier.iter().chain([&last]) {
        let inner = p
            .services_json
            .strip_prefix(b"[")
            .and_then(|b| b.strip_suffix(b"]"))
            .unwrap_or(&p.services_json);
        if inner.is_empty() {
            continue;
        }
        if services.len() > 1 {
            services.push(b',');
        }
        services.extend_from_slice(inner);
    }
    services.push(b']');
    let mut first = earlier.into_iter().next().expect("not empty");
    first.services_json = services;
    first.more = false;
    last.services_json.clear();
    Ok(first)
}

/// The services of the last snapshot applied, by host, and the nonce it came with.
struct Base {
    nonce: String,
    services: BTreeMap<String, Service>,
}

/// The services of a pushed snapshot: the whole list, or `base`'s changed as the response
/// says. `listed` are the services inside `config_json` (used when `services_json` is
/// empty).
fn assemble(
    response: &ConfigResponse,
    listed: Vec<Service>,
    base: Option<&Base>,
) -> Result<BTreeMap<String, Service>, String> {
    let listed = if response.services_json.is_empty() {
        listed
    } else {
        serde_json::from_slice::<Vec<Service>>(&response.services_json)
            .map_err(|e| format!("the services do not parse: {e}"))?
    };
    let mut services = if response.incremental {
        match base {
            Some(b) if b.nonce == response.base_nonce => b.services.clone(),
            other => {
                return Err(format!(
                    "the services are changes to snapshot {:?}, but this proxy runs {:?}",
                    response.base_nonce,
                    other.map_or("none", |b| b.nonce.as_str())
                ))
            }
        }
    } else {
        BTreeMap::new()
    };
    if response.incremental {
        for host in &response.removed_services {
            services.remove(host);
        }
    }
    for s in listed {
        services.insert(s.host.clone(), s);
    }
    Ok(services)
}

/// Applies one pushed snapshot; `Err` holds the NACK reason.
async fn apply<T: ConfigTarget>(
    control: &T,
    bootstrap: &ProxyConfig,
    response: &ConfigResponse,
    base: &mut Option<Base>,
    status: &SharedPushStatus,
) -> Result<(), String> {
    status.lock().unwrap().last_received_version = Some(response.version_info.clone());
    let version = &response.version_info;
    let mut services = None;
    let checked = match serde_json::from_slice::<ProxyConfig>(&response.config_json) {
        Err(e) => Err(format!(
            "version {version}: the snapshot does not parse: {e}"
        )),
        Ok(pushed) if pushed.node.id != bootstrap.node.id => Err(format!(
            "version {version}: the snapshot is for node {:?}, this proxy is {:?}",
            pushed.node.id, bootstrap.node.id
        )),
        Ok(pushed) if pushed.node.identity != bootstrap.node.identity => Err(format!(
            "version {version}: the snapshot gives identity {}, this proxy's certificate is for {}",
            pushed.node.identity, bootstrap.node.identity
        )),
        Ok(mut pushed) => {
            match assemble(
                response,
                std::mem::take(&mut pushed.services),
                base.as_ref(),
            ) {
                Ok(all) => {
                    pushed.services = all.values().cloned().collect();
                    services = Some(all);
                    Ok(pushed
                        .resolved_through(&bootstrap.volumes)
                        .with_local_sections_of(bootstrap))
                }
                Err(e) => Err(format!("version {version}: {e}")),
            }
        }
    };
    let result = match checked {
        // `update` records and logs its own refusals.
        Ok(config) => control
            .apply(config)
            .await
            .map_err(|e| format!("version {version}: {e}")),
        Err(e) => {
            control.refused(&e);
            tracing::warn!(reason = %e, "pushed configuration refused; keeping the last good one");
            Err(e)
        }
    };
    let mut s = status.lock().unwrap();
    s.last_change_unix = Some(unix_now());
    match &result {
        Ok(()) => {
            if let Some(services) = services {
                *base = Some(Base {
                    nonce: response.nonce.clone(),
                    services,
                });
            }
            s.applied += 1;
            s.last_acked_version = Some(response.version_info.clone());
            s.last_nack = None;
        }
        Err(e) => s.last_nack = Some(e.clone()),
    }
    result
}

#[cfg(test)]
mod assemble_tests {
    use super::*;

    fn service(host: &str, port: u16) -> Service {
        serde_json::from_value(serde_json::json!({
            "host": host,
            "ports": [{"port": port, "protocol": "HTTP"}]
        }))
        .unwrap()
    }

    fn response(
        incremental: bool,
        base: &str,
        services: &[Service],
        removed: &[&str],
    ) -> ConfigResponse {
        ConfigResponse {
            version_info: "2".into(),
            nonce: "n2".into(),
            config_json: vec![],
            services_json: serde_json::to_vec(services).unwrap(),
            incremental,
            base_nonce: base.into(),
            removed_services: removed.iter().map(|h| h.to_string()).collect(),
            more: false,
        }
    }

    fn ports(m: &BTreeMap<String, Service>) -> Vec<(String, u16)> {
        m.values()
            .map(|s| (s.host.clone(), s.ports[0].port))
            .collect()
    }

    #[test]
    fn parts_join_into_one_snapshot() {
        let part = |services: &[Service], more: bool, nonce: &str| ConfigResponse {
            more,
            nonce: nonce.into(),
            config_json: if more { b"{}".to_vec() } else { vec![] },
            ..response(false, "", services, &[])
        };
        let joined = join_parts(
            vec![
                part(&[service("a", 1), service("b", 2)], true, "n"),
                part(&[], true, "n"),
            ],
            part(&[service("c", 3)], false, "n"),
        )
        .unwrap();
        assert_eq!(joined.config_json, b"{}");
        let got = assemble(&joined, vec![], None).unwrap();
        assert_eq!(
            ports(&got),
            [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]
        );
        let (_, e) = join_parts(
            vec![part(&[], true, "n1")],
            part(&[service("c", 3)], false, "n2"),
        )
        .unwrap_err();
        assert!(e.contains("two nonces"), "{e}");
    }

    #[test]
    fn incremental_services_change_the_base_they_name_and_no_other() {
        let base = Base {
            nonce: "n1".into(),
            services: [("a", 80), ("b", 80)]
                .into_iter()
                .map(|(h, p)| (h.to_string(), service(h, p)))
                .collect(),
        };
        let changes = [service("b", 8080), service("c", 80)];
        let got = assemble(&response(true, "n1", &changes, &["a"]), vec![], Some(&base)).unwrap();
        assert_eq!(ports(&got), [("b".into(), 8080), ("c".into(), 80)]);

        // A whole push replaces everything, whatever the base.
        let got = assemble(&response(false, "", &changes, &[]), vec![], Some(&base)).unwrap();
        assert_eq!(ports(&got), [("b".into(), 8080), ("c".into(), 80)]);

        // Changes to a snapshot this proxy does not run are refused (NACK, then a whole push).
        let e = assemble(&response(true, "n0", &changes, &[]), vec![], Some(&base)).unwrap_err();
        assert!(e.contains("\"n0\"") && e.contains("\"n1\""), "{e}");
        assert!(assemble(&response(true, "n1", &changes, &[]), vec![], None).is_err());
    }
}
