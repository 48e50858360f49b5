//! Issuance over gRPC (Istio's CreateCertificate shape) on a Unix socket: what is granted,
//! what is refused and why, and what survives a restart.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, SanType};
use tessera_ca::client::{self, CaClient, ClientError, IdentityOptions, StaticToken, TokenFile};
use tessera_ca::testing::LocalCa;
use tessera_ca::token::TokenKey;
use tessera_ca::verify::PeerRole;
use tessera_ca::{KeyAlgorithm, SpiffeId};

const TD: &str = "cluster.local";

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa).unwrap()
}

fn options(identity: Option<SpiffeId>) -> IdentityOptions {
    IdentityOptions {
        trust_domain: TD.into(),
        identity,
        ttl: None,
        algorithm: KeyAlgorithm::EcdsaP256,
    }
}

fn csr_for(uri: Option<&str>) -> String {
    let key = KeyAlgorithm::EcdsaP256.generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(uri) = uri {
        params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    }
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn pem_of(ders: &[rustls_pki_types::CertificateDer<'_>]) -> String {
    ders.iter()
        .map(|d| tessera_ca::authority::to_pem(d))
        .collect()
}

#[tokio::test]
async fn a_token_gets_a_certificate_for_its_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::start(dir.path(), TD).unwrap();
    let token = StaticToken(ca.token("full", "sleep"));
    let mut opts = options(Some(id("full", "sleep")));
    opts.ttl = Some(Duration::from_secs(3600));
    let (creds, bundle) = ca.client().fetch(&token, &opts).await.unwrap();
    assert_eq!(creds.identity, id("full", "sleep"));
    let lifetime = creds.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(
        lifetime > Duration::from_secs(3500) && lifetime <= Duration::from_secs(3600),
        "{lifetime:?}"
    );
    // The bundle is the CA's root, and the chain verifies against it.
    assert_eq!(bundle.anchors().len(), 1, "a self-signed CA sends one root");
    bundle
        .verify(
            &creds.chain,
            PeerRole::Server,
            Some(&[id("full", "sleep")]),
            rustls_pki_types::UnixTime::now(),
        )
        .unwrap();
    // openssl agrees.
    std::fs::write(
        dir.path().join("root.pem"),
        ca.issuer.authority.root_bundle(),
    )
    .unwrap();
    std::fs::write(dir.path().join("leaf.pem"), pem_of(&creds.chain[..1])).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", "root.pem", "leaf.pem"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_csr_without_names_gets_the_token_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::start(dir.path(), TD).unwrap();
    let token = StaticToken(ca.token("legacy", "default"));
    let (creds, _) = ca.client().fetch(&token, &options(None)).await.unwrap();
    assert_eq!(creds.identity, id("legacy", "default"));
}

#[tokio::test]
async fn refusals_name_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::start(dir.path(), TD).unwrap();
    let client = ca.client();
    let good = ca.token("full", "sleep");
    let expired = ca.issuer.tokens.mint(
        "full",
        "sleep",
        Duration::from_secs(60),
        SystemTime::now() - Duration::from_secs(120),
    );
    let foreign = TokenKey::from_secret(&[9; 32]).mint(
        "full",
        "sleep",
        Duration::from_secs(60),
        SystemTime::now(),
    );
    let sleep_csr = csr_for(Some("spiffe://cluster.local/ns/full/sa/sleep"));
    let evil_csr = csr_for(Some("spiffe://evil.example/ns/full/sa/sleep"));
    let dns_csr = {
        let key = KeyAlgorithm::EcdsaP256.generate().unwrap();
        CertificateParams::new(vec!["httpbin.full".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
    };
    let rows: Vec<(&str, String, &str, i64, tonic::Code, &str)> = vec![
        (
            "token for another service account",
            ca.token("full", "httpbin"),
            &sleep_csr,
            0,
            tonic::Code::PermissionDenied,
            "the CSR asks for spiffe://cluster.local/ns/full/sa/sleep but the token authenticates spiffe://cluster.local/ns/full/sa/httpbin",
        ),
        (
            "expired token",
            expired,
            &sleep_csr,
            0,
            tonic::Code::Unauthenticated,
            "not authenticated: the token for full/sleep expired 60s ago",
        ),
        (
            "token of another mesh",
            foreign,
            &sleep_csr,
            0,
            tonic::Code::Unauthenticated,
            "not minted by this control plane",
        ),
        (
            "no token",
            String::new(),
            &sleep_csr,
            0,
            tonic::Code::Unauthenticated,
            "no bootstrap token",
        ),
        (
            "garbage CSR",
            good.clone(),
            "hello, CA",
            0,
            tonic::Code::InvalidArgument,
            "the CSR could not be read: it is not a PEM certificate request",
        ),
        (
            "CSR with a broken body",
            good.clone(),
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            0,
            tonic::Code::InvalidArgument,
            "the CSR could not be read",
        ),
        (
            "CSR for a foreign trust domain",
            good.clone(),
            &evil_csr,
            0,
            tonic::Code::PermissionDenied,
            "asks for spiffe://evil.example/ns/full/sa/sleep",
        ),
        (
            "CSR asking for a DNS name",
            good.clone(),
            &dns_csr,
            0,
            tonic::Code::PermissionDenied,
            "asks for DNS name httpbin.full",
        ),
        (
            "negative validity",
            good.clone(),
            &sleep_csr,
            -5,
            tonic::Code::InvalidArgument,
            "validity_duration must be 0",
        ),
    ];
    for (name, token, csr, validity, code, reason) in rows {
        // The client sends seconds; a raw request is needed for a negative value.
        let result = if validity < 0 {
            raw_request(&ca, csr, validity, &token).await
        } else {
            client.create_certificate(csr, None, &token).await
        };
        match result {
            Err(ClientError::Refused { code: got, message }) => {
                assert_eq!(got, code, "{name}: {message}");
                assert!(
                    message.contains(reason),
                    "{name}: {message:?} lacks {reason:?}"
                );
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
    // After all those refusals the CA still serves.
    let granted = client
        .create_certificate(&sleep_csr, None, &good)
        .await
        .unwrap();
    assert_eq!(granted.len(), 2, "leaf and root");
}

async fn raw_request(
    ca: &LocalCa,
    csr: &str,
    validity: i64,
    token: &str,
) -> Result<Vec<String>, ClientError> {
    use tessera_contract::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
    use tessera_contract::istio_ca::IstioCertificateRequest;
    let channel = tessera_contract::transport::unix_channel(ca.socket.clone(), None);
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: csr.into(),
        validity_duration: validity,
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    IstioCertificateServiceClient::new(channel)
        .create_certificate(request)
        .await
        .map(|r| r.into_inner().cert_chain)
        .map_err(|s| ClientError::Refused {
            code: s.code(),
            message: s.message().to_string(),
        })
}

#[tokio::test]
async fn the_ca_and_its_tokens_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (root_before, token, creds) = {
        let ca = LocalCa::start(dir.path(), TD).unwrap();
        let token = ca.token("full", "sleep");
        let (creds, _) = ca
            .client()
            .fetch(&StaticToken(token.clone()), &options(None))
            .await
            .unwrap();
        (ca.issuer.authority.root_bundle().to_string(), token, creds)
    };
    let ca = LocalCa::start(dir.path(), TD).unwrap();
    assert_eq!(ca.issuer.authority.root_bundle(), root_before, "same root");
    // A token minted before the restart still works, and old and new certificates chain to
    // the same bundle.
    let (fresh, bundle) = ca
        .client()
        .fetch(&StaticToken(token), &options(Some(id("full", "sleep"))))
        .await
        .unwrap();
    for c in [&creds, &fresh] {
        bundle
            .verify(
                &c.chain,
                PeerRole::Client,
                None,
                rustls_pki_types::UnixTime::now(),
            )
            .unwrap();
    }
}

#[tokio::test]
async fn a_token_file_is_read_for_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::start(dir.path(), TD).unwrap();
    let path = dir.path().join("token");
    let tokens = TokenFile(path.clone());
    match ca.client().fetch(&tokens, &options(None)).await {
        Err(ClientError::Token { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected a token file error, got {other:?}"),
    }
    std::fs::write(&path, format!("{}\n", ca.token("full", "sleep"))).unwrap();
    let (creds, _) = ca.client().fetch(&tokens, &options(None)).await.unwrap();
    assert_eq!(creds.identity, id("full", "sleep"));
}

#[tokio::test]
async fn an_absent_ca_is_unreachable_not_refusing() {
    let dir = tempfile::tempdir().unwrap();
    let client = CaClient::unix(dir.path().join("nobody.sock"));
    let err = client
        .fetch(&StaticToken("tbt1.x.y".into()), &options(None))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable(_)), "{err:?}");
    // start() reports the same instead of hanging.
    let err = client::start(client, Arc::new(StaticToken("t".into())), options(None))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("cannot reach the CA"), "{err}");
}
