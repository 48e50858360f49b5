//! `exec` and `logs`: a command inside a running pod's container (its network namespace,
//! hosts file, /tmp and volumes; as uid 1337 in `istio-proxy`, so capture lets it
//! through), and where a container's output is kept.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tessera_model::kube::PodStatus;

use crate::netns;
use crate::sandbox::{read_info, SandboxInfo};
use crate::workloads::owner_of;
use crate::{runtime_dir, RuntimeError};

/// Which pod a `POD`, `pod/NAME`, `deploy/NAME`, `deployment/NAME` or `rc/NAME` target
/// names, among the namespace's pods (as `get pods -o json` lists them). For a
/// controller: its first running pod, as kubectl picks one.
pub fn resolve_target(pods: &[Value], target: &str) -> Result<String, String> {
    let (kind, name) = match target.split_once('/') {
        None => ("pod", target),
        Some((k, n)) => (k, n),
    };
    let controller = match kind {
        "pod" | "pods" | "po" => None,
        "deploy" | "deployment" | "deployments" | "deployment.apps" => Some("Deployment"),
        "rc" | "replicationcontroller" | "replicationcontrollers" => Some("ReplicationController"),
        other => {
            return Err(format!(
                "error: cannot attach to {other}: choose a pod, deployment or replicationcontroller"
            ))
        }
    };
    let meta = |p: &Value| -> Option<tessera_model::meta::ObjectMeta> {
        serde_json::from_value(p["metadata"].clone()).ok()
    };
    match controller {
        None => pods
            .iter()
            .find(|p| p["metadata"]["name"] == name)
            .map(|_| name.to_string())
            .ok_or_else(|| format!("Error from server (NotFound): pods {name:?} not found")),
        Some(kind) => {
            let mut owned: Vec<&Value> = pods
                .iter()
                .filter(|p| {
                    meta(p)
                        .and_then(|m| owner_of(&m))
                        .is_some_and(|(k, n)| k == kind && n == name)
                })
                .collect();
            // A running pod first, as kubectl picks one.
            owned.sort_by_key(|p| {
                serde_json::from_value::<PodStatus>(p["status"].clone())
                    .ok()
                    .and_then(|s| s.phase)
                    .as_deref()
                    != Some("Running")
            });
            owned
                .first()
                .and_then(|p| p["metadata"]["name"].as_str())
                .map(String::from)
                .ok_or_else(|| format!("error: no pods of {} {name:?} found", kind.to_lowercase()))
        }
    }
}

fn info(state_dir: &Path, namespace: &str, pod: &str) -> Result<SandboxInfo, RuntimeError> {
    read_info(&runtime_dir(state_dir), namespace, pod)
        .ok_or_else(|| RuntimeError::NoSandbox(format!("{namespace}/{pod}")))
}

/// Runs `argv` in the pod's container with the terminal's stdin/stdout/stderr; returns
/// the command's exit code (128 + signal when it was killed).
pub fn exec(
    state_dir: &Path,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    argv: &[String],
) -> Result<i32, RuntimeError> {
    let mut pod_cmd = command(state_dir, namespace, pod, container, argv)?;
    let status = pod_cmd
        .cmd
        .status()
        .map_err(|e| RuntimeError::Pod(format!("exec {:?} in {namespace}/{pod}: {e}", argv[0])))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// A command set up to run in a pod's container. It enters the pod's network namespace
/// through a file that must stay open until the command is spawned, so both travel
/// together.
pub struct PodCommand {
    pub cmd: std::process::Command,
    _netns: std::fs::File,
}

impl PodCommand {
    /// The command, and the open namespace file it needs until it is spawned.
    pub fn into_parts(self) -> (std::process::Command, std::fs::File) {
        (self.cmd, self._netns)
    }
}

/// The command `argv` set up to run in a pod's container (its namespaces, binds, user
/// and environment), for the caller to run and read.
pub fn command(
    state_dir: &Path,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    argv: &[String],
) -> Result<PodCommand, RuntimeError> {
    let info = info(state_dir, namespace, pod)?;
    let c = info.container(container).map_err(RuntimeError::Pod)?;
    let ns_path = netns::path(&info.netns);
    let ns_file = std::fs::File::open(&ns_path).map_err(|e| RuntimeError::io(&ns_path, e))?;
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/");
    if let Ok(term) = std::env::var("TERM") {
        cmd.env("TERM", term);
    }
    netns::enter_pod(
        &mut cmd,
        &ns_file,
        &info.pod,
        &SandboxInfo::binds(c),
        c.user,
    )
    .map_err(|e| RuntimeError::io(&ns_path, e))?;
    Ok(PodCommand {
        cmd,
        _netns: ns_file,
    })
}

/// The file a container's stdout and stderr go to.
pub fn log_path(
    state_dir: &Path,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<PathBuf, RuntimeError> {
    let info = info(state_dir, namespace, pod)?;
    Ok(info
        .container(container)
        .map_err(RuntimeError::Pod)?
        .log
        .clone())
}

/// `GET <path>` on the admin endpoint (127.0.0.1:15000) of the pod's proxy, from inside
/// the pod's network namespace; returns the body.
pub fn admin_get(
    state_dir: &Path,
    namespace: &str,
    pod: &str,
    path: &str,
) -> Result<String, RuntimeError> {
    use std::io::{Read, Write};
    let info = info(state_dir, namespace, pod)?;
    let ns_path = netns::path(&info.netns);
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let answer = netns::within(&ns_path, move || -> std::io::Result<String> {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", 15000))?;
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        tcp.write_all(request.as_bytes())?;
        let mut out = String::new();
        tcp.read_to_string(&mut out)?;
        Ok(out)
    })
    .and_then(|r| r)
    .map_err(|e| {
        RuntimeError::Pod(format!(
            "{namespace}/{pod}: the proxy's admin endpoint does not answer: {e}"
        ))
    })?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(RuntimeError::Pod(format!(
            "{namespace}/{pod}: admin {path}: {}",
            head.lines().next().unwrap_or("no answer")
        )));
    }
    Ok(body.to_string())
}

/// A container: namespace, pod and the container (`None`: the pod's default one).
pub type ContainerRef<'a> = (&'a str, &'a str, Option<&'a str>);

