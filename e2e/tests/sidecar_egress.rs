//! Sidecar `egress.hosts` on a real mesh with real curl, on seed 002's topology: a Sidecar
//! in `full` that imports only `partial`'s services. sleep.full's proxy is no longer given
//! httpbin.full, so it passes that connection through as the app sent it: plaintext, no
//! client certificate (httpbin sees no X-Forwarded-Client-Cert), and refused once `full`
//! is STRICT; httpbin.partial still gets mTLS. `explain` and the probed matrix say so.

use std::time::Duration;

use tessera_e2e::seed002;
use tessera_e2e::Mesh;

fn headers(mesh: &Mesh, url: &str) -> (i32, String) {
    let run = mesh.sh(&format!(
        "kubectl exec deploy/sleep -c sleep -n full -- curl -s {url}"
    ));
    (run.code, run.stdout)
}

/// Waits until `check` holds for sleep.full → `url` (a change reaches the proxies a moment
/// after apply), and fails with what it got.
fn expect(mesh: &Mesh, url: &str, what: &str, check: impl Fn(i32, &str) -> bool) {
    mesh.wait_synced();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (code, body) = headers(mesh, url);
        if check(code, &body) {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("sleep.full -> {url}: want {what}, got exit {code}: {body}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

const FULL: &str = "http://httpbin.full:8000/headers";
const PARTIAL: &str = "http://httpbin.partial:8000/headers";
const XFCC: &str = "X-Forwarded-Client-Cert";

#[test]
fn sidecar_egress_hosts_scope_what_a_proxy_is_given() {
    let mesh = Mesh::up("egress", seed002::INSTALL);
    for script in seed002::SETUP {
        mesh.ok(script);
    }
    for ns in seed002::NAMESPACES {
        mesh.wait_ready(ns);
    }
    // Without a Sidecar resource: mesh mTLS to httpbin.full (its sidecar adds XFCC).
    expect(&mesh, FULL, "XFCC", |c, b| c == 0 && b.contains(XFCC));

    mesh.ok(
        "cat <<EOF | kubectl apply -n full -f -\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\nspec:\n  egress:\n  - hosts: [\"partial/*\"]\nEOF",
    );
    // Not imported: passed through in plaintext, so httpbin.full sees no client certificate.
    expect(&mesh, FULL, "no XFCC", |c, b| {
        c == 0 && b.contains("\"Host\"") && !b.contains(XFCC)
    });
    let explained = mesh.ok("tessera explain -n full deploy/sleep httpbin.full:8000");
    assert!(
        explained.contains(
            "Sidecar full/default does not import httpbin.full.svc.cluster.local:8000 (egress hosts)"
        ),
        "{explained}"
    );

    // STRICT in full: the passed-through plaintext is refused; partial still gets mTLS.
    mesh.ok(
        "cat <<EOF | kubectl apply -n full -f -\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\nspec:\n  mtls:\n    mode: STRICT\nEOF",
    );
    // The reset reaches the client sidecar, which ends the app's connection: no response.
    expect(&mesh, FULL, "no response", |c, _| c == 52 || c == 56);
    mesh.wait_synced();
    // Within full (a connection passed through to a port where nothing listens is closed
    // by the sidecar, which the prediction does not model; full's ports all listen).
    let check = mesh.until(
        "tessera check reachability -n full --probe",
        Duration::from_secs(30),
        |r| r.code == 0,
    );
    assert!(
        check
            .stdout
            .contains("Every probe agrees with the prediction."),
        "{}",
        check.both()
    );

    // Removing the Sidecar gives the proxy httpbin.full again: mTLS, which STRICT takes.
    mesh.ok("kubectl delete sidecar default -n full");
    expect(&mesh, FULL, "XFCC", |c, b| c == 0 && b.contains(XFCC));
    let (code, body) = headers(&mesh, PARTIAL);
    assert_eq!(code, 0, "{body}");
}
