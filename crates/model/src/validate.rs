//! Semantic checks: what types alone cannot say. Messages follow Istio's and Kubernetes'
//! own texts where users know them, and each says what is allowed or how to fix it.

use std::collections::{BTreeMap, BTreeSet};

use crate::istio::{
    ClientTlsMode, ClientTlsSettings, DestinationRule, Gateway, HttpRoute, LegacyPolicySpec,
    LegacyTargetSelector, PeerAuthentication, ServerTlsMode, ServerTlsSettings, Sidecar,
    StringMatch, VirtualService,
};
use crate::kube::{Container, PodSpec, PodTemplateSpec, Secret, Service, Volume, VolumeMount};
use crate::meta::{
    subset, validate_dns_label, validate_dns_subdomain, validate_label_key, validate_label_value,
    IntOrString, ObjectMeta,
};
use crate::names::{INJECT_ANNOTATION, USER_VOLUME_ANNOTATION, USER_VOLUME_MOUNT_ANNOTATION};
use crate::problem::{FieldPath, Finding};
use crate::resource::{Kind, Resource};

#[derive(Debug, Clone)]
pub struct ValidateOptions {
    /// Istio's mesh root namespace (meshConfig `rootNamespace`).
    pub root_namespace: String,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        ValidateOptions {
            root_namespace: "istio-system".to_string(),
        }
    }
}

/// Gateway and Sidecar server protocols Istio accepts.
pub const SERVER_PROTOCOLS: &[&str] = &[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "REDIS", "MYSQL", "UDP",
];

fn p(s: &str) -> FieldPath {
    FieldPath::parse(s)
}

/// Runs every semantic check that applies to the resource.
pub fn check(resource: &Resource, opts: &ValidateOptions) -> Vec<Finding> {
    let mut out = Vec::new();
    check_meta(resource.kind(), resource.metadata(), &mut out);
    match resource {
        Resource::Namespace(_) | Resource::ServiceAccount(_) | Resource::ConfigMap(_) => {}
        Resource::Secret(s) => check_secret(s, &mut out),
        Resource::Service(s) => check_service(s, &mut out),
        Resource::Deployment(d) => {
            let spec = p("spec");
            if d.spec.selector.is_empty() {
                out.push(
                    Finding::error(spec.field("selector"), "missing required field: a Deployment needs spec.selector")
                        .hint("set spec.selector.matchLabels to the labels of spec.template.metadata.labels"),
                );
            } else if !d.spec.selector.matches(&d.spec.template.metadata.labels) {
                out.push(Finding::error(
                    spec.field("template").field("metadata").field("labels"),
                    "`selector` does not match template `labels`",
                ).hint("every spec.selector.matchLabels entry must appear in spec.template.metadata.labels"));
            }
            check_replicas(d.spec.replicas, &spec, &mut out);
            check_template(&d.spec.template, &spec.field("template"), &mut out);
        }
        Resource::ReplicationController(rc) => {
            let spec = p("spec");
            if !rc.spec.selector.is_empty()
                && !subset(&rc.spec.selector, &rc.spec.template.metadata.labels)
            {
                out.push(Finding::error(
                    spec.field("template").field("metadata").field("labels"),
                    "`selector` does not match template `labels`",
                ));
            }
            if rc.spec.selector.is_empty() && rc.spec.template.metadata.labels.is_empty() {
                out.push(Finding::error(
                    spec.field("template").field("metadata").field("labels"),
                    "a ReplicationController needs spec.selector or template labels to find its pods",
                ));
            }
            check_replicas(rc.spec.replicas, &spec, &mut out);
            check_template(&rc.spec.template, &spec.field("template"), &mut out);
        }
        Resource::Pod(pod) => {
            check_annotations(&pod.metadata, &p("metadata"), &mut out);
            check_pod_spec(&pod.spec, &p("spec"), &mut out);
        }
        Resource::PeerAuthentication(pa) => check_peer_authentication(pa, opts, &mut out),
        Resource::Policy(policy) => {
            check_legacy_policy(&policy.metadata, &policy.spec, false, &mut out)
        }
        Resource::MeshPolicy(policy) => {
            check_legacy_policy(&policy.metadata, &policy.spec, true, &mut out)
        }
        Resource::DestinationRule(dr) => check_destination_rule(dr, &mut out),
        Resource::Sidecar(sc) => check_sidecar(sc, &mut out),
        Resource::Gateway(gw) => check_gateway(gw, &mut out),
        Resource::VirtualService(vs) => check_virtual_service(vs, &mut out),
    }
    out
}

