//! Watches: which stored objects a request selects (namespace, labels, fields), and the
//! events between two revisions of the store (ADDED, MODIFIED, DELETED), as the API
//! server's watch sends them. An object that stops matching a selector is DELETED for that
//! watch, one that starts matching is ADDED.

use serde_json::Value;
use tessera_model::meta::LabelQuery;

use super::answer;
use super::path::ObjectPath;
use crate::objects::{Objects, Stored};

/// One `fieldSelector` requirement: `key=value`, `key==value` or `key!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub path: &'static [&'static str],
    pub value: String,
    pub equal: bool,
}

/// The fields a selector may name (the common ones every kind or pods support).
const FIELDS: &[(&str, &[&str])] = &[
    ("metadata.name", &["metadata", "name"]),
    ("metadata.namespace", &["metadata", "namespace"]),
    ("status.phase", &["status", "phase"]),
    ("spec.nodeName", &["spec", "nodeName"]),
];

/// Parses a `fieldSelector`; an unsupported field is an error naming the ones supported.
pub fn parse_fields(selector: &str) -> Result<Vec<FieldRequirement>, String> {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|term| {
            let (key, value, equal) = if let Some((k, v)) = term.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, v, true)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, v, true)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            let path = FIELDS
                .iter()
                .find(|(name, _)| *name == key.trim())
                .map(|(_, p)| *p)
                .ok_or_else(|| {
                    let known: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
                    format!(
                        "field label not supported: {} (supported: {})",
                        key.trim(),
                        known.join(", ")
                    )
                })?;
            Ok(FieldRequirement {
                path,
                value: value.trim().to_string(),
                equal,
            })
        })
        .collect()
}

/// What a list or watch selects.
#[derive(Debug, Clone)]
pub struct Selection {
    pub object: ObjectPath,
    pub labels: Option<LabelQuery>,
    pub fields: Vec<FieldRequirement>,
}

impl Selection {
    /// What `labelSelector` and `fieldSelector` in `query` select under `object`; a
    /// selector that does not parse is an error to answer with 400.
    pub fn from_query(object: &ObjectPath, query: &str) -> Result<Selection, String> {
        let params = tessera_contract::urlencoded::parse(query);
        let first = |name: &str| {
            params
                .get(name)
                .and_then(|v| v.first())
                .cloned()
                .unwrap_or_default()
        };
        let labels = Some(first("labelSelector"))
            .filter(|s| !s.is_empty())
            .map(|s| LabelQuery::parse(&s))
            .transpose()
            .map_err(|e| format!("unable to parse requirement: {e}"))?;
        Ok(Selection {
            object: object.clone(),
            labels,
            fields: parse_fields(&first("fieldSelector"))?,
        })
    }

    /// The object's JSON at the path's version, if it is selected.
    pub fn pick(&self, s: &Stored) -> Option<Value> {
        let o = &self.object;
        let key_matches = s.resource.kind() == o.info.kind
            && (!o.info.namespaced
                || o.namespace.is_none()
                || s.resource.namespace() == o.namespace.as_deref())
            && o.name.as_deref().is_none_or(|n| s.resource.name() == n)
            && self
                .labels
                .as_ref()
                .is_none_or(|q| q.matches(&s.resource.metadata().labels));
        if !key_matches {
            return None;
        }
        let v = answer::served(o.info, &o.version, s);
        let fields_match = self.fields.iter().all(|f| {
            let mut at = &v;
            for p in f.path {
                at = &at[*p];
            }
            let actual = at.as_str().unwrap_or("");
            (actual == f.value) == f.equal
        });
        fields_match.then_some(v)
    }

    /// The selected objects at one revision.
    pub fn list(&self, objects: &Objects) -> Vec<Value> {
        self.selected(objects).map(|(_, v)| v).collect()
    }

    /// The selected objects at one revision, with what they are stored as.
    pub fn selected<'a>(
        &'a self,
        objects: &'a Objects,
    ) -> impl Iterator<Item = (&'a Stored, Value)> + 'a {
        objects
            .list(self.object.info.kind, None, None)
            .filter_map(|s| self.pick(s).map(|v| (s, v)))
    }

    /// The events that turn what `old` selects into what `new` selects.
    pub fn events(&self, old: &Objects, new: &Objects) -> Vec<(&'static str, Value)> {
        let kind = self.object.info.kind;
        let mut out = Vec::new();
        for s in new.list(kind, None, None) {
            let now = self.pick(s);
            let before = old.get(&crate::objects::ObjectKey::of(&s.resource));
            match (before.and_then(|b| self.pick(b).map(|v| (b, v))), now) {
                (None, Some(v)) => out.push(("ADDED", v)),
                (Some((b, _)), Some(v)) if b.resource_version != s.resource_version => {
                    out.push(("MODIFIED", v))
                }
                (Some((_, v)), None) => out.push(("DELETED", v)),
                _ => {}
            }
        }
        for s in old.list(kind, None, None) {
            if new
                .get(&crate::objects::ObjectKey::of(&s.resource))
                .is_none()
            {
                if let Some(v) = self.pick(s) {
                    out.push(("DELETED", v));
                }
            }
        }
        out
    }
}

