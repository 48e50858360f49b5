//! TLS terminated with the user's certificate on an inbound port (Sidecar ingress `tls`),
//! and the handshake it shares with gateway servers: a refusal is counted and logged with
//! its reason on this side, and the client gets the alert.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use tessera_contract::inbound::{Payload, Refusal};
use tokio::net::TcpStream;

use super::{serve_inbound_http, Accepted};
use crate::config::termination::Termination;
use crate::http as l7;
use crate::io::{close_after_alert, reset, Prefixed};
use crate::limits::LimitEvent;
use crate::telemetry::{ConnectionResult, Direction, TlsUsed};

/// A port with Sidecar ingress TLS: the TLS is terminated with the user's certificate
/// (client certificate verified against the user's CA under MUTUAL), then HTTP or TCP to
/// the app. XFCC carries the external client's certificate.
pub(crate) async fn serve(
    conn: Accepted,
    tcp: TcpStream,
    prefix: Bytes,
    payload: Payload,
    replaced: impl Future<Output = ()>,
) {
    let Some(termination) = conn.rule.termination.clone() else {
        return conn.refuse(tcp, Refusal::NoTlsChain);
    };
    let within = conn.shared.limits().tls_handshake;
    let Some(tls) = accept_user_tls(&conn.result, &termination, prefix, tcp, within).await else {
        return;
    };
    let leaf = peer_leaf(&tls);
    let used = if leaf.is_some() {
        TlsUsed::Mutual
    } else {
        TlsUsed::Simple
    };
    let port = conn.port;
    conn.result.accepted(used, None, || {
        format!("TLS with the user's certificate on port {port} (Sidecar ingress)")
    });
    let subject = leaf
        .as_deref()
        .and_then(|der| {
            tessera_ca::inspect::describe_der(der, time::OffsetDateTime::now_utc()).ok()
        })
        .map(|row| row.subject);
    match payload {
        Payload::Http => {
            let xfcc = leaf
                .as_deref()
                .and_then(|der| HeaderValue::from_str(&l7::xfcc_element(&[], der)).ok());
            let shared = conn.shared.clone();
            let http = Arc::new(conn.http(xfcc, subject, used));
            serve_inbound_http(shared, tls, http, replaced).await;
        }
        // The client's certificate is not a mesh identity: no principal.
        Payload::Tcp => {
            if let Some(revoked) = conn.authorized(used, None, None) {
                let ends = super::either(replaced, revoked);
                conn.forward(tls, Bytes::new(), used, subject, ends).await
            }
        }
    }
}

/// The DER of the client's leaf certificate, when it sent one.
pub(crate) fn peer_leaf<IO>(tls: &tokio_rustls::server::TlsStream<IO>) -> Option<Vec<u8>> {
    let (_, session) = tls.get_ref();
    session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
}

/// The TLS handshake with a user certificate, due `within` the handshake timeout; a
/// refusal is counted and logged with its reason on this side, and the client gets the
/// alert.
pub(crate) async fn accept_user_tls(
    result: &ConnectionResult,
    termination: &Termination,
    prefix: Bytes,
    tcp: TcpStream,
    within: Duration,
) -> Option<tokio_rustls::server::TlsStream<Prefixed<TcpStream>>> {
    let acceptor = match termination {
        Termination::Ready(a) => a.clone(),
        Termination::Unavailable(why) => {
            result.refused(Refusal::TlsUnavailable, TlsUsed::Simple, why);
            reset(tcp);
            return None;
        }
    };
    let accepted = tokio::time::timeout(
        within,
        acceptor.accept(Prefixed::new(prefix, tcp)).into_fallible(),
    )
    .await;
    let (reason, io) = match accepted {
        Ok(Ok(tls)) => {
            result.handshake(Direction::Inbound, TlsUsed::Simple, true);
            return Some(tls);
        }
        Ok(Err((e, io))) => (tessera_ca::tls::handshake_reason(&e), Some(io)),
        Err(_) => {
            result
                .telemetry()
                .limit_hit(LimitEvent::TlsHandshakeTimeout);
            (
                "the client did not finish the TLS handshake in time".to_string(),
                None,
            )
        }
    };
    result.handshake(Direction::Inbound, TlsUsed::Simple, false);
    result.refused(Refusal::TlsHandshake, TlsUsed::Simple, &reason);
    if let Some(io) = io {
        close_after_alert(io).await;
    }
    None
}
