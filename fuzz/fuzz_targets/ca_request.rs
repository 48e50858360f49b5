//! The CA's decision on a certificate request from an untrusted workload: a bootstrap
//! token, a CSR and a validity, separated by NUL bytes. Whatever arrives is granted for
//! the token's identity only or refused with a reason, never a panic.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use tessera_ca::issuance::Issuer;
use tessera_ca::token::TokenKey;
use tessera_ca::Authority;

/// The fixed secret and clock the seed corpus' tokens were minted with.
pub const SECRET: &[u8] = b"tessera-fuzz-token-secret";
pub const NOW_SECS: u64 = 1_800_000_000;

fn issuer() -> &'static Issuer {
    static ISSUER: OnceLock<Issuer> = OnceLock::new();
    ISSUER.get_or_init(|| {
        // The CA's files go under TMPDIR; fuzz/run.sh points it at a directory it removes.
        let dir = std::env::temp_dir().join(format!("tessera-fuzz-ca-{}", std::process::id()));
        let (authority, _) = Authority::init(&dir).expect("a CA");
        Issuer {
            authority,
            tokens: TokenKey::from_secret(SECRET),
            trust_domain: "cluster.local".into(),
            default_ttl: None,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let (Some(token), Some(csr), validity) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let (Ok(token), Ok(csr)) = (std::str::from_utf8(token), std::str::from_utf8(csr)) else {
        return;
    };
    let validity = validity
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    if let Ok(granted) = issuer().decide(token, csr, validity, now) {
        let claims = issuer()
            .tokens
            .verify(token, now)
            .expect("a granted token verifies");
        assert_eq!(granted.identity.namespace(), claims.ns);
        assert_eq!(granted.identity.service_account(), claims.sa);
    }
});
