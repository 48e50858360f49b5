//! Seed 003, "Ingress Sidecar TLS termination", replayed on a real local mesh installed
//! with `ENABLE_TLS_ON_SIDECAR_INGRESS=true`: namespace `test` STRICT, httpbin's port 9080
//! DISABLE and terminated by its sidecar with the user's certificates (MUTUAL), mounted
//! through `sidecar.istio.io/userVolume`; certificates made by the seed's openssl commands.
//!
//! Outcomes: `proxy-config secret` lists file-cert, default, ROOTCA and file-root; the
//! in-mesh sleep gets 200 on 8080; the external sleep (no sidecar, in `default`) gets 200
//! on 8443 with its client certificate (XFCC carries it), a failed handshake without one,
//! and a reset on 8080 (STRICT, curl exit 56).
//!
//! The seed's page mangles two heredocs (the Service's `selector` indented into a port,
//! `EOF` terminators indented); they are replayed as the task means them.

use std::time::Duration;

use tessera_e2e::{Mesh, Run};

const CERTS: &str = r#"#CA is example.com
openssl req -x509 -sha256 -nodes -days 365 -newkey rsa:2048 -subj '/O=example Inc./CN=example.com' -keyout example.com.key -out example.com.crt
#Server is httpbin.test.svc.cluster.local
openssl req -out httpbin.test.svc.cluster.local.csr -newkey rsa:2048 -nodes -keyout httpbin.test.svc.cluster.local.key -subj "/CN=httpbin.test.svc.cluster.local/O=httpbin organization"
openssl x509 -req -days 365 -CA example.com.crt -CAkey example.com.key -set_serial 1 -in httpbin.test.svc.cluster.local.csr -out httpbin.test.svc.cluster.local.crt
#client is client.test.svc.cluster.local
openssl req -out client.test.svc.cluster.local.csr -newkey rsa:2048 -nodes -keyout client.test.svc.cluster.local.key -subj "/CN=client.test.svc.cluster.local/O=client organization"
openssl x509 -req -days 365 -CA example.com.crt -CAkey example.com.key -set_serial 1 -in client.test.svc.cluster.local.csr -out client.test.svc.cluster.local.crt
"#;

const PEER_AUTHN: &str = r#"kubectl -n test apply -f - <<EOF
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
spec:
  mtls:
    mode: STRICT
EOF
kubectl -n test apply -f - <<EOF
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: disable-peer-auth-for-external-mtls-port
  namespace: test
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: STRICT
  portLevelMtls:
    9080:
      mode: DISABLE
EOF
"#;

const HTTPBIN: &str = r#"kubectl -n test apply -f - <<EOF
apiVersion: v1
kind: ServiceAccount
metadata:

  name: httpbin
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  labels:
    app: httpbin
    service: httpbin
spec:
  ports:
  - port: 8443
    name: https
    targetPort: 9080
  - port: 8080
    name: http
    targetPort: 9081
  selector:
    app: httpbin
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin
spec:
  replicas: 1
  selector:
    matchLabels:
      app: httpbin
      version: v1
  template:
    metadata:
      labels:
        app: httpbin
        version: v1
      annotations:
        sidecar.istio.io/userVolume: '{"tls-secret":{"secret":{"secretName":"httpbin-mtls-termination","optional":true}},"tls-ca-secret":{"secret":{"secretName":"httpbin-mtls-termination-cacert"}}}'
        sidecar.istio.io/userVolumeMount: '{"tls-secret":{"mountPath":"/etc/istio/tls-certs/","readOnly":true},"tls-ca-secret":{"mountPath":"/etc/istio/tls-ca-certs/","readOnly":true}}'
    spec:
      serviceAccountName: httpbin
      containers:
      - image: docker.io/kennethreitz/httpbin
        imagePullPolicy: IfNotPresent
        name: httpbin
        ports:
        - containerPort: 80
EOF
"#;

const SIDECAR: &str = r#"kubectl -n test apply -f - <<EOF
apiVersion: networking.istio.io/v1alpha3
kind: Sidecar
metadata:
  name: ingress-sidecar
  namespace: test
