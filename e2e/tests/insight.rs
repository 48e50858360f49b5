//! Operator insight on a real mesh with seed 002's topology: at every policy step the
//! matrix `check reachability --probe` measures with curl from inside each client pod
//! equals the one the compiler predicts; `analyze --what-if` names the connections a
//! STRICT policy would break before it is applied; `explain`, `analyze` and `edges`
//! say what the proxies do and have seen.

use std::time::Duration;

use tessera_e2e::seed002;
use tessera_e2e::{Mesh, Run};

const CHECK: &str = "tessera check reachability -n full,partial,legacy --probe";

/// The probed matrix must agree with the prediction (a policy reaches the proxies a
/// moment after `apply` returns, so a disagreement is retried for a few seconds).
fn probed_equals_predicted(mesh: &Mesh, step: &str) -> String {
    mesh.wait_synced();
    let run = mesh.until(CHECK, Duration::from_secs(20), |r| r.code == 0);
    assert_eq!(run.code, 0, "{step}: probed != predicted\n{}", run.both());
    assert!(
        run.stdout
            .contains("Every probe agrees with the prediction."),
        "{step}\n{}",
        run.both()
    );
    assert!(!run.stdout.contains(" NO\n"), "{step}\n{}", run.stdout);
    run.stdout
}

/// The PREDICTED cell of sleep.<from> → httpbin.<to>:8000.
fn cell(matrix: &str, from: &str, to: &str) -> String {
    cell_of(matrix, from, &format!("httpbin.{to}:8000"))
}

/// The PREDICTED cell of sleep.<from> → `target` (`svc.ns:port`).
fn cell_of(matrix: &str, from: &str, target: &str) -> String {
    let line = matrix
        .lines()
        .find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2
                && f[0].starts_with("sleep-")
                && f[0].ends_with(&format!(".{from}"))
                && f[1] == target
        })
        .unwrap_or_else(|| panic!("no row sleep.{from} -> {target} in\n{matrix}"));
    // PREDICTED runs up to the PROBED column: split on the table's 3-space gaps.
    line.split("   ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .nth(2)
        .unwrap()
        .to_string()
}

fn policy_file(script: &str) -> String {
    // The seed's `cat <<EOF | kubectl apply -n full -f -` as a file for --what-if.
    script.replace("kubectl apply -n full -f -", "cat > $SCRATCH/policy.yaml")
}

fn what_if(mesh: &Mesh, script: &str) -> Run {
    mesh.ok(&policy_file(script));
    mesh.sh("tessera analyze -n full --what-if $SCRATCH/policy.yaml")
}

