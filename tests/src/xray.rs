//! A stand-in for the AWS X-Ray daemon on loopback UDP. It reads each datagram as the
//! daemon does: the header line `{"format": "json", "version": 1}`, a newline, then one
//! segment document (JSON). Documents are kept; a datagram that is not that is kept aside
//! as malformed, so a test can say the exporter sent only what the daemon accepts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

#[derive(Default)]
struct Received {
    documents: Mutex<Vec<Value>>,
    malformed: Mutex<Vec<String>>,
    arrived: Notify,
}

/// The daemon; it stops when dropped.
pub struct XrayDaemon {
    address: std::net::SocketAddr,
    received: Arc<Received>,
    task: tokio::task::JoinHandle<()>,
}

/// One datagram as the daemon parses it: the segment document, or why it is refused.
fn parse(datagram: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(datagram).map_err(|e| format!("not UTF-8: {e}"))?;
    let (header, document) = text
        .split_once('\n')
        .ok_or_else(|| format!("no header line: {text:?}"))?;
    let header: Value =
        serde_json::from_str(header).map_err(|e| format!("header {header:?}: {e}"))?;
    if header != serde_json::json!({"format": "json", "version": 1}) {
        return Err(format!("header {header}"));
    }
    let document: Value =
        serde_json::from_str(document).map_err(|e| format!("document {document:?}: {e}"))?;
    if !document.is_object() {
        return Err(format!("document {document} is not an object"));
    }
    Ok(document)
}

impl XrayDaemon {
    /// Listen on a free loopback UDP port.
    pub async fn start() -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind a UDP port");
        let address = socket.local_addr().expect("its address");
        let received = Arc::new(Received::default());
        let keep = received.clone();
        let task = tokio::spawn(async move {
            // The daemon's own limit on a segment document is 64 KiB.
            let mut buffer = vec![0_u8; 1 << 16];
            while let Ok(n) = socket.recv(&mut buffer).await {
                match parse(&buffer[..n]) {
                    Ok(document) => keep.documents.lock().expect("lock").push(document),
                    Err(why) => keep.malformed.lock().expect("lock").push(why),
                }
                keep.arrived.notify_waiters();
            }
        });
        Self {
            address,
            received,
            task,
        }
    }

    /// `host:port`, for `AWS_XRAY_DAEMON_ADDRESS`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Datagrams the daemon would have refused, with why.
    pub fn malformed(&self) -> Vec<String> {
        self.received.malformed.lock().expect("lock").clone()
    }

    /// Wait until `done` holds for the documents received (or `timeout` passes), and
    /// return them.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.received.arrived.notified();
            let documents = self.received.documents.lock().expect("lock").clone();
            if done(&documents) || tokio::time::Instant::now() >= deadline {
                return documents;
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }
}

impl Drop for XrayDaemon {
    fn drop(&mut self) {
        self.task.abort();
    }
}
