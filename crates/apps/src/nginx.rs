//! `bprashanth/nginxhttps`: nginx's welcome page over plain HTTP and over HTTPS, with the
//! certificate its configuration names (`ssl_certificate` in `conf.d/*.conf`, else the
//! image's `/etc/nginx/ssl/tls.{crt,key}`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tessera_contract::config::VolumeTable;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::serve::{accept_loop, Body, Stop};
use crate::{AppError, NginxOptions};

/// Where nginx resolves relative paths in its configuration (its `--prefix`).
const PREFIX: &str = "/etc/nginx";

/// nginx's stock `index.html` as the image ships it.
const WELCOME: &str = r#"<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
    body {
        width: 35em;
        margin: 0 auto;
        font-family: Tahoma, Verdana, Arial, sans-serif;
    }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"#;

// nginx's built-in error pages (with `server_tokens off`), CRLF and all.
const NOT_FOUND: &str = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body bgcolor=\"white\">\r\n<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
const NOT_ALLOWED: &str = "<html>\r\n<head><title>405 Not Allowed</title></head>\r\n<body bgcolor=\"white\">\r\n<center><h1>405 Not Allowed</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

/// Serves the welcome page on `http` (plain) and `https` (TLS with `tls`) until `shutdown`
/// resolves.
pub async fn serve(
    http: TcpListener,
    https: TcpListener,
    tls: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop, trigger) = Stop::new(shutdown);
    tokio::join!(
        trigger,
        accept_loop(http, None, handle, stop.clone()),
        accept_loop(https, Some(TlsAcceptor::from(tls)), handle, stop),
    );
}

