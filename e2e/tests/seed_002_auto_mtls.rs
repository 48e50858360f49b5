//! Seed 002, "Automatic mutual TLS", replayed on a real local mesh: every command of the
//! seed (`kubectl` lines with the machine's kubectl, `tessera` for `istioctl`), and every output it prints compared
//! with ours. Namespaces `full` (sidecars), `partial` (one httpbin with, one without a
//! sidecar) and `legacy` (no sidecars); the for-loop matrix after each step:
//! PERMISSIVE, STRICT, DISABLE (plaintext), and a DestinationRule ISTIO_MUTUAL override
//! (503). Once with the seed's `authentication.istio.io/v1alpha1` Policy, once with
//! `security.istio.io/v1beta1` PeerAuthentication.

use std::time::Duration;
use tessera_e2e::seed002;
use tessera_e2e::transcript::{matches_seed, tally};
use tessera_e2e::Mesh;

/// Runs the matrix until it prints what the seed prints (a policy reaches the proxies a
/// moment after `apply` returns), and fails with both transcripts if it never does.
fn matrix_as_seed(mesh: &Mesh, step: &str, seed: &str) {
    mesh.wait_synced();
    let script = format!("{{ {}; }} 2>&1", seed002::MATRIX);
    let either = seed002::LOAD_BALANCED;
    let run = mesh.until(&script, Duration::from_secs(15), |r| {
        matches_seed(&r.stdout, seed, either).is_ok()
    });
    if let Err(e) = matches_seed(&run.stdout, seed, either) {
        panic!("{step}: the matrix differs from the seed's: {e}");
    }
}

fn replay(name: &str, policy: &seed002::PolicySteps) {
    let mesh = Mesh::up(name, seed002::INSTALL);

    // Setup: the three namespaces.
    for script in seed002::SETUP {
        mesh.ok(script);
    }
    for ns in seed002::NAMESPACES {
        mesh.wait_ready(ns);
    }
    // The seed's listing: READY 2/2 for injected pods, 1/1 for the others.
    let pods = mesh.ok(seed002::GET_PODS);
    let mut got: Vec<(String, String)> = pods
        .lines()
        .filter(|l| !l.starts_with("NAME"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // deployment-<template hash>-<suffix>
            let deployment = f[0].rsplitn(3, '-').last().unwrap_or_default();
            (deployment.to_string(), format!("{} {}", f[1], f[2]))
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = [
        ("httpbin", "2/2 Running"),
        ("sleep", "2/2 Running"),
        ("httpbin", "2/2 Running"),
        ("httpbin-nosidecar", "1/1 Running"),
        ("httpbin", "1/1 Running"),
        ("sleep", "1/1 Running"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    want.sort();
    assert_eq!(got, want, "get pods:\n{pods}");

    // No authentication policy and no DestinationRule for the samples (the seed looks at
    // what its installer created; a fresh mesh has no such objects).
    let run = mesh.sh("kubectl get policies.authentication.istio.io --all-namespaces");
    assert_eq!(run.code, 0, "{}", run.both());
    assert_eq!(run.stderr.trim(), "No resources found");
    let hosts = mesh.sh(
        r#"kubectl get destinationrules.networking.istio.io --all-namespaces -o yaml | grep "host:""#,
    );
    assert_eq!(
        hosts.stdout, "",
        "no DestinationRule applies to the samples"
    );

    // One request with its identity.
    mesh.wait_synced();
    assert_eq!(mesh.ok(seed002::ONE_CHECK), seed002::SEED_ONE_CHECK);

    // Start from PERMISSIVE.
    matrix_as_seed(&mesh, "PERMISSIVE", seed002::SEED_PERMISSIVE);

    // Working with sidecar migration: 10 requests to httpbin.partial reach both
    // endpoints, over mTLS to the one with a sidecar and in plaintext to the other.
    let ten = mesh.ok(seed002::TEN_TO_PARTIAL);
    let kinds = tally(&ten);
    let mtls = vec![
        "URI=spiffe://cluster.local/ns/full/sa/sleep".to_string(),
        "response code: 200".to_string(),
    ];
    let plain = vec!["response code: 200".to_string()];
    assert_eq!(kinds.values().sum::<usize>(), 10, "{ten}");
    assert!(
        kinds.get(&mtls).is_some_and(|n| *n >= 1) && kinds.get(&plain).is_some_and(|n| *n >= 1),
        "both kinds of endpoint must answer, over mTLS and in plaintext:\n{ten}"
    );
    assert_eq!(
        kinds.len(),
        2,
        "only 200s, with or without the identity:\n{ten}"
    );

    // Lock down to STRICT: sleep.legacy is reset (curl 56, code 000), sleep.full is
    // upgraded automatically.
    mesh.ok(policy.strict);
    matrix_as_seed(&mesh, "STRICT", seed002::SEED_STRICT);

    // Disable mutual TLS: clients switch to plaintext automatically.
    mesh.ok(policy.plaintext);
    matrix_as_seed(&mesh, "DISABLE", seed002::SEED_PLAINTEXT);

    // A DestinationRule forcing ISTIO_MUTUAL toward the plaintext server: 503.
    mesh.ok(seed002::DR_ISTIO_MUTUAL);
    matrix_as_seed(
        &mesh,
        "DestinationRule ISTIO_MUTUAL",
        seed002::SEED_DR_OVERRIDE,
    );
    let body = mesh.ok(
        r#"kubectl exec $(kubectl get pod -l app=sleep -n full -o jsonpath={.items..metadata.name}) -c sleep -n full -- curl -s http://httpbin.full:8000/headers"#,
    );
    assert!(
        body.starts_with("upstream connect error or disconnect/reset before headers.")
            && body.contains("WRONG_VERSION_NUMBER")
            && body.contains("DestinationRule full/httpbin-full-mtls"),
        "the 503 names the hop, the phase and the reason: {body}"
    );
    // The server refused on its side, with the reason.
    let server_log = mesh.ok("tessera logs deploy/httpbin -c istio-proxy -n full");
    assert!(
        server_log.contains("not_http") || server_log.contains("are not HTTP"),
        "the server's proxy logs the refusal:\n{server_log}"
    );

    // Cleanup.
    mesh.ok(seed002::CLEANUP);
    for ns in seed002::NAMESPACES {
        mesh.wait_no_pods(ns);
    }
}

#[test]
fn seed_002_with_the_v1alpha1_policy() {
    replay("amtls-alpha", &seed002::ALPHA);
}

#[test]
fn seed_002_with_v1beta1_peer_authentication() {
    replay("amtls-beta", &seed002::BETA);
}
