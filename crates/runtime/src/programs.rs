//! Which program runs a container: images cannot be pulled here, so the Istio sample images
//! map to built-in apps, the sidecar to the proxy role, and any other image needs an
//! annotation that names a real program on this host.

use tessera_model::kube::Container;
use tessera_model::meta::ObjectMeta;

use tessera_model::names::{INIT_CONTAINER, PROXY_CONTAINER};

/// `program.tessera.io/<container>: <command line>` runs that command (with `/bin/sh -c`)
/// for the container, whatever its image.
pub const PROGRAM_ANNOTATION: &str = "program.tessera.io/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The sidecar: this binary's proxy role, as uid 1337.
    Proxy,
    /// The capture step (`istio-init`): iptables rules from its arguments, no process.
    Capture,
    /// `tessera app <name> <args>`.
    Builtin {
        app: &'static str,
        args: Vec<String>,
    },
    /// A real program on this host, run by `/bin/sh -c`.
    Shell(String),
}

/// Sample images and the built-in app that stands in for each (substring of the image).
const IMAGES: &[(&str, &str)] = &[
    ("kennethreitz/httpbin", "httpbin"),
    ("mccutchen/go-httpbin", "httpbin"),
    ("istio/httpbin", "httpbin"),
    ("curlimages/curl", "sleep"),
    ("governmentpaas/curl-ssl", "sleep"),
    ("istio/sleep", "sleep"),
    ("nginxhttps", "nginx-https"),
];

pub fn program_for(pod: &ObjectMeta, c: &Container) -> Result<Program, String> {
    if let Some(line) = pod
        .annotations
        .get(&format!("{PROGRAM_ANNOTATION}{}", c.name))
        .filter(|l| !l.trim().is_empty())
    {
        return Ok(Program::Shell(line.clone()));
    }
    if c.name == PROXY_CONTAINER {
        return Ok(Program::Proxy);
    }
    if c.name == INIT_CONTAINER {
        return Ok(Program::Capture);
    }
    let image = c.image.as_deref().unwrap_or("");
    let app = IMAGES
        .iter()
        .find(|(pattern, _)| image.contains(pattern))
        .map(|(_, app)| *app);
    let port = |default: u16| {
        c.ports
            .first()
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or(default)
    };
    match app {
        Some("httpbin") => Ok(Program::Builtin {
            app: "httpbin",
            args: vec!["--port".into(), port(80).to_string()],
        }),
        Some("sleep") => Ok(Program::Builtin {
            app: "sleep",
            args: vec![],
        }),
        Some("nginx-https") => Ok(Program::Builtin {
            app: "nginx-https",
            args: vec![],
        }),
        _ => Err(format!(
            "no program for image {image:?} (built in: {}); name one with the pod annotation \
             {PROGRAM_ANNOTATION}{}: \"<command line>\"",
            IMAGES
                .iter()
                .map(|(i, _)| *i)
                .collect::<Vec<_>>()
                .join(", "),
            c.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_model::kube::ContainerPort;

    fn container(name: &str, image: &str, port: Option<i32>) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ports: port
                .map(|p| ContainerPort {
                    container_port: p,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn images_map_to_programs() {
        let meta = ObjectMeta::default();
        let table = [
            (
                container("httpbin", "docker.io/kennethreitz/httpbin", Some(80)),
                Ok(Program::Builtin {
                    app: "httpbin",
                    args: vec!["--port".into(), "80".into()],
                }),
            ),
            (
                container("httpbin", "docker.io/mccutchen/go-httpbin:v2", Some(8080)),
                Ok(Program::Builtin {
                    app: "httpbin",
                    args: vec!["--port".into(), "8080".into()],
                }),
            ),
            (
                container("sleep", "curlimages/curl", None),
                Ok(Program::Builtin {
                    app: "sleep",
                    args: vec![],
                }),
            ),
            (
                container("nginxhttps", "bprashanth/nginxhttps:1.0", Some(443)),
                Ok(Program::Builtin {
                    app: "nginx-https",
                    args: vec![],
                }),
            ),
            (container("istio-proxy", "x", None), Ok(Program::Proxy)),
            (container("istio-init", "x", None), Ok(Program::Capture)),
        ];
        for (c, want) in table {
            assert_eq!(program_for(&meta, &c), want, "{}", c.name);
        }
        let err = program_for(&meta, &container("db", "postgres:16", None)).unwrap_err();
        assert!(
            err.contains("\"postgres:16\"") && err.contains("program.tessera.io/db"),
            "{err}"
        );
    }

    #[test]
    fn an_annotation_names_a_real_program() {
        let mut meta = ObjectMeta::default();
        meta.annotations.insert(
            "program.tessera.io/web".into(),
            "nginx -g 'daemon off;'".into(),
        );
        assert_eq!(
            program_for(&meta, &container("web", "nginx:1.27", Some(80))),
            Ok(Program::Shell("nginx -g 'daemon off;'".into()))
        );
    }
}
