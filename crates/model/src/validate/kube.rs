//! The Kubernetes kinds: Secrets, Services, pod templates, containers, volumes, and the
//! sidecar annotations injection reads.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

use crate::kube::{Container, PodSpec, PodTemplateSpec, Secret, Service, Volume, VolumeMount};
use crate::meta::{validate_dns_label, IntOrString, ObjectMeta};
use crate::names::{INJECT_ANNOTATION, USER_VOLUME_ANNOTATION, USER_VOLUME_MOUNT_ANNOTATION};
use crate::problem::{FieldPath, Finding};

pub(super) fn check_secret(secret: &Secret, out: &mut Vec<Finding>) {
    for (key, value) in &secret.data {
        if !is_base64(value) {
            out.push(
                Finding::error(
                    p("data").key(key),
                    "is not valid base64 (data values must be base64-encoded)",
                )
                .hint("put plain text under stringData instead"),
            );
        }
    }
    if secret.r#type.as_deref() == Some("kubernetes.io/tls") {
        for key in ["tls.crt", "tls.key"] {
            if !secret.data.contains_key(key) && !secret.string_data.contains_key(key) {
                out.push(Finding::error(
                    p("data"),
                    format!("a kubernetes.io/tls Secret needs the key \"{key}\""),
                ));
            }
        }
    }
}

pub(super) fn is_base64(s: &str) -> bool {
    crate::kube::decode_base64(s).is_some()
}

pub(super) fn check_service(svc: &Service, out: &mut Vec<Finding>) {
    let spec = p("spec");
    let is_external = svc.spec.r#type.as_deref() == Some("ExternalName");
    if svc.spec.ports.is_empty() && !is_external {
        out.push(Finding::error(
            spec.field("ports"),
            "a Service needs at least one port",
        ));
    }
    if let Some(t) = &svc.spec.r#type {
        const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
        if !TYPES.contains(&t.as_str()) {
            let mut f = Finding::error(
                spec.field("type"),
                format!("\"{t}\" is not one of {}", TYPES.join(", ")),
            );
            if let Some(close) = crate::problem::closest(t, TYPES.iter().copied()) {
                f = f.hint(format!("did you mean {close}?"));
            }
            out.push(f);
        }
    }
    let multi = svc.spec.ports.len() > 1;
    let mut names = BTreeSet::new();
    for (i, port) in svc.spec.ports.iter().enumerate() {
        let path = spec.field("ports").index(i);
        check_port_number(i64::from(port.port), &path.field("port"), out);
        match &port.name {
            None if multi => out.push(
                Finding::error(
                    path.field("name"),
                    "a Service with several ports must name each one",
                )
                .hint("Istio reads the protocol from the name: http, https, tcp, grpc, tls, …"),
            ),
            Some(n) => {
                if let Err(e) = validate_dns_label(n) {
                    out.push(Finding::error(path.field("name"), format!("\"{n}\": {e}")));
                }
                if !names.insert(n.clone()) {
                    out.push(Finding::error(
                        path.field("name"),
                        format!("duplicate port name \"{n}\""),
                    ));
                }
            }
            None => {}
        }
        match &port.target_port {
            Some(IntOrString::Int(n)) => check_port_number(*n, &path.field("targetPort"), out),
            Some(IntOrString::String(n)) if n.is_empty() || n.len() > 15 => {
                out.push(Finding::error(
                    path.field("targetPort"),
                    format!("\"{n}\" must be a port number or a port name of 1 to 15 characters"),
                ))
            }
            _ => {}
        }
        if let Some(proto) = &port.protocol {
            if !["TCP", "UDP", "SCTP"].contains(&proto.as_str()) {
                out.push(Finding::error(
                    path.field("protocol"),
                    format!("\"{proto}\" is not one of TCP, UDP, SCTP"),
                ));
            }
        }
    }
    check_labels(&svc.spec.selector, &spec.field("selector"), out);
}

pub(super) fn check_template(t: &PodTemplateSpec, path: &FieldPath, out: &mut Vec<Finding>) {
    check_labels(
        &t.metadata.labels,
        &path.field("metadata").field("labels"),
        out,
    );
    check_annotations(&t.metadata, &path.field("metadata"), out);
    check_pod_spec(&t.spec, &path.field("spec"), out);
}

