//! The kubectl-shaped verbs: apply, create, get, delete, describe, label, and istioctl's
//! proxy-status. They send requests to the control plane of the state dir and print its
//! answers the way kubectl does; exit 1 on any error.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tessera_control::api::client::{ApiClient, ClientError};
use tessera_control::api::*;
use tessera_control::push::SyncState;

use crate::jsonpath;
use crate::table::Table;

/// Where every verb sends its request, with `-n`.
pub struct Ctx {
    pub state_dir: PathBuf,
    pub namespace: Option<String>,
    /// Every `-n` given (verbs that take several).
    pub namespaces: Vec<String>,
}

impl Ctx {
    pub fn client(&self) -> ApiClient {
        ApiClient::new(&self.state_dir)
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Prints a refusal the way kubectl does (each reason on its own line) and exits 1.
pub fn fail(e: ClientError) -> ExitCode {
    match e {
        ClientError::Refused {
            errors, partial, ..
        } => {
            if let Some(p) = partial {
                for o in &p.outcomes {
                    println!("{o}");
                }
            }
            for line in errors {
                eprintln!("{line}");
            }
        }
        other => eprintln!("error: {other}"),
    }
    ExitCode::FAILURE
}

pub fn read_documents(files: &[PathBuf]) -> Result<Vec<Document>, String> {
    let mut out = Vec::new();
    for f in files {
        if f.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("error: reading standard input: {e}"))?;
            out.push(Document {
                name: tessera_model::load::STDIN_NAME.into(),
                text,
            });
            continue;
        }
        let paths = if f.is_dir() {
            tessera_model::load::manifest_files(f).map_err(|e| format!("error: {e}"))?
        } else {
            vec![f.clone()]
        };
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|e| {
                format!(
                    "error: the path {:?} cannot be read: {e}",
                    p.display().to_string()
                )
            })?;
            out.push(Document {
                name: p.display().to_string(),
                text,
            });
        }
    }
    Ok(out)
}

fn print_change(r: &ChangeResponse) {
    for w in &r.warnings {
        eprintln!("Warning: {w}");
    }
    for o in &r.outcomes {
        println!("{o}");
    }
}

// ---- apply / create -------------------------------------------------------------------

#[derive(Args)]
pub struct ApplyArgs {
    /// A manifest file, a directory (read recursively) or - for standard input; repeatable
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    files: Vec<PathBuf>,
}

pub fn apply(ctx: &Ctx, args: &ApplyArgs) -> ExitCode {
    send_documents(ctx, &args.files, false)
}

fn send_documents(ctx: &Ctx, files: &[PathBuf], create: bool) -> ExitCode {
    let documents = match read_documents(files) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    send(
        ctx,
        ApplyRequest {
            documents,
            namespace: ctx.namespace.clone(),
            create,
        },
    )
}

