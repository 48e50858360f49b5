//! Seed 004, "Securing a Gateway with HTTPS", replayed on a real local mesh: httpbin with
//! a sidecar behind `istio-ingressgateway`; certificates made by openssl as the seed's
//! generate.sh makes them (root, intermediate, server and client leaves); curl from the
//! host with `--resolve`, `--cacert`, `--cert/--key` to the gateway's published address.
//!
//! 1. File mounts (the seed's flow): Secret `istio-ingressgateway-certs` appears at
//!    `/etc/istio/ingressgateway-certs`, picked up without a restart; SIMPLE → `HTTP/2 418`
//!    and the teapot, `SSL certificate verify ok`; MUTUAL with
//!    `istio-ingressgateway-ca-certs` → handshake refused without a client certificate,
//!    the teapot with one; the troubleshooting commands (`ls`, `openssl x509`, `/certs`).
//! 2. `credentialName` (current Istio): the same outcomes from a Secret with tls.crt,
//!    tls.key and ca.crt; a route miss is a 404; replacing the Secret serves the new
//!    certificate without a restart.

use std::time::Duration;

use tessera_e2e::seed004::*;
use tessera_e2e::{Mesh, Run};

const CURL_SIMPLE: &str = "curl -v --resolve httpbin.example.com:$SECURE_INGRESS_PORT:$INGRESS_HOST --cacert 2_intermediate/certs/ca-chain.cert.pem https://httpbin.example.com:$SECURE_INGRESS_PORT/status/418";
const CURL_NO_CERT: &str = "curl --resolve httpbin.example.com:$SECURE_INGRESS_PORT:$INGRESS_HOST  --cacert 2_intermediate/certs/ca-chain.cert.pem https://httpbin.example.com:$SECURE_INGRESS_PORT/status/418";
const CURL_CERT: &str = "curl --resolve httpbin.example.com:$SECURE_INGRESS_PORT:$INGRESS_HOST  --cacert 2_intermediate/certs/ca-chain.cert.pem --cert 4_client/certs/httpbin.example.com.cert.pem --key 4_client/private/httpbin.example.com.key.pem https://httpbin.example.com:$SECURE_INGRESS_PORT/status/418";

/// The seed's "determining the ingress IP and ports", then `cd` into the certificates.
fn env(script: &str) -> String {
    format!(
        "export INGRESS_HOST=$(kubectl -n istio-system get service istio-ingressgateway -o jsonpath='{{.status.loadBalancer.ingress[0].ip}}')\n\
         export SECURE_INGRESS_PORT=$(kubectl -n istio-system get service istio-ingressgateway -o jsonpath='{{.spec.ports[?(@.name==\"https\")].port}}')\n\
         cd \"$SCRATCH/mtls-go-example\"\n{script}"
    )
}

fn teapot(run: &Run) -> bool {
    run.code == 0 && run.stdout.contains(TEAPOT)
}

/// A refused client-certificate handshake: TLS 1.3 reports it on the first read (56),
/// TLS 1.2 in the handshake (35); OpenSSL 3 may call it a client-certificate error (98).
fn refused(run: &Run) -> bool {
    matches!(run.code, 35 | 56 | 98)
        && (run.stderr.contains("alert certificate required")
            || run.stderr.contains("alert handshake failure"))
}

fn gateway_pod(mesh: &Mesh) -> String {
    mesh.ok("tessera -n istio-system get pods -l istio=ingressgateway -o jsonpath='{.items[0].metadata.name}'")
        .trim()
        .to_string()
}

fn setup(mesh: &Mesh) {
    // Before you begin: httpbin with a sidecar, the gateway installed by `tessera up`.
    mesh.ok("kubectl apply -f <(tessera kube-inject -f samples/httpbin/httpbin.yaml)");
    mesh.wait_ready("default");
    mesh.wait_ready("istio-system");
    let script = GENERATE_SH.replace('\'', "'\\''");
    mesh.ok(&format!(
        "mkdir -p \"$SCRATCH/mtls-go-example\" && cd \"$SCRATCH/mtls-go-example\" && printf '%s' '{script}' > generate.sh && chmod +x generate.sh && ./generate.sh httpbin.example.com"
    ));
}

