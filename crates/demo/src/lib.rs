//! `tessera demo`: a seed task's topology set up on a running mesh (`tessera up`), and the
//! seed's verification output printed from real requests made with curl inside the pods.
//!
//! - [`auto_mtls`] (seed 002): namespaces `full`, `partial`, `legacy`; the seed's matrix
//!   after each step (PERMISSIVE, ten requests to the half-migrated service, STRICT,
//!   DISABLE, a DestinationRule ISTIO_MUTUAL override).
//! - [`https`] (seeds 000/001): nginx serving HTTPS with its own certificate, without
//!   and with a sidecar, then with mesh-wide STRICT; curl from the app container and
//!   from `istio-proxy`.
//!
//! The output is text lines handed to a callback; the CLI prints them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_control::api::client::ApiClient;
use tessera_control::api::{ApplyRequest, DeleteRequest, Document, GetRequest, Target};
use tessera_control::push::SyncState;
use tessera_model::names::PROXY_CONTAINER;

use tessera_control::inject::kube_inject_yaml;

const HTTPBIN: &str = include_str!("../../../samples/httpbin/httpbin.yaml");
const SLEEP: &str = include_str!("../../../samples/sleep/sleep.yaml");
const NGINX_APP: &str = include_str!("../../../samples/https/nginx-app.yaml");
const NGINX_CONF: &str = include_str!("../../../samples/https/default.conf");

/// The seed's extra deployment in `partial`: httpbin without a sidecar.
const HTTPBIN_NOSIDECAR: &str = include_str!("../../../samples/httpbin/httpbin-nosidecar.yaml");

/// The seed's policy steps in `full` (the compiler's golden tests apply the same files).
const LEGACY_STRICT: &str = include_str!("../../../samples/seed-002/policy-httpbin-strict.yaml");
const LEGACY_PLAINTEXT: &str =
    include_str!("../../../samples/seed-002/policy-httpbin-plaintext.yaml");
const BETA_STRICT: &str =
    include_str!("../../../samples/seed-002/peerauthentication-httpbin-strict.yaml");
const BETA_PLAINTEXT: &str =
    include_str!("../../../samples/seed-002/peerauthentication-httpbin-disable.yaml");
const DR_ISTIO_MUTUAL: &str =
    include_str!("../../../samples/seed-002/destinationrule-httpbin-full-mtls.yaml");

/// Which API the policy steps use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyApi {
    /// `authentication.istio.io/v1alpha1` Policy, as the seed has it.
    V1alpha1,
    /// `security.istio.io/v1beta1` PeerAuthentication, today's API.
    V1beta1,
}

impl PolicyApi {
    /// The seed's manifests (shared with the compiler's golden tests).
    fn policy(self, strict: bool) -> String {
        match (self, strict) {
            (PolicyApi::V1alpha1, true) => LEGACY_STRICT,
            (PolicyApi::V1alpha1, false) => LEGACY_PLAINTEXT,
            (PolicyApi::V1beta1, true) => BETA_STRICT,
            (PolicyApi::V1beta1, false) => BETA_PLAINTEXT,
        }
        .into()
    }

    fn describe(self, strict: bool) -> &'static str {
        match (self, strict) {
            (PolicyApi::V1alpha1, true) => "Policy full/httpbin with peers: [mtls: {}]",
            (PolicyApi::V1alpha1, false) => "Policy full/httpbin without peers",
            (PolicyApi::V1beta1, true) => "PeerAuthentication full/httpbin mode STRICT",
            (PolicyApi::V1beta1, false) => "PeerAuthentication full/httpbin mode DISABLE",
        }
    }
}

/// What `egrep -o 'URI\=spiffe.*sa/[a-z]*'` prints for a response body: the client
/// identity httpbin echoed in `X-Forwarded-Client-Cert`, one per matching line.
pub fn identity_lines(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|line| {
            let start = line.find("URI=spiffe")?;
            let rest = &line[start..];
            // Greedy `.*sa/`: the last "sa/" of the line.
            let sa = rest.rfind("sa/")?;
            let name_len = rest[sa + 3..]
                .bytes()
                .take_while(u8::is_ascii_lowercase)
                .count();
            Some(rest[..sa + 3 + name_len].to_string())
        })
        .collect()
}

/// One request of the seed's loop, as the seed prints it: the identity line when the
/// request went over mTLS, the response code (`000` when there was none), and kubectl's
/// line for a failed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub identities: Vec<String>,
    pub code: String,
    pub exit: i32,
}

