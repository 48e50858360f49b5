//! AuthorizationPolicy on a real mesh with real curl, on seed 002's topology: the sample
//! that locks down `full` (only sleep.full may GET /headers), DENY over ALLOW, allow-nothing,
//! a namespace rule, and a port the Service declares TCP, where an ALLOW rule with an
//! HTTP-only field matches nothing and a DENY rule ignores it. A denied request is 403
//! `RBAC: access denied`; a denied TCP connection is closed.

use std::time::Duration;

use tessera_e2e::seed002;
use tessera_e2e::Mesh;

/// `sleep.<from>` → `url` with curl's extra `args`: the status code, or `exit N` when
/// curl got no response.
fn call(mesh: &Mesh, from: &str, url: &str, args: &str) -> String {
    let run = mesh.sh(&format!(
        "kubectl exec deploy/sleep -c sleep -n {from} -- curl -s -o /dev/null -w '%{{http_code}}' {args} {url}"
    ));
    if run.code == 0 {
        run.stdout.trim().to_string()
    } else {
        format!("exit {}", run.code)
    }
}

/// Waits until `sleep.<from>` → `url` answers `want` (a policy reaches the proxies a
/// moment after apply), and fails with what it got.
fn expect(mesh: &Mesh, from: &str, url: &str, args: &str, want: &str) {
    mesh.wait_synced();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = call(mesh, from, url, args);
        if got == want {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("sleep.{from} -> {url} {args}: want {want}, got {got}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

const HEADERS: &str = "http://httpbin.full:8000/headers";

fn policy(mesh: &Mesh, ns: &str, name: &str, spec: &str) {
    mesh.ok(&format!(
        "cat <<EOF | kubectl apply -n {ns} -f -\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\nspec:\n{spec}\nEOF"
    ));
}

#[test]
fn authorization_policies_on_a_real_mesh() {
    let mesh = Mesh::up("authz", seed002::INSTALL);
    for script in seed002::SETUP {
        mesh.ok(script);
    }
    mesh.ok("kubectl label ns full istio-injection=enabled");
    mesh.ok(&format!(
        "cat <<'EOF' | kubectl apply -n full -f -\n{}EOF",
        tessera_e2e::HTTPBIN_TCP
    ));
    for ns in seed002::NAMESPACES {
        mesh.wait_ready(ns);
    }
    // No policy: everyone may call.
    expect(&mesh, "full", HEADERS, "", "200");
    expect(&mesh, "legacy", HEADERS, "", "200");

    // Before it is applied, what-if names the live hops the sample would deny.
    let what_if = mesh.sh("tessera analyze --what-if samples/authz/httpbin-full-viewer.yaml");
    assert_eq!(what_if.code, 79, "{}", what_if.both());
    let legacy_line = what_if
        .stdout
        .lines()
        .find(|l| l.contains(".legacy -> httpbin.full:8000"))
        .unwrap_or_else(|| panic!("{}", what_if.stdout));
    assert!(legacy_line.ends_with("plaintext -> 403"), "{legacy_line}");
    assert!(
        what_if
            .stdout
            .contains("decided by: AuthorizationPolicy full/httpbin-viewer"),
        "{}",
        what_if.stdout
    );
    // The calls above made the legacy hop live: the sidecars have seen it.
    assert!(
        what_if
            .stdout
            .contains("Live (seen by the sidecars), would break")
            && what_if
                .stdout
                .lines()
                .any(|l| l.contains(".legacy -> httpbin-") && l.contains("connections")),
        "{}",
        what_if.stdout
    );
    // The sample: only sleep.full may GET /headers.
    mesh.ok("kubectl apply -f samples/authz/httpbin-full-viewer.yaml");
    expect(&mesh, "full", HEADERS, "", "200");
    expect(&mesh, "full", "http://httpbin.full:8000/ip", "", "403");
    expect(&mesh, "full", HEADERS, "-X POST", "403");
    // Plaintext from legacy has no principal.
    expect(&mesh, "legacy", HEADERS, "", "403");
    let body = mesh
        .ok("kubectl exec deploy/sleep -c sleep -n full -- curl -s http://httpbin.full:8000/ip");
    assert_eq!(body, "RBAC: access denied");
    // The refusal is logged by httpbin's sidecar, with the reason.
    let log = mesh.ok("kubectl logs -n full deploy/httpbin -c istio-proxy");
    assert!(
        log.contains("request denied by authorization policy (403)")
            && log.contains("denied by AuthorizationPolicy full/httpbin-viewer: none of its ALLOW rules matched"),
        "{log}"
    );

    // Insight agrees: the probed matrix is the predicted one (403 from legacy), and
    // explain names the policy that lets sleep.full in.
    mesh.wait_synced();
    let check = mesh.until(
        "tessera check reachability -n full,partial,legacy --probe",
        Duration::from_secs(20),
        |r| r.code == 0,
    );
    assert!(
        check
            .stdout
            .contains("Every probe agrees with the prediction."),
        "{}",
        check.both()
    );
    assert!(
        check.stdout.contains(
            "denied by AuthorizationPolicy full/httpbin-viewer: none of its ALLOW rules matched"
        ),
        "{}",
        check.stdout
    );
    let explained = mesh.ok("tessera explain -n full deploy/sleep httpbin:8000");
    assert!(
        explained
            .contains("authorization: allowed by AuthorizationPolicy full/httpbin-viewer (rule 0)"),
        "{explained}"
    );

    // DENY wins over ALLOW: a header names what to refuse.
    policy(
        &mesh,
        "full",
        "deny-blocked",
        "  selector:\n    matchLabels:\n      app: httpbin\n  action: DENY\n  rules:\n  - when:\n    - key: request.headers[x-block]\n      values: [\"yes\"]",
    );
    expect(&mesh, "full", HEADERS, "-H 'x-block: yes'", "403");
    expect(&mesh, "full", HEADERS, "-H 'x-block: no'", "200");
    let log = mesh.ok("kubectl logs -n full deploy/httpbin -c istio-proxy");
    assert!(
        log.contains("denied by AuthorizationPolicy full/deny-blocked (rule 0)"),
        "{log}"
    );

    // A namespace rule instead: any identity of `full`, any path.
    mesh.ok("kubectl delete -n full authorizationpolicy httpbin-viewer deny-blocked");
    policy(
        &mesh,
        "full",
        "from-full",
        "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        namespaces: [full]",
    );
    expect(&mesh, "full", "http://httpbin.full:8000/ip", "", "200");
    expect(&mesh, "legacy", HEADERS, "", "403");

    // Allow-nothing (`spec: {}`) beside it changes nothing; alone, it denies all.
    policy(&mesh, "full", "allow-nothing", "  {}");
    expect(&mesh, "full", HEADERS, "", "200");
    mesh.ok("kubectl delete -n full authorizationpolicy from-full");
    expect(&mesh, "full", HEADERS, "", "403");
    mesh.ok("kubectl delete -n full authorizationpolicy allow-nothing");
    expect(&mesh, "full", HEADERS, "", "200");

    // A TCP port: an ALLOW rule with methods matches no connection, which is closed (curl: empty reply).
    let tcp = "http://httpbin-tcp.full:8001/headers";
    expect(&mesh, "full", tcp, "", "200");
    policy(
        &mesh,
        "full",
        "tcp-get",
        "  selector:\n    matchLabels:\n      app: httpbin-tcp\n  rules:\n  - to:\n    - operation:\n        methods: [GET]",
    );
    expect(&mesh, "full", tcp, "", "exit 52");
    let analyzed = mesh.sh("tessera analyze");
    assert!(
        analyzed.stdout.contains("TSR0203") && analyzed.stdout.contains("full/tcp-get"),
        "{}",
        analyzed.both()
    );
    // Without the HTTP field, the port rule lets it through.
    policy(
        &mesh,
        "full",
        "tcp-get",
        "  selector:\n    matchLabels:\n      app: httpbin-tcp\n  rules:\n  - to:\n    - operation:\n        ports: [\"9000\"]",
    );
    expect(&mesh, "full", tcp, "", "200");
    // A connection let in keeps to the policy: a DENY applied while it is open closes it
    // (here during a 6 s response).
    let open = std::thread::scope(|scope| {
        let slow = scope.spawn(|| call(&mesh, "full", "http://httpbin-tcp.full:8001/delay/6", ""));
        std::thread::sleep(Duration::from_secs(2));
        policy(
            &mesh,
            "full",
            "tcp-deny-now",
            "  selector:\n    matchLabels:\n      app: httpbin-tcp\n  action: DENY\n  rules:\n  - {}",
        );
        slow.join().unwrap()
    });
    assert_eq!(open, "exit 52", "the open connection outlived the DENY");
    mesh.ok("kubectl delete -n full authorizationpolicy tcp-deny-now");
    expect(&mesh, "full", tcp, "", "200");
    // A DENY rule with methods ignores them on TCP: the port is denied.
    policy(
        &mesh,
        "full",
        "tcp-deny",
        "  selector:\n    matchLabels:\n      app: httpbin-tcp\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        methods: [POST]\n        ports: [\"9000\"]",
    );
    expect(&mesh, "full", tcp, "", "exit 52");
    let metrics = mesh.ok(
        "kubectl exec -n full deploy/httpbin-tcp -c istio-proxy -- curl -s 127.0.0.1:15000/stats/prometheus",
    );
    assert!(
        metrics.contains(
            "tessera_authorization_decisions_total{policy=\"full/tcp-deny\",decision=\"deny\"}"
        ) && metrics.contains("tessera_refusals_total{reason=\"rbac_access_denied\"}"),
        "{metrics}"
    );
    // The ingress gateway: an HTTP server routing to httpbin.full, and a policy on the
    // gateway's own pods (its remote address and the request decide).
    mesh.ok(GATEWAY);
    let gateway = |path: &str| {
        mesh.ok(&format!(
            "H=$(kubectl -n istio-system get service istio-ingressgateway -o jsonpath='{{.status.loadBalancer.ingress[0].ip}}'); \
             P=$(kubectl -n istio-system get service istio-ingressgateway -o jsonpath='{{.spec.ports[?(@.name==\"http2\")].port}}'); \
             curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: httpbin.example.com' http://$H:$P{path}"
        ))
    };
    mesh.wait_synced();
    let until = |path: &str, want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let got = gateway(path);
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gateway {path}: want {want}, got {got}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    until("/status/418", "418");
    policy(
        &mesh,
        "istio-system",
        "gateway-no-status",
        "  selector:\n    matchLabels:\n      istio: ingressgateway\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/status/*\"]\n    from:\n    - source:\n        notRemoteIpBlocks: [\"192.0.2.0/24\"]",
    );
    until("/status/418", "403");
    until("/headers", "200");
    mesh.ok(seed002::CLEANUP);
}

/// An HTTP server on the ingress gateway for httpbin.example.com, routed to httpbin.full
/// (whose own policies were removed above, but for its TCP sibling's).
const GATEWAY: &str = r#"cat <<EOF | kubectl apply -n full -f -
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: httpbin-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["httpbin.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts: ["httpbin.example.com"]
  gateways: ["httpbin-gateway"]
  http:
  - route:
    - destination:
        host: httpbin.full.svc.cluster.local
        port: {number: 8000}
EOF"#;
