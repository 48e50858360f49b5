//! The machine's own `kubectl` against a local mesh's Kubernetes API: `tessera up` writes
//! `<state-dir>/kubeconfig` (the cluster CA and an administrator's client certificate),
//! and kubectl discovers the kinds, lists and gets objects with its own columns, follows
//! the seeds' jsonpath, and gets the API server's errors. Callers without credentials get
//! 401.

use tessera_e2e::Mesh;

/// Whitespace-separated fields of each line, without the AGE column (the two listings
/// are a moment apart).
fn fields_without_age(table: &str) -> Vec<Vec<String>> {
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let age = header.iter().position(|h| *h == "AGE");
    table
        .lines()
        .map(|l| {
            l.split_whitespace()
                .enumerate()
                .filter(|(i, _)| Some(*i) != age)
                .map(|(_, f)| f.to_string())
                .collect()
        })
        .collect()
}

/// `kubectl exec -it ... sh` on a terminal of 123 × 45 that becomes 100 × 50 halfway; the
/// session's output, then `exit N`.
const TERMINAL_SESSION: &str = r#"
import fcntl, os, pty, select, struct, termios, time
def size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))
pid, fd = pty.fork()
if pid == 0:
    size(0, 45, 123)
    os.execvp('kubectl', ['kubectl', '-n', 'full', 'exec', '-it', 'deploy/sleep', '-c', 'sleep', '--', 'sh'])
out = b''
def read_until(token):
    global out
    end = time.time() + 20
    while token not in out and time.time() < end:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            out += data
os.write(fd, b'tty; stty size; echo $((6*7))-done\n')
read_until(b'42-done')
size(fd, 50, 100)
time.sleep(1)
os.write(fd, b'stty size; exit 3\n')
read_until(b'never')
status = os.waitpid(pid, 0)[1]
print(out.decode(errors='replace'))
print('exit', os.waitstatus_to_exitcode(status))
"#;