impl Probe {
    /// From curl's output with `-w "response code: %{http_code}\n"` and its exit code.
    pub fn from_curl(stdout: &str, exit: i32) -> Probe {
        let code = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("response code: "))
            .unwrap_or("000")
            .to_string();
        Probe {
            identities: identity_lines(stdout),
            code,
            exit,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        let mut out = self.identities.clone();
        out.push(format!("response code: {}", self.code));
        if self.exit != 0 {
            out.push(format!("command terminated with exit code {}", self.exit));
        }
        out
    }
}

/// A running mesh, reached through its state dir.
struct Mesh {
    state_dir: PathBuf,
    client: ApiClient,
}

impl Mesh {
    async fn apply(&self, name: &str, text: String, ns: Option<&str>) -> Result<u64, String> {
        let r = self
            .client
            .apply(&ApplyRequest {
                documents: vec![Document {
                    name: name.to_string(),
                    text,
                }],
                namespace: ns.map(str::to_string),
                create: false,
            })
            .await
            .map_err(|e| format!("apply {name}: {e}"))?;
        Ok(r.revision)
    }

    async fn delete(&self, kind: &str, name: &str, ns: Option<&str>) -> Result<(), String> {
        self.client
            .delete(&DeleteRequest {
                documents: vec![],
                namespace: ns.map(str::to_string),
                targets: vec![Target {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    namespace: ns.map(str::to_string),
                }],
                ignore_not_found: true,
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("delete {kind} {name}: {e}"))
    }

    async fn delete_yaml(&self, name: &str, text: String, ns: &str) -> Result<(), String> {
        self.client
            .delete(&DeleteRequest {
                documents: vec![Document {
                    name: name.to_string(),
                    text,
                }],
                namespace: Some(ns.to_string()),
                targets: vec![],
                ignore_not_found: true,
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("delete -f {name}: {e}"))
    }

    async fn pods(&self, ns: &str, selector: Option<&str>) -> Result<Vec<Value>, String> {
        self.client
            .get(&GetRequest {
                kind: "pods".into(),
                name: None,
                namespace: Some(ns.to_string()),
                all_namespaces: false,
                selector: selector.map(str::to_string),
            })
            .await
            .map(|r| r.items)
            .map_err(|e| format!("get pods -n {ns}: {e}"))
    }

    async fn exists(&self, kind: &str, name: &str, ns: &str) -> Result<bool, String> {
        match self
            .client
            .get(&GetRequest {
                kind: kind.into(),
                name: Some(name.into()),
                namespace: Some(ns.to_string()),
                all_namespaces: false,
                selector: None,
            })
            .await
        {
            Ok(r) => Ok(!r.items.is_empty()),
            Err(tessera_control::api::client::ClientError::Refused { status: 404, .. }) => {
                Ok(false)
            }
            Err(e) => Err(format!("get {kind} {name}: {e}")),
        }
    }

    /// Waits until `ns` has exactly `count` pods, all Ready, none of them in `replaced`;
    /// their names.
    async fn wait_pods(
        &self,
        ns: &str,
        count: usize,
        replaced: &[String],
    ) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let pods = self.pods(ns, None).await?;
            let names: Vec<String> = pods
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            let ready = pods
                .iter()
                .filter(|p| {
                    serde_json::from_value::<tessera_model::kube::PodStatus>(p["status"].clone())
                        .ok()
                        .and_then(|s| s.is_ready())
                        == Some(true)
                })
                .count();
            if pods.len() == count && ready == count && !names.iter().any(|n| replaced.contains(n))
            {
                return Ok(names);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{ns}: {ready} of {} pods ready after 120 s (want {count}); see `tessera get pods -n {ns}`",
                    pods.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until every proxy runs what store revision `revision` implies.
    async fn wait_synced(&self, revision: u64) -> Result<(), String> {
        // Everything stored by now counts: pods report Ready (and their addresses) in
        // revisions after the apply that created them, and a client's sidecar only
        // reaches a new endpoint once it has evaluated those.
        let stored = self
            .client
            .health()
            .await
            .map_err(|e| format!("health: {e}"))?
            .revision;
        let revision = revision.max(stored);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self
                .client
                .proxies()
                .await
                .map_err(|e| format!("proxy-status: {e}"))?;
            let behind: Vec<String> = rows
                .iter()
                .filter(|r| r.status.connected)
                .filter(|r| r.sync != SyncState::Synced || r.status.evaluated < revision)
                .map(|r| r.status.node_id.clone())
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "proxies not synced after 30 s: {} (see `tessera proxy-status`)",
                    behind.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a command in a pod's container: (exit code, stdout, stderr).
    fn run_in(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        argv: &[&str],
    ) -> Result<(i32, String, String), String> {
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        let mut pc =
            tessera_runtime::exec::command(&self.state_dir, ns, pod, Some(container), &argv)
                .map_err(|e| e.to_string())?;
        let out = pc
            .cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("exec in {ns}/{pod}: {e}"))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    async fn first_pod(&self, ns: &str, selector: &str) -> Result<String, String> {
        self.pods(ns, Some(selector))
            .await?
            .iter()
            .find_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .ok_or_else(|| format!("no pod with {selector} in {ns}"))
    }
}

fn injected(name: &str, text: &str) -> Result<String, String> {
    let report = tessera_model::load_str(Path::new(name), text, &Default::default());
    if report.has_errors() {
        let problems: Vec<String> = report.errors().map(|p| p.to_string()).collect();
        return Err(problems.join("\n"));
    }
    kube_inject_yaml(report.documents)
}

const NAMESPACES: [&str; 3] = ["full", "partial", "legacy"];

/// The seed's loop: each sleep to each httpbin.
async fn matrix(mesh: &Mesh, say: &mut dyn FnMut(&str)) -> Result<(), String> {
    say("$ for from in full legacy; do for to in full partial legacy; do tessera exec <sleep pod> -c sleep -n $from -- curl http://httpbin.$to:8000/headers -s -w \"response code: %{http_code}\\n\" | egrep -o 'URI\\=spiffe.*sa/[a-z]*|response.*$'; done; done");
    for from in ["full", "legacy"] {
        let pod = mesh.first_pod(from, "app=sleep").await?;
        for to in NAMESPACES {
            let url = format!("http://httpbin.{to}:8000/headers");
            let (exit, out, _) = mesh.run_in(
                from,
                &pod,
                "sleep",
                &["curl", &url, "-s", "-w", "response code: %{http_code}\n"],
            )?;
            say(&format!("sleep.{from} to httpbin.{to}"));
            for l in Probe::from_curl(&out, exit).lines() {
                say(&l);
            }
            say("");
        }
    }
    Ok(())
}

/// Seed 002 on the mesh at `state_dir`.
pub async fn auto_mtls(
    state_dir: &Path,
    api: PolicyApi,
    say: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let mesh = Mesh {
        state_dir: state_dir.to_path_buf(),
        client: ApiClient::new(state_dir),
    };
    say("Automatic mutual TLS (seed 002): namespaces full (sidecars), partial (httpbin with and without a sidecar), legacy (no sidecars)");
    for ns in NAMESPACES {
        mesh.apply(
            "namespace",
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
            None,
        )
        .await?;
    }
    // A previous run's policies go first, so the matrix starts from PERMISSIVE.
    for kind in ["policies.authentication.istio.io", "peerauthentications"] {
        mesh.delete(kind, "httpbin", Some("full")).await?;
    }
    mesh.delete("destinationrules", "httpbin-full-mtls", Some("full"))
        .await?;
    let httpbin_injected = injected("samples/httpbin/httpbin.yaml", HTTPBIN)?;
    let sleep_injected = injected("samples/sleep/sleep.yaml", SLEEP)?;
    mesh.apply("httpbin", httpbin_injected.clone(), Some("full"))
        .await?;
    mesh.apply("sleep", sleep_injected, Some("full")).await?;
    mesh.apply("httpbin", httpbin_injected, Some("partial"))
        .await?;
    mesh.apply(
        "httpbin-nosidecar",
        HTTPBIN_NOSIDECAR.into(),
        Some("partial"),
    )
    .await?;
    mesh.apply("httpbin", HTTPBIN.into(), Some("legacy"))
        .await?;
    let revision = mesh.apply("sleep", SLEEP.into(), Some("legacy")).await?;
    for ns in NAMESPACES {
        let names = mesh.wait_pods(ns, 2, &[]).await?;
        say(&format!("  {ns}: {} ready", names.join(", ")));
    }
    mesh.wait_synced(revision).await?;

    say("");
    say("== 1. PERMISSIVE (no policy): sidecars send mTLS to sidecars and plaintext to the rest; the SPIFFE URI shows mTLS");
    matrix(&mesh, say).await?;

    say("== 2. Sidecar migration: 10 requests from sleep.full to httpbin.partial reach both endpoints");
    let pod = mesh.first_pod("full", "app=sleep").await?;
    for _ in 0..10 {
        let (exit, out, _) = mesh.run_in(
            "full",
            &pod,
            "sleep",
            &[
                "curl",
                "http://httpbin.partial:8000/headers",
                "-s",
                "-w",
                "response code: %{http_code}\n",
            ],
        )?;
        for l in Probe::from_curl(&out, exit).lines() {
            say(&l);
        }
        say("");
    }

    say(&format!(
        "== 3. STRICT on httpbin.full ({}): sleep.legacy is reset (curl exit 56), sleep.full upgrades automatically",
        api.describe(true)
    ));
    let revision = mesh.apply("policy", api.policy(true), Some("full")).await?;
    mesh.wait_synced(revision).await?;
    matrix(&mesh, say).await?;

    say(&format!(
        "== 4. Plaintext on httpbin.full ({}): clients switch to plaintext automatically",
        api.describe(false)
    ));
    let revision = mesh
        .apply("policy", api.policy(false), Some("full"))
        .await?;
    mesh.wait_synced(revision).await?;
    matrix(&mesh, say).await?;

    say("== 5. DestinationRule full/httpbin-full-mtls with tls ISTIO_MUTUAL overrides auto mTLS: sleep.full gets 503 from a plaintext server");
    let revision = mesh
        .apply("destinationrule", DR_ISTIO_MUTUAL.into(), Some("full"))
        .await?;
    mesh.wait_synced(revision).await?;
    matrix(&mesh, say).await?;
    let (_, body, _) = mesh.run_in(
        "full",
        &pod,
        "sleep",
        &["curl", "-s", "http://httpbin.full:8000/headers"],
    )?;
    say("Why (the 503's body, from sleep.full's sidecar):");
    say(body.trim_end());
    say("");
    say("Clean up: tessera delete ns full partial legacy");
    Ok(())
}

/// Seeds 000/001 on the mesh at `state_dir`, in namespace `ns`.
pub async fn https(state_dir: &Path, ns: &str, say: &mut dyn FnMut(&str)) -> Result<(), String> {
    let mesh = Mesh {
        state_dir: state_dir.to_path_buf(),
        client: ApiClient::new(state_dir),
    };
    if mesh
        .exists("peerauthentications", "default", "istio-system")
        .await?
    {
        return Err("the mesh has PeerAuthentication istio-system/default; this demo sets the mesh-wide mode itself and would replace it (run it on a fresh mesh)".into());
    }
    say(&format!(
        "Mutual TLS over HTTPS (seeds 000/001): nginx serving HTTPS with its own certificate, namespace {ns}"
    ));
    nginx_secret_and_config(&mesh, ns, say).await?;
    say("secret/nginxsecret, configmap/nginxconfigmap");

    let curl = |mesh: &Mesh, pod: &str, container: &str, say: &mut dyn FnMut(&str)| {
        curl_nginx(mesh, ns, pod, container, say)
    };

    // 1. Without a sidecar.
    mesh.delete_yaml("nginx-app.yaml", NGINX_APP.into(), ns)
        .await?;
    mesh.apply("nginx-app.yaml", NGINX_APP.into(), Some(ns))
        .await?;
    let revision = mesh
        .apply(
            "sleep.yaml",
            injected("samples/sleep/sleep.yaml", SLEEP)?,
            Some(ns),
        )
        .await?;
    let pods = mesh.wait_pods(ns, 2, &[]).await?;
    mesh.wait_synced(revision).await?;
    let sleep = mesh.first_pod(ns, "app=sleep").await?;
    say("");
    say("== 1. nginx without a sidecar: the page from the app container and from istio-proxy");
    curl(&mesh, &sleep, "sleep", say)?;
    curl(&mesh, &sleep, PROXY_CONTAINER, say)?;

    // 2. With a sidecar, mTLS off.
    say("== 2. nginx with a sidecar, mutual TLS off (PERMISSIVE): the sidecars pass nginx's own TLS through");
    let injected_nginx = injected("samples/https/nginx-app.yaml", NGINX_APP)?;
    mesh.delete_yaml("nginx-app.yaml", NGINX_APP.into(), ns)
        .await?;
    let revision = mesh
        .apply("nginx-app.yaml", injected_nginx, Some(ns))
        .await?;
    let old_nginx: Vec<String> = pods
        .into_iter()
        .filter(|p| p.starts_with("my-nginx-"))
        .collect();
    mesh.wait_pods(ns, 2, &old_nginx).await?;
    mesh.wait_synced(revision).await?;
    curl(&mesh, &sleep, "sleep", say)?;
    curl(&mesh, &sleep, PROXY_CONTAINER, say)?;

    // 3. Mesh-wide STRICT.
    say("== 3. Mesh-wide mutual TLS (PeerAuthentication istio-system/default mode STRICT, what `--set values.global.mtls.enabled=true` installed): the app container still gets the page over sidecar-to-sidecar mTLS; istio-proxy's own curl has no client certificate and fails");
    let strict = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n";
    mesh.apply(
        "namespace",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: istio-system\n".into(),
        None,
    )
    .await?;
    let revision = mesh.apply("mesh-wide-strict", strict.into(), None).await?;
    mesh.wait_synced(revision).await?;
    let result =
        curl(&mesh, &sleep, "sleep", say).and_then(|_| curl(&mesh, &sleep, PROXY_CONTAINER, say));
    // The mesh-wide mode was the demo's; put it back.
    mesh.delete("peerauthentications", "default", Some("istio-system"))
        .await?;
    result?;
    say("(mesh-wide STRICT removed again)");
    say(&format!(
        "Clean up: tessera -n {ns} delete -f samples/sleep/sleep.yaml -f samples/https/nginx-app.yaml; tessera -n {ns} delete configmap nginxconfigmap; tessera -n {ns} delete secret nginxsecret"
    ));
    Ok(())
}

/// Seeds 000/001's self-signed certificate for my-nginx (made with openssl) as the
/// `nginxsecret` Secret, and nginx's configuration as `nginxconfigmap`.
async fn nginx_secret_and_config(
    mesh: &Mesh,
    ns: &str,
    say: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("tessera-demo-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (key, crt) = (dir.join("nginx.key"), dir.join("nginx.crt"));
    say("$ openssl req -x509 -nodes -days 365 -newkey rsa:2048 -keyout nginx.key -out nginx.crt -subj \"/CN=my-nginx/O=my-nginx\"");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-nodes", "-days", "365", "-newkey", "rsa:2048",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args(["-subj", "/CN=my-nginx/O=my-nginx"])
        .output()
        .map_err(|e| format!("openssl: {e} (install openssl)"))?;
    if !made.status.success() {
        return Err(format!(
            "openssl failed: {}",
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let b64 = |b: Vec<u8>| tessera_model::kube::encode_base64(&b);
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: nginxsecret\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(read(&crt)?),
        b64(read(&key)?)
    );
    let _ = std::fs::remove_dir_all(&dir);
    mesh.apply("nginxsecret", secret, Some(ns)).await?;
    let conf = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "nginxconfigmap"},
        "data": {"default.conf": NGINX_CONF},
    });
    mesh.apply("nginxconfigmap", conf.to_string(), Some(ns))
        .await?;
    Ok(())
}

/// `curl https://my-nginx -k` from a container of the sleep pod, printed as the seed shows
/// it: nginx's `<h1>` line, or curl's error and exit code.
fn curl_nginx(
    mesh: &Mesh,
    ns: &str,
    pod: &str,
    container: &str,
    say: &mut dyn FnMut(&str),
) -> Result<(), String> {
    say(&format!(
        "$ tessera exec {pod} -c {container} -- curl https://my-nginx -k"
    ));
    let (exit, out, err) = mesh.run_in(
        ns,
        pod,
        container,
        &["curl", "-sS", "https://my-nginx", "-k"],
    )?;
    match out.lines().find(|l| l.contains("<h1>")) {
        Some(h1) => {
            say("...");
            say(h1.trim());
            say("...");
        }
        None => {
            for l in err.lines() {
                say(l);
            }
        }
    }
    if exit != 0 {
        say(&format!("command terminated with exit code {exit}"));
    }
    say("");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_lines_are_what_the_seeds_egrep_prints() {
        let body = r#"{
  "headers": {
    "Accept": "*/*",
    "X-Forwarded-Client-Cert": "By=spiffe://cluster.local/ns/full/sa/httpbin;Hash=9b7e;Subject=\"\";URI=spiffe://cluster.local/ns/full/sa/sleep"
  }
}
response code: 200
"#;
        assert_eq!(
            identity_lines(body),
            ["URI=spiffe://cluster.local/ns/full/sa/sleep"]
        );
        assert!(identity_lines("{\"headers\": {}}\nresponse code: 200\n").is_empty());
    }

    #[test]
    fn probes_print_as_the_seed_does() {
        let ok = Probe::from_curl(
            "\"URI=spiffe://cluster.local/ns/full/sa/sleep\"\nresponse code: 200\n",
            0,
        );
        assert_eq!(
            ok.lines(),
            [
                "URI=spiffe://cluster.local/ns/full/sa/sleep",
                "response code: 200"
            ]
        );
        let reset = Probe::from_curl("response code: 000\n", 56);
        assert_eq!(
            reset.lines(),
            ["response code: 000", "command terminated with exit code 56"]
        );
        // No trailer at all (curl could not even start): no response.
        assert_eq!(Probe::from_curl("", 7).code, "000");
    }
}
