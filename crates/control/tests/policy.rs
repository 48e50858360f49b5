//! From the seeds' YAML to effective mTLS modes, through the public API: loading, the
//! model conversions and the pure resolvers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tessera_control::policy::{
    effective_mode, effective_mode_with_legacy, to_peer_authn, LegacyPolicy, MeshOptions, MtlsMode,
    PeerAuthn, ServiceInfo, ServicePortInfo, TargetPort, Workload,
};
use tessera_model::kube::Service;
use tessera_model::meta::IntOrString;
use tessera_model::{load_paths, LoadOptions, Resource};

fn path(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn load(files: &[&str], ns: &str) -> Vec<Resource> {
    let opts = LoadOptions {
        namespace: Some(ns.into()),
        ..LoadOptions::default()
    };
    let paths: Vec<PathBuf> = files.iter().map(|f| path(f)).collect();
    let report = load_paths(&paths, &opts);
    assert!(!report.has_errors(), "{:#?}", report.problems);
    report.documents.into_iter().map(|d| d.resource).collect()
}

fn service_info(svc: &Service) -> ServiceInfo {
    ServiceInfo {
        namespace: svc.metadata.namespace.clone().unwrap(),
        name: svc.metadata.name.clone(),
        selector: svc.spec.selector.clone(),
        ports: svc
            .spec
            .ports
            .iter()
            .map(|p| ServicePortInfo {
                name: p.name.clone(),
                port: p.port as u32,
                target_port: match &p.target_port {
                    Some(IntOrString::Int(n)) => TargetPort::Number(*n as u32),
                    Some(IntOrString::String(s)) => TargetPort::Name(s.clone()),
                    None => TargetPort::Number(p.port as u32),
                },
            })
            .collect(),
        container_ports: BTreeMap::new(),
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Seed 002: the legacy Policy `httpbin` in `full`, with and without `peers`.
#[test]
fn seed_002_legacy_policy_steps() {
    let mesh = MeshOptions::from_sets([
        "values.global.mtls.auto=true",
        "values.global.mtls.enabled=false",
    ])
    .unwrap();
    let mut services = Vec::new();
    for ns in ["full", "partial", "legacy"] {
        for r in load(
            &[
                "../../samples/httpbin/httpbin.yaml",
                "../../samples/sleep/sleep.yaml",
            ],
            ns,
        ) {
            if let Resource::Service(s) = r {
                services.push(service_info(&s));
            }
        }
    }
    let httpbin = labels(&[("app", "httpbin"), ("version", "v1")]);
    let sleep = labels(&[("app", "sleep")]);
    for (fixture, httpbin_full) in [
        (
            "../model/tests/fixtures/seeds/002-policy-httpbin-strict.yaml",
            MtlsMode::Strict,
        ),
        (
            "../model/tests/fixtures/seeds/002-policy-httpbin-plaintext.yaml",
            MtlsMode::Disable,
        ),
    ] {
        let legacy: Vec<LegacyPolicy> = load(&[fixture], "full")
            .iter()
            .map(|r| match r {
                Resource::Policy(p) => LegacyPolicy::from_model(
                    &p.metadata,
                    &p.spec,
                    false,
                    &mesh.root_namespace,
                    (0, 0),
                ),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        let (converted, problems) = to_peer_authn(&legacy, &services);
        assert!(problems.is_empty(), "{problems:?}");
        let mode = |ns: &str, l: &BTreeMap<String, String>, port: u32| {
            effective_mode_with_legacy(
                &[],
                &converted,
                &mesh.root_namespace,
                mesh.default_peer_mode(),
                &Workload {
                    namespace: ns,
                    labels: l,
                },
                port,
            )
            .mode
        };
        // The Service port 8000 targets port 80: the policy applies where the pods receive.
        assert_eq!(mode("full", &httpbin, 80), httpbin_full, "{fixture}");
        assert_eq!(mode("full", &sleep, 80), MtlsMode::Permissive, "{fixture}");
        assert_eq!(
            mode("partial", &httpbin, 80),
            MtlsMode::Permissive,
            "{fixture}"
        );
        assert_eq!(
            mode("legacy", &httpbin, 80),
            MtlsMode::Permissive,
            "{fixture}"
        );
    }
}

/// Seed 003: namespace STRICT in `test`, and the httpbin workload's port 9080 DISABLE.
#[test]
fn seed_003_peer_authentications() {
    let docs = load(
        &[
            "../model/tests/fixtures/seeds/003-peerauthentication-default-strict.yaml",
            "../model/tests/fixtures/seeds/003-peerauthentication-port-disable.yaml",
        ],
        "test",
    );
    let policies: Vec<PeerAuthn> = docs
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            Resource::PeerAuthentication(pa) => PeerAuthn::from_model(pa, (0, i as u64)),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let httpbin = labels(&[("app", "httpbin"), ("version", "v1")]);
    let sleep = labels(&[("app", "sleep")]);
    let mode = |l: &BTreeMap<String, String>, port: u32| {
        effective_mode(
            &policies,
            "istio-system",
            MtlsMode::Permissive,
            &Workload {
                namespace: "test",
                labels: l,
            },
            port,
        )
    };
    assert_eq!(mode(&httpbin, 9080).mode, MtlsMode::Disable);
    assert_eq!(mode(&httpbin, 9081).mode, MtlsMode::Strict);
    assert_eq!(mode(&sleep, 80).mode, MtlsMode::Strict);
    let decided = mode(&httpbin, 9080).decided_by;
    assert_eq!(
        decided
            .first()
            .and_then(|d| d.source.as_ref())
            .map(|s| s.name.as_str()),
        Some("disable-peer-auth-for-external-mtls-port")
    );
}
