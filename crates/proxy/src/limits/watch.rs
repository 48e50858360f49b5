//! One downstream HTTP connection's clocks and budget. The connection's IO is read
//! through [`Watched`], which notices when a request head begins; each request holds a
//! [`RequestGuard`] until its response body is done; [`ConnWatch::expired`] resolves when a
//! limit ends the connection:
//! - the head clock runs from the connection's start, and then from a request's first
//!   byte, until hyper hands the parsed head over (HTTP/2 streams are bounded by the
//!   header list size instead, so once the preface is in, only the idle clock applies);
//! - the idle clock runs while no request is in flight;
//! - each request's [`StreamClock`] is checked on the watch's tick (the stream idle
//!   timeout), so requests need no timer of their own;
//! - cancelled requests (a client's RST_STREAM before the answer) spend a per-second
//!   budget; past it the connection is closed (HTTP/2 rapid reset).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::body::StreamClock;
use super::{LimitEvent, Limits};
use crate::telemetry::Telemetry;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The shared state of one downstream HTTP connection.
pub struct ConnWatch {
    epoch: Instant,
    header_read: Duration,
    idle: Duration,
    stream_idle: Duration,
    /// The clocks of the requests in flight (and of a few finished ones, pruned as new
    /// ones come).
    streams: Mutex<Vec<Arc<StreamClock>>>,
    telemetry: Arc<Telemetry>,
    resets_per_second: u32,
    /// Milliseconds since `epoch`, plus one, when the current request head began; 0 when
    /// no head is being read.
    head_since: AtomicU64,
    in_flight: AtomicU32,
    /// Milliseconds since `epoch` when the last request in flight ended.
    idle_since: AtomicU64,
    h2: AtomicBool,
    resets: Mutex<ResetWindow>,
    flooded: AtomicBool,
    alarm: Notify,
}

#[derive(Default)]
struct ResetWindow {
    started_ms: u64,
    count: u32,
}

impl ConnWatch {
    /// A connection that starts now: its first request head is due within the header
    /// read timeout.
    pub fn new(limits: &Limits, telemetry: Arc<Telemetry>) -> Arc<ConnWatch> {
        Arc::new(ConnWatch {
            epoch: Instant::now(),
            header_read: limits.header_read,
            idle: limits.idle,
            stream_idle: limits.stream_idle,
            streams: Mutex::default(),
            telemetry,
            resets_per_second: limits.h2_max_resets_per_second,
            head_since: AtomicU64::new(1),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            resets: Mutex::default(),
            flooded: AtomicBool::new(false),
            alarm: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Bytes arrived: with no request in flight they begin a request head.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
            && !self.h2.load(Ordering::Relaxed)
        {
            self.head_since.store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// The HTTP/2 preface is in: no connection-wide head clock from now on.
    fn preface_seen(&self) {
        self.h2.store(true, Ordering::Relaxed);
        self.idle_since.store(self.now_ms(), Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
    }

    /// A request's head has been read; the returned guard ends it and holds its clock.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        let clock = StreamClock::new();
        {
            let mut streams = self.streams.lock().unwrap();
            if streams.len() >= 8 {
                streams.retain(|c| !c.is_finished());
            }
            streams.push(clock.clone());
        }
        RequestGuard {
            watch: self.clone(),
            clock,
            answered: false,
        }
    }

    /// Stops the streams that stood still for the stream idle timeout.
    fn check_streams(&self) {
        let mut streams = self.streams.lock().unwrap();
        streams.retain(|c| !c.is_finished());
        for clock in streams.iter() {
            if clock.check(self.stream_idle) {
                self.telemetry.limit_hit(LimitEvent::StreamIdleTimeout);
            }
        }
    }

    fn request_ended(&self, answered: bool) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle_since.store(self.now_ms(), Ordering::Relaxed);
        }
        if !answered {
            self.cancelled();
        }
    }

    /// A request was dropped before its answer: the client cancelled it (or went away).
    fn cancelled(&self) {
        let now = self.now_ms();
        let mut w = self.resets.lock().unwrap();
        if now.saturating_sub(w.started_ms) >= 1000 {
            *w = ResetWindow {
                started_ms: now,
                count: 0,
            };
        }
        w.count += 1;
        if w.count > self.resets_per_second && !self.flooded.swap(true, Ordering::Relaxed) {
            self.alarm.notify_one();
        }
    }

    /// Resolves with the limit that ends this connection. The clocks are checked at
    /// their deadlines and at least every quarter of the shortest timeout, so a head that
    /// begins during a long idle wait is still timed, and a stream stopped, within a
    /// quarter of its timeout.
    pub async fn expired(&self) -> LimitEvent {
        let shortest = self.header_read.min(self.idle).min(self.stream_idle);
        let tick = (shortest / 4).max(Duration::from_millis(5));
        loop {
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                self.check_streams();
            }
            if self.flooded.load(Ordering::Relaxed) {
                return LimitEvent::H2ResetFlood;
            }
            let now = self.now_ms();
            let mut wake = now + tick.as_millis() as u64;
            let head = self.head_since.load(Ordering::Relaxed);
            if head != 0 {
                let due = head - 1 + self.header_read.as_millis() as u64;
                if now >= due {
                    return LimitEvent::HeaderTimeout;
                }
                wake = wake.min(due);
            } else if self.in_flight.load(Ordering::Relaxed) == 0 {
                let due = self.idle_since.load(Ordering::Relaxed) + self.idle.as_millis() as u64;
                if now >= due {
                    return LimitEvent::IdleTimeout;
                }
                wake = wake.min(due);
            }
            let at = self.epoch + Duration::from_millis(wake);
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = self.alarm.notified() => {}
            }
        }
    }
}

