//! Seed 002 ("Automatic mutual TLS"): its commands, the `kubectl` lines verbatim (the
//! machine's kubectl against the mesh's Kubernetes API) and `tessera` for `istioctl`, and
//! the outputs it prints. Changed from the seed only where the command
//! must be; `echo -n "\n"` is kept (the harness's bash expands it, as the seed's shell did).

/// `istioctl manifest apply --set profile=demo --set values.global.mtls.auto=true
/// --set values.global.mtls.enabled=false` → `tessera up --set ...`.
pub const INSTALL: &[&str] = &[
    "profile=demo",
    "values.global.mtls.auto=true",
    "values.global.mtls.enabled=false",
];

pub const NAMESPACES: [&str; 3] = ["full", "partial", "legacy"];

/// The setup section, in the seed's order. The last snippet repeats the sleep
/// deployments as the seed does ("next, we deploy two sleep workloads"); apply is
/// idempotent.
pub const SETUP: [&str; 4] = [
    r#"set -e
kubectl create ns full
kubectl apply -f <(tessera kube-inject -f samples/httpbin/httpbin.yaml) -n full
kubectl apply -f <(tessera kube-inject -f samples/sleep/sleep.yaml) -n full
"#,
    r#"set -e
kubectl create ns partial
kubectl apply -f <(tessera kube-inject -f samples/httpbin/httpbin.yaml) -n partial
cat <<EOF | kubectl apply -n partial -f -
apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin-nosidecar
spec:
  replicas: 1
  selector:
    matchLabels:
      app: httpbin
  template:
    metadata:
      labels:
        app: httpbin
        version: nosidecar
    spec:
      containers:
      - image: docker.io/kennethreitz/httpbin
        imagePullPolicy: IfNotPresent
        name: httpbin
        ports:
        - containerPort: 80
EOF
"#,
    r#"set -e
kubectl create ns legacy
kubectl apply -f samples/httpbin/httpbin.yaml -n legacy
kubectl apply -f samples/sleep/sleep.yaml -n legacy
"#,
    r#"set -e
kubectl apply -f <(tessera kube-inject -f samples/sleep/sleep.yaml) -n full
kubectl apply -f samples/sleep/sleep.yaml -n legacy
"#,
];

pub const GET_PODS: &str = r#"set -e
kubectl get pods -n full
kubectl get pods -n partial
kubectl get pods -n legacy
"#;

pub const ONE_CHECK: &str = r#"kubectl exec $(kubectl get pod -l app=sleep -n full -o jsonpath={.items..metadata.name}) -c sleep -n full -- curl http://httpbin.full:8000/headers  -s  -w "response %{http_code}\n" | egrep -o 'URI\=spiffe.*sa/[a-z]*|response.*$'"#;

pub const SEED_ONE_CHECK: &str = "URI=spiffe://cluster.local/ns/full/sa/sleep\nresponse 200\n";

/// The verification loop the seed runs after each step.
pub const MATRIX: &str = r#"for from in "full" "legacy"; do for to in "full" "partial" "legacy"; do echo "sleep.${from} to httpbin.${to}";kubectl exec $(kubectl get pod -l app=sleep -n ${from} -o jsonpath={.items..metadata.name}) -c sleep -n ${from} -- curl http://httpbin.${to}:8000/headers  -s  -w "response code: %{http_code}\n" | egrep -o 'URI\=spiffe.*sa/[a-z]*|response.*$';  echo -n "\n"; done; done"#;

/// "Working with sidecar migration": ten requests to httpbin.partial.
pub const TEN_TO_PARTIAL: &str = r#"for i in `seq 1 10`; do kubectl exec $(kubectl get pod -l app=sleep -n full -o jsonpath={.items..metadata.name}) -c sleep -nfull  -- curl http://httpbin.partial:8000/headers  -s  -w "response code: %{http_code}\n" | egrep -o 'URI\=spiffe.*sa/[a-z]*|response.*$';  echo -n "\n"; done"#;

