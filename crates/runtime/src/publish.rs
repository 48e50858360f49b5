//! NodePort and LoadBalancer services on the host's loopback: a listener on
//! `127.0.0.1:<nodePort>` in the host's network, each connection forwarded to the
//! service VIP from inside the cluster namespace (where kube-proxy's DNAT picks a pod).
//! The forwarding runs on one thread that entered the cluster namespace, so the sockets it
//! dials live there, while the listeners were bound on the host.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use tokio::sync::mpsc;

use crate::cluster::Published;
use crate::netns;

enum Command {
    Publish(Published, std::net::TcpListener),
    Withdraw(SocketAddr),
}

pub struct Publisher {
    tx: mpsc::UnboundedSender<Command>,
    active: BTreeMap<SocketAddr, Published>,
    /// Ports that could not be bound, with why (reported once).
    failed: BTreeMap<SocketAddr, String>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    pub fn start(cluster_ns: &Path) -> std::io::Result<Publisher> {
        let file = std::fs::File::open(cluster_ns)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("publish".into())
            .spawn(move || {
                if let Err(e) = netns::enter_net(&file) {
                    tracing::error!(error = %e, "publisher cannot enter the cluster namespace");
                    return;
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "publisher runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut tasks: BTreeMap<SocketAddr, tokio::task::JoinHandle<()>> =
                        BTreeMap::new();
                    while let Some(cmd) = rx.recv().await {
                        match cmd {
                            Command::Publish(p, listener) => {
                                let port = p.listen;
                                if let Some(old) = tasks.remove(&port) {
                                    old.abort();
                                }
                                tasks.insert(port, tokio::spawn(forward(p, listener)));
                            }
                            Command::Withdraw(port) => {
                                if let Some(t) = tasks.remove(&port) {
                                    t.abort();
                                }
                            }
                        }
                    }
                    for (_, t) in tasks {
                        t.abort();
                    }
                });
            })?;
        Ok(Publisher {
            tx,
            active: BTreeMap::new(),
            failed: BTreeMap::new(),
            thread: Some(thread),
        })
    }

    /// Publishes exactly `wanted`.
    pub fn sync(&mut self, wanted: &[Published]) {
        let stale: Vec<SocketAddr> = self
            .active
            .iter()
            .filter(|(listen, p)| !wanted.iter().any(|w| w.listen == **listen && w == *p))
            .map(|(listen, _)| *listen)
            .collect();
        for port in stale {
            self.active.remove(&port);
            let _ = self.tx.send(Command::Withdraw(port));
            tracing::info!(address = %port, "unpublished");
        }
        for w in wanted {
            if self.active.contains_key(&w.listen) {
                continue;
            }
            match std::net::TcpListener::bind(w.listen)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
            {
                Ok(l) => {
                    self.failed.remove(&w.listen);
                    self.active.insert(w.listen, w.clone());
                    tracing::info!(service = %w.service, address = %w.listen, "published");
                    let _ = self.tx.send(Command::Publish(w.clone(), l));
                }
                Err(e) => {
                    let why = e.to_string();
                    if self.failed.get(&w.listen) != Some(&why) {
                        tracing::error!(service = %w.service, address = %w.listen, error = %why,
                            "cannot publish on the host's loopback; the port is taken");
                        self.failed.insert(w.listen, why);
                    }
                }
            }
        }
    }

    pub fn stop(mut self) {
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn forward(p: Published, listener: std::net::TcpListener) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "publish listener");
            return;
        }
    };
    let target = SocketAddr::from((p.vip, p.port));
    loop {
        let Ok((mut inbound, peer)) = listener.accept().await else {
            continue;
        };
        let service = p.service.clone();
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            match tokio::net::TcpStream::connect(target).await {
                Ok(mut outbound) => {
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => {
                    tracing::warn!(%service, %peer, error = %e, "published service refused the connection");
                }
            }
        });
    }
}
