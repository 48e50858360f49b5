//! Every fixture is loaded through the public API and its problems compared with what a
//! person should see: the exact `file:line:column: severity: path: message` lines.

use std::path::{Path, PathBuf};

use tessera_model::{load_paths, LoadOptions, Problem, Resource};

fn fixtures(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
}

/// Problems printed with the file name only (no directory) and without hints.
fn lines(problems: &[Problem]) -> Vec<String> {
    problems
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.file = PathBuf::from(p.file.file_name().unwrap());
            p.hint = None;
            p.to_string()
        })
        .collect()
}

fn load(dir: &str, file: &str) -> tessera_model::LoadReport {
    load_paths(&[fixtures(dir).join(file)], &LoadOptions::default())
}

#[test]
fn every_seed_fixture_validates_except_the_broken_service() {
    let report = load_paths(&[fixtures("seeds")], &LoadOptions::default());
    let errors: Vec<&Problem> = report.errors().collect();
    assert_eq!(
        lines(&report.problems),
        [
            "003-httpbin-broken-service.yaml:22:5: error: spec.ports[1].selector: unknown field \"selector\" (allowed here: appProtocol, name, nodePort, port, protocol, targetPort)",
            "003-httpbin-broken-service.yaml:23:5: error: spec.ports[1].app: unknown field \"app\" (allowed here: appProtocol, name, nodePort, port, protocol, targetPort)",
        ]
    );
    assert!(errors[0]
        .hint
        .as_deref()
        .unwrap()
        .starts_with("did you mean `spec.selector`?"));
    assert!(errors[1]
        .hint
        .as_deref()
        .unwrap()
        .contains("move `selector` to `spec.selector`"));
    // The 13 documents of the 10 seed blocks all load, in file order.
    assert_eq!(report.documents.len(), 13);
    let kinds: Vec<String> = report
        .documents
        .iter()
        .map(|d| d.resource.kind().to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "DestinationRule",
            "Deployment",
            "Policy",
            "Policy",
            "ServiceAccount",
            "Service",
            "Deployment",
            "PeerAuthentication",
            "PeerAuthentication",
            "Sidecar",
            "Gateway",
            "Gateway",
            "VirtualService"
        ]
    );
}

#[test]
fn seed_fixtures_mean_what_the_seeds_say() {
    let report = load_paths(&[fixtures("seeds")], &LoadOptions::default());
    let find = |kind: &str, name: &str| -> &Resource {
        &report
            .documents
            .iter()
            .find(|d| d.resource.kind().to_string() == kind && d.resource.name() == name)
            .unwrap_or_else(|| panic!("{kind} {name}"))
            .resource
    };
    // Namespace defaulting: no namespace in the manifest means "default" (or -n).
    assert_eq!(find("Policy", "httpbin").namespace(), Some("default"));
    let Resource::Policy(strict) = &report
        .documents
        .iter()
        .find(|d| d.origin.file.ends_with("002-policy-httpbin-strict.yaml"))
        .unwrap()
        .resource
    else {
        panic!("a Policy")
    };
    // `peers: [{mtls: {}}]`: the mtls key is present (STRICT in the legacy API).
    assert_eq!(strict.spec.peers.len(), 1);
    assert!(strict.spec.peers[0].mtls.is_some());
    let Resource::PeerAuthentication(pa) = find(
        "PeerAuthentication",
        "disable-peer-auth-for-external-mtls-port",
    ) else {
        panic!()
    };
    assert_eq!(pa.metadata.namespace.as_deref(), Some("test"));
    let ports = pa.spec.port_level_mtls.as_ref().unwrap();
    assert_eq!(
        ports.get(&9080).map(|m| m.mode),
        Some(tessera_model::istio::MtlsModeSpec::Disable)
    );
    let Resource::Sidecar(sc) = find("Sidecar", "ingress-sidecar") else {
        panic!()
    };
    assert_eq!(sc.spec.ingress.len(), 2);
    assert_eq!(
        sc.spec.ingress[0]
            .tls
            .as_ref()
            .unwrap()
            .ca_certificates
            .as_deref(),
        Some("/etc/istio/tls-ca-certs/ca.crt")
    );
}

