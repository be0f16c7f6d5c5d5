//! The realtime benchmark driver behind `loadtests/realtime.sh`:
//!
//! - `handshakes URL TENANT COUNT CONCURRENCY`: authenticated connects per second
//!   (each socket connects, is admitted, and closes).
//! - `idle URL TENANT COUNT PID`: opens COUNT authenticated sockets, holds them,
//!   and reports the server's RSS growth per socket (from /proc/PID/status).
//! - `idle-polling URL TENANT COUNT PID`: as `idle`, with long-polling clients,
//!   each holding one poll open at the server as an idle browser does.
//! - `latency PUB_URL SUB_URL TENANT RATE SECONDS SUBSCRIBERS`: publishers on
//!   the first node at RATE events/s (ten sockets taking turns), SUBSCRIBERS sockets on the second; reports
//!   publish→deliver p50/p99/max and what was lost, and its parts: how long
//!   an event took to reach its first subscriber, and from its first to its
//!   last.
//! - `deltas URL_A URL_B TENANT API_KEY RUN RATE SECONDS WATCHERS BATCH`: WATCHERS
//!   sockets on `run:RUN`, alternating between the two nodes; a worker posts
//!   `POST /runs/RUN/deltas` with the API key, BATCH deltas per request, one
//!   request after another (as one run's stream is sent), alternating nodes,
//!   aiming at RATE deltas/s; reports the rate reached, post→deliver
//!   p50/p99/max, what was lost and what came out of order.
//! - `fairness URL TENANT_A TENANT_B RATE SECONDS SUBSCRIBERS STORMERS`: tenant
//!   B's live delivery on one node (RATE events/s to SUBSCRIBERS sockets), first
//!   alone, then while STORMERS sockets of tenant A on the same node loop
//!   large recovery replays (a topic holding 1,000 events of 2 KB, replayed
//!   from its start, over and over); reports B's p50/p99 both ways and what A's
//!   replays managed.
//! - `spread PUB_URL SUB_URL TENANT TOPICS PER_TOPIC RATE SECONDS`: many
//!   topics (spread over a cluster's slots), each with PER_TOPIC subscribers
//!   on the second node among sockets holding ten topics each; eight
//!   publishing sockets on the first node at RATE events/s in all, round robin
//!   over the topics; reports deliveries/s, p50/p99/max and what was lost.
//! - `chat PUB_URL SUB_URL TENANT TOPICS PER_TOPIC RATE SECONDS`: as
//!   `spread`, but every publish asks for its ack: reports how many were
//!   accepted, refused (`rate_limited`: the node pushing back) or never
//!   answered within the run, and the delivery of the accepted ones.
//! - `slow URL TENANT RATE SECONDS SUBSCRIBERS SLOW_PERCENT BYTES`: one node,
//!   RATE events/s of about BYTES each to SUBSCRIBERS sockets, first all
//!   reading, then (on a fresh topic) with SLOW_PERCENT of them not reading at
//!   all; reports the reading subscribers' p50/p99 both ways, what they lost,
//!   and how many of the others the node took off the topic.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use switchboard_domain::{Role, TenantId, UserId};
use switchboard_testkit::{SioClient, sio::PollingClient, user_token};

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

