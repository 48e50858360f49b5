//! Test helpers kept in the library so every crate's tests share one fixture: seed 002's
//! topology ("automatic mutual TLS") as the store holds it after `kube-inject` and the
//! runtime have run, and its policy steps (whose manifests `tessera demo` applies too).

use std::collections::BTreeMap;
use std::path::Path;

use crate::policy::MeshOptions;
use serde_json::json;
use tessera_model::names::{PROXY_CONTAINER, TLS_MODE_LABEL};
use tessera_model::{LoadOptions, Resource};

use crate::objects::{Objects, Op};
use crate::world::World;

const HTTPBIN: &str = include_str!("../../../samples/httpbin/httpbin.yaml");
const SLEEP: &str = include_str!("../../../samples/sleep/sleep.yaml");
const NOSIDECAR: &str = include_str!("../../../samples/httpbin/httpbin-nosidecar.yaml");

/// The seed's install: `--set values.global.mtls.auto=true --set values.global.mtls.enabled=false`.
pub fn seed_002_options() -> MeshOptions {
    MeshOptions::from_sets([
        "values.global.mtls.auto=true",
        "values.global.mtls.enabled=false",
    ])
    .expect("the seed's install options")
}

/// Loads manifests into resources, in namespace `ns` unless they name one.
pub fn load(name: &str, text: &str, ns: &str) -> Vec<Resource> {
    let report = tessera_model::load_str(
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

/// What `kube-inject` and the runtime make of a Deployment: one pod `<name>-0` it owns,
/// with a sidecar and the tlsMode label when injected, running at `ip`.
pub fn pod_of(deployment: &Resource, inject: bool, ip: &str) -> Resource {
    let Resource::Deployment(d) = deployment else {
        panic!("not a Deployment")
    };
    let mut labels: BTreeMap<String, String> = d.spec.template.metadata.labels.clone();
    let mut containers = serde_json::to_value(&d.spec.template.spec.containers).unwrap();
    if inject {
        labels.insert(TLS_MODE_LABEL.into(), "istio".into());
        containers
            .as_array_mut()
            .unwrap()
            .push(json!({"name": PROXY_CONTAINER, "image": "tessera"}));
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{}-0", d.metadata.name),
            "namespace": d.metadata.namespace,
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": d.metadata.name,
                "uid": "0", "controller": true,
            }],
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

/// The seed's setup: namespaces full (all injected), partial (httpbin injected plus
/// httpbin-nosidecar), legacy (nothing injected); pods at 10.244.0.11 and up.
pub fn seed_002_setup() -> Vec<Op> {
    let mut resources = Vec::new();
    let mut ip = 10;
    let mut next_ip = || {
        ip += 1;
        format!("10.244.0.{ip}")
    };
    for (ns, files, inject) in [
        ("full", vec![HTTPBIN, SLEEP], true),
        ("partial", vec![HTTPBIN], true),
        ("legacy", vec![HTTPBIN, SLEEP], false),
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

/// A fixed clock for plans: creation times (and so "oldest wins") are reproducible.
pub fn at(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
}

pub const LEGACY_STRICT: &str =
    include_str!("../../../samples/seed-002/policy-httpbin-strict.yaml");

pub const LEGACY_PLAINTEXT: &str =
    include_str!("../../../samples/seed-002/policy-httpbin-plaintext.yaml");

pub const BETA_STRICT: &str =
    include_str!("../../../samples/seed-002/peerauthentication-httpbin-strict.yaml");

pub const BETA_PLAINTEXT: &str =
    include_str!("../../../samples/seed-002/peerauthentication-httpbin-disable.yaml");

pub const AUTHZ_HTTPBIN_VIEWER: &str =
    include_str!("../../../samples/authz/httpbin-full-viewer.yaml");

pub const AUTHZ_DENY_LEGACY: &str =
    include_str!("../../../samples/authz/deny-legacy-namespace.yaml");

pub const DR_ISTIO_MUTUAL: &str =
    include_str!("../../../samples/seed-002/destinationrule-httpbin-full-mtls.yaml");

/// One policy step of the seed: its name and what it applies in `full`.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub name: &'static str,
    pub apply: Option<&'static str>,
}

/// Which policy API the steps use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyApi {
    V1alpha1,
    V1beta1,
}

impl PolicyApi {
    pub fn dir(self) -> &'static str {
        match self {
            PolicyApi::V1alpha1 => "v1alpha1",
            PolicyApi::V1beta1 => "v1beta1",
        }
    }
}

/// PERMISSIVE (nothing applied), STRICT, plaintext, then the DestinationRule override.
pub fn seed_002_steps(api: PolicyApi) -> [Step; 4] {
    let (strict, plaintext) = match api {
        PolicyApi::V1alpha1 => (LEGACY_STRICT, LEGACY_PLAINTEXT),
        PolicyApi::V1beta1 => (BETA_STRICT, BETA_PLAINTEXT),
    };
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

/// The store after the setup.
pub fn seed_002_objects() -> Objects {
    let objects = Objects::default();
    let mut ops = objects.bootstrap_ops();
    ops.extend(seed_002_setup());
    objects
        .plan(ops, at(0))
        .expect("the seed's setup applies")
        .next
}

/// `objects` with a step's manifest applied in `full` at time `index + 1`.
pub fn apply_step(objects: &Objects, step: &Step, index: usize) -> Objects {
    let Some(text) = step.apply else {
        return objects.clone();
    };
    let ops = load("step.yaml", text, "full")
        .into_iter()
        .map(|resource| Op::Apply {
            origin: step.name.into(),
            resource,
        })
        .collect();
    objects.plan(ops, at(index as i64 + 1)).unwrap().next
}

/// The world at every step, in order: (step, store, world).
pub fn seed_002_worlds(api: PolicyApi) -> Vec<(Step, Objects, World)> {
    let options = seed_002_options();
    let mut objects = seed_002_objects();
    let mut out = Vec::new();
    for (i, step) in seed_002_steps(api).into_iter().enumerate() {
        objects = apply_step(&objects, &step, i);
        let world = World::build(&objects, &options);
        out.push((step, objects.clone(), world));
    }
    out
}
