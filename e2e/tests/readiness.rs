//! What a user runs after an apply: `wait --for=condition=Ready pod --all`, then a request
//! from one new pod to the other. A pod is Ready when its containers are; the clients'
//! sidecars learn its address from the control plane a moment later. A client sidecar
//! that knows the service but has no endpoint for it yet holds the request (at most
//! `runtime.endpointHoldMs`, 5 s) for the push that lists one, so the request right after
//! `wait` is answered, not `503 no healthy upstream`.

use tessera_e2e::Mesh;

#[test]
fn a_request_right_after_wait_is_answered_every_time() {
    let mesh = Mesh::up("ready", &[]);
    for i in 0..20 {
        let ns = format!("ready{i}");
        // The client first, so that the server's address is the news when it is Ready.
        mesh.ok(&format!(
            "tessera create ns {ns} && tessera label ns {ns} istio-injection=enabled && \
             tessera apply -n {ns} -f samples/sleep/sleep.yaml && \
             tessera -n {ns} wait --for=condition=Ready pod --all --timeout=60s && \
             tessera apply -n {ns} -f samples/httpbin/httpbin.yaml && \
             tessera -n {ns} wait --for=condition=Ready pod -l app=httpbin --timeout=60s"
        ));
        let code = mesh.ok(&format!(
            "tessera -n {ns} exec deploy/sleep -c sleep -- curl -s -o /dev/null -w '%{{http_code}}' http://httpbin:8000/get"
        ));
        assert_eq!(code.trim(), "200", "round {i}");
        mesh.ok(&format!("tessera delete ns {ns}"));
    }
}
