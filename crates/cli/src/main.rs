//! The `tessera` binary: parses the command line and formats output. Decisions live in the
//! library crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod ca;
mod cluster;
mod insight;
mod jsonpath;
mod kubectl;
mod objects;
mod pods;
mod state_dir;
mod table;
mod validate;
mod x509;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "A service mesh for transport security that speaks Istio's YAML APIs",
    long_about = "Tessera gives every workload a SPIFFE identity, encrypts and authenticates \
                  traffic between workloads with mutual TLS, and terminates TLS for clients \
                  outside the mesh. It accepts Istio's and Kubernetes' YAML."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct GlobalArgs {
    /// Where a mesh keeps its state (store, CA, sockets). Several meshes run side by side
    /// with different state dirs. Default: /var/lib/tessera as root, else
    /// $XDG_STATE_HOME/tessera.
    #[arg(long, global = true, env = "TESSERA_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The namespace to work in (default: default), as kubectl's -n; may come before the
    /// verb. `check reachability` and `edges` take several (-n a -n b, or -n a,b)
    #[arg(short = 'n', long, global = true, value_name = "NS", value_delimiter = ',', action = clap::ArgAction::Append)]
    namespace: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    // Roles.
    /// Role: run a local mesh on this host in the foreground: the control plane and pods
    /// in network namespaces on a sealed cluster network (needs root); Ctrl-C stops it
    Up(pods::UpArgs),
    /// Stop a running `tessera up` on the state dir and remove everything it created
    /// (namespaces, processes, rules; the store and CA unless --keep-state)
    Down(pods::DownArgs),
    /// Role: run the control plane (config store, registry, CA, config push) on the
    /// state dir's sockets until SIGTERM
    Control(ControlArgs),
    /// Role: run a sidecar proxy from a config file (static mode: VMs, tests, benchmarks);
    /// the file is re-read when it changes; SIGTERM drains
    Proxy(ProxyArgs),

    // Operator verbs (kubectl's shapes).
    /// Create or update objects from manifests; a batch lands whole or not at all
    Apply(kubectl::ApplyArgs),
    /// Create objects: from manifests, or a namespace, secret or config map
    Create(kubectl::CreateArgs),
    /// List objects of a kind (kubectl's columns, -o yaml|json|wide|name|jsonpath=...)
    Get(kubectl::GetArgs),
    /// Delete objects named in manifests or on the command line
    Delete(kubectl::DeleteArgs),
    /// Show one object; for a pod, what its proxy was told and why
    Describe(kubectl::DescribeArgs),
    /// Add (key=value) or remove (key-) labels
    Label(kubectl::LabelArgs),
    /// Run a command in a pod's container; exits with the command's exit code
    Exec(pods::ExecArgs),
    /// Print a container's output
    Logs(pods::LogsArgs),
    /// Copy a file into or out of a pod's container (kubectl cp)
    Cp(pods::CpArgs),
    /// What a pod's proxy was given (istioctl proxy-config): `secret POD[.NS]`
    #[command(subcommand)]
    ProxyConfig(pods::ProxyConfigCommand),
    /// Wait until pods meet a condition: wait --for=condition=Ready pod --all -n NS
    Wait(pods::WaitArgs),
    /// Print manifests with the sidecar added (istioctl kube-inject), for apply -f -
    KubeInject(pods::KubeInjectArgs),
    /// A seed task on the running mesh, in one command: sets up its topology and prints
    /// its verification output from real requests (needs root, as `exec`)
    #[command(subcommand)]
    Demo(pods::DemoCommand),
    /// Role: a built-in program standing in for an Istio sample image
    #[command(subcommand)]
    App(pods::AppCommand),
    /// Every proxy: identity, last pushed and acknowledged version, SYNCED / STALE /
    /// NACKED / DISCONNECTED
    ProxyStatus,

    // Operator insight (answered by the compiler that configures the proxies).
    /// Why FROM's requests to TO are mTLS, plaintext, refused or 503, per endpoint, and
    /// which resources decided: explain deploy/sleep.legacy httpbin.full:8000
    Explain(insight::ExplainArgs),
    /// Checks: `check reachability [-n NS...] [--probe]`, every client workload × service
    /// port predicted (and measured with --probe; exit 1 when they disagree)
    #[command(subcommand)]
    Check(insight::CheckCommand),
    /// Ignored or conflicting configuration, each with the resource and a fix (exit 79 on
    /// errors); --what-if FILE: the working connections a change would break, before it is
    /// applied (exit 79 when it breaks any)
    Analyze(insight::AnalyzeArgs),
    /// Connections the proxies have seen: source, destination, identities, SECURED
    Edges(insight::EdgesArgs),
    /// The mesh certificate authority: create it, print its roots, issue certificates
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Check manifests without applying them: every problem with file:line:column, the
    /// field path and what is allowed. Exits 1 when there are errors (warnings alone: 0).
    Validate(validate::ValidateArgs),
    /// Print the version
    Version,
    /// Inspect X.509 certificates
    #[command(subcommand)]
    X509(x509::X509Command),
}

