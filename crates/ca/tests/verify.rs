//! Verification refusals, one per reason, and the trust-domain hole that webpki alone
//! leaves open.

use std::time::Duration;

use rustls_pki_types::{pem::PemObject, CertificateDer, UnixTime};
use tessera_ca::verify::{PeerRole, TrustBundle, VerifyError};
use tessera_ca::{Authority, KeyAlgorithm, SpiffeId};

fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn id(td: &str, ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(td, ns, sa).unwrap()
}

fn now() -> UnixTime {
    UnixTime::now()
}

struct Mesh {
    _dir: tempfile::TempDir,
    ca: Authority,
    bundle: TrustBundle,
}

fn mesh() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = Authority::init(dir.path()).unwrap();
    let bundle = TrustBundle::from_pem(ca.root_bundle(), "cluster.local").unwrap();
    Mesh {
        _dir: dir,
        ca,
        bundle,
    }
}

fn chain_for(
    ca: &Authority,
    who: &SpiffeId,
    ttl: Option<Duration>,
) -> Vec<CertificateDer<'static>> {
    let (_k, chain) = ca.issue(who, ttl, KeyAlgorithm::EcdsaP256).unwrap();
    ders(&chain.chain_pem())
}

#[test]
fn a_mesh_certificate_verifies_on_both_sides() {
    let m = mesh();
    let sleep = id("cluster.local", "full", "sleep");
    let chain = chain_for(&m.ca, &sleep, None);
    for role in [PeerRole::Client, PeerRole::Server] {
        assert_eq!(m.bundle.verify(&chain, role, None, now()).unwrap(), sleep);
    }
    assert_eq!(
        m.bundle
            .verify(
                &chain,
                PeerRole::Server,
                Some(std::slice::from_ref(&sleep)),
                now()
            )
            .unwrap(),
        sleep
    );
}

#[test]
fn a_foreign_trust_domain_signed_by_our_ca_is_refused() {
    let m = mesh();
    let evil = id("evil.example", "full", "sleep");
    let chain = chain_for(&m.ca, &evil, None);
    // webpki alone accepts it: the chain is fine ...
    let ee = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
    assert!(ee
        .verify_for_usage(
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .all,
            m.bundle.anchors(),
            &chain[1..],
            now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .is_ok());
    // ... the mesh verifier does not.
    assert_eq!(
        m.bundle.verify(&chain, PeerRole::Client, None, now()),
        Err(VerifyError::ForeignTrustDomain {
            found: "spiffe://evil.example/ns/full/sa/sleep".into(),
            expected: "cluster.local".into()
        })
    );
}

#[test]
fn each_refusal_names_its_reason() {
    let m = mesh();
    let sleep = id("cluster.local", "full", "sleep");
    let httpbin = id("cluster.local", "full", "httpbin");

    // Not the identity the caller expected (secure naming).
    let chain = chain_for(&m.ca, &sleep, None);
    let err = m
        .bundle
        .verify(&chain, PeerRole::Server, Some(&[httpbin]), now())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "identity spiffe://cluster.local/ns/full/sa/sleep is not the one expected (spiffe://cluster.local/ns/full/sa/httpbin)"
    );

    // Expired leaf: verify one second-lived cert well after it ended.
    let short = chain_for(&m.ca, &sleep, Some(Duration::from_secs(1)));
    let later = UnixTime::since_unix_epoch(Duration::from_secs(now().as_secs() + 3600));
    let err = m
        .bundle
        .verify(&short, PeerRole::Client, None, later)
        .unwrap_err();
    assert_eq!(
        err,
        VerifyError::Chain("the certificate has expired".into())
    );

    // Unknown CA: a certificate from another mesh's CA.
    let other = mesh();
    let foreign = chain_for(&other.ca, &sleep, None);
    let err = m
        .bundle
        .verify(&foreign, PeerRole::Client, None, now())
        .unwrap_err();
    assert_eq!(err, VerifyError::Chain("issued by an unknown CA".into()));

    // No certificate at all.
    assert_eq!(
        m.bundle.verify(&[], PeerRole::Client, None, now()),
        Err(VerifyError::NoCertificate)
    );
}

#[test]
fn a_bundle_with_two_roots_trusts_both() {
    let a = mesh();
    let b = mesh();
    let both = format!("{}{}", a.ca.root_bundle(), b.ca.root_bundle());
    let bundle = TrustBundle::from_pem(&both, "cluster.local").unwrap();
    let sleep = id("cluster.local", "full", "sleep");
    for ca in [&a.ca, &b.ca] {
        let chain = chain_for(ca, &sleep, None);
        assert!(bundle.verify(&chain, PeerRole::Client, None, now()).is_ok());
    }
    assert!(matches!(
        TrustBundle::from_pem("no pem", "cluster.local"),
        Err(VerifyError::BadBundle(_))
    ));
}
