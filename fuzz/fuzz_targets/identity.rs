//! Identities from untrusted input: a SPIFFE id parsed from any string prints back to
//! the same id, and any bytes as a peer's certificate give an XFCC element or no
//! identity, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;
use tessera_ca::SpiffeId;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(id) = text.parse::<SpiffeId>() {
            let again: SpiffeId = id.to_string().parse().expect("a printed id parses");
            assert_eq!(again, id);
        }
    }
    let certs = [CertificateDer::from(data.to_vec())];
    let _ = tessera_ca::tls::peer_identity(Some(&certs));
    let element = tessera_proxy::http::xfcc_element(
        &["spiffe://cluster.local/ns/default/sa/server".to_string()],
        data,
    );
    assert!(element.starts_with("By=spiffe://cluster.local/ns/default/sa/server;Hash="));
});
