//! A serde deserializer over the positioned YAML tree that keeps going after a mistake.
//!
//! Each mistake (unknown field, wrong type, value outside an enum) is recorded as a
//! [`Finding`] with its field path and position, and a neutral placeholder (empty string,
//! zero, first enum variant, empty list) is handed to the model so that deserialization
//! continues and every problem of a document is reported in one pass. Structs know their
//! field names (serde passes them), which gives unknown-field checks and "did you mean"
//! hints for free, including fields that were indented under the wrong parent.
//!
//! Models must not use `#[serde(flatten)]` (it hides field names) and should use
//! `#[serde(default)]` on structs: required fields are checked by validation, so that a
//! missing field does not stop the rest of the document from being checked.

use std::cell::RefCell;
use std::fmt;

use serde::de::{
    self, value::StrDeserializer, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess,
    SeqAccess, Visitor,
};

use crate::problem::{closest, FieldPath, Finding};
use crate::yaml::{Node, Value};

/// An error that escaped recovery (a model's own `Deserialize` impl refused a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError(pub String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }
}

#[derive(Default)]
struct Recorder {
    findings: RefCell<Vec<Finding>>,
    /// The structs being filled, outermost first, with their field names.
    structs: RefCell<Vec<(FieldPath, &'static [&'static str])>>,
}

impl Recorder {
    fn push(&self, finding: Finding) {
        self.findings.borrow_mut().push(finding);
    }
}

/// Deserializes a model from a node. Always yields a value when the model's own code did not
/// refuse one; the findings say what was wrong with the input.
pub fn from_node<T: DeserializeOwned>(node: &Node) -> (Option<T>, Vec<Finding>) {
    let rec = Recorder::default();
    let de = NodeDe {
        node,
        path: FieldPath::root(),
        rec: &rec,
        is_key: false,
    };
    let result = T::deserialize(de);
    let mut findings = rec.findings.into_inner();
    match result {
        Ok(v) => (Some(v), findings),
        Err(e) => {
            findings.push(Finding::error(FieldPath::root(), e.0).at(node.pos));
            (None, findings)
        }
    }
}

struct NodeDe<'a> {
    node: &'a Node,
    path: FieldPath,
    rec: &'a Recorder,
    /// Mapping keys: numbers and strings convert into each other (`9080:` vs `"9080":`).
    is_key: bool,
}

const NO_ENTRIES: &[(Node, Node)] = &[];

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node, path: FieldPath) -> NodeDe<'a> {
        NodeDe {
            node,
            path,
            rec: self.rec,
            is_key: false,
        }
    }

    fn mismatch(&self, expected: &str) {
        let mut f = Finding::error(
            self.path.clone(),
            format!("expected {expected}, found {}", self.node.kind_name()),
        )
        .at(self.node.pos);
        if let (Value::Int(_) | Value::Float(_) | Value::Bool(_), "a string") =
            (&self.node.value, expected)
        {
            f = f.hint(format!(
                "quote the value: \"{}\"",
                self.node.scalar_text().unwrap_or_default()
            ));
        }
        self.rec.push(f);
    }

    fn integer(&self, min: i128, max: i128, what: &str) -> i128 {
        let value = match &self.node.value {
            Value::Int(i) => Some(i128::from(*i)),
            Value::Str(s) if self.is_key => s.parse::<i128>().ok(),
            _ => None,
        };
        match value {
            Some(v) if v >= min && v <= max => v,
            Some(v) => {
                self.rec.push(
                    Finding::error(
                        self.path.clone(),
                        format!("{v} is out of range for {what} ({min}..={max})"),
                    )
                    .at(self.node.pos),
                );
                min.max(0)
            }
            None => {
                self.mismatch("an integer");
                min.max(0)
            }
        }
    }

    fn string(&self) -> String {
        match &self.node.value {
            Value::Str(s) => s.clone(),
            // JSON null means "unset": an empty string, as Kubernetes reads it.
            Value::Null => String::new(),
            _ if self.is_key => self.node.scalar_text().unwrap_or_default().into_owned(),
            _ => {
                self.mismatch("a string");
                self.node.scalar_text().unwrap_or_default().into_owned()
            }
        }
    }

    fn unknown_field(
        &self,
        key: &Node,
        name: &str,
        fields: &[&str],
        previous: Option<&(Node, Node)>,
    ) {
        let mut allowed: Vec<&str> = fields.to_vec();
        allowed.sort_unstable();
        let path = self.path.field(name);
        let mut finding = Finding::error(
            path,
            format!(
                "unknown field \"{name}\" (allowed here: {})",
                allowed.join(", ")
            ),
        )
        .at(key.pos);
        // A field of an enclosing object indented one level too deep is a common mistake.
        let ancestor = self
            .rec
            .structs
            .borrow()
            .iter()
            .rev()
            .skip(1)
            .find(|(_, fs)| fs.contains(&name))
            .map(|(p, _)| p.clone());
        if let Some(parent) = ancestor {
            let meant = parent.field(name);
            finding = finding.hint(format!(
                "did you mean `{meant}`? `{name}` is a field of `{}`, not of `{}`: it is indented too deep",
                if parent.is_root() { "(document)".to_string() } else { parent.to_string() },
                self.path
            ));
        } else if let Some(close) = closest(name, fields.iter().copied()) {
            finding = finding.hint(format!("did you mean `{close}`?"));
        } else if let Some((prev_key, prev_value)) = previous {
            if prev_value.value == Value::Null {
                let prev = prev_key.scalar_text().unwrap_or_default();
                let owner = self
                    .rec
                    .structs
                    .borrow()
                    .iter()
                    .rev()
                    .skip(1)
                    .find(|(_, fs)| fs.contains(&prev.as_ref()))
                    .map(|(p, _)| p.field(&prev));
                finding = finding.hint(match owner {
                    Some(meant) => format!(
                        "it follows the empty `{prev}:` above; if it is meant to be inside it, indent it under `{prev}` and move `{prev}` to `{meant}`"
                    ),
                    None => format!(
                        "it follows the empty `{prev}:` above; if it is meant to be inside it, indent it under `{prev}`"
                    ),
                });
            }
        }
        self.rec.push(finding);
    }
}

macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty, $what:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let v = self.integer(i128::from(<$ty>::MIN), i128::from(<$ty>::MAX), $what);
            visitor.$visit(v as $ty)
        }
    };
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(Seq {
                de: &self,
                items,
                next: 0,
            }),
            Value::Map(entries) => visitor.visit_map(Map {
                de: &self,
                entries,
                next: 0,
            }),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Null => visitor.visit_bool(false),
            _ => {
                self.mismatch("a boolean (true or false)");
                visitor.visit_bool(false)
            }
        }
    }

    int_method!(deserialize_i8, visit_i8, i8, "an 8-bit integer");
    int_method!(deserialize_i16, visit_i16, i16, "a 16-bit integer");
    int_method!(deserialize_i32, visit_i32, i32, "a 32-bit integer");
    int_method!(deserialize_i64, visit_i64, i64, "a 64-bit integer");
    int_method!(deserialize_u8, visit_u8, u8, "an 8-bit unsigned integer");
    int_method!(deserialize_u16, visit_u16, u16, "a 16-bit unsigned integer");
    int_method!(deserialize_u32, visit_u32, u32, "a 32-bit unsigned integer");
    int_method!(deserialize_u64, visit_u64, u64, "a 64-bit unsigned integer");

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Int(i) => visitor.visit_f64(*i as f64),
            Value::Float(f) => visitor.visit_f64(*f),
            _ => {
                self.mismatch("a number");
                visitor.visit_f64(0.0)
            }
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_string(self.string())
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_string(self.string())
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_string(self.string())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_string(self.string())
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.value != Value::Null {
            self.mismatch("null");
        }
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let expected = match (name, &self.node.value) {
            (crate::meta::INT_OR_STRING, Value::Int(_) | Value::Str(_)) => None,
            (crate::meta::INT_OR_STRING, _) => Some("an integer or a string"),
            (crate::meta::DOUBLE, Value::Int(_) | Value::Float(_)) => None,
            (crate::meta::DOUBLE, _) => Some("a number"),
            _ => None,
        };
        if let Some(expected) = expected {
            self.mismatch(expected);
            let placeholder = Node {
                value: Value::Int(0),
                pos: self.node.pos,
            };
            return visitor.visit_newtype_struct(NodeDe {
                node: &placeholder,
                path: self.path.clone(),
                rec: self.rec,
                is_key: false,
            });
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let items: &[Node] = match &self.node.value {
            Value::Seq(items) => items,
            Value::Null => &[],
            _ => {
                self.mismatch("a list");
                &[]
            }
        };
        visitor.visit_seq(Seq {
            de: &self,
            items,
            next: 0,
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let entries: &[(Node, Node)] = match &self.node.value {
            Value::Map(entries) => entries,
            Value::Null => NO_ENTRIES,
            _ => {
                self.mismatch("a mapping");
                NO_ENTRIES
            }
        };
        visitor.visit_map(Map {
            de: &self,
            entries,
            next: 0,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let entries: &[(Node, Node)] = match &self.node.value {
            Value::Map(entries) => entries,
            Value::Null => NO_ENTRIES,
            _ => {
                self.mismatch("a mapping");
                NO_ENTRIES
            }
        };
        self.rec
            .structs
            .borrow_mut()
            .push((self.path.clone(), fields));
        let result = visitor.visit_map(Struct {
            de: &self,
            entries,
            fields,
            next: 0,
            value: None,
        });
        self.rec.structs.borrow_mut().pop();
        result
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let chosen = match &self.node.value {
            Value::Str(s) if variants.contains(&s.as_str()) => s.as_str(),
            other => {
                let shown = match other {
                    Value::Str(s) => format!("\"{s}\""),
                    _ => self.node.kind_name().to_string(),
                };
                let mut f = Finding::error(
                    self.path.clone(),
                    format!("{shown} is not one of {}", variants.join(", ")),
                )
                .at(self.node.pos);
                if let Value::Str(s) = other {
                    if let Some(close) = closest(s, variants.iter().copied()) {
                        f = f.hint(format!("did you mean {close}?"));
                    }
                }
                self.rec.push(f);
                variants.first().copied().unwrap_or_default()
            }
        };
        let de: StrDeserializer<'_, DeError> = chosen.into_deserializer();
        visitor.visit_enum(de)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct Seq<'b, 'a> {
    de: &'b NodeDe<'a>,
    items: &'a [Node],
    next: usize,
}

impl<'de> SeqAccess<'de> for Seq<'_, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.get(self.next) else {
            return Ok(None);
        };
        let path = self.de.path.index(self.next);
        self.next += 1;
        seed.deserialize(self.de.child(item, path)).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.next)
    }
}

/// A free-form map: every key is accepted.
struct Map<'b, 'a> {
    de: &'b NodeDe<'a>,
    entries: &'a [(Node, Node)],
    next: usize,
}

impl<'de> MapAccess<'de> for Map<'_, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, _)) = self.entries.get(self.next) else {
            return Ok(None);
        };
        let text = key.scalar_text().unwrap_or_default();
        let de = NodeDe {
            node: key,
            path: self.de.path.key(&text),
            rec: self.de.rec,
            is_key: true,
        };
        seed.deserialize(de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (key, value) = &self.entries[self.next];
        self.next += 1;
        let text = key.scalar_text().unwrap_or_default();
        seed.deserialize(self.de.child(value, self.de.path.key(&text)))
    }
}

