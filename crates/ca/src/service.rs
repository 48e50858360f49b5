//! The CA on gRPC: Istio's `IstioCertificateService/CreateCertificate`, authenticated by a
//! bootstrap token in `authorization: Bearer <token>`, served on a Unix socket (the state
//! dir's permissions guard it; the control plane adds TCP later).

use std::sync::Arc;
use std::time::SystemTime;

use tessera_contract::istio_ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use tessera_contract::istio_ca::{IstioCertificateRequest, IstioCertificateResponse};
use tessera_contract::transport::PeerLabel;
use tonic::{Request, Response, Status};

use crate::issuance::{Issuer, Refusal};

/// The gRPC service over an [`Issuer`].
#[derive(Debug, Clone)]
pub struct CaService {
    issuer: Arc<Issuer>,
}

impl CaService {
    pub fn new(issuer: Arc<Issuer>) -> CaService {
        CaService { issuer }
    }

    pub fn into_server(self) -> IstioCertificateServiceServer<CaService> {
        IstioCertificateServiceServer::new(self)
    }
}

/// The token in `authorization: Bearer <token>`, or "" when there is none.
pub fn bearer<T>(request: &Request<T>) -> &str {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

fn status(refusal: &Refusal) -> Status {
    let message = refusal.to_string();
    match refusal {
        Refusal::Token(_) => Status::unauthenticated(message),
        Refusal::TokenIdentity(_) | Refusal::OtherIdentity { .. } => {
            Status::permission_denied(message)
        }
        Refusal::BadCsr(_) | Refusal::BadValidity(_) => Status::invalid_argument(message),
        Refusal::Signing(_) => Status::internal(message),
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = request
            .extensions()
            .get::<PeerLabel>()
            .map(|p| p.0.clone())
            .unwrap_or_else(|| "unknown peer".into());
        let body = request.get_ref();
        match self.issuer.decide(
            bearer(&request),
            &body.csr,
            body.validity_duration,
            SystemTime::now(),
        ) {
            Ok(granted) => {
                tracing::info!(%peer, identity = %granted.identity, "certificate issued");
                Ok(Response::new(IstioCertificateResponse {
                    cert_chain: granted.cert_chain,
                }))
            }
            Err(refusal) => {
                tracing::warn!(%peer, reason = %refusal, "certificate request refused");
                Err(status(&refusal))
            }
        }
    }
}