fn rss_kb(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg =
        |i: usize| args.get(i).cloned().unwrap_or_else(|| panic!("missing argument {i}; see the module doc"));
    match arg(0).as_str() {
        "handshakes" => {
            handshakes(&arg(1), arg(2).parse().unwrap(), arg(3).parse().unwrap(), arg(4).parse().unwrap())
                .await
        }
        "idle" => idle(&arg(1), arg(2).parse().unwrap(), arg(3).parse().unwrap(), &arg(4)).await,
        "idle-polling" => {
            idle_polling(&arg(1), arg(2).parse().unwrap(), arg(3).parse().unwrap(), &arg(4)).await
        }
        "latency" => {
            latency(
                &arg(1),
                &arg(2),
                arg(3).parse().unwrap(),
                arg(4).parse().unwrap(),
                arg(5).parse().unwrap(),
                arg(6).parse().unwrap(),
            )
            .await
        }
        "deltas" => {
            let n = |i: usize| arg(i).parse::<u64>().unwrap();
            deltas(
                &arg(1),
                &arg(2),
                arg(3).parse().unwrap(),
                &arg(4),
                &arg(5),
                n(6),
                n(7),
                n(8) as usize,
                n(9) as usize,
            )
            .await
        }
        "fairness" => {
            let n = |i: usize| arg(i).parse::<u64>().unwrap();
            fairness(
                &arg(1),
                arg(2).parse().unwrap(),
                arg(3).parse().unwrap(),
                n(4),
                n(5),
                n(6) as usize,
                n(7) as usize,
            )
            .await
        }
        "spread" => {
            let n = |i: usize| arg(i).parse::<u64>().unwrap();
            let shape = Shape { topics: n(4) as usize, per_topic: n(5) as usize, acked: false };
            spread(&arg(1), &arg(2), arg(3).parse().unwrap(), shape, n(6), n(7)).await
        }
        "chat" => {
            let n = |i: usize| arg(i).parse::<u64>().unwrap();
            let shape = Shape { topics: n(4) as usize, per_topic: n(5) as usize, acked: true };
            spread(&arg(1), &arg(2), arg(3).parse().unwrap(), shape, n(6), n(7)).await
        }
        "slow" => {
            let n = |i: usize| arg(i).parse::<u64>().unwrap();
            slow(&arg(1), arg(2).parse().unwrap(), n(3), n(4), n(5) as usize, n(6) as usize, n(7) as usize)
                .await
        }
        other => panic!("unknown mode {other}"),
    }
}

async fn handshakes(url: &str, tenant: TenantId, count: usize, concurrency: usize) {
    let token = Arc::new(user_token(tenant, UserId::new(), Role::Member));
    // Warm the node's tenant cache and the connection pool.
    SioClient::connect(url, &token).await.unwrap().close();
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, failed, token, url) = (next.clone(), failed.clone(), token.clone(), url.to_owned());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    match SioClient::connect(&url, &token).await {
                        Ok(s) => s.close(),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "handshakes: {count} in {secs:.2} s = {:.0}/s at concurrency {concurrency}, {} refused or failed",
        count as f64 / secs,
        failed.load(Ordering::Relaxed)
    );
}

async fn idle(url: &str, tenant: TenantId, count: usize, pid: &str) {
    let rss = hold_idle(url, tenant, count, pid, |url, token| async move {
        SioClient::connect(&url, &token).await.expect("connect")
    })
    .await;
    println!("idle: {count} sockets; {rss} per socket");
}

async fn idle_polling(url: &str, tenant: TenantId, count: usize, pid: &str) {
    let rss = hold_idle(url, tenant, count, pid, |url, token| async move {
        let client = PollingClient::connect(&url, &token).await.expect("connect");
        // One poll always open, as an idle browser keeps one (until the run ends).
        tokio::spawn(async move { while client.poll().await.is_ok() {} });
    })
    .await;
    println!("idle-polling: {count} clients; {rss} per client");
}

