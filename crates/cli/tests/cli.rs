//! The real `tessera` binary: help, version, and `validate` exit codes and output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// A state dir of its own for one test, removed when the test ends, failed or not.
struct StateDir(PathBuf);

impl StateDir {
    fn new(name: &str) -> StateDir {
        let dir = std::env::temp_dir().join(format!("tessera-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        StateDir(dir)
    }

    fn run(&self, args: &[&str]) -> Output {
        tessera()
            .arg("--state-dir")
            .arg(&self.0)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_roles_and_verbs() {
    let out = tessera().arg("--help").output().unwrap();
    assert!(out.status.success());
    let (stdout, _) = text(&out);
    for word in [
        "up",
        "control",
        "proxy",
        "validate",
        "version",
        "--state-dir",
    ] {
        assert!(stdout.contains(word), "--help mentions {word}:\n{stdout}");
    }
}

#[test]
fn version_prints_the_crate_version() {
    let out = tessera().arg("version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        text(&out).0.trim(),
        format!("tessera {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn validate_samples_exits_zero() {
    let out = tessera()
        .args(["validate", "-f"])
        .arg(repo("samples"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("16 documents in 11 files: 0 errors, 0 warnings"),
        "{stdout}"
    );
}

#[test]
fn validate_reports_the_broken_seed_service_and_exits_one() {
    let out = tessera()
        .args(["validate", "-f"])
        .arg(repo("crates/model/tests/fixtures/seeds"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("003-httpbin-broken-service.yaml:22:5: error: spec.ports[1].selector: unknown field \"selector\""), "{stdout}");
    assert!(
        stdout.contains("(hint: did you mean `spec.selector`?"),
        "{stdout}"
    );
    assert!(stderr.contains("2 errors, 0 warnings"), "{stderr}");
}

#[test]
fn warnings_alone_keep_exit_zero() {
    let out = tessera()
        .args(["validate", "-f"])
        .arg(repo(
            "crates/model/tests/fixtures/invalid/pa-selector-in-root-namespace.yaml",
        ))
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.contains(": warning: spec.selector:"), "{stdout}");
}

#[test]
fn validate_reads_standard_input() {
    let mut child = tessera()
        .args(["validate", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\nspec:\n  mtls:\n    mode: STRCT\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout.lines().next().unwrap(),
        "<stdin>:7:11: error: spec.mtls.mode: \"STRCT\" is not one of UNSET, DISABLE, PERMISSIVE, STRICT (hint: did you mean STRICT?)"
    );
}

#[test]
fn a_missing_file_is_an_error_not_a_crash() {
    let out = tessera()
        .args(["validate", "-f", "/nonexistent/tessera-manifest.yaml"])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.starts_with("/nonexistent/tessera-manifest.yaml:1:1: error: cannot read:"),
        "{stdout}"
    );
}

#[test]
fn up_refuses_unknown_install_options_before_touching_the_host() {
    let out = tessera()
        .args([
            "--state-dir",
            "/tmp/tessera-cli-test-none",
            "up",
            "--set",
            "values.global.nope=1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("values.global.nope"),
        "{}",
        text(&out).1
    );
    assert!(!std::path::Path::new("/tmp/tessera-cli-test-none").exists());
}

#[test]
fn ca_init_issue_and_root() {
    let state = StateDir::new("ca");
    let dir = state.0.clone();
    let run = |args: &[&str]| state.run(args);
    let out = run(&["ca", "root"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("run `tessera ca init` first"));
    assert!(run(&["ca", "init"]).status.success());
    let root1 = text(&run(&["ca", "root"])).0;
    assert!(text(&run(&["ca", "init"]))
        .0
        .starts_with("loaded the mesh CA"));
    assert_eq!(
        text(&run(&["ca", "root"])).0,
        root1,
        "the root survives a restart"
    );
    let out_dir = dir.join("out");
    let out = run(&[
        "ca",
        "issue",
        "--identity",
        "spiffe://cluster.local/ns/full/sa/sleep",
        "--ttl",
        "1h",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(out_dir.join("root-cert.pem"))
        .arg(out_dir.join("cert-chain.pem"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{:?}", text(&verify));
    let bad = run(&[
        "ca",
        "issue",
        "--identity",
        "spiffe://x/ns/a",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).1.contains("is not a workload identity"));
}

#[test]
fn ca_token_mints_for_one_service_account() {
    let state = StateDir::new("token");
    let run = |args: &[&str]| state.run(args);
    let args = ["ca", "token", "-n", "full", "--service-account", "sleep"];
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "no CA yet");
    assert!(text(&out).1.contains("run `tessera ca init` first"));
    assert!(run(&["ca", "init"]).status.success());
    let out = run(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    let token = text(&out).0.trim().to_string();
    let key = tessera_ca::token::TokenKey::load_or_create(&state.0.join("ca")).unwrap();
    let claims = key.verify(&token, std::time::SystemTime::now()).unwrap();
    assert_eq!((claims.ns.as_str(), claims.sa.as_str()), ("full", "sleep"));
    assert_eq!(claims.exp - claims.iat, 3600, "an hour by default");
    for (argv, reason) in [
        (
            vec![
                "ca",
                "token",
                "-n",
                "full",
                "--service-account",
                "sleep",
                "--ttl",
                "48h",
            ],
            "must be a duration between 1s and 24h",
        ),
        (
            vec!["ca", "token", "-n", "Full", "--service-account", "sleep"],
            "invalid namespace \"Full\"",
        ),
    ] {
        let out = run(&argv);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out).1.contains(reason), "{:?}", text(&out));
    }
}

#[test]
fn x509_describe_prints_one_row_per_certificate() {
    let state = StateDir::new("x509");
    let dir = state.0.clone();
    let run = |args: &[&str]| state.run(args);
    assert!(run(&["ca", "init"]).status.success());
    let out_dir = dir.join("out");
    assert!(run(&[
        "ca",
        "issue",
        "--identity",
        "spiffe://cluster.local/ns/full/sa/sleep",
        "--out",
        out_dir.to_str().unwrap()
    ])
    .status
    .success());
    let out = tessera()
        .args(["x509", "describe"])
        .arg(out_dir.join("cert-chain.pem"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("TYPE         SERIAL NUMBER"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("Cert Chain   "), "{stdout}");
    assert!(
        lines[1].contains("URI:spiffe://cluster.local/ns/full/sa/sleep"),
        "{stdout}"
    );
    let bad = tessera()
        .args(["x509", "describe"])
        .arg(out_dir.join("key.pem"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).1.contains("no PEM certificate found"));
}

#[test]
fn ca_init_with_missing_plugin_files_names_the_file() {
    let state = StateDir::new("plugin");
    let dir = state.0.clone();
    let out = state.run(&["ca", "init", "--plugin-certs", "/nonexistent/cacerts"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("/nonexistent/cacerts/root-cert.pem"),
        "{:?}",
        text(&out)
    );
    assert!(!dir.join("ca").exists(), "nothing created");
}