#[test]
fn namespace_flag_fills_in_and_conflicts_are_errors() {
    let opts = LoadOptions {
        namespace: Some("partial".into()),
        ..LoadOptions::default()
    };
    let report = load_paths(
        &[fixtures("seeds").join("002-httpbin-nosidecar-deployment.yaml")],
        &opts,
    );
    assert!(report.problems.is_empty());
    assert_eq!(report.documents[0].resource.namespace(), Some("partial"));
    let opts = LoadOptions {
        namespace: Some("other".into()),
        ..LoadOptions::default()
    };
    let report = load_paths(&[fixtures("seeds").join("003-sidecar-ingress.yaml")], &opts);
    assert_eq!(
        lines(&report.problems),
        ["003-sidecar-ingress.yaml:5:3: error: metadata.namespace: the namespace from the provided object \"test\" does not match the namespace \"other\" given with -n"]
    );
}

#[test]
fn samples_validate() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples");
    let report = load_paths(&[samples], &LoadOptions::default());
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    let names: Vec<String> = report.documents.iter().map(|d| d.resource.key()).collect();
    assert_eq!(
        names,
        [
            "AuthorizationPolicy/istio-system/deny-legacy",
            "AuthorizationPolicy/full/httpbin-viewer",
            "Deployment/default/httpbin-nosidecar",
            "ServiceAccount/default/httpbin",
            "Service/default/httpbin",
            "Deployment/default/httpbin",
            "Service/default/my-nginx",
            "ReplicationController/default/my-nginx",
            "DestinationRule/default/httpbin-full-mtls",
            "PeerAuthentication/default/httpbin",
            "PeerAuthentication/default/httpbin",
            "Policy/default/httpbin",
            "Policy/default/httpbin",
            "ServiceAccount/default/sleep",
            "Service/default/sleep",
            "Deployment/default/sleep",
        ]
    );
}

#[test]
fn user_volume_annotations_of_seed_003_are_checked() {
    let text =
        std::fs::read_to_string(fixtures("fragments").join("003-userVolume-annotations.yaml"))
            .unwrap();
    let annotations: std::collections::BTreeMap<String, String> =
        serde_norway::from_str(&text).unwrap();
    let findings = tessera_model::validate::check_sidecar_annotations(
        &annotations,
        &tessera_model::FieldPath::parse("metadata.annotations"),
    );
    assert!(findings.is_empty(), "{findings:?}");
    let mut broken = annotations.clone();
    broken.insert(
        "sidecar.istio.io/userVolumeMount".into(),
        r#"{"tls-secret":{"mountPath":"etc/istio"},"other":{"mountPath":"/x"}}"#.into(),
    );
    let messages: Vec<String> = tessera_model::validate::check_sidecar_annotations(
        &broken,
        &tessera_model::FieldPath::parse("metadata.annotations"),
    )
    .iter()
    .map(|f| format!("{}: {}", f.path, f.message))
    .collect();
    assert_eq!(
        messages,
        [
            "metadata.annotations[sidecar.istio.io/userVolumeMount][other]: mounts \"other\", which sidecar.istio.io/userVolume does not define",
            "metadata.annotations[sidecar.istio.io/userVolumeMount][tls-secret].mountPath: \"etc/istio\" must be an absolute path",
        ]
    );
}

