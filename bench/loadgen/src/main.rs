//! `tessera-loadgen`: an open-loop HTTP/1.1 load generator for Tessera's benchmarks.
//!
//! Requests are scheduled at fixed intervals (`--rate N` per second for `--duration S` seconds)
//! and served by at most `--connections C` connections (keep-alive, or one new connection per
//! request with `--close`). A request's latency runs from its *scheduled* send time to the end
//! of its response, so a stalled server is charged for every request it delayed
//! (coordinated-omission correction, as wrk2 and `oha --latency-correction`).
//!
//! The schedule is kept by the main thread, sleeping with `nanosleep` (timer slack lowered to
//! 1 ns) until shortly before each due time and spinning the rest, because tokio's timer wheel
//! has a 1 ms resolution and a VM's timer wakes tens of µs late, both more than the round trip
//! being measured. The I/O runs on a single-threaded tokio runtime on a second thread.
//! HTTP is written and parsed by hand: a fixed GET request, a status line and a
//! `Content-Length`-delimited (or connection-delimited) body.
//!
//! Output: one JSON line on stdout. Only loopback targets are accepted.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Open-loop HTTP/1.1 load at a fixed rate, with latency measured from the scheduled send time.
#[derive(Parser, Debug)]
#[command(name = "tessera-loadgen", version)]
struct Args {
    /// Requests per second, one every 1/N s.
    #[arg(long)]
    rate: f64,
    /// Maximum number of connections (and so of requests in flight).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds during which requests are scheduled.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// A new connection per request (`Connection: close`) instead of keep-alive.
    #[arg(long)]
    close: bool,
    /// Seconds after which one request counts as an error (timeout).
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
    /// Target, `http://127.0.0.1:PORT/PATH` (loopback only).
    url: String,
}

/// Where requests go and what they look like.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    addr: SocketAddr,
    authority: String,
    path: String,
}

/// Parses `http://HOST[:PORT][/PATH]`; HOST must be a loopback address or `localhost`.
fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let end = bracketed
            .find(']')
            .ok_or_else(|| format!("{url}: unclosed '['"))?;
        let port = bracketed[end + 1..].strip_prefix(':');
        (&bracketed[..end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| format!("{url}: bad port {p:?}"))?,
        None => 80,
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse()
            .map_err(|_| format!("{url}: host must be an IP address or localhost"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "{url}: refusing a non-loopback target ({ip}); benchmarks stay on this machine"
        ));
    }
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        authority: authority.to_string(),
        path: path.to_string(),
    })
}

