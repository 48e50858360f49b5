//! The kinds Tessera accepts, their API versions and spellings, and [`Resource`], one
//! loaded object of any kind.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::istio::{
    AuthorizationPolicy, DestinationRule, Gateway, MeshPolicy, PeerAuthentication, Policy, Sidecar,
    VirtualService,
};
use crate::kube::{
    ConfigMap, Deployment, Namespace, Pod, ReplicationController, Secret, Service, ServiceAccount,
};
use crate::meta::ObjectMeta;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum Kind {
    Namespace,
    ServiceAccount,
    Secret,
    ConfigMap,
    Service,
    Deployment,
    ReplicationController,
    Pod,
    PeerAuthentication,
    AuthorizationPolicy,
    Policy,
    MeshPolicy,
    DestinationRule,
    Sidecar,
    Gateway,
    VirtualService,
}

/// What is known of each kind: group, accepted versions (preferred first), scope and the
/// names people type for it.
#[derive(Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: Kind,
    pub name: &'static str,
    pub group: &'static str,
    pub versions: &'static [&'static str],
    pub namespaced: bool,
    /// Lowercase plural, as in `kubectl get <plural>`.
    pub plural: &'static str,
    pub short_names: &'static [&'static str],
    /// What an object of the kind is for, in a sentence (`kubectl explain`).
    pub summary: &'static str,
}

const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];

pub const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: Kind::Namespace,
        name: "Namespace",
        group: "",
        versions: &["v1"],
        namespaced: false,
        plural: "namespaces",
        short_names: &["ns"],
        summary: "A scope for names; its labels (istio-injection) choose sidecar injection for its pods.",
    },
    KindInfo {
        kind: Kind::ServiceAccount,
        name: "ServiceAccount",
        group: "",
        versions: &["v1"],
        namespaced: true,
        plural: "serviceaccounts",
        short_names: &["sa"],
        summary: "An identity for pods; the mesh CA names a workload spiffe://<trust-domain>/ns/<namespace>/sa/<name>.",
    },
    KindInfo {
        kind: Kind::Secret,
        name: "Secret",
        group: "",
        versions: &["v1"],
        namespaced: true,
        plural: "secrets",
        short_names: &[],
        summary: "Keys and certificates (type kubernetes.io/tls) or other data, mounted into pods or named by a Gateway's credentialName.",
    },
    KindInfo {
        kind: Kind::ConfigMap,
        name: "ConfigMap",
        group: "",
        versions: &["v1"],
        namespaced: true,
        plural: "configmaps",
        short_names: &["cm"],
        summary: "Configuration data, mounted into pods as files.",
    },
    KindInfo {
        kind: Kind::Service,
        name: "Service",
        group: "",
        versions: &["v1"],
        namespaced: true,
        plural: "services",
        short_names: &["svc"],
        summary: "A stable name and virtual IP in front of the pods its selector picks; the proxies route and balance to them.",
    },
    KindInfo {
        kind: Kind::Deployment,
        name: "Deployment",
        group: "apps",
        versions: &["v1"],
        namespaced: true,
        plural: "deployments",
        short_names: &["deploy"],
        summary: "Keeps the given number of replicas of a pod template running.",
    },
    KindInfo {
        kind: Kind::ReplicationController,
        name: "ReplicationController",
        group: "",
        versions: &["v1"],
        namespaced: true,
        plural: "replicationcontrollers",
        short_names: &["rc"],
        summary: "Keeps the given number of replicas of a pod template running (the older form of a Deployment).",
    },
    KindInfo {
        kind: Kind::Pod,
        name: "Pod",
        group: "",
        versions: &["v1"],
        namespaced: true,
        plural: "pods",
        short_names: &["po"],
        summary: "Containers that share a network namespace; with a sidecar, the istio-proxy container carries its traffic.",
    },
    KindInfo {
        kind: Kind::PeerAuthentication,
        name: "PeerAuthentication",
        group: "security.istio.io",
        versions: &["v1", "v1beta1"],
        namespaced: true,
        plural: "peerauthentications",
        short_names: &["pa"],
        summary: "Whether a workload's sidecar accepts plaintext, mutual TLS or both (mtls.mode DISABLE, PERMISSIVE, STRICT), mesh-wide, per namespace, per workload or per port.",
    },
    KindInfo {
        kind: Kind::AuthorizationPolicy,
        name: "AuthorizationPolicy",
        group: "security.istio.io",
        versions: &["v1", "v1beta1"],
        namespaced: true,
        plural: "authorizationpolicies",
        short_names: &["ap"],
        summary: "Who may call a workload with what: ALLOW, DENY or AUDIT rules on the caller's verified identity, namespace and address, and the request's host, port, method, path and headers.",
    },
    KindInfo {
        kind: Kind::Policy,
        name: "Policy",
        group: "authentication.istio.io",
        versions: &["v1alpha1"],
        namespaced: true,
        plural: "policies",
        short_names: &[],
        summary: "The authentication.istio.io/v1alpha1 policy of Istio 1.5 and before: peers [{mtls: {}}] (with mode PERMISSIVE or STRICT) for the targeted services of a namespace.",
    },
    KindInfo {
        kind: Kind::MeshPolicy,
        name: "MeshPolicy",
        group: "authentication.istio.io",
        versions: &["v1alpha1"],
        namespaced: false,
        plural: "meshpolicies",
        short_names: &[],
        summary: "The mesh-wide authentication.istio.io/v1alpha1 policy (named default) of Istio 1.5 and before.",
    },
    KindInfo {
        kind: Kind::DestinationRule,
        name: "DestinationRule",
        group: "networking.istio.io",
        versions: NETWORKING_VERSIONS,
        namespaced: true,
        plural: "destinationrules",
        short_names: &["dr"],
        summary: "What a client does when it sends to a host: TLS mode (ISTIO_MUTUAL, SIMPLE, MUTUAL, DISABLE), subsets, load balancing and connection pools.",
    },
    KindInfo {
        kind: Kind::Sidecar,
        name: "Sidecar",
        group: "networking.istio.io",
        versions: NETWORKING_VERSIONS,
        namespaced: true,
        plural: "sidecars",
        short_names: &[],
        summary: "Scopes a workload's sidecar: the ports it receives on (ingress, with TLS) and the hosts it may reach (egress).",
    },
    KindInfo {
        kind: Kind::Gateway,
        name: "Gateway",
        group: "networking.istio.io",
        versions: NETWORKING_VERSIONS,
        namespaced: true,
        plural: "gateways",
        short_names: &["gw"],
        summary: "Servers of an ingress gateway: ports, hosts and TLS (SIMPLE, MUTUAL, PASSTHROUGH, ISTIO_MUTUAL).",
    },
    KindInfo {
        kind: Kind::VirtualService,
        name: "VirtualService",
        group: "networking.istio.io",
        versions: NETWORKING_VERSIONS,
        namespaced: true,
        plural: "virtualservices",
        short_names: &["vs"],
        summary: "Routing for hosts: matches on HTTP, TLS (SNI) or TCP traffic and the destinations, weights, rewrites and faults that apply.",
    },
];

