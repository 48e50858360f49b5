//! `tessera ca init|root|issue`: the mesh CA in the state dir.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tessera_ca::authority::{write_atomic, ROOT_CERT};
use tessera_ca::token::{TokenKey, DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL};
use tessera_ca::{Authority, KeyAlgorithm, SpiffeId};

#[derive(Subcommand)]
pub enum CaCommand {
    /// Create the mesh root CA in the state dir (or load the existing one)
    Init {
        /// Plug in your own CA instead: a directory with ca-cert.pem, ca-key.pem,
        /// root-cert.pem and cert-chain.pem (Istio's cacerts layout)
        #[arg(long, value_name = "DIR")]
        plugin_certs: Option<PathBuf>,
    },
    /// Print the trust bundle (PEM)
    Root,
    /// Issue a key and workload certificate for an identity: writes cert-chain.pem,
    /// key.pem (mode 0600) and root-cert.pem into DIR
    Issue(IssueArgs),
    /// Mint a bootstrap token for one service account: its proxy presents it to the CA
    /// (`authorization: Bearer`) and gets that identity's certificate
    Token(TokenArgs),
}

#[derive(Args)]
pub struct TokenArgs {
    #[arg(long)]
    service_account: String,
    /// Lifetime, e.g. 10m, 1h (default 1h, at most 24h)
    #[arg(long)]
    ttl: Option<String>,
}

#[derive(Args)]
pub struct IssueArgs {
    /// The identity, e.g. spiffe://cluster.local/ns/full/sa/sleep
    #[arg(long)]
    identity: String,
    /// Where to write the files
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Lifetime, e.g. 24h, 90m, 30s (default 24h, at most 90 days)
    #[arg(long)]
    ttl: Option<String>,
    /// RSA 2048 instead of ECDSA P-256
    #[arg(long)]
    rsa: bool,
}

/// `namespace`: the global -n (`ca token` needs it).
pub fn run(state_dir: &Path, cmd: &CaCommand, namespace: Option<&str>) -> ExitCode {
    let dir = state_dir.join("ca");
    let result = match cmd {
        CaCommand::Init { plugin_certs } => {
            let result = match plugin_certs {
                Some(p) => Authority::init_plugin(&dir, p),
                None => Authority::init(&dir),
            };
            result.map(|(_, created)| {
                println!(
                    "{} the mesh CA in {}",
                    if created { "created" } else { "loaded" },
                    dir.display()
                );
            })
        }
        CaCommand::Root => Authority::load(&dir).map(|ca| print!("{}", ca.root_bundle())),
        CaCommand::Issue(args) => return issue(&dir, args),
        CaCommand::Token(args) => return token(&dir, args, namespace),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera ca: {e}");
            ExitCode::FAILURE
        }
    }
}

fn issue(dir: &Path, args: &IssueArgs) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("tessera ca issue: {msg}");
        ExitCode::FAILURE
    };
    let identity: SpiffeId = match args.identity.parse() {
        Ok(id) => id,
        Err(e) => return fail(e.to_string()),
    };
    let ttl = match &args.ttl {
        None => None,
        Some(t) => match tessera_model::duration::parse(t) {
            Some(d) => Some(d),
            None => {
                return fail(format!(
                    "--ttl \"{t}\" is not a duration; use e.g. 24h, 90m, 30s"
                ))
            }
        },
    };
    let ca = match Authority::load(dir) {
        Ok(ca) => ca,
        Err(e) => return fail(e.to_string()),
    };
    let algorithm = if args.rsa {
        KeyAlgorithm::Rsa2048
    } else {
        KeyAlgorithm::EcdsaP256
    };
    let (key, chain) = match ca.issue(&identity, ttl, algorithm) {
        Ok(v) => v,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        return fail(format!("{}: {e}", args.out.display()));
    }
    let chain_pem = chain.chain_pem();
    let files: [(&str, &[u8], u32); 3] = [
        ("cert-chain.pem", chain_pem.as_bytes(), 0o644),
        ("key.pem", key.as_bytes(), 0o600),
        (ROOT_CERT, ca.root_bundle().as_bytes(), 0o644),
    ];
    for (name, data, mode) in files {
        if let Err(e) = write_atomic(&args.out.join(name), data, mode) {
            return fail(e.to_string());
        }
    }
    println!(
        "issued {identity} (valid until {}) into {}",
        chain.not_after,
        args.out.display()
    );
    ExitCode::SUCCESS
}

fn token(dir: &Path, args: &TokenArgs, namespace: Option<&str>) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("tessera ca token: {msg}");
        ExitCode::FAILURE
    };
    let Some(namespace) = namespace else {
        return fail("the service account's namespace is required: -n NAMESPACE".into());
    };
    // The names must make a valid identity, or the CA would refuse the token later.
    if let Err(e) = SpiffeId::new("cluster.local", namespace, &args.service_account) {
        return fail(e.to_string());
    }
    let ttl = match &args.ttl {
        None => DEFAULT_TOKEN_TTL,
        Some(t) => match tessera_model::duration::parse(t) {
            Some(d) if !d.is_zero() && d <= MAX_TOKEN_TTL => d,
            _ => {
                return fail(format!(
                    "--ttl \"{t}\" must be a duration between 1s and 24h, e.g. 10m or 1h"
                ))
            }
        },
    };
    // Only the CA's own directory may mint: refuse rather than create a key elsewhere.
    if let Err(e) = Authority::load(dir) {
        return fail(e.to_string());
    }
    match TokenKey::load_or_create(dir) {
        Ok(key) => {
            println!(
                "{}",
                key.mint(
                    namespace,
                    &args.service_account,
                    ttl,
                    std::time::SystemTime::now()
                )
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}
