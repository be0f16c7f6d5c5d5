//! A small Socket.IO v5 client over the Engine.IO v4 websocket transport, for Rust
//! tests and load harnesses: connect with a token, emit with an ack, wait for
//! events. The official socket.io-client suite (tests/socketio) covers what
//! browsers see; this client lets Rust tests drive sockets beside REST calls.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// With `SB_SOURCE_ADDRESSES=N`, connections come from 127.0.0.2 … 127.0.0.(N+1)
/// in turn, as many clients would (nodes limit sessions per client address,
/// and one address has only so many ports); otherwise from the default.
fn source_address() -> Option<std::net::SocketAddr> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let count: u64 =
        std::env::var("SB_SOURCE_ADDRESSES").ok()?.parse().ok().filter(|n| (1..=250).contains(n))?;
    let i = NEXT.fetch_add(1, Ordering::Relaxed) % count;
    Some(std::net::SocketAddr::from(([127, 0, 0, 2 + i as u8], 0)))
}

/// A connected socket.
pub struct SioClient {
    out: mpsc::UnboundedSender<String>,
    events: mpsc::UnboundedReceiver<(String, Value)>,
    pending: Pending,
    next_id: AtomicU64,
    /// While `false`, nothing is read from the connection (a slow client).
    reading: tokio::sync::watch::Sender<bool>,
    /// The Socket.IO session id.
    pub sid: String,
}

/// Why a connection did not open.
#[derive(Debug)]
pub enum ConnectError {
    /// The server refused it: `connect_error` with its payload
    /// (`{ message, data: { code, message } }`).
    Refused(Value),
    Transport(String),
}

impl ConnectError {
    /// `(err.message, err.data.code)`.
    pub fn codes(&self) -> (String, String) {
        match self {
            ConnectError::Refused(v) => (
                v["message"].as_str().unwrap_or_default().to_owned(),
                v["data"]["code"].as_str().unwrap_or_default().to_owned(),
            ),
            ConnectError::Transport(e) => ("transport".to_owned(), e.clone()),
        }
    }
}

impl SioClient {
    /// Connects to `base` (`http://host:port`) with `token` in `auth`.
    pub async fn connect(base: &str, token: &str) -> Result<Self, ConnectError> {
        Self::connect_with(base, token, None).await
    }

    /// [`Self::connect`] with a small kernel receive buffer (`rcvbuf` bytes), so
    /// that a client that stops reading soon stops the server's writes too.
    pub async fn connect_with(base: &str, token: &str, rcvbuf: Option<u32>) -> Result<Self, ConnectError> {
        Self::connect_auth(base, json!({ "token": token }), rcvbuf).await
    }

    /// Connects with `auth` as the handshake's whole `auth` object (a token and,
    /// say, a `traceparent`).
    pub async fn connect_auth(base: &str, auth: Value, rcvbuf: Option<u32>) -> Result<Self, ConnectError> {
        let url = format!("{}/socket.io/?EIO=4&transport=websocket", base.replacen("http", "ws", 1));
        let addr: std::net::SocketAddr = base
            .trim_start_matches("http://")
            .parse()
            .map_err(|e| ConnectError::Transport(format!("{base}: {e}")))?;
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| ConnectError::Transport(e.to_string()))?;
        if let Some(local) = source_address() {
            socket.bind(local).map_err(|e| ConnectError::Transport(e.to_string()))?;
        }
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).map_err(|e| ConnectError::Transport(e.to_string()))?;
        }
        let tcp = socket.connect(addr).await.map_err(|e| ConnectError::Transport(e.to_string()))?;
        let (ws, _) = tokio_tungstenite::client_async(url, tcp)
            .await
            .map_err(|e| ConnectError::Transport(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let open = stream.next().await;
        if !matches!(&open, Some(Ok(Message::Text(t))) if t.starts_with('0')) {
            return Err(ConnectError::Transport(format!("no open packet: {open:?}")));
        }
        sink.send(Message::Text(format!("40{auth}").into()))
            .await
            .map_err(|e| ConnectError::Transport(e.to_string()))?;
        let sid = loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) if t.starts_with("40") => {
                    let v: Value = serde_json::from_str(&t[2..]).unwrap_or(Value::Null);
                    break v["sid"].as_str().unwrap_or_default().to_owned();
                }
                Some(Ok(Message::Text(t))) if t.starts_with("44") => {
                    return Err(ConnectError::Refused(serde_json::from_str(&t[2..]).unwrap_or(Value::Null)));
                }
                Some(Ok(Message::Text(t))) if &*t == "2" => {
                    let _ = sink.send(Message::Text("3".into())).await;
                }
                Some(Ok(_)) => {}
                other => return Err(ConnectError::Transport(format!("closed during connect: {other:?}"))),
            }
        };
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        let (pending_r, out_r) = (pending.clone(), out.clone());
        let (reading, mut may_read) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            loop {
                while !*may_read.borrow_and_update() {
                    if may_read.changed().await.is_err() {
                        return;
                    }
                }
                let Some(Ok(msg)) = stream.next().await else { break };
                let Message::Text(t) = msg else { continue };
                if &*t == "2" {
                    let _ = out_r.send("3".to_owned());
                } else if let Some(rest) = t.strip_prefix("42") {
                    let Ok(Value::Array(mut parts)) = serde_json::from_str::<Value>(rest) else { continue };
                    if parts.is_empty() {
                        continue;
                    }
                    let name = parts.remove(0).as_str().unwrap_or_default().to_owned();
                    let data = parts.into_iter().next().unwrap_or(Value::Null);
                    let _ = events_tx.send((name, data));
                } else if let Some(rest) = t.strip_prefix("43") {
                    let split = rest.find('[').unwrap_or(rest.len());
                    let (id, body) = rest.split_at(split);
                    let Ok(id) = id.parse::<u64>() else { continue };
                    let data = match serde_json::from_str::<Value>(body) {
                        Ok(Value::Array(parts)) => parts.into_iter().next().unwrap_or(Value::Null),
                        _ => Value::Null,
                    };
                    if let Some(tx) = pending_r.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
                        let _ = tx.send(data);
                    }
                } else if t.starts_with("41") || t.starts_with('1') {
                    let _ = events_tx.send(("disconnect".to_owned(), Value::Null));
                }
            }
            let _ = events_tx.send(("disconnect".to_owned(), Value::Null));
        });
        Ok(Self { out, events, pending, next_id: AtomicU64::new(1), reading, sid })
    }

    /// Stops reading from the connection (the server's queue for this socket
    /// fills), or starts again.
    pub fn set_reading(&self, on: bool) {
        let _ = self.reading.send(on);
    }

    /// A handle that turns reading on and off ([`Self::set_reading`]) after
    /// the client has moved elsewhere (into a task).
    pub fn reading_switch(&self) -> tokio::sync::watch::Sender<bool> {
        self.reading.clone()
    }

    /// Emits `event` with `data`; the ack arrives on the receiver.
    pub fn emit_ack_later(&self, event: &str, data: Value) -> oneshot::Receiver<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        let _ = self.out.send(format!("42{id}{}", json!([event, data])));
        rx
    }

    /// Every event received so far and until `wait` passes with none: (name, data).
    pub async fn drain_events(&mut self, wait: Duration) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout(wait, self.events.recv()).await {
            out.push(e);
        }
        out
    }

    /// Emits `event` with `data` and waits up to 5 s for its ack.
    pub async fn emit_with_ack(&self, event: &str, data: Value) -> Value {
        let rx = self.emit_ack_later(event, data);
        match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(v)) => v,
            _ => panic!("no ack for {event} within 5 s"),
        }
    }

    /// Emits without waiting.
    pub fn emit(&self, event: &str, data: Value) {
        let _ = self.out.send(format!("42{}", json!([event, data])));
    }

    /// The next event named `name` (others are dropped), or `None` after `wait`.
    pub async fn next_event(&mut self, name: &str, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((n, data))) if n == name => return Some(data),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }

    /// The next event of any name, or `None` after `wait` (or once the
    /// connection is gone and every event was taken).
    pub async fn next_any(&mut self, wait: Duration) -> Option<(String, Value)> {
        tokio::time::timeout(wait, self.events.recv()).await.ok().flatten()
    }

    /// Closes the connection.
    pub fn close(self) {
        let _ = self.out.send("41".to_owned());
    }
}

