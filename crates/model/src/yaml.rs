//! A YAML tree that remembers where every node came from.
//!
//! serde_norway reports the position of the first error only; validation here must report
//! every problem of a file with its `line:column`, so documents are first read into this
//! positioned tree (YAML 1.2 core schema, via saphyr-parser events) and typed models are then
//! deserialized from it (see `de`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A 1-based line and column in a source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    fn from_span(span: &Span) -> Pos {
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in source order; keys are unique (duplicates are a parse error).
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

impl Node {
    /// What this node is, in words, for "expected X, found Y" messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The text of a scalar as a key: strings as they are, numbers and booleans printed.
    pub fn scalar_text(&self) -> Option<Cow<'_, str>> {
        match &self.value {
            Value::Str(s) => Some(Cow::Borrowed(s)),
            Value::Int(i) => Some(Cow::Owned(i.to_string())),
            Value::Float(f) => Some(Cow::Owned(f.to_string())),
            Value::Bool(b) => Some(Cow::Owned(b.to_string())),
            Value::Null => Some(Cow::Borrowed("null")),
            Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// The value under a mapping key, if this node is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value node of a mapping entry.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.scalar_text().as_deref() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One YAML document of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub root: Node,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: YAML syntax error: {message}")]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// What one YAML stream may make the loader do. Each limit guards memory or time against a
/// hostile file; hitting one is an error at the position where it was hit, never an abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole stream, in bytes.
    pub stream_bytes: usize,
    /// One document, in bytes (the API server refuses requests over 3 MiB).
    pub document_bytes: usize,
    pub documents: usize,
    /// Collections inside collections.
    pub depth: usize,
    /// Nodes one document may have, counting each alias as the nodes it repeats.
    pub nodes: usize,
    /// Nodes a document's aliases may repeat in all (an alias bomb repeats billions).
    pub alias_nodes: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        stream_bytes: 32 << 20,
        document_bytes: 3 << 20,
        documents: 10_000,
        depth: 100,
        nodes: 1_000_000,
        alias_nodes: 100_000,
    };
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::DEFAULT
    }
}

/// Parses a multi-document YAML stream. Empty documents (only comments, or a bare `---`)
/// are dropped, as kubectl does.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    parse_with(text, Limits::DEFAULT)
}

/// [`parse_documents`] within `limits`.
pub fn parse_with(text: &str, limits: Limits) -> Result<Vec<Document>, SyntaxError> {
    if text.len() > limits.stream_bytes {
        return Err(SyntaxError {
            pos: Pos { line: 1, column: 1 },
            message: format!(
                "the input is {} bytes, over the limit of {} bytes",
                text.len(),
                limits.stream_bytes
            ),
        });
    }
    let mut text = Cow::Borrowed(text);
    // A flow collection's closing bracket at the parent key's indentation is refused by the
    // YAML parser but accepted by PyYAML, go-yaml and so kubectl: indent the bracket by one
    // more space and read again (no node starts at a closing bracket, so no position moves).
    for _ in 0..MAX_BRACKET_FIXES {
        match parse_once(&text, limits) {
            Err(e) if e.message == "invalid indentation" => {
                match indent_closing_bracket(&text, e.pos) {
                    Some(fixed) => text = Cow::Owned(fixed),
                    None => return Err(e),
                }
            }
            other => return other,
        }
    }
    parse_once(&text, limits)
}

/// How many closing brackets one stream may have re-indented.
const MAX_BRACKET_FIXES: usize = 256;

/// `text` with one more space before the closing bracket at `pos`, when a closing bracket
/// of a flow collection is what the line at `pos` starts with.
fn indent_closing_bracket(text: &str, pos: Pos) -> Option<String> {
    let start: usize = text
        .split_inclusive('\n')
        .take(pos.line.checked_sub(1)?)
        .map(str::len)
        .sum();
    let line = text[start..].split('\n').next()?;
    let indent = line.len() - line.trim_start_matches(' ').len();
    if !matches!(line.as_bytes().get(indent), Some(b']' | b'}')) {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 1);
    out.push_str(&text[..start]);
    out.push(' ');
    out.push_str(&text[start..]);
    Some(out)
}

