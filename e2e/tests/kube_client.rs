//! kube-rs, the Rust ecosystem's Kubernetes client, against a local mesh's Kubernetes API
//! with the kubeconfig `tessera up` writes: it lists pods, follows them with its watcher
//! while a label is patched on, reads the Istio kinds' CustomResourceDefinitions, finds
//! PeerAuthentication by aggregated discovery, and creates, patches, reads and deletes
//! one as a dynamic object.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Discovery, Scope};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Config};
use serde_json::json;
use tessera_e2e::Mesh;

async fn client(mesh: &Mesh) -> Client {
    let kubeconfig =
        Kubeconfig::read_from(mesh.state_dir().join("kubeconfig")).expect("the kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a client configuration");
    Client::try_from(config).expect("a client")
}

#[test]
fn kube_rs_lists_watches_and_patches() {
    let mesh = Mesh::up("kube-rs", &[]);
    mesh.ok(
        "tessera create ns kr && tessera label ns kr istio-injection=enabled && \
         tessera apply -n kr -f samples/sleep/sleep.yaml",
    );
    mesh.wait_ready("kr");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = client(&mesh).await;

        // Typed pods: list by label.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "kr");
        let list = pods
            .list(&ListParams::default().labels("app=sleep"))
            .await
            .expect("list pods");
        assert_eq!(list.items.len(), 1);
        let name = list.items[0].metadata.name.clone().unwrap();
        assert!(name.starts_with("sleep-"), "{name}");
        let containers: Vec<String> = list.items[0]
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert!(
            containers.contains(&"istio-proxy".to_string()),
            "{containers:?}"
        );

        // The watcher (list, then watch from the list's version) sees a label patched on.
        let mut events = watcher(pods.clone(), watcher::Config::default())
            .applied_objects()
            .boxed();
        let patch = json!({"metadata": {"labels": {"patched": "yes"}}});
        pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch the pod");
        let seen = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(Ok(pod)) = events.next().await {
                let labels = pod.metadata.labels.unwrap_or_default();
                if labels.get("patched").map(String::as_str) == Some("yes") {
                    return pod.metadata.name;
                }
            }
            None
        })
        .await
        .expect("the watcher saw the patched label in time");
        assert_eq!(seen.as_deref(), Some(name.as_str()));

        // The Istio kinds are CustomResourceDefinitions of the real type.
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let pa_crd = crds
            .get("peerauthentications.security.istio.io")
            .await
            .expect("the PeerAuthentication definition");
        let served: Vec<&str> = pa_crd
            .spec
            .versions
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(served, ["v1", "v1beta1"]);
        // An Istio kind as a dynamic object, found by aggregated discovery.
        let discovery = Discovery::new(client.clone())
            .run_aggregated()
            .await
            .expect("aggregated discovery");
        let (ar, caps) = discovery
            .resolve_gvk(&GroupVersionKind::gvk(
                "security.istio.io",
                "v1",
                "PeerAuthentication",
            ))
            .expect("PeerAuthentication is discovered");
        assert_eq!(ar.plural, "peerauthentications");
        assert_eq!(caps.scope, Scope::Namespaced);
        let pas: Api<DynamicObject> = Api::namespaced_with(client.clone(), "kr", &ar);
        let pa =
            DynamicObject::new("default", &ar).data(json!({"spec": {"mtls": {"mode": "STRICT"}}}));
        pas.create(&PostParams::default(), &pa)
            .await
            .expect("create a PeerAuthentication");
        let patch = json!({"spec": {"mtls": {"mode": "PERMISSIVE"}}});
        pas.patch("default", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch the PeerAuthentication");
        let got = pas
            .get("default")
            .await
            .expect("get the PeerAuthentication");
        assert_eq!(got.data["spec"]["mtls"]["mode"], "PERMISSIVE");
        // An invalid change is refused with the validator's words, and nothing changes.
        let bad = json!({"spec": {"mtls": {"mode": "SOMETIMES"}}});
        let refused = pas
            .patch("default", &PatchParams::default(), &Patch::Merge(&bad))
            .await
            .expect_err("an invalid mode");
        assert!(refused.to_string().contains("SOMETIMES"), "{refused}");
        assert_eq!(
            pas.get("default").await.unwrap().data["spec"]["mtls"]["mode"],
            "PERMISSIVE"
        );
        assert_eq!(
            pas.list(&ListParams::default()).await.unwrap().items.len(),
            1
        );
        pas.delete("default", &DeleteParams::default())
            .await
            .expect("delete");
        assert!(pas.get_opt("default").await.unwrap().is_none());
    });
}