/// Opens `count` clients with `connect` (100 at a time), holds them 3 s, and
/// says how the server's RSS grew: "server RSS A KiB -> B KiB = C KiB".
async fn hold_idle<C, F>(url: &str, tenant: TenantId, count: usize, pid: &str, connect: C) -> String
where
    C: Fn(String, String) -> F,
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let before = rss_kb(pid);
    let mut held = Vec::with_capacity(count);
    for chunk in 0..count.div_ceil(100) {
        let batch: Vec<_> = (0..100.min(count - chunk * 100))
            .map(|_| tokio::spawn(connect(url.to_owned(), user_token(tenant, UserId::new(), Role::Member))))
            .collect();
        for b in batch {
            held.push(b.await.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kb(pid);
    drop(held);
    format!(
        "server RSS {before} KiB -> {after} KiB = {:.2} KiB",
        (after.saturating_sub(before)) as f64 / count as f64
    )
}

async fn latency(
    pub_url: &str,
    sub_url: &str,
    tenant: TenantId,
    rate: u64,
    seconds: u64,
    subscribers: usize,
) {
    let topic = format!("channel:bench-{}", uuid::Uuid::new_v4().simple());
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        let s = SioClient::connect(sub_url, &user_token(tenant, UserId::new(), Role::Member)).await.unwrap();
        let ack = s.emit_with_ack("subscribe", json!({ "topic": topic })).await;
        assert_eq!(ack["ok"], true, "{ack}");
        subs.push(s);
    }
    // Ten publishing sockets, as many clients would be, taking turns.
    let mut publishers = Vec::new();
    for _ in 0..10 {
        let p = SioClient::connect(pub_url, &user_token(tenant, UserId::new(), Role::Member)).await.unwrap();
        p.emit_with_ack("subscribe", json!({ "topic": topic })).await;
        publishers.push(p);
    }
    let total = rate * seconds;
    let (all, _, arrivals) = live_latencies(&publishers, subs, &topic, rate, seconds, 0).await;
    let expected = total as usize * subscribers;
    println!(
        "latency: {rate}/s for {seconds} s to {subscribers} subscribers on the other node: \
         delivered {}/{expected}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        percentile(&all, 0.50) as f64 / 1000.0,
        percentile(&all, 0.99) as f64 / 1000.0,
        all.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    // Where it goes: the first subscriber of an event has it once the bus
    // (publishing node, Redis, delivering node) carried it; the others wait
    // while the one node writes it to every socket and the one client
    // process reads it from every socket.
    let mut first: Vec<u64> = arrivals.iter().map(|a| a.first).collect();
    let mut spread: Vec<u64> = arrivals.iter().map(|a| a.last.saturating_sub(a.first)).collect();
    first.sort_unstable();
    spread.sort_unstable();
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "latency parts: to the first subscriber p50 {:.2} ms, p99 {:.2} ms; first to last subscriber of an event p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&first, 0.50)),
        ms(percentile(&first, 0.99)),
        ms(percentile(&spread, 0.50)),
        ms(percentile(&spread, 0.99)),
    );
}

#[allow(clippy::too_many_arguments)]
async fn deltas(
    url_a: &str,
    url_b: &str,
    tenant: TenantId,
    key: &str,
    run: &str,
    rate: u64,
    seconds: u64,
    watchers: usize,
    batch: usize,
) {
    let topic = format!("run:{run}");
    let nodes = [url_a, url_b];
    let batches = (rate * seconds).div_ceil(batch as u64);
    let total = batches * batch as u64;
    let mut collectors = Vec::new();
    for i in 0..watchers {
        let token = user_token(tenant, UserId::new(), Role::Member);
        let ws = raw_subscribe(nodes[i % 2], &token, &topic).await;
        collectors.push(tokio::spawn(watch_deltas(ws, total)));
    }
    let http = reqwest::Client::new();
    let interval = Duration::from_secs_f64(batch as f64 / rate.max(1) as f64);
    let start = tokio::time::Instant::now();
    let mut refused = 0;
    for b in 0..batches {
        tokio::time::sleep_until(start + interval * b as u32).await;
        let t = now_us();
        let deltas: Vec<_> = (0..batch as u64)
            .map(|j| json!({ "text": "token ", "data": { "t": t, "i": b * batch as u64 + j } }))
            .collect();
        let url = format!("{}/api/v1/runs/{run}/deltas", nodes[b as usize % 2]);
        let res = http
            .post(url)
            .header("x-api-key", key)
            .json(&json!({ "step": 1, "deltas": deltas }))
            .send()
            .await;
        if !res.is_ok_and(|r| r.status() == 202) {
            refused += 1;
        }
    }
    let sent_in = start.elapsed().as_secs_f64();
    let (mut all, mut disorder) = (Vec::new(), 0);
    for c in collectors {
        let (lat, d) = c.await.unwrap();
        all.extend(lat);
        disorder += d;
    }
    all.sort_unstable();
    println!(
        "deltas: aimed {rate}/s in batches of {batch}, sent {total} in {sent_in:.2} s = {:.0}/s ({refused} requests refused); \
         {watchers} watchers on two nodes: delivered {}/{}, out of order {disorder}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        total as f64 / sent_in,
        all.len(),
        total as usize * watchers,
        percentile(&all, 0.50) as f64 / 1000.0,
        percentile(&all, 0.99) as f64 / 1000.0,
        all.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A bare Socket.IO connection subscribed to `topic`: the load driver reads its
/// frames itself, so thousands of events a second per socket cost it little.
async fn raw_subscribe(base: &str, token: &str, topic: &str) -> Ws {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("{}/socket.io/?EIO=4&transport=websocket", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.next().await.unwrap().unwrap(); // the Engine.IO open packet
    ws.send(Message::Text(format!("40{}", json!({ "token": token })).into())).await.unwrap();
    loop {
        let Message::Text(t) = ws.next().await.unwrap().unwrap() else { continue };
        assert!(!t.starts_with("44"), "refused: {t}");
        if t.starts_with("40") {
            break;
        }
    }
    ws.send(Message::Text(format!("421{}", json!(["subscribe", { "topic": topic }])).into())).await.unwrap();
    loop {
        let Message::Text(t) = ws.next().await.unwrap().unwrap() else { continue };
        if t.starts_with("431") {
            assert!(t.contains("\"ok\":true"), "subscribe refused: {t}");
            return ws;
        }
    }
}

/// The number after `"key":` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}

/// Reads `run:delta` events until `total` arrived or 3 s pass without one:
/// (latencies in µs, deltas that came out of order).
async fn watch_deltas(mut ws: Ws, total: u64) -> (Vec<u64>, u64) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut lat, mut last, mut disorder) = (Vec::with_capacity(total as usize), None, 0u64);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
        let Message::Text(t) = msg else { continue };
        if &*t == "2" {
            let _ = ws.send(Message::Text("3".into())).await;
            continue;
        }
        if !t.starts_with("42[\"run:delta\"") {
            continue;
        }
        let (Some(sent), Some(i)) = (number_after(&t, "\"t\":"), number_after(&t, "\"i\":")) else {
            continue;
        };
        lat.push(now_us().saturating_sub(sent));
        if last.is_some_and(|l| i <= l) {
            disorder += 1;
        }
        last = Some(i);
        if lat.len() as u64 == total {
            break;
        }
    }
    (lat, disorder)
}

/// B's publish→deliver latencies for `seconds` at `rate` on `topic`: publishers
/// and subscribers already connected and subscribed.
async fn live_latencies(
    publishers: &[SioClient],
    subs: Vec<SioClient>,
    topic: &str,
    rate: u64,
    seconds: u64,
    filler: usize,
) -> (Vec<u64>, Vec<SioClient>, Vec<Arrivals>) {
    let total = rate * seconds;
    let filler = "x".repeat(filler);
    let collectors: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(total as usize);
                while let Some(e) = s.next_event("tick", Duration::from_secs(3)).await {
                    let took = now_us().saturating_sub(e["data"]["t"].as_u64().unwrap_or(0));
                    lat.push((e["data"]["i"].as_u64().unwrap_or(u64::MAX), took));
                    if lat.len() as u64 == total {
                        break;
                    }
                }
                (lat, s)
            })
        })
        .collect();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        publishers[i as usize % publishers.len()].emit(
            "publish",
            json!({ "topic": topic, "event": "tick", "data": { "t": now_us(), "i": i, "f": filler } }),
        );
    }
    let (mut all, mut subs) = (Vec::new(), Vec::new());
    let mut events: std::collections::HashMap<u64, Arrivals> = std::collections::HashMap::new();
    for c in collectors {
        let (lat, s) = c.await.unwrap();
        for (i, took) in lat {
            all.push(took);
            let e = events.entry(i).or_insert(Arrivals { first: u64::MAX, last: 0 });
            e.first = e.first.min(took);
            e.last = e.last.max(took);
        }
        subs.push(s);
    }
    all.sort_unstable();
    (all, subs, events.into_values().collect())
}

