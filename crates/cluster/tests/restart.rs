//! Kubernetes mode across an API-server restart: a control plane serving the Kubernetes API
//! (the local mesh's) is the cluster; a second one mirrors it with kube-rs watchers. The
//! API server goes away while more changes are made than its watch history keeps, so when
//! it is back the watchers' next watch gets 410 Gone and they relist every kind: what
//! changed arrives (as one change), the relists of the rest change nothing, and a later
//! deletion is followed.

use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use tessera_control::api::client::ApiClient;
use tessera_control::api::{ApplyRequest, Document};
use tessera_control::policy::MeshOptions;
use tessera_control::{ControlOptions, ControlPlane};
use tessera_model::{Kind, ObjectKey};

const CLUSTER: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop, labels: {app: web}}\nspec:\n  containers: [{name: web, image: web}]\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop}\nspec:\n  mtls: {mode: STRICT}\n";

async fn serve_api(dir: &std::path::Path, addr: std::net::SocketAddr) -> ControlPlane {
    let mut opts = ControlOptions::new(dir.to_path_buf(), MeshOptions::default());
    opts.kube_api = Some(addr);
    ControlPlane::start(opts).await.expect("the API server")
}

async fn apply(dir: &std::path::Path, text: &str) {
    ApiClient::new(dir)
        .apply(&ApplyRequest {
            documents: vec![Document {
                name: "cluster.yaml".into(),
                text: text.into(),
            }],
            namespace: None,
            create: false,
        })
        .await
        .expect("apply");
}

async fn wait_for(mirror: &ControlPlane, key: &ObjectKey) {
    let start = Instant::now();
    while mirror.control().objects().get(key).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{key} was not mirrored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relists_after_an_api_server_restart_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let api_dir = dir.path().join("api");
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let api = serve_api(&api_dir, addr).await;
    apply(&api_dir, CLUSTER).await;

    let mirror = ControlPlane::start(ControlOptions::new(
        dir.path().join("mirror"),
        MeshOptions::default(),
    ))
    .await
    .unwrap();
    let kubeconfig = Kubeconfig::read_from(api_dir.join("kubeconfig")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let task = tokio::spawn(tessera_cluster::mirror(
        client.clone(),
        mirror.control().clone(),
    ));

    wait_for(&mirror, &ObjectKey::new(Kind::Pod, "shop", "web-0")).await;
    wait_for(
        &mirror,
        &ObjectKey::new(Kind::PeerAuthentication, "shop", "default"),
    )
    .await;
    // Let every kind's first list land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = mirror.control().objects().revision();

    // The API server goes away; while it is away, more changes than its watch history
    // keeps are made (through the operator API); then it comes back.
    api.shutdown().await;
    let offline = ControlPlane::start(ControlOptions::new(api_dir.clone(), MeshOptions::default()))
        .await
        .unwrap();
    let changes = tessera_control::state::HISTORY + 10;
    for i in 0..changes {
        apply(
            &api_dir,
            &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c-{i}, namespace: shop}}\ndata: {{a: b}}\n"),
        )
        .await;
    }
    offline.shutdown().await;
    let api = serve_api(&api_dir, addr).await;
    let last = ObjectKey::new(Kind::ConfigMap, "shop", &format!("c-{}", changes - 1));
    wait_for(&mirror, &last).await;
    // Let the other kinds' relists land too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = mirror.control().objects().revision();
    // The watchers' resourceVersion is older than the history: 410 Gone, a relist, and the
    // relisted ConfigMaps land as one change; the other kinds' relists change nothing.
    assert_eq!(
        after,
        before + 1,
        "one change for the relisted ConfigMaps, none for the other kinds"
    );
    assert_eq!(
        mirror
            .control()
            .objects()
            .list(Kind::ConfigMap, Some("shop"), None)
            .count(),
        changes
    );

    // A deletion on the API server is a deletion in the mirror.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, "shop");
    pods.delete("web-0", &Default::default()).await.unwrap();
    let start = Instant::now();
    while mirror
        .control()
        .objects()
        .get(&ObjectKey::new(Kind::Pod, "shop", "web-0"))
        .is_some()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pod was not removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    mirror.shutdown().await;
    api.shutdown().await;
}
