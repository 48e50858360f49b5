//! Seeds 000/001, "Mutual TLS over HTTPS", replayed on a real local mesh: nginx serving
//! HTTPS with its own openssl-made certificate, reached with `curl https://my-nginx -k`
//! from the sleep pod's app container and from its `istio-proxy` container:
//!
//! 1. nginx without a sidecar: the page from both containers;
//! 2. nginx with a sidecar, mTLS off (PERMISSIVE): the page from both (the sidecars pass
//!    the app's TLS through on a port named `https`; curl sees nginx's certificate);
//! 3. mesh-wide mTLS on — the 1.4 installer's `MeshPolicy default` (seed 000), then the
//!    v1beta1 root-namespace PeerAuthentication (seed 001): the page from the app
//!    container (sleep → sidecar → mTLS → sidecar → nginx), and a failed handshake from
//!    `istio-proxy`, whose traffic bypasses the sidecar and so has no client certificate
//!    (curl exit 35 or 56, `command terminated with exit code ...`).

use std::time::Duration;
use tessera_e2e::seed000::*;

use tessera_e2e::{Mesh, Run};

/// `get pod`'s rows as (name without the generated suffix, READY, STATUS).
fn listing(out: &str) -> Vec<(String, String, String)> {
    let mut rows: Vec<(String, String, String)> = out
        .lines()
        .filter(|l| !l.starts_with("NAME"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let app = if f[0].starts_with("my-nginx-") {
                "my-nginx"
            } else if f[0].starts_with("sleep-") {
                "sleep"
            } else {
                f[0]
            };
            (app.to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect();
    rows.sort();
    rows
}

fn row(app: &str, ready: &str) -> (String, String, String) {
    (app.to_string(), ready.to_string(), "Running".to_string())
}

/// The pods' names in a `get pod` listing.
fn names(out: &str) -> Vec<String> {
    out.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Waits until `get pod` lists my-nginx and sleep with these READY counts, Running and
/// Ready, none of them one of the `replaced` pods (a delete and re-apply makes new
/// ones); their names.
fn pods_become(
    mesh: &Mesh,
    step: &str,
    nginx: &str,
    sleep: &str,
    replaced: &[String],
) -> Vec<String> {
    let want = vec![row("my-nginx", nginx), row("sleep", sleep)];
    let run = mesh.until(GET_POD, Duration::from_secs(90), |r| {
        listing(&r.stdout) == want && !names(&r.stdout).iter().any(|n| replaced.contains(n))
    });
    assert_eq!(listing(&run.stdout), want, "{step}: {}", run.both());
    let now = names(&mesh.wait_pods("default", 2));
    assert!(
        !now.iter().any(|n| replaced.contains(n)),
        "{step}: {now:?} should be new pods"
    );
    now
}

fn assert_page(step: &str, run: &Run) {
    assert!(
        run.code == 0 && run.stdout.contains(WELCOME),
        "{step}: nginx's page expected\n{}",
        run.both()
    );
}

/// The seed's failure from `istio-proxy` once mTLS is on: the server sidecar demands a
/// client certificate. TLS 1.3 reports it after the handshake (56, `alert certificate
/// required`), TLS 1.2 during it (35, the seed's gnutls curl).
fn assert_handshake_refused(step: &str, run: &Run) {
    assert!(
        matches!(run.code, 35 | 56)
            && run
                .stderr
                .contains(&format!("command terminated with exit code {}", run.code))
            && !run.stdout.contains(WELCOME),
        "{step}: a failed handshake expected (curl exit 35 or 56)\n{}",
        run.both()
    );
}

/// The certificate curl sees is nginx's own (`CN=my-nginx`): the sidecars did not
/// terminate the app's TLS.
fn assert_nginx_certificate(mesh: &Mesh, container: &str) {
    let run = mesh.sh(&format!(
        "tessera exec $(tessera get pod -l app=sleep -o jsonpath={{.items..metadata.name}}) -c {container} -- curl -sv -o /dev/null https://my-nginx -k 2>&1 | grep 'subject:'"
    ));
    assert!(
        run.stdout.contains("CN=my-nginx"),
        "from {container}: curl should see nginx's certificate\n{}",
        run.both()
    );
}

#[test]
fn seed_000_001_mutual_tls_over_https() {
    // "Authentication should be disabled" at install: the default (mtls.enabled=false).
    let mesh = Mesh::up("https", &["values.global.mtls.enabled=false"]);

    // Certificates and config map.
    let out = mesh.ok(CERT_AND_SECRET);
    assert!(out.contains("secret/nginxsecret created"), "{out}");
    let out = mesh.ok(CONFIGMAP);
    assert_eq!(out.trim(), "configmap/nginxconfigmap created");

    // 1. An HTTPS service without a sidecar.
    let out = mesh.ok(NGINX_WITHOUT_SIDECAR);
    assert_eq!(
        out,
        "service/my-nginx created\nreplicationcontroller/my-nginx created\n"
    );
    mesh.ok(SLEEP_WITH_SIDECAR);
    let first = pods_become(&mesh, "without sidecar", "1/1", "2/2", &[]);
    mesh.wait_synced();
    assert_page("no sidecar, shell in istio-proxy", &mesh.sh(SHELL_IN_PROXY));
    assert_page("no sidecar, from istio-proxy", &mesh.sh(CURL_FROM_PROXY));
    assert_page("no sidecar, from sleep", &mesh.sh(CURL_FROM_SLEEP));

    // 2. With a sidecar, mutual TLS off.
    mesh.ok(REDEPLOY_NGINX_WITH_SIDECAR);
    let nginx_only: Vec<String> = first
        .iter()
        .filter(|n| n.starts_with("my-nginx-"))
        .cloned()
        .collect();
    let mut current = pods_become(&mesh, "with sidecar", "2/2", "2/2", &nginx_only);
    mesh.wait_synced();
    assert_page("sidecar, mTLS off, from sleep", &mesh.sh(CURL_FROM_SLEEP));
    assert_page(
        "sidecar, mTLS off, from istio-proxy",
        &mesh.sh(CURL_FROM_PROXY),
    );
    assert_nginx_certificate(&mesh, "sleep");
    assert_nginx_certificate(&mesh, "istio-proxy");

    // 3. Mesh-wide mutual TLS, as seed 000's installer set it (MeshPolicy), then as
    //    seed 001's (v1beta1 PeerAuthentication in the root namespace).
    for (step, mtls_on) in [
        ("MeshPolicy default", MTLS_ON_MESHPOLICY),
        (
            "PeerAuthentication istio-system/default",
            MTLS_ON_PEERAUTHENTICATION,
        ),
    ] {
        mesh.ok(mtls_on);
        // "Wait until no pods are left in istio-system": the control plane runs outside
        // the cluster here; only the installer's ingress gateway is listed.
        let cp = mesh.sh(GET_CONTROL_PLANE_PODS);
        assert!(
            cp.code == 0
                && cp
                    .stdout
                    .lines()
                    .skip(1)
                    .all(|l| l.starts_with("istio-ingressgateway-")),
            "{}",
            cp.both()
        );
        mesh.ok(REDEPLOY_BOTH);
        current = pods_become(&mesh, step, "2/2", "2/2", &current);
        mesh.wait_synced();
        assert_page(&format!("{step}: from sleep"), &mesh.sh(CURL_FROM_SLEEP));
        assert_nginx_certificate(&mesh, "sleep");
        assert_handshake_refused(
            &format!("{step}: from istio-proxy"),
            &mesh.sh(CURL_FROM_PROXY),
        );
        // The refusing side logs it, with the reason.
        let log = mesh.ok("tessera logs rc/my-nginx -c istio-proxy");
        assert!(
            log.contains("mesh mTLS handshake refused"),
            "{step}: nginx's sidecar logs the refusal:\n{log}"
        );
    }

    // Cleanup.
    mesh.ok(CLEANUP);
    mesh.wait_no_pods("default");
}