/// When one event reached its first and its last subscriber, in µs after
/// it was published.
#[derive(Clone, Copy)]
struct Arrivals {
    first: u64,
    last: u64,
}

#[allow(clippy::too_many_arguments)]
async fn fairness(
    url: &str,
    a: TenantId,
    b: TenantId,
    rate: u64,
    seconds: u64,
    subscribers: usize,
    stormers: usize,
) {
    let live = format!("channel:live-{}", uuid::Uuid::new_v4().simple());
    let big = format!("channel:big-{}", uuid::Uuid::new_v4().simple());
    let connect = |tenant: TenantId| {
        let url = url.to_owned();
        async move { SioClient::connect(&url, &user_token(tenant, UserId::new(), Role::Member)).await.unwrap() }
    };
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        let s = connect(b).await;
        assert_eq!(s.emit_with_ack("subscribe", json!({ "topic": live })).await["ok"], true);
        subs.push(s);
    }
    let mut publishers = Vec::new();
    for _ in 0..4 {
        let p = connect(b).await;
        assert_eq!(p.emit_with_ack("subscribe", json!({ "topic": live })).await["ok"], true);
        publishers.push(p);
    }
    // Tenant A's topic: 1,000 events of 2 KB to replay, from its start.
    let filler = connect(a).await;
    let ack = filler.emit_with_ack("subscribe", json!({ "topic": big })).await;
    let start_offset = ack["offset"].as_str().unwrap().to_owned();
    let pad = "x".repeat(2000);
    for i in 0..1000 {
        let ack = filler
            .emit_with_ack("publish", json!({ "topic": big, "event": "old", "data": { "i": i, "pad": pad } }))
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
    }

    let (base, subs, _) = live_latencies(&publishers, subs, &live, rate, seconds, 0).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let replays = Arc::new(AtomicUsize::new(0));
    let complete = Arc::new(AtomicUsize::new(0));
    let replayed = Arc::new(AtomicUsize::new(0));
    let mut storm = Vec::new();
    for _ in 0..stormers {
        let mut s = connect(a).await;
        let (stop, replays, complete, replayed, big, since) = (
            stop.clone(),
            replays.clone(),
            complete.clone(),
            replayed.clone(),
            big.clone(),
            start_offset.clone(),
        );
        storm.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ack = s.emit_ack_later("subscribe", json!({ "topic": big, "since": since }));
                let ack = tokio::time::timeout(Duration::from_secs(30), ack).await.ok().and_then(Result::ok);
                replays.fetch_add(1, Ordering::Relaxed);
                if ack.as_ref().is_some_and(|a| a["recovered"] == true) {
                    complete.fetch_add(1, Ordering::Relaxed);
                }
                let got = s.drain_events(Duration::from_millis(20)).await;
                replayed.fetch_add(got.len(), Ordering::Relaxed);
                s.emit_ack_later("unsubscribe", json!({ "topic": big }));
            }
        }));
    }
    let storm_started = Instant::now();
    let (loaded, _, _) = live_latencies(&publishers, subs, &live, rate, seconds, 0).await;
    stop.store(true, Ordering::Relaxed);
    let storm_secs = storm_started.elapsed().as_secs_f64();
    for t in storm {
        let _ = tokio::time::timeout(Duration::from_secs(35), t).await;
    }
    let expected = (rate * seconds) as usize * subscribers;
    let p = |v: &[u64], q: f64| percentile(v, q) as f64 / 1000.0;
    println!(
        "fairness: tenant B at {rate}/s to {subscribers} subscribers; alone: delivered {}/{expected}, p50 {:.2} ms, p99 {:.2} ms; \
         while tenant A loops replays from {stormers} sockets: delivered {}/{expected}, p50 {:.2} ms, p99 {:.2} ms \
         (p99 x{:.2}); A ran {} replays ({} complete), {:.0} replayed events/s",
        base.len(),
        p(&base, 0.5),
        p(&base, 0.99),
        loaded.len(),
        p(&loaded, 0.5),
        p(&loaded, 0.99),
        p(&loaded, 0.99) / p(&base, 0.99).max(0.001),
        replays.load(Ordering::Relaxed),
        complete.load(Ordering::Relaxed),
        replayed.load(Ordering::Relaxed) as f64 / storm_secs,
    );
}

