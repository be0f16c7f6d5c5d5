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

/// A connected socket.
pub struct SioClient {
    out: mpsc::UnboundedSender<String>,
    events: mpsc::UnboundedReceiver<(String, Value)>,
    pending: Pending,
    next_id: AtomicU64,
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
        let url = format!("{}/socket.io/?EIO=4&transport=websocket", base.replacen("http", "ws", 1));
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| ConnectError::Transport(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let open = stream.next().await;
        if !matches!(&open, Some(Ok(Message::Text(t))) if t.starts_with('0')) {
            return Err(ConnectError::Transport(format!("no open packet: {open:?}")));
        }
        let auth = json!({ "token": token });
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
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
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
        Ok(Self { out, events, pending, next_id: AtomicU64::new(1), sid })
    }

    /// Emits `event` with `data` and waits up to 5 s for its ack.
    pub async fn emit_with_ack(&self, event: &str, data: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        let _ = self.out.send(format!("42{id}{}", json!([event, data])));
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

    /// Closes the connection.
    pub fn close(self) {
        let _ = self.out.send("41".to_owned());
    }
}
