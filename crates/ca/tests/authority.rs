//! The CA on disk and the certificates it issues, checked with x509-parser and openssl.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tessera_ca::authority::{CA_KEY, ROOT_CERT};
use tessera_ca::{Authority, KeyAlgorithm, SpiffeId};
use x509_parser::prelude::*;

fn sleep_id() -> SpiffeId {
    SpiffeId::new("cluster.local", "full", "sleep").unwrap()
}

/// `openssl verify -CAfile root -untrusted chain leaf`: the check an operator would run.
fn openssl_verify(root: &Path, chain: &tessera_ca::IssuedChain, scratch: &Path) {
    let leaf = scratch.join("leaf.pem");
    let untrusted = scratch.join("chain.pem");
    std::fs::write(&leaf, &chain.leaf_pem).unwrap();
    std::fs::write(&untrusted, chain.chain_pem()).unwrap();
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(&untrusted)
        .arg(&leaf)
        .output()
        .expect("openssl is installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with(": OK\n"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn leaf_der(pem: &str) -> Vec<u8> {
    ::pem::parse(pem).unwrap().into_contents()
}

#[test]
fn init_creates_a_root_once_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, created) = Authority::init(dir.path()).unwrap();
    assert!(created);
    let mode = std::fs::metadata(dir.path().join(CA_KEY))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the CA key is private");
    let root = ca.root_bundle().to_string();
    let (again, created) = Authority::init(dir.path()).unwrap();
    assert!(!created, "a second init loads the existing CA");
    assert_eq!(again.root_bundle(), root, "a restart keeps the same root");
    // The root: ECDSA P-256, a CA, about 10 years.
    let der = leaf_der(&root);
    let (_, cert) = parse_x509_certificate(&der).unwrap();
    assert!(cert.is_ca());
    let years = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
        / (365 * 24 * 3600);
    assert_eq!(years, 10);
}

#[test]
fn workload_certificates_look_like_istios() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = Authority::init(dir.path()).unwrap();
    let (_key, chain) = ca
        .issue(&sleep_id(), None, KeyAlgorithm::EcdsaP256)
        .unwrap();
    assert!(
        chain.intermediates_pem.is_empty(),
        "a self-signed root has no intermediates"
    );
    let der = leaf_der(&chain.leaf_pem);
    let (_, cert) = parse_x509_certificate(&der).unwrap();
    // As Istio issues them: empty subject, one critical SAN holding only the SPIFFE URI,
    // 24 h plus 2 min of clock skew.
    assert_eq!(cert.subject().iter().count(), 0);
    let san = cert
        .extensions()
        .iter()
        .find(|e| e.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME)
        .unwrap();
    assert!(san.critical);
    let names = match san.parsed_extension() {
        ParsedExtension::SubjectAlternativeName(s) => s.general_names.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(names.len(), 1);
    assert!(matches!(
        names[0],
        GeneralName::URI("spiffe://cluster.local/ns/full/sa/sleep")
    ));
    let secs = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(secs, 24 * 3600 + 120);
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    // Random serials below 2^128.
    let (_k, other) = ca
        .issue(&sleep_id(), None, KeyAlgorithm::EcdsaP256)
        .unwrap();
    let der2 = leaf_der(&other.leaf_pem);
    let (_, cert2) = parse_x509_certificate(&der2).unwrap();
    assert_ne!(cert.raw_serial(), cert2.raw_serial());
    assert!(cert.raw_serial().len() <= 16);
}

#[test]
fn ttl_defaults_and_caps() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = Authority::init(dir.path()).unwrap();
    let lifetime = |ttl: Option<Duration>| {
        let (_k, chain) = ca.issue(&sleep_id(), ttl, KeyAlgorithm::EcdsaP256).unwrap();
        let der = leaf_der(&chain.leaf_pem);
        let (_, c) = parse_x509_certificate(&der).unwrap();
        c.validity().not_after.timestamp() - c.validity().not_before.timestamp() - 120
    };
    assert_eq!(lifetime(Some(Duration::from_secs(5))), 5);
    assert_eq!(lifetime(Some(Duration::ZERO)), 24 * 3600);
    // Validity is capped: 200 days requested, 90 days issued.
    assert_eq!(
        lifetime(Some(Duration::from_secs(200 * 24 * 3600))),
        90 * 24 * 3600
    );
}

