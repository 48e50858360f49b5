//! The mesh handshake between two proxies, as captured on the wire: a relay between the
//! client sidecar and the server sidecar copies the bytes and reads the server's
//! ServerHello. It must be TLS 1.3 with the post-quantum hybrid key exchange
//! X25519MLKEM768 (rustls with aws-lc-rs offers it first).

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use support::*;
use tessera_contract::config::{InboundMode, PortProtocol, TlsMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TLS13: u16 = 0x0304;
const X25519MLKEM768: u16 = 0x11ec;

/// What a ServerHello chose.
#[derive(Debug, PartialEq, Eq)]
struct Chosen {
    version: u16,
    cipher_suite: u16,
    group: Option<u16>,
}

/// Reads the ServerHello at the start of a server's bytes (RFC 8446, 4.1.3).
fn server_hello(bytes: &[u8]) -> Option<Chosen> {
    let be16 = |b: &[u8], at: usize| Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]));
    // Record header: handshake (22), version, length.
    if *bytes.first()? != 22 {
        return None;
    }
    let record_len = be16(bytes, 3)? as usize;
    let hs = bytes.get(5..5 + record_len)?;
    // Handshake header: server_hello (2), 24-bit length.
    if *hs.first()? != 2 {
        return None;
    }
    let mut at = 4 + 2 + 32; // header, legacy_version, random
    let session_id_len = *hs.get(at)? as usize;
    at += 1 + session_id_len;
    let cipher_suite = be16(hs, at)?;
    at += 2 + 1; // cipher suite, compression method
    let extensions_end = at + 2 + be16(hs, at)? as usize;
    at += 2;
    let mut chosen = Chosen {
        version: be16(hs, 4)?,
        cipher_suite,
        group: None,
    };
    while at + 4 <= extensions_end {
        let (kind, len) = (be16(hs, at)?, be16(hs, at + 2)? as usize);
        let data = hs.get(at + 4..at + 4 + len)?;
        match kind {
            0x002b => chosen.version = be16(data, 0)?,
            0x0033 => chosen.group = Some(be16(data, 0)?),
            _ => {}
        }
        at += 4 + len;
    }
    Some(chosen)
}

/// A relay to `to` that keeps the first bytes the server sends.
async fn capturing_relay(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let captured = Arc::new(Mutex::new(Vec::new()));
    let keep = captured.clone();
    tokio::spawn(async move {
        loop {
            let (down, _) = listener.accept().await.unwrap();
            let up = TcpStream::connect(to).await.unwrap();
            let keep = keep.clone();
            tokio::spawn(async move {
                let (mut dr, mut dw) = down.into_split();
                let (mut ur, mut uw) = up.into_split();
                let upward = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut dr, &mut uw).await;
                    let _ = uw.shutdown().await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match ur.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    {
                        let mut kept = keep.lock().unwrap();
                        if kept.len() < 64 * 1024 {
                            kept.extend_from_slice(&buf[..n]);
                        }
                    }
                    if dw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = dw.shutdown().await;
                let _ = upward.await;
            });
        }
    });
    (addr, captured)
}

#[test]
fn a_server_hello_is_read() {
    // A TLS 1.3 ServerHello: legacy version 1.2, empty session id, TLS_AES_128_GCM_SHA256,
    // supported_versions 1.3, key_share x25519 with a 32-byte key.
    let mut hs = vec![0x03, 0x03];
    hs.extend([0u8; 32]);
    hs.extend([0, 0x13, 0x01, 0]);
    let mut ext = vec![0x00, 0x2b, 0x00, 0x02, 0x03, 0x04];
    ext.extend([0x00, 0x33, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    ext.extend([7u8; 32]);
    hs.extend((ext.len() as u16).to_be_bytes());
    hs.extend(ext);
    let mut msg = vec![2, 0, (hs.len() >> 8) as u8, hs.len() as u8];
    msg.extend(hs);
    let mut record = vec![22, 3, 3];
    record.extend((msg.len() as u16).to_be_bytes());
    record.extend(msg);
    assert_eq!(
        server_hello(&record),
        Some(Chosen {
            version: TLS13,
            cipher_suite: 0x1301,
            group: Some(0x001d)
        })
    );
    assert_eq!(server_hello(b"HTTP/1.1 200 OK"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_handshake_is_tls13_with_x25519mlkem768() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let httpbin = mesh.workload("full", "httpbin");
    let app = echo_app().await;
    let server = start(server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Strict,
    ))
    .await;
    let (relay, captured) = capturing_relay(addr(&server, "inbound").await).await;
    let client = start(client_config(
        &sleep,
        "httpbin.full",
        8000,
        PortProtocol::Http,
        vec![endpoint(relay, TlsMode::IstioMutual, &[&httpbin.identity])],
    ))
    .await;
    let out = curl(&[&format!(
        "http://{}/headers",
        addr(&client, "outbound").await
    )])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(xfcc(&out.stdout).is_some(), "mesh mTLS: {}", out.stdout);
    let chosen = server_hello(&captured.lock().unwrap()).expect("a ServerHello on the wire");
    assert_eq!(chosen.version, TLS13, "{chosen:?}");
    assert_eq!(chosen.group, Some(X25519MLKEM768), "{chosen:?}");
}