#[test]
fn seed_004_gateway_with_file_mounts_and_credential_name() {
    let mesh = Mesh::up("seed004", &[]);
    setup(&mesh);
    let svc = mesh.ok("kubectl get svc -n istio-system");
    assert!(
        svc.contains("istio-ingressgateway")
            && svc.contains("LoadBalancer")
            && svc.contains("80:")
            && svc.contains("443:"),
        "{svc}"
    );
    assert_eq!(
        mesh.ingress_ip()
            .parse::<std::net::Ipv4Addr>()
            .map(|ip| ip.is_loopback()),
        Ok(true)
    );

    // 1. File mounts.
    let created = mesh.ok(&env("kubectl create -n istio-system secret tls istio-ingressgateway-certs --key 3_application/private/httpbin.example.com.key.pem --cert 3_application/certs/httpbin.example.com.cert.pem"));
    assert!(
        created.contains("istio-ingressgateway-certs created"),
        "{created}"
    );
    mesh.ok(&format!(
        "cat <<EOF | kubectl apply -f -\n{GATEWAY_SIMPLE}EOF"
    ));
    mesh.ok(&format!(
        "cat <<EOF | kubectl apply -f -\n{VIRTUAL_SERVICE}EOF"
    ));
    let run = mesh.until(&env(CURL_SIMPLE), Duration::from_secs(30), teapot);
    assert!(teapot(&run), "SIMPLE: {}", run.both());
    for line in [
        "HTTP/2 418",
        "SSL certificate verify ok",
        "subject: C=US; ST=Denial; L=Springfield; O=Dis; CN=httpbin.example.com",
        "server: istio-envoy",
        "x-envoy-upstream-service-time",
    ] {
        assert!(
            run.stderr.contains(line),
            "SIMPLE: no {line:?} in\n{}",
            run.stderr
        );
    }

    let created = mesh.ok(&env("kubectl create -n istio-system secret generic istio-ingressgateway-ca-certs --from-file=2_intermediate/certs/ca-chain.cert.pem"));
    assert!(
        created.contains("istio-ingressgateway-ca-certs created"),
        "{created}"
    );
    // `istioctl replace -f -`: apply replaces the Gateway's spec.
    mesh.ok(&format!(
        "cat <<EOF | kubectl apply -f -\n{GATEWAY_MUTUAL}EOF"
    ));
    let run = mesh.until(&env(CURL_NO_CERT), Duration::from_secs(30), refused);
    assert!(
        refused(&run),
        "MUTUAL without a client cert: {}",
        run.both()
    );
    let run = mesh.until(&env(CURL_CERT), Duration::from_secs(10), teapot);
    assert!(teapot(&run), "MUTUAL with the client cert: {}", run.both());

    // Troubleshooting, as the seed lists it.
    let pod = gateway_pod(&mesh);
    let ls = mesh.ok("kubectl exec -it -n istio-system $(kubectl -n istio-system get pods -l istio=ingressgateway -o jsonpath='{.items[0].metadata.name}') -- ls -al /etc/istio/ingressgateway-certs");
    assert!(ls.contains("tls.crt") && ls.contains("tls.key"), "{ls}");
    let subject = mesh.ok("kubectl exec -i -n istio-system $(kubectl get pod -l istio=ingressgateway -n istio-system -o jsonpath='{.items[0].metadata.name}')  -- cat /etc/istio/ingressgateway-certs/tls.crt | openssl x509 -text -noout | grep 'Subject:'");
    assert!(subject.contains("CN = httpbin.example.com"), "{subject}");
    let ca = mesh.ok("kubectl exec -it -n istio-system $(kubectl -n istio-system get pods -l istio=ingressgateway -o jsonpath='{.items[0].metadata.name}') -- ls -al /etc/istio/ingressgateway-ca-certs");
    assert!(ca.contains("ca-chain.cert.pem"), "{ca}");
    let certs = mesh.ok("kubectl exec -ti $(kubectl get po -l istio=ingressgateway -n istio-system -o jsonpath={.items[0]..metadata.name}) -n istio-system -- curl -s 127.0.0.1:15000/certs");
    assert!(
        certs.contains("\"path\": \"/etc/istio/ingressgateway-certs/tls.crt\"")
            && certs.contains("days_until_expiration"),
        "{certs}"
    );
    let secrets = mesh.ok(&format!("tessera proxy-config secret {pod}.istio-system"));
    for name in [
        "file-cert:/etc/istio/ingressgateway-certs/tls.crt~/etc/istio/ingressgateway-certs/tls.key",
        "file-root:/etc/istio/ingressgateway-ca-certs/ca-chain.cert.pem",
        "default",
        "ROOTCA",
    ] {
        assert!(
            secrets
                .lines()
                .any(|l| l.starts_with(name) && l.contains("ACTIVE")),
            "{name}: {secrets}"
        );
    }
    let logs = mesh.ok("tessera logs -n istio-system -l istio=ingressgateway 2>&1 || tessera logs -n istio-system deploy/istio-ingressgateway");
    assert!(
        logs.contains("TLS handshake refused"),
        "the gateway logs the refusal: {logs}"
    );

    // 2. credentialName: one Secret with the key pair and the client CA.
    mesh.ok(&env("kubectl create -n istio-system secret generic httpbin-credential --from-file=tls.key=3_application/private/httpbin.example.com.key.pem --from-file=tls.crt=3_application/certs/httpbin.example.com.cert.pem --from-file=ca.crt=2_intermediate/certs/ca-chain.cert.pem"));
    mesh.ok(&format!(
        "cat <<EOF | kubectl apply -f -\n{}EOF",
        GATEWAY_CREDENTIAL.replace("MODE", "MUTUAL")
    ));
    let run = mesh.until(&env(CURL_NO_CERT), Duration::from_secs(30), |r| {
        refused(r)
            && mesh
                .sh(&format!("tessera proxy-config secret {pod}.istio-system"))
                .stdout
                .contains("kubernetes://httpbin-credential-cacert")
    });
    assert!(
        refused(&run),
        "credentialName MUTUAL without a client cert: {}",
        run.both()
    );
    let run = mesh.until(&env(CURL_CERT), Duration::from_secs(10), teapot);
    assert!(
        teapot(&run),
        "credentialName MUTUAL with the client cert: {}",
        run.both()
    );
    let miss = mesh.sh(&env(&CURL_CERT
        .replace("/status/418", "/headers")
        .replace("curl ", "curl -sS -o /dev/null -w '%{http_code}' ")));
    assert_eq!(miss.stdout, "404", "a route miss: {}", miss.both());

    // Rotation: a new server certificate from a new CA, no restart.
    mesh.ok(&format!(
        "cat <<EOF | kubectl apply -f -\n{}EOF",
        GATEWAY_CREDENTIAL.replace("MODE", "SIMPLE")
    ));
    mesh.ok("mkdir -p \"$SCRATCH/new\" && cd \"$SCRATCH/new\" && ../mtls-go-example/generate.sh httpbin.example.com");
    mesh.ok("cd \"$SCRATCH/new\" && tessera -n istio-system delete secret httpbin-credential && kubectl create -n istio-system secret tls httpbin-credential --key 3_application/private/httpbin.example.com.key.pem --cert 3_application/certs/httpbin.example.com.cert.pem");
    let new_ca = CURL_SIMPLE.replace("--cacert 2_intermediate", "--cacert ../new/2_intermediate");
    let run = mesh.until(&env(&new_ca), Duration::from_secs(30), teapot);
    assert!(
        teapot(&run),
        "after the Secret changed, with the new CA: {}",
        run.both()
    );
    let old = mesh.sh(&env(CURL_SIMPLE));
    assert_eq!(
        old.code,
        60,
        "the old CA no longer verifies the gateway: {}",
        old.both()
    );

    // Cleanup, as the seed does it.
    mesh.ok("kubectl delete gateway httpbin-gateway");
    mesh.ok("kubectl delete virtualservice httpbin");
    mesh.ok("kubectl delete --ignore-not-found=true -n istio-system secret istio-ingressgateway-certs istio-ingressgateway-ca-certs");
    mesh.ok("kubectl delete --ignore-not-found=true -f samples/httpbin/httpbin.yaml");
}
