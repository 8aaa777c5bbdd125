//! A listener that only counts connections: proof that a blocked destination
//! was never dialled.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub struct CountingListener {
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl CountingListener {
    /// Binds `ip` on an ephemeral port (any 127.0.0.0/8 address works on Linux).
    pub async fn bind(ip: IpAddr) -> Self {
        let listener = TcpListener::bind((ip, 0))
            .await
            .expect("bind counting listener");
        let addr = listener.local_addr().expect("listener address");
        let accepted = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}
