//! The stream idle timeout: a request and its response share one [`StreamClock`]; each
//! body frame that moves in either direction winds it. The clock has no timer of its own
//! (a timer per request costs more than the rest of this module): the downstream
//! connection's watch checks its streams' clocks on its tick and stops a stream that
//! stood still too long ([`StreamClock::check`]). A body waiting on a stopped stream then
//! ends with [`StreamIdle`], and so does a wait for the response head
//! ([`StreamClock::within`]).

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

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
    /// 0 while running; then 1 + the [`Stalled`] side that ended it.
    stalled: AtomicU8,
    /// The client's request body has been read whole: a stall from then on is the
    /// upstream's.
    request_done: AtomicBool,
    /// The response was sent (or dropped): nothing to watch any more.
    finished: AtomicBool,
    /// The tasks waiting on each side, woken when the stream is stopped.
    waiting: Mutex<[Option<Waker>; 2]>,
}

impl StreamClock {
    pub fn new() -> Arc<StreamClock> {
        Arc::new(StreamClock {
            last_ms: AtomicU64::new(process_ms()),
            stalled: AtomicU8::new(0),
            request_done: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            waiting: Mutex::new([None, None]),
        })
    }

    fn moved(&self) {
        self.last_ms.store(process_ms(), Ordering::Relaxed);
    }

    /// The stream's response is done with.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Relaxed);
    }

    pub fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    /// Stops the stream if nothing moved for `idle`; true when this call stopped it.
    pub fn check(&self, idle: Duration) -> bool {
        if self.is_finished() || self.stalled().is_some() {
            return false;
        }
        let due = self.last_ms.load(Ordering::Relaxed) + idle.as_millis() as u64;
        if process_ms() < due {
            return false;
        }
        let side = if self.request_done.load(Ordering::Relaxed) {
            Stalled::Response
        } else {
            Stalled::Request
        };
        let stopped = self
            .stalled
            .compare_exchange(0, 1 + side as u8, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if stopped {
            for w in self.waiting.lock().unwrap().iter_mut() {
                if let Some(w) = w.take() {
                    w.wake();
                }
            }
        }
        stopped
    }

    /// The side that stopped the stream, if it was stopped.
    pub fn stalled(&self) -> Option<Stalled> {
        match self.stalled.load(Ordering::Acquire) {
            1 => Some(Stalled::Request),
            2 => Some(Stalled::Response),
            _ => None,
        }
    }

    /// Registers the task waiting on `side`, then tells whether the stream was stopped
    /// (checked after registering, so a stop in between is not missed).
    fn wait(&self, side: Stalled, cx: &Context<'_>) -> Option<Stalled> {
        {
            let mut waiting = self.waiting.lock().unwrap();
            let slot = &mut waiting[side as usize];
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        self.stalled()
    }

    /// `fut` (the wait for the response head), ended when the stream is stopped.
    pub async fn within<F: Future>(&self, fut: F) -> Result<F::Output, StreamIdle> {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            match self.wait(Stalled::Response, cx) {
                Some(side) => Poll::Ready(Err(StreamIdle(side))),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// A body that winds its stream's clock with every frame and ends with [`StreamIdle`]
/// once the stream was stopped.
pub struct IdleBody<B> {
    inner: B,
    clock: Arc<StreamClock>,
    side: Stalled,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, clock: Arc<StreamClock>, side: Stalled) -> IdleBody<B>
    where
        B: Body,
    {
        if side == Stalled::Request && inner.is_end_stream() {
            clock.request_done.store(true, Ordering::Relaxed);
        }
        IdleBody { inner, clock, side }
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
            Poll::Pending => match this.clock.wait(this.side, cx) {
                Some(side) => Poll::Ready(Some(Err(Box::new(StreamIdle(side))))),
                None => Poll::Pending,
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

    type Chunks =
        StreamBody<tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, std::io::Error>>>;

    fn chunks() -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
        Chunks,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (
            tx,
            StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
    }

    /// Checks `clock` every 20 ms, as a connection's watch does.
    fn watch(clock: Arc<StreamClock>, idle: Duration) {
        tokio::spawn(async move {
            while !clock.is_finished() {
                clock.check(idle);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    #[tokio::test]
    async fn a_body_that_keeps_moving_is_not_cut_and_one_that_stops_is() {
        let clock = StreamClock::new();
        watch(clock.clone(), Duration::from_millis(150));
        let _request = IdleBody::new(
            http_body_util::Empty::<Bytes>::new(),
            clock.clone(),
            Stalled::Request,
        );
        let (tx, inner) = chunks();
        let mut body = IdleBody::new(inner, clock.clone(), Stalled::Response);
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
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("stream idle timeout"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(clock.stalled(), Some(Stalled::Response));
        clock.finish();
    }

    #[tokio::test]
    async fn the_response_head_wait_ends_when_nothing_moves() {
        // A request without a body: a stall is the upstream's.
        let clock = StreamClock::new();
        watch(clock.clone(), Duration::from_millis(100));
        let _request = IdleBody::new(
            http_body_util::Empty::<Bytes>::new(),
            clock.clone(),
            Stalled::Request,
        );
        let started = Instant::now();
        assert!(clock.within(std::future::pending::<()>()).await.is_err());
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(clock.stalled(), Some(Stalled::Response));
        clock.finish();

        // A request body still owed: the stall is the client's.
        let clock = StreamClock::new();
        watch(clock.clone(), Duration::from_millis(100));
        let (_tx, inner) = chunks();
        let _request = IdleBody::new(inner, clock.clone(), Stalled::Request);
        assert!(clock.within(std::future::pending::<()>()).await.is_err());
        assert_eq!(clock.stalled(), Some(Stalled::Request));
        clock.finish();

        // An answer in time is not touched.
        let clock = StreamClock::new();
        assert_eq!(clock.within(async { 7 }).await.unwrap(), 7);
        assert!(!clock.check(Duration::from_secs(60)));
    }
}