#[test]
fn probed_matrix_equals_predicted_at_every_seed_002_step() {
    let mesh = Mesh::up("insight", seed002::INSTALL);
    for script in seed002::SETUP {
        mesh.ok(script);
    }
    for ns in seed002::NAMESPACES {
        mesh.wait_ready(ns);
    }

    // 1. PERMISSIVE.
    let m = probed_equals_predicted(&mesh, "permissive");
    assert_eq!(cell(&m, "full", "full"), "mTLS");
    assert_eq!(cell(&m, "legacy", "full"), "plaintext");
    assert!(cell(&m, "full", "partial").contains("mTLS"), "{m}");
    assert!(cell(&m, "full", "partial").contains("plaintext"), "{m}");
    let analyzed = mesh.sh("tessera analyze");
    assert_eq!(analyzed.code, 0, "{}", analyzed.both());
    assert!(
        analyzed.stdout.starts_with("No issues found"),
        "{}",
        analyzed.stdout
    );

    // Before STRICT is applied: what would it break?
    let w = what_if(&mesh, seed002::BETA.strict);
    assert_eq!(w.code, 79, "{}", w.both());
    assert!(
        w.stdout
            .contains("peerauthentication.security.istio.io/httpbin created"),
        "{}",
        w.stdout
    );
    assert!(w.stdout.contains("Would break (3):"), "{}", w.stdout);
    let legacy_line = w
        .stdout
        .lines()
        .find(|l| {
            l.trim_start().starts_with("sleep-") && l.contains(".legacy -> httpbin.full:8000")
        })
        .unwrap_or_else(|| panic!("{}", w.stdout));
    assert!(
        legacy_line.ends_with("plaintext -> refused"),
        "{legacy_line}"
    );
    assert!(
        w.stdout
            .contains("decided by: PeerAuthentication full/httpbin"),
        "{}",
        w.stdout
    );
    // Nothing was applied.
    let pa = mesh.sh("tessera get peerauthentication -n full");
    assert!(!pa.stdout.contains("httpbin"), "{}", pa.both());

    // 2. STRICT.
    mesh.ok(seed002::BETA.strict);
    let m = probed_equals_predicted(&mesh, "strict");
    assert_eq!(cell(&m, "full", "full"), "mTLS");
    assert_eq!(cell(&m, "legacy", "full"), "refused");
    let explained = mesh.ok("tessera explain deploy/sleep.legacy httpbin.full:8000");
    assert!(explained.contains(": refused\n"), "{explained}");
    assert!(
        explained.contains("server takes:  mTLS only (STRICT)"),
        "{explained}"
    );
    assert!(
        explained.contains("decided by:    PeerAuthentication full/httpbin"),
        "{explained}"
    );
    assert!(
        explained.contains("fix:           inject a sidecar into sleep-"),
        "{explained}"
    );
    let explained = mesh.ok("tessera explain -n full deploy/sleep httpbin:8000");
    assert!(explained.contains(": mTLS\n"), "{explained}");
    assert!(
        explained.contains("identities:    client spiffe://cluster.local/ns/full/sa/sleep, server spiffe://cluster.local/ns/full/sa/httpbin"),
        "{explained}"
    );
    // What the proxies saw while probing: sleep.full → httpbin.full secured, and the
    // STRICT port refusing plaintext.
    let edges = mesh.ok("tessera edges -n full");
    let secured = edges.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 7
            && f[0].starts_with("sleep-")
            && f[0].ends_with(".full")
            && f[1].starts_with("httpbin-")
            && f[1].ends_with(".full")
            && f[3] == "mtls"
            && f[4] == "ns/full/sa/sleep"
            && f[5] == "ns/full/sa/httpbin"
            && f[6] == "yes"
    });
    assert!(secured, "{edges}");
    assert!(
        edges
            .lines()
            .any(|l| l.contains("strict_plaintext: the port is STRICT")),
        "{edges}"
    );

    // 3. Plaintext.
    let w = what_if(&mesh, seed002::BETA.plaintext);
    assert_eq!(w.code, 0, "{}", w.both());
    assert!(
        w.stdout.contains("Breaks no working connection"),
        "{}",
        w.stdout
    );
    assert!(w.stdout.contains("Would fix (3):"), "{}", w.stdout);
    mesh.ok(seed002::BETA.plaintext);
    let m = probed_equals_predicted(&mesh, "plaintext");
    assert_eq!(cell(&m, "full", "full"), "plaintext");
    assert_eq!(cell(&m, "legacy", "full"), "plaintext");

    // 4. The DestinationRule forcing mTLS toward the plaintext-only server.
    mesh.ok(seed002::DR_ISTIO_MUTUAL);
    let m = probed_equals_predicted(&mesh, "destination rule");
    assert_eq!(cell(&m, "full", "full"), "503");
    assert_eq!(cell(&m, "legacy", "full"), "plaintext");
    let analyzed = mesh.sh("tessera analyze");
    assert_eq!(analyzed.code, 79, "{}", analyzed.both());
    assert!(
        analyzed.stdout.contains("Error [TSR0102] (DestinationRule full/httpbin-full-mtls) sends mTLS (ISTIO_MUTUAL) to httpbin.full:8000"),
        "{}",
        analyzed.stdout
    );
    assert!(
        analyzed
            .stdout
            .contains("fix: remove tls from DestinationRule full/httpbin-full-mtls"),
        "{}",
        analyzed.stdout
    );

    // 5. The user's TLS (DestinationRule SIMPLE) toward PERMISSIVE ports whose app speaks
    // plaintext: the server's sidecar resets TLS without a mesh ALPN on an HTTP port (the
    // client's sidecar answers 503) and passes it through to the app on a TCP port (the
    // app cannot read it: the client is reset). explain predicts both and says why.
    mesh.ok("tessera delete peerauthentication httpbin -n full && tessera delete destinationrule httpbin-full-mtls -n full");
    mesh.ok(&format!(
        "cat > $SCRATCH/httpbin-tcp.yaml <<'EOF'\n{}EOF",
        tessera_e2e::HTTPBIN_TCP
    ));
    mesh.ok(USER_TLS);
    let ready = mesh.until(
        "tessera get pods -n full -l app=httpbin-tcp",
        Duration::from_secs(60),
        |r| r.stdout.contains(" 2/2 "),
    );
    assert!(ready.stdout.contains(" 2/2 "), "{}", ready.both());
    let m = probed_equals_predicted(&mesh, "user TLS");
    assert_eq!(cell(&m, "full", "full"), "503");
    assert_eq!(cell_of(&m, "full", "httpbin-tcp.full:8001"), "refused");
    assert_eq!(cell(&m, "legacy", "full"), "plaintext");
    assert_eq!(cell_of(&m, "legacy", "httpbin-tcp.full:8001"), "plaintext");
    let explained = mesh.ok("tessera explain -n full deploy/sleep httpbin:8000");
    assert!(explained.contains(": 503\n"), "{explained}");
    assert!(
        explained.contains("PERMISSIVE HTTP port and TLS without an istio ALPN"),
        "{explained}"
    );
    let explained = mesh.ok("tessera explain -n full deploy/sleep httpbin-tcp:8001");
    assert!(explained.contains(": refused\n"), "{explained}");
    assert!(
        explained.contains("passes through the port to an app that speaks plaintext"),
        "{explained}"
    );
    let analyzed = mesh.sh("tessera analyze");
    assert_eq!(analyzed.code, 79, "{}", analyzed.both());
    assert!(
        analyzed
            .stdout
            .contains("Error [TSR0106] (DestinationRule full/httpbin-simple)"),
        "{}",
        analyzed.stdout
    );
    assert!(
        analyzed
            .stdout
            .contains("Error [TSR0106] (DestinationRule full/httpbin-tcp-simple)"),
        "{}",
        analyzed.stdout
    );

    // 6. The same DestinationRule SIMPLE toward a STRICT HTTP port: the server's sidecar
    // terminates any TLS as mesh mTLS and requires a mesh client certificate, which the
    // user's TLS does not present: the client's sidecar answers 503.
    mesh.ok(seed002::BETA.strict);
    let m = probed_equals_predicted(&mesh, "user TLS toward STRICT");
    assert_eq!(cell(&m, "full", "full"), "503");
    assert_eq!(cell(&m, "legacy", "full"), "refused");
    let explained = mesh.ok("tessera explain -n full deploy/sleep httpbin:8000");
    assert!(
        explained.contains("the port is STRICT: it takes only a mesh certificate"),
        "{explained}"
    );

    mesh.ok(seed002::CLEANUP);
}

/// httpbin-tcp (written to $SCRATCH first) with a sidecar, and DestinationRules with the
/// user's TLS toward it and toward httpbin's HTTP port.
const USER_TLS: &str = r#"tessera apply -n full -f <(tessera kube-inject -f $SCRATCH/httpbin-tcp.yaml)
cat <<EOF | tessera apply -n full -f -
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: httpbin-simple
spec:
  host: httpbin.full.svc.cluster.local
  trafficPolicy:
    tls:
      mode: SIMPLE
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: httpbin-tcp-simple
spec:
  host: httpbin-tcp.full.svc.cluster.local
  trafficPolicy:
    tls:
      mode: SIMPLE
EOF"#;
