//! Limits against hostile and broken clients, on real loopback sockets: each misbehaving
//! client is cut (or refused) and counted in `/stats/prometheus`, and a well-behaved
//! client is served meanwhile.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tessera_contract::config::{InboundMode, PortProtocol, ProxyConfig, ProxyLimits};
use tessera_proxy::ProxyHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server-side sidecar in front of `app`, PERMISSIVE, with `limits` changed by `set`.
async fn sidecar(
    mesh: &Mesh,
    app: SocketAddr,
    protocol: PortProtocol,
    mode: InboundMode,
    set: impl FnOnce(&mut ProxyLimits),
) -> (ProxyHandle, SocketAddr) {
    let w = mesh.workload("limits", "server");
    let mut c: ProxyConfig = server_config(&w, app.port(), protocol, mode);
    set(&mut c.runtime.limits);
    let proxy = start(c).await;
    let inbound = addr(&proxy, "inbound").await;
    (proxy, inbound)
}

/// `tessera_limits_total{reason=...}` as the admin endpoint serves it.
async fn limit_count(proxy: &ProxyHandle, reason: &str) -> u64 {
    let out = curl(&[&format!(
        "http://{}/stats/prometheus",
        proxy.admin_addr().unwrap()
    )])
    .await;
    let prefix = format!("tessera_limits_total{{reason=\"{reason}\"}} ");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {}", out.stdout))
        .trim()
        .parse()
        .unwrap()
}

/// A plain client request through the sidecar must be answered 200.
async fn assert_served(inbound: SocketAddr, what: &str) {
    let out = curl(&["-w", "\n%{http_code}", &format!("http://{inbound}/headers")]).await;
    assert_eq!(
        out.http_code(),
        "200",
        "{what}: {} {}",
        out.stdout,
        out.stderr
    );
}

