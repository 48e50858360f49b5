//! Golden output of every insight verb on seed 002's topology, at each policy step and
//! with both policy APIs (rewrite with TESSERA_UPDATE_GOLDEN=1 and review the diff).
//! `edges` renders what the proxies record for the seed's requests, as the e2e test
//! observes on a real mesh.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use tessera_contract::edges::{EdgeDirection, EdgeRecord, EdgeReport};
use tessera_control::api::{AnalyzeResponse, ReachabilityResponse};
use tessera_control::insight::{self, ClientSends, ServerTakes, Verdict};
use tessera_control::objects::Op;
use tessera_control::testing::{at, load, seed_002_options, seed_002_worlds, PolicyApi};
use tessera_control::World;

use super::*;

fn golden_dir(api: PolicyApi, step: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/insight")
        .join(api.dir())
        .join(step)
}

fn check(dir: &Path, name: &str, fresh: &str, stale: &mut Vec<String>) {
    let path = dir.join(name);
    if std::env::var_os("TESSERA_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&path, fresh).unwrap();
    } else if std::fs::read_to_string(&path).ok().as_deref() != Some(fresh) {
        stale.push(path.display().to_string());
    }
}

fn explain_text(world: &World, from: &str, to: &str, port: Option<u16>) -> String {
    let client = insight::find_client(world, from).unwrap();
    let svc = insight::find_service(world, to).unwrap();
    render_explain(&insight::explain(world, client, svc, port).unwrap())
}

/// What each sidecar records when the seed's two sleep pods request each httpbin
/// (each connection's result records one edge: the inbound side in the proxy's
/// `telemetry/result.rs`, the outbound side in `connect.rs`).
fn seed_edges(world: &World) -> (Vec<EdgeReport>, BTreeMap<IpAddr, String>) {
    let mut reports: BTreeMap<String, EdgeReport> = BTreeMap::new();
    let ip_of = |id: &str| world.registry.workload(id).and_then(|w| w.ip).unwrap();
    let mut record = |node: &str, r: EdgeRecord| {
        let w = world.registry.workload(node).unwrap();
        reports
            .entry(node.to_string())
            .or_insert_with(|| EdgeReport {
                node: node.to_string(),
                identity: world.identity_of(w),
                edges: vec![],
                dropped: 0,
            })
            .edges
            .push(r);
    };
    for reach in insight::matrix(world, &[]) {
        if !reach.client.starts_with("sleep-0.") || !reach.service.starts_with("httpbin.") {
            continue;
        }
        for e in &reach.endpoints {
            let mesh = e.client_sends == ClientSends::MeshMtls;
            let tls = if mesh { "mtls" } else { "plaintext" };
            if reach.client_sidecar {
                let handshake_fails = mesh && e.verdict != Verdict::Mtls;
                record(
                    &reach.client,
                    EdgeRecord {
                        direction: EdgeDirection::Outbound,
                        peer: ip_of(&e.workload),
                        port: e.target_port,
                        tls: tls.into(),
                        // The client's sidecar leaves the server's identity to the server.
                        peer_identity: None,
                        failure: handshake_fails.then(|| "tls_handshake_failed".to_string()),
                        reason: e.client_reason.clone(),
                        connections: 1,
                        last_seen: 1_000,
                    },
                );
            }
            if e.server_takes != ServerTakes::NoSidecar {
                let failure = match (e.client_sends, e.server_takes) {
                    (ClientSends::AppPlaintext | ClientSends::Plaintext, ServerTakes::Strict) => {
                        Some("strict_plaintext")
                    }
                    (ClientSends::MeshMtls, ServerTakes::Disable) => Some("not_http_on_http_port"),
                    _ => None,
                };
                record(
                    &e.workload,
                    EdgeRecord {
                        direction: EdgeDirection::Inbound,
                        peer: ip_of(&reach.client),
                        port: e.target_port,
                        tls: if mesh && failure.is_none() {
                            "mtls"
                        } else {
                            "plaintext"
                        }
                        .into(),
                        peer_identity: (mesh && failure.is_none())
                            .then(|| reach.client_identity.clone()),
                        failure: failure.map(str::to_string),
                        reason: if failure.is_some() {
                            "refused".into()
                        } else {
                            format!("accepted by port {}", e.target_port)
                        },
                        connections: 1,
                        last_seen: 1_000,
                    },
                );
            }
        }
    }
    let pods = world
        .registry
        .workloads
        .iter()
        .filter_map(|w| Some((w.ip?, w.id())))
        .collect();
    (reports.into_values().collect(), pods)
}

fn run(api: PolicyApi) {
    let worlds = seed_002_worlds(api);
    let mut stale = Vec::new();
    for (i, (step, objects, world)) in worlds.iter().enumerate() {
        let dir = golden_dir(api, step.name);
        let explain = [
            explain_text(world, "deploy/sleep.full", "httpbin.full", Some(8000)),
            explain_text(world, "deploy/sleep.legacy", "httpbin.full", Some(8000)),
            explain_text(world, "deploy/sleep.full", "httpbin.partial", None),
        ]
        .join("\n");
        check(&dir, "explain.txt", &explain, &mut stale);

        let namespaces = insight::reach::default_namespaces(world);
        let reach = ReachabilityResponse {
            revision: world.revision,
            reach: insight::matrix(world, &namespaces),
            namespaces,
        };
        check(
            &dir,
            "reachability.txt",
            &render_reachability(&reach, None),
            &mut stale,
        );

        let findings = insight::analyze(world);
        let analyzed = AnalyzeResponse {
            revision: world.revision,
            findings: findings.clone(),
            what_if: None,
            planned: vec![],
            new_findings: vec![],
        };
        check(&dir, "analyze.txt", &render_analyze(&analyzed), &mut stale);

        // What the next step would do, asked before it is applied.
        if let Some((next, _, _)) = worlds.get(i + 1) {
            let ops = load("what-if.yaml", next.apply.unwrap(), "full")
                .into_iter()
                .map(|resource| Op::Apply {
                    origin: "what-if.yaml".into(),
                    resource,
                })
                .collect();
            let plan = objects.plan(ops, at(100)).unwrap();
            let after = World::build(&plan.next, &seed_002_options());
            let after_findings = insight::analyze(&after);
            let resp = AnalyzeResponse {
                revision: objects.revision(),
                what_if: Some(insight::what_if(world, &after, &[])),
                new_findings: after_findings
                    .iter()
                    .filter(|f| !findings.contains(f))
                    .cloned()
                    .collect(),
                findings: after_findings,
                planned: plan.outcomes,
            };
            check(&dir, "what-if-next.txt", &render_analyze(&resp), &mut stale);
        }

        let (reports, pods) = seed_edges(world);
        let edges = insight::join(&reports, &pods);
        check(&dir, "edges.txt", &render_edges(&edges, 1_003), &mut stale);
    }
    assert!(
        stale.is_empty(),
        "golden files differ: {stale:?}; rerun with TESSERA_UPDATE_GOLDEN=1 and review the diff"
    );
}

#[test]
fn seed_002_insight_output_with_peer_authentication() {
    run(PolicyApi::V1beta1);
}

#[test]
fn seed_002_insight_output_with_the_legacy_policy_api() {
    run(PolicyApi::V1alpha1);
}

#[test]
fn spiffe_ids_are_shortened_to_their_path() {
    assert_eq!(
        short_id(&Some("spiffe://cluster.local/ns/full/sa/sleep".into())),
        "ns/full/sa/sleep"
    );
    assert_eq!(short_id(&None), "-");
}