/// One invalid fixture per check: the exact lines a person sees.
#[test]
fn each_invalid_fixture_fails_with_its_message_and_location() {
    let cases: &[(&str, &[&str])] = &[
        ("syntax-error.yaml", &["syntax-error.yaml:7:3: error: YAML syntax error: invalid indentation in flow construct"]),
        ("unknown-field.yaml", &["unknown-field.yaml:8:5: error: spec.mtls.mdoe: unknown field \"mdoe\" (allowed here: mode)"]),
        ("wrong-type.yaml", &[
            "wrong-type.yaml:6:13: error: spec.replicas: expected an integer, found a string",
            "wrong-type.yaml:14:18: error: spec.template.metadata.labels[version]: expected a string, found an integer",
        ]),
        ("bad-enum.yaml", &["bad-enum.yaml:8:11: error: spec.mtls.mode: \"STRCT\" is not one of UNSET, DISABLE, PERMISSIVE, STRICT"]),
        ("missing-required.yaml", &[
            "missing-required.yaml:3:1: error: metadata.name: missing required field \"name\"",
            "missing-required.yaml:5:1: error: spec.host: missing required field \"host\"",
        ]),
        ("pa-port-level-without-selector.yaml", &["pa-port-level-without-selector.yaml:9:3: error: spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS"]),
        ("pa-selector-in-root-namespace.yaml", &["pa-selector-in-root-namespace.yaml:7:3: warning: spec.selector: a PeerAuthentication with a selector in the root namespace istio-system is ignored"]),
        ("gateway-simple-without-certificates.yaml", &[
            "gateway-simple-without-certificates.yaml:13:5: error: spec.servers[0].tls.serverCertificate: SIMPLE TLS requires a server certificate",
            "gateway-simple-without-certificates.yaml:13:5: error: spec.servers[0].tls.privateKey: SIMPLE TLS requires a private key",
        ]),
        ("gateway-mutual-without-ca.yaml", &["gateway-mutual-without-ca.yaml:13:5: error: spec.servers[0].tls.caCertificates: MUTUAL TLS requires a client CA bundle"]),
        ("virtualservice-route-without-destination.yaml", &["virtualservice-route-without-destination.yaml:15:7: error: spec.http[0].route[0].destination: destination is required"]),
        ("virtualservice-bad-timeout.yaml", &["virtualservice-bad-timeout.yaml:12:5: error: spec.http[0].timeout: \"99999999999999999999999h\" is not a duration; use e.g. 10s, 1.5s, 500ms, 1m"]),
        ("virtualservice-weights-zero.yaml", &["virtualservice-weights-zero.yaml:9:5: error: spec.http[0].route: total destination weight = 0"]),
        ("sidecar-tls-on-http-port.yaml", &["sidecar-tls-on-http-port.yaml:16:5: error: spec.ingress[0].tls: server cannot have TLS settings for non HTTPS/TLS ports (port 9080 is HTTP)"]),
        ("unknown-kind-and-version.yaml", &[
            "unknown-kind-and-version.yaml:1:13: error: apiVersion: PeerAuthentication is not served as \"networking.istio.io/v1alpha3\"; use one of security.istio.io/v1, security.istio.io/v1beta1",
            "unknown-kind-and-version.yaml:7:7: error: kind: unknown kind \"VirtualServce\"; accepted kinds: Namespace, ServiceAccount, Secret, ConfigMap, Service, Deployment, ReplicationController, Pod, PeerAuthentication, AuthorizationPolicy, Policy, MeshPolicy, DestinationRule, Sidecar, Gateway, VirtualService",
        ]),
        ("legacy-policy-naming.yaml", &[
            "legacy-policy-naming.yaml:4:3: error: metadata.name: authentication policy with no target rules  must be named \"default\", found \"foo\"",
            "legacy-policy-naming.yaml:13:3: error: metadata.name: cluster-scoped authentication policy name must be \"default\", found \"mesh\"",
            "legacy-policy-naming.yaml:15:3: error: spec.targets: cluster-scoped authentication policy must not have targets",
        ]),
        ("several-problems.yaml", &[
            "several-problems.yaml:6:3: error: spec.type: \"ClusterIp\" is not one of ClusterIP, NodePort, LoadBalancer, ExternalName",
            "several-problems.yaml:11:5: error: spec.ports[1].port: port 70000 must be in range 1..65535",
            "several-problems.yaml:11:5: error: spec.ports[1].name: a Service with several ports must name each one",
            "several-problems.yaml:12:5: error: spec.ports[1].nmae: unknown field \"nmae\" (allowed here: appProtocol, name, nodePort, port, protocol, targetPort)",
            "several-problems.yaml:20:11: error: spec.mtls.mode: \"strict\" is not one of UNSET, DISABLE, PERMISSIVE, STRICT",
            "several-problems.yaml:21:3: error: spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS",
            "several-problems.yaml:22:5: error: spec.portLevelMtls[0]: port 0 must be in range 1..65535",
        ]),
    ];
    let dir = fixtures("invalid");
    let mut covered: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    covered.sort();
    let mut listed: Vec<String> = cases.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(covered, listed, "every invalid fixture has expectations");
    for (file, expected) in cases {
        let report = load("invalid", file);
        assert_eq!(&lines(&report.problems), expected, "{file}");
        let warnings_only = expected.iter().all(|l| l.contains(": warning: "));
        assert_eq!(report.has_errors(), !warnings_only, "{file}");
    }
}
