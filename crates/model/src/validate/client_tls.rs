//! The TLS a client sidecar originates (a traffic policy's `tls`).

use crate::istio::{ClientTlsMode, ClientTlsSettings};
use crate::problem::{FieldPath, Finding};

pub(super) fn check_client_tls(tls: &ClientTlsSettings, path: &FieldPath, out: &mut Vec<Finding>) {
    let has_files = tls.client_certificate.is_some()
        || tls.private_key.is_some()
        || tls.ca_certificates.is_some();
    match tls.mode {
        ClientTlsMode::IstioMutual => {
            for (field, set) in [
                ("clientCertificate", tls.client_certificate.is_some()),
                ("privateKey", tls.private_key.is_some()),
                ("caCertificates", tls.ca_certificates.is_some()),
                ("credentialName", tls.credential_name.is_some()),
            ] {
                if set {
                    out.push(Finding::error(
                        path.field(field),
                        format!("ISTIO_MUTUAL TLS cannot have associated {field}: the mesh certificates are used"),
                    ));
                }
            }
        }
        ClientTlsMode::Mutual if tls.credential_name.is_none() => {
            if tls.client_certificate.is_none() {
                out.push(
                    Finding::error(
                        path.field("clientCertificate"),
                        "client certificate required for mutual tls",
                    )
                    .hint("or set credentialName"),
                );
            }
            if tls.private_key.is_none() {
                out.push(
                    Finding::error(
                        path.field("privateKey"),
                        "private key required for mutual tls",
                    )
                    .hint("or set credentialName"),
                );
            }
        }
        ClientTlsMode::Disable if has_files || tls.credential_name.is_some() => {
            out.push(Finding::warning(
                path.field("mode"),
                "certificates are ignored when mode is DISABLE",
            ));
        }
        _ => {}
    }
}
