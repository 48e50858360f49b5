//! A proxy's memory per endpoint: the bytes a snapshot holds (the configuration as pushed
//! and the routes made from it), measured with a counting allocator around
//! `Snapshot::build`, for services with two endpoints each. `--same-identity` gives every
//! service one service account; by default each has its own (as in a cluster).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};

use clap::Parser;
use tessera_ca::verify::TrustBundle;
use tessera_ca::{Authority, CredentialStore, Credentials, KeyAlgorithm, SpiffeId};
use tessera_contract::config::*;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

#[derive(Parser)]
#[command(about = "A proxy snapshot's bytes per endpoint")]
struct Args {
    /// Services (two endpoints each)
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Every service runs as one service account
    #[arg(long)]
    same_identity: bool,
}

fn endpoint(i: usize, identity: &str) -> Endpoint {
    Endpoint {
        address: SocketAddr::new(IpAddr::from([10, 100 + (i / 65536) as u8, (i / 256 % 256) as u8, (i % 256) as u8]), 80),
        workload: Some(format!("svc-{}-{}.ns-{:02}", i / 2, i % 2, i / 40)),
        tls: EndpointTls {
            mode: TlsMode::IstioMutual,
            subject_alt_names: vec![identity.to_string()],
            reason: "auto mTLS: the endpoint has a sidecar and its port 80 is PERMISSIVE [default PERMISSIVE]".into(),
            ..Default::default()
        },
    }
}

fn config(a: &Args) -> ProxyConfig {
    let services = (0..a.services)
        .map(|s| {
            let sa = if a.same_identity { 0 } else { s };
            let identity = format!("spiffe://cluster.local/ns/ns-{:02}/sa/svc-{sa}", s / 20);
            Service {
                host: format!("svc-{s}.ns-{:02}.svc.cluster.local", s / 20),
                vips: vec![IpAddr::from([10, 96, (s / 250) as u8, (s % 250 + 1) as u8])],
                ports: vec![ServicePort {
                    port: 8000,
                    name: Some("http".into()),
                    protocol: PortProtocol::Http,
                    endpoints: vec![endpoint(2 * s, &identity), endpoint(2 * s + 1, &identity)],
                }],
            }
        })
        .collect();
    let json = serde_json::json!({
        "version": "1",
        "node": {"id": "client.ns-00", "identity": "spiffe://cluster.local/ns/ns-00/sa/client", "trustDomain": "cluster.local"},
        "certificates": {},
        "listeners": {},
        "inbound": {"appHost": "127.0.0.1", "defaultMode": "PERMISSIVE", "ports": []},
    });
    let mut c: ProxyConfig = serde_json::from_value(json).expect("a minimal config");
    c.services = services;
    c
}

fn main() {
    let a = Args::parse();
    let dir = tempfile::tempdir().unwrap();
    let (authority, _) = Authority::init(&dir.path().join("ca")).unwrap();
    let me = SpiffeId::new("cluster.local", "ns-00", "client").unwrap();
    let (key, chain) = authority.issue(&me, None, KeyAlgorithm::EcdsaP256).unwrap();
    let store = CredentialStore::new(
        Credentials::from_pem(&chain.chain_pem(), &key).unwrap(),
        TrustBundle::from_pem(authority.root_bundle(), "cluster.local").unwrap(),
    );
    let before = LIVE.load(Ordering::Relaxed);
    let config = config(&a);
    let pushed = LIVE.load(Ordering::Relaxed) - before;
    let snapshot = tessera_proxy::Snapshot::build(config, &store).expect("a valid snapshot");
    let total = LIVE.load(Ordering::Relaxed) - before;
    let endpoints = 2 * a.services;
    println!(
        "{} services, {endpoints} endpoints, {}: the configuration {:.0} B per endpoint, the snapshot in all {:.0} B per endpoint ({:.1} MB)",
        a.services,
        if a.same_identity { "one identity" } else { "an identity per service" },
        pushed as f64 / endpoints as f64,
        total as f64 / endpoints as f64,
        total as f64 / 1e6
    );
    drop(snapshot);
}