/// A struct: keys outside `fields` are reported and skipped.
struct Struct<'b, 'a> {
    de: &'b NodeDe<'a>,
    entries: &'a [(Node, Node)],
    fields: &'static [&'static str],
    next: usize,
    value: Option<(&'a Node, String)>,
}

impl<'de> MapAccess<'de> for Struct<'_, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        while let Some((key, value)) = self.entries.get(self.next) {
            let previous = self.next.checked_sub(1).and_then(|i| self.entries.get(i));
            self.next += 1;
            let Some(name) = key.scalar_text().map(|s| s.into_owned()) else {
                continue;
            };
            if !self.fields.contains(&name.as_str()) {
                self.de.unknown_field(key, &name, self.fields, previous);
                continue;
            }
            self.value = Some((value, name.clone()));
            let de: StrDeserializer<'_, DeError> = name.as_str().into_deserializer();
            return seed.deserialize(de).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (node, name) = self
            .value
            .take()
            .ok_or_else(|| DeError("value requested before its key".into()))?;
        seed.deserialize(self.de.child(node, self.de.path.field(&name)))
    }
}

/// For `Option<Option<T>>` fields where "present but null" differs from "absent"
/// (legacy `peers: [{mtls: null}]` means STRICT). Use with `#[serde(default, deserialize_with)]`.
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: de::Deserializer<'de>,
    T: de::Deserialize<'de>,
{
    <Option<T> as de::Deserialize>::deserialize(d).map(Some)
}