/// The one step whose identity line depends on which of two endpoints answered (the
/// seed's transcript shows one draw).
pub const LOAD_BALANCED: &[&str] = &["sleep.full to httpbin.partial"];

pub const SEED_PERMISSIVE: &str = "\
sleep.full to httpbin.full
URI=spiffe://cluster.local/ns/full/sa/sleep
response code: 200

sleep.full to httpbin.partial
URI=spiffe://cluster.local/ns/full/sa/sleep
response code: 200

sleep.full to httpbin.legacy
response code: 200

sleep.legacy to httpbin.full
response code: 200

sleep.legacy to httpbin.partial
response code: 200

sleep.legacy to httpbin.legacy
response code: 200
";

pub const SEED_STRICT: &str = "\
sleep.full to httpbin.full
URI=spiffe://cluster.local/ns/full/sa/sleep
response code: 200

sleep.full to httpbin.partial
URI=spiffe://cluster.local/ns/full/sa/sleep
response code: 200

sleep.full to httpbin.legacy
response code: 200

sleep.legacy to httpbin.full
response code: 000
command terminated with exit code 56

sleep.legacy to httpbin.partial
response code: 200

sleep.legacy to httpbin.legacy
response code: 200
";

pub const SEED_PLAINTEXT: &str = "\
sleep.full to httpbin.full
response code: 200

sleep.full to httpbin.partial
response code: 200

sleep.full to httpbin.legacy
response code: 200

sleep.legacy to httpbin.full
response code: 200

sleep.legacy to httpbin.partial
response code: 200

sleep.legacy to httpbin.legacy
response code: 200
";

pub const SEED_DR_OVERRIDE: &str = "\
sleep.full to httpbin.full
response code: 503

sleep.full to httpbin.partial
URI=spiffe://cluster.local/ns/full/sa/sleep
response code: 200

sleep.full to httpbin.legacy
response code: 200

sleep.legacy to httpbin.full
response code: 200

sleep.legacy to httpbin.partial
response code: 200

sleep.legacy to httpbin.legacy
response code: 200
";

pub const DR_ISTIO_MUTUAL: &str = r#"cat <<EOF | kubectl apply -n full -f -
apiVersion: "networking.istio.io/v1alpha3"
kind: "DestinationRule"
metadata:
  name: "httpbin-full-mtls"
spec:
  host: httpbin.full.svc.cluster.local
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
EOF"#;

pub const CLEANUP: &str = "kubectl delete ns full partial legacy";

/// The seed's two policy steps in one API generation: lock `httpbin.full` down to
/// STRICT, then switch it to plaintext.
pub struct PolicySteps {
    pub strict: &'static str,
    pub plaintext: &'static str,
}

/// As the seed has them (`authentication.istio.io/v1alpha1` Policy).
pub const ALPHA: PolicySteps = PolicySteps {
    strict: r#"cat <<EOF | kubectl apply -n full -f -
apiVersion: "authentication.istio.io/v1alpha1"
kind: "Policy"
metadata:
  name: "httpbin"
spec:
  targets:
  - name: httpbin
  peers:
  - mtls: {}
EOF"#,
    plaintext: r#"cat <<EOF | kubectl apply -n full -f -
apiVersion: "authentication.istio.io/v1alpha1"
kind: "Policy"
metadata:
  name: "httpbin"
spec:
  targets:
  - name: httpbin
EOF"#,
};

/// The same steps in today's API (`security.istio.io/v1beta1` PeerAuthentication).
pub const BETA: PolicySteps = PolicySteps {
    strict: r#"cat <<EOF | kubectl apply -n full -f -
apiVersion: "security.istio.io/v1beta1"
kind: "PeerAuthentication"
metadata:
  name: "httpbin"
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: STRICT
EOF"#,
    plaintext: r#"cat <<EOF | kubectl apply -n full -f -
apiVersion: "security.istio.io/v1beta1"
kind: "PeerAuthentication"
metadata:
  name: "httpbin"
spec:
  selector:
    matchLabels:
      app: httpbin
  mtls:
    mode: DISABLE
EOF"#,
};