#[derive(Args)]
pub struct ControlArgs {
    /// Install options in Istio's spelling, e.g. values.global.mtls.auto=true; repeatable
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Kubernetes mode: mirror the API server this kubeconfig names (its current context)
    /// into the store, instead of taking objects from `tessera apply`
    #[arg(long, value_name = "FILE", conflicts_with = "in_cluster")]
    kubeconfig: Option<PathBuf>,
    /// Kubernetes mode with the pod's own service account (in a cluster)
    #[arg(long)]
    in_cluster: bool,
    /// Serve the admission webhooks (/inject, /validate) over HTTPS here, e.g. 0.0.0.0:15017;
    /// their caBundle is written to <state-dir>/webhook/ca-bundle.pem
    #[arg(long, value_name = "ADDR")]
    webhook_address: Option<std::net::SocketAddr>,
    #[arg(long, env = "TESSERA_LOG", default_value = "info")]
    log_level: tracing::Level,
}

#[derive(Args)]
pub struct ProxyArgs {
    /// The proxy configuration (YAML, or JSON when it ends in .json)
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// error, warn, info (one line per connection and request) or debug
    #[arg(long, env = "TESSERA_LOG", default_value = "info")]
    log_level: tracing::Level,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Proxy(args) => {
            init_logs(args.log_level);
            match tessera_proxy::run_from_file(&args.config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tessera proxy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Up(args) => pods::up(&ctx(&cli.global), &args),
        Command::Down(args) => pods::down(&ctx(&cli.global), &args),
        Command::Exec(args) => pods::exec(&ctx(&cli.global), &args),
        Command::Logs(args) => pods::logs(&ctx(&cli.global), &args),
        Command::Cp(args) => pods::cp(&ctx(&cli.global), &args),
        Command::ProxyConfig(cmd) => pods::proxy_config(&ctx(&cli.global), &cmd),
        Command::Wait(args) => pods::wait(&ctx(&cli.global), &args),
        Command::KubeInject(args) => pods::kube_inject(&args),
        Command::App(cmd) => pods::app(&cmd),
        Command::Demo(cmd) => pods::demo(&ctx(&cli.global), &cmd),
        Command::Control(args) => control(&cli.global, &args),
        Command::Ca(cmd) => ca::run(
            &state_dir::resolve(cli.global.state_dir.as_deref()),
            &cmd,
            cli.global.namespace.last().map(String::as_str),
        ),
        Command::Validate(args) => validate::run(&args, cli.global.namespace.last().cloned()),
        Command::Apply(args) => kubectl::apply(&ctx(&cli.global), &args),
        Command::Create(args) => kubectl::create(&ctx(&cli.global), &args),
        Command::Get(args) => kubectl::get(&ctx(&cli.global), &args),
        Command::Delete(args) => kubectl::delete(&ctx(&cli.global), &args),
        Command::Describe(args) => kubectl::describe(&ctx(&cli.global), &args),
        Command::Label(args) => kubectl::label(&ctx(&cli.global), &args),
        Command::ProxyStatus => kubectl::proxy_status(&ctx(&cli.global)),
        Command::Explain(args) => insight::explain(&ctx(&cli.global), &args),
        Command::Check(cmd) => insight::check(&ctx(&cli.global), &cmd),
        Command::Analyze(args) => insight::analyze(&ctx(&cli.global), &args),
        Command::Edges(args) => insight::edges(&ctx(&cli.global), &args),
        Command::X509(cmd) => x509::run(&cmd),
        Command::Version => {
            println!("tessera {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

fn ctx(global: &GlobalArgs) -> kubectl::Ctx {
    kubectl::Ctx {
        state_dir: state_dir::resolve(global.state_dir.as_deref()),
        namespace: global.namespace.last().cloned(),
        namespaces: global.namespace.clone(),
    }
}

fn control(global: &GlobalArgs, args: &ControlArgs) -> ExitCode {
    let Some(mesh) = mesh_options("control", &args.set) else {
        return ExitCode::from(2);
    };
    init_logs(args.log_level);
    let state_dir = state_dir::resolve(global.state_dir.as_deref());
    println!("tessera control: state dir {}", state_dir.display());
    let mut opts = tessera_control::ControlOptions::new(state_dir, mesh);
    opts.webhooks = args.webhook_address;
    let source = match (&args.kubeconfig, args.in_cluster) {
        (Some(file), _) => Some(cluster::Source::Kubeconfig(file.clone())),
        (None, true) => Some(cluster::Source::InCluster),
        (None, false) => None,
    };
    let ran = match source {
        None => tessera_control::run(opts),
        Some(source) => {
            println!("tessera control: Kubernetes mode, mirroring {source}");
            tessera_control::run_with(opts, move |control| cluster::mirror_from(source, control))
        }
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera control: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Install options (`--set K=V`) for a role; `None` after printing why they are refused.
pub(crate) fn mesh_options(
    role: &str,
    sets: &[String],
) -> Option<tessera_control::policy::MeshOptions> {
    tessera_control::policy::MeshOptions::from_sets(sets.iter().map(String::as_str))
        .map_err(|e| eprintln!("tessera {role}: --set: {e}"))
        .ok()
}

pub(crate) fn init_logs(level: tracing::Level) {
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
