//! What the detected first bytes mean to the inbound decision. The decision itself is
//! [`tessera_contract::inbound::decide`], shared with `tessera explain`.

use tessera_contract::inbound::Arrival;

use crate::detect::Detected;

/// `detected` is `Opaque` also when the client stayed silent past the detection timeout
/// (then `silent` is true).
pub fn arrival(detected: &Detected, silent: bool) -> Arrival {
    match detected {
        Detected::Tls(hello) => Arrival::Tls {
            mesh: hello.is_mesh(),
            http: hello.is_mesh_http(),
        },
        Detected::Http1 | Detected::H2c => Arrival::Plaintext { http: true },
        _ if silent => Arrival::Silent,
        _ => Arrival::Plaintext { http: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ClientHello;

    fn tls(alpn: &[&str]) -> Detected {
        Detected::Tls(ClientHello {
            sni: None,
            alpn: alpn.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn alpn_tokens_tell_mesh_tls_from_app_tls() {
        let rows = [
            (
                "istio-http/1.1",
                tls(&["istio-http/1.1", "istio", "http/1.1"]),
                Arrival::Tls {
                    mesh: true,
                    http: true,
                },
            ),
            (
                "istio-h2",
                tls(&["istio-h2", "istio", "h2"]),
                Arrival::Tls {
                    mesh: true,
                    http: true,
                },
            ),
            (
                "istio-peer-exchange",
                tls(&["istio-peer-exchange", "istio"]),
                Arrival::Tls {
                    mesh: true,
                    http: false,
                },
            ),
            (
                "app h2",
                tls(&["h2", "http/1.1"]),
                Arrival::Tls {
                    mesh: false,
                    http: false,
                },
            ),
            (
                "no ALPN",
                tls(&[]),
                Arrival::Tls {
                    mesh: false,
                    http: false,
                },
            ),
            ("HTTP/1", Detected::Http1, Arrival::Plaintext { http: true }),
            ("h2c", Detected::H2c, Arrival::Plaintext { http: true }),
            ("raw", Detected::Opaque, Arrival::Plaintext { http: false }),
        ];
        for (case, detected, want) in rows {
            assert_eq!(arrival(&detected, false), want, "{case}");
        }
        assert_eq!(arrival(&Detected::Opaque, true), Arrival::Silent);
    }
}
