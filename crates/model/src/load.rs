//! Loading manifests: files, directories (recursively, in name order) and standard input;
//! multi-document YAML (JSON is YAML too); kind and version dispatch; namespace defaulting;
//! then validation, with every problem of every document reported.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::de::{from_node, overlaps_error};
use crate::problem::{closest, FieldPath, Finding, Origin, Problem};
use crate::resource::{api_version, Kind, Resource, KINDS};
use crate::validate::{self, ValidateOptions};
use crate::yaml::{parse_documents, Limits, Node, Value};

/// How namespaces are filled in.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `-n NS` on the command line: objects without a namespace get it, and an object
    /// naming another namespace is an error (as with kubectl).
    pub namespace: Option<String>,
    /// The namespace used when neither the object nor `-n` names one.
    pub default_namespace: String,
    pub validate: ValidateOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            namespace: None,
            default_namespace: "default".to_string(),
            validate: ValidateOptions::default(),
        }
    }
}

/// One document that parsed into a known kind.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub origin: Origin,
    pub resource: Resource,
    /// The document as read, for locating later findings.
    pub node: Node,
}

/// Everything a load produced: the documents, in deterministic order (files by name,
/// documents in file order), and the problems, sorted by file and position.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub documents: Vec<Loaded>,
    pub problems: Vec<Problem>,
}

impl LoadReport {
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(Problem::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.is_error())
    }

    fn merge(&mut self, other: LoadReport) {
        self.documents.extend(other.documents);
        self.problems.extend(other.problems);
    }
}

/// The name shown for standard input.
pub const STDIN_NAME: &str = "<stdin>";

/// Loads every path: `-` is standard input, a directory is read recursively (`.yaml`,
/// `.yml`, `.json` files, in name order).
pub fn load_paths(paths: &[PathBuf], opts: &LoadOptions) -> LoadReport {
    let mut report = LoadReport::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            let limit = Limits::DEFAULT.stream_bytes as u64;
            match std::io::stdin().take(limit + 1).read_to_string(&mut text) {
                Ok(_) => report.merge(load_str(Path::new(STDIN_NAME), &text, opts)),
                Err(e) => report.problems.push(file_problem(
                    Path::new(STDIN_NAME),
                    format!("cannot read standard input: {e}"),
                )),
            }
            continue;
        }
        match manifest_files(path) {
            Ok(files) => {
                for file in files {
                    match read_manifest(&file) {
                        Ok(text) => report.merge(load_str(&file, &text, opts)),
                        Err(e) => report
                            .problems
                            .push(file_problem(&file, format!("cannot read file: {e}"))),
                    }
                }
            }
            Err(e) => report.problems.push(file_problem(path, e)),
        }
    }
    report
}

/// A manifest file's text; one over the stream limit is not read into memory.
fn read_manifest(file: &Path) -> std::io::Result<String> {
    let limit = Limits::DEFAULT.stream_bytes;
    let len = fs::metadata(file)?.len();
    if len > limit as u64 {
        return Err(std::io::Error::other(format!(
            "the file is {len} bytes, over the limit of {limit} bytes"
        )));
    }
    fs::read_to_string(file)
}

fn file_problem(file: &Path, message: String) -> Problem {
    Finding::error(FieldPath::root(), message).place(
        file,
        &Node {
            value: Value::Null,
            pos: crate::yaml::Pos { line: 1, column: 1 },
        },
    )
}

