//! The store through the operator API: all-or-nothing batches with every error listed,
//! kubectl's outcomes, and persistence of objects and the CA across a restart.

use std::path::Path;

use tessera_control::api::client::{ApiClient, ClientError};
use tessera_control::api::*;
use tessera_control::policy::MeshOptions;
use tessera_control::{ControlOptions, ControlPlane};

async fn start(dir: &Path) -> ControlPlane {
    ControlPlane::start(ControlOptions::new(
        dir.to_path_buf(),
        MeshOptions::default(),
    ))
    .await
    .expect("control plane starts")
}

fn doc(name: &str, text: &str) -> Document {
    Document {
        name: name.into(),
        text: text.into(),
    }
}

fn apply_req(docs: Vec<Document>, ns: Option<&str>) -> ApplyRequest {
    ApplyRequest {
        documents: docs,
        namespace: ns.map(str::to_string),
        create: false,
    }
}

fn lines(r: &ChangeResponse) -> Vec<String> {
    r.outcomes.iter().map(|o| o.to_string()).collect()
}

async fn names(client: &ApiClient, kind: &str, ns: Option<&str>) -> Vec<String> {
    client
        .get(&GetRequest {
            kind: kind.into(),
            name: None,
            namespace: ns.map(str::to_string),
            all_namespaces: ns.is_none(),
            selector: None,
        })
        .await
        .unwrap()
        .items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// `get KIND NAME -n NS`: the object.
async fn get_one(
    client: &ApiClient,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> serde_json::Value {
    client
        .get(&GetRequest {
            kind: kind.into(),
            name: Some(name.into()),
            namespace: ns.map(str::to_string),
            all_namespaces: false,
            selector: None,
        })
        .await
        .unwrap()
        .items[0]
        .clone()
}

const GOOD: &str = "
apiVersion: v1
kind: Namespace
metadata:
  name: full
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  namespace: full
spec:
  selector: {app: httpbin}
  ports:
  - name: http
    port: 8000
    targetPort: 80
";

const BAD: &str = "
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: full
spec:
  mtls:
    mode: STRICTEST
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: dr
  namespace: full
spec:
  host: httpbin
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
      sni: 5
      bogus: true
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_any_invalid_document_changes_nothing_and_lists_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path()).await;
    let client = ApiClient::new(dir.path());
    let before = client.health().await.unwrap().revision;

    let err = client
        .apply(&apply_req(
            vec![doc("good.yaml", GOOD), doc("bad.yaml", BAD)],
            None,
        ))
        .await
        .unwrap_err();
    let ClientError::Refused { status, errors, .. } = err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert_eq!(status, 422);
    let text = errors.join("\n");
    // Every problem, with file, line and field path.
    assert!(text.contains("bad.yaml:9:"), "{text}");
    assert!(text.contains("spec.mtls.mode"), "{text}");
    assert!(text.contains("STRICTEST"), "{text}");
    assert!(text.contains("spec.trafficPolicy.tls.bogus"), "{text}");
    assert!(errors.len() >= 2, "{errors:?}");
    // Nothing from the valid file landed.
    assert_eq!(client.health().await.unwrap().revision, before);
    assert!(!names(&client, "ns", None)
        .await
        .contains(&"full".to_string()));

    // A semantic error (a namespace that does not exist) also stops the whole batch.
    let err = client
        .apply(&apply_req(
            vec![doc(
                "x.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: nowhere}\n",
            )],
            None,
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("error when creating \"x.yaml\": namespaces \"nowhere\" not found"),
        "{err}"
    );
    assert!(!names(&client, "ns", None).await.contains(&"a".to_string()));

    // The valid part alone lands, with kubectl's words.
    let r = client
        .apply(&apply_req(vec![doc("good.yaml", GOOD)], None))
        .await
        .unwrap();
    assert_eq!(
        lines(&r),
        ["namespace/full created", "service/httpbin created"]
    );
    let again = client
        .apply(&apply_req(vec![doc("good.yaml", GOOD)], None))
        .await
        .unwrap();
    assert_eq!(
        lines(&again),
        ["namespace/full unchanged", "service/httpbin unchanged"]
    );
    assert_eq!(
        again.revision, r.revision,
        "an unchanged apply is no revision"
    );
    plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_delete_label_behave_like_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path()).await;
    let client = ApiClient::new(dir.path());
    client
        .apply(&apply_req(vec![doc("good.yaml", GOOD)], None))
        .await
        .unwrap();

    let mut create = apply_req(
        vec![doc(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: full}\n",
        )],
        None,
    );
    create.create = true;
    let err = client.apply(&create).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("Error from server (AlreadyExists): error when creating \"ns.yaml\": namespaces \"full\" already exists"),
        "{err}"
    );

    let labeled = client
        .label(&LabelRequest {
            target: Target {
                kind: "namespace".into(),
                name: "full".into(),
                namespace: None,
            },
            set: [("istio-injection".to_string(), "enabled".to_string())].into(),
            remove: vec![],
            overwrite: false,
        })
        .await
        .unwrap();
    assert_eq!(lines(&labeled), ["namespace/full labeled"]);
    let conflict = client
        .label(&LabelRequest {
            target: Target {
                kind: "ns".into(),
                name: "full".into(),
                namespace: None,
            },
            set: [("istio-injection".to_string(), "disabled".to_string())].into(),
            remove: vec![],
            overwrite: false,
        })
        .await
        .unwrap_err();
    assert!(
        conflict
            .to_string()
            .contains("'istio-injection' already has a value (enabled), and --overwrite is false"),
        "{conflict}"
    );

    // Re-applying the manifest keeps a label it never set (kubectl's apply merges).
    let again = client
        .apply(&apply_req(vec![doc("good.yaml", GOOD)], None))
        .await
        .unwrap();
    assert_eq!(
        lines(&again),
        ["namespace/full unchanged", "service/httpbin unchanged"]
    );
    let ns = get_one(&client, "ns", None, "full").await;
    assert_eq!(ns["metadata"]["labels"]["istio-injection"], "enabled");

    // Services get a VIP from 10.96.0.0/16 that survives re-apply.
    let svc = get_one(&client, "svc", Some("full"), "httpbin").await;
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.96."), "{ip}");

    // Deleting what is not there names it; --ignore-not-found is quiet.
    let missing = client
        .delete(&DeleteRequest {
            documents: vec![],
            namespace: Some("full".into()),
            targets: vec![Target {
                kind: "deployment".into(),
                name: "sleep".into(),
                namespace: None,
            }],
            ignore_not_found: false,
        })
        .await
        .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("Error from server (NotFound): deployments.apps \"sleep\" not found"),
        "{missing}"
    );

    // A namespace takes its objects with it.
    let gone = client
        .delete(&DeleteRequest {
            documents: vec![],
            namespace: None,
            targets: vec![Target {
                kind: "ns".into(),
                name: "full".into(),
                namespace: None,
            }],
            ignore_not_found: false,
        })
        .await
        .unwrap();
    // kubectl reports the namespace only.
    assert_eq!(lines(&gone), ["namespace \"full\" deleted"]);
    assert!(names(&client, "svc", None).await.is_empty());
    plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root_before;
    let ip_before;
    let revision_before;
    {
        let plane = start(dir.path()).await;
        let client = ApiClient::new(dir.path());
        let r = client
            .apply(&apply_req(vec![doc("good.yaml", GOOD)], None))
            .await
            .unwrap();
        revision_before = r.revision;
        root_before = plane.control().issuer().authority.root_bundle().to_string();
        ip_before = get_one(&client, "services", Some("full"), "httpbin").await["spec"]
            ["clusterIP"]
            .clone();
        // A second control plane on the same state dir is refused while this one runs.
        let second = ControlPlane::start(ControlOptions::new(
            dir.path().to_path_buf(),
            MeshOptions::default(),
        ))
        .await;
        assert!(
            matches!(
                second,
                Err(tessera_control::ControlError::AlreadyRunning(_))
            ),
            "a second control plane must not share the state dir"
        );
        plane.shutdown().await;
    }
    let plane = start(dir.path()).await;
    let client = ApiClient::new(dir.path());
    assert_eq!(client.health().await.unwrap().revision, revision_before);
    assert_eq!(
        plane.control().issuer().authority.root_bundle(),
        root_before,
        "the CA root survives"
    );
    let svc = get_one(&client, "svc", Some("full"), "httpbin").await;
    assert_eq!(svc["spec"]["clusterIP"], ip_before);
    assert!(svc["metadata"]["uid"].is_string());
    // A new Service does not reuse the persisted VIP.
    let r = client
        .apply(&apply_req(
            vec![doc(
                "s.yaml",
                "apiVersion: v1\nkind: Service\nmetadata: {name: sleep, namespace: full}\nspec:\n  ports: [{port: 80, name: http}]\n  selector: {app: sleep}\n",
            )],
            None,
        ))
        .await
        .unwrap();
    assert_eq!(lines(&r), ["service/sleep created"]);
    let sleep = get_one(&client, "svc", Some("full"), "sleep").await;
    assert_ne!(sleep["spec"]["clusterIP"], ip_before);
    plane.shutdown().await;
}