fn parse_once(text: &str, limits: Limits) -> Result<Vec<Document>, SyntaxError> {
    let mut builder = Builder {
        limits,
        ..Builder::default()
    };
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| SyntaxError {
            pos: Pos {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        builder.event(event, span)?;
    }
    Ok(builder.documents)
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
        /// Nodes in it so far (itself included).
        nodes: usize,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        nodes: usize,
        /// Keys seen, for the duplicate check in constant time per key.
        keys: HashMap<KeyId, Pos>,
    },
}

/// A mapping key as the duplicate check compares it: its kind and its text.
type KeyId = (u8, String);

fn key_id(node: &Node) -> Option<KeyId> {
    let kind = match node.value {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Int(_) => 2,
        Value::Float(_) => 3,
        Value::Str(_) => 4,
        Value::Seq(_) | Value::Map(_) => return None,
    };
    Some((kind, node.scalar_text()?.into_owned()))
}

#[derive(Default)]
struct Builder {
    limits: Limits,
    stack: Vec<Frame>,
    /// Each anchor's node and how many nodes it holds.
    anchors: HashMap<usize, (Node, usize)>,
    current: Option<Node>,
    documents: Vec<Document>,
    /// The current document: where it started (byte offset), its nodes, and the nodes its
    /// aliases repeated.
    doc_start: usize,
    doc_nodes: usize,
    alias_nodes: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        let pos = Pos::from_span(&span);
        let over = |message: String| Err(SyntaxError { pos, message });
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart(_) => {
                if self.documents.len() >= self.limits.documents {
                    return over(format!(
                        "more than {} documents in one input",
                        self.limits.documents
                    ));
                }
                self.current = None;
                self.anchors.clear();
                self.doc_start = span.start.index();
                self.doc_nodes = 0;
                self.alias_nodes = 0;
            }
            Event::DocumentEnd => {
                let bytes = span.end.index().saturating_sub(self.doc_start);
                if bytes > self.limits.document_bytes {
                    return over(format!(
                        "the document is {bytes} bytes, over the limit of {} bytes",
                        self.limits.document_bytes
                    ));
                }
                if let Some(root) = self.current.take() {
                    if root.value != Value::Null {
                        self.documents.push(Document { root });
                    }
                }
            }
            Event::Alias(id) => self.alias(id, pos)?,
            Event::Scalar(text, style, anchor, tag) => {
                let forced_str = tag
                    .as_ref()
                    .is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str");
                let value = if style == ScalarStyle::Plain && !forced_str {
                    resolve_plain(&text)
                } else {
                    Value::Str(text.into_owned())
                };
                let node = Node { value, pos };
                self.count(1, pos)?;
                if anchor != 0 {
                    self.anchors.insert(anchor, (node.clone(), 1));
                }
                self.push_node(node, 1)?;
            }
            Event::SequenceStart(anchor, _) => self.open(pos, anchor, false)?,
            Event::MappingStart(anchor, _) => self.open(pos, anchor, true)?,
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor, nodes) = match self.stack.pop() {
                    Some(Frame::Seq {
                        pos,
                        anchor,
                        items,
                        nodes,
                    }) => (
                        Node {
                            value: Value::Seq(items),
                            pos,
                        },
                        anchor,
                        nodes,
                    ),
                    Some(Frame::Map {
                        pos,
                        anchor,
                        entries,
                        nodes,
                        ..
                    }) => (
                        Node {
                            value: Value::Map(entries),
                            pos,
                        },
                        anchor,
                        nodes,
                    ),
                    None => return over("unbalanced collection end".into()),
                };
                if anchor != 0 {
                    self.anchors.insert(anchor, (node.clone(), nodes));
                }
                self.push_node(node, nodes)?;
            }
        }
        Ok(())
    }

    /// An alias: the anchored node again, counted as all it holds (refused before it is
    /// copied when that crosses a limit).
    fn alias(&mut self, id: usize, pos: Pos) -> Result<(), SyntaxError> {
        let Some((_, count)) = self.anchors.get(&id) else {
            return Err(SyntaxError {
                pos,
                message: "alias refers to an unknown anchor".into(),
            });
        };
        let count = *count;
        self.alias_nodes += count;
        if self.alias_nodes > self.limits.alias_nodes {
            return Err(SyntaxError {
                pos,
                message: format!(
                    "aliases repeat more than {} nodes in this document (the limit guards against alias bombs)",
                    self.limits.alias_nodes
                ),
            });
        }
        self.count(count, pos)?;
        let node = self.anchors[&id].0.clone();
        self.push_node(Node { pos, ..node }, count)
    }

    /// A sequence or mapping starts.
    fn open(&mut self, pos: Pos, anchor: usize, mapping: bool) -> Result<(), SyntaxError> {
        if self.stack.len() >= self.limits.depth {
            return Err(SyntaxError {
                pos,
                message: format!(
                    "collections are nested more than {} deep",
                    self.limits.depth
                ),
            });
        }
        self.count(1, pos)?;
        self.stack.push(if mapping {
            Frame::Map {
                pos,
                anchor,
                entries: Vec::new(),
                pending_key: None,
                nodes: 1,
                keys: HashMap::new(),
            }
        } else {
            Frame::Seq {
                pos,
                anchor,
                items: Vec::new(),
                nodes: 1,
            }
        });
        Ok(())
    }

    /// Counts `n` more nodes in the current document.
    fn count(&mut self, n: usize, pos: Pos) -> Result<(), SyntaxError> {
        self.doc_nodes += n;
        if self.doc_nodes > self.limits.nodes {
            return Err(SyntaxError {
                pos,
                message: format!(
                    "the document has more than {} nodes (aliases counted as what they repeat)",
                    self.limits.nodes
                ),
            });
        }
        Ok(())
    }

    /// Adds a finished node (holding `nodes` nodes) to the collection being read.
    fn push_node(&mut self, node: Node, nodes: usize) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => self.current = Some(node),
            Some(Frame::Seq {
                items, nodes: n, ..
            }) => {
                items.push(node);
                *n += nodes;
            }
            Some(Frame::Map {
                entries,
                pending_key,
                nodes: n,
                keys,
                ..
            }) => {
                *n += nodes;
                match pending_key.take() {
                    None => {
                        let Some(id) = key_id(&node) else {
                            return Err(SyntaxError {
                                pos: node.pos,
                                message: "a mapping key must be a scalar".into(),
                            });
                        };
                        if let Some(first) = keys.get(&id) {
                            return Err(SyntaxError {
                                pos: node.pos,
                                message: format!(
                                    "duplicate key `{}` (first defined at line {})",
                                    crate::quote::clip(&id.1),
                                    first.line
                                ),
                            });
                        }
                        keys.insert(id, node.pos);
                        *pending_key = Some(node);
                    }
                    Some(key) => entries.push((key, node)),
                }
            }
        }
        Ok(())
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::Int(i);
        }
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
    }
    let looks_numeric = digits
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_numeric {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_follow_the_core_schema() {
        let docs = parse_documents(
            "a: 1\nb: \"1\"\nc: true\nd: ~\ne: 1.5\nf: yes\ng: 0x1F\nh: 1.2.3\ni: !!str 5\n",
        )
        .unwrap();
        let root = &docs[0].root;
        assert_eq!(root.get("a").unwrap().value, Value::Int(1));
        assert_eq!(root.get("b").unwrap().value, Value::Str("1".into()));
        assert_eq!(root.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(root.get("d").unwrap().value, Value::Null);
        assert_eq!(root.get("e").unwrap().value, Value::Float(1.5));
        // YAML 1.2: `yes` is a string, not a boolean.
        assert_eq!(root.get("f").unwrap().value, Value::Str("yes".into()));
        assert_eq!(root.get("g").unwrap().value, Value::Int(31));
        assert_eq!(root.get("h").unwrap().value, Value::Str("1.2.3".into()));
        assert_eq!(root.get("i").unwrap().value, Value::Str("5".into()));
    }

    #[test]
    fn positions_are_one_based() {
        let docs = parse_documents("---\nkind: Service\nspec:\n  ports:\n  - port: 80\n").unwrap();
        let root = &docs[0].root;
        let (key, _) = root.entry("spec").unwrap();
        assert_eq!(key.pos, Pos { line: 3, column: 1 });
        let port = &root.get("spec").unwrap().get("ports").unwrap();
        let Value::Seq(items) = &port.value else {
            panic!("ports is a list")
        };
        let (k, v) = items[0].entry("port").unwrap();
        assert_eq!(k.pos, Pos { line: 5, column: 5 });
        assert_eq!(
            v.pos,
            Pos {
                line: 5,
                column: 11
            }
        );
    }

    #[test]
    fn empty_documents_are_dropped() {
        let docs = parse_documents("---\n# only a comment\n---\na: 1\n---\n").unwrap();
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn duplicate_keys_are_errors_with_both_lines() {
        let err = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pos.line, 3);
        assert!(err.message.contains("duplicate key `a`"), "{err}");
        assert!(err.message.contains("line 1"), "{err}");
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err}");
    }

    #[test]
    fn anchors_and_aliases_are_expanded() {
        let docs = parse_documents("a: &x {k: v}\nb: *x\n").unwrap();
        assert_eq!(
            docs[0].root.get("b").unwrap().get("k").unwrap().as_str(),
            Some("v")
        );
    }

    /// Nine anchors of nine aliases each: 9^9 (387 million) nodes if expanded.
    fn alias_bomb() -> String {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..=9 {
            let prev = format!("*a{}", i - 1);
            let items = [prev.as_str(); 9].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{items}]\n"));
        }
        text
    }

    #[test]
    fn an_alias_bomb_is_refused_at_the_alias_that_crosses_the_limit() {
        let err = parse_documents(&alias_bomb()).unwrap_err();
        assert!(
            err.message
                .contains("aliases repeat more than 100000 nodes"),
            "{err}"
        );
        assert!(err.pos.line > 1 && err.pos.line <= 10, "{err}");
    }

    #[test]
    fn limits_on_depth_documents_size_and_nodes() {
        let deep = format!("{}{}", "[".repeat(150), "]".repeat(150));
        let err = parse_documents(&deep).unwrap_err();
        assert!(err.message.contains("nested more than 100 deep"), "{err}");

        let small = Limits {
            documents: 3,
            ..Limits::DEFAULT
        };
        let err = parse_with(&"---\na: 1\n".repeat(4), small).unwrap_err();
        assert!(err.message.contains("more than 3 documents"), "{err}");
        assert_eq!(err.pos.line, 7);

        let small = Limits {
            document_bytes: 64,
            ..Limits::DEFAULT
        };
        let text = format!("a: 1\n---\nb: {}\n", "x".repeat(100));
        let err = parse_with(&text, small).unwrap_err();
        assert!(err.message.contains("over the limit of 64 bytes"), "{err}");

        let small = Limits {
            stream_bytes: 10,
            ..Limits::DEFAULT
        };
        let err = parse_with("a: 12345678901\n", small).unwrap_err();
        assert!(err.message.contains("over the limit of 10 bytes"), "{err}");

        let small = Limits {
            nodes: 50,
            ..Limits::DEFAULT
        };
        let text: String = (0..30).map(|i| format!("k{i}: v\n")).collect();
        let err = parse_with(&text, small).unwrap_err();
        assert!(err.message.contains("more than 50 nodes"), "{err}");
    }

    #[test]
    fn a_large_mapping_is_read_and_its_duplicates_found() {
        let mut text: String = (0..70_000).map(|i| format!("k{i}: v\n")).collect();
        let docs = parse_documents(&text).unwrap();
        let Value::Map(entries) = &docs[0].root.value else {
            panic!("a mapping")
        };
        assert_eq!(entries.len(), 70_000);
        text.push_str("k17: again\n");
        let err = parse_documents(&text).unwrap_err();
        assert_eq!(err.pos.line, 70_001);
        assert!(
            err.message
                .contains("duplicate key `k17` (first defined at line 18)"),
            "{err}"
        );
        // Keys of different kinds do not clash.
        assert!(parse_documents("1: a\n\"1\": b\n").is_ok());
    }

    #[test]
    fn a_closing_bracket_at_the_parent_keys_indentation_is_read_as_pyyaml_reads_it() {
        let text = "spec:\n  hosts: [\n    \"a.example.com\"\n  ]\n  ports: {\n    http: 80\n  }\nb: [\n  1\n]\n";
        let docs = parse_documents(text).unwrap();
        let spec = docs[0].root.get("spec").unwrap();
        let Value::Seq(hosts) = &spec.get("hosts").unwrap().value else {
            panic!("hosts is a list")
        };
        assert_eq!(hosts[0].as_str(), Some("a.example.com"));
        assert_eq!(hosts[0].pos, Pos { line: 3, column: 5 });
        assert_eq!(
            spec.get("ports").unwrap().get("http").unwrap().value,
            Value::Int(80)
        );
        assert!(docs[0].root.get("b").is_some());
        // Other indentation mistakes are still errors.
        assert!(parse_documents("a:\n  b: 1\n c: 2\n").is_err());
    }
}