/// The manifest files under a path, sorted so that loads are deterministic.
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(path)
        .map_err(|e| format!("cannot list directory: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            out.extend(manifest_files(&entry)?);
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Loads the documents of one text, named `file` in messages.
pub fn load_str(file: &Path, text: &str, opts: &LoadOptions) -> LoadReport {
    let mut report = LoadReport::default();
    let documents = match parse_documents(text) {
        Ok(d) => d,
        Err(e) => {
            report.problems.push(Problem {
                severity: crate::problem::Severity::Error,
                file: file.to_path_buf(),
                pos: e.pos,
                path: FieldPath::root(),
                message: format!("YAML syntax error: {}", e.message),
                hint: None,
            });
            return report;
        }
    };
    for (index, doc) in documents.into_iter().enumerate() {
        let origin = Origin {
            file: file.to_path_buf(),
            document: index,
        };
        let (resource, findings) = load_document(&doc.root, opts);
        report
            .problems
            .extend(findings.into_iter().map(|f| f.place(file, &doc.root)));
        if let Some(resource) = resource {
            report.documents.push(Loaded {
                origin,
                resource,
                node: doc.root,
            });
        }
    }
    report.problems.sort_by(|a, b| {
        (&a.file, a.pos.line, a.pos.column).cmp(&(&b.file, b.pos.line, b.pos.column))
    });
    report
}

/// Reads one document into a resource. The resource is returned even when it has problems
/// (callers decide by the findings' severities) unless its kind could not be known.
pub fn load_document(root: &Node, opts: &LoadOptions) -> (Option<Resource>, Vec<Finding>) {
    let mut findings = Vec::new();
    if !matches!(root.value, Value::Map(_)) {
        findings.push(
            Finding::error(
                FieldPath::root(),
                format!(
                    "a manifest must be a mapping with apiVersion, kind and metadata, found {}",
                    root.kind_name()
                ),
            )
            .at(root.pos),
        );
        return (None, findings);
    }
    let Some(kind) = identify(root, &mut findings) else {
        return (None, findings);
    };
    let (resource, mut structural) = deserialize(kind, root);
    findings.append(&mut structural);
    let Some(mut resource) = resource else {
        return (None, findings);
    };
    default_namespace(&mut resource, root, opts, &mut findings);
    let semantic = validate::check(&resource, &opts.validate);
    let structural_snapshot = findings.clone();
    findings.extend(
        semantic
            .into_iter()
            .filter(|f| !f.path.is_root() && !overlaps_error(&f.path, &structural_snapshot)),
    );
    (Some(resource), findings)
}

fn identify(root: &Node, findings: &mut Vec<Finding>) -> Option<Kind> {
    let kind_node = root.entry("kind");
    let version_node = root.entry("apiVersion");
    let kind_text = kind_node.and_then(|(_, v)| v.as_str());
    let version_text = version_node.and_then(|(_, v)| v.as_str());
    let accepted: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
    let kind = match (kind_node, kind_text) {
        (None, _) => {
            findings.push(
                Finding::error(
                    FieldPath::root().field("kind"),
                    "missing required field \"kind\"",
                )
                .at(root.pos)
                .hint(format!("accepted kinds: {}", accepted.join(", "))),
            );
            None
        }
        (Some((_, v)), None) => {
            findings.push(
                Finding::error(
                    FieldPath::root().field("kind"),
                    format!("expected a string, found {}", v.kind_name()),
                )
                .at(v.pos),
            );
            None
        }
        (Some((_, v)), Some(text)) => match Kind::from_manifest(text) {
            Some(kind) => Some((kind, v.pos)),
            None => {
                let mut f = Finding::error(
                    FieldPath::root().field("kind"),
                    format!(
                        "unknown kind \"{text}\"; accepted kinds: {}",
                        accepted.join(", ")
                    ),
                )
                .at(v.pos);
                if let Some(close) = closest(text, accepted.iter().copied()) {
                    f = f.hint(format!("did you mean {close}?"));
                }
                findings.push(f);
                None
            }
        },
    };
    let (kind, _) = kind?;
    let info = kind.info();
    let allowed: Vec<String> = info
        .versions
        .iter()
        .map(|v| api_version(info.group, v))
        .collect();
    match (version_node, version_text) {
        (None, _) => {
            findings.push(
                Finding::error(
                    FieldPath::root().field("apiVersion"),
                    "missing required field \"apiVersion\"",
                )
                .at(root.pos)
                .hint(format!("{} is served as {}", info.name, allowed.join(", "))),
            );
            None
        }
        (Some((_, v)), Some(text)) if allowed.iter().any(|a| a == text) => {
            let _ = v;
            Some(kind)
        }
        (Some((_, v)), _) => {
            findings.push(
                Finding::error(
                    FieldPath::root().field("apiVersion"),
                    format!(
                        "{} is not served as {}; use one of {}",
                        info.name,
                        v.scalar_text()
                            .map(|s| format!("\"{s}\""))
                            .unwrap_or_else(|| v.kind_name().to_string()),
                        allowed.join(", ")
                    ),
                )
                .at(v.pos),
            );
            None
        }
    }
}

fn deserialize(kind: Kind, root: &Node) -> (Option<Resource>, Vec<Finding>) {
    fn typed<T: serde::de::DeserializeOwned>(
        root: &Node,
        wrap: fn(T) -> Resource,
    ) -> (Option<Resource>, Vec<Finding>) {
        let (value, findings) = from_node::<T>(root);
        (value.map(wrap), findings)
    }
    match kind {
        Kind::Namespace => typed(root, Resource::Namespace),
        Kind::ServiceAccount => typed(root, Resource::ServiceAccount),
        Kind::Secret => typed(root, Resource::Secret),
        Kind::ConfigMap => typed(root, Resource::ConfigMap),
        Kind::Service => typed(root, Resource::Service),
        Kind::Deployment => typed(root, Resource::Deployment),
        Kind::ReplicationController => typed(root, Resource::ReplicationController),
        Kind::Pod => typed(root, Resource::Pod),
        Kind::PeerAuthentication => typed(root, Resource::PeerAuthentication),
        Kind::AuthorizationPolicy => typed(root, Resource::AuthorizationPolicy),
        Kind::Policy => typed(root, Resource::Policy),
        Kind::MeshPolicy => typed(root, Resource::MeshPolicy),
        Kind::DestinationRule => typed(root, Resource::DestinationRule),
        Kind::Sidecar => typed(root, Resource::Sidecar),
        Kind::Gateway => typed(root, Resource::Gateway),
        Kind::VirtualService => typed(root, Resource::VirtualService),
    }
}

fn default_namespace(
    resource: &mut Resource,
    root: &Node,
    opts: &LoadOptions,
    findings: &mut Vec<Finding>,
) {
    let kind = resource.kind();
    let meta = resource.metadata_mut();
    if !kind.is_namespaced() {
        // Cluster-scoped objects have no namespace; kubectl ignores one given here.
        meta.namespace = None;
        return;
    }
    match (&meta.namespace, &opts.namespace) {
        (Some(own), Some(flag)) if !own.is_empty() && own != flag => {
            let path = FieldPath::root().field("metadata").field("namespace");
            findings.push(
                Finding::error(
                    path.clone(),
                    format!(
                        "the namespace from the provided object \"{own}\" does not match the namespace \"{flag}\" given with -n"
                    ),
                )
                .at(path.locate(root))
                .hint(format!("pass -n {own}, or remove metadata.namespace")),
            );
        }
        (Some(own), _) if !own.is_empty() => {}
        _ => {
            meta.namespace = Some(
                opts.namespace
                    .clone()
                    .unwrap_or_else(|| opts.default_namespace.clone()),
            );
        }
    }
}