/// Whether a path overlaps one that already has a structural error (either contains the
/// other), so validation does not pile follow-on errors onto a placeholder value.
pub fn overlaps_error(path: &FieldPath, findings: &[Finding]) -> bool {
    findings
        .iter()
        .filter(|f| f.severity == crate::problem::Severity::Error)
        .any(|f| path.starts_with(&f.path) || f.path.starts_with(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_documents;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize, Default, Debug, PartialEq, schemars::JsonSchema)]
    #[serde(rename_all = "camelCase", default)]
    struct Port {
        name: Option<String>,
        port: u16,
    }

    #[derive(Deserialize, Default, Debug, PartialEq, schemars::JsonSchema)]
    #[serde(rename_all = "camelCase", default)]
    struct Spec {
        ports: Vec<Port>,
        selector: BTreeMap<String, String>,
        mode: Mode,
        levels: BTreeMap<u32, Mode>,
    }

    #[derive(Deserialize, Default, Debug, PartialEq, Clone, Copy, schemars::JsonSchema)]
    #[serde(rename_all = "UPPERCASE")]
    enum Mode {
        #[default]
        Unset,
        Strict,
    }

    #[derive(Deserialize, Default, Debug, PartialEq, schemars::JsonSchema)]
    #[serde(default)]
    struct Doc {
        spec: Spec,
    }

    fn load(text: &str) -> (Doc, Vec<Finding>) {
        let docs = parse_documents(text).unwrap();
        let (v, f) = from_node::<Doc>(&docs[0].root);
        (v.unwrap(), f)
    }

    #[test]
    fn clean_input_has_no_findings() {
        let (doc, findings) =
            load("spec:\n  ports:\n  - port: 80\n  mode: STRICT\n  levels:\n    9080: STRICT\n");
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(doc.spec.ports[0].port, 80);
        assert_eq!(doc.spec.levels.get(&9080), Some(&Mode::Strict));
    }

    #[test]
    fn every_mistake_is_reported_in_one_pass() {
        let (_, findings) = load(
            "spec:\n  ports:\n  - port: http\n    nmae: x\n  - port: 70000\n  mode: STRCT\n  extra: 1\n",
        );
        let msgs: Vec<String> = findings
            .iter()
            .map(|f| format!("{} {}: {}", f.pos.unwrap(), f.path, f.message))
            .collect();
        assert_eq!(msgs.len(), 5, "{msgs:#?}");
        assert!(msgs[0].starts_with("3:11 spec.ports[0].port: expected an integer, found a string"));
        assert!(msgs[1].starts_with("4:5 spec.ports[0].nmae: unknown field \"nmae\""));
        assert!(msgs[2].starts_with("5:11 spec.ports[1].port: 70000 is out of range"));
        assert!(msgs[3].starts_with("6:9 spec.mode: \"STRCT\" is not one of UNSET, STRICT"));
        assert!(msgs[4].starts_with("7:3 spec.extra: unknown field"));
        assert_eq!(findings[1].hint.as_deref(), Some("did you mean `name`?"));
        assert_eq!(findings[3].hint.as_deref(), Some("did you mean STRICT?"));
    }

    #[test]
    fn a_field_indented_too_deep_points_at_its_parent() {
        let (_, findings) = load("spec:\n  ports:\n  - port: 80\n    selector:\n    app: x\n");
        assert_eq!(findings.len(), 2, "{findings:#?}");
        assert_eq!(findings[0].path.to_string(), "spec.ports[0].selector");
        assert!(findings[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("did you mean `spec.selector`?"));
        assert_eq!(findings[1].path.to_string(), "spec.ports[0].app");
        assert!(
            findings[1]
                .hint
                .as_deref()
                .unwrap()
                .contains("move `selector` to `spec.selector`"),
            "{:?}",
            findings[1].hint
        );
    }

    #[test]
    fn quoted_numbers_for_strings_get_a_hint() {
        let (_, findings) = load("spec:\n  ports:\n  - name: 8080\n");
        assert_eq!(findings.len(), 1);
        assert_eq!(
            findings[0].hint.as_deref(),
            Some("quote the value: \"8080\"")
        );
    }
}
