//! Faults under live sockets, against real processes, each bounded in time and
//! stopping what it starts: Redis killed (SIGKILL) and started again, without
//! persistence and with an append-only file fsynced on every write; a node cut
//! off from Redis by a proxy and reconnected; Postgres stopped and started
//! again.
//!
//! What every subscriber must see is checked the way a client would: each
//! event whose `publish` was acknowledged `ok` arrives once and in order, or
//! the subscriber is told (`system:lagging`, then `recovered: false` when it
//! subscribes again with `since`); never a silent gap. And no node is restarted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use switchboard_domain::{Role, TenantId, UserId};
use switchboard_testkit::{
    Node, PostgresServer, RedisCluster, RedisServer, SioClient, TcpProxy, env, user_token,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const TOPIC: &str = "channel:faults";

/// Polls `check` every 100 ms until it holds, for at most `within`; how long it took.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

async fn ready(node: &Node) -> StatusCode {
    node.status_of(Method::GET, "/health/ready", "").await
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    /// The `seq` of each event, in arrival order.
    seqs: Vec<u64>,
    /// `system:lagging` notices.
    lagging: usize,
    /// Subscriptions again with `since` that answered `recovered: false`.
    unrecovered: usize,
    /// Connections made again after the first was lost.
    reconnects: usize,
}

impl Seen {
    /// The acknowledged events it never got.
    fn missing(&self, acked: &[u64]) -> Vec<u64> {
        let got: BTreeSet<u64> = self.seqs.iter().copied().collect();
        acked.iter().copied().filter(|s| !got.contains(s)).collect()
    }

    fn in_order_once(&self) -> bool {
        self.seqs.windows(2).all(|w| w[0] < w[1])
    }
}

/// A subscriber that behaves as docs/socketio.md asks of a client: it keeps
/// the last offset it received and, on `system:lagging`, subscribes again with
/// `since` (retrying while the node answers that the topic is unavailable).
async fn follower(base: &str, token: &str, stop: watch::Receiver<bool>) -> JoinHandle<Seen> {
    follow(subscribed(base, token, None).await, stop, None)
}

/// A socket subscribed to [`TOPIC`], with a small receive buffer if given.
async fn subscribed(base: &str, token: &str, rcvbuf: Option<u32>) -> SioClient {
    let c = SioClient::connect_with(base, token, rcvbuf).await.expect("subscriber connects");
    let ack = c.emit_with_ack("subscribe", json!({ "topic": TOPIC })).await;
    assert_eq!(ack["ok"], true, "{ack}");
    c
}

/// Follows `c`'s events until `stop` and a quiet moment. With `fallback`
/// (`base URL`, token), a lost connection reconnects there and subscribes with
/// `since`, as socket.io-client does through a balancer.
fn follow(
    mut c: SioClient,
    stop: watch::Receiver<bool>,
    fallback: Option<(String, String)>,
) -> JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut last: Option<String> = None;
        loop {
            match c.next_any(Duration::from_millis(200)).await {
                Some((name, _)) if name == "disconnect" && fallback.is_some() => {
                    let Some((base, token)) = &fallback else { continue };
                    c = SioClient::connect(base, token).await.expect("reconnects to the other node");
                    seen.reconnects += 1;
                    let ack = c.emit_with_ack("subscribe", json!({ "topic": TOPIC, "since": last })).await;
                    assert_eq!(ack["ok"], true, "{ack}");
                    if ack["recovered"] == false {
                        seen.unrecovered += 1;
                    }
                }
                Some((name, v)) if name == "tick" => {
                    last = v["offset"].as_str().map(str::to_owned);
                    seen.seqs.push(v["data"]["seq"].as_u64().unwrap());
                }
                Some((name, v)) if name == "system:lagging" => {
                    assert_eq!(v["topic"], TOPIC, "{v}");
                    seen.lagging += 1;
                    let since = last.clone().or_else(|| v["offset"].as_str().map(str::to_owned));
                    let deadline = Instant::now() + Duration::from_secs(20);
                    loop {
                        let ack =
                            c.emit_with_ack("subscribe", json!({ "topic": TOPIC, "since": since })).await;
                        if ack["ok"] == true {
                            if ack["recovered"] == false {
                                seen.unrecovered += 1;
                            }
                            break;
                        }
                        assert!(Instant::now() < deadline, "could not subscribe again: {ack}");
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
                Some(_) => {}
                None if *stop.borrow() => return seen,
                None => {}
            }
        }
    })
}