fn check_meta(kind: Kind, meta: &ObjectMeta, out: &mut Vec<Finding>) {
    let path = p("metadata");
    if meta.name.is_empty() {
        if meta.generate_name.is_none() {
            out.push(Finding::error(
                path.field("name"),
                "missing required field \"name\"",
            ));
        }
    } else {
        let result = match kind {
            Kind::Namespace | Kind::Service => validate_dns_label(&meta.name),
            _ => validate_dns_subdomain(&meta.name),
        };
        if let Err(e) = result {
            out.push(Finding::error(
                path.field("name"),
                format!("\"{}\": {e}", meta.name),
            ));
        }
    }
    if let Some(ns) = &meta.namespace {
        if let Err(e) = validate_dns_label(ns) {
            out.push(Finding::error(
                path.field("namespace"),
                format!("\"{ns}\": {e}"),
            ));
        }
    }
    check_labels(&meta.labels, &path.field("labels"), out);
    for key in meta.annotations.keys() {
        if let Err(e) = validate_label_key(key) {
            out.push(Finding::error(
                path.field("annotations").key(key),
                format!("invalid annotation key \"{key}\": {e}"),
            ));
        }
    }
}

fn check_labels(labels: &BTreeMap<String, String>, path: &FieldPath, out: &mut Vec<Finding>) {
    for (k, v) in labels {
        if let Err(e) = validate_label_key(k) {
            out.push(Finding::error(
                path.key(k),
                format!("invalid label key \"{k}\": {e}"),
            ));
        }
        if let Err(e) = validate_label_value(v) {
            out.push(Finding::error(
                path.key(k),
                format!("invalid label value \"{v}\": {e}"),
            ));
        }
    }
}

fn check_port_number(n: i64, path: &FieldPath, out: &mut Vec<Finding>) {
    if !(1..=65535).contains(&n) {
        out.push(Finding::error(
            path.clone(),
            format!("port {n} must be in range 1..65535"),
        ));
    }
}

fn check_replicas(replicas: Option<i32>, spec: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(r) = replicas.filter(|r| *r < 0) {
        out.push(Finding::error(
            spec.field("replicas"),
            format!("{r} must be greater than or equal to 0"),
        ));
    }
}

// ------------------------------------------------------------------ Kubernetes kinds