/// A Socket.IO client over Engine.IO long-polling, driven by hand: it reads
/// only when the test calls [`PollingClient::poll`], so the server's queue for
/// it fills exactly as for a browser that stopped polling.
pub struct PollingClient {
    http: reqwest::Client,
    url: String,
}

impl PollingClient {
    /// Opens a session and connects to the default namespace with `token`.
    pub async fn connect(base: &str, token: &str) -> Result<Self, ConnectError> {
        let http = reqwest::Client::builder()
            .local_address(source_address().map(|a| a.ip()))
            .build()
            .map_err(|e| ConnectError::Transport(e.to_string()))?;
        let open = http
            .get(format!("{base}/socket.io/?EIO=4&transport=polling"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| ConnectError::Transport(e.to_string()))?;
        let body = open.text().await.map_err(|e| ConnectError::Transport(e.to_string()))?;
        let handshake: Value = body
            .strip_prefix('0')
            .and_then(|j| serde_json::from_str(j).ok())
            .ok_or_else(|| ConnectError::Transport(format!("no open packet: {body}")))?;
        let sid = handshake["sid"].as_str().unwrap_or_default();
        let client = Self { http, url: format!("{base}/socket.io/?EIO=4&transport=polling&sid={sid}") };
        client.send(&format!("40{}", json!({ "token": token }))).await?;
        // Until the namespace answers (pings come and go meanwhile).
        loop {
            for packet in client.poll().await? {
                if let Some(refusal) = packet.strip_prefix("44") {
                    return Err(ConnectError::Refused(serde_json::from_str(refusal).unwrap_or(Value::Null)));
                }
                if packet.starts_with("40") {
                    return Ok(client);
                }
            }
        }
    }

    /// Sends one packet (e.g. `421["subscribe",{…}]`: an event with ack id 1).
    pub async fn send(&self, packet: &str) -> Result<(), ConnectError> {
        self.http
            .post(&self.url)
            .body(packet.to_owned())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map(|_| ())
            .map_err(|e| ConnectError::Transport(e.to_string()))
    }

    /// One poll: the packets the server had queued (pings answered).
    pub async fn poll(&self) -> Result<Vec<String>, ConnectError> {
        let res =
            self.http.get(&self.url).send().await.map_err(|e| ConnectError::Transport(e.to_string()))?;
        let body = res.text().await.map_err(|e| ConnectError::Transport(e.to_string()))?;
        let packets: Vec<String> =
            body.split('\u{1e}').filter(|p| !p.is_empty()).map(str::to_owned).collect();
        if packets.iter().any(|p| p == "2") {
            self.send("3").await?;
        }
        Ok(packets.into_iter().filter(|p| p != "2").collect())
    }
}
