//! The `tessera` binary: parses the command line and formats output. Decisions live in the
//! library crates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod ca;
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
}

#[derive(Subcommand)]
enum Command {
    // Roles.
    /// Role: run a local mesh on this host (control plane and pods in network namespaces)
    Up,
    /// Role: run the control plane (config store, registry, CA, config push)
    Control,
    /// Role: run a sidecar proxy from a config file (static mode: VMs, tests, benchmarks);
    /// the file is re-read when it changes; SIGTERM drains
    Proxy(ProxyArgs),

    // Operator verbs.
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
        Command::Up | Command::Control => {
            let role = match cli.command {
                Command::Up => "up",
                _ => "control",
            };
            eprintln!(
                "tessera {role}: this role is not available in this version yet (state dir would be {}); see the feature status in the README",
                state_dir::resolve(cli.global.state_dir.as_deref()).display()
            );
            ExitCode::from(2)
        }
        Command::Ca(cmd) => ca::run(&state_dir::resolve(cli.global.state_dir.as_deref()), &cmd),
        Command::Validate(args) => validate::run(&args),
        Command::X509(cmd) => x509::run(&cmd),
        Command::Version => {
            println!("tessera {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

fn init_logs(level: tracing::Level) {
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
