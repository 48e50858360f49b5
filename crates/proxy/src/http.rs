//! What HTTP forwarding shares on every side: the body type, the proxy's own answers,
//! requests formed for the upstream's HTTP version, hop-by-hop headers, and the
//! X-Forwarded-Client-Cert element of a verified peer.

use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST, SERVER};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use crate::config::Flavor;
use crate::limits::body::IdleBody;

/// A response body: the upstream's (ended if it stops moving) or the proxy's own.
pub type Body = Either<IdleBody<Incoming>, Full<Bytes>>;

pub const XFCC: &str = "x-forwarded-client-cert";

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

/// One XFCC element for a mesh mTLS peer, as Envoy's APPEND_FORWARD with Subject, URI and
/// DNS details: `By=<own URI>;Hash=<sha256 of the peer leaf>;Subject="<RFC 2253>";URI=<peer
/// URI>[;DNS=<peer DNS>]`.
pub fn xfcc_element(own_uris: &[String], peer_leaf_der: &[u8]) -> String {
    let mut out = String::new();
    for by in own_uris {
        out.push_str("By=");
        out.push_str(by);
        out.push(';');
    }
    out.push_str("Hash=");
    for b in Sha256::digest(peer_leaf_der) {
        out.push_str(&format!("{b:02x}"));
    }
    let (subject, uris, dns) = match parse_x509_certificate(peer_leaf_der) {
        Ok((_, cert)) => {
            let mut uris = Vec::new();
            let mut dns = Vec::new();
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        GeneralName::DNSName(d) => dns.push(d.to_string()),
                        _ => {}
                    }
                }
            }
            (tessera_ca::inspect::rfc2253(cert.subject()), uris, dns)
        }
        Err(_) => (String::new(), Vec::new(), Vec::new()),
    };
    out.push_str(&format!(";Subject=\"{subject}\""));
    if uris.is_empty() {
        out.push_str(";URI=");
    }
    for u in &uris {
        out.push_str(";URI=");
        out.push_str(u);
    }
    for d in &dns {
        out.push_str(";DNS=");
        out.push_str(d);
    }
    out
}

/// A text answer from the proxy itself.
pub fn answer(code: StatusCode, server: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    h.insert(SERVER, HeaderValue::from_static(server));
    resp
}

/// The request's authority: `:authority` (HTTP/2, absolute-form) or the Host header.
pub(crate) fn authority_of<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

/// Forms the request for the upstream's HTTP version: origin-form with Host for HTTP/1.1,
/// absolute-form (`:authority`) for HTTP/2.
pub(crate) fn prepare(req: &mut Request<Incoming>, flavor: Flavor) {
    strip_hop_by_hop(req.headers_mut());
    let authority = authority_of(req);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    match flavor {
        Flavor::Http2 => {
            if let Some(a) = &authority {
                if let Ok(uri) = Uri::builder()
                    .scheme("http")
                    .authority(a.as_str())
                    .path_and_query(path)
                    .build()
                {
                    *req.uri_mut() = uri;
                }
            }
            req.headers_mut().remove(HOST);
            *req.version_mut() = Version::HTTP_2;
        }
        _ => {
            if let Some(a) = authority {
                if !req.headers().contains_key(HOST) {
                    if let Ok(v) = HeaderValue::from_str(&a) {
                        req.headers_mut().insert(HOST, v);
                    }
                }
            }
            if let Ok(uri) = path.parse() {
                *req.uri_mut() = uri;
            }
            *req.version_mut() = Version::HTTP_11;
        }
    }
}

/// The upstream's answer as the proxy returns it: its own `server` header and Envoy's
/// `x-envoy-upstream-service-time` (milliseconds the upstream took).
pub(crate) fn finish(
    mut resp: Response<IdleBody<Incoming>>,
    server: &'static str,
    upstream_started: Instant,
) -> Response<Body> {
    strip_hop_by_hop(resp.headers_mut());
    let h = resp.headers_mut();
    if server == "envoy" {
        // A client sidecar does not pass the server side's tracing decorator on.
        h.remove("x-envoy-decorator-operation");
    }
    h.insert(SERVER, HeaderValue::from_static(server));
    h.insert(
        UPSTREAM_SERVICE_TIME,
        HeaderValue::from(upstream_started.elapsed().as_millis() as u64),
    );
    resp.map(Either::Left)
}

const UPSTREAM_SERVICE_TIME: &str = "x-envoy-upstream-service-time";

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ca::{Authority, KeyAlgorithm, SpiffeId};

    #[test]
    fn xfcc_for_a_mesh_peer_is_istios() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = Authority::init(dir.path()).unwrap();
        let sleep = SpiffeId::new("cluster.local", "full", "sleep").unwrap();
        let (_, chain) = ca.issue(&sleep, None, KeyAlgorithm::EcdsaP256).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(chain.leaf_pem.as_bytes())
            .map(|d: rustls_pki_types::CertificateDer<'static>| d.to_vec())
            .unwrap();
        let got = xfcc_element(&["spiffe://cluster.local/ns/full/sa/httpbin".into()], &der);
        let hash: String = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            got,
            format!("By=spiffe://cluster.local/ns/full/sa/httpbin;Hash={hash};Subject=\"\";URI=spiffe://cluster.local/ns/full/sa/sleep")
        );
        assert_eq!(hash.len(), 64);
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }
}
