//! Bodies a client sends to the Kubernetes API: Kubernetes' protobuf encoding (read for
//! `kubectl create namespace|secret|configmap`), patches (merge, strategic merge and
//! JSON patch) applied to an object, and server-side applies against another manager's
//! fields. The first byte chooses which; none may panic, a JSON patch that fails leaves
//! the object as it was, and an apply that succeeds owns exactly what it applied.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tessera_control::kube::fields::{self, Writer};
use tessera_control::kube::{patch as patches, protobuf};

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    if choice % 2 == 0 {
        if let Ok(Value::Object(o)) = protobuf::to_json(rest) {
            assert!(o.contains_key("kind"));
        }
        return;
    }
    let Ok(patch) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let object = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "a", "labels": {"app": "a"}, "finalizers": ["x"]},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "app", "image": "i", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]}
        ]}}},
    });
    let mut merged = object.clone();
    patches::merge_patch(&mut merged, &patch);
    let mut strategic = object.clone();
    patches::strategic_merge_patch(&mut strategic, &patch);
    let mut patched = object.clone();
    if patches::json_patch(&mut patched, &patch).is_err() {
        assert_eq!(patched, object);
    }
    let writer = |manager| Writer {
        manager,
        api_version: "apps/v1",
        time: "2026-01-01T00:00:00Z",
    };
    let owners = fields::after_update(&[], None, &object, &writer("kubectl-create"));
    let forced = choice % 4 == 3;
    if let Ok((_, after)) = fields::apply(&owners, &object, &patch, &writer("kubectl"), forced) {
        let mine = after.iter().find(|m| m.manager == "kubectl");
        let applied = fields::fields_of(&patch);
        assert_eq!(
            mine.map(|m| &m.fields).unwrap_or(&Default::default()),
            &applied
        );
    }
});
