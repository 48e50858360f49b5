//! Service-account tokens with the machine's kubectl, as a cluster issues and checks them:
//! `kubectl create token` (the TokenRequest API) mints a token for audience istio-ca bound
//! to the sleep pod; a TokenReview (`kubectl create --raw .../tokenreviews`) names the service
//! account and the pod, which is what the control plane will trust from proxies on other
//! hosts; once the pod is deleted the same token is refused, and a token for the API
//! server's audience is not one for istio-ca.

use std::time::{Duration, Instant};

use tessera_ca::token_review::{read, ReviewError};
use tessera_e2e::Mesh;

fn review(mesh: &Mesh, token: &str) -> serde_json::Value {
    let request = tessera_ca::token_review::request(token);
    mesh.ok(&format!(
        "cat > $SCRATCH/review.json <<'EOF'\n{request}\nEOF"
    ));
    let out = mesh.ok(
        "kubectl create --raw /apis/authentication.k8s.io/v1/tokenreviews -f $SCRATCH/review.json",
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn tokens_from_kubectl_are_reviewed_as_their_pod() {
    let mesh = Mesh::up("tokens", &[]);
    mesh.ok("kubectl create ns full && kubectl apply -n full -f samples/sleep/sleep.yaml");
    mesh.wait_ready("full");
    let pod =
        mesh.ok("kubectl get pod -n full -l app=sleep -o jsonpath='{.items[0].metadata.name}'");
    let pod = pod.trim();
    let token = mesh.ok(&format!(
        "kubectl create token sleep -n full --audience istio-ca --duration 1h --bound-object-kind Pod --bound-object-name {pod}"
    ));
    let reviewed = read(&review(&mesh, token.trim())).expect("the token authenticates");
    assert_eq!(
        (
            reviewed.namespace.as_str(),
            reviewed.service_account.as_str(),
            reviewed.pod.as_str()
        ),
        ("full", "sleep", pod)
    );

    // A token for the API server's own audience is not one for the CA.
    let plain = mesh.ok("kubectl create token sleep -n full");
    assert!(
        matches!(
            read(&review(&mesh, plain.trim())),
            Err(ReviewError::NotAuthenticated(_))
        ),
        "a token without audience istio-ca"
    );

    // The pod is gone (its Deployment makes another): the bound token is refused.
    mesh.ok(&format!("kubectl delete pod -n full {pod} --wait=false"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = review(&mesh, token.trim());
        if let Err(ReviewError::NotAuthenticated(why)) = read(&r) {
            assert!(why.contains(&format!("pod \"{pod}\" not found")), "{why}");
            break;
        }
        assert!(Instant::now() < deadline, "still authenticated: {r}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // A service account that does not exist gets no token.
    let run = mesh.sh("kubectl create token ghost -n full");
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("serviceaccounts \"ghost\" not found"),
        "{}",
        run.both()
    );
}