impl KindInfo {
    /// Whether objects of the kind have a status (and so a `status` subresource).
    pub fn has_status(&self) -> bool {
        !matches!(
            self.kind,
            Kind::ConfigMap | Kind::Secret | Kind::ServiceAccount
        )
    }

    /// The categories a kind is in (`kubectl get all`, `kubectl get istio-io`).
    pub fn categories(&self) -> Vec<String> {
        match self.group {
            "" | "apps" => match self.plural {
                "pods" | "services" | "deployments" | "replicationcontrollers" => {
                    vec!["all".into()]
                }
                _ => vec![],
            },
            g => {
                let short = g.split('.').next().unwrap_or(g);
                vec!["istio-io".into(), format!("{short}-istio-io")]
            }
        }
    }
}

impl Kind {
    pub fn info(self) -> &'static KindInfo {
        KINDS
            .iter()
            .find(|k| k.kind == self)
            .expect("every kind is in KINDS")
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn is_namespaced(self) -> bool {
        self.info().namespaced
    }

    /// Finds a kind from a manifest's `kind:` value (exact, case-sensitive as Kubernetes is).
    pub fn from_manifest(kind: &str) -> Option<Kind> {
        KINDS.iter().find(|k| k.name == kind).map(|k| k.kind)
    }

    /// Finds a kind from what people type on the command line: `svc`, `service`,
    /// `services`, `Service`, `peerauthentication`, `destinationrules.networking.istio.io`,
    /// `policies.authentication.istio.io`, `meshpolicies`.
    pub fn from_cli(word: &str) -> Option<Kind> {
        let lower = word.to_ascii_lowercase();
        let (name, group) = match lower.split_once('.') {
            Some((n, g)) => (n.to_string(), Some(g.to_string())),
            None => (lower, None),
        };
        KINDS
            .iter()
            .find(|k| {
                let name_ok = k.name.eq_ignore_ascii_case(&name)
                    || k.plural == name
                    || k.short_names.contains(&name.as_str());
                let group_ok = group.as_deref().is_none_or(|g| g == k.group);
                name_ok && group_ok
            })
            .map(|k| k.kind)
    }