/// `sh -c script` in a container, with `argv` as its positional arguments.
fn shell(
    state_dir: &Path,
    (ns, pod, container): ContainerRef<'_>,
    script: &str,
    argv: &[&str],
) -> Result<PodCommand, String> {
    let mut full = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        script.into(),
        "sh".into(),
    ];
    full.extend(argv.iter().map(|a| a.to_string()));
    command(state_dir, ns, pod, container, &full).map_err(|e| e.to_string())
}

/// `kubectl cp FILE POD:PATH`: `data` written at `path` in the container (into it, as
/// `name`, when `path` is a directory), through the container's own view of its
/// filesystem. Pods here share the host's filesystem outside their `/tmp` and volumes, so
/// only `/tmp` is a destination.
pub fn copy_into(
    state_dir: &Path,
    target: ContainerRef<'_>,
    data: &[u8],
    path: &str,
    name: &str,
) -> Result<(), String> {
    use std::io::Write;
    let (ns, pod, _) = target;
    if !(path == "/tmp" || path.starts_with("/tmp/")) {
        return Err(format!(
            "{path}: pods here share the host's filesystem outside /tmp and their volumes; copy into /tmp"
        ));
    }
    let mut c = shell(
        state_dir,
        target,
        r#"if [ -d "$1" ]; then exec cat > "$1/$2"; else exec cat > "$1"; fi"#,
        &[path, name],
    )?;
    let mut child = c
        .cmd
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(data)
        .map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("cannot write {path} in {ns}/{pod}"))
}

/// `kubectl cp POD:PATH FILE`: the file at `path` in the container.
pub fn copy_out(state_dir: &Path, target: ContainerRef<'_>, path: &str) -> Result<Vec<u8>, String> {
    let (ns, pod, _) = target;
    let mut c = shell(state_dir, target, r#"exec cat "$1""#, &[path])?;
    let out = c.cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{ns}/{pod}:{path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_name_pods_or_their_controllers() {
        let pods = vec![
            json!({"metadata": {"name": "sleep-abc-1", "ownerReferences": [
                {"kind": "Deployment", "name": "sleep", "controller": true}]},
                "status": {"phase": "Pending"}}),
            json!({"metadata": {"name": "sleep-abc-2", "ownerReferences": [
                {"kind": "Deployment", "name": "sleep", "controller": true}]},
                "status": {"phase": "Running"}}),
            json!({"metadata": {"name": "my-nginx-x", "ownerReferences": [
                {"kind": "ReplicationController", "name": "my-nginx", "controller": true}]}}),
        ];
        assert_eq!(resolve_target(&pods, "sleep-abc-1").unwrap(), "sleep-abc-1");
        assert_eq!(
            resolve_target(&pods, "pod/sleep-abc-1").unwrap(),
            "sleep-abc-1"
        );
        assert_eq!(
            resolve_target(&pods, "deploy/sleep").unwrap(),
            "sleep-abc-2"
        );
        assert_eq!(resolve_target(&pods, "rc/my-nginx").unwrap(), "my-nginx-x");
        assert!(resolve_target(&pods, "nope")
            .unwrap_err()
            .contains("NotFound"));
        assert!(resolve_target(&pods, "deploy/nope")
            .unwrap_err()
            .contains("no pods"));
        assert!(resolve_target(&pods, "svc/x")
            .unwrap_err()
            .contains("cannot attach"));
    }
}
