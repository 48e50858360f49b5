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
use tessera_model::resource::KindInfo;
use tessera_model::Kind;

/// The refusal of a kind nobody knows, as kubectl words it.
pub fn unknown_kind(word: &str) -> String {
    format!("error: the server doesn't have a resource type {word:?}")
}

/// The Kubernetes API path of a kind's collection (in `namespace`, or across them), or
/// of one object, at its preferred version, with a label selector.
fn collection_path(
    info: &KindInfo,
    namespace: Option<&str>,
    name: Option<&str>,
    selector: Option<&str>,
) -> String {
    use tessera_contract::urlencoded::percent_encode;
    let version = info.versions[0];
    let mut path = if info.group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{}/{version}", info.group)
    };
    if let Some(ns) = namespace {
        path.push_str(&format!("/namespaces/{}", percent_encode(ns)));
    }
    path.push_str(&format!("/{}", info.plural));
    if let Some(n) = name {
        path.push_str(&format!("/{}", percent_encode(n)));
    }
    if let Some(s) = selector.filter(|s| !s.is_empty()) {
        path.push_str(&format!("?labelSelector={}", percent_encode(s)));
    }
    path
}

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

    /// One request; the status and the whole body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
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
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "tessera")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
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
        Ok((status, data))
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Req>,
    ) -> Result<Resp, ClientError> {
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Protocol(e.to_string()))?,
            None => Vec::new(),
        };
        let (status, data) = self.send(method, path, bytes).await?;
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

    /// `get`: one object or a list, read from the Kubernetes API beside the operator API
    /// (the same list, selection and errors `kubectl get` has), without managedFields, as
    /// kubectl prints objects.
    pub async fn get(&self, r: &GetRequest) -> Result<GetResponse, ClientError> {
        let Some(kind) = Kind::from_cli(&r.kind) else {
            return Err(ClientError::Refused {
                status: 404,
                errors: vec![unknown_kind(&r.kind)],
                partial: None,
            });
        };
        let info = kind.info();
        let namespace = if r.all_namespaces || !info.namespaced {
            None
        } else {
            Some(r.namespace.clone().unwrap_or_else(|| "default".into()))
        };
        let path = collection_path(
            info,
            namespace.as_deref(),
            r.name.as_deref(),
            r.selector.as_deref(),
        );
        let (status, data) = self.send(Method::GET, &path, Vec::new()).await?;
        let body: serde_json::Value = serde_json::from_slice(&data).map_err(|_| {
            ClientError::Protocol(format!(
                "{status}: {}",
                String::from_utf8_lossy(&data).trim()
            ))
        })?;
        if status != StatusCode::OK {
            let error = format!(
                "Error from server ({}): {}",
                body["reason"].as_str().unwrap_or("Unknown"),
                body["message"].as_str().unwrap_or("")
            );
            return Err(ClientError::Refused {
                status: status.as_u16(),
                errors: vec![error],
                partial: None,
            });
        }
        let revision = body["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut items = match &r.name {
            Some(_) => vec![body],
            None => match body {
                serde_json::Value::Object(mut list) => match list.remove("items") {
                    Some(serde_json::Value::Array(items)) => items,
                    _ => vec![],
                },
                _ => vec![],
            },
        };
        for item in &mut items {
            if let Some(meta) = item["metadata"].as_object_mut() {
                meta.remove("managedFields");
            }
        }
        Ok(GetResponse {
            kind: info.name.to_string(),
            namespaced: info.namespaced,
            namespace,
            items,
            revision,
        })
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