spec:
  workloadSelector:
    labels:
      app: httpbin
      version: v1
  ingress:
  - port:
      number: 9080
      protocol: HTTPS
      name: external
    defaultEndpoint: 0.0.0.0:80
    tls:
      mode: MUTUAL
      privateKey: "/etc/istio/tls-certs/tls.key"
      serverCertificate: "/etc/istio/tls-certs/tls.crt"
      caCertificates: "/etc/istio/tls-ca-certs/ca.crt"
  - port:
      number: 9081
      protocol: HTTP
      name: internal
    defaultEndpoint: 0.0.0.0:80
EOF
"#;

const EXTERNAL_8443: &str = r#"kubectl exec "${EXTERNAL_CLIENT}" -c sleep -- curl -IsS --cacert /tmp/ca.crt --key /tmp/client.test.svc.cluster.local.key --cert /tmp/client.test.svc.cluster.local.crt -HHost:httpbin.test.svc.cluster.local "https://httpbin.test.svc.cluster.local:8443/status/200""#;

/// The seed's commands: `kubectl` lines as they are (the machine's kubectl), `istioctl` →
/// `tessera`.
fn seed(script: &str) -> String {
    format!(
        "export INTERNAL_CLIENT=$(kubectl -n test get pod -l app=sleep -o jsonpath={{.items..metadata.name}} 2>/dev/null)\nexport EXTERNAL_CLIENT=$(kubectl get pod -l app=sleep -o jsonpath={{.items..metadata.name}} 2>/dev/null)\n{}",
        script.replace("istioctl ", "tessera ")
    )
}

/// The same, in the scratch directory where the certificates are.
fn in_scratch(script: &str) -> String {
    seed(&format!("cd \"$SCRATCH\"\n{script}"))
}

fn header_lines(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect()
}

