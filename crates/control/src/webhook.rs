//! Admission webhooks (`admission.k8s.io/v1` AdmissionReview), as a Kubernetes API server
//! calls them: sidecar injection (mutating: the same injection as `kube-inject` and the
//! local mesh's admission, answered as a JSON patch) and validation (the same loader and
//! checks as `tessera validate`). Pure functions of the review; serving them over HTTPS is
//! the caller's. Neither has side effects, so dry-run requests need nothing special.

use std::path::Path;

use base64::Engine;
use serde_json::{json, Value};
use tessera_model::meta::Labels;
use tessera_model::{LoadOptions, Resource};

use crate::inject::{inject, wants_sidecar};
use crate::kube::patch::diff;

/// The response to `review`: its uid and whether the object is allowed, with the reason
/// when it is not.
fn respond(review: &Value, allowed: bool, message: Option<String>) -> Value {
    let mut response = json!({"uid": review["request"]["uid"], "allowed": allowed});
    if let Some(m) = message {
        response["status"] = json!({"code": 400, "reason": "BadRequest", "message": m});
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// Reads the review's object with the loader (in the request's namespace).
fn read(review: &Value, opts: &LoadOptions) -> Result<Resource, Vec<String>> {
    let request = &review["request"];
    let object = &request["object"];
    let mut opts = opts.clone();
    if let Some(ns) = request["namespace"].as_str().filter(|ns| !ns.is_empty()) {
        opts.namespace = Some(ns.to_string());
    }
    let name = format!(
        "{}/{}",
        request["kind"]["kind"].as_str().unwrap_or("object"),
        request["name"].as_str().unwrap_or("")
    );
    let report = tessera_model::load_str(Path::new(&name), &object.to_string(), &opts);
    let errors: Vec<String> = report
        .problems
        .iter()
        .filter(|p| p.is_error())
        .map(|p| p.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    report
        .documents
        .into_iter()
        .next()
        .map(|d| d.resource)
        .ok_or_else(|| vec![format!("{name}: the request holds no object")])
}

/// The mutating webhook: a pod that wants a sidecar (its namespace's `istio-injection`
/// label, its `sidecar.istio.io/inject`) gets the patch that injects one; anything else
/// is allowed unchanged.
pub fn inject_review(review: &Value, namespace_labels: &Labels, opts: &LoadOptions) -> Value {
    if review["request"]["kind"]["kind"] != "Pod" {
        return respond(review, true, None);
    }
    let Resource::Pod(pod) = (match read(review, opts) {
        Ok(r) => r,
        Err(errors) => return respond(review, false, Some(errors.join("; "))),
    }) else {
        return respond(review, true, None);
    };
    if !wants_sidecar(&pod.metadata, &pod.spec, namespace_labels) {
        return respond(review, true, None);
    }
    let before = Resource::Pod(pod.clone()).to_json();
    let mut injected = pod;
    if let Err(e) = inject(&mut injected.metadata, &mut injected.spec) {
        return respond(
            review,
            false,
            Some(format!("sidecar injection failed: {e}")),
        );
    }
    let after = Resource::Pod(injected).to_json();
    let ops = Value::Array(diff(&before, &after));
    let mut out = respond(review, true, None);
    out["response"]["patchType"] = json!("JSONPatch");
    out["response"]["patch"] =
        json!(base64::engine::general_purpose::STANDARD.encode(ops.to_string()));
    out
}

/// The validating webhook: the object is allowed when `tessera validate` finds no error
/// in it; otherwise refused with every error.
pub fn validate_review(review: &Value, opts: &LoadOptions) -> Value {
    if review["request"]["operation"] == "DELETE" {
        return respond(review, true, None);
    }
    match read(review, opts) {
        Ok(_) => respond(review, true, None),
        Err(errors) => respond(review, false, Some(errors.join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::patch::json_patch;

    fn review(kind: &str, ns: &str, object: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "namespace": ns,
                "name": object["metadata"]["name"],
                "operation": "CREATE",
                "dryRun": true,
                "object": object,
            },
        })
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "sleep-1", "labels": {"app": "sleep"}},
            "spec": {"containers": [{"name": "sleep", "image": "curlimages/curl", "command": ["sleep", "infinity"]}]},
        })
    }

    #[test]
    fn pods_in_an_injected_namespace_get_the_sidecar_as_a_patch() {
        let labels: Labels = [("istio-injection".to_string(), "enabled".to_string())].into();
        let r = review("Pod", "full", pod());
        let out = inject_review(&r, &labels, &LoadOptions::default());
        let response = &out["response"];
        assert_eq!(response["uid"], r["request"]["uid"]);
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let ops: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(response["patch"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        let mut patched = pod();
        json_patch(&mut patched, &ops).unwrap();
        let names: Vec<&str> = patched["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["sleep", "istio-proxy"]);
        // The app's container is untouched by the patch.
        assert_eq!(
            patched["spec"]["containers"][0],
            pod()["spec"]["containers"][0]
        );
        // The same injection as kube-inject: the sidecar has Istio's name and an init.
        assert!(patched["spec"]["initContainers"]
            .as_array()
            .is_some_and(|c| !c.is_empty()));
    }

    #[test]
    fn no_sidecar_when_not_asked_and_others_pass() {
        let none = Labels::new();
        let out = inject_review(
            &review("Pod", "legacy", pod()),
            &none,
            &LoadOptions::default(),
        );
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"].get("patch").is_none());
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
        let out = inject_review(
            &review("Service", "full", svc),
            &none,
            &LoadOptions::default(),
        );
        assert_eq!(out["response"]["allowed"], true);
    }

    #[test]
    fn validation_refuses_with_the_validators_words() {
        let bad = json!({
            "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "p"}, "spec": {"mtls": {"mode": "SOMETIMES"}},
        });
        let out = validate_review(
            &review("PeerAuthentication", "full", bad),
            &LoadOptions::default(),
        );
        assert_eq!(out["response"]["allowed"], false);
        let message = out["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("spec.mtls.mode") && message.contains("SOMETIMES"),
            "{message}"
        );
        let good = json!({
            "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "p"}, "spec": {"mtls": {"mode": "STRICT"}},
        });
        let out = validate_review(
            &review("PeerAuthentication", "full", good),
            &LoadOptions::default(),
        );
        assert_eq!(out["response"]["allowed"], true);
    }
}
