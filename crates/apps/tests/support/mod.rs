//! Runs an app server on its own runtime thread, bound to 127.0.0.1:0, and drives it with
//! the real curl.

#![allow(dead_code)] // each test binary uses its own part

use std::future::Future;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server running until [`Running::stop`] (or drop).
pub struct Running {
    pub ports: Vec<u16>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Binds `listeners` ports and runs `server` on them until stopped.
    pub fn start<F, Fut>(listeners: usize, server: F) -> Running
    where
        F: FnOnce(Vec<TcpListener>, Shutdown) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        // Bound here, so the ports accept (queue) connections before the thread runs.
        let std_listeners: Vec<std::net::TcpListener> = (0..listeners)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect();
        let ports = std_listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listeners = std_listeners
                    .into_iter()
                    .map(|l| TcpListener::from_std(l).unwrap())
                    .collect();
                server(
                    listeners,
                    Box::pin(async move {
                        let _ = rx.await;
                    }),
                )
                .await;
            });
        });
        Running {
            ports,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// Signals shutdown and waits for the server to return.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if !std::thread::panicking() {
                result.expect("the server thread panicked");
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What curl saw.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    /// The raw response head (status line and headers).
    pub head: String,
    pub body: String,
}

impl Reply {
    /// A response header's value (first one, name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Runs `curl -sS <args>`: the last response's code, head (after redirects) and body.
pub fn curl(args: &[&str]) -> Reply {
    let heads = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "30"])
        .arg("-D")
        .arg(heads.path())
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = stdout
        .rsplit_once('\n')
        .expect("curl printed no status code");
    let heads = std::fs::read_to_string(heads.path()).unwrap();
    let head = heads
        .split("\r\n\r\n")
        .filter(|h| !h.trim().is_empty())
        .last()
        .unwrap_or("");
    Reply {
        code: code.trim().parse().expect("status code"),
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// `grep -o PATTERN` over `input`, with the real grep.
pub fn grep_o(pattern: &str, input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("grep")
        .args(["-o", pattern])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run grep");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}
