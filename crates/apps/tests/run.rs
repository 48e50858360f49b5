//! `run`, as the CLI calls it: serves until SIGTERM, then returns Ok. (Its own test binary:
//! it signals the whole process.)

use std::process::Command;

use tessera_apps::{run, App, AppError, HttpbinOptions, NginxOptions};

#[test]
fn httpbin_serves_until_sigterm() {
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = std::thread::spawn(move || run(App::Httpbin(HttpbinOptions { port })));

    // The signal handler is installed before the port is bound, so once httpbin answers a
    // SIGTERM can't kill the test process.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--retry-connrefused",
            "--retry",
            "60",
        ])
        .args(["--retry-max-time", "60"])
        .arg(format!("http://127.0.0.1:{port}/ip"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"origin\": \"127.0.0.1\""));

    let kill = Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    app.join().unwrap().unwrap();
}

#[test]
fn nginx_fails_at_startup_without_its_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("tls.crt");
    let err = run(App::NginxHttps(NginxOptions {
        http_port: 0,
        https_port: 0,
        conf_dir: tmp.path().join("conf.d"),
        cert: cert.clone(),
        key: tmp.path().join("tls.key"),
    }))
    .unwrap_err();
    assert!(
        matches!(
            err,
            AppError::File {
                what: "certificate",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(cert.to_str().unwrap()), "{err}");
}
