//! Keep-alive HTTP connections per pool key (endpoint and TLS settings), for both the
//! outbound side and the inbound side's app: HTTP/1.1 connections are checked out one
//! request at a time, HTTP/2 ones shared. Connect and TLS failures surface before the
//! request is committed, so a caller can try another endpoint. An HTTP/1.1 connection
//! idle in the pool past the upstream idle timeout is closed, not reused; each exchange
//! runs under the stream idle timeout.

use crate::config::{EndpointRoute, Flavor};
use crate::connect::{connect, Phase, UpstreamError};
use crate::limits::body::{IdleBody, Stalled, StreamClock};
use crate::telemetry::Telemetry;
use http::Request;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAX_IDLE_PER_KEY: usize = 256;

/// A request body on its way to an upstream, ended if it stops moving.
pub type UpstreamBody = IdleBody<Incoming>;

type H1Sender = http1::SendRequest<UpstreamBody>;

/// Keep-alive HTTP connections per pool key.
pub struct HttpPool {
    /// Idle connections with the time each was checked in, newest last.
    h1: Mutex<HashMap<u64, Vec<(H1Sender, Instant)>>>,
    h2: Mutex<HashMap<u64, http2::SendRequest<UpstreamBody>>>,
    /// New connections are counted here.
    telemetry: Arc<Telemetry>,
}

/// A connection ready for one request.
pub enum Sender {
    H1 {
        sender: H1Sender,
        key: u64,
        /// Whether it came from the pool (it may have been closed by the server since).
        reused: bool,
    },
    H2(http2::SendRequest<UpstreamBody>),
}

impl HttpPool {
    pub fn new(telemetry: Arc<Telemetry>) -> HttpPool {
        HttpPool {
            h1: Mutex::default(),
            h2: Mutex::default(),
            telemetry,
        }
    }

    /// A pooled connection to `ep`, or a new one. Connect and TLS failures surface here,
    /// before the request is committed, so the caller can try another endpoint.
    pub async fn acquire(
        self: &Arc<Self>,
        ep: &EndpointRoute,
        flavor: Flavor,
        upstream_idle: Duration,
    ) -> Result<Sender, UpstreamError> {
        if flavor == Flavor::Http2 {
            let existing = {
                let conns = self.h2.lock().unwrap();
                conns.get(&ep.pool_key).filter(|s| !s.is_closed()).cloned()
            };
            if let Some(s) = existing {
                return Ok(Sender::H2(s));
            }
            let sender = Box::pin(self.new_h2(ep)).await?;
            self.h2.lock().unwrap().insert(ep.pool_key, sender.clone());
            return Ok(Sender::H2(sender));
        }
        if let Some(sender) = self.checkout_h1(ep.pool_key, upstream_idle) {
            return Ok(Sender::H1 {
                sender,
                key: ep.pool_key,
                reused: true,
            });
        }
        // Boxed: connecting (TCP, TLS, HTTP handshakes) is a large future, and most
        // requests reuse a pooled connection; the request path should not carry it.
        Ok(Sender::H1 {
            sender: Box::pin(self.new_h1(ep)).await?,
            key: ep.pool_key,
            reused: false,
        })
    }

