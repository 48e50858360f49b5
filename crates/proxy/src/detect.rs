//! What a connection speaks, from its first bytes: a TLS ClientHello (with SNI and ALPN),
//! HTTP/1.x, the HTTP/2 prior-knowledge preface, or something else. Pure: the caller reads
//! bytes and asks again while the answer is `NeedMore`.

use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The outcome of looking at a connection's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// Not enough bytes yet to tell.
    NeedMore,
    Tls(ClientHello),
    Http1,
    H2c,
    /// Bytes that are none of the above.
    Opaque,
}

/// The parts of a ClientHello routing looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub sni: Option<String>,
    pub alpn: Vec<String>,
}

impl ClientHello {
    /// Whether the client offered one of Istio's mesh ALPN tokens: only those TLS
    /// connections are mesh mTLS; any other TLS belongs to the application.
    pub fn is_mesh(&self) -> bool {
        self.alpn.iter().any(|p| is_mesh_alpn(p))
    }

    /// Whether the mesh ALPN says the payload is HTTP (`istio-http/*`, `istio-h2`).
    pub fn is_mesh_http(&self) -> bool {
        self.alpn
            .iter()
            .any(|p| p.starts_with("istio-http/") || p == "istio-h2")
    }
}

pub const MESH_ALPNS: &[&str] = &[
    "istio",
    "istio-peer-exchange",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

pub fn is_mesh_alpn(p: &str) -> bool {
    MESH_ALPNS.contains(&p)
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

/// A ClientHello record is at most 2^14 bytes plus its header; more is not TLS.
pub const MAX_PEEK: usize = 16 * 1024 + 5;

pub fn detect(buf: &[u8]) -> Detected {
    if buf.is_empty() {
        return Detected::NeedMore;
    }
    if buf[0] == 0x16 {
        return tls(buf);
    }
    if is_prefix_or_whole(buf, H2_PREFACE) {
        return if buf.len() >= H2_PREFACE.len() {
            Detected::H2c
        } else {
            Detected::NeedMore
        };
    }
    let mut maybe = false;
    for m in METHODS {
        if buf.starts_with(m) {
            return Detected::Http1;
        }
        maybe |= m.starts_with(buf);
    }
    if maybe {
        Detected::NeedMore
    } else {
        Detected::Opaque
    }
}

fn is_prefix_or_whole(buf: &[u8], of: &[u8]) -> bool {
    let n = buf.len().min(of.len());
    buf[..n] == of[..n]
}

/// A TLS record carrying a ClientHello: `16 03 0x len len | 01 len len len | ...`.
fn tls(buf: &[u8]) -> Detected {
    if buf.len() < 5 {
        // 0x16 then a 0x03 major version is all we can check this early.
        return if buf.len() >= 2 && buf[1] != 0x03 {
            Detected::Opaque
        } else {
            Detected::NeedMore
        };
    }
    if buf[1] != 0x03 {
        return Detected::Opaque;
    }
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return Detected::NeedMore;
    }
    match parse_client_hello(&buf[5..5 + len]) {
        Some(hello) => Detected::Tls(hello),
        // A handshake record we cannot read (e.g. a ClientHello split over records):
        // still TLS, with nothing known about it.
        None => Detected::Tls(ClientHello::default()),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize)
    }
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = self.u8()?;
        self.take(n).map(|buf| Reader { buf })
    }
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = self.u16()?;
        self.take(n).map(|buf| Reader { buf })
    }
}

