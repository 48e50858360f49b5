//! Seeds 000 and 001 ("Mutual TLS over HTTPS", two translations of one task): the
//! commands, `kubectl` lines as they are (the machine's kubectl) and `tessera` for
//! `istioctl`, and what they print. Files the seed
//! writes to /tmp go to `$SCRATCH` so that suites can run side by side.

pub const CERT_AND_SECRET: &str = r#"set -e
openssl req -x509 -nodes -days 365 -newkey rsa:2048 -keyout $SCRATCH/nginx.key -out $SCRATCH/nginx.crt -subj "/CN=my-nginx/O=my-nginx"
kubectl create secret tls nginxsecret --key $SCRATCH/nginx.key --cert $SCRATCH/nginx.crt
"#;

pub const CONFIGMAP: &str =
    "kubectl create configmap nginxconfigmap --from-file=samples/https/default.conf";

pub const NGINX_WITHOUT_SIDECAR: &str = "kubectl apply -f samples/https/nginx-app.yaml";

pub const SLEEP_WITH_SIDECAR: &str =
    "kubectl apply -f <(tessera kube-inject -f samples/sleep/sleep.yaml)";

pub const GET_POD: &str = "kubectl get pod";

/// "SSH into the istio-proxy container of the sleep pod", then `curl https://my-nginx -k`
/// typed into its shell (here: given on stdin, so kubectl runs it without a TTY). Today's
/// kubectl wants `--` before the command, which the seed's older kubectl did not.
pub const SHELL_IN_PROXY: &str = r#"echo 'curl https://my-nginx -k' | kubectl exec -it $(kubectl get pod -l app=sleep -o jsonpath={.items..metadata.name}) -c istio-proxy -- /bin/bash"#;

pub const CURL_FROM_PROXY: &str = r#"kubectl exec $(kubectl get pod -l app=sleep -o jsonpath={.items..metadata.name}) -c istio-proxy -- curl https://my-nginx -k"#;

pub const CURL_FROM_SLEEP: &str = r#"kubectl exec $(kubectl get pod -l app=sleep -o jsonpath={.items..metadata.name}) -c sleep -- curl https://my-nginx -k"#;

/// The line of nginx's page the seed shows.
pub const WELCOME: &str = "<h1>Welcome to nginx!</h1>";

pub const REDEPLOY_NGINX_WITH_SIDECAR: &str = r#"set -e
kubectl delete -f samples/https/nginx-app.yaml
kubectl apply -f <(tessera kube-inject -f samples/https/nginx-app.yaml)
"#;

/// Seed 000: `kubectl delete -f install/kubernetes/istio-demo.yaml`, then `helm template
/// ... --set global.mtls.enabled=true | kubectl apply -f -`. What that installer added
/// for mTLS is the mesh-wide `MeshPolicy default` with `peers: [{mtls: {}}]` (STRICT);
/// on a running mesh the equivalent is applying that policy.
pub const MTLS_ON_MESHPOLICY: &str = r#"cat <<EOF | kubectl apply -f -
apiVersion: "authentication.istio.io/v1alpha1"
kind: "MeshPolicy"
metadata:
  name: "default"
spec:
  peers:
  - mtls: {}
EOF"#;

/// Seed 001: `istioctl manifest apply --set profile=demo,...,values.global.mtls.enabled=true`;
/// the same mesh-wide STRICT in today's API: a PeerAuthentication in the root namespace.
pub const MTLS_ON_PEERAUTHENTICATION: &str = r#"set -e
kubectl delete meshpolicy default
cat <<EOF | kubectl apply -f -
apiVersion: "security.istio.io/v1beta1"
kind: "PeerAuthentication"
metadata:
  name: "default"
  namespace: "istio-system"
spec:
  mtls:
    mode: STRICT
EOF"#;

pub const GET_CONTROL_PLANE_PODS: &str = "kubectl get pod -n istio-system";

pub const REDEPLOY_BOTH: &str = r#"set -e
kubectl delete -f <(tessera kube-inject -f samples/sleep/sleep.yaml)
kubectl apply -f <(tessera kube-inject -f samples/sleep/sleep.yaml)
kubectl delete -f <(tessera kube-inject -f samples/https/nginx-app.yaml)
kubectl apply -f <(tessera kube-inject -f samples/https/nginx-app.yaml)
"#;

pub const CLEANUP: &str = r#"set -e
kubectl delete -f samples/sleep/sleep.yaml
kubectl delete -f samples/https/nginx-app.yaml
kubectl delete configmap nginxconfigmap
kubectl delete secret nginxsecret
"#;