#[test]
fn seed_003_sidecar_terminates_external_mtls() {
    let mesh = Mesh::up(
        "seed003",
        &[
            "profile=default",
            "values.pilot.env.ENABLE_TLS_ON_SIDECAR_INGRESS=true",
        ],
    );
    mesh.ok(&seed(
        "kubectl create ns test\nkubectl label namespace test istio-injection=enabled",
    ));
    mesh.ok(&seed(PEER_AUTHN));
    mesh.ok(&in_scratch(CERTS));
    mesh.ok(&in_scratch("kubectl -n test create secret generic httpbin-mtls-termination-cacert --from-file=ca.crt=./example.com.crt\nkubectl -n test create secret tls httpbin-mtls-termination --cert ./httpbin.test.svc.cluster.local.crt --key ./httpbin.test.svc.cluster.local.key"));
    mesh.ok(&seed(HTTPBIN));
    mesh.ok(&seed(SIDECAR));
    mesh.ok(&seed("kubectl apply -f samples/sleep/sleep.yaml\nkubectl -n test apply -f samples/sleep/sleep.yaml"));
    mesh.wait_ready("default");
    mesh.wait_ready("test");
    let pods = mesh.ok("kubectl get pods -n test");
    assert!(
        pods.lines()
            .filter(|l| l.contains("2/2") && l.contains("Running"))
            .count()
            == 2,
        "{pods}"
    );
    let outside = mesh.ok("kubectl get pods");
    assert!(
        outside
            .lines()
            .any(|l| l.starts_with("sleep-") && l.contains("1/1")),
        "{outside}"
    );
    mesh.wait_synced();

    // istioctl proxy-config secret: the four rows of the seed.
    let pod = mesh.ok("tessera -n test get pod -l app=httpbin -o jsonpath={.items..metadata.name}");
    let run = mesh.until(
        &format!("tessera proxy-config secret {}.test", pod.trim()),
        Duration::from_secs(20),
        |r| r.stdout.contains("file-root:") && !r.stdout.contains("WARMING"),
    );
    let rows: Vec<&str> = run.stdout.lines().collect();
    assert!(
        rows[0].starts_with("RESOURCE NAME") && rows[0].contains("NOT BEFORE"),
        "{}",
        run.stdout
    );
    let names: Vec<&str> = rows[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "file-cert:/etc/istio/tls-certs/tls.crt~/etc/istio/tls-certs/tls.key",
            "default",
            "ROOTCA",
            "file-root:/etc/istio/tls-ca-certs/ca.crt",
        ],
        "{}",
        run.stdout
    );
    assert!(
        rows[1].contains("Cert Chain") && rows[1].contains("ACTIVE") && rows[1].contains(" 1 "),
        "the server cert's serial is 1: {}",
        rows[1]
    );
    assert!(
        rows[3].contains("CA") && rows[3].contains("ACTIVE"),
        "{}",
        rows[3]
    );

    // In-mesh client on 8080 (mesh mTLS to the STRICT port 9081, forwarded to :80).
    let run = mesh.until(
        &seed(r#"kubectl -n test exec "${INTERNAL_CLIENT}" -c sleep -- curl -IsS "http://httpbin:8080/status/200""#),
        Duration::from_secs(20),
        |r| r.code == 0,
    );
    let lines = header_lines(&run);
    assert_eq!(
        lines.first().map(String::as_str),
        Some("HTTP/1.1 200 OK"),
        "{}",
        run.both()
    );
    assert!(lines.iter().any(|l| l == "server: envoy"), "{}", run.stdout);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("x-envoy-upstream-service-time: ")),
        "{}",
        run.stdout
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("x-envoy-decorator-operation")),
        "{}",
        run.stdout
    );

    // External client: its certificates copied in with kubectl cp.
    mesh.ok(&in_scratch("kubectl cp client.test.svc.cluster.local.key default/\"${EXTERNAL_CLIENT}\":/tmp/\nkubectl cp client.test.svc.cluster.local.crt default/\"${EXTERNAL_CLIENT}\":/tmp/\nkubectl cp example.com.crt default/\"${EXTERNAL_CLIENT}\":/tmp/ca.crt"));
    let run = mesh.until(&seed(EXTERNAL_8443), Duration::from_secs(20), |r| {
        r.code == 0
    });
    let lines = header_lines(&run);
    // The sidecar offers ALPN h2 and http/1.1, as Envoy's does, so curl speaks HTTP/2 here;
    // the seed's transcript leaves the status line out.
    assert_eq!(
        lines.first().map(String::as_str),
        Some("HTTP/2 200"),
        "{}",
        run.both()
    );
    for want in [
        "server: istio-envoy",
        "x-envoy-decorator-operation: ingress-sidecar.test:9080/*",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want}: {}", run.stdout);
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("x-envoy-upstream-service-time: ")),
        "{}",
        run.stdout
    );
    // The app sees the external client's certificate in XFCC.
    let xfcc = mesh.ok(&seed(
        &EXTERNAL_8443
            .replace("curl -IsS", "curl -sS")
            .replace("/status/200", "/headers"),
    ));
    assert!(
        xfcc.contains(
            "Subject=\\\"O=client organization,CN=client.test.svc.cluster.local\\\";URI="
        ),
        "{xfcc}"
    );

    // Port 8080 does not take external traffic: STRICT, reset.
    let run = mesh.sh(&seed(&EXTERNAL_8443.replace(
        "https://httpbin.test.svc.cluster.local:8443",
        "http://httpbin.test.svc.cluster.local:8080",
    )));
    assert_eq!(run.code, 56, "{}", run.both());
    assert!(
        run.stderr
            .contains("curl: (56) Recv failure: Connection reset by peer"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("command terminated with exit code 56"),
        "{}",
        run.stderr
    );

    // Without a client certificate the handshake is refused, and the sidecar logs it.
    let run = mesh.sh(&seed(&EXTERNAL_8443.replace(" --key /tmp/client.test.svc.cluster.local.key --cert /tmp/client.test.svc.cluster.local.crt", "")));
    assert!(matches!(run.code, 35 | 56), "{}", run.both());
    assert!(
        run.stderr.contains("alert certificate required"),
        "{}",
        run.stderr
    );
    let logs = mesh.ok(&format!(
        "tessera -n test logs {} -c istio-proxy",
        pod.trim()
    ));
    assert!(logs.contains("TLS handshake refused"), "{logs}");

    // Cleanup, as the seed does it.
    mesh.ok(&seed("kubectl delete secret httpbin-mtls-termination httpbin-mtls-termination-cacert -n test\nkubectl delete service httpbin sleep -n test\nkubectl delete deployment httpbin sleep -n test\nkubectl delete namespace test\nkubectl delete service sleep\nkubectl delete deployment sleep"));
}
