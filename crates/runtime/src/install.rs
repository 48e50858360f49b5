//! What the installer puts in the mesh besides the control plane: the ingress gateway
//! (`istio-ingressgateway` in the root namespace, as Istio's default profile), with the
//! legacy certificate mounts seed 004 relies on (`istio-ingressgateway-certs` and
//! `-ca-certs`, optional, at `/etc/istio/ingressgateway-*`).

use tessera_control::Op;

/// The gateway's manifests for root namespace `ns`.
pub fn ingress_gateway_yaml(ns: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: istio-ingressgateway-service-account
  namespace: {ns}
---
apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: {ns}
  labels: {{app: istio-ingressgateway, istio: ingressgateway}}
spec:
  type: LoadBalancer
  selector: {{app: istio-ingressgateway, istio: ingressgateway}}
  ports:
  - {{name: http2, port: 80, targetPort: 8080}}
  - {{name: https, port: 443, targetPort: 8443}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: istio-ingressgateway
  namespace: {ns}
  labels: {{app: istio-ingressgateway, istio: ingressgateway}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: istio-ingressgateway, istio: ingressgateway}}
  template:
    metadata:
      labels: {{app: istio-ingressgateway, istio: ingressgateway}}
      annotations: {{sidecar.istio.io/inject: "false"}}
    spec:
      serviceAccountName: istio-ingressgateway-service-account
      containers:
      - name: istio-proxy
        image: docker.io/istio/proxyv2
        args: [proxy, router]
        ports:
        - {{name: http2, containerPort: 8080}}
        - {{name: https, containerPort: 8443}}
        volumeMounts:
        - {{name: ingressgateway-certs, mountPath: /etc/istio/ingressgateway-certs, readOnly: true}}
        - {{name: ingressgateway-ca-certs, mountPath: /etc/istio/ingressgateway-ca-certs, readOnly: true}}
      volumes:
      - name: ingressgateway-certs
        secret: {{secretName: istio-ingressgateway-certs, optional: true}}
      - name: ingressgateway-ca-certs
        secret: {{secretName: istio-ingressgateway-ca-certs, optional: true}}
"#
    )
}

/// The operations that install the gateway (apply: unchanged objects stay unchanged).
pub fn ingress_gateway_ops(ns: &str) -> Vec<Op> {
    let report = tessera_model::load_str(
        std::path::Path::new("installer: istio-ingressgateway"),
        &ingress_gateway_yaml(ns),
        &tessera_model::LoadOptions::default(),
    );
    debug_assert!(!report.has_errors(), "{:?}", report.problems);
    report
        .documents
        .into_iter()
        .map(|d| Op::Apply {
            origin: "installer".into(),
            resource: d.resource,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_gateway_manifests_load() {
        let report = tessera_model::load_str(
            std::path::Path::new("gw.yaml"),
            &super::ingress_gateway_yaml("istio-system"),
            &tessera_model::LoadOptions::default(),
        );
        assert!(!report.has_errors(), "{:?}", report.problems);
        assert_eq!(report.documents.len(), 3);
    }
}