#[test]
fn a_csr_asking_for_another_identity_gets_the_authenticated_one() {
    // The CA signs the identity the caller authenticated as, whatever the CSR asks.
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = Authority::init(dir.path()).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://cluster.local/ns/istio-system/sa/admin"
            .try_into()
            .unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let chain = ca.sign_csr(&csr, &sleep_id(), None).unwrap();
    let der = leaf_der(&chain.leaf_pem);
    let (_, cert) = parse_x509_certificate(&der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names.len(), 1);
    assert!(matches!(
        san.general_names[0],
        GeneralName::URI("spiffe://cluster.local/ns/full/sa/sleep")
    ));
    // A garbage CSR is refused with a reason.
    let err = ca.sign_csr("not a csr", &sleep_id(), None).unwrap_err();
    assert!(
        err.to_string().starts_with("the CSR could not be read"),
        "{err}"
    );
}

#[test]
fn openssl_verifies_what_we_issue() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = Authority::init(&dir.path().join("ca")).unwrap();
    for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
        let (_key, chain) = ca.issue(&sleep_id(), None, alg).unwrap();
        openssl_verify(&dir.path().join("ca").join(ROOT_CERT), &chain, dir.path());
    }
}

#[test]
fn a_missing_ca_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = Authority::load(&dir.path().join("nothing")).unwrap_err();
    assert!(
        err.to_string().contains("run `tessera ca init` first"),
        "{err}"
    );
}

/// Makes an openssl root and intermediate in Istio's `cacerts` layout, as an operator would.
fn openssl_plugin_ca(dir: &Path) {
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "[v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign, digitalSignature\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "root-key.pem",
        "-out",
        "root-cert.pem",
        "-days",
        "3650",
        "-subj",
        "/O=Example/CN=Example Root CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.csr",
        "-subj",
        "/O=Example/CN=Example Intermediate CA",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "ca.csr",
        "-CA",
        "root-cert.pem",
        "-CAkey",
        "root-key.pem",
        "-CAcreateserial",
        "-out",
        "ca-cert.pem",
        "-days",
        "1825",
        "-extfile",
        "ext.cnf",
        "-extensions",
        "v3_ca",
    ]);
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap(),
        std::fs::read_to_string(dir.join("root-cert.pem")).unwrap()
    );
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();
}

#[test]
fn a_plugged_in_openssl_intermediate_issues_verifiable_chains() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = tmp.path().join("cacerts");
    std::fs::create_dir_all(&plugin).unwrap();
    openssl_plugin_ca(&plugin);
    let state = tmp.path().join("ca");
    let (ca, installed) = Authority::init_plugin(&state, &plugin).unwrap();
    assert!(installed);
    let mode = std::fs::metadata(state.join(CA_KEY))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (_key, chain) = ca
        .issue(&sleep_id(), None, KeyAlgorithm::EcdsaP256)
        .unwrap();
    assert_eq!(chain.intermediates_pem.len(), 1, "leaf + the intermediate");
    openssl_verify(&plugin.join("root-cert.pem"), &chain, tmp.path());
    // Again with the same files: loaded, not replaced; a restart keeps the root.
    let (again, installed) = Authority::init_plugin(&state, &plugin).unwrap();
    assert!(!installed);
    assert_eq!(again.root_bundle(), ca.root_bundle());
    assert_eq!(
        Authority::init(&state).unwrap().0.root_bundle(),
        ca.root_bundle()
    );
}

#[test]
fn a_broken_plugin_ca_is_refused_and_nothing_is_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = tmp.path().join("cacerts");
    std::fs::create_dir_all(&plugin).unwrap();
    openssl_plugin_ca(&plugin);
    // The root's key in place of the intermediate's: the key does not match ca-cert.pem.
    std::fs::copy(plugin.join("root-key.pem"), plugin.join("ca-key.pem")).unwrap();
    let state = tmp.path().join("ca");
    let err = Authority::init_plugin(&state, &plugin)
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("ca-key.pem: is not the key of ca-cert.pem"),
        "{err}"
    );
    assert!(!state.exists(), "nothing half-installed");
    // A different CA is not silently replaced.
    let other = tmp.path().join("other");
    Authority::init(&other).unwrap();
    openssl_plugin_ca(&plugin);
    let err = Authority::init_plugin(&other, &plugin)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds a different CA"), "{err}");
}
