//! The protocol sniffer on any bytes: it never panics, and its answer never changes once
//! given (more bytes of the same connection cannot turn TLS into HTTP).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_proxy::detect::{detect, Detected};

fuzz_target!(|data: &[u8]| {
    let whole = detect(data);
    // Every prefix that already had an answer must have had this one.
    for cut in [1, 2, 3, 4, 5, 8, 16, 24, 64, 512] {
        if cut >= data.len() {
            break;
        }
        let early = detect(&data[..cut]);
        if early != Detected::NeedMore {
            assert_eq!(early, whole, "prefix of {cut} bytes answered differently");
        }
    }
    if let Detected::Tls(hello) = &whole {
        let _ = hello.is_mesh();
        let _ = hello.is_mesh_http();
    }
});
