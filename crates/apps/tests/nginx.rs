//! nginx-https: the welcome page over HTTP and HTTPS, certificates found through the pod's
//! volume table.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair};
use support::{curl, Running};
use tessera_apps::{nginx, AppError, NginxOptions};
use tessera_contract::config::{VolumeMount, VolumeTable};

/// Writes a self-signed certificate for `localhost` as `dir/tls.crt` and `dir/tls.key`.
fn write_cert(dir: &Path, alg: &'static rcgen::SignatureAlgorithm) {
    std::fs::create_dir_all(dir).unwrap();
    let key = KeyPair::generate_for(alg).unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
}

fn table(mounts: &[(&str, &Path)]) -> VolumeTable {
    VolumeTable {
        mounts: mounts
            .iter()
            .map(|(mount, host)| VolumeMount {
                mount_path: PathBuf::from(mount),
                host_path: host.to_path_buf(),
            })
            .collect(),
    }
}

/// The image's defaults, except a conf dir that is certainly not this host's nginx's.
fn options(tmp: &Path) -> NginxOptions {
    NginxOptions {
        conf_dir: tmp.join("no-conf.d"),
        ..NginxOptions::default()
    }
}

fn start(tls: Arc<rustls::ServerConfig>) -> Running {
    Running::start(2, move |mut listeners, shutdown| {
        let https = listeners.pop().unwrap();
        let http = listeners.pop().unwrap();
        nginx::serve(http, https, tls, shutdown)
    })
}

#[test]
fn welcome_page_over_https_and_http() {
    let tmp = tempfile::tempdir().unwrap();
    let ssl = tmp.path().join("secret");
    write_cert(&ssl, &rcgen::PKCS_ECDSA_P256_SHA256);
    let volumes = table(&[("/etc/nginx/ssl", &ssl)]);
    let server = start(nginx::tls_config(&options(tmp.path()), &volumes).unwrap());
    let (http, https) = (server.ports[0], server.ports[1]);

    let secure = curl(&["-k", &format!("https://127.0.0.1:{https}/")]);
    assert_eq!(secure.code, 200);
    assert!(secure.body.contains("<title>Welcome to nginx!</title>"));
    assert_eq!(secure.header("server"), Some("nginx"));
    assert_eq!(secure.header("content-type"), Some("text/html"));

    // Verified against the certificate itself, not just -k.
    let verified = curl(&[
        "--cacert",
        ssl.join("tls.crt").to_str().unwrap(),
        "--resolve",
        &format!("localhost:{https}:127.0.0.1"),
        "--http1.1",
        &format!("https://localhost:{https}/index.html"),
    ]);
    assert_eq!(verified.code, 200);
    assert!(
        verified.head.starts_with("HTTP/1.1 200"),
        "{}",
        verified.head
    );

    let h2 = curl(&["-k", "--http2", &format!("https://127.0.0.1:{https}/")]);
    assert!(h2.head.starts_with("HTTP/2 200"), "{}", h2.head);

    let plain = curl(&[&format!("http://127.0.0.1:{http}/")]);
    assert_eq!(plain.code, 200);
    assert!(plain.body.contains("Welcome to nginx!"));

    let head = curl(&["-I", "-k", &format!("https://127.0.0.1:{https}/")]);
    assert_eq!(head.code, 200);
    assert!(!head.body.contains("Welcome"));
    assert_eq!(
        head.header("content-length"),
        secure.header("content-length")
    );

    let missing = curl(&["-k", &format!("https://127.0.0.1:{https}/nope")]);
    assert_eq!(missing.code, 404);
    assert!(missing.body.contains("<center>nginx</center>"));
    assert_eq!(missing.header("server"), Some("nginx"));

    let post = curl(&["-X", "POST", &format!("http://127.0.0.1:{http}/")]);
    assert_eq!(post.code, 405);

    // Plain HTTP on the TLS port is refused, and the server keeps serving.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{https}/"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        curl(&["-k", &format!("https://127.0.0.1:{https}/")]).code,
        200
    );
    server.stop();
}

#[test]
fn conf_dir_names_the_certificate_through_the_volume_table() {
    let tmp = tempfile::tempdir().unwrap();
    let ssl = tmp.path().join("secret");
    // RSA, like `openssl req -x509 -nodes -newkey rsa:2048`.
    write_cert(&ssl, &rcgen::PKCS_RSA_SHA256);
    let conf = tmp.path().join("configmap");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("default.conf"),
        "server {\n  listen 443 ssl;\n  ssl_certificate /etc/nginx/ssl/tls.crt;\n  \
         ssl_certificate_key /etc/nginx/ssl/tls.key;\n}\n",
    )
    .unwrap();
    let volumes = table(&[("/etc/nginx/ssl", &ssl), ("/etc/nginx/conf.d", &conf)]);
    // The options name files that don't exist: the configuration wins.
    let opts = NginxOptions {
        cert: "/nowhere/tls.crt".into(),
        key: "/nowhere/tls.key".into(),
        ..NginxOptions::default()
    };
    let server = start(nginx::tls_config(&opts, &volumes).unwrap());
    let https = server.ports[1];
    let reply = curl(&[
        "--cacert",
        ssl.join("tls.crt").to_str().unwrap(),
        "--resolve",
        &format!("localhost:{https}:127.0.0.1"),
        &format!("https://localhost:{https}/"),
    ]);
    assert_eq!(reply.code, 200);
    assert!(reply.body.contains("Welcome to nginx!"));
    server.stop();
}

#[test]
fn missing_certificate_names_both_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let ssl = tmp.path().join("empty-secret");
    std::fs::create_dir_all(&ssl).unwrap();
    let volumes = table(&[("/etc/nginx/ssl", &ssl)]);
    let err = nginx::tls_config(&options(tmp.path()), &volumes).unwrap_err();
    assert!(matches!(err, AppError::File { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("/etc/nginx/ssl/tls.crt"), "{message}");
    assert!(
        message.contains(ssl.join("tls.crt").to_str().unwrap()),
        "{message}"
    );
}

#[test]
fn key_that_does_not_match_is_a_tls_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_cert(&a, &rcgen::PKCS_ECDSA_P256_SHA256);
    write_cert(&b, &rcgen::PKCS_ECDSA_P256_SHA256);
    std::fs::copy(b.join("tls.key"), a.join("tls.key")).unwrap();
    let err =
        nginx::tls_config(&options(tmp.path()), &table(&[("/etc/nginx/ssl", &a)])).unwrap_err();
    assert!(matches!(err, AppError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("/etc/nginx/ssl/tls.key"), "{err}");

    std::fs::write(a.join("tls.crt"), "not a certificate\n").unwrap();
    let err =
        nginx::tls_config(&options(tmp.path()), &table(&[("/etc/nginx/ssl", &a)])).unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
}