#[test]
fn kubectl_reads_the_local_mesh() {
    let mesh = Mesh::up("kubectl", &[]);
    mesh.ok(
        "tessera create ns full && tessera label ns full istio-injection=enabled && \
         tessera apply -n full -f samples/sleep/sleep.yaml -f samples/httpbin/httpbin.yaml",
    );
    mesh.wait_ready("full");

    // Discovery: the server's version, and every kind with its group, short name and scope.
    let version: serde_json::Value =
        serde_json::from_str(&mesh.ok("kubectl version -o json")).expect("version json");
    assert_eq!(version["serverVersion"]["major"], "1");
    assert_eq!(version["serverVersion"]["minor"], "32");
    let resources: Vec<Vec<String>> = mesh
        .ok("kubectl api-resources --no-headers")
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    for want in [
        "pods po v1 true Pod",
        "namespaces ns v1 false Namespace",
        "deployments deploy apps/v1 true Deployment",
        "peerauthentications pa security.istio.io/v1 true PeerAuthentication",
        "policies authentication.istio.io/v1alpha1 true Policy",
        "virtualservices vs networking.istio.io/v1 true VirtualService",
    ] {
        let want: Vec<String> = want.split_whitespace().map(str::to_string).collect();
        assert!(resources.contains(&want), "{want:?} in {resources:?}");
    }

    // Aggregated discovery: kubectl reads every group from /api and /apis alone.
    let fetched =
        mesh.ok("kubectl api-resources -v=6 2>&1 >/dev/null | grep -o 'GET [^ ]*' | sort -u");
    assert!(
        fetched
            .lines()
            .all(|l| l.contains("/api?") || l.contains("/apis?")),
        "{fetched}"
    );
    // The Istio kinds as CustomResourceDefinitions, and their schemas for `explain`.
    let crds = mesh.ok("kubectl get crd -o name");
    assert!(
        crds.contains(
            "customresourcedefinition.apiextensions.k8s.io/peerauthentications.security.istio.io"
        ) && crds.contains("virtualservices.networking.istio.io"),
        "{crds}"
    );
    let explained = mesh.ok("kubectl explain peerauthentications.spec.mtls.mode");
    assert!(
        explained.contains("GROUP:      security.istio.io")
            && explained.contains("STRICT")
            && explained.contains("PERMISSIVE"),
        "{explained}"
    );
    let ports = mesh.ok("kubectl explain pods.spec.containers.ports --api-version=v1");
    assert!(
        ports.contains("containerPort\t<integer>") && ports.contains("hostIP\t<string>"),
        "{ports}"
    );
    let v2: serde_json::Value =
        serde_json::from_str(&mesh.ok("kubectl get --raw /openapi/v2")).expect("Swagger 2 JSON");
    assert_eq!(v2["swagger"], "2.0");
    assert!(v2["definitions"]["PeerAuthentication"].is_object());
    let refused = mesh.sh("kubectl delete crd peerauthentications.security.istio.io");
    assert_eq!(refused.code, 1, "{}", refused.both());
    assert_eq!(mesh.ok("kubectl get crd -o name").lines().count(), 8);

    // kubectl's table and tessera's are the same table.
    for what in ["pods", "pods -o wide", "svc", "deploy"] {
        let k = mesh.ok(&format!("kubectl -n full get {what}"));
        let t = mesh.ok(&format!("tessera -n full get {what}"));
        assert_eq!(fields_without_age(&k), fields_without_age(&t), "get {what}");
    }
    let pods = mesh.ok("kubectl -n full get pods");
    assert_eq!(pods.lines().count(), 3, "{pods}");
    assert!(
        pods.lines()
            .skip(1)
            .all(|l| l.contains(" 2/2 ") && l.contains(" Running ")),
        "{pods}"
    );
    // The one node: `-o wide` and `spec.nodeName` name it, as a scheduler's binding does.
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_ascii_lowercase();
    let wide = mesh.ok("kubectl -n full get pods -o wide");
    assert!(
        wide.lines().next().unwrap().contains(" NODE ") && wide.contains(&format!(" {node} ")),
        "{wide}"
    );
    assert_eq!(
        mesh.ok(&format!(
            "kubectl -n full get pods --field-selector spec.nodeName={node} -o name | wc -l"
        ))
        .trim(),
        "2"
    );
    let all = mesh.ok("kubectl get svc -A");
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(all.contains("istio-ingressgateway"), "{all}");

    // The seeds' way of naming a pod, and a label selector.
    let name = mesh.ok("kubectl get pod -l app=sleep -n full -o jsonpath={.items..metadata.name}");
    assert!(name.starts_with("sleep-"), "{name}");
    assert_eq!(
        mesh.ok(&format!(
            "kubectl -n full get pod {name} -o jsonpath='{{.kind}} {{.status.phase}}'"
        )),
        "Pod Running"
    );
    assert_eq!(
        mesh.ok("kubectl -n full get pods -l app=httpbin -o name")
            .lines()
            .count(),
        1
    );
    // Istio kinds by their group-qualified names, at any served version.
    mesh.ok("tessera apply -n full -f - <<'EOF'\n\
         apiVersion: security.istio.io/v1beta1\n\
         kind: PeerAuthentication\n\
         metadata: {name: default}\n\
         spec: {mtls: {mode: STRICT}}\n\
         EOF");
    let pa = mesh.ok("kubectl get peerauthentications.security.istio.io -A");
    assert!(pa.contains("full ") && pa.contains("STRICT"), "{pa}");
    let v1beta1 = mesh.ok(
        "kubectl get peerauthentications.v1beta1.security.istio.io -n full default -o jsonpath={.apiVersion}",
    );
    assert_eq!(v1beta1, "security.istio.io/v1beta1");

    // Errors as the API server words them.
    let missing = mesh.sh("kubectl -n full get pod nope");
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr.trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );
    let none = mesh.sh("kubectl get policies.authentication.istio.io --all-namespaces");
    assert_eq!(none.code, 0);
    assert_eq!(none.stderr.trim(), "No resources found");

    // No credentials: 401. The administrator's bearer token: the object.
    let server = mesh.ok("kubectl config view --minify -o jsonpath={.clusters[0].cluster.server}");
    let anonymous = mesh.ok(&format!(
        "curl -sk -o /dev/null -w '%{{http_code}}' {server}/api/v1/namespaces"
    ));
    assert_eq!(anonymous, "401");
    let token = std::fs::read_to_string(mesh.state_dir().join("kube/admin.token")).unwrap();
    let with_token = mesh.ok(&format!(
        "curl -sk -H 'Authorization: Bearer {}' {server}/api/v1/namespaces/full",
        token.trim()
    ));
    let ns: serde_json::Value = serde_json::from_str(&with_token).expect("namespace json");
    assert_eq!(ns["kind"], "Namespace");
    assert_eq!(ns["metadata"]["name"], "full");

    // The same API on the control plane's Unix socket (for root), which `tessera get` reads.
    let socket = mesh.state_dir().join("api.sock");
    let over_socket = mesh.ok(&format!(
        "curl -s --unix-socket {} http://tessera/api/v1/namespaces/full/pods?labelSelector=app%3Dsleep",
        socket.display()
    ));
    let list: serde_json::Value = serde_json::from_str(&over_socket).expect("a PodList");
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // 1,024 connections at once: the next one is closed at once; then all is well again.
    let over = mesh.ok(&format!(
        "python3 - {server} <<'EOF'\n\
import resource, socket, sys, time\n\
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n\
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))\n\
host, port = sys.argv[1].split('//')[1].rsplit(':', 1)\n\
held = [socket.create_connection((host, int(port))) for _ in range(1024)]\n\
time.sleep(0.5)\n\
extra = socket.create_connection((host, int(port)))\n\
extra.settimeout(5)\n\
print('closed' if extra.recv(1) == b'' else 'served')\n\
EOF"
    ));
    assert_eq!(over.trim(), "closed");
    assert!(mesh.ok("kubectl get ns full").contains("full"));
}

