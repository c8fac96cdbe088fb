//! A TCP proxy on loopback that can make connections go silent without closing them (the
//! failure mode of a connection wedged by a failover or a dead network path), or make the
//! server behind it unreachable (every connection closed, new ones refused) and back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct WedgingProxy {
    addr: SocketAddr,
    /// New connections start wedged while this is set.
    wedge_new: Arc<AtomicBool>,
    /// One flag per connection ever opened.
    connections: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    /// While set, connections are closed and new ones closed at once.
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl WedgingProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let wedge_new = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let task = {
            let wedge_new = Arc::clone(&wedge_new);
            let connections = Arc::clone(&connections);
            let down = Arc::clone(&down);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        continue;
                    }
                    let down = Arc::clone(&down);
                    let wedged = Arc::new(AtomicBool::new(wedge_new.load(Ordering::SeqCst)));
                    connections.lock().unwrap().push(Arc::clone(&wedged));
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(client_read, server_write, Arc::clone(&wedged), Arc::clone(&down)),
                            pump(server_read, client_write, wedged, down),
                        );
                    });
                }
            })
        };
        Self { addr, wedge_new, connections, down, task }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server becomes unreachable: open connections are closed, new ones closed at once.
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
    }

    /// The server is reachable again.
    pub fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Every connection, open or future, stops forwarding bytes but stays open.
    pub fn wedge_all(&self) {
        self.wedge_new.store(true, Ordering::SeqCst);
        for wedged in self.connections.lock().unwrap().iter() {
            wedged.store(true, Ordering::SeqCst);
        }
    }

    /// New connections forward again; the wedged ones stay silent forever.
    pub fn heal_new_connections(&self) {
        self.wedge_new.store(false, Ordering::SeqCst);
    }
}

impl Drop for WedgingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    wedged: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if down.load(Ordering::SeqCst) {
            return;
        }
        if wedged.load(Ordering::SeqCst) {
            // Hold the connection open and swallow nothing: just stop moving bytes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // Re-check the flag regularly even when bytes keep arriving slowly.
            _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if wedged.load(Ordering::SeqCst) {
            // Read just as the wedge began: these bytes are lost in the dead path.
            continue;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
