//! Seed 002 ("automatic mutual TLS") compiled for every proxy, before and after each policy
//! step, with the legacy v1alpha1 Policy and again with v1beta1 PeerAuthentication. The
//! snapshots are golden files (rewrite with TESSERA_UPDATE_GOLDEN=1 and review the diff);
//! the decisions the seed's output depends on are asserted outright as well.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tessera_api::policy::MeshOptions;
use tessera_api::{LoadOptions, Resource};
use tessera_control::objects::{Objects, Op};
use tessera_control::{compile, World};
use tessera_proto::config::{InboundMode, ProxyConfig, TlsMode};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples")
}

fn load(name: &str, text: &str, ns: &str) -> Vec<Resource> {
    let report = tessera_api::load_str(
        Path::new(name),
        text,
        &LoadOptions {
            namespace: Some(ns.into()),
            ..LoadOptions::default()
        },
    );
    assert!(!report.has_errors(), "{name}: {:?}", report.problems);
    report.documents.into_iter().map(|d| d.resource).collect()
}

/// What `kube-inject` and the runtime make of a Deployment: one pod, with a sidecar and
/// the tlsMode label when injected, running at `ip`.
fn pod_of(deployment: &Resource, inject: bool, ip: &str) -> Resource {
    let Resource::Deployment(d) = deployment else {
        panic!("not a Deployment")
    };
    let mut labels: BTreeMap<String, String> = d.spec.template.metadata.labels.clone();
    let mut containers = serde_json::to_value(&d.spec.template.spec.containers).unwrap();
    if inject {
        labels.insert("security.istio.io/tlsMode".into(), "istio".into());
        containers
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "istio-proxy", "image": "tessera"}));
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{}-0", d.metadata.name),
            "namespace": d.metadata.namespace,
            "labels": labels,
        },
        "spec": {
            "serviceAccountName": d.spec.template.spec.service_account_name,
            "containers": containers,
        },
        "status": {"phase": "Running", "podIP": ip},
    });
    load(
        "pod.json",
        &pod.to_string(),
        d.metadata.namespace.as_deref().unwrap(),
    )
    .pop()
    .unwrap()
}

const NOSIDECAR: &str = include_str!("../../../samples/httpbin/httpbin-nosidecar.yaml");

/// The seed's setup: namespaces full (all injected), partial (httpbin injected plus
/// httpbin-nosidecar), legacy (nothing injected).
fn setup_ops() -> Vec<Op> {
    let httpbin = std::fs::read_to_string(samples().join("httpbin/httpbin.yaml")).unwrap();
    let sleep = std::fs::read_to_string(samples().join("sleep/sleep.yaml")).unwrap();
    let mut resources = Vec::new();
    let mut ip = 10;
    let mut next_ip = || {
        ip += 1;
        format!("10.244.0.{ip}")
    };
    for (ns, files, inject) in [
        ("full", vec![&httpbin, &sleep], true),
        ("partial", vec![&httpbin], true),
        ("legacy", vec![&httpbin, &sleep], false),
    ] {
        resources.extend(load(
            "ns.yaml",
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
            ns,
        ));
        for text in files {
            for r in load("sample.yaml", text, ns) {
                if matches!(r, Resource::Deployment(_)) {
                    resources.push(pod_of(&r, inject, &next_ip()));
                }
                resources.push(r);
            }
        }
        if ns == "partial" {
            for r in load("nosidecar.yaml", NOSIDECAR, ns) {
                resources.push(pod_of(&r, false, &next_ip()));
                resources.push(r);
            }
        }
    }
    resources
        .into_iter()
        .map(|resource| Op::Apply {
            origin: "seed-002".into(),
            resource,
        })
        .collect()
}

fn at(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
}

const LEGACY_STRICT: &str = r#"
apiVersion: "authentication.istio.io/v1alpha1"
kind: "Policy"
metadata:
  name: "httpbin"
spec:
  targets:
  - name: httpbin
  peers:
  - mtls: {}
"#;

const LEGACY_PLAINTEXT: &str = r#"
apiVersion: "authentication.istio.io/v1alpha1"
kind: "Policy"
metadata:
  name: "httpbin"
spec:
  targets:
  - name: httpbin
"#;

const BETA_STRICT: &str = r#"
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: httpbin
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: STRICT
"#;

const BETA_PLAINTEXT: &str = r#"
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: httpbin
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: DISABLE
"#;

const DR_ISTIO_MUTUAL: &str = r#"
apiVersion: "networking.istio.io/v1alpha3"
kind: "DestinationRule"
metadata:
  name: "httpbin-full-mtls"
spec:
  host: httpbin.full.svc.cluster.local
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
"#;

/// The proxies of the seed: every injected pod.
const PROXIES: &[&str] = &["httpbin-0.full", "sleep-0.full", "httpbin-0.partial"];

struct Step {
    name: &'static str,
    apply: Option<&'static str>,
}

fn steps(strict: &'static str, plaintext: &'static str) -> [Step; 4] {
    [
        Step {
            name: "1-permissive",
            apply: None,
        },
        Step {
            name: "2-strict",
            apply: Some(strict),
        },
        Step {
            name: "3-plaintext",
            apply: Some(plaintext),
        },
        Step {
            name: "4-dr-istio-mutual",
            apply: Some(DR_ISTIO_MUTUAL),
        },
    ]
}

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

fn run_variant(variant: &str, strict: &'static str, plaintext: &'static str) {
    let options = MeshOptions::from_sets([
        "values.global.mtls.auto=true",
        "values.global.mtls.enabled=false",
    ])
    .unwrap();
    let mut objects = Objects::default();
    let mut ops = objects.bootstrap_ops();
    ops.extend(setup_ops());
    objects = objects
        .plan(ops, at(0))
        .expect("the seed's setup applies")
        .next;
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/seed-002")
        .join(variant);
    let mut stale = Vec::new();
    use TlsMode::{Disable, IstioMutual};
    for (i, step) in steps(strict, plaintext).iter().enumerate() {
        if let Some(text) = step.apply {
            let ops = load("step.yaml", text, "full")
                .into_iter()
                .map(|resource| Op::Apply {
                    origin: step.name.into(),
                    resource,
                })
                .collect();
            objects = objects.plan(ops, at(i as i64 + 1)).unwrap().next;
        }
        let world = World::build(&objects, &options);
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
    run_variant("v1alpha1", LEGACY_STRICT, LEGACY_PLAINTEXT);
}

#[test]
fn seed_002_with_peer_authentication() {
    run_variant("v1beta1", BETA_STRICT, BETA_PLAINTEXT);
}
