//! The local runtime's verbs: `up`, `down`, `exec`, `logs`, `wait`, `kube-inject` and the
//! built-in `app` programs. Formatting and arguments only; the runtime crate decides.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use tessera_control::api::client::ApiClient;
use tessera_control::api::wait::{PodWait, WaitFor, Waited};
use tessera_control::api::GetRequest;
use tessera_model::{load_paths, LoadOptions};

use crate::kubectl::Ctx;

#[derive(Args)]
pub struct UpArgs {
    /// Install options in Istio's spelling, e.g. values.global.mtls.auto=false; repeatable
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The loopback address LoadBalancer services (the ingress gateway's 80 and 443) are
    /// published on; meshes side by side each need their own (any of 127.0.0.0/8)
    #[arg(long, value_name = "IP", default_value = "127.0.0.1", value_parser = loopback)]
    ingress_ip: std::net::Ipv4Addr,
    #[arg(long, env = "TESSERA_LOG", default_value = "info")]
    log_level: tracing::Level,
}

fn loopback(s: &str) -> Result<std::net::Ipv4Addr, String> {
    let ip: std::net::Ipv4Addr = s.parse().map_err(|e| format!("{e}"))?;
    if ip.is_loopback() {
        Ok(ip)
    } else {
        Err("must be a loopback address (127.0.0.0/8): traffic stays on this host".into())
    }
}

pub fn up(ctx: &Ctx, args: &UpArgs) -> ExitCode {
    let Some(mesh) = crate::mesh_options("up", &args.set) else {
        return ExitCode::from(2);
    };
    crate::init_logs(args.log_level);
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("tessera up: cannot find this binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = tessera_runtime::UpOptions {
        state_dir: ctx.state_dir.clone(),
        mesh,
        exe,
        ingress_ip: args.ingress_ip,
    };
    let result = tessera_runtime::up(opts, |dir| {
        println!("tessera up: mesh running; state dir {}", dir.display());
        println!(
            "  use it from another terminal: export TESSERA_STATE_DIR={}",
            dir.display()
        );
        println!(
            "  kubectl: export KUBECONFIG={}",
            dir.join(tessera_control::server::KUBECONFIG).display()
        );
        println!("  stop it with Ctrl-C (or `tessera down`)");
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera up: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Args)]
pub struct DownArgs {
    /// Keep the store and the CA (the next `up` starts with the same objects and roots)
    #[arg(long)]
    keep_state: bool,
}

pub fn down(ctx: &Ctx, args: &DownArgs) -> ExitCode {
    match tessera_runtime::down(&ctx.state_dir, args.keep_state) {
        Ok(r) => {
            if let Some(pid) = r.stopped_up {
                println!("stopped tessera up (pid {pid})");
            }
            if !r.namespaces.is_empty() {
                println!("removed network namespaces: {}", r.namespaces.join(" "));
            }
            if r.removed_state {
                println!("removed state dir {}", ctx.state_dir.display());
            } else if !args.keep_state && ctx.state_dir.exists() {
                println!(
                    "kept state dir {} (it holds files tessera did not create)",
                    ctx.state_dir.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tessera down: {e}");
            ExitCode::FAILURE
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The namespace's pods as `get pods -o json` lists them.
fn pods(ctx: &Ctx, namespace: &str) -> Result<Vec<serde_json::Value>, String> {
    let client = ApiClient::new(&ctx.state_dir);
    rt().block_on(client.get(&GetRequest {
        kind: "pods".into(),
        name: None,
        namespace: Some(namespace.to_string()),
        all_namespaces: false,
        selector: None,
    }))
    .map(|r| r.items)
    .map_err(|e| format!("error: {e}"))
}

fn target_pod(ctx: &Ctx, target: &str) -> Result<(String, String), String> {
    let ns = ctx.namespace.clone().unwrap_or_else(|| "default".into());
    let pods = pods(ctx, &ns)?;
    let pod = tessera_runtime::exec::resolve_target(&pods, target)?;
    Ok((ns, pod))
}

#[derive(Args)]
pub struct ExecArgs {
    /// POD, pod/NAME, deploy/NAME or rc/NAME
    target: String,
    /// The container (default: the pod's default container, as kubectl picks it)
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Pass stdin to the command (accepted for kubectl's -it; stdin is always passed)
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Accepted for kubectl's -it: the command gets this terminal as it is
    #[arg(short = 't', long)]
    tty: bool,
    /// The command and its arguments (after --). Options before the command, such as
    /// `-nfull`, stay tessera's; everything from the command on is the command's.
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<String>,
}

pub fn exec(ctx: &Ctx, args: &ExecArgs) -> ExitCode {
    let (ns, pod) = match target_pod(ctx, &args.target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let argv: Vec<String> = args
        .command
        .iter()
        .skip_while(|a| a.as_str() == "--")
        .cloned()
        .collect();
    if argv.is_empty() {
        eprintln!("error: you must specify at least one command for the container");
        return ExitCode::FAILURE;
    }
    match tessera_runtime::exec::exec(&ctx.state_dir, &ns, &pod, args.container.as_deref(), &argv) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => {
            // kubectl's line, which scripts and the seeds' transcripts show.
            eprintln!("command terminated with exit code {code}");
            ExitCode::from(u8::try_from(code).unwrap_or(255))
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Args)]
pub struct LogsArgs {
    /// POD, pod/NAME, deploy/NAME or rc/NAME
    target: String,
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Keep printing what the container writes
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines
    #[arg(long)]
    tail: Option<usize>,
}

pub fn logs(ctx: &Ctx, args: &LogsArgs) -> ExitCode {
    use std::io::{Read, Seek, Write};
    let (ns, pod) = match target_pod(ctx, &args.target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let path =
        match tessera_runtime::exec::log_path(&ctx.state_dir, &ns, &pod, args.container.as_deref())
        {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let shown: String = match args.tail {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].iter().map(|l| format!("{l}\n")).collect()
        }
        None => text.clone(),
    };
    let mut out = std::io::stdout();
    let _ = out.write_all(shown.as_bytes());
    if !args.follow {
        return ExitCode::SUCCESS;
    }
    let Ok(mut f) = std::fs::File::open(&path) else {
        return ExitCode::SUCCESS;
    };
    let mut pos = text.len() as u64;
    loop {
        let _ = out.flush();
        std::thread::sleep(Duration::from_millis(250));
        let mut buf = Vec::new();
        if f.seek(std::io::SeekFrom::Start(pos)).is_err() || f.read_to_end(&mut buf).is_err() {
            return ExitCode::SUCCESS;
        }
        pos += buf.len() as u64;
        let _ = out.write_all(&buf);
    }
}

#[derive(Args)]
pub struct WaitArgs {
    /// condition=Ready (or condition=Initialized, ContainersReady, PodScheduled), or delete
    #[arg(long = "for", value_name = "condition=NAME|delete")]
    condition: String,
    /// pod, pods, pod/NAME or NAME...
    targets: Vec<String>,
    /// Every pod of the namespace
    #[arg(long)]
    all: bool,
    /// A label query
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// e.g. 30s, 2m (default 30s)
    #[arg(long, default_value = "30s")]
    timeout: String,
}

pub fn wait(ctx: &Ctx, args: &WaitArgs) -> ExitCode {
    let condition = match args.condition.as_str() {
        "delete" => None,
        c => match c.strip_prefix("condition=") {
            Some(name) => Some(name.split('=').next().unwrap_or(name).to_string()),
            None => {
                eprintln!("error: unrecognized condition: {c:?} (use condition=Ready or delete)");
                return ExitCode::FAILURE;
            }
        },
    };
    let Some(timeout) = tessera_model::duration::parse(&args.timeout) else {
        eprintln!(
            "error: --timeout {:?}: not a duration (e.g. 30s, 2m, 1h)",
            args.timeout
        );
        return ExitCode::FAILURE;
    };
    let mut names: Vec<String> = Vec::new();
    for t in &args.targets {
        match t.split_once('/') {
            Some(("pod" | "pods" | "po", n)) => names.push(n.to_string()),
            Some((k, _)) => {
                eprintln!("error: wait supports pods only, not {k:?}");
                return ExitCode::FAILURE;
            }
            None if matches!(t.as_str(), "pod" | "pods" | "po") => {}
            None => names.push(t.clone()),
        }
    }
    if names.is_empty() && !args.all && args.selector.is_none() {
        eprintln!("error: resource(s) were provided, but no name was specified");
        return ExitCode::FAILURE;
    }
    let request = PodWait {
        namespace: ctx.namespace.clone().unwrap_or_else(|| "default".into()),
        names,
        selector: args.selector.clone(),
        until: match condition {
            Some(c) => WaitFor::Condition(c),
            None => WaitFor::Delete,
        },
        timeout,
    };
    let client = ApiClient::new(&ctx.state_dir);
    match rt().block_on(client.wait_for_pods(&request)) {
        Ok(Waited::Met(pods)) => {
            for p in pods {
                println!("pod/{p} condition met");
            }
            ExitCode::SUCCESS
        }
        Ok(Waited::Deleted(pods)) => {
            for p in pods {
                println!("pod/{p} deleted");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Args)]
pub struct KubeInjectArgs {
    /// The manifest (a file, a directory or - for standard input)
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    files: Vec<PathBuf>,
}

/// Prints the manifests with the sidecar added to every Pod, Deployment and
/// ReplicationController (the others unchanged), for `apply -f -`.
pub fn kube_inject(args: &KubeInjectArgs) -> ExitCode {
    let report = load_paths(&args.files, &LoadOptions::default());
    if report.has_errors() {
        for p in report.errors() {
            eprintln!("{p}");
        }
        return ExitCode::FAILURE;
    }
    match tessera_control::inject::kube_inject_yaml(report.documents) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Subcommand)]
pub enum DemoCommand {
    /// Seed 002, automatic mutual TLS: namespaces full/partial/legacy with httpbin and
    /// sleep, and the seed's reachability matrix after each policy step
    AutoMtls {
        /// The API of the policy steps: v1beta1 (PeerAuthentication) or v1alpha1 (the
        /// seed's Policy)
        #[arg(long, default_value = "v1beta1", value_parser = ["v1beta1", "v1alpha1"])]
        api: String,
    },
    /// Seeds 000/001, mutual TLS over HTTPS: nginx serving HTTPS with its own
    /// certificate, without and with a sidecar, then under mesh-wide STRICT
    Https,
}

/// `tessera demo ...` on the running mesh of the state dir (as root: it runs curl in pods).
pub fn demo(ctx: &Ctx, cmd: &DemoCommand) -> ExitCode {
    let mut say = |line: &str| println!("{line}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        match cmd {
            DemoCommand::AutoMtls { api } => {
                let api = if api == "v1alpha1" {
                    tessera_demo::PolicyApi::V1alpha1
                } else {
                    tessera_demo::PolicyApi::V1beta1
                };
                tessera_demo::auto_mtls(&ctx.state_dir, api, &mut say).await
            }
            DemoCommand::Https => {
                let ns = ctx.namespace.clone().unwrap_or_else(|| "default".into());
                tessera_demo::https(&ctx.state_dir, &ns, &mut say).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera demo: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Subcommand)]
pub enum AppCommand {
    /// httpbin (kennethreitz/httpbin): /headers, /get, /ip, /status/CODE, /delay/N, ...
    Httpbin {
        #[arg(long, default_value_t = 80)]
        port: u16,
    },
    /// Sleeps until SIGTERM (the sample `sleep` pod, for `exec ... curl`)
    Sleep,
    /// The nginx welcome page over HTTP and HTTPS with the mounted certificate
    /// (bprashanth/nginxhttps)
    NginxHttps {
        #[arg(long, default_value_t = 80)]
        http_port: u16,
        #[arg(long, default_value_t = 443)]
        https_port: u16,
        #[arg(long, default_value = "/etc/nginx/conf.d")]
        conf_dir: PathBuf,
        #[arg(long, default_value = "/etc/nginx/ssl/tls.crt")]
        cert: PathBuf,
        #[arg(long, default_value = "/etc/nginx/ssl/tls.key")]
        key: PathBuf,
    },
}

pub fn app(cmd: &AppCommand) -> ExitCode {
    use tessera_apps::{App, HttpbinOptions, NginxOptions};
    let app = match cmd {
        AppCommand::Httpbin { port } => App::Httpbin(HttpbinOptions { port: *port }),
        AppCommand::Sleep => App::Sleep,
        AppCommand::NginxHttps {
            http_port,
            https_port,
            conf_dir,
            cert,
            key,
        } => App::NginxHttps(NginxOptions {
            http_port: *http_port,
            https_port: *https_port,
            conf_dir: conf_dir.clone(),
            cert: cert.clone(),
            key: key.clone(),
        }),
    };
    match tessera_apps::run(app) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera app: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Subcommand)]
pub enum ProxyConfigCommand {
    /// The certificates a pod's proxy serves or waits for (istioctl's columns): its
    /// workload certificate (default), the mesh roots (ROOTCA), and user certificates
    /// from files (file-cert:, file-root:) or Secrets (kubernetes://)
    Secret(ProxyConfigSecretArgs),
}

#[derive(Args)]
pub struct ProxyConfigSecretArgs {
    /// POD[.NAMESPACE] (or -n NAMESPACE POD)
    target: String,
    /// json: the rows as the proxy's admin endpoint gives them
    #[arg(short = 'o', long, default_value = "short")]
    output: String,
}

/// `POD.NS` as istioctl writes it, else the pod in -n's namespace.
fn pod_dot_namespace(ctx: &Ctx, target: &str) -> Result<(String, String), String> {
    if let Some((pod, ns)) = target.rsplit_once('.') {
        let pods = pods(ctx, ns)?;
        if let Ok(pod) = tessera_runtime::exec::resolve_target(&pods, pod) {
            return Ok((ns.to_string(), pod));
        }
    }
    target_pod(ctx, target)
}

pub fn proxy_config(ctx: &Ctx, cmd: &ProxyConfigCommand) -> ExitCode {
    let ProxyConfigCommand::Secret(args) = cmd;
    let (ns, pod) = match pod_dot_namespace(ctx, &args.target) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let body = match tessera_runtime::exec::admin_get(&ctx.state_dir, &ns, &pod, "/secrets") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.output == "json" {
        print!("{body}");
        return ExitCode::SUCCESS;
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    if rows.is_empty() {
        println!("No secret items to show.");
        return ExitCode::SUCCESS;
    }
    let mut t = crate::table::Table::new(&[
        "RESOURCE NAME",
        "TYPE",
        "STATUS",
        "VALID CERT",
        "SERIAL NUMBER",
        "NOT AFTER",
        "NOT BEFORE",
    ]);
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    for r in &rows {
        t.row(vec![
            s(&r["name"]),
            s(&r["type"]),
            s(&r["status"]),
            r["valid"].as_bool().unwrap_or(false).to_string(),
            s(&r["serial"]),
            s(&r["notAfter"]),
            s(&r["notBefore"]),
        ]);
    }
    print!("{t}");
    for r in rows.iter().filter(|r| r["status"] == "WARMING") {
        eprintln!("{}: {}", s(&r["name"]), s(&r["reason"]));
    }
    ExitCode::SUCCESS
}

#[derive(Args)]
pub struct CpArgs {
    /// LOCAL_FILE or [NAMESPACE/]POD:PATH
    source: String,
    /// LOCAL_PATH or [NAMESPACE/]POD:PATH (a directory keeps the file's name)
    destination: String,
    #[arg(short = 'c', long)]
    container: Option<String>,
}

/// `[ns/]pod:path` → (namespace, pod, path).
fn pod_path(ctx: &Ctx, s: &str) -> Option<(String, String, String)> {
    let (pod, path) = s.split_once(':')?;
    if pod.is_empty() || !path.starts_with('/') {
        return None;
    }
    let (ns, pod) = match pod.split_once('/') {
        Some((ns, pod)) => (ns.to_string(), pod.to_string()),
        None => (
            ctx.namespace.clone().unwrap_or_else(|| "default".into()),
            pod.to_string(),
        ),
    };
    Some((ns, pod, path.to_string()))
}

/// kubectl cp: a file into or out of a pod's container.
pub fn cp(ctx: &Ctx, args: &CpArgs) -> ExitCode {
    let container = args.container.as_deref();
    let result: Result<(), String> = match (
        pod_path(ctx, &args.source),
        pod_path(ctx, &args.destination),
    ) {
        (None, Some((ns, pod, path))) => std::fs::read(&args.source)
            .map_err(|e| format!("{}: {e}", args.source))
            .and_then(|data| {
                let name = std::path::Path::new(&args.source)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                tessera_runtime::exec::copy_into(
                    &ctx.state_dir,
                    (&ns, &pod, container),
                    &data,
                    &path,
                    &name,
                )
            }),
        (Some((ns, pod, path)), None) => {
            tessera_runtime::exec::copy_out(&ctx.state_dir, (&ns, &pod, container), &path).and_then(
                |data| {
                    let mut dest = std::path::PathBuf::from(&args.destination);
                    if dest.is_dir() {
                        if let Some(n) = std::path::Path::new(&path).file_name() {
                            dest = dest.join(n);
                        }
                    }
                    std::fs::write(&dest, data).map_err(|e| format!("{}: {e}", dest.display()))
                },
            )
        }
        _ => Err(
            "one of source and destination must be [NAMESPACE/]POD:/PATH, the other a local path"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