fn request_bytes(target: &Target, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tessera-loadgen\r\nAccept: */*\r\n{connection}\r\n",
        target.path, target.authority
    )
    .into_bytes()
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    /// Bytes up to and including the blank line.
    header_len: usize,
    content_length: Option<usize>,
    /// The server will close the connection after this response.
    close: bool,
    chunked: bool,
}

const MAX_HEAD: usize = 64 * 1024;

/// Parses the status line and headers at the start of `buf`: `Ok(None)` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err("response head larger than 64 KiB".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut close = version == "HTTP/1.0";
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    Ok(Some(Head {
        status,
        header_len: end + 4,
        content_length,
        close,
        chunked,
    }))
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, String> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(32 * 1024);
    }
    stream.read_buf(buf).await.map_err(|e| e.to_string())
}

/// Sends `request` and reads one whole response: `(status, connection reusable)`.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(u16, bool), String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    buf.clear();
    let head = loop {
        if let Some(head) = parse_head(buf)? {
            break head;
        }
        if read_more(stream, buf).await? == 0 {
            return Err("connection closed before a response".into());
        }
    };
    if head.chunked {
        return Err("chunked responses are not supported".into());
    }
    let no_body = head.status < 200 || head.status == 204 || head.status == 304;
    match head.content_length {
        _ if no_body => Ok((head.status, !head.close)),
        Some(len) => {
            let total = head.header_len + len;
            while buf.len() < total {
                if read_more(stream, buf).await? == 0 {
                    return Err("connection closed in the body".into());
                }
            }
            Ok((head.status, !head.close))
        }
        // Delimited by the end of the connection.
        None => {
            while read_more(stream, buf).await? > 0 {
                buf.clear();
            }
            Ok((head.status, false))
        }
    }
}

/// The nearest-rank percentile (`p` in 0..=100) of an ascending slice; 0 when empty.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Scheduled send times, filled by the pacer thread and drained by the connection tasks.
#[derive(Default)]
struct Schedule {
    state: Mutex<ScheduleState>,
}

#[derive(Default)]
struct ScheduleState {
    due: VecDeque<Instant>,
    waiters: Vec<Waker>,
    finished: bool,
}

impl Schedule {
    fn push(&self, due: Instant) {
        let waiter = {
            let mut s = self.state.lock().unwrap();
            s.due.push_back(due);
            s.waiters.pop()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    }

    fn finish(&self) {
        let waiters = {
            let mut s = self.state.lock().unwrap();
            s.finished = true;
            std::mem::take(&mut s.waiters)
        };
        waiters.into_iter().for_each(Waker::wake);
    }

    /// The next scheduled send time, oldest first; `None` once the schedule is over.
    async fn next(&self) -> Option<Instant> {
        poll_fn(|cx| {
            let mut s = self.state.lock().unwrap();
            if let Some(due) = s.due.pop_front() {
                s.waiters.retain(|w| !w.will_wake(cx.waker()));
                Poll::Ready(Some(due))
            } else if s.finished {
                Poll::Ready(None)
            } else {
                if !s.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    s.waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

#[derive(Default)]
struct Stats {
    requests: u64,
    ok: u64,
    non2xx: u64,
    errors: u64,
    timeouts: u64,
    /// Scheduled time to response end, ns.
    latency_ns: Vec<u64>,
    /// Scheduled time to actual send, ns (how late the generator was).
    lag_ns: Vec<u64>,
    first_error: Option<String>,
}

struct Job {
    addr: SocketAddr,
    request: Arc<[u8]>,
    close: bool,
    timeout: Duration,
    /// Requests not started by then are counted as timeouts without being sent.
    give_up_at: Instant,
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

async fn connection_task(
    schedule: Arc<Schedule>,
    job: Arc<Job>,
    mut conn: Option<TcpStream>,
) -> Stats {
    let mut stats = Stats::default();
    let mut buf = Vec::with_capacity(32 * 1024);
    while let Some(due) = schedule.next().await {
        stats.requests += 1;
        let sent = Instant::now();
        stats
            .lag_ns
            .push(sent.saturating_duration_since(due).as_nanos() as u64);
        if sent > job.give_up_at {
            stats.errors += 1;
            stats.timeouts += 1;
            continue;
        }
        let attempt = tokio::time::timeout(job.timeout, async {
            let mut stream = match conn.take() {
                Some(s) => s,
                None => connect(job.addr).await?,
            };
            let (status, reusable) = exchange(&mut stream, &job.request, &mut buf).await?;
            Ok::<_, String>((stream, status, reusable))
        })
        .await;
        match attempt {
            Ok(Ok((stream, status, reusable))) => {
                let done = Instant::now();
                stats
                    .latency_ns
                    .push(done.saturating_duration_since(due).as_nanos() as u64);
                if (200..300).contains(&status) {
                    stats.ok += 1;
                } else {
                    stats.non2xx += 1;
                }
                if reusable && !job.close {
                    conn = Some(stream);
                }
            }
            Ok(Err(e)) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(e);
            }
            Err(_) => {
                stats.errors += 1;
                stats.timeouts += 1;
                stats.first_error.get_or_insert_with(|| "timeout".into());
            }
        }
    }
    stats
}

/// Lowers the timer slack of the calling thread (default 50 µs) so that sleeps end on time.
/// Linux exposes it for the main thread only (`/proc/self/timerslack_ns`), which is why the
/// pacer runs on the main thread. Best effort.
fn lower_timer_slack() {
    let _ = std::fs::write("/proc/self/timerslack_ns", "1");
}

/// Most the pacer spins before a due time: bounds its CPU when the machine is loaded.
const MAX_EARLY: Duration = Duration::from_micros(200);

/// Pushes the send times `start + i/rate` (before `end`) into `schedule`, each on time: the
/// thread sleeps until a little before the due time (by how late its recent wake-ups were; the
/// kernel's timer in a VM runs tens of µs late) and spins the rest.
fn pace(schedule: &Schedule, start: Instant, end: Instant, rate: f64) {
    let mut early = Duration::from_micros(30);
    for i in 0u64.. {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due >= end {
            break;
        }
        let now = Instant::now();
        if due > now {
            if due - now > early {
                let target = due - early;
                std::thread::sleep(target - now);
                let over = Instant::now().saturating_duration_since(target);
                early = ((early * 7 + over) / 8).min(MAX_EARLY);
            }
            while Instant::now() < due {
                std::hint::spin_loop();
            }
        }
        schedule.push(due);
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The I/O side, on a single-threaded runtime: opens the keep-alive connections, reports the
/// start instant through `started`, then serves the schedule until it is over.
async fn serve(
    args: &Args,
    target: &Target,
    schedule: Arc<Schedule>,
    started: std::sync::mpsc::Sender<Instant>,
) -> Result<Stats, String> {
    // Keep-alive connections are opened before the clock starts.
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(if args.close {
            None
        } else {
            connect(target.addr).await.ok()
        });
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let start = Instant::now();
    let job = Arc::new(Job {
        addr: target.addr,
        request: request_bytes(target, args.close).into(),
        close: args.close,
        timeout,
        give_up_at: start + Duration::from_secs_f64(args.duration) + timeout,
    });
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(connection_task(schedule.clone(), job.clone(), conn)))
        .collect();
    started
        .send(start)
        .map_err(|_| "the pacer is gone".to_string())?;
    let mut all = Stats::default();
    for task in tasks {
        let s = task
            .await
            .map_err(|e| format!("connection task failed: {e}"))?;
        all.requests += s.requests;
        all.ok += s.ok;
        all.non2xx += s.non2xx;
        all.errors += s.errors;
        all.timeouts += s.timeouts;
        all.latency_ns.extend(s.latency_ns);
        all.lag_ns.extend(s.lag_ns);
        if all.first_error.is_none() {
            all.first_error = s.first_error;
        }
    }
    Ok(all)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        eprintln!("tessera-loadgen: --rate must be a positive number");
        return ExitCode::from(2);
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        eprintln!("tessera-loadgen: --duration must be in (0, 3600] seconds");
        return ExitCode::from(2);
    }
    if !(args.timeout > 0.0 && args.timeout <= 60.0) {
        eprintln!("tessera-loadgen: --timeout must be in (0, 60] seconds");
        return ExitCode::from(2);
    }
    if args.connections == 0 || args.connections > 10_000 {
        eprintln!("tessera-loadgen: --connections must be in 1..=10000");
        return ExitCode::from(2);
    }
    let target = match parse_url(&args.url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tessera-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let args = Arc::new(args);

    // I/O on its own thread; the schedule on the main thread (see `lower_timer_slack`).
    let schedule = Arc::new(Schedule::default());
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let io = {
        let (args, schedule) = (args.clone(), schedule.clone());
        std::thread::spawn(move || -> Result<Stats, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            rt.block_on(serve(&args, &target, schedule, started_tx))
        })
    };
    if let Ok(start) = started_rx.recv() {
        lower_timer_slack();
        let end = start + Duration::from_secs_f64(args.duration);
        pace(&schedule, start, end, args.rate);
        schedule.finish();
        return report(&args, io.join(), start);
    }
    schedule.finish();
    match io.join() {
        Ok(Err(e)) => eprintln!("tessera-loadgen: {e}"),
        _ => eprintln!("tessera-loadgen: the I/O thread failed"),
    }
    ExitCode::FAILURE
}

fn report(args: &Args, io: std::thread::Result<Result<Stats, String>>, start: Instant) -> ExitCode {
    let mut all = match io {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            eprintln!("tessera-loadgen: {e}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("tessera-loadgen: the I/O thread panicked");
            return ExitCode::FAILURE;
        }
    };
    let elapsed = start.elapsed().as_secs_f64();
    all.latency_ns.sort_unstable();
    all.lag_ns.sort_unstable();
    if let Some(e) = &all.first_error {
        eprintln!("tessera-loadgen: {} errors, first: {e}", all.errors);
    }
    let lat = &all.latency_ns;
    println!(
        "{{\"requests\":{},\"ok\":{},\"non2xx\":{},\"errors\":{},\"timeouts\":{},\"duration_s\":{:.3},\"rps\":{:.1},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"lag_p50_ms\":{:.3},\"lag_p99_ms\":{:.3},\"rate\":{},\"connections\":{},\"close\":{}}}",
        all.requests,
        all.ok,
        all.non2xx,
        all.errors,
        all.timeouts,
        elapsed,
        all.ok as f64 / elapsed,
        ms(percentile(lat, 50.0)),
        ms(percentile(lat, 90.0)),
        ms(percentile(lat, 99.0)),
        ms(lat.last().copied().unwrap_or(0)),
        ms(percentile(&all.lag_ns, 50.0)),
        ms(percentile(&all.lag_ns, 99.0)),
        args.rate,
        args.connections,
        args.close,
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 99.9), 100);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 50.0), 7);
        assert_eq!(percentile(&[1, 2, 3], 50.0), 2);
        assert_eq!(percentile(&[], 99.0), 0);
    }

    #[test]
    fn parses_a_complete_head() {
        let resp = b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 3\r\nConnection: keep-alive\r\n\r\nok\n";
        let head = parse_head(resp).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 200,
                header_len: resp.len() - 3,
                content_length: Some(3),
                close: false,
                chunked: false,
            }
        );
    }

    #[test]
    fn head_incomplete_close_chunked_and_errors() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        let h = parse_head(
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.status, h.close, h.content_length), (503, true, Some(0)));
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert!(h.close);
        assert_eq!(h.content_length, None);
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.chunked);
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn urls_must_be_loopback() {
        let t = parse_url("http://127.0.0.1:8080/16k").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/16k")
        );
        let t = parse_url("http://localhost").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (80, "/"));
        assert_eq!(parse_url("http://[::1]:9/").unwrap().addr.port(), 9);
        assert!(parse_url("http://10.0.0.1:80/").is_err());
        assert!(parse_url("http://example.com/").is_err());
        assert!(parse_url("https://127.0.0.1/").is_err());
        assert!(parse_url("http://127.0.0.1:99999/").is_err());
    }

    #[test]
    fn request_is_a_fixed_get() {
        let t = parse_url("http://127.0.0.1:1/x").unwrap();
        let r = String::from_utf8(request_bytes(&t, true)).unwrap();
        assert!(r.starts_with("GET /x HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(r.ends_with("Connection: close\r\n\r\n"));
        assert!(!String::from_utf8(request_bytes(&t, false))
            .unwrap()
            .contains("Connection"));
    }
}