fn send(ctx: &Ctx, request: ApplyRequest) -> ExitCode {
    match runtime().block_on(ctx.client().apply(&request)) {
        Ok(r) => {
            print_change(&r);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

#[derive(Args)]
pub struct CreateArgs {
    /// Create the objects of a manifest (an existing one is an error)
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    files: Vec<PathBuf>,
    #[command(subcommand)]
    what: Option<CreateWhat>,
}

#[derive(Subcommand)]
pub enum CreateWhat {
    /// A namespace
    #[command(alias = "ns")]
    Namespace { name: String },
    /// A secret: `tls NAME --cert FILE --key FILE` or `generic NAME --from-file=[key=]path`
    #[command(subcommand)]
    Secret(SecretKind),
    /// A config map from files or literals
    #[command(alias = "cm")]
    Configmap(DataArgs),
}

#[derive(Subcommand)]
pub enum SecretKind {
    /// A kubernetes.io/tls secret with tls.crt and tls.key
    Tls {
        name: String,
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// An Opaque secret
    Generic(DataArgs),
}

#[derive(Args)]
pub struct DataArgs {
    name: String,
    /// `path`, `key=path`, or a directory (each file a key); repeatable
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    from_file: Vec<String>,
    /// `key=value`; repeatable
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    from_literal: Vec<String>,
}

/// The key/value pairs of `--from-file` and `--from-literal`, as kubectl reads them.
fn collect_data(args: &DataArgs) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut data = BTreeMap::new();
    for spec in &args.from_file {
        let (key, path) = match spec.split_once('=') {
            Some((k, p)) => (Some(k.to_string()), PathBuf::from(p)),
            None => (None, PathBuf::from(spec)),
        };
        let files: Vec<(String, PathBuf)> = if path.is_dir() {
            let mut v: Vec<_> = std::fs::read_dir(&path)
                .map_err(|e| format!("error: {}: {e}", path.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .map(|p| (file_key(&p), p))
                .collect();
            v.sort();
            v
        } else {
            vec![(key.unwrap_or_else(|| file_key(&path)), path)]
        };
        for (k, p) in files {
            let bytes = std::fs::read(&p).map_err(|e| format!("error: {}: {e}", p.display()))?;
            data.insert(k, bytes);
        }
    }
    for lit in &args.from_literal {
        let (k, v) = lit
            .split_once('=')
            .ok_or_else(|| format!("error: invalid literal source {lit:?}, expected key=value"))?;
        data.insert(k.to_string(), v.as_bytes().to_vec());
    }
    Ok(data)
}

fn file_key(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn b64(bytes: &[u8]) -> String {
    tessera_model::kube::encode_base64(bytes)
}

pub fn create(ctx: &Ctx, args: &CreateArgs) -> ExitCode {
    let Some(what) = &args.what else {
        if args.files.is_empty() {
            eprintln!(
                "error: must specify one of -f, or a kind to create (namespace, secret, configmap)"
            );
            return ExitCode::FAILURE;
        }
        return send_documents(ctx, &args.files, true);
    };
    if !args.files.is_empty() {
        eprintln!(
            "error: -f cannot be combined with a kind to create ({})",
            match what {
                CreateWhat::Namespace { .. } => "namespace",
                CreateWhat::Secret(_) => "secret",
                CreateWhat::Configmap(_) => "configmap",
            }
        );
        return ExitCode::FAILURE;
    }
    // `kubectl create -n NS secret ...`: -n is tessera's global option wherever it stands.
    let ns = ctx.namespace.clone();
    let object = match what {
        CreateWhat::Namespace { name } => json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }),
        CreateWhat::Secret(SecretKind::Tls { name, cert, key }) => {
            let read =
                |p: &PathBuf| std::fs::read(p).map_err(|e| format!("error: {}: {e}", p.display()));
            let (c, k) = match (read(cert), read(key)) {
                (Ok(c), Ok(k)) => (c, k),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": name, "namespace": ns},
                "data": {"tls.crt": b64(&c), "tls.key": b64(&k)}
            })
        }
        CreateWhat::Secret(SecretKind::Generic(d)) | CreateWhat::Configmap(d) => {
            let data = match collect_data(d) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            if matches!(what, CreateWhat::Configmap(_)) {
                let mut text = serde_json::Map::new();
                let mut binary = serde_json::Map::new();
                for (k, v) in data {
                    match String::from_utf8(v) {
                        Ok(s) => text.insert(k, Value::String(s)),
                        Err(e) => binary.insert(k, Value::String(b64(e.as_bytes()))),
                    };
                }
                json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": d.name, "namespace": ns},
                    "data": text, "binaryData": binary
                })
            } else {
                let encoded: serde_json::Map<String, Value> = data
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(b64(&v))))
                    .collect();
                json!({
                    "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": d.name, "namespace": ns},
                    "data": encoded
                })
            }
        }
    };
    let mut object = object;
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|_, v| !v.is_null());
    }
    send(
        ctx,
        ApplyRequest {
            documents: vec![Document {
                name: "<command line>".into(),
                text: object.to_string(),
            }],
            namespace: ctx.namespace.clone(),
            create: true,
        },
    )
}

// ---- get ------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Yaml,
    Json,
    Wide,
    Name,
}

#[derive(Args)]
pub struct GetArgs {
    /// The kind, as kubectl accepts it: pods, po, svc, peerauthentication, pa, dr, ...
    kind: String,
    /// Names (default: all)
    names: Vec<String>,
    /// Every namespace
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// A label query: app=sleep, app!=x, 'env in (a,b)', key, !key
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// yaml, json, wide, name, or jsonpath=TEMPLATE
    #[arg(short = 'o', long)]
    output: Option<String>,
}

