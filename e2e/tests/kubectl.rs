//! The machine's own `kubectl` against a local mesh's Kubernetes API: `tessera up` writes
//! `<state-dir>/kubeconfig` (the cluster CA and an administrator's client certificate),
//! and kubectl discovers the kinds, lists and gets objects with its own columns, follows
//! the seeds' jsonpath, and gets the API server's errors. Callers without credentials get
//! 401.

use tessera_e2e::Mesh;

/// Whitespace-separated fields of each line, without the AGE column (the two listings
/// are a moment apart).
fn fields_without_age(table: &str) -> Vec<Vec<String>> {
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let age = header.iter().position(|h| *h == "AGE");
    table
        .lines()
        .map(|l| {
            l.split_whitespace()
                .enumerate()
                .filter(|(i, _)| Some(*i) != age)
                .map(|(_, f)| f.to_string())
                .collect()
        })
        .collect()
}

#[test]
fn kubectl_reads_the_local_mesh() {
    let mesh = Mesh::up("kubectl", &[]);
    mesh.ok(
        "tessera create ns full && tessera label ns full istio-injection=enabled && \
         tessera apply -n full -f samples/sleep/sleep.yaml -f samples/httpbin/httpbin.yaml",
    );
    mesh.wait_ready("full");

    // Discovery: the server's version, and every kind with its group, short name and scope.
    let version: serde_json::Value =
        serde_json::from_str(&mesh.ok("kubectl version -o json")).expect("version json");
    assert_eq!(version["serverVersion"]["major"], "1");
    assert_eq!(version["serverVersion"]["minor"], "32");
    let resources: Vec<Vec<String>> = mesh
        .ok("kubectl api-resources --no-headers")
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    for want in [
        "pods po v1 true Pod",
        "namespaces ns v1 false Namespace",
        "deployments deploy apps/v1 true Deployment",
        "peerauthentications pa security.istio.io/v1 true PeerAuthentication",
        "policies authentication.istio.io/v1alpha1 true Policy",
        "virtualservices vs networking.istio.io/v1 true VirtualService",
    ] {
        let want: Vec<String> = want.split_whitespace().map(str::to_string).collect();
        assert!(resources.contains(&want), "{want:?} in {resources:?}");
    }

    // kubectl's table and tessera's are the same table.
    for what in ["pods", "pods -o wide", "svc", "deploy"] {
        let k = mesh.ok(&format!("kubectl -n full get {what}"));
        let t = mesh.ok(&format!("tessera -n full get {what}"));
        assert_eq!(fields_without_age(&k), fields_without_age(&t), "get {what}");
    }
    let pods = mesh.ok("kubectl -n full get pods");
    assert_eq!(pods.lines().count(), 3, "{pods}");
    assert!(
        pods.lines()
            .skip(1)
            .all(|l| l.contains(" 2/2 ") && l.contains(" Running ")),
        "{pods}"
    );
    let all = mesh.ok("kubectl get svc -A");
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(all.contains("istio-ingressgateway"), "{all}");

    // The seeds' way of naming a pod, and a label selector.
    let name = mesh.ok("kubectl get pod -l app=sleep -n full -o jsonpath={.items..metadata.name}");
    assert!(name.starts_with("sleep-"), "{name}");
    assert_eq!(
        mesh.ok(&format!(
            "kubectl -n full get pod {name} -o jsonpath='{{.kind}} {{.status.phase}}'"
        )),
        "Pod Running"
    );
    assert_eq!(
        mesh.ok("kubectl -n full get pods -l app=httpbin -o name")
            .lines()
            .count(),
        1
    );
    // Istio kinds by their group-qualified names, at any served version.
    mesh.ok("tessera apply -n full -f - <<'EOF'\n\
         apiVersion: security.istio.io/v1beta1\n\
         kind: PeerAuthentication\n\
         metadata: {name: default}\n\
         spec: {mtls: {mode: STRICT}}\n\
         EOF");
    let pa = mesh.ok("kubectl get peerauthentications.security.istio.io -A");
    assert!(pa.contains("full ") && pa.contains("STRICT"), "{pa}");
    let v1beta1 = mesh.ok(
        "kubectl get peerauthentications.v1beta1.security.istio.io -n full default -o jsonpath={.apiVersion}",
    );
    assert_eq!(v1beta1, "security.istio.io/v1beta1");

    // Errors as the API server words them.
    let missing = mesh.sh("kubectl -n full get pod nope");
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr.trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );
    let none = mesh.sh("kubectl get policies.authentication.istio.io --all-namespaces");
    assert_eq!(none.code, 0);
    assert_eq!(none.stderr.trim(), "No resources found");

    // No credentials: 401. The administrator's bearer token: the object.
    let server = mesh.ok("kubectl config view --minify -o jsonpath={.clusters[0].cluster.server}");
    let anonymous = mesh.ok(&format!(
        "curl -sk -o /dev/null -w '%{{http_code}}' {server}/api/v1/namespaces"
    ));
    assert_eq!(anonymous, "401");
    let token = std::fs::read_to_string(mesh.state_dir().join("kube/admin.token")).unwrap();
    let with_token = mesh.ok(&format!(
        "curl -sk -H 'Authorization: Bearer {}' {server}/api/v1/namespaces/full",
        token.trim()
    ));
    let ns: serde_json::Value = serde_json::from_str(&with_token).expect("namespace json");
    assert_eq!(ns["kind"], "Namespace");
    assert_eq!(ns["metadata"]["name"], "full");
}
