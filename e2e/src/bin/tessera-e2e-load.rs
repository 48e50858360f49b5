//! `tessera-e2e-load`: a bounded, open-loop HTTP/1.1 load for the fault suites, run inside
//! a pod with `tessera exec` so that its requests go through the pod's sidecar.
//!
//!   tessera-e2e-load --rate 200 --duration 60 [--connections 16] [--timeout 2] URL
//!
//! Requests are due every 1/rate s; each worker keeps one keep-alive connection and sends
//! the next due request on it. A request fails when it gets no answer (connect, reset,
//! end of stream, timeout) or an answer other than 2xx; it is not retried, so that every
//! failure the mesh let through is counted. A failed connection is dropped and the next
//! request opens a new one.
//!
//! Prints one JSON object: the wall-clock start (Unix ms), the number of requests, the
//! number answered 2xx, and each failure with its due time (ms after the start) and what
//! happened. Only loopback and 10.0.0.0/8 (the mesh's pod and service addresses) are
//! accepted as targets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

struct Args {
    rate: f64,
    duration: f64,
    connections: usize,
    timeout: Duration,
    url: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rate: 100.0,
        duration: 10.0,
        connections: 16,
        timeout: Duration::from_secs(2),
        url: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<f64, String> {
            it.next()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("{name} takes a positive number"))
        };
        match a.as_str() {
            "--rate" => args.rate = value("--rate")?.min(10_000.0),
            "--duration" => args.duration = value("--duration")?.min(600.0),
            "--connections" => args.connections = value("--connections")?.min(256.0) as usize,
            "--timeout" => args.timeout = Duration::from_secs_f64(value("--timeout")?),
            url if !url.starts_with('-') && args.url.is_empty() => args.url = url.to_string(),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if args.url.is_empty() {
        return Err("a URL is required".into());
    }
    Ok(args)
}

/// Where requests go: `http://HOST[:PORT][/PATH]`.
struct Target {
    addr: SocketAddr,
    authority: String,
    path: String,
}

fn target(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let allowed = match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback() || ip.octets()[0] == 10,
        IpAddr::V6(ip) => ip.is_loopback(),
    };
    if !allowed {
        return Err(format!(
            "{addr}: only loopback and 10.0.0.0/8 targets are allowed"
        ));
    }
    Ok(Target {
        addr,
        authority: authority.to_string(),
        path: path.to_string(),
    })
}

/// One request's outcome: `None` for a 2xx answer, else what went wrong.
fn exchange(
    conn: &mut Option<BufReader<TcpStream>>,
    t: &Target,
    timeout: Duration,
) -> Option<String> {
    if conn.is_none() {
        match TcpStream::connect_timeout(&t.addr, timeout) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(timeout));
                let _ = s.set_write_timeout(Some(timeout));
                let _ = s.set_nodelay(true);
                *conn = Some(BufReader::new(s));
            }
            Err(e) => return Some(format!("connect: {}", kind(&e))),
        }
    }
    let stream = conn.as_mut().expect("connected");
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\nuser-agent: tessera-e2e-load\r\n\r\n",
        t.path, t.authority
    );
    let result = stream
        .get_mut()
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {}", kind(&e)))
        .and_then(|()| read_response(stream));
    match result {
        Ok((status, keep)) => {
            if !keep {
                *conn = None;
            }
            (!(200..300).contains(&status)).then(|| format!("HTTP {status}"))
        }
        Err(e) => {
            *conn = None;
            Some(e)
        }
    }
}

fn kind(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timeout".into(),
        std::io::ErrorKind::UnexpectedEof => "end of stream".into(),
        _ => e.to_string(),
    }
}

/// Reads a response: its status and whether the connection stays open.
fn read_response(r: &mut BufReader<TcpStream>) -> Result<(u16, bool), String> {
    let line = read_line(r)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let (mut length, mut chunked, mut keep) = (None, false, true);
    loop {
        let h = read_line(r)?;
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else {
            continue;
        };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<u64>().ok(),
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => keep = value != "close",
            _ => {}
        }
    }
    if chunked {
        loop {
            let size = read_line(r)?;
            let size = u64::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size:?}"))?;
            skip(r, size)?;
            read_line(r)?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        skip(r, n)?;
    } else {
        let mut sink = Vec::new();
        r.read_to_end(&mut sink)
            .map_err(|e| format!("read: {}", kind(&e)))?;
        keep = false;
    }
    Ok((status, keep))
}

fn read_line(r: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Err("read: end of stream".into()),
        Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
        Err(e) => Err(format!("read: {}", kind(&e))),
    }
}

fn skip(r: &mut BufReader<TcpStream>, n: u64) -> Result<(), String> {
    let copied = std::io::copy(&mut r.by_ref().take(n), &mut std::io::sink())
        .map_err(|e| format!("read: {}", kind(&e)))?;
    if copied < n {
        return Err("read: end of stream".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let (args, t) = match parse_args().and_then(|a| target(&a.url).map(|t| (a, t))) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("tessera-e2e-load: {e}");
            return ExitCode::from(2);
        }
    };
    let t = Arc::new(t);
    let total = (args.rate * args.duration).round() as u64;
    let (due_tx, due_rx) = mpsc::channel::<(u64, Instant)>();
    let due_rx = Arc::new(Mutex::new(due_rx));
    let (done_tx, done_rx) = mpsc::channel::<(u64, Option<String>)>();
    let start = Instant::now();
    let start_unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let workers: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            let (due_rx, done_tx, t) = (due_rx.clone(), done_tx.clone(), t.clone());
            let timeout = args.timeout;
            std::thread::spawn(move || {
                let mut conn = None;
                loop {
                    let next = due_rx.lock().unwrap().recv();
                    let Ok((i, _)) = next else { return };
                    let outcome = exchange(&mut conn, &t, timeout);
                    let _ = done_tx.send((i, outcome));
                }
            })
        })
        .collect();
    drop(done_tx);
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let _ = due_tx.send((i, due));
    }
    drop(due_tx);
    let mut ok = 0u64;
    let mut failures = Vec::new();
    for (i, outcome) in done_rx {
        match outcome {
            None => ok += 1,
            Some(what) => failures.push((i, what)),
        }
    }
    for w in workers {
        let _ = w.join();
    }
    failures.sort();
    let failures: Vec<_> = failures
        .into_iter()
        .map(|(i, what)| {
            serde_json::json!({
                "at_ms": interval.mul_f64(i as f64).as_millis() as u64,
                "what": what,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "start_unix_ms": start_unix_ms as u64,
            "requests": total,
            "ok": ok,
            "failures": failures,
            "seconds": start.elapsed().as_secs_f64(),
        })
    );
    ExitCode::SUCCESS
}
