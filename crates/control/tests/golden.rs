//! Seed 002 ("automatic mutual TLS") compiled for every proxy, before and after each policy
//! step, with the legacy v1alpha1 Policy and again with v1beta1 PeerAuthentication. The
//! snapshots are golden files (rewrite with TESSERA_UPDATE_GOLDEN=1 and review the diff);
//! the decisions the seed's output depends on are asserted outright as well.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tessera_contract::config::{InboundMode, ProxyConfig, TlsMode};
use tessera_control::compile;
use tessera_control::testing::{seed_002_worlds, PolicyApi};

/// The proxies of the seed: every injected pod.
const PROXIES: &[&str] = &["httpbin-0.full", "sleep-0.full", "httpbin-0.partial"];

/// The TLS sleep.full uses toward each endpoint of httpbin.<ns>:8000, by workload.
fn client_tls(config: &ProxyConfig, ns: &str) -> BTreeMap<String, TlsMode> {
    let host = format!("httpbin.{ns}.svc.cluster.local");
    let svc = config.services.iter().find(|s| s.host == host).unwrap();
    let port = svc.ports.iter().find(|p| p.port == 8000).unwrap();
    port.endpoints
        .iter()
        .map(|e| (e.workload.clone().unwrap(), e.tls.mode))
        .collect()
}

fn inbound_80(config: &ProxyConfig) -> InboundMode {
    config
        .inbound
        .ports
        .iter()
        .find(|p| p.port == 80)
        .unwrap()
        .mode
}

fn check_golden(dir: &Path, name: &str, value: &Value, stale: &mut Vec<String>) {
    let path = dir.join(format!("{name}.json"));
    let fresh = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("TESSERA_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, fresh).unwrap();
    } else if std::fs::read_to_string(&path).ok().as_deref() != Some(fresh.as_str()) {
        stale.push(path.display().to_string());
    }
}

fn run_variant(api: PolicyApi) {
    let variant = api.dir();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/seed-002")
        .join(variant);
    let mut stale = Vec::new();
    use TlsMode::{Disable, IstioMutual};
    for (step, _, world) in seed_002_worlds(api) {
        let mut configs = BTreeMap::new();
        for node in PROXIES {
            let mut config = compile(&world, node).unwrap();
            config.version = "golden".into();
            check_golden(
                &golden.join(step.name),
                node,
                &serde_json::to_value(&config).unwrap(),
                &mut stale,
            );
            configs.insert(*node, config);
        }
        let sleep = &configs["sleep-0.full"];
        let full = client_tls(sleep, "full");
        let partial = client_tls(sleep, "partial");
        let legacy = client_tls(sleep, "legacy");
        let server = inbound_80(&configs["httpbin-0.full"]);
        let partial_server = inbound_80(&configs["httpbin-0.partial"]);
        // Per endpoint, whatever the step: plaintext to pods without a sidecar.
        assert_eq!(
            partial["httpbin-nosidecar-0.partial"], Disable,
            "{variant} {}",
            step.name
        );
        assert_eq!(
            legacy["httpbin-0.legacy"], Disable,
            "{variant} {}",
            step.name
        );
        assert_eq!(
            partial["httpbin-0.partial"], IstioMutual,
            "{variant} {}",
            step.name
        );
        // The policy is scoped to `full`.
        assert_eq!(
            partial_server,
            InboundMode::Permissive,
            "{variant} {}",
            step.name
        );
        let expected = match step.name {
            // 200 with the URI from full; legacy's plaintext accepted.
            "1-permissive" => (IstioMutual, InboundMode::Permissive),
            // full still 200 with URI (auto upgraded); legacy reset (exit 56).
            "2-strict" => (IstioMutual, InboundMode::Strict),
            // Clients switch to plaintext automatically: 200 without URI.
            "3-plaintext" => (Disable, InboundMode::Disable),
            // The DR forces mTLS against a plaintext-only server: 503.
            _ => (IstioMutual, InboundMode::Disable),
        };
        assert_eq!(
            (full["httpbin-0.full"], server),
            expected,
            "{variant} {}: sleep.full -> httpbin.full",
            step.name
        );
        let reason = &sleep
            .services
            .iter()
            .find(|s| s.host == "httpbin.full.svc.cluster.local")
            .unwrap()
            .ports[0]
            .endpoints[0]
            .tls
            .reason;
        if step.name == "4-dr-istio-mutual" {
            assert!(
                reason.contains("DestinationRule full/httpbin-full-mtls"),
                "{reason}"
            );
        } else {
            assert!(reason.starts_with("auto mTLS"), "{reason}");
        }
        // The identity the server will see in XFCC.
        assert_eq!(
            sleep.node.identity,
            "spiffe://cluster.local/ns/full/sa/sleep"
        );
    }
    assert!(
        stale.is_empty(),
        "golden files differ: {stale:?}; rerun with TESSERA_UPDATE_GOLDEN=1 and review the diff"
    );
}