pub(super) fn check_pod_spec(spec: &PodSpec, path: &FieldPath, out: &mut Vec<Finding>) {
    if spec.containers.is_empty() {
        out.push(Finding::error(
            path.field("containers"),
            "a pod needs at least one container",
        ));
    }
    let volumes: BTreeSet<&str> = spec.volumes.iter().map(|v| v.name.as_str()).collect();
    let mut names = BTreeSet::new();
    let all = spec
        .init_containers
        .iter()
        .enumerate()
        .map(|(i, c)| (path.field("initContainers").index(i), c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (path.field("containers").index(i), c)),
        );
    for (cpath, c) in all {
        check_container(c, &cpath, &volumes, out);
        if !c.name.is_empty() && !names.insert(c.name.clone()) {
            out.push(Finding::error(
                cpath.field("name"),
                format!("duplicate container name \"{}\"", c.name),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        check_volume(v, &path.field("volumes").index(i), out);
        if !seen.insert(v.name.as_str()) {
            out.push(Finding::error(
                path.field("volumes").index(i).field("name"),
                format!("duplicate volume name \"{}\"", v.name),
            ));
        }
    }
}

pub(super) fn check_container(
    c: &Container,
    path: &FieldPath,
    volumes: &BTreeSet<&str>,
    out: &mut Vec<Finding>,
) {
    if c.name.is_empty() {
        out.push(Finding::error(
            path.field("name"),
            "missing required field \"name\"",
        ));
    } else if let Err(e) = validate_dns_label(&c.name) {
        out.push(Finding::error(
            path.field("name"),
            format!("\"{}\": {e}", c.name),
        ));
    }
    if c.image.as_deref().is_none_or(str::is_empty) {
        out.push(Finding::error(
            path.field("image"),
            "missing required field \"image\"",
        ));
    }
    for (i, port) in c.ports.iter().enumerate() {
        check_port_number(
            i64::from(port.container_port),
            &path.field("ports").index(i).field("containerPort"),
            out,
        );
    }
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let mpath = path.field("volumeMounts").index(i);
        check_mount(m, &mpath, out);
        if !m.name.is_empty() && !volumes.contains(m.name.as_str()) {
            out.push(Finding::error(
                mpath.field("name"),
                format!("no volume named \"{}\" in the pod's spec.volumes", m.name),
            ));
        }
    }
    for (i, e) in c.env.iter().enumerate() {
        if e.name.is_empty() {
            out.push(Finding::error(
                path.field("env").index(i).field("name"),
                "missing required field \"name\"",
            ));
        }
    }
}

pub(super) fn check_mount(m: &VolumeMount, path: &FieldPath, out: &mut Vec<Finding>) {
    if m.name.is_empty() {
        out.push(Finding::error(
            path.field("name"),
            "missing required field \"name\"",
        ));
    }
    if m.mount_path.is_empty() {
        out.push(Finding::error(
            path.field("mountPath"),
            "missing required field \"mountPath\"",
        ));
    } else if !m.mount_path.starts_with('/') {
        out.push(Finding::error(
            path.field("mountPath"),
            format!("\"{}\" must be an absolute path", m.mount_path),
        ));
    }
}

pub(super) fn check_volume(v: &Volume, path: &FieldPath, out: &mut Vec<Finding>) {
    if v.name.is_empty() {
        out.push(Finding::error(
            path.field("name"),
            "missing required field \"name\"",
        ));
    }
    let sources = [
        v.secret.is_some(),
        v.config_map.is_some(),
        v.empty_dir.is_some(),
        v.host_path.is_some(),
        v.projected.is_some(),
        v.downward_api.is_some(),
        v.persistent_volume_claim.is_some(),
        v.csi.is_some(),
        v.ephemeral.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources > 1 {
        out.push(Finding::error(
            path.clone(),
            "a volume must have exactly one source",
        ));
    }
    if let Some(s) = &v.secret {
        if s.secret_name.is_empty() {
            out.push(Finding::error(
                path.field("secret").field("secretName"),
                "missing required field \"secretName\"",
            ));
        }
    }
    if let Some(c) = &v.config_map {
        if c.name.is_empty() {
            out.push(Finding::error(
                path.field("configMap").field("name"),
                "missing required field \"name\"",
            ));
        }
    }
}

/// Istio's pod annotations that carry structured values.
pub(super) fn check_annotations(meta: &ObjectMeta, path: &FieldPath, out: &mut Vec<Finding>) {
    out.extend(check_sidecar_annotations(
        &meta.annotations,
        &path.field("annotations"),
    ));
}

/// Checks `sidecar.istio.io/userVolume` (JSON: volume name → Volume), `userVolumeMount`
/// (JSON: volume name → VolumeMount) and `inject` (true/false).
pub fn check_sidecar_annotations(
    annotations: &BTreeMap<String, String>,
    path: &FieldPath,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut volumes = BTreeSet::new();
    if let Some(text) = annotations.get(USER_VOLUME_ANNOTATION) {
        let apath = path.key(USER_VOLUME_ANNOTATION);
        match serde_json::from_str::<BTreeMap<String, Volume>>(text) {
            Ok(map) => {
                for (name, volume) in &map {
                    volumes.insert(name.clone());
                    let mut v = volume.clone();
                    v.name = name.clone();
                    check_volume(&v, &apath.key(name), &mut out);
                }
            }
            Err(e) => out.push(
                Finding::error(
                    apath,
                    format!("not a JSON map of volume name to volume: {e}"),
                )
                .hint(r#"e.g. '{"tls-secret":{"secret":{"secretName":"my-secret"}}}'"#),
            ),
        }
    }
    if let Some(text) = annotations.get(USER_VOLUME_MOUNT_ANNOTATION) {
        let apath = path.key(USER_VOLUME_MOUNT_ANNOTATION);
        match serde_json::from_str::<BTreeMap<String, VolumeMount>>(text) {
            Ok(map) => {
                for (name, mount) in &map {
                    let mut m = mount.clone();
                    m.name = name.clone();
                    check_mount(&m, &apath.key(name), &mut out);
                    if annotations.contains_key(USER_VOLUME_ANNOTATION) && !volumes.contains(name) {
                        out.push(Finding::error(
                            apath.key(name),
                            format!("mounts \"{name}\", which {USER_VOLUME_ANNOTATION} does not define"),
                        ));
                    }
                }
            }
            Err(e) => out.push(
                Finding::error(apath, format!("not a JSON map of volume name to mount: {e}"))
                    .hint(r#"e.g. '{"tls-secret":{"mountPath":"/etc/istio/tls-certs/","readOnly":true}}'"#),
            ),
        }
    }
    if let Some(v) = annotations.get(INJECT_ANNOTATION) {
        if v != "true" && v != "false" {
            out.push(Finding::error(
                path.key(INJECT_ANNOTATION),
                format!("\"{v}\" is not one of true, false"),
            ));
        }
    }
    out
}
