//! Object metadata, label selectors and other shapes shared by many kinds.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Opaque content kept as-is (fields Tessera does not act on, such as probes or resources).
pub type Any = serde_json::Value;

pub type Labels = BTreeMap<String, String>;

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_references: Option<Any>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_fields: Option<Any>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_link: Option<String>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum SelectorOperator {
    #[default]
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// An empty selector selects everything (Kubernetes semantics).
    pub fn matches(&self, labels: &Labels) -> bool {
        subset(&self.match_labels, labels)
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator {
                    SelectorOperator::In => value.is_some_and(|v| req.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

/// Whether every `key=value` of `selector` is among `labels`.
pub fn subset(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Istio's workload selector (`matchLabels` only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
}

/// A label query as typed on the command line: `app=httpbin,version!=v2,tier,!canary`,
/// `env in (a,b)`, `env notin (c)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelQuery {
    pub requirements: Vec<LabelSelectorRequirement>,
}

impl LabelQuery {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_terms(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let req = if let Some(key) = term.strip_prefix('!') {
                requirement(key, SelectorOperator::DoesNotExist, vec![])
            } else if let Some((k, v)) = term.split_once("!=") {
                requirement(k, SelectorOperator::NotIn, vec![v.trim().to_string()])
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                requirement(k, SelectorOperator::In, vec![v.trim().to_string()])
            } else if let Some((k, rest)) = split_set(term, " notin ") {
                requirement(k, SelectorOperator::NotIn, rest)
            } else if let Some((k, rest)) = split_set(term, " in ") {
                requirement(k, SelectorOperator::In, rest)
            } else {
                requirement(term, SelectorOperator::Exists, vec![])
            };
            let req = req.map_err(|e| format!("label selector \"{s}\": {e}"))?;
            requirements.push(req);
        }
        Ok(LabelQuery { requirements })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        LabelSelector {
            match_labels: Labels::new(),
            match_expressions: self.requirements.clone(),
        }
        .matches(labels)
    }
}

fn requirement(
    key: &str,
    operator: SelectorOperator,
    values: Vec<String>,
) -> Result<LabelSelectorRequirement, String> {
    let key = key.trim();
    if let Err(e) = validate_label_key(key) {
        return Err(format!("key \"{key}\": {e}"));
    }
    for v in &values {
        if let Err(e) = validate_label_value(v) {
            return Err(format!("value \"{v}\": {e}"));
        }
    }
    Ok(LabelSelectorRequirement {
        key: key.to_string(),
        operator,
        values,
    })
}

/// Splits on commas that are not inside `( )`.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn split_set<'a>(term: &'a str, op: &str) -> Option<(&'a str, Vec<String>)> {
    let (k, rest) = term.split_once(op)?;
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some((
        k,
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    ))
}

/// Label keys: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        validate_dns_subdomain(p).map_err(|e| format!("prefix {e}"))?;
    }
    validate_label_value(name).and_then(|_| {
        if name.is_empty() {
            Err("name part must not be empty".into())
        } else {
            Ok(())
        }
    })
}

/// Label values: empty, or at most 63 characters of alphanumerics, `-`, `_`, `.`,
/// starting and ending with an alphanumeric.
pub fn validate_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > 63 {
        return Err("must be at most 63 characters".into());
    }
    let ok_chars = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ok_ends = v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok_chars && ok_ends {
        Ok(())
    } else {
        Err("must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric".into())
    }
}

/// DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, at most 253 characters,
/// starting and ending alphanumeric. Object names of most kinds follow it.
pub fn validate_dns_subdomain(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("must be a lowercase RFC 1123 subdomain: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (e.g. 'my-name' or 'example.com')".into())
    }
}

/// DNS-1123 label: like a subdomain without dots and at most 63 characters. Namespace and
/// Service names follow it.
pub fn validate_dns_label(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("must be a lowercase RFC 1123 label: at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit (e.g. 'my-name')".into())
    }
}

/// A port given as a number or as the name of a container port (`targetPort`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

/// The newtype name the positioned deserializer checks (integer or string) so that a wrong
/// type is reported instead of aborting the document.
pub(crate) const INT_OR_STRING: &str = "IntOrString";

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Inner;
        impl<'de> serde::de::Visitor<'de> for Inner {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<IntOrString, D::Error> {
                d.deserialize_any(Inner)
            }
        }
        d.deserialize_newtype_struct(INT_OR_STRING, Inner)
    }
}

impl schemars::JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": true})
    }
}

/// A protobuf `double` (or `DoubleValue`) as written: an integer stays an integer when the
/// object is printed back, so a stored manifest reads as it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Double {
    Int(i64),
    Float(f64),
}

impl Double {
    pub fn get(self) -> f64 {
        match self {
            Double::Int(i) => i as f64,
            Double::Float(f) => f,
        }
    }
}

impl Default for Double {
    fn default() -> Self {
        Double::Int(0)
    }
}

impl fmt::Display for Double {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Double::Int(i) => write!(f, "{i}"),
            Double::Float(v) => write!(f, "{v}"),
        }
    }
}

impl schemars::JsonSchema for Double {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Double".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "number", "format": "double"})
    }
}

/// The newtype name the positioned deserializer checks (a number) so that a wrong type is
/// reported instead of aborting the document.
pub(crate) const DOUBLE: &str = "Double";

impl<'de> Deserialize<'de> for Double {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Inner;
        impl<'de> serde::de::Visitor<'de> for Inner {
            type Value = Double;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Double, E> {
                Ok(Double::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Double, E> {
                Ok(i64::try_from(v).map_or(Double::Float(v as f64), Double::Int))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Double, E> {
                Ok(Double::Float(v))
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Double, D::Error> {
                d.deserialize_any(Inner)
            }
        }
        d.deserialize_newtype_struct(DOUBLE, Inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let pod = labels(&[("app", "httpbin"), ("version", "v1")]);
        let sel = LabelSelector {
            match_labels: labels(&[("app", "httpbin")]),
            ..Default::default()
        };
        assert!(sel.matches(&pod));
        assert!(LabelSelector::default().matches(&pod));
        let q = LabelQuery::parse("app=httpbin,version!=v2,!canary,env notin (prod)").unwrap();
        assert!(q.matches(&pod));
        let q = LabelQuery::parse("version in (v2, v3)").unwrap();
        assert!(!q.matches(&pod));
        let q = LabelQuery::parse("app").unwrap();
        assert!(q.matches(&pod));
        assert!(LabelQuery::parse("app=bad value").is_err());
    }

    #[test]
    fn names_follow_rfc_1123() {
        assert!(validate_dns_label("httpbin").is_ok());
        assert!(validate_dns_label("Httpbin").is_err());
        assert!(validate_dns_subdomain("httpbin-full-mtls").is_ok());
        assert!(validate_dns_subdomain("a..b").is_ok());
        assert!(validate_label_key("security.istio.io/tlsMode").is_ok());
        assert!(validate_label_key("-x").is_err());
    }
}
