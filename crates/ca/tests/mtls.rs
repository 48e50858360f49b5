//! Mesh mTLS with the rustls glue over real loopback TCP: who is accepted, who is refused
//! (and the refusing side's reason), and rotation under an open connection.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use tessera_ca::client::{self, IdentityOptions, StaticToken};
use tessera_ca::testing::LocalCa;
use tessera_ca::tls::{client_config, handshake_reason, peer_identity, server_config};
use tessera_ca::verify::TrustBundle;
use tessera_ca::{Authority, CredentialStore, Credentials, KeyAlgorithm, SpiffeId};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const TD: &str = "cluster.local";
const ALPN: &[&[u8]] = &[b"istio"];

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa).unwrap()
}

fn options(identity: SpiffeId, ttl: Option<Duration>) -> IdentityOptions {
    IdentityOptions {
        trust_domain: TD.into(),
        identity: Some(identity),
        ttl,
        algorithm: KeyAlgorithm::EcdsaP256,
    }
}

/// A store with a certificate the CA in `dir` issues directly (no gRPC).
fn issued_store(authority: &Authority, identity: &SpiffeId) -> CredentialStore {
    let (key, chain) = authority
        .issue(identity, None, KeyAlgorithm::EcdsaP256)
        .unwrap();
    CredentialStore::new(
        Credentials::from_pem(&chain.chain_pem(), &key).unwrap(),
        TrustBundle::from_pem(authority.root_bundle(), TD).unwrap(),
    )
}

/// An echo server requiring mesh mTLS. Each line is answered with
/// `<line> from <client identity> cert <client leaf serial>`; handshake failures are sent
/// to the returned channel with the server's reason.
async fn echo_server(
    store: CredentialStore,
    mandatory: bool,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&store, mandatory, ALPN).unwrap()));
    let (failures, failed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let failures = failures.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = failures.send(handshake_reason(&e));
                        return;
                    }
                };
                let (_, conn) = tls.get_ref();
                let peer = peer_identity(conn.peer_certificates())
                    .map_or("no identity".to_string(), |i| i.to_string());
                let serial = conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map_or("none".to_string(), serial_of);
                let (read, mut write) = tokio::io::split(tls);
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply = format!("{line} from {peer} cert {serial}\n");
                    if write.write_all(reply.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, failed)
}

fn serial_of(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial_as_string().replace(':', "")
}

type Conn = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(
    addr: std::net::SocketAddr,
    config: rustls::ClientConfig,
) -> Result<(Conn, String), std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("httpbin.full").unwrap(), tcp)
        .await?;
    let serial = serial_of(&tls.get_ref().1.peer_certificates().unwrap()[0]);
    Ok((tls, serial))
}

async fn ask(conn: &mut Conn, line: &str) -> String {
    conn.write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    let mut reader = BufReader::new(conn);
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut reply))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    reply.trim_end().to_string()
}

#[tokio::test]
async fn mutual_tls_checks_identities_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let (authority, _) = Authority::init(&dir.path().join("ca")).unwrap();
    let server = issued_store(&authority, &id("full", "httpbin"));
    let client = issued_store(&authority, &id("full", "sleep"));
    let (addr, mut refused) = echo_server(server.clone(), true).await;

    // Accepted: the client expects httpbin and gets it; the server sees sleep.
    let config = client_config(&client, Some(vec![id("full", "httpbin")]), ALPN).unwrap();
    let (mut conn, _) = connect(addr, config).await.unwrap();
    let reply = ask(&mut conn, "hello").await;
    assert!(
        reply.starts_with("hello from spiffe://cluster.local/ns/full/sa/sleep cert "),
        "{reply}"
    );
    assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"istio"[..]));

    // The client refuses a server that is not the identity it expects.
    let config = client_config(&client, Some(vec![id("full", "other")]), ALPN).unwrap();
    let err = handshake_reason(&connect(addr, config).await.unwrap_err());
    assert!(
        err.contains("identity spiffe://cluster.local/ns/full/sa/httpbin is not the one expected (spiffe://cluster.local/ns/full/sa/other)"),
        "{err}"
    );
    assert!(
        refused.recv().await.is_some(),
        "the server saw the aborted handshake"
    );

    // STRICT: a client without a certificate fails the handshake; the server says why.
    let anonymous = rustls::ClientConfig::builder_with_provider(tessera_ca::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tessera_ca::tls::MeshServerVerifier::new(
            client.clone(),
            None,
        )))
        .with_no_client_auth();
    let outcome = match connect(addr, anonymous).await {
        // TLS 1.3: the client may finish before the server's alert arrives.
        Ok((mut conn, _)) => {
            let _ = conn.write_all(b"x\n").await;
            let mut buf = String::new();
            BufReader::new(&mut conn)
                .read_line(&mut buf)
                .await
                .map(|_| buf)
        }
        Err(e) => Err(e),
    };
    assert!(outcome.is_err() || outcome.unwrap().is_empty());
    let reason = refused.recv().await.unwrap();
    assert!(reason.contains("the peer sent no certificate"), "{reason}");
}

