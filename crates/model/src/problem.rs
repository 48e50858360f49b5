//! Problems found while loading or validating resources: where, which field, what is wrong,
//! and what would be right.

use std::fmt;
use std::path::PathBuf;

pub use crate::quote::{clip, clip_message, QUOTE_MAX};
use crate::yaml::{Node, Pos, Value};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    /// A field of a structured object: printed `.name`.
    Field(String),
    /// A key of a free-form map (labels, portLevelMtls): printed `[key]`.
    Key(String),
    /// An index in a list: printed `[i]`.
    Index(usize),
}

/// A field path such as `spec.ports[1].selector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// Parses the dotted form used in code: `spec.ports[1].name`, `metadata.labels[app]`.
    pub fn parse(s: &str) -> Self {
        let mut segs = Vec::new();
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let (name, rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !name.is_empty() {
                segs.push(Seg::Field(name.to_string()));
            }
            for idx in rest.split('[').filter(|p| !p.is_empty()) {
                let inner = idx.trim_end_matches(']');
                match inner.parse::<usize>() {
                    Ok(i) => segs.push(Seg::Index(i)),
                    Err(_) => segs.push(Seg::Key(inner.to_string())),
                }
            }
        }
        FieldPath(segs)
    }

    pub fn field(&self, name: &str) -> Self {
        self.with(Seg::Field(name.to_string()))
    }

    pub fn key(&self, key: &str) -> Self {
        self.with(Seg::Key(key.to_string()))
    }

    pub fn index(&self, i: usize) -> Self {
        self.with(Seg::Index(i))
    }

    fn with(&self, seg: Seg) -> Self {
        let mut v = self.0.clone();
        v.push(seg);
        FieldPath(v)
    }

    pub fn parent(&self) -> Option<FieldPath> {
        if self.0.is_empty() {
            None
        } else {
            Some(FieldPath(self.0[..self.0.len() - 1].to_vec()))
        }
    }

    pub fn starts_with(&self, other: &FieldPath) -> bool {
        self.0.starts_with(&other.0)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The position of the deepest node of this path that exists in `root`: the key of a
    /// mapping entry when the path ends on one (that is where a reader looks), else the value.
    pub fn locate(&self, root: &Node) -> Pos {
        let mut node = root;
        let mut pos = root.pos;
        for seg in &self.0 {
            let next = match (seg, &node.value) {
                (Seg::Field(k) | Seg::Key(k), Value::Map(_)) => node.entry(k),
                (Seg::Index(i), Value::Seq(items)) => items.get(*i).map(|n| (n, n)),
                _ => None,
            };
            match next {
                Some((key, value)) => {
                    pos = key.pos;
                    node = value;
                }
                None => break,
            }
        }
        pos
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Field(name) if i == 0 => f.write_str(&clip(name))?,
                Seg::Field(name) => write!(f, ".{}", clip(name))?,
                Seg::Key(key) => write!(f, "[{}]", clip(key))?,
                Seg::Index(idx) => write!(f, "[{idx}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// Where a document came from: a file (or `-` for stdin) and the document's index in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub file: PathBuf,
    /// 0-based index of the document in its file.
    pub document: usize,
}

/// A problem found in a document, ready to print as
/// `file:line:column: error: path: message (hint)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub file: PathBuf,
    pub pos: Pos,
    pub path: FieldPath,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: ",
            self.file.display(),
            self.pos,
            self.severity
        )?;
        if !self.path.is_root() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// A problem before it is placed in a file: the path, and the position when the finder knew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub path: FieldPath,
    pub pos: Option<Pos>,
    pub message: String,
    pub hint: Option<String>,
}

impl Finding {
    pub fn error(path: FieldPath, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Error,
            path,
            pos: None,
            message: clip_message(message.into()),
            hint: None,
        }
    }

    pub fn warning(path: FieldPath, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(path, message)
        }
    }

    pub fn at(mut self, pos: Pos) -> Self {
        self.pos = Some(pos);
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(clip_message(hint.into()));
        self
    }

    /// Places the finding in a file; a finding without a position gets the one of its path.
    pub fn place(self, file: &std::path::Path, root: &Node) -> Problem {
        Problem {
            severity: self.severity,
            file: file.to_path_buf(),
            pos: self.pos.unwrap_or_else(|| self.path.locate(root)),
            path: self.path,
            message: self.message,
            hint: self.hint,
        }
    }
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if word.len() > 2 * QUOTE_MAX {
        // Nothing that long is a misspelling of a field name (and the distance would cost).
        return None;
    }
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = if c.eq_ignore_ascii_case(word) {
            0
        } else {
            edit_distance(&lower, &c.to_ascii_lowercase())
        };
        let limit = (word.len().max(c.len()) / 3).clamp(1, 3);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Optimal-string-alignment distance: like Levenshtein, but a swap of two neighbours
/// (`mdoe` for `mode`) costs one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_like_kubectl() {
        let p = FieldPath::root()
            .field("spec")
            .field("ports")
            .index(1)
            .field("selector");
        assert_eq!(p.to_string(), "spec.ports[1].selector");
        assert_eq!(FieldPath::parse("spec.ports[1].selector"), p);
        let k = FieldPath::root()
            .field("spec")
            .field("portLevelMtls")
            .key("9080")
            .field("mode");
        assert_eq!(k.to_string(), "spec.portLevelMtls[9080].mode");
    }

    #[test]
    fn did_you_mean() {
        assert_eq!(closest("STRCT", ["UNSET", "STRICT"]), Some("STRICT"));
        assert_eq!(closest("mdoe", ["mode", "selector"]), Some("mode"));
        assert_eq!(closest("strict", ["STRICT"]), Some("STRICT"));
        assert_eq!(closest("banana", ["mode", "selector"]), None);
    }

    #[test]
    fn long_values_are_not_echoed_whole() {
        let value = "v".repeat(1 << 20);
        let f = Finding::error(
            FieldPath::root().field("kind"),
            format!("unknown kind \"{value}\"; accepted kinds: Pod, Service"),
        );
        assert!(f.message.len() < 200, "{}", f.message.len());
        assert!(f.message.contains("… (1048576 bytes)"), "{}", f.message);
        assert!(
            f.message.ends_with("accepted kinds: Pod, Service"),
            "{}",
            f.message
        );
        let path = FieldPath::root().field("data").key(&value);
        assert!(path.to_string().len() < 120);
        assert_eq!(closest(&value, ["kind"]), None);
    }
}