#[test]
fn seed_002_with_the_legacy_policy_api() {
    run_variant(PolicyApi::V1alpha1);
}

#[test]
fn seed_002_with_peer_authentication() {
    run_variant(PolicyApi::V1beta1);
}

/// Seed 002 with the AuthorizationPolicy samples: httpbin.full gets its namespace's policy
/// and the root namespace's, other workloads only the root one, compiled into matchers.
#[test]
fn authorization_policies_compile_per_workload() {
    use tessera_contract::authz::{evaluate, Attributes, AuthzAction, HttpAttributes};
    use tessera_control::objects::Op;
    use tessera_control::testing::{
        at, load, seed_002_objects, seed_002_options, AUTHZ_DENY_LEGACY, AUTHZ_HTTPBIN_VIEWER,
    };
    let objects = seed_002_objects();
    let ops = [
        (AUTHZ_HTTPBIN_VIEWER, "full"),
        (AUTHZ_DENY_LEGACY, "istio-system"),
    ]
    .into_iter()
    .flat_map(|(text, ns)| load("authz.yaml", text, ns))
    .map(|resource| Op::Apply {
        origin: "authz.yaml".into(),
        resource,
    })
    .collect();
    let objects = objects.plan(ops, at(1)).unwrap().next;
    let world = tessera_control::world::World::build(&objects, &seed_002_options());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/authz");
    let mut stale = Vec::new();
    let mut compiled = BTreeMap::new();
    for node in PROXIES {
        let config = compile(&world, node).unwrap();
        check_golden(
            &golden,
            node,
            &serde_json::to_value(&config.authorization).unwrap(),
            &mut stale,
        );
        compiled.insert(*node, config.authorization);
    }
    assert!(
        stale.is_empty(),
        "golden files differ: {stale:?}; rerun with TESSERA_UPDATE_GOLDEN=1 and review the diff"
    );
    let names = |node: &str| -> Vec<(String, AuthzAction)> {
        compiled[node]
            .policies
            .iter()
            .map(|p| (p.name.clone(), p.action))
            .collect()
    };
    assert_eq!(
        names("httpbin-0.full"),
        [
            ("full/httpbin-viewer".to_string(), AuthzAction::Allow),
            ("istio-system/deny-legacy".to_string(), AuthzAction::Deny)
        ]
    );
    assert_eq!(
        names("httpbin-0.partial"),
        [("istio-system/deny-legacy".to_string(), AuthzAction::Deny)]
    );
    // The compiled policy decides as the sample says.
    let headers: Vec<(String, String)> = vec![];
    let full = &compiled["httpbin-0.full"];
    let verdict = |principal: Option<&str>, method: &str, path: &str| {
        let req = Attributes {
            source_ip: "10.0.0.5".parse().unwrap(),
            remote_ip: "10.0.0.5".parse().unwrap(),
            principal,
            destination_ip: "10.0.0.9".parse().unwrap(),
            destination_port: 80,
            sni: None,
            http: Some(HttpAttributes {
                method,
                path,
                host: "httpbin.full:8000",
                headers: &headers,
            }),
        };
        evaluate(full, &req).reason()
    };
    assert_eq!(
        verdict(Some("cluster.local/ns/full/sa/sleep"), "GET", "/headers"),
        "allowed by AuthorizationPolicy full/httpbin-viewer (rule 0)"
    );
    assert_eq!(
        verdict(Some("cluster.local/ns/full/sa/sleep"), "GET", "/ip"),
        "denied by AuthorizationPolicy full/httpbin-viewer: none of its ALLOW rules matched"
    );
    assert_eq!(
        verdict(Some("cluster.local/ns/legacy/sa/sleep"), "GET", "/headers"),
        "denied by AuthorizationPolicy istio-system/deny-legacy (rule 0)"
    );
    assert_eq!(
        verdict(None, "GET", "/headers"),
        "denied by AuthorizationPolicy istio-system/deny-legacy (rule 1)"
    );
}