pub fn get(ctx: &Ctx, args: &GetArgs) -> ExitCode {
    let (format, template) = match args.output.as_deref() {
        None => (None, None),
        Some(o) if o.starts_with("jsonpath=") => (None, Some(o["jsonpath=".len()..].to_string())),
        Some(o) => match Format::from_str(o, true) {
            Ok(f) => (Some(f), None),
            Err(_) => {
                eprintln!("error: unable to match a printer suitable for the output format {o:?}, allowed formats are: json,jsonpath,name,wide,yaml");
                return ExitCode::FAILURE;
            }
        },
    };
    let client = ctx.client();
    let rt = runtime();
    let names: Vec<Option<String>> = if args.names.is_empty() {
        vec![None]
    } else {
        args.names.iter().cloned().map(Some).collect()
    };
    let mut items = Vec::new();
    let mut response = None;
    let mut failed = false;
    for name in names {
        let request = GetRequest {
            kind: args.kind.clone(),
            name: name.clone(),
            namespace: ctx.namespace.clone(),
            all_namespaces: args.all_namespaces,
            selector: args.selector.clone(),
        };
        match rt.block_on(client.get(&request)) {
            Ok(r) => {
                items.extend(r.items.clone());
                response = Some(r);
            }
            Err(e) => {
                fail(e);
                failed = true;
            }
        }
    }
    let Some(resp) = response else {
        return ExitCode::FAILURE;
    };
    let single = args.names.len() == 1;
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}});
    let doc = if single && items.len() == 1 {
        items[0].clone()
    } else {
        list
    };
    if let Some(t) = template {
        match jsonpath::render(&t, &doc) {
            Ok(s) => print!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match format {
            Some(Format::Yaml) => print!("{}", serde_norway::to_string(&doc).unwrap_or_default()),
            Some(Format::Json) => {
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default())
            }
            Some(Format::Name) => {
                let kind = tessera_model::Kind::from_manifest(&resp.kind);
                for i in &items {
                    let name = i["metadata"]["name"].as_str().unwrap_or("");
                    match kind {
                        Some(k) => println!("{}/{name}", tessera_model::resource::type_name(k)),
                        None => println!("{name}"),
                    }
                }
            }
            f => {
                if items.is_empty() {
                    if !failed {
                        match (&resp.namespace, resp.namespaced) {
                            (Some(ns), true) => eprintln!("No resources found in {ns} namespace."),
                            _ => eprintln!("No resources found"),
                        }
                    }
                } else {
                    print!(
                        "{}",
                        crate::objects::table(
                            &resp.kind,
                            &items,
                            args.all_namespaces && resp.namespaced,
                            f == Some(Format::Wide)
                        )
                    );
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

// ---- delete ---------------------------------------------------------------------------

#[derive(Args)]
pub struct DeleteArgs {
    /// Delete the objects of a manifest
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    files: Vec<PathBuf>,
    /// KIND NAME... (e.g. `service httpbin sleep`, `ns full partial`)
    words: Vec<String>,
    /// Missing objects are not an error (also --ignore-not-found=true, as kubectl)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    ignore_not_found: bool,
}

pub fn delete(ctx: &Ctx, args: &DeleteArgs) -> ExitCode {
    let documents = match read_documents(&args.files) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut targets = Vec::new();
    // kubectl's two forms: KIND NAME... or KIND/NAME...
    if args.words.iter().all(|w| w.contains('/')) {
        for w in &args.words {
            let (k, n) = w.split_once('/').unwrap_or_default();
            targets.push(Target {
                kind: k.into(),
                name: n.into(),
                namespace: ctx.namespace.clone(),
            });
        }
    } else if let Some((kind, names)) = args.words.split_first() {
        if names.is_empty() {
            eprintln!("error: resource(s) were provided, but no name was specified");
            return ExitCode::FAILURE;
        }
        for n in names {
            targets.push(Target {
                kind: kind.clone(),
                name: n.clone(),
                namespace: ctx.namespace.clone(),
            });
        }
    }
    if documents.is_empty() && targets.is_empty() {
        eprintln!("error: You must provide one or more resources by argument or filename.");
        return ExitCode::FAILURE;
    }
    let request = DeleteRequest {
        documents,
        namespace: ctx.namespace.clone(),
        targets,
        ignore_not_found: args.ignore_not_found,
    };
    match runtime().block_on(ctx.client().delete(&request)) {
        Ok(r) => {
            print_change(&r);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

// ---- label ----------------------------------------------------------------------------

#[derive(Args)]
pub struct LabelArgs {
    kind: String,
    name: String,
    /// key=value to set, key- to remove
    #[arg(required = true)]
    labels: Vec<String>,
    /// Replace a label that already has another value
    #[arg(long)]
    overwrite: bool,
}

pub fn label(ctx: &Ctx, args: &LabelArgs) -> ExitCode {
    let mut set = BTreeMap::new();
    let mut remove = Vec::new();
    for l in &args.labels {
        if let Some((k, v)) = l.split_once('=') {
            set.insert(k.to_string(), v.to_string());
        } else if let Some(k) = l.strip_suffix('-') {
            remove.push(k.to_string());
        } else {
            eprintln!("error: invalid label spec {l:?}: expected key=value or key-");
            return ExitCode::FAILURE;
        }
    }
    let request = LabelRequest {
        target: Target {
            kind: args.kind.clone(),
            name: args.name.clone(),
            namespace: ctx.namespace.clone(),
        },
        set,
        remove,
        overwrite: args.overwrite,
    };
    match runtime().block_on(ctx.client().label(&request)) {
        Ok(r) => {
            for o in &r.outcomes {
                if o.change == tessera_control::objects::Change::Unchanged {
                    println!("{} not labeled", o.key.reference());
                } else {
                    println!("{o}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

// ---- describe -------------------------------------------------------------------------

#[derive(Args)]
pub struct DescribeArgs {
    kind: String,
    name: String,
}

pub fn describe(ctx: &Ctx, args: &DescribeArgs) -> ExitCode {
    let rt = runtime();
    let client = ctx.client();
    let request = GetRequest {
        kind: args.kind.clone(),
        name: Some(args.name.clone()),
        namespace: ctx.namespace.clone(),
        all_namespaces: false,
        selector: None,
    };
    let resp = match rt.block_on(client.get(&request)) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let Some(object) = resp.items.first() else {
        return ExitCode::FAILURE;
    };
    // A pod's proxy: what the compiler decided for it, with the reasons.
    let mesh = if resp.kind == "Pod" {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        rt.block_on(client.config(&format!("{}.{ns}", args.name)))
            .ok()
    } else {
        None
    };
    print!(
        "{}",
        crate::objects::describe(&resp.kind, object, mesh.as_ref())
    );
    ExitCode::SUCCESS
}

// ---- proxy-status ---------------------------------------------------------------------

pub fn proxy_status(ctx: &Ctx) -> ExitCode {
    let rows = match runtime().block_on(ctx.client().proxies()) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let mut t = Table::new(&[
        "NAME",
        "IDENTITY",
        "STATUS",
        "PUSHED",
        "ACKED",
        "PROXY VERSION",
    ]);
    for r in rows {
        if ctx
            .namespace
            .as_deref()
            .is_some_and(|ns| !r.status.node_id.ends_with(&format!(".{ns}")))
        {
            continue;
        }
        let status = match &r.sync {
            SyncState::Synced => "SYNCED".to_string(),
            SyncState::Stale { age_secs } => {
                format!("STALE ({})", crate::objects::age_secs(*age_secs))
            }
            SyncState::Nacked { reason } => format!("NACKED ({reason})"),
            SyncState::Waiting { reason } => format!("WAITING ({reason})"),
            SyncState::Disconnected { age_secs } => {
                format!("DISCONNECTED ({})", crate::objects::age_secs(*age_secs))
            }
        };
        t.row(vec![
            r.status.node_id.clone(),
            r.status.identity.clone().unwrap_or_else(|| "-".into()),
            status,
            r.status
                .pushed
                .as_ref()
                .map_or("-".into(), |p| p.version.clone()),
            r.status
                .acked
                .as_ref()
                .map_or("-".into(), |a| a.version.clone()),
            r.status.proxy_version.clone(),
        ]);
    }
    print!("{t}");
    ExitCode::SUCCESS
}
