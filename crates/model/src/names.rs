//! Names Istio and Kubernetes give meaning to: the sidecar's containers and uid, the labels
//! and annotations injection and auto mTLS read, the cluster domain. Every crate reads
//! them from here.

/// The sidecar container, as in Istio (the seeds exec into it by this name).
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// The init step that installs traffic capture.
pub const INIT_CONTAINER: &str = "istio-init";
/// The proxy's uid and gid: capture exempts it, so the proxy's own connections (and a
/// command exec'ed in its container) leave the pod uncaptured.
pub const PROXY_UID: u32 = 1337;

/// `istio`: the pod has a sidecar that takes mesh mTLS (auto mTLS reads it).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// `enabled` on a namespace: its pods get a sidecar.
pub const INJECTION_LABEL: &str = "istio-injection";
/// `"true"` / `"false"` on a pod: asks for or refuses the sidecar.
pub const INJECT_ANNOTATION: &str = "sidecar.istio.io/inject";
/// What injection added, on an injected pod.
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// Extra volumes for the sidecar (JSON: volume name → Volume).
pub const USER_VOLUME_ANNOTATION: &str = "sidecar.istio.io/userVolume";
/// Where the sidecar mounts them (JSON: volume name → VolumeMount).
pub const USER_VOLUME_MOUNT_ANNOTATION: &str = "sidecar.istio.io/userVolumeMount";
/// The container `kubectl exec` and `logs` pick without `-c`.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";
/// Where `kubectl apply` keeps the manifest it applied.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The cluster's DNS domain: services are `<name>.<namespace>.svc.cluster.local`.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