/// Seed 002 with a Sidecar in `full` that imports its own namespace, httpbin.legacy on
/// 8000 only, and nothing else: full's proxies get only those services (the golden list),
/// other namespaces' proxies get every service, and `explain` says what happens to a
/// host that is not imported (passed through in plaintext, so STRICT refuses it).
#[test]
fn sidecar_egress_hosts_scope_the_services_a_proxy_gets() {
    use tessera_control::insight::reach::{explain, find_client, find_service};
    use tessera_control::objects::Op;
    use tessera_control::testing::{at, load, seed_002_objects, seed_002_options};
    let sidecar = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec:\n  egress:\n  - port: {number: 8000, protocol: HTTP, name: http}\n    hosts: [\"legacy/httpbin.legacy.svc.cluster.local\"]\n  - hosts: [\"./*\"]\n";
    let ops = load("sidecar.yaml", sidecar, "full")
        .into_iter()
        .map(|resource| Op::Apply {
            origin: "sidecar.yaml".into(),
            resource,
        })
        .collect();
    let objects = seed_002_objects().plan(ops, at(1)).unwrap().next;
    let world = tessera_control::world::World::build(&objects, &seed_002_options());
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sidecar-egress");
    let mut stale = Vec::new();
    let given = |node: &str| -> BTreeMap<String, Vec<u16>> {
        compile(&world, node)
            .unwrap()
            .services
            .iter()
            .map(|s| (s.host.clone(), s.ports.iter().map(|p| p.port).collect()))
            .collect()
    };
    for node in ["sleep-0.full", "sleep-0.legacy"] {
        check_golden(
            &golden,
            node,
            &serde_json::to_value(given(node)).unwrap(),
            &mut stale,
        );
    }
    assert!(
        stale.is_empty(),
        "golden files differ: {stale:?}; rerun with TESSERA_UPDATE_GOLDEN=1 and review the diff"
    );
    let full = given("sleep-0.full");
    assert_eq!(
        full.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "httpbin.full.svc.cluster.local",
            "httpbin.legacy.svc.cluster.local",
            "sleep.full.svc.cluster.local"
        ]
    );
    assert_eq!(full["httpbin.legacy.svc.cluster.local"], [8000]);
    assert!(given("sleep-0.legacy").contains_key("httpbin.partial.svc.cluster.local"));

    // httpbin.partial is not imported: the sidecar passes the app's plaintext through.
    let client = find_client(&world, "sleep-0.full").unwrap();
    let svc = find_service(&world, "httpbin.partial").unwrap();
    let reach = explain(&world, client, svc, Some(8000)).unwrap();
    let ep = &reach[0].endpoints[0];
    assert_eq!(
        ep.client_reason,
        "Sidecar full/default does not import httpbin.partial.svc.cluster.local:8000 (egress hosts); the sidecar passes the connection through as the app sent it"
    );
    assert_eq!(
        format!("{:?}", ep.client_sends),
        "AppPlaintext",
        "{:?}",
        ep.client_sends
    );
}
