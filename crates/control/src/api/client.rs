//! The operator API's client (what the CLI uses): one HTTP/1.1 request per connection to
//! `<state dir>/api.sock`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

use super::types::*;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no control plane answers at {socket} ({reason}); start one with `tessera up` or `tessera control`, or pass the mesh's --state-dir")]
    NotRunning { socket: PathBuf, reason: String },
    #[error("the control plane closed the connection: {0}")]
    Transport(String),
    /// The request was refused; nothing changed (except where `partial` says so).
    #[error("{}", errors.join("\n"))]
    Refused {
        status: u16,
        errors: Vec<String>,
        /// For a partly successful delete: what was done.
        partial: Option<ChangeResponse>,
    },
    #[error("unexpected answer from the control plane: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    pub fn new(state_dir: &Path) -> ApiClient {
        ApiClient {
            socket: state_dir.join(API_SOCKET),
        }
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Req>,
    ) -> Result<Resp, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|e| ClientError::NotRunning {
                    socket: self.socket.clone(),
                    reason: e.to_string(),
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        tokio::spawn(conn);
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Protocol(e.to_string()))?,
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "tessera")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let status = resp.status();
        let data = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?
            .to_bytes();
        if status == StatusCode::OK {
            return serde_json::from_slice(&data).map_err(|e| ClientError::Protocol(e.to_string()));
        }
        #[derive(serde::Deserialize)]
        struct Refusal {
            errors: Vec<String>,
            #[serde(default)]
            outcomes: Option<Vec<crate::objects::Outcome>>,
            #[serde(default)]
            revision: Option<u64>,
        }
        let r: Refusal = serde_json::from_slice(&data).map_err(|_| {
            ClientError::Protocol(format!(
                "{status}: {}",
                String::from_utf8_lossy(&data).trim()
            ))
        })?;
        Err(ClientError::Refused {
            status: status.as_u16(),
            errors: r.errors,
            partial: r.outcomes.map(|outcomes| ChangeResponse {
                outcomes,
                warnings: vec![],
                revision: r.revision.unwrap_or(0),
            }),
        })
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call::<(), _>(Method::GET, "/healthz", None).await
    }

    pub async fn apply(&self, r: &ApplyRequest) -> Result<ChangeResponse, ClientError> {
        self.call(Method::POST, "/apply", Some(r)).await
    }

    pub async fn delete(&self, r: &DeleteRequest) -> Result<ChangeResponse, ClientError> {
        self.call(Method::POST, "/delete", Some(r)).await
    }

    pub async fn label(&self, r: &LabelRequest) -> Result<ChangeResponse, ClientError> {
        self.call(Method::POST, "/label", Some(r)).await
    }

    pub async fn status(&self, r: &StatusRequest) -> Result<ChangeResponse, ClientError> {
        self.call(Method::POST, "/status", Some(r)).await
    }

    pub async fn get(&self, r: &GetRequest) -> Result<GetResponse, ClientError> {
        self.call(Method::POST, "/get", Some(r)).await
    }

    pub async fn token(&self, r: &TokenRequest) -> Result<TokenResponse, ClientError> {
        self.call(Method::POST, "/token", Some(r)).await
    }

    pub async fn config(
        &self,
        node_id: &str,
    ) -> Result<tessera_contract::config::ProxyConfig, ClientError> {
        self.call(
            Method::POST,
            "/config",
            Some(&crate::api::ConfigRequest {
                node_id: node_id.to_string(),
            }),
        )
        .await
    }

    pub async fn explain(
        &self,
        r: &ExplainRequest,
    ) -> Result<Vec<crate::insight::PortReach>, ClientError> {
        self.call(Method::POST, "/explain", Some(r)).await
    }

    pub async fn reachability(
        &self,
        r: &ReachabilityRequest,
    ) -> Result<ReachabilityResponse, ClientError> {
        self.call(Method::POST, "/reachability", Some(r)).await
    }

    pub async fn analyze(&self, r: &AnalyzeRequest) -> Result<AnalyzeResponse, ClientError> {
        self.call(Method::POST, "/analyze", Some(r)).await
    }

    pub async fn proxies(&self) -> Result<Vec<ProxyStatusRow>, ClientError> {
        self.call::<(), _>(Method::GET, "/proxies", None).await
    }
}