async fn slow(
    url: &str,
    tenant: TenantId,
    rate: u64,
    seconds: u64,
    subscribers: usize,
    slow_percent: usize,
    bytes: usize,
) {
    let token = || user_token(tenant, UserId::new(), Role::Member);
    let slow_count = subscribers * slow_percent / 100;
    let mut figures = Vec::new();
    for slow in [0, slow_count] {
        let topic = format!("channel:slow-{}", uuid::Uuid::new_v4().simple());
        let (mut reading, mut stalled) = (Vec::new(), Vec::new());
        for i in 0..subscribers {
            let stall = i < slow;
            let s = SioClient::connect_with(url, &token(), stall.then_some(4096)).await.unwrap();
            assert_eq!(s.emit_with_ack("subscribe", json!({ "topic": topic })).await["ok"], true);
            if stall {
                s.set_reading(false);
                stalled.push(s);
            } else {
                reading.push(s);
            }
        }
        let mut publishers = Vec::new();
        for _ in 0..4 {
            let p = SioClient::connect(url, &token()).await.unwrap();
            p.emit_with_ack("subscribe", json!({ "topic": topic })).await;
            publishers.push(p);
        }
        let readers = reading.len();
        let (all, _, _) = live_latencies(&publishers, reading, &topic, rate, seconds, bytes).await;
        let expected = (rate * seconds) as usize * readers;
        figures.push((slow, readers, all.len(), expected, percentile(&all, 0.5), percentile(&all, 0.99)));
        drop(stalled);
    }
    for (slow, readers, got, expected, p50, p99) in figures {
        println!(
            "slow: {rate}/s of {bytes} B for {seconds} s, {slow} of {subscribers} subscribers not reading: \
             the {readers} reading got {got}/{expected}, p50 {:.2} ms, p99 {:.2} ms",
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0
        );
    }
}