    async fn new_h2(
        &self,
        ep: &EndpointRoute,
    ) -> Result<http2::SendRequest<UpstreamBody>, UpstreamError> {
        let (io, _) = connect(ep, Flavor::Http2, &self.telemetry).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| UpstreamError {
                phase: Phase::HttpHandshake,
                reason: e.to_string(),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn new_h1(&self, ep: &EndpointRoute) -> Result<H1Sender, UpstreamError> {
        let (io, _) = connect(ep, Flavor::Http1, &self.telemetry).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| UpstreamError {
                phase: Phase::HttpHandshake,
                reason: e.to_string(),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends the request and waits for the response head, both ended if the stream's
    /// `clock` is stopped (the stream idle timeout; the response body carries the clock
    /// on). A pooled HTTP/1 connection that the server closed meanwhile hands the request
    /// back unsent; it then goes over a new connection to `ep`.
    pub async fn send(
        self: &Arc<Self>,
        sender: Sender,
        ep: &EndpointRoute,
        req: Request<Incoming>,
        clock: &Arc<StreamClock>,
    ) -> Result<http::Response<IdleBody<Incoming>>, UpstreamError> {
        let req = req.map(|b| IdleBody::new(b, clock.clone(), Stalled::Request));
        let sent = clock.within(self.exchange(sender, ep, req)).await;
        let stalled = |e: UpstreamError| match clock.stalled() {
            Some(Stalled::Request) => UpstreamError {
                phase: Phase::RequestIdle,
                reason: "the client's request body stopped moving".into(),
            },
            Some(Stalled::Response) => UpstreamError {
                phase: Phase::ResponseIdle,
                reason: "the upstream's answer did not come".into(),
            },
            None => e,
        };
        match sent {
            Ok(Ok(resp)) => Ok(resp.map(|b| IdleBody::new(b, clock.clone(), Stalled::Response))),
            Ok(Err(e)) => Err(stalled(e)),
            Err(_) => Err(stalled(UpstreamError {
                phase: Phase::ResponseIdle,
                reason: String::new(),
            })),
        }
    }

    async fn exchange(
        self: &Arc<Self>,
        sender: Sender,
        ep: &EndpointRoute,
        req: Request<UpstreamBody>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        match sender {
            Sender::H2(mut s) => s.send_request(req).await.map_err(|e| UpstreamError {
                phase: Phase::Request,
                reason: request_reason(&e),
            }),
            Sender::H1 {
                mut sender,
                key,
                reused,
            } => {
                let req = match sender.try_send_request(req).await {
                    Ok(resp) => {
                        self.checkin_h1(key, sender);
                        return Ok(resp);
                    }
                    Err(mut e) => match (reused, e.take_message()) {
                        (true, Some(back)) => back,
                        _ => {
                            return Err(UpstreamError {
                                phase: Phase::Request,
                                reason: request_reason(e.error()),
                            })
                        }
                    },
                };
                let mut sender = Box::pin(self.new_h1(ep)).await?;
                match sender.send_request(req).await {
                    Ok(resp) => {
                        self.checkin_h1(key, sender);
                        Ok(resp)
                    }
                    Err(e) => Err(UpstreamError {
                        phase: Phase::Request,
                        reason: request_reason(&e),
                    }),
                }
            }
        }
    }

    /// The newest idle connection to `key` that is still open and was idle less than
    /// `upstream_idle`; older ones are closed (dropped).
    fn checkout_h1(&self, key: u64, upstream_idle: Duration) -> Option<H1Sender> {
        let mut idle = self.h1.lock().unwrap();
        let list = idle.get_mut(&key)?;
        // Newest last: when the newest is too old, so are all the others.
        if list
            .last()
            .is_some_and(|(_, since)| since.elapsed() >= upstream_idle)
        {
            list.clear();
        }
        while let Some((sender, _)) = list.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Returns the connection to the pool once its response has been read.
    fn checkin_h1(self: &Arc<Self>, key: u64, mut sender: H1Sender) {
        let pool = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = pool.h1.lock().unwrap();
                let list = idle.entry(key).or_default();
                if list.len() < MAX_IDLE_PER_KEY {
                    list.push((sender, Instant::now()));
                }
            }
        });
    }

    /// Closes every pooled HTTP/1.1 connection idle for `upstream_idle` or longer, and
    /// HTTP/2 connections that ended; run periodically so unused keys do not keep theirs.
    pub fn sweep(&self, upstream_idle: Duration) {
        let mut idle = self.h1.lock().unwrap();
        idle.retain(|_, list| {
            list.retain(|(s, since)| since.elapsed() < upstream_idle && !s.is_closed());
            !list.is_empty()
        });
        drop(idle);
        self.h2.lock().unwrap().retain(|_, s| !s.is_closed());
    }

    /// Pooled idle HTTP/1.1 connections, for tests and the admin page.
    pub fn idle_h1(&self) -> usize {
        self.h1.lock().unwrap().values().map(Vec::len).sum()
    }
}

fn request_reason(e: &hyper::Error) -> String {
    let mut source = std::error::Error::source(e);
    let mut reset = false;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            reset |= io.kind() == std::io::ErrorKind::ConnectionReset;
        }
        source = s.source();
    }
    if e.is_incomplete_message() || e.is_canceled() || reset {
        "the server closed the connection before responding (reset reason: connection termination; a STRICT server refuses plaintext this way)".into()
    } else if e.is_parse() {
        format!("the server's answer is not HTTP ({e})")
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}
