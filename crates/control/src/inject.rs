//! Sidecar injection, as Istio's injector does it: which pods get a sidecar, and what is
//! added to them (the `istio-init` capture step, the `istio-proxy` container, the
//! `security.istio.io/tlsMode: istio` label, user volumes for the proxy). Pure functions:
//! `tessera kube-inject` runs them on manifests, the control plane's admission on pods.

use std::collections::BTreeMap;

use serde_json::json;
use tessera_model::kube::{Container, ContainerPort, PodSpec, Volume, VolumeMount};
use tessera_model::meta::{Labels, ObjectMeta};
use tessera_model::names::{
    DEFAULT_CONTAINER_ANNOTATION, INIT_CONTAINER, INJECTION_LABEL, INJECT_ANNOTATION,
    PROXY_CONTAINER, PROXY_UID, STATUS_ANNOTATION, TLS_MODE_LABEL, USER_VOLUME_ANNOTATION,
    USER_VOLUME_MOUNT_ANNOTATION,
};
use tessera_model::{Kind, ObjectKey, Resource};

use crate::objects::Objects;
use crate::state::Admission;

/// The image named in injected containers; the runtime runs this binary's proxy role.
pub const PROXY_IMAGE: &str = concat!("tessera/proxy:", env!("CARGO_PKG_VERSION"));

/// Ports capture never redirects inbound: the proxy's admin (127.0.0.1 only, but an
/// inbound passthrough must not reach it), its listeners, and Istio's status ports.
const INBOUND_EXCLUDED: &str = "15000,15001,15006,15020,15021,15090";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("annotation {annotation}: {why}")]
    Annotation {
        annotation: &'static str,
        why: String,
    },
}

/// Whether the admission of a pod in a namespace with `namespace_labels` adds a sidecar,
/// with Istio's precedence: a namespace labelled `istio-injection=disabled` never; the
/// pod's `sidecar.istio.io/inject` label or annotation when set; else the namespace's
/// `istio-injection=enabled`. A pod that already has a sidecar is left alone.
pub fn wants_sidecar(pod: &ObjectMeta, spec: &PodSpec, namespace_labels: &Labels) -> bool {
    if is_injected(spec) {
        return false;
    }
    let ns = namespace_labels.get(INJECTION_LABEL).map(String::as_str);
    if ns == Some("disabled") {
        return false;
    }
    let pod_says = pod
        .labels
        .get(INJECT_ANNOTATION)
        .or_else(|| pod.annotations.get(INJECT_ANNOTATION))
        .map(|v| v.eq_ignore_ascii_case("true") || v == "y" || v == "yes" || v == "on");
    match pod_says {
        Some(yes) => yes,
        None => ns == Some("enabled"),
    }
}

pub fn is_injected(spec: &PodSpec) -> bool {
    spec.containers.iter().any(|c| c.name == PROXY_CONTAINER)
}

