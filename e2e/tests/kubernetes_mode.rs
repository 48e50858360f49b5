//! Kubernetes mode against a real API server: a second control plane, out of the mesh's
//! process, runs `tessera control --kubeconfig` on the local mesh's kubeconfig and mirrors
//! that API server through kube-rs watchers. Its predictions for seed 002's matrix are the
//! mesh's own, and changes made with the machine's kubectl (a STRICT policy, its removal)
//! reach it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_e2e::{seed002, tessera_bin, Mesh};

/// Stops the mirroring control plane however the test ends.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The predicted matrix without its first line (which names the revision).
fn predicted(mesh: &Mesh, state_dir: &str) -> String {
    let run = mesh.sh(&format!(
        "tessera --state-dir {state_dir} check reachability -n full,partial,legacy"
    ));
    run.stdout.lines().skip(1).collect::<Vec<_>>().join("\n")
}

/// Waits until the mirror predicts what the mesh predicts, and returns it.
fn agree(mesh: &Mesh, mirror: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let want = predicted(mesh, mesh.state_dir().to_str().unwrap());
        let got = predicted(mesh, mirror);
        if got == want && !want.is_empty() {
            return got;
        }
        if Instant::now() > deadline {
            panic!("the mirror does not predict what the mesh does:\n--- mesh\n{want}\n--- mirror\n{got}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_control_plane_mirrors_a_kubernetes_api_server() {
    let mesh = Mesh::up("k8smode", seed002::INSTALL);
    for script in seed002::SETUP {
        mesh.ok(script);
    }
    for ns in seed002::NAMESPACES {
        mesh.wait_ready(ns);
    }
    let mirror_dir = mesh.state_dir().join("mirror");
    let log = std::fs::File::create(mesh.state_dir().join("mirror.log")).unwrap();
    let child = Command::new(tessera_bin())
        .arg("--state-dir")
        .arg(&mirror_dir)
        .arg("control")
        .arg("--kubeconfig")
        .arg(mesh.state_dir().join("kubeconfig"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("tessera control");
    let _stop = Stop(child);
    let mirror = mirror_dir.to_str().unwrap().to_string();

    // Every pod and service arrived: the predicted matrix is the mesh's, cell by cell.
    let matrix = agree(&mesh, &mirror);
    assert!(matrix.contains("httpbin.legacy:8000"), "{matrix}");
    let pods = mesh.ok(&format!(
        "tessera --state-dir {mirror} get pods -n full -o name | sort"
    ));
    let want = mesh.ok("kubectl get pods -n full -o name | sort");
    assert_eq!(pods, want);

    // A change made with kubectl reaches the mirror, and so does its removal.
    mesh.ok("kubectl apply -n full -f - <<EOF\napiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\nspec:\n  mtls:\n    mode: STRICT\nEOF");
    let strict = agree(&mesh, &mirror);
    assert_ne!(strict, matrix, "STRICT changes the matrix");
    let policies = mesh.ok(&format!(
        "tessera --state-dir {mirror} get peerauthentications -A -o name"
    ));
    assert!(policies.contains("default"), "{policies}");
    mesh.ok("kubectl delete peerauthentication default -n full");
    assert_eq!(agree(&mesh, &mirror), matrix);
    let log = std::fs::read_to_string(mesh.state_dir().join("mirror.log")).unwrap();
    assert!(log.contains("namespaces mirrored"), "{log}");
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
}