#[tokio::test]
async fn the_server_refuses_unknown_cas_and_foreign_trust_domains() {
    let dir = tempfile::tempdir().unwrap();
    let (authority, _) = Authority::init(&dir.path().join("ca")).unwrap();
    let (rogue, _) = Authority::init(&dir.path().join("rogue")).unwrap();
    let server = issued_store(&authority, &id("full", "httpbin"));
    let (addr, mut refused) = echo_server(server, true).await;
    let bundle = TrustBundle::from_pem(authority.root_bundle(), TD).unwrap();

    // A client certificate from another CA (its bundle trusts ours, so only the server
    // can refuse).
    let (key, chain) = rogue
        .issue(&id("full", "sleep"), None, KeyAlgorithm::EcdsaP256)
        .unwrap();
    let rogue_client = CredentialStore::new(
        Credentials::from_pem(&chain.chain_pem(), &key).unwrap(),
        bundle.clone(),
    );
    // Our own CA, but a foreign trust domain: webpki alone would accept this chain.
    let evil = SpiffeId::new("evil.example", "full", "sleep").unwrap();
    let (key, chain) = authority
        .issue(&evil, None, KeyAlgorithm::EcdsaP256)
        .unwrap();
    let evil_client = CredentialStore::new(
        Credentials::from_pem(&chain.chain_pem(), &key).unwrap(),
        bundle,
    );

    for (name, store, reason) in [
        ("unknown CA", rogue_client, "issued by an unknown CA"),
        (
            "foreign trust domain",
            evil_client,
            "identity spiffe://evil.example/ns/full/sa/sleep is outside the mesh trust domain cluster.local",
        ),
    ] {
        let config = client_config(&store, None, ALPN).unwrap();
        if let Ok((mut conn, _)) = connect(addr, config).await {
            let _ = conn.write_all(b"x\n").await;
            let mut buf = String::new();
            let read = BufReader::new(&mut conn).read_line(&mut buf).await;
            assert!(read.is_err() || buf.is_empty(), "{name}: got an answer {buf:?}");
        }
        let got = tokio::time::timeout(Duration::from_secs(5), refused.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(got.contains(reason), "{name}: {got}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_open_connections_and_new_ones_use_the_new_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::start(dir.path(), TD).unwrap();
    let ttl = Some(Duration::from_secs(3));
    let (server, _server_renewal) = client::start(
        ca.client(),
        Arc::new(StaticToken(ca.token("full", "httpbin"))),
        options(id("full", "httpbin"), ttl),
    )
    .await
    .unwrap();
    let (client, _client_renewal) = client::start(
        ca.client(),
        Arc::new(StaticToken(ca.token("full", "sleep"))),
        options(id("full", "sleep"), ttl),
    )
    .await
    .unwrap();
    let (addr, _) = echo_server(server.clone(), true).await;
    let config = client_config(&client, Some(vec![id("full", "httpbin")]), ALPN).unwrap();

    let first_server = server.credentials();
    let first_client = client.credentials();
    let (mut open, seen) = connect(addr, config.clone()).await.unwrap();
    assert_eq!(seen, first_server.serial_hex);
    let reply = ask(&mut open, "one").await;
    assert!(reply.ends_with(&first_client.serial_hex), "{reply}");

    // Both sides rotate at about half of 3 s.
    for store in [&server, &client] {
        let mut changes = store.subscribe();
        tokio::time::timeout(Duration::from_secs(10), changes.wait_for(|g| *g >= 1))
            .await
            .expect("rotation within 10 s")
            .unwrap();
    }
    let second_server = server.credentials();
    let second_client = client.credentials();
    assert_ne!(second_server.serial_hex, first_server.serial_hex);
    assert_ne!(second_client.serial_hex, first_client.serial_hex);

    // Wait past the first certificates' expiry: the open connection is not disturbed.
    let until = first_server.not_after.max(first_client.not_after);
    if let Ok(left) = until.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
    let reply = ask(&mut open, "two").await;
    assert!(
        reply.starts_with("two from spiffe://cluster.local/ns/full/sa/sleep")
            && reply.ends_with(&first_client.serial_hex),
        "the open connection keeps its handshake: {reply}"
    );

    // A new connection is made with the current certificates on both sides.
    let (mut fresh, seen) = connect(addr, config).await.unwrap();
    let current_server = server.credentials();
    let current_client = client.credentials();
    assert_eq!(seen, current_server.serial_hex);
    assert_ne!(seen, first_server.serial_hex);
    let reply = ask(&mut fresh, "three").await;
    assert!(reply.ends_with(&current_client.serial_hex), "{reply}");
    assert_ne!(current_client.serial_hex, first_client.serial_hex);
}