/// Adds the sidecar to a pod (or a pod template): what `istioctl kube-inject` adds.
pub fn inject(meta: &mut ObjectMeta, spec: &mut PodSpec) -> Result<(), InjectError> {
    if is_injected(spec) {
        return Ok(());
    }
    let (user_volumes, user_mounts) = user_volumes(&meta.annotations)?;
    let first_app = spec.containers.first().map(|c| c.name.clone());

    spec.init_containers.insert(
        0,
        Container {
            name: INIT_CONTAINER.into(),
            image: Some(PROXY_IMAGE.into()),
            args: capture_args(&meta.annotations),
            security_context: Some(json!({
                "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                "runAsUser": 0, "runAsNonRoot": false
            })),
            ..Default::default()
        },
    );
    spec.containers.push(Container {
        name: PROXY_CONTAINER.into(),
        image: Some(PROXY_IMAGE.into()),
        args: vec!["proxy".into(), "sidecar".into()],
        ports: vec![ContainerPort {
            container_port: 15090,
            name: Some("http-envoy-prom".into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        }],
        volume_mounts: user_mounts,
        security_context: Some(json!({
            "runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": true,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true
        })),
        ..Default::default()
    });
    spec.volumes.extend(user_volumes);

    meta.labels.insert(TLS_MODE_LABEL.into(), "istio".into());
    let status = json!({
        "initContainers": [INIT_CONTAINER],
        "containers": [PROXY_CONTAINER],
        "volumes": spec.volumes.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
        "revision": "default",
    });
    meta.annotations
        .insert(STATUS_ANNOTATION.into(), status.to_string());
    if let Some(app) = first_app {
        meta.annotations
            .entry(DEFAULT_CONTAINER_ANNOTATION.into())
            .or_insert(app);
    }
    Ok(())
}

/// `istio-iptables`' arguments, with the pod's `traffic.sidecar.istio.io/*` annotations.
fn capture_args(annotations: &BTreeMap<String, String>) -> Vec<String> {
    let get = |k: &str| {
        annotations
            .get(&format!("traffic.sidecar.istio.io/{k}"))
            .cloned()
    };
    let mut inbound_excluded = INBOUND_EXCLUDED.to_string();
    if let Some(more) = get("excludeInboundPorts").filter(|s| !s.trim().is_empty()) {
        inbound_excluded = format!("{inbound_excluded},{}", more.trim());
    }
    let mut args: Vec<String> = [
        "istio-iptables",
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        &PROXY_UID.to_string(),
        "-m",
        "REDIRECT",
    ]
    .map(String::from)
    .to_vec();
    let pairs = [
        (
            "-i",
            get("includeOutboundIPRanges").unwrap_or_else(|| "*".into()),
        ),
        ("-x", get("excludeOutboundIPRanges").unwrap_or_default()),
        (
            "-b",
            get("includeInboundPorts").unwrap_or_else(|| "*".into()),
        ),
        ("-d", inbound_excluded),
        ("-o", get("excludeOutboundPorts").unwrap_or_default()),
    ];
    for (flag, value) in pairs {
        if flag == "-o" && value.is_empty() {
            continue;
        }
        args.push(flag.into());
        args.push(value);
    }
    args
}

/// `sidecar.istio.io/userVolume` and `userVolumeMount`: JSON maps keyed by volume name
/// (Istio's current form) or lists (its older form).
fn user_volumes(
    annotations: &BTreeMap<String, String>,
) -> Result<(Vec<Volume>, Vec<VolumeMount>), InjectError> {
    let volumes = match annotations.get(USER_VOLUME_ANNOTATION) {
        None => vec![],
        Some(text) => named_list(USER_VOLUME_ANNOTATION, text)?
            .into_iter()
            .map(|v| {
                serde_json::from_value::<Volume>(v).map_err(|e| InjectError::Annotation {
                    annotation: USER_VOLUME_ANNOTATION,
                    why: format!("not a volume: {e}"),
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let mounts = match annotations.get(USER_VOLUME_MOUNT_ANNOTATION) {
        None => vec![],
        Some(text) => named_list(USER_VOLUME_MOUNT_ANNOTATION, text)?
            .into_iter()
            .map(|v| {
                serde_json::from_value::<VolumeMount>(v).map_err(|e| InjectError::Annotation {
                    annotation: USER_VOLUME_MOUNT_ANNOTATION,
                    why: format!("not a volume mount: {e}"),
                })
            })
            .collect::<Result<_, _>>()?,
    };
    for m in &mounts {
        if !volumes.iter().any(|v| v.name == m.name) {
            return Err(InjectError::Annotation {
                annotation: USER_VOLUME_MOUNT_ANNOTATION,
                why: format!(
                    "mount {:?} names no volume of {USER_VOLUME_ANNOTATION} (volumes: {})",
                    m.name,
                    volumes
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    Ok((volumes, mounts))
}

fn named_list(annotation: &'static str, text: &str) -> Result<Vec<serde_json::Value>, InjectError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| InjectError::Annotation {
            annotation,
            why: format!("not JSON: {e}"),
        })?;
    match value {
        serde_json::Value::Array(items) => Ok(items),
        serde_json::Value::Object(map) => Ok(map
            .into_iter()
            .map(|(name, mut v)| {
                if let Some(o) = v.as_object_mut() {
                    o.insert("name".into(), name.into());
                }
                v
            })
            .collect()),
        _ => Err(InjectError::Annotation {
            annotation,
            why: "must be a JSON object keyed by volume name, or a list".into(),
        }),
    }
}

/// `tessera kube-inject`: every Pod, Deployment and ReplicationController gets the sidecar
/// (regardless of namespace labels, as istioctl does); other documents pass unchanged.
pub fn kube_inject(resources: Vec<Resource>) -> Result<Vec<Resource>, (String, InjectError)> {
    resources
        .into_iter()
        .map(|mut r| {
            let key = r.key();
            let result = match &mut r {
                Resource::Pod(p) => inject(&mut p.metadata, &mut p.spec),
                Resource::Deployment(d) => {
                    inject(&mut d.spec.template.metadata, &mut d.spec.template.spec)
                }
                Resource::ReplicationController(rc) => {
                    inject(&mut rc.spec.template.metadata, &mut rc.spec.template.spec)
                }
                _ => Ok(()),
            };
            result.map(|()| r).map_err(|e| (key, e))
        })
        .collect()
}

/// `istioctl kube-inject` on loaded manifests, as YAML for `apply -f -`. Objects keep no
/// namespace they did not name, so `apply -n NS` places them.
pub fn kube_inject_yaml(documents: Vec<tessera_model::Loaded>) -> Result<String, String> {
    let resources: Vec<Resource> = documents
        .into_iter()
        .map(|d| {
            let mut r = d.resource;
            let named = d
                .node
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .is_some();
            if !named {
                r.metadata_mut().namespace = None;
            }
            r
        })
        .collect();
    let injected = kube_inject(resources).map_err(|(key, e)| format!("{key}: {e}"))?;
    let docs: Vec<String> = injected.iter().map(|r| r.to_yaml()).collect();
    Ok(docs.join("---\n"))
}

/// Sidecar injection at admission, as Istio's webhook: pods in namespaces labelled
/// `istio-injection=enabled` (or asking with `sidecar.istio.io/inject`) get the sidecar.
pub struct SidecarInjector;

impl Admission for SidecarInjector {
    fn admit(&self, objects: &Objects, mut resource: Resource) -> Result<Resource, String> {
        if let Resource::Pod(p) = &mut resource {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let labels = objects
                .get(&ObjectKey::new(Kind::Namespace, "", &ns))
                .map(|s| s.resource.metadata().labels.clone())
                .unwrap_or_default();
            if wants_sidecar(&p.metadata, &p.spec, &labels) {
                inject(&mut p.metadata, &mut p.spec).map_err(|e| e.to_string())?;
            }
        }
        Ok(resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> (ObjectMeta, PodSpec) {
        let meta = ObjectMeta {
            name: "p".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let spec = PodSpec {
            containers: vec![Container {
                name: "app".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        (meta, spec)
    }

    fn ns(label: Option<&str>) -> Labels {
        label
            .map(|v| (INJECTION_LABEL.to_string(), v.to_string()))
            .into_iter()
            .collect()
    }

    #[test]
    fn injection_policy_follows_istio() {
        // (namespace label, pod label, pod annotation) -> injected?
        let table = [
            (None, None, None, false),
            (Some("enabled"), None, None, true),
            (Some("enabled"), Some("false"), None, false),
            (Some("enabled"), None, Some("false"), false),
            (None, Some("true"), None, true),
            (None, None, Some("true"), true),
            (Some("disabled"), Some("true"), None, false),
            (Some("disabled"), None, None, false),
        ];
        for (nsl, label, ann, want) in table {
            let labels: Vec<_> = label.map(|v| (INJECT_ANNOTATION, v)).into_iter().collect();
            let anns: Vec<_> = ann.map(|v| (INJECT_ANNOTATION, v)).into_iter().collect();
            let (meta, spec) = pod(&labels, &anns);
            assert_eq!(
                wants_sidecar(&meta, &spec, &ns(nsl)),
                want,
                "ns={nsl:?} label={label:?} annotation={ann:?}"
            );
        }
    }

    #[test]
    fn injection_adds_the_proxy_once() {
        let (mut meta, mut spec) = pod(&[], &[]);
        inject(&mut meta, &mut spec).unwrap();
        inject(&mut meta, &mut spec).unwrap();
        let names: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app", "istio-proxy"]);
        assert_eq!(spec.init_containers.len(), 1);
        assert_eq!(spec.init_containers[0].name, INIT_CONTAINER);
        assert_eq!(meta.labels[TLS_MODE_LABEL], "istio");
        assert_eq!(meta.annotations[DEFAULT_CONTAINER_ANNOTATION], "app");
        // An injected pod in an enabled namespace is not injected again.
        assert!(!wants_sidecar(&meta, &spec, &ns(Some("enabled"))));
        let args = spec.init_containers[0].args.join(" ");
        assert!(args.contains("-p 15001 -z 15006 -u 1337"), "{args}");
        assert!(args.contains("-d 15000,"), "{args}");
    }

    #[test]
    fn user_volumes_mount_into_the_proxy_as_in_seed_003() {
        let (mut meta, mut spec) = pod(
            &[],
            &[
                (
                    USER_VOLUME_ANNOTATION,
                    r#"{"tls-secret":{"secret":{"secretName":"httpbin-mtls-termination","optional":true}},"tls-ca-secret":{"secret":{"secretName":"httpbin-mtls-termination-cacert"}}}"#,
                ),
                (
                    USER_VOLUME_MOUNT_ANNOTATION,
                    r#"{"tls-secret":{"mountPath":"/etc/istio/tls-certs/","readOnly":true},"tls-ca-secret":{"mountPath":"/etc/istio/tls-ca-certs/","readOnly":true}}"#,
                ),
            ],
        );
        inject(&mut meta, &mut spec).unwrap();
        let proxy = spec
            .containers
            .iter()
            .find(|c| c.name == PROXY_CONTAINER)
            .unwrap();
        let mounts: Vec<_> = proxy
            .volume_mounts
            .iter()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(
            mounts,
            [
                ("tls-ca-secret", "/etc/istio/tls-ca-certs/"),
                ("tls-secret", "/etc/istio/tls-certs/")
            ]
        );
        let secret = |n: &str| {
            spec.volumes
                .iter()
                .find(|v| v.name == n)
                .and_then(|v| v.secret.as_ref())
                .map(|s| s.secret_name.clone())
        };
        assert_eq!(
            secret("tls-secret").as_deref(),
            Some("httpbin-mtls-termination")
        );

        let (mut meta, mut spec) = pod(
            &[],
            &[
                (
                    USER_VOLUME_ANNOTATION,
                    r#"{"a":{"secret":{"secretName":"s"}}}"#,
                ),
                (USER_VOLUME_MOUNT_ANNOTATION, r#"{"b":{"mountPath":"/x"}}"#),
            ],
        );
        let err = inject(&mut meta, &mut spec).unwrap_err().to_string();
        assert!(
            err.contains("userVolumeMount") && err.contains("\"b\""),
            "{err}"
        );
        let (mut meta, mut spec) = pod(&[], &[(USER_VOLUME_ANNOTATION, "{nope")]);
        let err = inject(&mut meta, &mut spec).unwrap_err().to_string();
        assert!(err.contains("not JSON"), "{err}");
    }
}