#[test]
fn kubectl_changes_the_local_mesh() {
    let mesh = Mesh::up("kubectl-write", &[]);
    // Typed commands send protobuf; `apply` sends JSON and patches.
    assert_eq!(
        mesh.ok("kubectl create ns full"),
        "namespace/full created\n"
    );
    let again = mesh.sh("kubectl create ns full");
    assert_eq!(again.code, 1);
    assert_eq!(
        again.stderr.trim(),
        "Error from server (AlreadyExists): namespaces \"full\" already exists"
    );
    mesh.ok("kubectl label ns full istio-injection=enabled");
    let applied = mesh
        .ok("kubectl apply -n full -f samples/sleep/sleep.yaml -f samples/httpbin/httpbin.yaml");
    assert!(
        applied.contains("deployment.apps/httpbin created"),
        "{applied}"
    );
    let unchanged = mesh.ok("kubectl apply -n full -f samples/httpbin/httpbin.yaml");
    assert!(
        unchanged.contains("deployment.apps/httpbin unchanged"),
        "{unchanged}"
    );
    // `wait` lists, then watches from the list's resourceVersion.
    mesh.ok("kubectl -n full wait --for=condition=Ready pod --all --timeout=60s");
    assert!(mesh
        .ok("kubectl -n full get pods")
        .lines()
        .skip(1)
        .all(|l| l.contains(" 2/2 ")));

    // A changed manifest of a built-in kind: a strategic merge patch.
    let scaled = mesh.ok(
        "sed 's/replicas: 1/replicas: 2/' samples/httpbin/httpbin.yaml | kubectl apply -n full -f -",
    );
    assert!(
        scaled.contains("deployment.apps/httpbin configured"),
        "{scaled}"
    );
    mesh.wait_pods("full", 3);

    // An Istio kind changed by apply: a JSON merge patch; the proxies follow.
    mesh.ok("kubectl apply -n full -f samples/seed-002/peerauthentication-httpbin-strict.yaml");
    let permissive = mesh.ok(
        "sed 's/STRICT/PERMISSIVE/' samples/seed-002/peerauthentication-httpbin-strict.yaml | kubectl apply -n full -f -",
    );
    assert!(permissive.contains("configured"), "{permissive}");
    assert_eq!(
        mesh.ok("kubectl -n full get pa httpbin -o jsonpath={.spec.mtls.mode}"),
        "PERMISSIVE"
    );
    mesh.wait_synced();
    // The seeds' check, verbatim: exec in the pod named by jsonpath.
    let check = mesh.ok(
        "kubectl exec $(kubectl get pod -l app=sleep -n full -o jsonpath={.items..metadata.name}) -c sleep -n full -- \
         curl http://httpbin.full:8000/headers -s -w \"response %{http_code}\\n\" | egrep -o 'URI\\=spiffe.*sa/[a-z]*|response.*$'",
    );
    assert_eq!(
        check,
        "URI=spiffe://cluster.local/ns/full/sa/sleep\nresponse 200\n"
    );
    // Exit codes, stderr, stdin, and `kubectl cp` (tar through exec).
    let failed = mesh
        .sh("kubectl -n full exec deploy/sleep -c sleep -- sh -c 'echo out; echo err >&2; exit 7'");
    assert_eq!(
        (failed.code, failed.stdout.as_str()),
        (7, "out\n"),
        "{}",
        failed.both()
    );
    assert!(failed.stderr.starts_with("err\n"), "{}", failed.stderr);
    assert_eq!(
        mesh.ok("echo hello | kubectl -n full exec -i deploy/sleep -c sleep -- cat"),
        "hello\n"
    );
    // A terminal: `exec -it` from a terminal of 123 × 45, then resized to 100 × 50; the
    // shell's exit code comes back.
    let tty = mesh.ok(&format!("python3 - <<'EOF'\n{TERMINAL_SESSION}EOF"));
    assert!(tty.contains("/dev/pts/"), "{tty}");
    assert!(tty.contains("45 123\r\n"), "{tty}");
    assert!(tty.contains("50 100\r\n"), "{tty}");
    assert!(tty.trim_end().ends_with("exit 3"), "{tty}");
    // `attach` shows what the container writes from then on (one of the two replicas;
    // the requests are balanced over both).
    let attached = mesh.ok(
        "pod=$(kubectl -n full get pod -l app=httpbin -o jsonpath={.items[0].metadata.name}); \
         (timeout 6 kubectl -n full attach $pod -c httpbin > $SCRATCH/attach.out 2>&1 &); sleep 2; \
         kubectl -n full exec deploy/sleep -c sleep -- sh -c \
           'for i in 1 2 3 4 5 6; do curl -s -o /dev/null http://httpbin.full:8000/status/418; done'; \
         sleep 5; cat $SCRATCH/attach.out",
    );
    assert!(attached.contains("GET /status/418 418"), "{attached}");
    assert!(!attached.contains("GET /headers"), "{attached}");
    let refused = mesh.sh("kubectl -n full attach -i deploy/httpbin -c httpbin");
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("keeps no container's stdin open"),
        "{}",
        refused.stderr
    );
    // A client that leaves takes its command with it.
    mesh.sh("timeout 2 kubectl -n full exec deploy/sleep -c sleep -- sleep 4321");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        mesh.sh("pgrep -f 'sleep 4321'").code,
        1,
        "the command outlived its client"
    );
    mesh.ok(
        "echo copied > $SCRATCH/cp.txt && \
         kubectl -n full cp $SCRATCH/cp.txt $(kubectl get pod -l app=sleep -n full -o jsonpath={.items..metadata.name}):/tmp/cp.txt -c sleep",
    );
    assert_eq!(
        mesh.ok("kubectl -n full exec deploy/sleep -c sleep -- cat /tmp/cp.txt"),
        "copied\n"
    );
    // The request in the app's log and in its sidecar's access log (of either replica).
    let app = mesh.ok("kubectl -n full logs -l app=httpbin");
    assert!(app.contains("GET /headers 200"), "{app}");
    let proxy = mesh.ok("kubectl -n full logs -l app=httpbin -c istio-proxy --tail=20");
    assert!(proxy.lines().count() <= 40, "{proxy}");
    assert!(
        proxy.contains("direction=\"inbound\"") && proxy.contains("sa/sleep"),
        "{proxy}"
    );

    // Server-side apply: created, then changed.
    let ssa = mesh.ok(
        "sed 's/name: httpbin/name: ssa/' samples/seed-002/peerauthentication-httpbin-strict.yaml | kubectl apply --server-side -n full -f - && \
         sed 's/name: httpbin/name: ssa/; s/STRICT/DISABLE/' samples/seed-002/peerauthentication-httpbin-strict.yaml | kubectl apply --server-side -n full -f -",
    );
    assert_eq!(ssa.matches("serverside-applied").count(), 2, "{ssa}");
    assert_eq!(
        mesh.ok("kubectl -n full get pa ssa -o jsonpath={.spec.mtls.mode}"),
        "DISABLE"
    );
    mesh.ok("kubectl -n full delete pa ssa");
    mesh.wait_synced();

    // Invalid input is refused whole, with the validator's words.
    let bad = mesh.sh(
        "sed 's/STRICT/SOMETIMES/' samples/seed-002/peerauthentication-httpbin-strict.yaml | kubectl apply -n full -f -",
    );
    assert_eq!(bad.code, 1, "{}", bad.both());
    assert!(
        bad.stderr.starts_with(
            "The PeerAuthentication \"httpbin\" is invalid: spec.mtls.mode: \"SOMETIMES\" is not one of"
        ),
        "{}",
        bad.stderr
    );
    assert_eq!(
        mesh.ok("kubectl -n full get pa httpbin -o jsonpath={.spec.mtls.mode}"),
        "PERMISSIVE"
    );

    // Field ownership: `kubectl apply` (client-side) owns the mode it set, so a
    // server-side apply that changes it conflicts, until it forces.
    let managers = mesh.ok(
        "kubectl -n full get pa httpbin --show-managed-fields -o jsonpath='{.metadata.managedFields[*].manager}'",
    );
    assert_eq!(managers, "kubectl-client-side-apply");
    let conflict = mesh.sh(
        "kubectl apply --server-side -n full -f samples/seed-002/peerauthentication-httpbin-strict.yaml",
    );
    assert_eq!(conflict.code, 1, "{}", conflict.both());
    assert!(
        conflict.stderr.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using security.istio.io/v1beta1: .spec.mtls.mode"
        ),
        "{}",
        conflict.stderr
    );
    mesh.ok("kubectl apply --server-side --force-conflicts -n full -f samples/seed-002/peerauthentication-httpbin-strict.yaml");
    let owned = mesh.ok(
        "kubectl -n full get pa httpbin --show-managed-fields -o jsonpath='{range .metadata.managedFields[*]}{.manager}:{.operation} {end}{.spec.mtls.mode} {.metadata.generation}'",
    );
    assert!(
        owned.contains("kubectl:Apply") && owned.ends_with("STRICT 3"),
        "{owned}"
    );

    // The status subresource: a patch of it changes the status alone.
    mesh.ok("kubectl -n full patch pa httpbin --subresource=status --type=merge -p '{\"spec\":{\"mtls\":{\"mode\":\"DISABLE\"}},\"status\":{\"observedGeneration\":\"3\"}}'");
    assert_eq!(
        mesh.ok("kubectl -n full get pa httpbin -o jsonpath='{.spec.mtls.mode} {.status.observedGeneration}'"),
        "STRICT 3"
    );
    assert_eq!(
        mesh.ok("kubectl -n full get deploy sleep --subresource=status -o jsonpath={.status.readyReplicas}"),
        "1"
    );

    // A watch sees a pod go and its replacement come; `wait --for=delete` follows one.
    let victim = mesh.ok("kubectl -n full get pod -l app=sleep -o name");
    let watched = mesh.ok(&format!(
        "(timeout 8 kubectl -n full get pods -w --output-watch-events > $SCRATCH/watch.out 2>&1 &); sleep 1; \
         kubectl -n full delete {victim} --wait=false >/dev/null; \
         kubectl -n full wait --for=delete {victim} --timeout=20s; \
         kubectl -n full wait --for=condition=Ready pod -l app=sleep --timeout=60s >/dev/null; \
         sleep 1; cat $SCRATCH/watch.out",
        victim = victim.trim()
    ));
    let gone = victim.trim().trim_start_matches("pod/");
    assert!(
        watched
            .lines()
            .any(|l| l.starts_with("DELETED") && l.contains(gone)),
        "{watched}"
    );
    assert!(
        watched
            .lines()
            .any(|l| l.starts_with("ADDED") && l.contains("sleep-") && !l.contains(gone)),
        "{watched}"
    );

    // The seeds' typed creates, a JSON patch, and delete (which waits until it is gone).
    mesh.ok("openssl req -x509 -nodes -days 1 -newkey rsa:2048 -keyout $SCRATCH/k.key -out $SCRATCH/k.crt -subj /CN=my-nginx 2>/dev/null");
    mesh.ok(
        "kubectl -n full create secret tls nginxsecret --key $SCRATCH/k.key --cert $SCRATCH/k.crt",
    );
    mesh.ok(
        "kubectl -n full create configmap nginxconfigmap --from-file=samples/https/default.conf",
    );
    assert_eq!(
        mesh.ok("kubectl -n full get secret nginxsecret -o jsonpath={.type}"),
        "kubernetes.io/tls"
    );
    mesh.ok("kubectl -n full patch cm nginxconfigmap --type=json -p '[{\"op\":\"add\",\"path\":\"/data/extra\",\"value\":\"x\"}]'");
    assert_eq!(
        mesh.ok("kubectl -n full get cm nginxconfigmap -o jsonpath={.data.extra}"),
        "x"
    );
    // deletecollection: the labelled ConfigMaps go in one change, the others stay.
    mesh.ok(
        "kubectl -n full create configmap gone-a && kubectl -n full create configmap gone-b && \
         kubectl -n full label cm gone-a gone-b sweep=yes",
    );
    let swept: serde_json::Value =
        serde_json::from_str(&mesh.ok(
            "kubectl delete --raw '/api/v1/namespaces/full/configmaps?labelSelector=sweep%3Dyes'",
        ))
        .expect("a ConfigMapList");
    assert_eq!(swept["kind"], "ConfigMapList");
    assert_eq!(swept["items"].as_array().map(Vec::len), Some(2), "{swept}");
    assert_eq!(
        mesh.ok("kubectl -n full get cm -o name"),
        "configmap/nginxconfigmap\n"
    );
    assert_eq!(
        mesh.ok("kubectl -n full delete pa httpbin"),
        "peerauthentication.security.istio.io \"httpbin\" deleted\n"
    );
    assert_eq!(mesh.sh("kubectl -n full get pa httpbin").code, 1);
    mesh.ok("kubectl delete ns full");
    mesh.wait_no_pods("full");
    assert!(!mesh.ok("tessera get ns").contains("full"));
}