/// One line of a watch stream.
pub fn event_line(kind: &str, object: &Value) -> String {
    let mut line = serde_json::json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selectors() {
        let f = parse_fields("metadata.name=sleep-1,status.phase!=Running").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].value.as_str(), f[0].equal), ("sleep-1", true));
        assert_eq!((f[1].value.as_str(), f[1].equal), ("Running", false));
        assert_eq!(parse_fields("metadata.name==a").unwrap()[0].value, "a");
        assert!(parse_fields("").unwrap().is_empty());
        let e = parse_fields("spec.replicas=2").unwrap_err();
        assert!(
            e.starts_with("field label not supported: spec.replicas"),
            "{e}"
        );
        assert!(parse_fields("nonsense").is_err());
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;
    use crate::kube::path::{parse, ApiPath};
    use crate::objects::Op;

    fn apply(base: &Objects, ops: Vec<Op>) -> Objects {
        base.plan(ops, time::OffsetDateTime::now_utc())
            .expect("a valid change")
            .next
    }

    fn applied(base: &Objects, yaml: &str) -> Objects {
        let report = tessera_model::load_str(
            std::path::Path::new("t.yaml"),
            yaml,
            &tessera_model::LoadOptions::default(),
        );
        assert!(
            report.problems.iter().all(|p| !p.is_error()),
            "{:?}",
            report.problems
        );
        let ops = report
            .documents
            .into_iter()
            .map(|d| Op::Apply {
                origin: "t.yaml".into(),
                resource: d.resource,
            })
            .collect();
        apply(base, ops)
    }

    fn selection(path: &str, labels: Option<&str>) -> Selection {
        let Ok(ApiPath::Object(object)) = parse(path) else {
            panic!("{path}");
        };
        Selection {
            object,
            labels: labels.map(|l| LabelQuery::parse(l).unwrap()),
            fields: vec![],
        }
    }

    fn kinds(events: &[(&'static str, Value)]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v["metadata"]["name"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: NAME, namespace: default, labels: {app: LABEL}}\ndata: {k: \"v-VALUE\"}\n";

    fn cm(name: &str, label: &str, value: &str) -> String {
        CM.replace("NAME", name)
            .replace("LABEL", label)
            .replace("VALUE", value)
    }

    #[test]
    fn events_between_revisions() {
        let empty = apply(&Objects::default(), Objects::default().bootstrap_ops());
        let one = applied(&empty, &cm("a", "x", "1"));
        let two = applied(
            &one,
            &format!("{}---\n{}", cm("a", "x", "2"), cm("b", "y", "1")),
        );
        let all = selection("/api/v1/namespaces/default/configmaps", None);
        assert_eq!(
            kinds(&all.events(&empty, &one)),
            [("ADDED".into(), "a".into())]
        );
        assert_eq!(
            kinds(&all.events(&one, &two)),
            [
                ("MODIFIED".into(), "a".into()),
                ("ADDED".into(), "b".into())
            ]
        );
        assert!(all.events(&two, &two).is_empty());

        // A label change moves an object out of a selection: DELETED there.
        let relabelled = applied(&two, &cm("a", "y", "2"));
        let x = selection("/api/v1/namespaces/default/configmaps", Some("app=x"));
        assert_eq!(
            kinds(&x.events(&two, &relabelled)),
            [("DELETED".into(), "a".into())]
        );
        let y = selection("/api/v1/namespaces/default/configmaps", Some("app=y"));
        assert_eq!(
            kinds(&y.events(&two, &relabelled)),
            [("ADDED".into(), "a".into())]
        );

        // Deleted objects, and a watch of one name in another namespace.
        let key = crate::objects::ObjectKey::new(tessera_model::Kind::ConfigMap, "default", "b");
        let gone = apply(
            &relabelled,
            vec![Op::Delete {
                key,
                ignore_not_found: false,
            }],
        );
        assert_eq!(
            kinds(&all.events(&relabelled, &gone)),
            [("DELETED".into(), "b".into())]
        );
        let elsewhere = selection("/api/v1/namespaces/other/configmaps", None);
        assert!(elsewhere.events(&empty, &gone).is_empty());
    }
}