/// A socket that publishes `tick { seq }` about every 25 ms.
struct Publisher {
    socket: SioClient,
    next: u64,
    /// The seqs whose publish was acknowledged `ok`.
    acked: Vec<u64>,
    refused: usize,
}

impl Publisher {
    async fn connect(base: &str, token: &str) -> Self {
        let socket = SioClient::connect(base, token).await.expect("publisher connects");
        let ack = socket.emit_with_ack("subscribe", json!({ "topic": TOPIC })).await;
        assert_eq!(ack["ok"], true, "{ack}");
        Self { socket, next: 1, acked: Vec::new(), refused: 0 }
    }

    async fn publish_for(&mut self, time: Duration) {
        let deadline = Instant::now() + time;
        while Instant::now() < deadline {
            let seq = self.next;
            self.next += 1;
            let rx = self.socket.emit_ack_later(
                "publish",
                json!({ "topic": TOPIC, "event": "tick", "data": { "seq": seq } }),
            );
            match tokio::time::timeout(Duration::from_secs(6), rx).await {
                Ok(Ok(ack)) if ack["ok"] == true => self.acked.push(seq),
                Ok(Ok(ack)) if ack["error"]["code"] == "not_subscribed" => {
                    // Its own subscription lagged too (`system:lagging`): a
                    // publisher only needs to be subscribed again.
                    self.refused += 1;
                    let _ = self.socket.emit_ack_later("subscribe", json!({ "topic": TOPIC })).await;
                }
                _ => self.refused += 1,
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Followers on each of `nodes`, `per_node` each.
async fn followers(
    nodes: &[&Node],
    per_node: usize,
    token: &str,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<Seen>> {
    let mut out = Vec::new();
    for node in nodes {
        for _ in 0..per_node {
            out.push(follower(&node.url(""), token, stop.clone()).await);
        }
    }
    out
}

async fn finish(stop: watch::Sender<bool>, subs: Vec<JoinHandle<Seen>>) -> Vec<Seen> {
    // Time for the last events (and any recovery) to arrive, then stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = stop.send(true);
    let mut out = Vec::new();
    for s in subs {
        out.push(s.await.expect("subscriber task"));
    }
    out
}

fn member(tenant: TenantId) -> String {
    user_token(tenant, UserId::new(), Role::Member)
}

/// The Redis a fault test breaks: one server, or a cluster of three masters
/// of which the one that holds the test's topic is killed.
enum Store {
    One(RedisServer),
    Cluster(RedisCluster, usize),
}

impl Store {
    fn url(&self) -> String {
        match self {
            Store::One(r) => r.url(),
            Store::Cluster(c, _) => c.url(),
        }
    }

    /// Kills (SIGKILL) the server, or the master that holds `room`'s history.
    fn kill(&mut self, room: &str) {
        match self {
            Store::One(r) => r.kill(),
            Store::Cluster(c, killed) => {
                *killed = c.master_of(&format!("sb:{{{room}}}:h"));
                c.kill(*killed);
            }
        }
    }

    fn restart(&mut self) {
        match self {
            Store::One(r) => r.restart(),
            Store::Cluster(c, killed) => c.restart(*killed),
        }
    }
}

/// Redis (or a cluster master) SIGKILLed and started again under two nodes,
/// eight subscribers and a publisher: what the subscribers saw, the acked
/// seqs, the seqs acked before the kill, and how long the nodes took to be
/// ready again.
async fn redis_killed_and_restarted(mut store: Store, name: &str) -> (Vec<Seen>, Vec<u64>, usize, Duration) {
    let url = store.url();
    let a = Node::spawn_with(BIN, &format!("{name}-a"), &[("REDIS_URL", &url)]);
    let b = Node::spawn_with(BIN, &format!("{name}-b"), &[("REDIS_URL", &url)]);
    let tenant = a.create_tenant(name).await;
    let token = member(tenant);
    let (stop_tx, stop) = watch::channel(false);
    let subs = followers(&[&a, &b], 4, &token, &stop).await;
    let mut publisher = Publisher::connect(&a.url(""), &token).await;
    publisher.publish_for(Duration::from_secs(1)).await;
    let before_kill = publisher.acked.len();

    store.kill(&format!("t:{tenant}:{TOPIC}"));
    for node in [&a, &b] {
        eventually(Duration::from_secs(10), "readiness reports Redis down", || async {
            ready(node).await == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
        // REST reads keep working, and new sockets still connect (connection
        // limits fall back to this node's share).
        let status = node.status_of(Method::GET, "/api/v1/projects", &token).await;
        assert_eq!(status, StatusCode::OK, "a REST read while Redis is down");
        let late = SioClient::connect(&node.url(""), &token).await;
        assert!(late.is_ok(), "a socket connects while Redis is down: {:?}", late.err());
    }
    publisher.publish_for(Duration::from_millis(500)).await;

    store.restart();
    let recovery = eventually(Duration::from_secs(15), "both nodes ready again", || async {
        ready(&a).await == StatusCode::OK && ready(&b).await == StatusCode::OK
    })
    .await;
    publisher.publish_for(Duration::from_secs(1)).await;
    let seen = finish(stop_tx, subs).await;
    (seen, publisher.acked, before_kill, recovery)
}

/// Without persistence: every subscriber got each acknowledged event or was
/// told, and got the events after the restart live.
fn told_of_every_gap(label: &str, seen: &[Seen], acked: &[u64], before_kill: usize) {
    assert!(before_kill >= 20 && acked.len() > before_kill + 20, "publishes went through: {}", acked.len());
    let after_restart = &acked[acked.len() - 20..];
    for (i, s) in seen.iter().enumerate() {
        let missing = s.missing(acked);
        assert!(s.in_order_once(), "subscriber {i}: out of order or twice: {:?}", s.seqs);
        assert!(
            missing.is_empty() || s.unrecovered > 0,
            "subscriber {i}: a silent gap: missed {missing:?} without being told ({s:?})"
        );
        assert!(
            s.missing(after_restart).is_empty(),
            "subscriber {i}: did not get live events again after the restart: {s:?}"
        );
        eprintln!(
            "{label}: subscriber {i}: {} of {} acked events, {} missing, lagging {}, recovered:false {}",
            acked.len() - missing.len(),
            acked.len(),
            missing.len(),
            s.lagging,
            s.unrecovered
        );
    }
}

/// With an fsynced append-only file: nothing acknowledged is lost.
fn nothing_lost(label: &str, seen: &[Seen], acked: &[u64], before_kill: usize, recovery: Duration) {
    assert!(before_kill >= 20 && acked.len() > before_kill + 20, "publishes went through: {}", acked.len());
    for (i, s) in seen.iter().enumerate() {
        assert!(s.in_order_once(), "subscriber {i}: out of order or twice: {:?}", s.seqs);
        assert_eq!(s.missing(acked), Vec::<u64>::new(), "subscriber {i} lost acknowledged events: {s:?}");
        assert_eq!(s.unrecovered, 0, "subscriber {i}: nothing was lost, yet recovered: false");
    }
    eprintln!(
        "{label}: {} acked events, all delivered to {} subscribers; nodes ready {recovery:?} after the restart",
        acked.len(),
        seen.len()
    );
}

#[tokio::test]
async fn redis_killed_without_persistence_loses_history_and_every_subscriber_is_told() {
    let store = Store::One(RedisServer::start(false));
    let (seen, acked, before_kill, recovery) = redis_killed_and_restarted(store, "kill-mem").await;
    told_of_every_gap("no persistence", &seen, &acked, before_kill);
    eprintln!("no persistence: nodes ready {recovery:?} after the restart");
}

#[tokio::test]
async fn redis_killed_with_an_fsynced_append_only_file_loses_nothing_acknowledged() {
    let store = Store::One(RedisServer::start(true));
    let (seen, acked, before_kill, recovery) = redis_killed_and_restarted(store, "kill-aof").await;
    nothing_lost("append-only", &seen, &acked, before_kill, recovery);
}

#[tokio::test]
async fn a_cluster_master_killed_without_persistence_is_told_to_every_subscriber() {
    let store = Store::Cluster(RedisCluster::start(false), 0);
    let (seen, acked, before_kill, recovery) = redis_killed_and_restarted(store, "ckill-mem").await;
    told_of_every_gap("cluster, no persistence", &seen, &acked, before_kill);
    eprintln!("cluster, no persistence: nodes ready {recovery:?} after the restart");
}

#[tokio::test]
async fn a_cluster_master_killed_with_an_fsynced_append_only_file_loses_nothing_acknowledged() {
    let store = Store::Cluster(RedisCluster::start(true), 0);
    let (seen, acked, before_kill, recovery) = redis_killed_and_restarted(store, "ckill-aof").await;
    nothing_lost("cluster, append-only", &seen, &acked, before_kill, recovery);
}

// Multi-threaded: the proxy runs in this process and must keep forwarding
// while the test blocks on starting a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_catches_its_subscribers_up_when_the_link_returns() {
    let redis_port: u16 = env("REDIS_URL").rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
    let proxy = TcpProxy::start(redis_port).await;
    let through = format!("redis://127.0.0.1:{}", proxy.port);
    let a = Node::spawn_with(BIN, "cut-a", &[("REDIS_URL", &through)]);
    let b = Node::spawn(BIN, "cut-b");
    eventually(Duration::from_secs(10), "the node behind the proxy is ready", || async {
        ready(&a).await == StatusCode::OK
    })
    .await;
    let tenant = b.create_tenant("cut").await;
    let token = member(tenant);
    let (stop_tx, stop) = watch::channel(false);
    let subs = followers(&[&a, &b], 3, &token, &stop).await;
    let mut publisher = Publisher::connect(&b.url(""), &token).await;
    publisher.publish_for(Duration::from_secs(1)).await;

    proxy.cut();
    eventually(Duration::from_secs(10), "the cut-off node reports itself not ready", || async {
        ready(&a).await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_eq!(ready(&b).await, StatusCode::OK, "the other node is unaffected");
    assert_eq!(a.status_of(Method::GET, "/api/v1/projects", &token).await, StatusCode::OK);
    let during = publisher.acked.len();
    publisher.publish_for(Duration::from_millis(1500)).await;
    assert!(publisher.acked.len() > during + 20, "the other node keeps publishing");

    proxy.restore();
    let recovery = eventually(Duration::from_secs(15), "the node is ready again", || async {
        ready(&a).await == StatusCode::OK
    })
    .await;
    publisher.publish_for(Duration::from_secs(1)).await;
    let seen = finish(stop_tx, subs).await;
    for (i, s) in seen.iter().enumerate() {
        assert!(s.in_order_once(), "subscriber {i}: out of order or twice: {:?}", s.seqs);
        assert_eq!(s.missing(&publisher.acked), Vec::<u64>::new(), "subscriber {i} lost events: {s:?}");
        assert_eq!(s.unrecovered, 0, "subscriber {i}: Redis kept history, yet recovered: false");
    }
    eprintln!(
        "cut off: {} acked events ({} while cut), all delivered to {} subscribers; ready {recovery:?} after the link returned",
        publisher.acked.len(),
        publisher.acked.len() - during,
        seen.len()
    );
}

#[tokio::test]
async fn postgres_stopped_and_started_again_refuses_writes_with_retry_after_and_keeps_sockets() {
    let pg = PostgresServer::start();
    let admin = pg.url("postgres");
    let app = pg.url("sb_fault_app:sb_fault_pw");
    let out = std::process::Command::new(BIN)
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_ADMIN_URL", &admin)
        .env("DATABASE_URL", &app)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
    let a = Node::spawn_with(BIN, "pg-a", &[("DATABASE_URL", &app)]);
    let b = Node::spawn_with(BIN, "pg-b", &[("DATABASE_URL", &app)]);
    let tenant = a.create_tenant("pg-outage").await;
    let token = member(tenant);
    let project = json!({ "name": "p" });
    let (status, body) = a.send_json(Method::POST, "/api/v1/projects", &token, &project).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut listener = SioClient::connect(&b.url(""), &token).await.unwrap();
    let ack = listener.emit_with_ack("subscribe", json!({ "topic": TOPIC })).await;
    assert_eq!(ack["ok"], true, "{ack}");
    let talker = SioClient::connect(&a.url(""), &token).await.unwrap();
    let ack = talker.emit_with_ack("subscribe", json!({ "topic": TOPIC })).await;
    assert_eq!(ack["ok"], true, "{ack}");

    pg.stop();
    let stopped = Instant::now();
    // A write answers 503 with Retry-After, in the error shape.
    let res = a.http.post(a.url("/api/v1/projects")).bearer_auth(&token).json(&project).send().await.unwrap();
    let took = stopped.elapsed();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    // The next ones do not wait for the pool: refused at once while it is down.
    let again = Instant::now();
    let (status, body) = a.send_json(Method::POST, "/api/v1/projects", &token, &project).await;
    let took_again = again.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    for node in [&a, &b] {
        assert_eq!(ready(node).await, StatusCode::SERVICE_UNAVAILABLE, "readiness while Postgres is down");
    }
    // Operators see the breaker open, and what it refused.
    assert_eq!(a.metric("switchboard_db_breaker_open").await, 1.0);
    assert!(a.metric("switchboard_db_refused_fast_total").await >= 1.0);
    // Sockets stay connected, and channel traffic flows between the nodes.
    for i in 0..5 {
        let ack = talker
            .emit_with_ack("publish", json!({ "topic": TOPIC, "event": "tick", "data": { "seq": i } }))
            .await;
        assert_eq!(ack["ok"], true, "a channel publish while Postgres is down: {ack}");
        let got = listener.next_event("tick", Duration::from_secs(5)).await;
        assert_eq!(got.map(|v| v["data"]["seq"].clone()), Some(json!(i)), "delivered on the other node");
    }

    pg.start_again();
    let recovery = eventually(Duration::from_secs(20), "writes succeed again on both nodes", || async {
        let mut ok = true;
        for node in [&a, &b] {
            let (status, _) = node.send_json(Method::POST, "/api/v1/projects", &token, &project).await;
            ok &= status == StatusCode::CREATED && ready(node).await == StatusCode::OK;
        }
        ok
    })
    .await;
    for node in [&a, &b] {
        assert_eq!(node.metric("switchboard_db_breaker_open").await, 0.0, "the breaker closed again");
    }
    let ack = talker
        .emit_with_ack("publish", json!({ "topic": TOPIC, "event": "tick", "data": { "seq": 99 } }))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(
        listener.next_event("tick", Duration::from_secs(5)).await.is_some(),
        "the same sockets still work"
    );
    eprintln!(
        "postgres down: the first write answered 503 in {took:?}, the next in {took_again:?}; \
         writes resumed {recovery:?} after the start"
    );
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_told_and_recovers_while_the_others_miss_nothing() {
    let node = Node::spawn_with(BIN, "slow", &[("SOCKET_EVENTS_PER_SECOND", "10000")]);
    let tenant = node.create_tenant_with("slow", json!({ "events_per_second": 10000 })).await;
    let token = member(tenant);
    let base = node.url("");
    let (stop_tx, stop) = watch::channel(false);
    let fast = followers(&[&node], 5, &token, &stop).await;
    // A client that stops reading: its kernel buffers fill, then its queue on the node.
    let slow_socket = subscribed(&base, &token, Some(4096)).await;
    slow_socket.set_reading(false);
    let slow_reading = slow_socket.reading_switch();
    let slow = follow(slow_socket, stop.clone(), None);
    let publisher = SioClient::connect(&base, &token).await.unwrap();
    let ack = publisher.emit_with_ack("subscribe", json!({ "topic": TOPIC })).await;
    assert_eq!(ack["ok"], true, "{ack}");
    // Events of 16 KiB until the node takes the slow one off the topic, and a
    // few more after.
    let filler = "x".repeat(16 * 1024);
    let mut acked = Vec::new();
    let mut after = None;
    for seq in 1..=2000u64 {
        publish_large(&publisher, seq, &filler).await;
        acked.push(seq);
        if after.is_none() && seq % 10 == 0 && taken_off(&node).await {
            after = Some(seq);
        }
        if after.is_some_and(|a| seq >= a + 20) {
            break;
        }
    }
    let detached_at = after.expect("the slow subscriber was never taken off the topic");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = slow_reading.send(true);
    let seen = finish(stop_tx, fast).await;
    for (i, s) in seen.iter().enumerate() {
        assert!(s.in_order_once(), "subscriber {i}: out of order or twice");
        assert_eq!(s.missing(&acked), Vec::<u64>::new(), "a reading subscriber {i} lost events");
        assert_eq!(s.lagging, 0, "a reading subscriber {i} was told it lagged");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = slow.await.unwrap();
    assert!(s.lagging >= 1, "the slow subscriber was never told: {} events", s.seqs.len());
    assert!(s.in_order_once(), "the slow subscriber: out of order or twice");
    assert_eq!(s.missing(&acked), Vec::<u64>::new(), "the slow subscriber recovered everything from history");
    assert_eq!(s.unrecovered, 0);
    assert_eq!(node.metric("switchboard_lagging_disconnects_total").await, 0.0);
    eprintln!(
        "slow consumer: taken off after about {detached_at} events of 16 KiB, told {} time(s), then recovered all {}",
        s.lagging,
        acked.len()
    );
}

/// A client that stops reading altogether (its kernel buffers full, its pings
/// unanswered) is disconnected at its ping timeout like any other, and what
/// the node holds for it goes: the connection it counted against its
/// tenant's limit is free again. The node's writes to it wait on the peer and
/// would otherwise keep its session open.
#[tokio::test]
async fn a_client_that_stops_reading_altogether_is_disconnected_at_its_ping_timeout() {
    let node = Node::spawn_with(BIN, "stalled", &[("SOCKET_EVENTS_PER_SECOND", "10000")]);
    let limits = json!({ "events_per_second": 10000, "max_connections": 2 });
    let tenant = node.create_tenant_with("stalled", limits).await;
    let token = member(tenant);
    let stalled = subscribed(&node.url(""), &token, Some(4096)).await;
    stalled.set_reading(false);
    let publisher = subscribed(&node.url(""), &token, None).await;
    // Events of 16 KiB until its queue is full and the node takes it off the
    // topic: by then the node's writes to it wait on the peer.
    let filler = "x".repeat(16 * 1024);
    let mut lagged = false;
    for seq in 1..=2000u64 {
        publish_large(&publisher, seq, &filler).await;
        if seq % 10 == 0 && taken_off(&node).await {
            lagged = true;
            break;
        }
    }
    assert!(lagged, "the stalled client was never taken off the topic");
    let base = node.url("");
    let third = || SioClient::connect(&base, &token);
    match third().await {
        Err(switchboard_testkit::sio::ConnectError::Refused(data)) => {
            assert_eq!(data["data"]["code"], "tenant_connection_limit", "{data}");
        }
        other => panic!("a third connection while the stalled one counts: {:?}", other.map(|_| ())),
    }
    // Pings every 25 s, answered within 20 s: gone within about 45 s of its
    // last answer, and the 2 s a closed session's writes may still take.
    let started = Instant::now();
    let admitted = loop {
        if let Ok(c) = third().await {
            break c;
        }
        assert!(started.elapsed() < Duration::from_secs(75), "the stalled client still holds its connection");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!(
        "a stalled client: its connection was free {:?} after it was taken off the topic",
        started.elapsed()
    );
    admitted.close();
    drop(stalled);
}

#[tokio::test]
async fn a_node_killed_under_load_its_clients_recover_on_the_other_and_its_presence_goes() {
    let mut a = Node::spawn(BIN, "crash-a");
    let b = Node::spawn(BIN, "crash-b");
    let tenant = b.create_tenant("crash").await;
    let token = member(tenant);
    let (stop_tx, stop) = watch::channel(false);
    // Four subscribers on A, each tracked in presence, that reconnect to B;
    // two on B.
    let mut subs = Vec::new();
    for i in 0..4 {
        let c = subscribed(&a.url(""), &token, None).await;
        let ack = c.emit_with_ack("presence:track", json!({ "topic": TOPIC, "state": { "i": i } })).await;
        assert_eq!(ack["ok"], true, "{ack}");
        subs.push(follow(c, stop.clone(), Some((b.url(""), token.clone()))));
    }
    subs.extend(followers(&[&b], 2, &token, &stop).await);
    let mut publisher = Publisher::connect(&b.url(""), &token).await;
    let list = || async {
        let ack = publisher_list(&b, &token).await;
        ack["entries"].as_array().map_or(usize::MAX, Vec::len)
    };
    assert_eq!(list().await, 4, "A's four presence entries");
    publisher.publish_for(Duration::from_secs(1)).await;

    a.kill();
    let killed = Instant::now();
    publisher.publish_for(Duration::from_secs(2)).await;
    // Its presence entries and its share of the tenant's connections go within
    // the heartbeat window (each check connects a socket, as clients would).
    let shares = || {
        switchboard_testkit::redis::command(&env("REDIS_URL"), &["HKEYS", &format!("sb:conns:{tenant}")])
            .unwrap()
            .texts()
    };
    eventually(
        Duration::from_secs(30),
        "the dead node's presence entries and connection share go",
        || async { list().await == 0 && shares().iter().all(|field| !field.starts_with("crash-a")) },
    )
    .await;
    let gone = killed.elapsed();
    publisher.publish_for(Duration::from_millis(500)).await;
    let seen = finish(stop_tx, subs).await;
    for (i, s) in seen.iter().enumerate() {
        assert!(s.in_order_once(), "subscriber {i}: out of order or twice: {:?}", s.seqs);
        assert_eq!(s.missing(&publisher.acked), Vec::<u64>::new(), "subscriber {i} lost events: {s:?}");
        assert_eq!(s.unrecovered, 0, "subscriber {i}: history covered the gap, yet recovered: false");
    }
    assert_eq!(seen.iter().map(|s| s.reconnects).sum::<usize>(), 4, "A's four subscribers reconnected");
    eprintln!(
        "node killed: {} acked events, all delivered to {} subscribers (4 through a reconnect); \
         its presence and connection share gone at most {gone:?} after the kill",
        publisher.acked.len(),
        seen.len(),
    );
}

/// Publishes event `seq` on [`TOPIC`] with `filler` in it, and checks it was accepted.
async fn publish_large(publisher: &SioClient, seq: u64, filler: &str) {
    let ack = publisher
        .emit_with_ack(
            "publish",
            json!({ "topic": TOPIC, "event": "tick", "data": { "seq": seq, "filler": filler } }),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
}

/// Whether `node` has taken a subscriber off a topic for lagging.
async fn taken_off(node: &Node) -> bool {
    node.metric("switchboard_lagging_subscribers_total").await >= 1.0
}

/// `presence:list` of [`TOPIC`] through a fresh socket on `node`.
async fn publisher_list(node: &Node, token: &str) -> Value {
    let c = subscribed(&node.url(""), token, None).await;
    let ack = c.emit_with_ack("presence:list", json!({ "topic": TOPIC })).await;
    c.close();
    ack
}