fn parse_client_hello(record: &[u8]) -> Option<ClientHello> {
    let mut r = Reader { buf: record };
    if r.u8()? != 0x01 {
        return None;
    }
    let len = r.u24()?;
    let mut body = Reader { buf: r.take(len)? };
    body.take(2 + 32)?; // legacy_version, random
    body.vec8()?; // session id
    body.vec16()?; // cipher suites
    body.vec8()?; // compression methods
    let mut hello = ClientHello::default();
    if body.buf.is_empty() {
        return Some(hello);
    }
    let mut exts = body.vec16()?;
    while !exts.buf.is_empty() {
        let kind = exts.u16()?;
        let mut data = exts.vec16()?;
        match kind {
            0x0000 => {
                let mut list = data.vec16()?;
                while !list.buf.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 {
                        hello.sni = std::str::from_utf8(name.buf).ok().map(str::to_string);
                    }
                }
            }
            0x0010 => {
                let mut list = data.vec16()?;
                while !list.buf.is_empty() {
                    let proto = list.vec8()?;
                    hello
                        .alpn
                        .push(String::from_utf8_lossy(proto.buf).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

/// The bytes read, in an allocation of their size: they are replayed once but held for
/// the connection's life, and most are far shorter than the read buffer.
fn exact(buf: BytesMut) -> Bytes {
    Bytes::copy_from_slice(&buf)
}

/// Reads until the first bytes tell what the connection is, the client is silent for
/// `wait`, or it closes. Returns the bytes read, the answer, and whether it was silence.
pub async fn read_detect<S: AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> (Bytes, Detected, bool) {
    let mut buf = BytesMut::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let found = detect(&buf);
        if found != Detected::NeedMore {
            return (exact(buf), found, false);
        }
        if buf.len() >= MAX_PEEK {
            return (exact(buf), Detected::Opaque, false);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (exact(buf), Detected::Opaque, false),
            Ok(Ok(_)) => {}
            Err(_) => {
                let silent = buf.is_empty();
                return (exact(buf), Detected::Opaque, silent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A real ClientHello from rustls with the given SNI and ALPN.
    fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        let mut conn =
            rustls::ClientConnection::new(Arc::new(config), sni.to_string().try_into().unwrap())
                .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn classification_table() {
        let mesh = client_hello(
            "outbound_.8000_._.httpbin.full.svc.cluster.local",
            &["istio-http/1.1", "istio", "http/1.1"],
        );
        let curl = client_hello("my-nginx", &["h2", "http/1.1"]);
        let rows: Vec<(&str, Vec<u8>, Detected)> = vec![
            ("empty", vec![], Detected::NeedMore),
            ("GET", b"GET / HTTP/1.1\r\n".to_vec(), Detected::Http1),
            ("partial method", b"DEL".to_vec(), Detected::NeedMore),
            ("POST", b"POST /x HTTP/1.1\r\n".to_vec(), Detected::Http1),
            ("h2c preface", H2_PREFACE.to_vec(), Detected::H2c),
            (
                "h2c preface, partial",
                H2_PREFACE[..10].to_vec(),
                Detected::NeedMore,
            ),
            (
                "server-first banner bytes",
                b"\x4a\x00\x00\x00\x0a8.0".to_vec(),
                Detected::Opaque,
            ),
            ("ssh", b"SSH-2.0-OpenSSH".to_vec(), Detected::Opaque),
            (
                "lowercase method is not HTTP",
                b"get / HTTP/1.1".to_vec(),
                Detected::Opaque,
            ),
            (
                "handshake byte, bad version",
                vec![0x16, 0x01, 0x00],
                Detected::Opaque,
            ),
            (
                "TLS header only",
                vec![0x16, 0x03, 0x01, 0x02, 0x00],
                Detected::NeedMore,
            ),
            (
                "mesh ClientHello",
                mesh.clone(),
                Detected::Tls(ClientHello {
                    sni: Some("outbound_.8000_._.httpbin.full.svc.cluster.local".into()),
                    alpn: vec!["istio-http/1.1".into(), "istio".into(), "http/1.1".into()],
                }),
            ),
            (
                "app ClientHello",
                curl.clone(),
                Detected::Tls(ClientHello {
                    sni: Some("my-nginx".into()),
                    alpn: vec!["h2".into(), "http/1.1".into()],
                }),
            ),
            (
                "ClientHello cut short",
                mesh[..mesh.len() - 1].to_vec(),
                Detected::NeedMore,
            ),
        ];
        for (name, bytes, want) in rows {
            assert_eq!(detect(&bytes), want, "{name}");
        }
    }

    #[test]
    fn mesh_alpn_table() {
        let rows: &[(&[&str], bool, bool)] = &[
            (&["istio-http/1.1", "istio", "http/1.1"], true, true),
            (&["istio-h2", "istio", "h2"], true, true),
            (&["istio-peer-exchange", "istio"], true, false),
            (&["istio"], true, false),
            (&["h2", "http/1.1"], false, false),
            (&[], false, false),
        ];
        for (alpn, mesh, http) in rows {
            let hello = ClientHello {
                sni: None,
                alpn: alpn.iter().map(|s| s.to_string()).collect(),
            };
            assert_eq!(hello.is_mesh(), *mesh, "{alpn:?}");
            assert_eq!(hello.is_mesh_http(), *http, "{alpn:?}");
        }
    }
}
