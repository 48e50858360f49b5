//! The TLS a Gateway server or a Sidecar ingress listener terminates.

use crate::istio::{ServerTlsMode, ServerTlsSettings};
use crate::problem::{FieldPath, Finding};

/// TLS checks shared by Gateway servers and Sidecar ingress listeners.
pub(super) fn check_server_tls_files(
    tls: &ServerTlsSettings,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    let mode = tls.effective_mode();
    let credential = tls.credential_name.is_some()
        || !tls.credential_names.is_empty()
        || tls.tls_certificates.is_some();
    match mode {
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if !credential {
                let how =
                    "set serverCertificate and privateKey (files), or credentialName (a Secret)";
                if tls.server_certificate.is_none() {
                    out.push(
                        Finding::error(
                            path.field("serverCertificate"),
                            format!("{} TLS requires a server certificate", mode_name(mode)),
                        )
                        .hint(how),
                    );
                }
                if tls.private_key.is_none() {
                    out.push(
                        Finding::error(
                            path.field("privateKey"),
                            format!("{} TLS requires a private key", mode_name(mode)),
                        )
                        .hint(how),
                    );
                }
                if mode != ServerTlsMode::Simple && tls.ca_certificates.is_none() {
                    out.push(
                        Finding::error(
                            path.field("caCertificates"),
                            "MUTUAL TLS requires a client CA bundle",
                        )
                        .hint("set caCertificates to a file of trusted client CA certificates"),
                    );
                }
            }
        }
        ServerTlsMode::IstioMutual => {
            for (field, set) in [
                ("serverCertificate", tls.server_certificate.is_some()),
                ("privateKey", tls.private_key.is_some()),
                ("caCertificates", tls.ca_certificates.is_some()),
                ("credentialName", tls.credential_name.is_some()),
            ] {
                if set {
                    out.push(Finding::error(
                        path.field(field),
                        format!("ISTIO_MUTUAL TLS cannot have associated {field}"),
                    ));
                }
            }
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            if tls.server_certificate.is_some()
                || tls.private_key.is_some()
                || tls.ca_certificates.is_some()
                || credential
            {
                out.push(Finding::warning(
                    path.field("mode"),
                    format!(
                        "{} does not terminate TLS: the certificates are ignored",
                        mode_name(mode)
                    ),
                ));
            }
        }
    }
    let sources = [
        tls.credential_name.is_some(),
        !tls.credential_names.is_empty(),
        tls.server_certificate.is_some() || tls.private_key.is_some(),
        tls.tls_certificates.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources > 1 {
        out.push(Finding::error(path.clone(), "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified"));
    }
    check_certificate_lists(tls, mode, path, out);
}

/// `tlsCertificates` (one or two certificate and key pairs, e.g. an RSA and an ECDSA one)
/// and `credentialNames` (one or two Secrets holding such pairs).
fn check_certificate_lists(
    tls: &ServerTlsSettings,
    mode: ServerTlsMode,
    path: &FieldPath,
    out: &mut Vec<Finding>,
) {
    if let Some(certs) = &tls.tls_certificates {
        let cpath = path.field("tlsCertificates");
        if certs.is_empty() {
            out.push(Finding::error(
                cpath.clone(),
                "tlsCertificates must have at least 1 item",
            ));
        } else if certs.len() > 2 {
            out.push(
                Finding::error(
                    cpath.clone(),
                    format!(
                        "tlsCertificates must have at most 2 items (it has {})",
                        certs.len()
                    ),
                )
                .hint("a server can present up to 2 certificates, e.g. one RSA and one ECDSA"),
            );
        }
        match mode {
            ServerTlsMode::IstioMutual => out.push(Finding::error(
                cpath,
                "ISTIO_MUTUAL TLS cannot have associated tlsCertificates",
            )),
            ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
                for (i, c) in certs.iter().enumerate() {
                    for (field, set, what) in [
                        (
                            "serverCertificate",
                            c.server_certificate.is_some(),
                            "a server certificate",
                        ),
                        ("privateKey", c.private_key.is_some(), "a private key"),
                    ] {
                        if !set {
                            out.push(Finding::error(
                                cpath.index(i).field(field),
                                format!("{} TLS requires {what}", mode_name(mode)),
                            ));
                        }
                    }
                }
                let has_ca = tls.ca_certificates.is_some()
                    || certs.iter().any(|c| c.ca_certificates.is_some());
                if mode != ServerTlsMode::Simple && !has_ca {
                    out.push(
                        Finding::error(
                            path.field("caCertificates"),
                            "MUTUAL TLS requires a client CA bundle",
                        )
                        .hint("set caCertificates to a file of trusted client CA certificates"),
                    );
                }
            }
            ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {}
        }
    }
    if !tls.credential_names.is_empty() {
        let npath = path.field("credentialNames");
        if tls.credential_names.len() > 2 {
            out.push(Finding::error(
                npath.clone(),
                format!(
                    "credentialNames must have at most 2 items (it has {})",
                    tls.credential_names.len()
                ),
            ));
        }
        if mode == ServerTlsMode::IstioMutual {
            out.push(Finding::error(
                npath,
                "ISTIO_MUTUAL TLS cannot have associated credentialNames",
            ));
        }
    }
}

pub(super) fn mode_name(mode: ServerTlsMode) -> &'static str {
    match mode {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    }
}