fn check_secret(secret: &Secret, out: &mut Vec<Finding>) {
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

fn is_base64(s: &str) -> bool {
    crate::kube::decode_base64(s).is_some()
}

fn check_service(svc: &Service, out: &mut Vec<Finding>) {
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

fn check_template(t: &PodTemplateSpec, path: &FieldPath, out: &mut Vec<Finding>) {
    check_labels(
        &t.metadata.labels,
        &path.field("metadata").field("labels"),
        out,
    );
    check_annotations(&t.metadata, &path.field("metadata"), out);
    check_pod_spec(&t.spec, &path.field("spec"), out);
}

fn check_pod_spec(spec: &PodSpec, path: &FieldPath, out: &mut Vec<Finding>) {
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

fn check_container(
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

fn check_mount(m: &VolumeMount, path: &FieldPath, out: &mut Vec<Finding>) {
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

fn check_volume(v: &Volume, path: &FieldPath, out: &mut Vec<Finding>) {
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
fn check_annotations(meta: &ObjectMeta, path: &FieldPath, out: &mut Vec<Finding>) {
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

// ---------------------------------------------------------------- security / authn

fn check_peer_authentication(
    pa: &PeerAuthentication,
    opts: &ValidateOptions,
    out: &mut Vec<Finding>,
) {
    let spec = p("spec");
    let has_selector = pa
        .spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if let Some(ports) = &pa.spec.port_level_mtls {
        let path = spec.field("portLevelMtls");
        if !has_selector {
            out.push(
                Finding::error(path.clone(), "mesh/namespace peer authentication cannot have port level mTLS")
                    .hint("portLevelMtls requires selector: add spec.selector.matchLabels naming the workloads, or move the port setting to a workload policy"),
            );
        }
        if ports.is_empty() {
            out.push(Finding::error(
                path.clone(),
                "port level mTLS must have at least one element",
            ));
        }
        for port in ports.keys() {
            if !(1..=65535).contains(port) {
                out.push(Finding::error(
                    path.key(&port.to_string()),
                    format!("port {port} must be in range 1..65535"),
                ));
            }
        }
    }
    if has_selector && pa.metadata.namespace.as_deref() == Some(opts.root_namespace.as_str()) {
        out.push(
            Finding::warning(
                spec.field("selector"),
                format!(
                    "a PeerAuthentication with a selector in the root namespace {} is ignored",
                    opts.root_namespace
                ),
            )
            .hint(
                "put it in the workload's namespace, or remove the selector to make it mesh-wide",
            ),
        );
    }
    if let Some(sel) = &pa.spec.selector {
        check_labels(
            &sel.match_labels,
            &spec.field("selector").field("matchLabels"),
            out,
        );
    }
}

const LEGACY_DEFAULT_NAME: &str = "default";

/// Istio 1.4's admission checks for a v1alpha1 `Policy` (`is_mesh_policy` false) or
/// `MeshPolicy`, with its texts byte for byte (including the double space in the first
/// one). A target port names a number, else a name; one with neither is reported by
/// [`validate`] itself. The control plane skips policies that fail these.
pub fn legacy_policy_errors(
    name: &str,
    is_mesh_policy: bool,
    targets: &[LegacyTargetSelector],
) -> Vec<(FieldPath, String)> {
    let mut errs = Vec::new();
    if is_mesh_policy {
        if name != LEGACY_DEFAULT_NAME {
            errs.push((
                FieldPath::parse("metadata.name"),
                format!(
                    "cluster-scoped authentication policy name must be {LEGACY_DEFAULT_NAME:?}, found {name:?}"
                ),
            ));
        }
        if !targets.is_empty() {
            errs.push((
                FieldPath::parse("spec.targets"),
                "cluster-scoped authentication policy must not have targets".to_string(),
            ));
        }
        return errs;
    }
    if targets.is_empty() && name != LEGACY_DEFAULT_NAME {
        errs.push((
            FieldPath::parse("metadata.name"),
            format!(
                "authentication policy with no target rules  must be named {LEGACY_DEFAULT_NAME:?}, found {name:?}"
            ),
        ));
    }
    if !targets.is_empty() && name == LEGACY_DEFAULT_NAME {
        errs.push((
            FieldPath::parse("spec.targets"),
            format!("authentication policy with name {name:?} must not have any target rules"),
        ));
    }
    let is_label = |s: &str| crate::meta::validate_dns_label(s).is_ok();
    for (i, t) in targets.iter().enumerate() {
        let target = FieldPath::parse("spec.targets").index(i);
        if !is_label(&t.name) {
            errs.push((
                target.field("name"),
                format!("target name {:?} must be a valid label", t.name),
            ));
        }
        for (j, sel) in t.ports.iter().enumerate() {
            let port = target.field("ports").index(j);
            match (sel.number, sel.name.as_deref()) {
                (Some(n), _) if n == 0 || n > 65535 => {
                    errs.push((
                        port.field("number"),
                        format!("port number {n} must be in the range 1..65535"),
                    ));
                }
                (Some(_), _) => {}
                // 1.4 reused the DestinationRule subset-name check here, hence the wording.
                (None, Some("")) => {
                    errs.push((
                        port.field("name"),
                        "subset name cannot be empty".to_string(),
                    ));
                }
                (None, Some(n)) if !is_label(n) => {
                    errs.push((port.field("name"), format!("subset name is invalid: {n}")));
                }
                _ => {}
            }
        }
    }
    errs
}

fn check_legacy_policy(
    meta: &ObjectMeta,
    spec: &LegacyPolicySpec,
    mesh: bool,
    out: &mut Vec<Finding>,
) {
    for (path, message) in legacy_policy_errors(&meta.name, mesh, &spec.targets) {
        let mut f = Finding::error(path, message);
        if !mesh && spec.targets.is_empty() {
            f = f.hint("name it \"default\" to apply to the whole namespace, or add spec.targets");
        }
        out.push(f);
    }
    for (i, t) in spec.targets.iter().enumerate() {
        for (j, port) in t.ports.iter().enumerate() {
            if port.number.is_none() && port.name.is_none() {
                out.push(Finding::error(
                    p("spec.targets").index(i).field("ports").index(j),
                    "a port selector needs `number` or `name`",
                ));
            }
        }
    }
    for (i, peer) in spec.peers.iter().enumerate() {
        if peer.mtls.is_none() && peer.jwt.is_none() {
            out.push(Finding::error(
                p("spec.peers").index(i),
                "a peer method needs `mtls` (or `jwt`)",
            ));
        }
    }
}

// ------------------------------------------------------------------ networking

fn check_client_tls(tls: &ClientTlsSettings, path: &FieldPath, out: &mut Vec<Finding>) {
    let has_files = tls.client_certificate.is_some()
        || tls.private_key.is_some()
        || tls.ca_certificates.is_some();
    match tls.mode {
        ClientTlsMode::IstioMutual => {
            for (field, set) in [
                ("clientCertificate", tls.client_certificate.is_some()),
                ("privateKey", tls.private_key.is_some()),
                ("caCertificates", tls.ca_certificates.is_some()),
                ("credentialName", tls.credential_name.is_some()),
            ] {
                if set {
                    out.push(Finding::error(
                        path.field(field),
                        format!("ISTIO_MUTUAL TLS cannot have associated {field}: the mesh certificates are used"),
                    ));
                }
            }
        }
        ClientTlsMode::Mutual if tls.credential_name.is_none() => {
            if tls.client_certificate.is_none() {
                out.push(
                    Finding::error(
                        path.field("clientCertificate"),
                        "client certificate required for mutual tls",
                    )
                    .hint("or set credentialName"),
                );
            }
            if tls.private_key.is_none() {
                out.push(
                    Finding::error(
                        path.field("privateKey"),
                        "private key required for mutual tls",
                    )
                    .hint("or set credentialName"),
                );
            }
        }
        ClientTlsMode::Disable if has_files || tls.credential_name.is_some() => {
            out.push(Finding::warning(
                path.field("mode"),
                "certificates are ignored when mode is DISABLE",
            ));
        }
        _ => {}
    }
}

fn check_destination_rule(dr: &DestinationRule, out: &mut Vec<Finding>) {
    let spec = p("spec");
    if dr.spec.host.is_empty() {
        out.push(
            Finding::error(spec.field("host"), "missing required field \"host\"")
                .hint("the service name, e.g. httpbin.full.svc.cluster.local"),
        );
    }
    let check_policy =
        |tp: &crate::istio::TrafficPolicy, path: FieldPath, out: &mut Vec<Finding>| {
            if let Some(tls) = &tp.tls {
                check_client_tls(tls, &path.field("tls"), out);
            }
            for (i, pl) in tp.port_level_settings.iter().enumerate() {
                let ppath = path.field("portLevelSettings").index(i);
                match &pl.port {
                    None => out.push(Finding::error(
                        ppath.field("port"),
                        "port must be specified",
                    )),
                    Some(port) => check_port_number(
                        i64::from(port.number),
                        &ppath.field("port").field("number"),
                        out,
                    ),
                }
                if let Some(tls) = &pl.tls {
                    check_client_tls(tls, &ppath.field("tls"), out);
                }
            }
        };
    if let Some(tp) = &dr.spec.traffic_policy {
        check_policy(tp, spec.field("trafficPolicy"), out);
    }
    let mut names = BTreeSet::new();
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        let path = spec.field("subsets").index(i);
        if s.name.is_empty() {
            out.push(Finding::error(
                path.field("name"),
                "missing required field \"name\"",
            ));
        } else if !names.insert(s.name.as_str()) {
            out.push(Finding::error(
                path.field("name"),
                format!("duplicate subset name \"{}\"", s.name),
            ));
        }
        if let Some(tp) = &s.traffic_policy {
            check_policy(tp, path.field("trafficPolicy"), out);
        }
    }
}

/// TLS checks shared by Gateway servers and Sidecar ingress listeners.
fn check_server_tls_files(tls: &ServerTlsSettings, path: &FieldPath, out: &mut Vec<Finding>) {
    let mode = tls.effective_mode();
    let credential = tls.credential_name.is_some()
        || !tls.credential_names.is_empty()
        || tls.tls_certificates.is_some();
    match mode {
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if !credential {
                let how =
                    "set serverCertificate and privateKey (files), or credentialName (a Secret)";
                if tls.server_certificate.is_none() {
                    out.push(
                        Finding::error(
                            path.field("serverCertificate"),
                            format!("{} TLS requires a server certificate", mode_name(mode)),
                        )
                        .hint(how),
                    );
                }
                if tls.private_key.is_none() {
                    out.push(
                        Finding::error(
                            path.field("privateKey"),
                            format!("{} TLS requires a private key", mode_name(mode)),
                        )
                        .hint(how),
                    );
                }
                if mode != ServerTlsMode::Simple && tls.ca_certificates.is_none() {
                    out.push(
                        Finding::error(
                            path.field("caCertificates"),
                            "MUTUAL TLS requires a client CA bundle",
                        )
                        .hint("set caCertificates to a file of trusted client CA certificates"),
                    );
                }
            }
        }
        ServerTlsMode::IstioMutual => {
            for (field, set) in [
                ("serverCertificate", tls.server_certificate.is_some()),
                ("privateKey", tls.private_key.is_some()),
                ("caCertificates", tls.ca_certificates.is_some()),
                ("credentialName", tls.credential_name.is_some()),
            ] {
                if set {
                    out.push(Finding::error(
                        path.field(field),
                        format!("ISTIO_MUTUAL TLS cannot have associated {field}"),
                    ));
                }
            }
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            if tls.server_certificate.is_some()
                || tls.private_key.is_some()
                || tls.ca_certificates.is_some()
                || credential
            {
                out.push(Finding::warning(
                    path.field("mode"),
                    format!(
                        "{} does not terminate TLS: the certificates are ignored",
                        mode_name(mode)
                    ),
                ));
            }
        }
    }
    let sources = [
        tls.credential_name.is_some(),
        !tls.credential_names.is_empty(),
        tls.server_certificate.is_some() || tls.private_key.is_some(),
        tls.tls_certificates.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources > 1 {
        out.push(Finding::error(path.clone(), "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified"));
    }
}

fn mode_name(mode: ServerTlsMode) -> &'static str {
    match mode {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

fn check_protocol(protocol: &str, path: &FieldPath, out: &mut Vec<Finding>) {
    if !SERVER_PROTOCOLS.contains(&protocol.to_ascii_uppercase().as_str()) {
        out.push(Finding::error(
            path.clone(),
            format!(
                "unrecognized protocol \"{protocol}\"; supported: {}",
                SERVER_PROTOCOLS.join(", ")
            ),
        ));
    }
}

fn check_sidecar(sc: &Sidecar, out: &mut Vec<Finding>) {
    let spec = p("spec");
    let mut ports = BTreeSet::new();
    for (i, l) in sc.spec.ingress.iter().enumerate() {
        let path = spec.field("ingress").index(i);
        check_port_number(
            i64::from(l.port.number),
            &path.field("port").field("number"),
            out,
        );
        if !ports.insert(l.port.number) {
            out.push(Finding::error(
                path.field("port").field("number"),
                format!(
                    "sidecar: ports on ingress listeners must be unique: duplicate {}",
                    l.port.number
                ),
            ));
        }
        if l.port.protocol.is_empty() {
            out.push(Finding::error(
                path.field("port").field("protocol"),
                "missing required field \"protocol\"",
            ));
        } else {
            check_protocol(&l.port.protocol, &path.field("port").field("protocol"), out);
        }
        if let Some(ep) = &l.default_endpoint {
            if !valid_default_endpoint(ep) {
                out.push(Finding::error(path.field("defaultEndpoint"), format!("\"{ep}\" is not an allowed default endpoint; use 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix:///path")));
            }
        }
        if let Some(tls) = &l.tls {
            let tpath = path.field("tls");
            let proto = l.port.protocol.to_ascii_uppercase();
            if proto != "HTTPS" && proto != "TLS" {
                out.push(
                    Finding::error(tpath.clone(), format!("server cannot have TLS settings for non HTTPS/TLS ports (port {} is {})", l.port.number, if l.port.protocol.is_empty() { "unset" } else { &l.port.protocol }))
                        .hint(format!("set {} to HTTPS", path.field("port").field("protocol"))),
                );
            }
            let mode = tls.effective_mode();
            if matches!(
                mode,
                ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough
            ) {
                out.push(Finding::error(tpath.field("mode"), format!("configuration is invalid: cannot set mode to {} in sidecar ingress tls", mode_name(mode))).hint("use SIMPLE or MUTUAL"));
            }
            if tls.https_redirect {
                out.push(Finding::error(
                    tpath.field("httpsRedirect"),
                    "sidecar: httpsRedirect is not supported",
                ));
            }
            if tls.credential_name.is_some() {
                out.push(Finding::error(tpath.field("credentialName"), "sidecar: credentialName is not currently supported").hint("mount the Secret with the sidecar.istio.io/userVolume and userVolumeMount annotations and give file paths"));
            }
            if !tls.credential_names.is_empty() {
                out.push(Finding::error(
                    tpath.field("credentialNames"),
                    "sidecar: credentialNames is not currently supported",
                ));
            }
            if tls.tls_certificates.is_some() {
                out.push(Finding::error(
                    tpath.field("tlsCertificates"),
                    "sidecar: tls_certificates is not currently supported",
                ));
            }
            if !tls.subject_alt_names.is_empty() {
                out.push(Finding::error(
                    tpath.field("subjectAltNames"),
                    "sidecar: subjectAltNames is not supported in ingress tls",
                ));
            }
            if tls.credential_name.is_none()
                && tls.credential_names.is_empty()
                && tls.tls_certificates.is_none()
            {
                check_server_tls_files(tls, &tpath, out);
            }
        }
    }
}

fn valid_default_endpoint(ep: &str) -> bool {
    if let Some(path) = ep.strip_prefix("unix://") {
        return path.starts_with('/');
    }
    ["127.0.0.1:", "0.0.0.0:", "[::1]:", "[::]:"]
        .iter()
        .any(|prefix| {
            ep.strip_prefix(prefix)
                .and_then(|port| port.parse::<u16>().ok())
                .is_some_and(|p| p > 0)
        })
}

fn check_gateway(gw: &Gateway, out: &mut Vec<Finding>) {
    let spec = p("spec");
    if gw.metadata.name.contains('.') {
        out.push(Finding::error(
            p("metadata.name"),
            "invalid gateway name: it must not contain a dot",
        ));
    }
    if gw.spec.servers.is_empty() {
        out.push(Finding::error(
            spec.field("servers"),
            "gateway must have at least one server",
        ));
    }
    let mut port_names = BTreeMap::new();
    for (i, s) in gw.spec.servers.iter().enumerate() {
        let path = spec.field("servers").index(i);
        check_port_number(
            i64::from(s.port.number),
            &path.field("port").field("number"),
            out,
        );
        if s.port.target_port.is_some() {
            out.push(
                Finding::error(
                    path.field("port").field("targetPort"),
                    "targetPort has no impact on Gateways",
                )
                .hint("remove it; the gateway Service maps ports to the gateway pod"),
            );
        }
        if !s.port.name.is_empty() {
            if let Some(first) = port_names.insert(s.port.name.clone(), i) {
                out.push(Finding::error(path.field("port").field("name"), format!("port names in servers must be unique: duplicate name {} (also spec.servers[{first}])", s.port.name)));
            }
        }
        if s.hosts.is_empty() {
            out.push(Finding::error(
                path.field("hosts"),
                "server config must contain at least one host",
            ));
        }
        for (j, h) in s.hosts.iter().enumerate() {
            if h.is_empty() {
                out.push(Finding::error(
                    path.field("hosts").index(j),
                    "host must not be empty",
                ));
            }
        }
        let proto = s.port.protocol.to_ascii_uppercase();
        if s.port.protocol.is_empty() {
            out.push(Finding::error(
                path.field("port").field("protocol"),
                "missing required field \"protocol\"",
            ));
        } else {
            check_protocol(&s.port.protocol, &path.field("port").field("protocol"), out);
        }
        let tpath = path.field("tls");
        match (&s.tls, proto.as_str()) {
            (None, "HTTPS" | "TLS") => out.push(
                Finding::error(
                    tpath,
                    "server must have TLS settings for HTTPS/TLS protocols",
                )
                .hint(
                    "add tls with mode SIMPLE (and serverCertificate/privateKey or credentialName)",
                ),
            ),
            (Some(tls), "HTTP") => {
                let only_redirect = tls.mode.is_none()
                    && tls.server_certificate.is_none()
                    && tls.private_key.is_none()
                    && tls.ca_certificates.is_none()
                    && tls.credential_name.is_none();
                if !only_redirect {
                    out.push(
                        Finding::error(
                            tpath,
                            "server cannot have TLS settings for plain text HTTP ports",
                        )
                        .hint("only tls.httpsRedirect is allowed on an HTTP server"),
                    );
                }
            }
            (Some(tls), "HTTPS" | "TLS") => {
                if tls.https_redirect {
                    out.push(Finding::warning(
                        tpath.field("httpsRedirect"),
                        "tls.httpsRedirect only has an effect on HTTP servers",
                    ));
                }
                check_server_tls_files(tls, &tpath, out);
            }
            (Some(_), p) if !p.is_empty() => out.push(Finding::error(
                tpath,
                "server cannot have TLS settings for non HTTPS/TLS ports",
            )),
            _ => {}
        }
    }
}

fn check_virtual_service(vs: &VirtualService, out: &mut Vec<Finding>) {
    let spec = p("spec");
    if vs.spec.hosts.is_empty() {
        out.push(Finding::error(
            spec.field("hosts"),
            "virtual service must have at least one host",
        ));
    }
    if vs.spec.http.is_empty() && vs.spec.tls.is_empty() && vs.spec.tcp.is_empty() {
        out.push(Finding::error(
            spec.clone(),
            "http, tcp or tls must be provided in virtual service",
        ));
    }
    for (i, route) in vs.spec.http.iter().enumerate() {
        check_http_route(route, &spec.field("http").index(i), out);
    }
    for (i, route) in vs.spec.tls.iter().enumerate() {
        let path = spec.field("tls").index(i);
        if route.matches.is_empty() {
            out.push(Finding::error(
                path.field("match"),
                "TLS route must have at least one match condition",
            ));
        }
        for (j, m) in route.matches.iter().enumerate() {
            if m.sni_hosts.is_empty() {
                out.push(Finding::error(
                    path.field("match").index(j).field("sniHosts"),
                    "TLS match must have at least one SNI host",
                ));
            }
        }
        let dests: Vec<_> = route
            .route
            .iter()
            .map(|r| (r.destination.as_ref(), r.weight))
            .collect();
        check_destinations(&dests, &path.field("route"), out);
    }
    for (i, route) in vs.spec.tcp.iter().enumerate() {
        let path = spec.field("tcp").index(i);
        let dests: Vec<_> = route
            .route
            .iter()
            .map(|r| (r.destination.as_ref(), r.weight))
            .collect();
        check_destinations(&dests, &path.field("route"), out);
    }
}

fn check_http_route(route: &HttpRoute, path: &FieldPath, out: &mut Vec<Finding>) {
    let has_route = !route.route.is_empty();
    let alternatives =
        route.redirect.is_some() || route.direct_response.is_some() || route.delegate.is_some();
    if !has_route && !alternatives {
        out.push(
            Finding::error(
                path.field("route"),
                "HTTP route, redirect or direct response is required",
            )
            .hint("add route: - destination: {host: SERVICE}"),
        );
    }
    if has_route && route.redirect.is_some() {
        out.push(Finding::error(
            path.field("redirect"),
            "HTTP route cannot contain both route and redirect",
        ));
    }
    for (j, m) in route.matches.iter().enumerate() {
        let mpath = path.field("match").index(j);
        for (field, sm) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                check_string_match(sm, &mpath.field(field), out);
            }
        }
        for (name, sm) in &m.headers {
            check_string_match(sm, &mpath.field("headers").key(name), out);
        }
        if let Some(port) = m.port {
            check_port_number(i64::from(port), &mpath.field("port"), out);
        }
    }
    let dests: Vec<_> = route
        .route
        .iter()
        .map(|r| (r.destination.as_ref(), r.weight))
        .collect();
    check_destinations(&dests, &path.field("route"), out);
    let per_try = route
        .retries
        .as_ref()
        .and_then(|r| r.per_try_timeout.as_ref());
    for (dpath, value) in [
        (path.field("timeout"), route.timeout.as_ref()),
        (path.field("retries").field("perTryTimeout"), per_try),
    ] {
        if let Some(d) = value.filter(|d| crate::duration::parse(d).is_none()) {
            out.push(Finding::error(
                dpath,
                format!("\"{d}\" is not a duration; use e.g. 10s, 1.5s, 500ms, 1m"),
            ));
        }
    }
    if let Some(r) = &route.retries {
        if r.attempts < 0 {
            out.push(Finding::error(
                path.field("retries").field("attempts"),
                "attempts cannot be negative",
            ));
        }
    }
}

fn check_string_match(sm: &StringMatch, path: &FieldPath, out: &mut Vec<Finding>) {
    let set = [sm.exact.is_some(), sm.prefix.is_some(), sm.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        out.push(Finding::error(
            path.clone(),
            "exactly one of exact, prefix or regex must be set",
        ));
    }
}

fn check_destinations(
    dests: &[(Option<&crate::istio::Destination>, Option<i32>)],
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    for (i, (dest, weight)) in dests.iter().enumerate() {
        let dpath = path.index(i);
        match dest {
            None => out.push(
                Finding::error(dpath.field("destination"), "destination is required")
                    .hint("add destination: {host: SERVICE, port: {number: PORT}}"),
            ),
            Some(d) => {
                if d.host.is_empty() {
                    out.push(Finding::error(
                        dpath.field("destination").field("host"),
                        "destination must have a host",
                    ));
                }
                if let Some(port) = &d.port {
                    check_port_number(
                        i64::from(port.number),
                        &dpath.field("destination").field("port").field("number"),
                        out,
                    );
                }
            }
        }
        if let Some(w) = weight.filter(|w| *w < 0) {
            out.push(Finding::error(
                dpath.field("weight"),
                format!("weight {w} cannot be negative"),
            ));
        }
    }
    let any_weight = dests.iter().any(|(_, w)| w.is_some());
    if dests.len() > 1 || any_weight {
        let total: i64 = dests.iter().map(|(_, w)| i64::from(w.unwrap_or(0))).sum();
        let single_unweighted = dests.len() == 1 && !any_weight;
        if total != 100 && !single_unweighted {
            out.push(
                Finding::error(
                    path.clone(),
                    format!("total destination weight {total} != 100"),
                )
                .hint("the weights of a route's destinations must add up to 100"),
            );
        }
    }
}
