//! The real `tessera control` process and the kubectl-shaped verbs against it: outputs,
//! exit codes, all-or-nothing apply, persistence across a restart, SIGTERM.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A state dir and the control plane serving it; both gone when the test ends.
struct Mesh {
    dir: PathBuf,
    control: Option<Child>,
}

impl Mesh {
    fn new(name: &str) -> Mesh {
        let dir = std::env::temp_dir().join(format!("tessera-ctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut mesh = Mesh { dir, control: None };
        mesh.start();
        mesh
    }

    fn start(&mut self) {
        let child = tessera()
            .arg("--state-dir")
            .arg(&self.dir)
            .args(["control", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.control = Some(child);
        let start = Instant::now();
        while !self.dir.join("api.sock").exists() || !self.run(&["get", "ns"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "control plane did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as an operator or `tessera up` would stop it.
    fn stop(&mut self) -> Option<i32> {
        let mut child = self.control.take()?;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        tessera()
            .arg("--state-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = tessera()
            .arg("--state-dir")
            .arg(&self.dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if let Some(mut c) = self.control.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_seed_commands_work_against_a_control_plane() {
    let mut mesh = Mesh::new("seed");
    let httpbin = repo("samples/httpbin/httpbin.yaml");
    let httpbin = httpbin.to_str().unwrap();

    let o = mesh.run(&["create", "ns", "full"]);
    assert_eq!(out(&o), "namespace/full created\n", "{}", err(&o));
    let o = mesh.run(&["apply", "-f", httpbin, "-n", "full"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        out(&o),
        "serviceaccount/httpbin created\nservice/httpbin created\ndeployment.apps/httpbin created\n"
    );

    // -n before the verb, manifest on stdin, as in `kubectl -n test apply -f -`.
    let o = mesh.run_stdin(
        &["-n", "full", "apply", "-f", "-"],
        "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata:\n  name: httpbin\nspec:\n  targets:\n  - name: httpbin\n  peers:\n  - mtls: {}\n",
    );
    assert_eq!(
        out(&o),
        "policy.authentication.istio.io/httpbin created\n",
        "{}",
        err(&o)
    );

    // The seed's kind spellings.
    let o = mesh.run(&[
        "get",
        "policies.authentication.istio.io",
        "--all-namespaces",
    ]);
    let listing = out(&o);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAMESPACE", "NAME", "AGE"]
    );
    assert!(lines[1].starts_with("full "), "{lines:?}");
    let o = mesh.run(&["get", "svc", "-n", "full"]);
    let row: Vec<String> = out(&o)
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(row[0], "httpbin");
    assert!(row[2].starts_with("10.96."), "{row:?}");
    assert_eq!(row[4], "8000/TCP");
    let o = mesh.run(&[
        "get",
        "deploy",
        "-n",
        "full",
        "-o",
        "jsonpath={.items..metadata.name}",
    ]);
    assert_eq!(out(&o), "httpbin");
    let o = mesh.run(&["get", "svc", "httpbin", "-n", "full", "-o", "yaml"]);
    assert!(out(&o).contains("clusterIP: 10.96."), "{}", out(&o));
    let o = mesh.run(&["get", "pods", "-n", "full"]);
    assert!(o.status.success());
    assert_eq!(err(&o), "No resources found in full namespace.\n");

    // Errors: kubectl's words and exit 1.
    let o = mesh.run(&["get", "svc", "nothere", "-n", "full"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        err(&o),
        "Error from server (NotFound): services \"nothere\" not found\n"
    );
    let o = mesh.run(&["get", "widgets"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("the server doesn't have a resource type \"widgets\""));

    // All or nothing: a valid Service and an invalid PeerAuthentication in one file.
    let o = mesh.run_stdin(
        &["apply", "-n", "full", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: extra}\nspec:\n  ports: [{port: 80, name: http}]\n---\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: bad}\nspec:\n  mtls: {mode: STRIKT}\n",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("<stdin>:11:"), "{}", err(&o));
    assert!(err(&o).contains("spec.mtls.mode"), "{}", err(&o));
    assert!(out(&o).is_empty(), "{}", out(&o));
    let o = mesh.run(&["get", "svc", "extra", "-n", "full"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the valid half must not have landed"
    );

    // Secrets and config maps from files; labels.
    let tmp = mesh.dir.join("files");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(
        tmp.join("tls.crt"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(tmp.join("tls.key"), "key").unwrap();
    let crt = tmp.join("tls.crt");
    let key = tmp.join("tls.key");
    let o = mesh.run(&[
        "create",
        "secret",
        "tls",
        "nginxsecret",
        "--key",
        key.to_str().unwrap(),
        "--cert",
        crt.to_str().unwrap(),
    ]);
    assert_eq!(out(&o), "secret/nginxsecret created\n", "{}", err(&o));
    let conf = repo("samples/https/default.conf");
    let o = mesh.run(&[
        "create",
        "configmap",
        "nginxconfigmap",
        &format!("--from-file={}", conf.display()),
    ]);
    assert_eq!(out(&o), "configmap/nginxconfigmap created\n", "{}", err(&o));
    let o = mesh.run(&["get", "secret", "nginxsecret"]);
    let row: Vec<String> = out(&o)
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(&row[..3], ["nginxsecret", "kubernetes.io/tls", "2"]);
    let o = mesh.run(&["get", "cm", "nginxconfigmap", "-o", "jsonpath={.data}"]);
    assert!(out(&o).contains("default.conf"), "{}", out(&o));
    let o = mesh.run(&["label", "namespace", "full", "istio-injection=enabled"]);
    assert_eq!(out(&o), "namespace/full labeled\n", "{}", err(&o));
    let o = mesh.run(&["get", "ns", "-l", "istio-injection=enabled", "-o", "name"]);
    assert_eq!(out(&o), "namespace/full\n");

    // The control plane stops on SIGTERM, removes its sockets, and a restart loses nothing.
    assert_eq!(mesh.stop(), Some(0));
    assert!(!mesh.dir.join("api.sock").exists());
    let o = mesh.run(&["get", "ns"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err(&o).contains("no control plane answers at"),
        "{}",
        err(&o)
    );
    mesh.start();
    let o = mesh.run(&[
        "get",
        "policies.authentication.istio.io",
        "-A",
        "-o",
        "name",
    ]);
    assert_eq!(out(&o), "policy.authentication.istio.io/httpbin\n");
    let o = mesh.run(&["describe", "svc", "httpbin", "-n", "full"]);
    assert!(
        out(&o).contains("TargetPort:") && out(&o).contains("80/TCP"),
        "{}",
        out(&o)
    );

    // delete -f and delete KIND NAME...; the namespace takes the rest.
    let o = mesh.run(&["delete", "-f", httpbin, "-n", "full"]);
    assert_eq!(
        out(&o),
        "serviceaccount \"httpbin\" deleted\nservice \"httpbin\" deleted\ndeployment.apps \"httpbin\" deleted\n",
        "{}",
        err(&o)
    );
    let o = mesh.run(&["delete", "ns", "full"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = mesh.run(&["get", "policy", "-A"]);
    assert_eq!(err(&o), "No resources found\n");
    let o = mesh.run(&["proxy-status"]);
    assert_eq!(
        out(&o).lines().next().unwrap().split_whitespace().next(),
        Some("NAME")
    );
}

#[test]
fn bad_install_options_are_refused_before_starting() {
    let o = tessera()
        .args([
            "--state-dir",
            "/tmp/tessera-ctl-never",
            "control",
            "--set",
            "values.global.mtls.auto=maybe",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains(
            "invalid value \"maybe\" for values.global.mtls.auto: expected true or false"
        ),
        "{}",
        err(&o)
    );
    assert!(!Path::new("/tmp/tessera-ctl-never").exists());
}

/// Nine anchors of nine aliases each: 387 million nodes if expanded.
fn alias_bomb() -> String {
    let mut text = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\ndata:\n  a0: &a0 [x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..=9 {
        let prev = format!("*a{}", i - 1);
        let items = [prev.as_str(); 9].join(", ");
        text.push_str(&format!("  a{i}: &a{i} [{items}]\n"));
    }
    text
}

#[test]
fn hostile_manifests_are_refused_and_the_control_plane_stays_up() {
    let mesh = Mesh::new("hostile");
    // An alias bomb: refused with the limit and where it was hit, nothing applied.
    let o = mesh.run_stdin(&["apply", "-f", "-"], &alias_bomb());
    assert!(!o.status.success());
    assert!(
        err(&o).contains("<stdin>:") && err(&o).contains("aliases repeat more than 100000 nodes"),
        "{}",
        err(&o)
    );
    let o = mesh.run_stdin(&["validate", "-f", "-"], &alias_bomb());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        out(&o).contains("aliases repeat more than 100000 nodes"),
        "{}",
        out(&o)
    );
    // A megabyte value is not echoed back.
    let huge = format!(
        "apiVersion: v1\nkind: {}\nmetadata:\n  name: x\n",
        "K".repeat(1 << 20)
    );
    let o = mesh.run_stdin(&["apply", "-f", "-"], &huge);
    assert!(!o.status.success());
    assert!(err(&o).len() < 2_000, "{} bytes of error", err(&o).len());
    assert!(err(&o).contains("(1048576 bytes)"), "{}", err(&o));
    // The control plane still answers, and applies a good manifest.
    let o = mesh.run_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\ndata:\n  a: b\n",
    );
    assert!(o.status.success(), "{}", err(&o));
    let o = mesh.run(&["get", "configmap", "fine"]);
    assert!(o.status.success(), "{}", err(&o));
    let o = mesh.run(&["get", "configmap", "bomb"]);
    assert!(!o.status.success(), "the bomb was not applied");
}
