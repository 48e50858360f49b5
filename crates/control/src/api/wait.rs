//! `wait --for`: polls the pods a request names until each meets a condition (or is
//! gone), as `kubectl wait` does. The condition is read through the model's typed pod
//! status.

use std::time::{Duration, Instant};

use tessera_model::kube::PodStatus;

use super::client::{ApiClient, ClientError};
use super::types::GetRequest;

/// What to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// A pod condition by type (`Ready`, `Initialized`, ...), compared ignoring case.
    Condition(String),
    /// The named pods are gone.
    Delete,
}

/// Which pods: the named ones, else those matching `selector`, else every pod of the
/// namespace.
#[derive(Debug, Clone)]
pub struct PodWait {
    pub namespace: String,
    pub names: Vec<String>,
    pub selector: Option<String>,
    pub until: WaitFor,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// These pods meet the condition.
    Met(Vec<String>),
    /// These pods are gone.
    Deleted(Vec<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("Error from server (NotFound): pods {0:?} not found")]
    NotFound(String),
    #[error("error: no matching resources found")]
    NoMatch,
    /// The pods that did not meet the condition in time.
    #[error("{}", .0.iter().map(|p| format!("error: timed out waiting for the condition on pods/{p}")).collect::<Vec<_>>().join("\n"))]
    TimedOut(Vec<String>),
    #[error("error: {0}")]
    Client(#[from] ClientError),
}

const POLL: Duration = Duration::from_millis(200);

impl ApiClient {
    /// Polls until every chosen pod meets `w.until` or `w.timeout` passes. Named pods must
    /// exist; `--all` and `-l` wait for pods still being made (a controller creates them
    /// right after apply).
    pub async fn wait_for_pods(&self, w: &PodWait) -> Result<Waited, WaitError> {
        let deadline = Instant::now() + w.timeout;
        let mut first = true;
        loop {
            let items = self
                .get(&GetRequest {
                    kind: "pods".into(),
                    name: None,
                    namespace: Some(w.namespace.clone()),
                    all_namespaces: false,
                    selector: w.selector.clone(),
                })
                .await?
                .items;
            let name_of =
                |p: &serde_json::Value| p["metadata"]["name"].as_str().unwrap_or("").to_string();
            let chosen: Vec<&serde_json::Value> = items
                .iter()
                .filter(|p| w.names.is_empty() || w.names.contains(&name_of(p)))
                .collect();
            let waiting_for_pods = chosen.is_empty() && w.until != WaitFor::Delete;
            if waiting_for_pods && first && !w.names.is_empty() {
                return Err(WaitError::NotFound(w.names[0].clone()));
            }
            first = false;
            if !waiting_for_pods {
                let pending: Vec<String> = match &w.until {
                    WaitFor::Delete => w
                        .names
                        .iter()
                        .filter(|n| items.iter().any(|p| name_of(p) == **n))
                        .cloned()
                        .collect(),
                    WaitFor::Condition(c) => chosen
                        .iter()
                        .filter(|p| status_of(p).condition(c) != Some(true))
                        .map(|p| name_of(p))
                        .collect(),
                };
                let met: Vec<String> = chosen.iter().map(|p| name_of(p)).collect();
                match (&w.until, pending.is_empty()) {
                    (WaitFor::Condition(_), true) => return Ok(Waited::Met(met)),
                    (WaitFor::Delete, true) => {
                        let mut gone = met;
                        gone.extend(w.names.iter().cloned());
                        return Ok(Waited::Deleted(gone));
                    }
                    (_, false) if Instant::now() >= deadline => {
                        return Err(WaitError::TimedOut(pending))
                    }
                    _ => {}
                }
            } else if Instant::now() >= deadline {
                return Err(WaitError::NoMatch);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn status_of(pod: &serde_json::Value) -> PodStatus {
    serde_json::from_value(pod["status"].clone()).unwrap_or_default()
}