    /// The `apiVersion` written when Tessera prints an object of this kind.
    pub fn preferred_api_version(self) -> String {
        let info = self.info();
        api_version(info.group, info.versions[0])
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// One object of any accepted kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Resource {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Secret(Secret),
    ConfigMap(ConfigMap),
    Service(Service),
    Deployment(Deployment),
    ReplicationController(ReplicationController),
    Pod(Pod),
    PeerAuthentication(PeerAuthentication),
    AuthorizationPolicy(AuthorizationPolicy),
    Policy(Policy),
    MeshPolicy(MeshPolicy),
    DestinationRule(DestinationRule),
    Sidecar(Sidecar),
    Gateway(Gateway),
    VirtualService(VirtualService),
}

macro_rules! each_resource {
    ($self:expr, $r:ident => $body:expr) => {
        match $self {
            Resource::Namespace($r) => $body,
            Resource::ServiceAccount($r) => $body,
            Resource::Secret($r) => $body,
            Resource::ConfigMap($r) => $body,
            Resource::Service($r) => $body,
            Resource::Deployment($r) => $body,
            Resource::ReplicationController($r) => $body,
            Resource::Pod($r) => $body,
            Resource::PeerAuthentication($r) => $body,
            Resource::AuthorizationPolicy($r) => $body,
            Resource::Policy($r) => $body,
            Resource::MeshPolicy($r) => $body,
            Resource::DestinationRule($r) => $body,
            Resource::Sidecar($r) => $body,
            Resource::Gateway($r) => $body,
            Resource::VirtualService($r) => $body,
        }
    };
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::Namespace(_) => Kind::Namespace,
            Resource::ServiceAccount(_) => Kind::ServiceAccount,
            Resource::Secret(_) => Kind::Secret,
            Resource::ConfigMap(_) => Kind::ConfigMap,
            Resource::Service(_) => Kind::Service,
            Resource::Deployment(_) => Kind::Deployment,
            Resource::ReplicationController(_) => Kind::ReplicationController,
            Resource::Pod(_) => Kind::Pod,
            Resource::PeerAuthentication(_) => Kind::PeerAuthentication,
            Resource::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Resource::Policy(_) => Kind::Policy,
            Resource::MeshPolicy(_) => Kind::MeshPolicy,
            Resource::DestinationRule(_) => Kind::DestinationRule,
            Resource::Sidecar(_) => Kind::Sidecar,
            Resource::Gateway(_) => Kind::Gateway,
            Resource::VirtualService(_) => Kind::VirtualService,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        each_resource!(self, r => &r.metadata)
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        each_resource!(self, r => &mut r.metadata)
    }

    pub fn api_version(&self) -> &str {
        each_resource!(self, r => &r.api_version)
    }

    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// The namespace, for namespaced kinds (after defaulting, always set).
    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// `Kind/namespace/name` or `Kind/name`, as used in messages.
    pub fn key(&self) -> String {
        match self.namespace() {
            Some(ns) if self.kind().is_namespaced() => {
                format!("{}/{}/{}", self.kind(), ns, self.name())
            }
            _ => format!("{}/{}", self.kind(), self.name()),
        }
    }

    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Names one object: kind, namespace ("" for cluster-scoped kinds) and name.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: if kind.is_namespaced() {
                namespace.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    pub fn of(r: &Resource) -> ObjectKey {
        ObjectKey::new(r.kind(), r.namespace().unwrap_or(""), r.name())
    }

    /// From the store's columns (the kind by its manifest name).
    pub fn parse(kind: &str, namespace: &str, name: &str) -> Option<ObjectKey> {
        Some(ObjectKey::new(Kind::from_manifest(kind)?, namespace, name))
    }

    /// kubectl's `deployment.apps/httpbin` form.
    pub fn reference(&self) -> String {
        format!("{}/{}", type_name(self.kind), self.name)
    }

    /// kubectl's `deployments.apps "httpbin"` form (error messages).
    pub fn quoted(&self) -> String {
        let info = self.kind.info();
        let group = if info.group.is_empty() {
            String::new()
        } else {
            format!(".{}", info.group)
        };
        format!("{}{} {:?}", info.plural, group, self.name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// `deployment.apps`, `service`, `peerauthentication.security.istio.io`.
pub fn type_name(kind: Kind) -> String {
    let info = kind.info();
    let lower = info.name.to_ascii_lowercase();
    if info.group.is_empty() {
        lower
    } else {
        format!("{lower}.{}", info.group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spellings_people_type_are_understood() {
        for (word, kind) in [
            ("svc", Kind::Service),
            ("Service", Kind::Service),
            ("services", Kind::Service),
            ("peerauthentication", Kind::PeerAuthentication),
            ("pa", Kind::PeerAuthentication),
            ("destinationrules", Kind::DestinationRule),
            (
                "destinationrules.networking.istio.io",
                Kind::DestinationRule,
            ),
            ("policies.authentication.istio.io", Kind::Policy),
            ("meshpolicies", Kind::MeshPolicy),
            ("deploy", Kind::Deployment),
            ("rc", Kind::ReplicationController),
            ("ns", Kind::Namespace),
        ] {
            assert_eq!(Kind::from_cli(word), Some(kind), "{word}");
        }
        assert_eq!(Kind::from_cli("policies.networking.istio.io"), None);
        assert_eq!(Kind::from_cli("widgets"), None);
    }
}
