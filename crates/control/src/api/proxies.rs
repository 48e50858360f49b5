//! The proxies' side: their status, the configuration one would get, and bootstrap
//! tokens.

use std::time::{Duration, SystemTime};

use hyper::StatusCode;
use tessera_ca::token::{DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL};

use super::routes::{json, refused, Reply};
use super::types::*;
use crate::state::ControlState;

pub(super) fn token(control: &ControlState, r: TokenRequest) -> Reply {
    let ttl = r
        .ttl_secs
        .map_or(DEFAULT_TOKEN_TTL, Duration::from_secs)
        .min(MAX_TOKEN_TTL);
    if let Err(e) = tessera_ca::SpiffeId::new(
        &control.options.trust_domain,
        &r.namespace,
        &r.service_account,
    ) {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            vec![format!("error: {e}")],
        );
    }
    let token =
        control
            .issuer
            .tokens
            .mint(&r.namespace, &r.service_account, ttl, SystemTime::now());
    json(StatusCode::OK, &TokenResponse { token })
}