/// The server's TLS configuration: the certificate and key the configuration names, read
/// through the pod's volume table. ALPN offers h2 and http/1.1.
pub fn tls_config(
    opts: &NginxOptions,
    volumes: &VolumeTable,
) -> Result<Arc<ServerConfig>, AppError> {
    let (cert, key) = certificate_paths(opts, volumes)?;
    let chain = read_file("certificate", &cert, volumes, |pem| {
        let chain = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        if chain.is_empty() {
            return Err("no PEM certificate (BEGIN CERTIFICATE) in the file".to_string());
        }
        Ok(chain)
    })?;
    let private_key = read_file("private key", &key, volumes, |pem| {
        PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
            pem::Error::NoItemsFound => "no PEM private key in the file".to_string(),
            e => format!("not a PEM private key: {e}"),
        })
    })?;
    let tls_error = |reason: String| AppError::Tls {
        cert: cert.clone(),
        key: key.clone(),
        reason,
    };
    // An explicit provider: the process-wide default may not be installed (or may differ).
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| tls_error(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Manifest paths of the certificate and key: the first `ssl_certificate` and
/// `ssl_certificate_key` in `conf_dir/*.conf` (files in name order), else the options'.
/// The default `conf_dir` is only read when a volume is mounted there.
fn certificate_paths(
    opts: &NginxOptions,
    volumes: &VolumeTable,
) -> Result<(PathBuf, PathBuf), AppError> {
    let mut cert = None;
    let mut key = None;
    // The image's own conf.d is not on this host; without a mount, the default path would
    // read the host's nginx configuration instead. An explicit directory is always read.
    let image_default = opts.conf_dir == NginxOptions::default().conf_dir
        && volumes.resolve(&opts.conf_dir) == opts.conf_dir;
    let files = if image_default {
        Vec::new()
    } else {
        conf_files(&opts.conf_dir, volumes)?
    };
    for file in files {
        let text = read_file("nginx configuration", &file, volumes, |bytes| {
            Ok(String::from_utf8_lossy(bytes).into_owned())
        })?;
        let found = parse_conf(&text);
        cert = cert.or(found.certificate);
        key = key.or(found.certificate_key);
    }
    let absolute = |p: PathBuf| Path::new(PREFIX).join(p);
    Ok((
        cert.map_or_else(|| opts.cert.clone(), absolute),
        key.map_or_else(|| opts.key.clone(), absolute),
    ))
}

/// `*.conf` in `dir` (a manifest path), sorted; none when the directory does not exist
/// (the image works without a ConfigMap).
fn conf_files(dir: &Path, volumes: &VolumeTable) -> Result<Vec<PathBuf>, AppError> {
    let host_dir = volumes.resolve(dir);
    let entries = match std::fs::read_dir(&host_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(AppError::File {
                what: "nginx configuration directory",
                path: dir.to_path_buf(),
                host_path: host_dir,
                reason: e.to_string(),
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name())
        .filter(|name| Path::new(name).extension().is_some_and(|ext| ext == "conf"))
        .map(|name| dir.join(name))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads the manifest path `path` through `volumes` and parses it; errors name both paths.
fn read_file<T>(
    what: &'static str,
    path: &Path,
    volumes: &VolumeTable,
    parse: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, AppError> {
    let host_path = volumes.resolve(path);
    let error = |reason: String| AppError::File {
        what,
        path: path.to_path_buf(),
        host_path: host_path.clone(),
        reason,
    };
    let bytes = std::fs::read(&host_path).map_err(|e| error(e.to_string()))?;
    parse(&bytes).map_err(error)
}

/// What this server reads from an nginx configuration file.
#[derive(Debug, Default, PartialEq, Eq)]
struct ConfPaths {
    certificate: Option<PathBuf>,
    certificate_key: Option<PathBuf>,
}

/// Splits `text` into nginx statements (`directive args...;`, quotes and `#` comments
/// honoured, block structure ignored) and keeps the first `ssl_certificate` and
/// `ssl_certificate_key`.
fn parse_conf(text: &str) -> ConfPaths {
    let mut found = ConfPaths::default();
    let mut statement: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '#' if !in_word => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' | '\'' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        q if q == c => break,
                        '\\' => word.extend(chars.next()),
                        q => word.push(q),
                    }
                }
            }
            ';' | '{' | '}' => {
                if in_word {
                    statement.push(std::mem::take(&mut word));
                    in_word = false;
                }
                // `{` opens a block: its header is not a directive we want.
                if c == ';' {
                    match statement.as_slice() {
                        [name, value, ..] if name == "ssl_certificate" => {
                            found.certificate.get_or_insert_with(|| value.into());
                        }
                        [name, value, ..] if name == "ssl_certificate_key" => {
                            found.certificate_key.get_or_insert_with(|| value.into());
                        }
                        _ => {}
                    }
                }
                statement.clear();
            }
            c if c.is_whitespace() => {
                if in_word {
                    statement.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    found
}

async fn handle(req: Request<Incoming>, _peer: std::net::SocketAddr) -> Response<Body> {
    let is_index = matches!(req.uri().path(), "/" | "/index.html");
    let (status, body) = match *req.method() {
        Method::GET | Method::HEAD if is_index => (StatusCode::OK, WELCOME),
        _ if !is_index => (StatusCode::NOT_FOUND, NOT_FOUND),
        // Static files answer nothing but GET and HEAD.
        _ => (StatusCode::METHOD_NOT_ALLOWED, NOT_ALLOWED),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("nginx"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_images_default_conf() {
        let conf = r#"
server {
        listen 80 default_server;
        listen [::]:80 default_server ipv6only=on;
        listen 443 ssl;

        root /usr/share/nginx/html;
        index index.html;

        server_name localhost;
        ssl_certificate /etc/nginx/ssl/tls.crt;
        ssl_certificate_key /etc/nginx/ssl/tls.key;

        location / {
                try_files $uri $uri/ =404;
        }
}
"#;
        assert_eq!(
            parse_conf(conf),
            ConfPaths {
                certificate: Some("/etc/nginx/ssl/tls.crt".into()),
                certificate_key: Some("/etc/nginx/ssl/tls.key".into()),
            }
        );
    }

    #[test]
    fn first_directive_wins_and_comments_quotes_are_honoured() {
        let conf = "# ssl_certificate /commented/out.crt;\n\
                    server { ssl_certificate \"/a b/first.crt\"; ssl_certificate /second.crt;\n\
                    ssl_certificate_key 'k.pem' ; # trailing comment\n\
                    ssl_certificate_keys /not/this; }";
        assert_eq!(
            parse_conf(conf),
            ConfPaths {
                certificate: Some("/a b/first.crt".into()),
                certificate_key: Some("k.pem".into()),
            }
        );
    }

    #[test]
    fn nothing_found_in_unrelated_conf() {
        assert_eq!(
            parse_conf("server { listen 80; location / { root html; } }\nssl_certificate;"),
            ConfPaths::default()
        );
    }

    #[test]
    fn relative_paths_are_under_the_prefix_and_files_are_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.conf"), "ssl_certificate /b.crt;").unwrap();
        std::fs::write(
            dir.path().join("a.conf"),
            "ssl_certificate_key certs/a.key;",
        )
        .unwrap();
        std::fs::write(dir.path().join("c.conf.bak"), "ssl_certificate /c.crt;").unwrap();
        let opts = NginxOptions {
            conf_dir: "/etc/nginx/conf.d".into(),
            ..NginxOptions::default()
        };
        let volumes: VolumeTable = serde_json::from_value(serde_json::json!({
            "mounts": [{"mountPath": "/etc/nginx/conf.d", "hostPath": dir.path()}]
        }))
        .unwrap();
        assert_eq!(
            certificate_paths(&opts, &volumes).unwrap(),
            (
                PathBuf::from("/b.crt"),
                PathBuf::from("/etc/nginx/certs/a.key")
            )
        );
        // The default directory without a mount is the image's, not this host's.
        assert_eq!(
            certificate_paths(&opts, &VolumeTable::default()).unwrap(),
            (opts.cert.clone(), opts.key.clone())
        );
        // No such directory: the options' paths.
        let missing = NginxOptions {
            conf_dir: dir.path().join("missing"),
            ..NginxOptions::default()
        };
        assert_eq!(
            certificate_paths(&missing, &volumes).unwrap(),
            (opts.cert.clone(), opts.key.clone())
        );
    }
}