/// The many-topics load: how many topics, subscribers each, and whether
/// publishes ask for acks.
struct Shape {
    topics: usize,
    per_topic: usize,
    acked: bool,
}

async fn spread(pub_url: &str, sub_url: &str, tenant: TenantId, shape: Shape, rate: u64, seconds: u64) {
    let Shape { topics, per_topic, acked } = shape;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let names: Vec<String> = (0..topics).map(|i| format!("channel:spread-{run}-{i}")).collect();
    let token = || user_token(tenant, UserId::new(), Role::Member);
    // Sockets of ten topics each; topic i's subscribers are spread over them.
    let slots: Vec<&String> = (0..per_topic).flat_map(|_| names.iter()).collect();
    let mut subs = Vec::new();
    for chunk in slots.chunks(10) {
        let s = SioClient::connect(sub_url, &token()).await.unwrap();
        for topic in chunk {
            assert_eq!(s.emit_with_ack("subscribe", json!({ "topic": topic })).await["ok"], true);
        }
        subs.push(s);
    }
    let publishers = 8usize;
    let mut pubs = Vec::new();
    for p in 0..publishers {
        let s = SioClient::connect(pub_url, &token()).await.unwrap();
        for topic in names.iter().skip(p).step_by(publishers) {
            assert_eq!(s.emit_with_ack("subscribe", json!({ "topic": topic })).await["ok"], true);
        }
        pubs.push(s);
    }
    let total = rate * seconds;
    let collectors: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while let Some(e) = s.next_event("tick", Duration::from_secs(3)).await {
                    lat.push(now_us().saturating_sub(e["data"]["t"].as_u64().unwrap_or(0)));
                }
                lat
            })
        })
        .collect();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = tokio::time::Instant::now();
    let mut acks = Vec::new();
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let topic = i as usize % topics;
        // Topic t is published by publisher t % 8, which holds it.
        let data = json!({ "topic": names[topic], "event": "tick", "data": { "t": now_us() } });
        if acked {
            acks.push(pubs[topic % publishers].emit_ack_later("publish", data));
        } else {
            pubs[topic % publishers].emit("publish", data);
        }
    }
    let sent_in = start.elapsed().as_secs_f64();
    let (mut accepted, mut refused, mut unanswered) = (0usize, 0usize, 0usize);
    let answers_due = tokio::time::Instant::now() + Duration::from_secs(3);
    for ack in acks {
        match tokio::time::timeout_at(answers_due, ack).await {
            Ok(Ok(a)) if a["ok"] == true => accepted += 1,
            Ok(Ok(a)) if a["error"]["code"] == "rate_limited" => refused += 1,
            _ => unanswered += 1,
        }
    }
    let mut all = Vec::new();
    for c in collectors {
        all.extend(c.await.unwrap());
    }
    all.sort_unstable();
    if acked {
        let expected = accepted * per_topic;
        println!(
            "chat: {topics} topics x {per_topic} subscribers, {rate} publishes/s for {seconds} s (sent in {sent_in:.1} s): \
             accepted {accepted} ({:.0}/s), refused {refused}, unanswered {unanswered}; delivered {}/{expected} of the accepted ({:.1}%), \
             p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            accepted as f64 / sent_in,
            all.len(),
            100.0 * all.len() as f64 / expected.max(1) as f64,
            percentile(&all, 0.50) as f64 / 1000.0,
            percentile(&all, 0.99) as f64 / 1000.0,
            all.last().copied().unwrap_or(0) as f64 / 1000.0,
        );
        return;
    }
    let expected = total as usize * per_topic;
    println!(
        "spread: {topics} topics x {per_topic} subscribers, {rate} publishes/s for {seconds} s (sent in {sent_in:.1} s): \
         delivered {}/{expected} ({:.0} deliveries/s), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        all.len() as f64 / sent_in,
        percentile(&all, 0.50) as f64 / 1000.0,
        percentile(&all, 0.99) as f64 / 1000.0,
        all.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
}