/// One request in flight, until its response body is done (or it is dropped unanswered,
/// which counts as a cancellation).
pub struct RequestGuard {
    watch: Arc<ConnWatch>,
    clock: Arc<StreamClock>,
    answered: bool,
}

impl RequestGuard {
    /// The request's stream clock.
    pub fn clock(&self) -> Arc<StreamClock> {
        self.clock.clone()
    }

    /// The handler produced a response; dropping the guard from now on is not a
    /// cancellation.
    pub fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.clock.finish();
        self.watch.request_ended(self.answered);
    }
}

/// A connection's IO, read through its [`ConnWatch`].
pub struct Watched<S> {
    inner: S,
    watch: Arc<ConnWatch>,
    /// Bytes of the HTTP/2 preface matched so far; `usize::MAX` once it cannot be one.
    preface: usize,
}

impl<S> Watched<S> {
    pub fn new(inner: S, watch: Arc<ConnWatch>) -> Watched<S> {
        Watched {
            inner,
            watch,
            preface: 0,
        }
    }

    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.preface < H2_PREFACE.len() {
            let want = &H2_PREFACE[self.preface..];
            let n = want.len().min(bytes.len());
            if bytes[..n] == want[..n] {
                self.preface += n;
                if self.preface == H2_PREFACE.len() {
                    self.watch.preface_seen();
                    return;
                }
            } else {
                self.preface = usize::MAX;
            }
        }
        self.watch.bytes_read();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let filled = &buf.filled()[before..];
            if !filled.is_empty() {
                // Only the first bytes matter for the preface; copy at most its length.
                let mut head = [0u8; 24];
                let n = filled.len().min(head.len());
                head[..n].copy_from_slice(&filled[..n]);
                self.saw(&head[..n]);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A future polled only after its own waker fired. Beside a busy connection in a
/// `select!`, the watch's timer would otherwise be polled (and the clock read) on every
/// wake of the connection; this way it costs one flag check.
pub struct Dormant<F> {
    fut: Pin<Box<F>>,
    flag: Option<Arc<WokenFlag>>,
}

struct WokenFlag {
    woken: AtomicBool,
    outer: Waker,
}

impl Wake for WokenFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.outer.wake_by_ref();
    }
}

impl<F: Future> Dormant<F> {
    pub fn new(fut: F) -> Dormant<F> {
        Dormant {
            fut: Box::pin(fut),
            flag: None,
        }
    }
}

