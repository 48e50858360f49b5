//! The admission webhooks over HTTPS with real curl, as an API server calls them: the
//! serving certificate verifies with the written caBundle for istiod's service name (and
//! not without it); `/inject` answers a pod of an `istio-injection=enabled` namespace with
//! a JSON patch that adds the sidecar, and one of another namespace with no patch;
//! `/validate` refuses a PeerAuthentication `tessera validate` refuses, with its reason.

use std::process::Command;

use base64::Engine;
use serde_json::{json, Value};
use tessera_control::api::client::ApiClient;
use tessera_control::api::{ApplyRequest, Document};
use tessera_control::policy::MeshOptions;
use tessera_control::{ControlOptions, ControlPlane};

fn review(kind: &str, ns: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0df28fbd-5f5f-4a43-9a8c-9a3d3d1f3f11",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "namespace": ns,
            "name": object["metadata"]["name"],
            "operation": "CREATE",
            "object": object,
        },
    })
}

/// curl's exit code and output for POSTing `body` to the webhook at `path`.
fn post(dir: &std::path::Path, port: u16, path: &str, body: &Value, verify: bool) -> (i32, String) {
    let file = dir.join("review.json");
    std::fs::write(&file, body.to_string()).unwrap();
    let mut curl = Command::new("curl");
    curl.args([
        "-sS",
        "--max-time",
        "10",
        "-H",
        "Content-Type: application/json",
    ])
    .arg("--resolve")
    .arg(format!("istiod.istio-system.svc:{port}:127.0.0.1"))
    .arg("--data-binary")
    .arg(format!("@{}", file.display()));
    if verify {
        curl.arg("--cacert").arg(dir.join("webhook/ca-bundle.pem"));
    }
    let out = curl
        .arg(format!("https://istiod.istio-system.svc:{port}{path}"))
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhooks_answer_an_api_server_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ControlOptions::new(dir.path().to_path_buf(), MeshOptions::default());
    opts.webhooks = Some("127.0.0.1:0".parse().unwrap());
    let plane = ControlPlane::start(opts).await.unwrap();
    ApiClient::new(dir.path())
        .apply(&ApplyRequest {
            documents: vec![Document {
                name: "ns.yaml".into(),
                text: "apiVersion: v1\nkind: Namespace\nmetadata: {name: full, labels: {istio-injection: enabled}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: legacy}\n".into(),
            }],
            namespace: None,
            create: false,
        })
        .await
        .unwrap();
    let port: u16 = std::fs::read_to_string(dir.path().join("webhook/address"))
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sleep-1", "labels": {"app": "sleep"}},
        "spec": {"containers": [{"name": "sleep", "image": "curlimages/curl"}]},
    });
    let d = dir.path().to_path_buf();
    let (code, _) = tokio::task::spawn_blocking({
        let (d, r) = (d.clone(), review("Pod", "full", pod.clone()));
        move || post(&d, port, "/inject", &r, false)
    })
    .await
    .unwrap();
    assert_eq!(
        code, 60,
        "without the caBundle curl cannot verify the server"
    );

    let (code, out) = tokio::task::spawn_blocking({
        let (d, r) = (d.clone(), review("Pod", "full", pod.clone()));
        move || post(&d, port, "/inject", &r, true)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    let response = &answer["response"];
    assert_eq!(response["allowed"], true, "{answer}");
    assert_eq!(response["uid"], "0df28fbd-5f5f-4a43-9a8c-9a3d3d1f3f11");
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut injected = pod.clone();
    tessera_control::kube::patch::json_patch(&mut injected, &patch).unwrap();
    let containers: Vec<&str> = injected["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(containers, ["sleep", "istio-proxy"]);

    // Another namespace, without the label: allowed, unchanged.
    let (_, out) = tokio::task::spawn_blocking({
        let (d, r) = (d.clone(), review("Pod", "legacy", pod.clone()));
        move || post(&d, port, "/inject", &r, true)
    })
    .await
    .unwrap();
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none(), "{answer}");

    // Validation refuses what `tessera validate` refuses, with its words.
    let pa = json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default"},
        "spec": {"mtls": {"mode": "STRICTEST"}},
    });
    let (_, out) = tokio::task::spawn_blocking({
        let (d, r) = (d.clone(), review("PeerAuthentication", "full", pa));
        move || post(&d, port, "/validate", &r, true)
    })
    .await
    .unwrap();
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("spec.mtls.mode"), "{message}");
    plane.shutdown().await;
}
