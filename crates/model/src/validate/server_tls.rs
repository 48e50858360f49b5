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
