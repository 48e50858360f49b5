//! Bodies a client sends to the Kubernetes API: Kubernetes' protobuf encoding (read for
//! `kubectl create namespace|secret|configmap`) and patches (merge, strategic merge and
//! JSON patch) applied to an object. The first byte chooses which; none may panic, and a
//! JSON patch that fails leaves the object as it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tessera_control::kube::{protobuf, write};

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
    write::merge_patch(&mut merged, &patch);
    let mut strategic = object.clone();
    write::strategic_merge_patch(&mut strategic, &patch);
    let mut patched = object.clone();
    if write::json_patch(&mut patched, &patch).is_err() {
        assert_eq!(patched, object);
    }
});
