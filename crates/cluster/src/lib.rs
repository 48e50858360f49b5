//! Kubernetes mode: the control plane's store mirrors a Kubernetes API server. One kube-rs
//! watcher per kind the compiler reads (Namespaces first, so that the objects in them have
//! somewhere to land); each event becomes the store's operations for what differs
//! ([`tessera_control::mirror`]), so a relist after an API-server restart or an expired
//! watch (410 Gone) pushes nothing to the proxies when nothing changed. The compiler does not
//! know where its objects came from.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use tessera_control::mirror::{self, Event};
use tessera_control::ControlState;
use tessera_model::{Kind, LoadOptions, ObjectKey, Resource};
use tokio::sync::oneshot;

/// The kinds mirrored: what the compiler and the CA read. Workload controllers
/// (Deployments, ReplicationControllers) are the cluster's business; their pods are
/// mirrored.
pub const MIRRORED: &[Kind] = &[
    Kind::ServiceAccount,
    Kind::Secret,
    Kind::ConfigMap,
    Kind::Service,
    Kind::Pod,
    Kind::PeerAuthentication,
    Kind::AuthorizationPolicy,
    Kind::Policy,
    Kind::MeshPolicy,
    Kind::DestinationRule,
    Kind::Sidecar,
    Kind::Gateway,
    Kind::VirtualService,
];

/// How a kind is addressed on the API server (its first served version).
pub fn api_resource(kind: Kind) -> ApiResource {
    let info = kind.info();
    let version = info.versions[0];
    ApiResource {
        group: info.group.to_string(),
        version: version.to_string(),
        api_version: if info.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", info.group)
        },
        kind: info.name.to_string(),
        plural: info.plural.to_string(),
    }
}

/// Mirrors the API server `client` talks to into `control`'s store until the task is
/// dropped: Namespaces first, then every kind in [`MIRRORED`].
pub async fn mirror(client: kube::Client, control: Arc<ControlState>) {
    let (listed, namespaces_listed) = oneshot::channel();
    let namespaces = tokio::spawn(watch_kind(
        client.clone(),
        control.clone(),
        Kind::Namespace,
        Some(listed),
    ));
    let _ = namespaces_listed.await;
    tracing::info!("namespaces mirrored; watching the other kinds");
    let mut tasks: Vec<_> = MIRRORED
        .iter()
        .map(|&kind| tokio::spawn(watch_kind(client.clone(), control.clone(), kind, None)))
        .collect();
    tasks.push(namespaces);
    futures::future::join_all(tasks).await;
}

/// Follows one kind's watch forever (kube-rs relists after a 410 or a lost connection,
/// with backoff); `listed` is told when the first list has landed.
async fn watch_kind(
    client: kube::Client,
    control: Arc<ControlState>,
    kind: Kind,
    mut listed: Option<oneshot::Sender<()>>,
) {
    let ar = api_resource(kind);
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Vec<Resource> = Vec::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(o)) => {
                listing.extend(resource(&ar, o));
                continue;
            }
            Ok(watcher::Event::InitDone) => Event::Relisted {
                kind,
                objects: std::mem::take(&mut listing),
            },
            Ok(watcher::Event::Apply(o)) => match resource(&ar, o) {
                Some(r) => Event::Applied(Box::new(r)),
                None => continue,
            },
            Ok(watcher::Event::Delete(o)) => Event::Deleted(ObjectKey::new(
                kind,
                o.metadata.namespace.as_deref().unwrap_or_default(),
                o.metadata.name.as_deref().unwrap_or_default(),
            )),
            Err(e) => {
                tracing::warn!(kind = %ar.kind, error = %e, "watch failed; retrying with backoff");
                continue;
            }
        };
        let relisted = matches!(event, Event::Relisted { .. });
        submit(&control, kind, event).await;
        if relisted {
            if let Some(tx) = listed.take() {
                let _ = tx.send(());
            }
        }
    }
}

/// The model's reading of an API-server object; `None` (logged) when it does not load,
/// which leaves it out of the mesh's configuration.
fn resource(ar: &ApiResource, o: DynamicObject) -> Option<Resource> {
    let name = format!(
        "kubernetes:{}/{}/{}",
        ar.plural,
        o.metadata.namespace.as_deref().unwrap_or("-"),
        o.metadata.name.as_deref().unwrap_or("-")
    );
    let mut value = serde_json::to_value(&o).ok()?;
    // List items come without their type.
    value["apiVersion"] = ar.api_version.clone().into();
    value["kind"] = ar.kind.clone().into();
    let text = value.to_string();
    let report = tessera_model::load_str(Path::new(&name), &text, &LoadOptions::default());
    if report.has_errors() {
        let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        tracing::warn!(object = %name, problems = %problems.join("; "), "not mirrored: the object does not validate");
        return None;
    }
    report.documents.into_iter().next().map(|d| d.resource)
}

/// Lands one event's operations; an object whose namespace has not landed yet is retried
/// for a while (the namespace's watch is a separate stream).
async fn submit(control: &ControlState, kind: Kind, event: Event) {
    for attempt in 0..20 {
        let e = event.clone();
        match control.submit_with(|objects| mirror::ops(objects, e)).await {
            Ok(_) => return,
            Err(errors) => {
                let waiting = errors.iter().all(|e| e.contains("namespaces \""));
                if !waiting || attempt == 19 {
                    tracing::warn!(kind = ?kind, errors = %errors.join("; "), "mirroring refused by the store");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}
