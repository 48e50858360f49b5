//! The stream idle timeout: a request and its response share one [`StreamClock`]; each
//! body frame that moves in either direction winds it. A body that waits past the clock
//! ends with [`StreamIdle`], and so does a wait for the response head ([`StreamClock::within`]).

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::LimitEvent;
use crate::telemetry::Telemetry;

/// Which side of a stream stopped moving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stalled {
    /// The client's request body.
    Request,
    /// The upstream's response (head or body).
    Response,
}

/// The stream stopped moving for the stream idle timeout.
#[derive(Debug, Clone, Copy)]
pub struct StreamIdle(pub Stalled);

impl std::fmt::Display for StreamIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Stalled::Request => f.write_str("stream idle timeout: the request body stopped"),
            Stalled::Response => f.write_str("stream idle timeout: the response stopped"),
        }
    }
}

impl Error for StreamIdle {}

fn process_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// When a stream last moved, shared by its request and response.
pub struct StreamClock {
    last_ms: AtomicU64,
    idle: Duration,
    /// 0 while running; then 1 + the [`Stalled`] side that ended it.
    stalled: AtomicU8,
    /// The client's request body has been read whole: a stall from then on is the
    /// upstream's.
    request_done: AtomicBool,
    telemetry: Arc<Telemetry>,
}

impl StreamClock {
    pub fn new(idle: Duration, telemetry: Arc<Telemetry>) -> Arc<StreamClock> {
        Arc::new(StreamClock {
            last_ms: AtomicU64::new(process_ms()),
            idle,
            stalled: AtomicU8::new(0),
            request_done: AtomicBool::new(false),
            telemetry,
        })
    }

    fn moved(&self) {
        self.last_ms.store(process_ms(), Ordering::Relaxed);
    }

    fn last(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }

    /// When the stream is due to be ended if nothing moves after `last`.
    fn deadline_after(&self, last: u64) -> tokio::time::Instant {
        let left = (last + self.idle.as_millis() as u64).saturating_sub(process_ms());
        tokio::time::Instant::now() + Duration::from_millis(left)
    }

    fn stall(&self, side: Stalled) -> StreamIdle {
        let code = 1 + side as u8;
        if self
            .stalled
            .compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.telemetry.limit_hit(LimitEvent::StreamIdleTimeout);
        }
        StreamIdle(side)
    }

    /// The side that stopped the stream, if it was stopped.
    pub fn stalled(&self) -> Option<Stalled> {
        match self.stalled.load(Ordering::Relaxed) {
            1 => Some(Stalled::Request),
            2 => Some(Stalled::Response),
            _ => None,
        }
    }

    /// `fut` (the wait for the response head), ended when the stream stops moving: while
    /// the request body is still being sent the clock keeps being wound.
    pub async fn within<F: Future>(&self, fut: F) -> Result<F::Output, StreamIdle> {
        let mut fut = std::pin::pin!(fut);
        loop {
            let last = self.last();
            match tokio::time::timeout_at(self.deadline_after(last), fut.as_mut()).await {
                Ok(out) => return Ok(out),
                // Nothing moved while the timer ran: the side still owing bytes stalled.
                Err(_) if self.last() == last => {
                    let side = if self.request_done.load(Ordering::Relaxed) {
                        Stalled::Response
                    } else {
                        Stalled::Request
                    };
                    return Err(self.stall(side));
                }
                Err(_) => {}
            }
        }
    }
}

/// A body that winds its stream's clock with every frame and ends with [`StreamIdle`]
/// when it waits past it.
pub struct IdleBody<B> {
    inner: B,
    clock: Arc<StreamClock>,
    side: Stalled,
    /// Made at the first wait (most small bodies never wait), with the clock reading it
    /// was set for.
    timer: Option<(Pin<Box<Sleep>>, u64)>,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, clock: Arc<StreamClock>, side: Stalled) -> IdleBody<B>
    where
        B: Body,
    {
        if side == Stalled::Request && inner.is_end_stream() {
            clock.request_done.store(true, Ordering::Relaxed);
        }
        IdleBody {
            inner,
            clock,
            side,
            timer: None,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.clock.moved();
                if this.side == Stalled::Request && (frame.is_none() || this.inner.is_end_stream())
                {
                    this.clock.request_done.store(true, Ordering::Relaxed);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => loop {
                let last = this.clock.last();
                let deadline = this.clock.deadline_after(last);
                let (timer, armed_for) = this
                    .timer
                    .get_or_insert_with(|| (Box::pin(tokio::time::sleep_until(deadline)), last));
                if *armed_for != last {
                    timer.as_mut().reset(deadline);
                    *armed_for = last;
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // The timer ran out; if nothing moved meanwhile, the stream is idle.
                if this.clock.last() == *armed_for {
                    return Poll::Ready(Some(Err(Box::new(this.clock.stall(this.side)))));
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn a_body_that_keeps_moving_is_not_cut_and_one_that_stops_is() {
        let telemetry = Arc::new(Telemetry::default());
        let clock = StreamClock::new(Duration::from_millis(150), telemetry.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut body = IdleBody::new(StreamBody::new(stream), clock.clone(), Stalled::Response);
        tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(tx);
        });
        for _ in 0..4 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("stream idle timeout"), "{err}");
        assert_eq!(clock.stalled(), Some(Stalled::Response));
        assert_eq!(
            telemetry.metrics.limits_of(LimitEvent::StreamIdleTimeout),
            1
        );
    }

    #[tokio::test]
    async fn the_response_head_wait_ends_when_nothing_moves() {
        let clock = StreamClock::new(Duration::from_millis(100), Arc::new(Telemetry::default()));
        // A request without a body: a stall is the upstream's.
        let _request = IdleBody::new(
            http_body_util::Empty::<Bytes>::new(),
            clock.clone(),
            Stalled::Request,
        );
        let never = std::future::pending::<()>();
        let started = Instant::now();
        assert!(clock.within(never).await.is_err());
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(clock.stalled(), Some(Stalled::Response));
        assert_eq!(clock.within(async { 7 }).await.unwrap(), 7);

        // A request body still owed: the stall is the client's.
        let clock = StreamClock::new(Duration::from_millis(100), Arc::new(Telemetry::default()));
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let _request = IdleBody::new(body, clock.clone(), Stalled::Request);
        assert!(clock.within(std::future::pending::<()>()).await.is_err());
        assert_eq!(clock.stalled(), Some(Stalled::Request));
    }
}