impl<F: Future> Future for Dormant<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let flag = match &self.flag {
            Some(f) if f.outer.will_wake(cx.waker()) => {
                if !f.woken.swap(false, Ordering::Acquire) {
                    return Poll::Pending;
                }
                f.clone()
            }
            // First poll, or another task polls it now: poll and wake through a new flag.
            _ => {
                let f = Arc::new(WokenFlag {
                    woken: AtomicBool::new(false),
                    outer: cx.waker().clone(),
                });
                self.flag = Some(f.clone());
                f
            }
        };
        let waker = Waker::from(flag);
        self.fut.as_mut().poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits_t(header_ms: u64, idle_ms: u64, resets: u32) -> Limits {
        Limits {
            header_read: Duration::from_millis(header_ms),
            idle: Duration::from_millis(idle_ms),
            h2_max_resets_per_second: resets,
            ..Limits::default()
        }
    }

    async fn expires_within(watch: &ConnWatch, ms: u64) -> Option<LimitEvent> {
        tokio::time::timeout(Duration::from_millis(ms), watch.expired())
            .await
            .ok()
    }

    #[tokio::test]
    async fn a_silent_connection_meets_the_head_clock() {
        let watch = ConnWatch::new(&limits_t(50, 10_000, 100), Arc::default());
        assert_eq!(
            expires_within(&watch, 1000).await,
            Some(LimitEvent::HeaderTimeout)
        );
    }

    #[tokio::test]
    async fn a_request_in_flight_stops_both_clocks_and_its_end_starts_the_idle_one() {
        let watch = ConnWatch::new(&limits_t(50, 150, 100), Arc::default());
        let mut guard = watch.request_started();
        assert_eq!(expires_within(&watch, 300).await, None);
        guard.answered();
        drop(guard);
        assert_eq!(
            expires_within(&watch, 1000).await,
            Some(LimitEvent::IdleTimeout)
        );
    }

    #[tokio::test]
    async fn a_partial_head_after_a_request_meets_the_head_clock() {
        let watch = ConnWatch::new(&limits_t(100, 60_000, 100), Arc::default());
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = Watched::new(server, watch.clone());
        let mut guard = watch.request_started();
        guard.answered();
        drop(guard);
        client.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 64];
        let _ = io.read(&mut buf).await.unwrap();
        assert_eq!(
            expires_within(&watch, 1000).await,
            Some(LimitEvent::HeaderTimeout)
        );
    }

    #[tokio::test]
    async fn after_the_h2_preface_only_the_idle_clock_runs() {
        let watch = ConnWatch::new(&limits_t(50, 300, 100), Arc::default());
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = Watched::new(server, watch.clone());
        // The preface split across two reads, then a SETTINGS frame's bytes.
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let mut buf = [0u8; 64];
        let _ = io.read(&mut buf).await.unwrap();
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        let _ = io.read(&mut buf).await.unwrap();
        client
            .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        let _ = io.read(&mut buf).await.unwrap();
        assert_eq!(expires_within(&watch, 200).await, None);
        assert_eq!(
            expires_within(&watch, 1000).await,
            Some(LimitEvent::IdleTimeout)
        );
    }

    #[tokio::test]
    async fn a_dormant_future_is_polled_only_when_woken() {
        let polls = Arc::new(AtomicU32::new(0));
        let counted = polls.clone();
        let notify = Arc::new(Notify::new());
        let fired = notify.clone();
        let mut dormant = std::pin::pin!(Dormant::new(async move {
            counted.fetch_add(1, Ordering::Relaxed);
            fired.notified().await;
            counted.fetch_add(1, Ordering::Relaxed);
            7
        }));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(dormant.as_mut().poll(&mut cx).is_pending());
        for _ in 0..10 {
            assert!(dormant.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            1,
            "not polled while not woken"
        );
        notify.notify_one();
        assert_eq!(dormant.as_mut().poll(&mut cx), Poll::Ready(7));
    }

    #[tokio::test]
    async fn cancellations_past_the_budget_close_the_connection() {
        let watch = ConnWatch::new(&limits_t(10_000, 10_000, 5), Arc::default());
        for _ in 0..5 {
            drop(watch.request_started());
        }
        assert_eq!(expires_within(&watch, 100).await, None, "within budget");
        drop(watch.request_started());
        assert_eq!(
            expires_within(&watch, 100).await,
            Some(LimitEvent::H2ResetFlood)
        );
    }
}