/// Waits (at most `limit`) for the peer to close `tcp`; returns how long it took.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_and_silent_clients_are_cut_at_the_header_timeout() {
    let mesh = Mesh::new();
    let app = echo_app().await;
    let (proxy, inbound) = sidecar(
        &mesh,
        app,
        PortProtocol::Http,
        InboundMode::Permissive,
        |l| l.header_read_timeout_ms = 400,
    )
    .await;
    let mut clients = Vec::new();
    for i in 0..100 {
        clients.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(inbound).await.unwrap();
            if i % 2 == 0 {
                // A slow loris: a head that never ends, one header line every 100 ms.
                tcp.write_all(b"GET /headers HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .unwrap();
                let (mut read, mut write) = tcp.into_split();
                let trickle = async move {
                    for n in 0.. {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if write
                            .write_all(format!("x-{n}: y\r\n").as_bytes())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                };
                let mut buf = [0u8; 1024];
                let started = Instant::now();
                let closed = async {
                    loop {
                        match read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                };
                tokio::select! {
                    _ = trickle => {}
                    _ = closed => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
                Some(started.elapsed())
            } else {
                // Connected, silent.
                closed_within(&mut tcp, Duration::from_secs(5)).await
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_served(inbound, "while slow clients hold connections").await;
    for c in clients {
        let took = c.await.unwrap().expect("the connection was closed");
        assert!(took < Duration::from_secs(3), "closed after {took:?}");
    }
    assert!(limit_count(&proxy, "header_timeout").await >= 100);
    assert_served(inbound, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_megabyte_header_gets_431_and_others_are_served() {
    let mesh = Mesh::new();
    let app = echo_app().await;
    let (proxy, inbound) = sidecar(
        &mesh,
        app,
        PortProtocol::Http,
        InboundMode::Permissive,
        |_| {},
    )
    .await;
    let tcp = TcpStream::connect(inbound).await.unwrap();
    let (mut read, mut write) = tcp.into_split();
    let mut head = b"GET /headers HTTP/1.1\r\nHost: x\r\nx-big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    head.extend_from_slice(b"\r\n\r\n");
    tokio::spawn(async move {
        let _ = write.write_all(&head).await;
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "the answer to a 1 MB head: {answer:?}"
    );
    assert_eq!(limit_count(&proxy, "headers_too_large").await, 1);
    // HTTP/2: a header list over the limit is refused, the connection stays usable.
    let big = format!("x-big: {}", "a".repeat(100 * 1024));
    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_code}",
        "-H",
        &big,
        &format!("http://{inbound}/headers"),
    ])
    .await;
    assert_ne!(out.http_code(), "200", "{} {}", out.stdout, out.stderr);
    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_code}",
        &format!("http://{inbound}/headers"),
    ])
    .await;
    assert_eq!(out.http_code(), "200", "{}", out.stderr);
    assert_served(inbound, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_listener_cap_are_reset_and_counted() {
    let mesh = Mesh::new();
    let app = echo_app().await;
    let (proxy, inbound) = sidecar(
        &mesh,
        app,
        PortProtocol::Http,
        InboundMode::Permissive,
        |l| l.max_connections_per_listener = 20,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(inbound).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = curl(&[&format!("http://{inbound}/headers")]).await;
    // Reset at once: curl reports it while connecting (7) or reading (56).
    assert!([7, 56].contains(&out.code), "{} {}", out.code, out.stderr);
    // The reset may come before the connect completes on this side.
    if let Ok(mut extra) = TcpStream::connect(inbound).await {
        assert!(closed_within(&mut extra, Duration::from_secs(2))
            .await
            .is_some());
    }
    assert!(limit_count(&proxy, "connection_limit").await >= 2);
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_served(inbound, "once the held connections closed").await;
}

/// An app whose answers take `/delay/MS` milliseconds, and the count of requests it got.
async fn slow_app() -> (SocketAddr, Arc<AtomicUsize>) {
    let got = Arc::new(AtomicUsize::new(0));
    let count = got.clone();
    let addr = serve_app(move |path, _body| {
        count.fetch_add(1, Ordering::Relaxed);
        async move {
            if let Some(ms) = path.strip_prefix("/delay/").and_then(|m| m.parse().ok()) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Reply::Whole(200, "slow\n")
        }
    })
    .await;
    (addr, got)
}

enum Reply {
    Whole(u16, &'static str),
    /// Headers and one chunk, then nothing.
    Stalled,
    Never,
}

/// A test app: `answer(path, body)` decides, after the request body was read whole.
async fn serve_app<F, Fut>(answer: F) -> SocketAddr
where
    F: Fn(String, Bytes) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Reply> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let body = body.unwrap_or_default();
                        type Chunks = StreamBody<
                            tokio_stream::wrappers::ReceiverStream<
                                Result<Frame<Bytes>, std::io::Error>,
                            >,
                        >;
                        let resp: hyper::Response<http_body_util::Either<Full<Bytes>, Chunks>> =
                            match answer(path, body).await {
                                Reply::Whole(code, text) => hyper::Response::builder()
                                    .status(code)
                                    .body(http_body_util::Either::Left(Full::new(
                                        Bytes::from_static(text.as_bytes()),
                                    )))
                                    .unwrap(),
                                Reply::Stalled => {
                                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                                    tx.send(Ok(Frame::data(Bytes::from_static(b"first\n"))))
                                        .await
                                        .unwrap();
                                    tokio::spawn(async move {
                                        tokio::time::sleep(Duration::from_secs(30)).await;
                                        drop(tx);
                                    });
                                    hyper::Response::new(http_body_util::Either::Right(
                                        StreamBody::new(
                                            tokio_stream::wrappers::ReceiverStream::new(rx),
                                        ),
                                    ))
                                }
                                Reply::Never => std::future::pending().await,
                            };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_rapid_reset_burst_loses_its_connection_and_others_are_served() {
    let mesh = Mesh::new();
    let (app, app_requests) = slow_app().await;
    let (proxy, inbound) = sidecar(
        &mesh,
        app,
        PortProtocol::Http,
        InboundMode::Permissive,
        |l| l.h2_max_resets_per_second = 50,
    )
    .await;
    let tcp = TcpStream::connect(inbound).await.unwrap();
    let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut sent = 0;
    let started = Instant::now();
    for _ in 0..10_000 {
        let Ok(ready) = h2.ready().await else { break };
        h2 = ready;
        let req = http::Request::get(format!("http://{inbound}/delay/5000"))
            .body(())
            .unwrap();
        let Ok((_, mut stream)) = h2.send_request(req, true) else {
            break;
        };
        // Give the server the stream before cancelling it, as the attack does.
        tokio::task::yield_now().await;
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(
        ended.is_ok(),
        "the connection was closed after {sent} resets"
    );
    // The client may queue its whole burst in the socket before the server reads it;
    // what matters is the work the server started for it: bounded by the budget (50 a
    // second) and what one read brings in, not by the burst.
    let started_upstream = app_requests.load(Ordering::Relaxed);
    eprintln!("rapid reset: {sent} streams sent, {started_upstream} reached the app");
    assert!(
        started_upstream < 1_000,
        "{started_upstream} requests reached the app"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(limit_count(&proxy, "h2_reset_flood").await >= 1);
    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_code}",
        &format!("http://{inbound}/delay/0"),
    ])
    .await;
    assert_eq!(out.http_code(), "200", "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_stop_moving_end_with_504_408_or_a_cut_body() {
    let mesh = Mesh::new();
    let app = serve_app(|path, _body| async move {
        match path.as_str() {
            "/never" => Reply::Never,
            "/stalled" => Reply::Stalled,
            _ => Reply::Whole(200, "ok\n"),
        }
    })
    .await;
    let (proxy, inbound) = sidecar(
        &mesh,
        app,
        PortProtocol::Http,
        InboundMode::Permissive,
        |l| l.stream_idle_timeout_ms = 300,
    )
    .await;
    // The upstream never answers: 504.
    let out = curl(&["-w", "\n%{http_code}", &format!("http://{inbound}/never")]).await;
    assert_eq!(out.http_code(), "504", "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("stream timeout"), "{}", out.stdout);
    // The upstream's body stops: the response is cut (curl: transfer closed with data
    // outstanding).
    let started = Instant::now();
    let out = curl(&[&format!("http://{inbound}/stalled")]).await;
    assert_ne!(out.code, 0, "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("first"), "{}", out.stdout);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The client's body stops: 408.
    let mut tcp = TcpStream::connect(inbound).await.unwrap();
    tcp.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(limit_count(&proxy, "stream_idle_timeout").await, 3);
    assert_served(inbound, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_and_silent_tcp_flows_are_closed() {
    let mesh = Mesh::new();
    let app = echo_app().await;
    let (proxy, inbound) = sidecar(
        &mesh,
        app,
        PortProtocol::Http,
        InboundMode::Permissive,
        |l| l.idle_timeout_ms = 300,
    )
    .await;
    let mut tcp = TcpStream::connect(inbound).await.unwrap();
    tcp.write_all(b"GET /headers HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let took = closed_within(&mut tcp, Duration::from_secs(5))
        .await
        .expect("the idle connection was closed");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert_eq!(limit_count(&proxy, "idle_timeout").await, 1);

    let (tcp_proxy, tcp_inbound) = sidecar(
        &mesh,
        app,
        PortProtocol::Tcp,
        InboundMode::Permissive,
        |l| l.tcp_idle_timeout_ms = 300,
    )
    .await;
    let mut flow = TcpStream::connect(tcp_inbound).await.unwrap();
    flow.write_all(b"GET /headers HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut flow, Duration::from_secs(5))
        .await
        .expect("the silent flow was closed");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert_eq!(limit_count(&tcp_proxy, "tcp_idle_timeout").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_its_tls_handshake_is_cut() {
    let mesh = Mesh::new();
    let app = echo_app().await;
    let (proxy, inbound) = sidecar(&mesh, app, PortProtocol::Http, InboundMode::Strict, |l| {
        l.tls_handshake_timeout_ms = 300
    })
    .await;
    // A mesh ClientHello (the ALPN tokens a client sidecar offers), then silence.
    let mut config = rustls::ClientConfig::builder_with_provider(tessera_ca::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"istio-peer-exchange".to_vec(), b"http/1.1".to_vec()];
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        "server.limits.svc".to_string().try_into().unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    let mut tcp = TcpStream::connect(inbound).await.unwrap();
    tcp.write_all(&hello).await.unwrap();
    let took = closed_within(&mut tcp, Duration::from_secs(5))
        .await
        .expect("the stalled handshake was cut");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert_eq!(limit_count(&proxy, "tls_handshake_timeout").await, 1);
}
