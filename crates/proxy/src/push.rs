//! Pushed mode: a stream to the control plane's `ConfigDiscovery` service. Each snapshot
//! is applied whole or refused whole (NACK with the reason, the last good one keeps
//! serving); when the control plane is away the proxy keeps serving and reconnects with
//! backoff.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tessera_ca::client::{TokenFile, TokenSource};
use tessera_contract::config::{ControlPlaneEndpoint, ProxyConfig};
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
    loop {
        let response: ConfigResponse = match responses.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
        };
        *delivered = true;
        let answer = apply(control, bootstrap, &response, status).await;
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

/// Applies one pushed snapshot; `Err` holds the NACK reason.
async fn apply<T: ConfigTarget>(
    control: &T,
    bootstrap: &ProxyConfig,
    response: &ConfigResponse,
    status: &SharedPushStatus,
) -> Result<(), String> {
    status.lock().unwrap().last_received_version = Some(response.version_info.clone());
    let version = &response.version_info;
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
        Ok(pushed) => Ok(pushed
            .resolved_through(&bootstrap.volumes)
            .with_local_sections_of(bootstrap)),
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
            s.applied += 1;
            s.last_acked_version = Some(response.version_info.clone());
            s.last_nack = None;
        }
        Err(e) => s.last_nack = Some(e.clone()),
    }
    result
}
