//! Bootstrap tokens: how a proxy proves, to the CA, which service account it runs as.
//!
//! The control plane mints a short-lived token for one (namespace, service account) and
//! hands it to that workload's proxy (as Kubernetes projects a service-account token into a
//! pod). The CA then signs exactly that identity. A token is
//! `tbt1.<base64url claims JSON>.<base64url HMAC-SHA256>`, keyed by a secret that never
//! leaves the CA's directory (`token-key`, mode 0600), so a token minted by another mesh, or
//! edited, fails the signature check.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::authority::{write_atomic, CaError};

pub const TOKEN_KEY: &str = "token-key";
const PREFIX: &str = "tbt1";

/// A token lives an hour unless asked otherwise, at most a day: long enough to start a
/// workload, short enough that a leaked one soon stops working.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a token says: the service account it was minted for and when it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    pub ns: String,
    pub sa: String,
    /// Issued at / expires, in seconds since the Unix epoch.
    pub iat: u64,
    pub exp: u64,
    /// Who the token is for (a TokenRequest's audiences); none for bootstrap tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aud: Vec<String>,
    /// The pod the token is bound to (a TokenRequest's boundObjectRef): it is valid while
    /// that pod exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<BoundPod>,
}

/// A pod a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundPod {
    pub name: String,
    pub uid: String,
}

/// Why a token was refused, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bootstrap token (send `authorization: Bearer <token>`)")]
    Missing,
    #[error("the token is not a Tessera bootstrap token (expected tbt1.<claims>.<signature>)")]
    Malformed,
    #[error("the token was not minted by this control plane (its signature does not match: a token of another mesh, or an edited one)")]
    BadSignature,
    #[error("the token for {ns}/{sa} expired {ago}s ago; mint a new one")]
    Expired { ns: String, sa: String, ago: u64 },
}

/// The secret that signs and checks tokens.
pub struct TokenKey {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// Loads `dir/token-key`, creating it (32 random bytes, mode 0600) when missing.
    pub fn load_or_create(dir: &Path) -> Result<TokenKey, CaError> {
        let path = dir.join(TOKEN_KEY);
        let secret = match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => bytes,
            Ok(bytes) => {
                return Err(CaError::BadFile {
                    path,
                    reason: format!("a token key is 32 bytes, this one has {}", bytes.len()),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = vec![0u8; 32];
                aws_lc_rs::rand::fill(&mut bytes)
                    .map_err(|_| CaError::Signing("no secure random source".into()))?;
                std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
                    path: PathBuf::from(dir),
                    source,
                })?;
                write_atomic(&path, &bytes, 0o600)?;
                bytes
            }
            Err(source) => return Err(CaError::Io { path, source }),
        };
        Ok(TokenKey::from_secret(&secret))
    }

    pub fn from_secret(secret: &[u8]) -> TokenKey {
        TokenKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A token for `ns`/`sa`, valid for `ttl` (capped at [`MAX_TOKEN_TTL`]) from `now`.
    pub fn mint(&self, ns: &str, sa: &str, ttl: Duration, now: SystemTime) -> String {
        self.mint_bound(ns, sa, ttl, now, vec![], None)
    }

    /// [`TokenKey::mint`] for `audiences`, bound to `pod` when given (a TokenRequest).
    pub fn mint_bound(
        &self,
        ns: &str,
        sa: &str,
        ttl: Duration,
        now: SystemTime,
        aud: Vec<String>,
        pod: Option<BoundPod>,
    ) -> String {
        let iat = unix(now);
        let claims = TokenClaims {
            ns: ns.to_string(),
            sa: sa.to_string(),
            iat,
            exp: iat + ttl.min(MAX_TOKEN_TTL).as_secs().max(1),
            aud,
            pod,
        };
        let body = B64.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let signed = format!("{PREFIX}.{body}");
        let tag = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", B64.encode(tag.as_ref()))
    }

    /// The claims of a token this key signed that has not expired at `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<TokenClaims, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let (signed, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (prefix, body) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        if prefix != PREFIX {
            return Err(TokenError::Malformed);
        }
        let tag = B64.decode(tag).map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, signed.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
        let claims: TokenClaims = B64
            .decode(body)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(TokenError::Malformed)?;
        let now = unix(now);
        if now >= claims.exp {
            return Err(TokenError::Expired {
                ns: claims.ns,
                sa: claims.sa,
                ago: now - claims.exp,
            });
        }
        Ok(claims)
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let key = TokenKey::from_secret(&[7; 32]);
        let token = key.mint("full", "sleep", Duration::from_secs(60), at(1000));
        let claims = key.verify(&token, at(1059)).unwrap();
        assert_eq!((claims.ns.as_str(), claims.sa.as_str()), ("full", "sleep"));
        assert_eq!(
            key.verify(&token, at(1065)),
            Err(TokenError::Expired {
                ns: "full".into(),
                sa: "sleep".into(),
                ago: 5
            })
        );
    }

    #[test]
    fn refusals() {
        let key = TokenKey::from_secret(&[7; 32]);
        let other = TokenKey::from_secret(&[8; 32]);
        let token = key.mint("full", "sleep", Duration::from_secs(60), at(1000));
        let foreign = other.mint("full", "sleep", Duration::from_secs(60), at(1000));
        // Claims edited to another service account, signature kept.
        let (_, body, tag) = {
            let mut parts = token.split('.');
            (parts.next(), parts.next().unwrap(), parts.next().unwrap())
        };
        let mut claims: TokenClaims = serde_json::from_slice(&B64.decode(body).unwrap()).unwrap();
        claims.sa = "admin".into();
        let edited = format!(
            "tbt1.{}.{tag}",
            B64.encode(serde_json::to_vec(&claims).unwrap())
        );
        let rows: &[(&str, &str, TokenError)] = &[
            ("empty", "", TokenError::Missing),
            ("jwt", "eyJh.eyJz.c2ln", TokenError::Malformed),
            ("no dots", "tbt1", TokenError::Malformed),
            ("foreign mesh", &foreign, TokenError::BadSignature),
            ("edited claims", &edited, TokenError::BadSignature),
        ];
        for (name, token, want) in rows {
            assert_eq!(&key.verify(token, at(1001)).unwrap_err(), want, "{name}");
        }
    }

    #[test]
    fn ttl_is_capped() {
        let key = TokenKey::from_secret(&[7; 32]);
        let token = key.mint("a", "b", Duration::from_secs(10 * 24 * 3600), at(0));
        let claims = key.verify(&token, at(1)).unwrap();
        assert_eq!(claims.exp, MAX_TOKEN_TTL.as_secs());
    }

    #[test]
    fn the_key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = TokenKey::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(TOKEN_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = TokenKey::load_or_create(dir.path()).unwrap();
        let token = a.mint("ns", "sa", Duration::from_secs(60), SystemTime::now());
        assert!(b.verify(&token, SystemTime::now()).is_ok());
    }
}
