//! What a Kubernetes API path names: a discovery document, or a collection, object or
//! subresource of a kind the model knows, at one of its served versions.

use tessera_model::resource::{KindInfo, KINDS};

use super::crd;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiPath {
    Version,
    /// `/api`: the legacy group's versions.
    LegacyVersions,
    /// `/apis`: every named group.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`: the resources of one group version.
    Resources {
        group: String,
        version: String,
    },
    /// A collection, an object or an object's subresource.
    Object(ObjectPath),
    /// `/apis/apiextensions.k8s.io/v1/customresourcedefinitions[/{name}]`.
    Definitions(Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    pub info: &'static KindInfo,
    pub version: String,
    /// `None`: across namespaces (or a cluster-scoped kind).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Why a path names nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// No such route (404 with the path).
    NotFound,
    /// A group version the model does not serve, or a resource it does not have in it.
    UnknownResource {
        group_version: String,
        resource: String,
    },
}

/// What `/api/v1/namespaces/{name}/...` may name besides a namespaced resource.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

fn kind_at(group: &str, version: &str, plural: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.plural == plural && k.versions.contains(&version))
}

/// Whether the model serves `group`/`version` at all.
pub fn serves(group: &str, version: &str) -> bool {
    KINDS
        .iter()
        .any(|k| k.group == group && k.versions.contains(&version))
}

/// Parses a request path (without the query).
pub fn parse(path: &str) -> Result<ApiPath, PathError> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["version"] => return Ok(ApiPath::Version),
        ["api"] => return Ok(ApiPath::LegacyVersions),
        ["apis"] => return Ok(ApiPath::Groups),
        ["apis", crd::GROUP] => return Ok(ApiPath::Group(crd::GROUP.into())),
        ["apis", crd::GROUP, crd::VERSION] => {
            return Ok(ApiPath::Resources {
                group: crd::GROUP.into(),
                version: crd::VERSION.into(),
            })
        }
        ["apis", crd::GROUP, crd::VERSION, crd::PLURAL] => return Ok(ApiPath::Definitions(None)),
        ["apis", crd::GROUP, crd::VERSION, crd::PLURAL, name] => {
            return Ok(ApiPath::Definitions(Some(name.to_string())))
        }
        ["apis", g] if KINDS.iter().any(|k| k.group == *g) => {
            return Ok(ApiPath::Group(g.to_string()))
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(PathError::NotFound),
    };
    if !serves(group, version) {
        return Err(PathError::NotFound);
    }
    let unknown = |resource: &str| PathError::UnknownResource {
        group_version: tessera_model::resource::api_version(group, version),
        resource: resource.to_string(),
    };
    let object = |info, namespace: Option<&str>, rest: &[&str]| {
        let (name, subresource) = match rest {
            [] => (None, None),
            [name] => (Some(name.to_string()), None),
            [name, sub] => (Some(name.to_string()), Some(sub.to_string())),
            _ => return Err(PathError::NotFound),
        };
        Ok(ApiPath::Object(ObjectPath {
            info,
            version: version.to_string(),
            namespace: namespace.map(str::to_string),
            name,
            subresource,
        }))
    };
    match rest {
        [] => Ok(ApiPath::Resources {
            group: group.to_string(),
            version: version.to_string(),
        }),
        // `/namespaces/{ns}/{plural}/...`, unless `{plural}` is a subresource of the
        // namespace itself (`/namespaces/{name}/status`).
        ["namespaces", ns, plural, tail @ ..] if kind_at(group, version, plural).is_some() => {
            let info = kind_at(group, version, plural).expect("checked");
            if !info.namespaced {
                return Err(unknown(plural));
            }
            object(info, Some(ns), tail)
        }
        [plural, tail @ ..] => {
            let info = kind_at(group, version, plural).ok_or_else(|| unknown(plural))?;
            // A namespace's own subresources; anything else there names a resource.
            if let ("namespaces", [_, sub]) = (*plural, tail) {
                if !NAMESPACE_SUBRESOURCES.contains(sub) {
                    return Err(unknown(sub));
                }
            }
            object(info, None, tail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_model::resource::Kind;

    fn object(path: &str) -> ObjectPath {
        match parse(path) {
            Ok(ApiPath::Object(o)) => o,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn discovery_paths() {
        assert_eq!(parse("/version"), Ok(ApiPath::Version));
        assert_eq!(parse("/api"), Ok(ApiPath::LegacyVersions));
        assert_eq!(parse("/apis/"), Ok(ApiPath::Groups));
        assert_eq!(
            parse("/apis/networking.istio.io"),
            Ok(ApiPath::Group("networking.istio.io".into()))
        );
        assert_eq!(
            parse("/api/v1"),
            Ok(ApiPath::Resources {
                group: String::new(),
                version: "v1".into()
            })
        );
        assert_eq!(
            parse("/apis/security.istio.io/v1beta1"),
            Ok(ApiPath::Resources {
                group: "security.istio.io".into(),
                version: "v1beta1".into()
            })
        );
        assert_eq!(parse("/apis/batch/v1"), Err(PathError::NotFound));
        assert_eq!(parse("/api/v2"), Err(PathError::NotFound));
        assert_eq!(parse("/healthz"), Err(PathError::NotFound));
    }

    #[test]
    fn objects_by_scope() {
        let pods = object("/api/v1/namespaces/full/pods");
        assert_eq!(pods.info.kind, Kind::Pod);
        assert_eq!(pods.namespace.as_deref(), Some("full"));
        assert_eq!(pods.name, None);

        let all = object("/api/v1/pods");
        assert_eq!((all.info.kind, all.namespace), (Kind::Pod, None));

        let one = object("/api/v1/namespaces/full/pods/sleep-1/log");
        assert_eq!(one.name.as_deref(), Some("sleep-1"));
        assert_eq!(one.subresource.as_deref(), Some("log"));

        // The namespace object itself, and its subresources.
        let ns = object("/api/v1/namespaces/full");
        assert_eq!(
            (ns.info.kind, ns.name.as_deref()),
            (Kind::Namespace, Some("full"))
        );
        let status = object("/api/v1/namespaces/full/status");
        assert_eq!(status.subresource.as_deref(), Some("status"));

        let pa = object("/apis/security.istio.io/v1beta1/namespaces/x/peerauthentications/default");
        assert_eq!(pa.info.kind, Kind::PeerAuthentication);
        assert_eq!(pa.version, "v1beta1");
        let dr = object("/apis/networking.istio.io/v1alpha3/destinationrules");
        assert_eq!(dr.info.kind, Kind::DestinationRule);
        let mp = object("/apis/authentication.istio.io/v1alpha1/meshpolicies/default");
        assert_eq!(mp.info.kind, Kind::MeshPolicy);
    }

    #[test]
    fn unknown_resources_and_versions() {
        assert_eq!(
            parse("/api/v1/namespaces/x/widgets"),
            Err(PathError::UnknownResource {
                group_version: "v1".into(),
                resource: "widgets".into()
            })
        );
        // PeerAuthentication is not served at v1alpha1.
        assert!(parse("/apis/security.istio.io/v1alpha1/peerauthentications").is_err());
        // A cluster-scoped kind under a namespace.
        assert!(parse("/apis/authentication.istio.io/v1alpha1/namespaces/x/meshpolicies").is_err());
        assert_eq!(
            parse("/api/v1/namespaces/x/pods/a/b/c"),
            Err(PathError::NotFound)
        );
    }
}
