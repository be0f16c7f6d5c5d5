//! One suite for every role of the cluster crate, run against each
//! implementation: in process, on the Redis `REDIS_URL` names, and on the
//! Redis Cluster `REDIS_CLUSTER_URL` names (`scripts/test` starts both). What
//! each test checks is what the role's trait promises, whatever keeps it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;
use switchboard_cluster::{
    ClusterError, Dedupe, Delivery, HistoryConfig, LocalBus, LocalCounts, LocalMembership, LocalPresence,
    LocalRateLimit, Membership, Nodes, PresenceStore, Quota, RateLimit, RateLimiter, ReadPage, Redis,
    RedisBus, RedisCounts, RedisMembership, RedisPresence, RedisRateLimit, SharedCounts, Shares, TopicBus,
    Topics, Tracked,
};
use tokio::sync::mpsc;
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
enum Target {
    Local,
    Redis,
    Cluster,
}

async fn redis(target: Target) -> Option<Redis> {
    let var = match target {
        Target::Local => return None,
        Target::Redis => "REDIS_URL",
        Target::Cluster => "REDIS_CLUSTER_URL",
    };
    let url = std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} must be set: run the tests through scripts/test"));
    Some(Redis::connect(&url, None, Duration::from_secs(3)).await.unwrap())
}

fn unique(what: &str) -> String {
    format!("conf-{what}-{}", Uuid::new_v4().simple())
}

const ALL: ReadPage = ReadPage { count: 1_000, bytes: 1 << 20 };

async fn topics(target: Target, history: HistoryConfig) -> (Topics, mpsc::Receiver<Delivery>) {
    let (tx, rx) = mpsc::channel(1024);
    let bus: Arc<dyn TopicBus> = match redis(target).await {
        Some(r) => Arc::new(RedisBus::new(r, tx)),
        None => Arc::new(LocalBus::new(tx)),
    };
    (Topics::with(bus, history), rx)
}

async fn membership(target: Target) -> Arc<dyn Membership> {
    match redis(target).await {
        Some(r) => Arc::new(RedisMembership::new(r)),
        None => Arc::new(LocalMembership::default()),
    }
}

/// Two nodes (instances) on one membership, both joined.
async fn two_nodes(target: Target) -> (Nodes, Nodes) {
    let backend = membership(target).await;
    let (a, b) = (Nodes::with(backend.clone(), &unique("node-a")), Nodes::with(backend, &unique("node-b")));
    a.join().await;
    b.join().await;
    a.join().await;
    (a, b)
}

// Topic bus and history.

async fn published_events_read_back_in_order_in_pages(target: Target) {
    let (topics, _rx) = topics(target, HistoryConfig::default()).await;
    let room = unique("room");
    let start = topics.top(&room).await.unwrap();
    let mut offsets = Vec::new();
    for i in 0..5 {
        offsets.push(topics.publish(&room, &format!("e{i}")).await.unwrap());
    }
    assert!(offsets.windows(2).all(|w| w[1].is_after(&w[0]) == Some(true)), "offsets increase");
    assert_eq!(topics.top(&room).await.unwrap(), offsets[4]);
    let all = topics.read(&room, &start, None, ALL).await.unwrap();
    assert!(all.recovered && !all.more);
    assert_eq!(all.events.iter().map(|e| &*e.payload).collect::<Vec<_>>(), ["e0", "e1", "e2", "e3", "e4"]);
    assert_eq!(all.events.iter().map(|e| e.offset.clone()).collect::<Vec<_>>(), offsets);
    let page = topics.read(&room, &start, None, ReadPage { count: 2, bytes: 1 << 20 }).await.unwrap();
    assert!(page.recovered && page.more && page.events.len() == 2, "a page of two, more to come");
    let upto = topics.read(&room, &offsets[0], Some(&offsets[2]), ALL).await.unwrap();
    assert_eq!(upto.events.iter().map(|e| &*e.payload).collect::<Vec<_>>(), ["e1", "e2"]);
    let after = topics.read(&room, &offsets[4], None, ALL).await.unwrap();
    assert!(after.recovered && after.events.is_empty(), "nothing after the last");
}

async fn a_trimmed_history_says_it_cannot_recover(target: Target) {
    let history = HistoryConfig { max_len: 3, ttl: Duration::from_secs(60) };
    let (topics, _rx) = topics(target, history).await;
    let room = unique("room");
    let start = topics.top(&room).await.unwrap();
    let mut offsets = Vec::new();
    for i in 0..5 {
        offsets.push(topics.publish(&room, &format!("e{i}")).await.unwrap());
    }
    assert!(!topics.read(&room, &start, None, ALL).await.unwrap().recovered, "two were trimmed");
    let kept = topics.read(&room, &offsets[1], None, ALL).await.unwrap();
    assert!(kept.recovered);
    assert_eq!(kept.events.iter().map(|e| &*e.payload).collect::<Vec<_>>(), ["e2", "e3", "e4"]);
    // An offset of another epoch (the topic's history was lost since).
    let other = topics.top(&unique("room")).await.unwrap();
    assert!(!topics.read(&room, &other, None, ALL).await.unwrap().recovered);
}

/// A topic keeps at least its last `max_len` events and trims in steps: never
/// a step or more over the bound, whatever the batches.
async fn a_history_keeps_its_length_within_a_trim_step(target: Target) {
    let history = HistoryConfig { max_len: 64, ttl: Duration::from_secs(60) };
    let step = switchboard_cluster::trim_step(history.max_len) as usize;
    assert_eq!(step, 4);
    let (topics, _rx) = topics(target, history).await;
    let room = unique("room");
    let mut offsets = vec![topics.top(&room).await.unwrap()];
    let mut sent = 0;
    for size in [1, 1, 3, 4, 5, 1, 2, 9, 64, 1, 3, 7, 4].into_iter().cycle().take(40) {
        let payloads: Vec<String> = (sent..sent + size).map(|i| format!("e{i}")).collect();
        let batch: Vec<&str> = payloads.iter().map(String::as_str).collect();
        let published = topics.publish_batch(&room, &batch, None).await.unwrap();
        assert_eq!(published.count, size);
        let new = topics.read(&room, offsets.last().unwrap(), None, ALL).await.unwrap();
        assert!(new.recovered, "a batch within the bound is kept whole");
        assert_eq!(new.events.iter().map(|e| &*e.payload).collect::<Vec<_>>(), batch);
        offsets.extend(new.events.into_iter().map(|e| e.offset));
        sent += size;
        let last = offsets.len() - 1;
        if last < 64 {
            let all = topics.read(&room, &offsets[0], None, ALL).await.unwrap();
            assert!(all.recovered && all.events.len() == last, "{last} published, all kept");
            continue;
        }
        let kept = topics.read(&room, &offsets[last - 64], None, ALL).await.unwrap();
        assert!(kept.recovered, "{last} published: the last 64 are kept");
        assert_eq!(kept.events.len(), 64);
        assert_eq!(*kept.events[63].payload, format!("e{}", last - 1));
        if last >= 64 + step {
            let beyond = topics.read(&room, &offsets[last - 64 - step], None, ALL).await.unwrap();
            assert!(!beyond.recovered, "{last} published: nothing a step over the bound is kept");
        }
    }
}

/// Events older than the ttl go at the topic's next publish, and reading from
/// before them says so. On Redis the second and third publishes come from
/// another node, which first sees the topic when its oldest event is already
/// 1.2 s old: it must check again when that event ages, not a ttl later.
async fn events_older_than_the_ttl_go_at_the_next_publish(target: Target) {
    let history = HistoryConfig { max_len: 1_000, ttl: Duration::from_secs(2) };
    let (topics, _rx) = topics(target, history).await;
    let (other, _other_rx) = match target {
        Target::Local => (topics.clone(), None),
        _ => {
            let (other, rx) = self::topics(target, history).await;
            (other, Some(rx))
        }
    };
    let room = unique("room");
    let start = topics.top(&room).await.unwrap();
    let a = topics.publish(&room, "a").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    other.publish(&room, "b").await.unwrap();
    let both = topics.read(&room, &start, None, ALL).await.unwrap();
    assert!(both.recovered && both.events.len() == 2, "nothing is older than the ttl yet");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    other.publish(&room, "c").await.unwrap();
    assert!(!topics.read(&room, &start, None, ALL).await.unwrap().recovered, "`a` went with its age");
    let kept = topics.read(&room, &a, None, ALL).await.unwrap();
    assert!(kept.recovered);
    assert_eq!(kept.events.iter().map(|e| &*e.payload).collect::<Vec<_>>(), ["b", "c"]);
}

/// Many publishes at once, over many topics and several to each, some of them
/// batches: however a bus groups them on their way, each topic's history holds
/// exactly its own events, a batch's events side by side, every answer names
/// its own events, the live events arrive in history order, and a topic
/// pushed past its length says what it lost.
async fn concurrent_publishes_keep_each_topic_whole_and_in_order(target: Target) {
    let history = HistoryConfig { max_len: 40, ttl: Duration::from_secs(60) };
    let (topics, mut rx) = topics(target, history).await;
    let rooms: Vec<String> = (0..20).map(|_| unique("many")).collect();
    let starts: Vec<_> = futures_util::future::join_all(rooms.iter().map(|r| topics.subscribe(r))).await;
    let publishes = (0..600).map(|i| {
        let (topics, room) = (topics.clone(), rooms[i % rooms.len()].clone());
        async move {
            let (a, b) = (format!("{i}.a"), format!("{i}.b"));
            let published = if i % 3 == 0 {
                topics.publish_batch(&room, &[&a, &b], None).await.unwrap()
            } else {
                let offset = topics.publish(&room, &a).await.unwrap();
                switchboard_cluster::Published {
                    first: offset.clone(),
                    last: offset,
                    count: 1,
                    replayed: false,
                }
            };
            (i, published)
        }
    });
    let answers = futures_util::future::join_all(publishes.map(tokio::spawn)).await;
    let mut live: std::collections::HashMap<String, Vec<String>> = Default::default();
    let expected_live = (0..600).map(|i| if i % 3 == 0 { 2 } else { 1 }).sum::<usize>();
    for _ in 0..expected_live {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("every live event") {
            Some(Delivery::Event { room, event }) => {
                live.entry(room.to_string()).or_default().push(event.offset.to_string())
            }
            other => panic!("{other:?}"),
        }
    }
    for (r, (room, start)) in rooms.iter().zip(starts).enumerate() {
        let start = start.unwrap();
        let mine: Vec<_> =
            answers.iter().map(|a| a.as_ref().unwrap()).filter(|(i, _)| i % rooms.len() == r).collect();
        // 30 publishes, 10 of them batches of two: 40 events, all kept.
        let all = topics.read(room, &start, None, ALL).await.unwrap();
        assert!(all.recovered && all.events.len() == 40, "{room}: {} events", all.events.len());
        let offsets: Vec<String> = all.events.iter().map(|e| e.offset.to_string()).collect();
        assert_eq!(live[room.as_str()], offsets, "live order is history order");
        for (i, published) in &mine {
            let at = all.events.iter().position(|e| e.offset == published.first).expect("its first event");
            assert_eq!(&*all.events[at].payload, format!("{i}.a"), "the answer names its own event");
            if i % 3 == 0 {
                assert_eq!(published.count, 2);
                assert_eq!(&*all.events[at + 1].payload, format!("{i}.b"), "a batch lands side by side");
                assert_eq!(all.events[at + 1].offset, published.last);
            }
        }
        // Ten more: the ten oldest go (50 is a whole number of trim steps of
        // two over the bound), and reading from before them says so.
        for i in 0..10 {
            topics.publish(room, &format!("more{i}")).await.unwrap();
        }
        assert!(!topics.read(room, &start, None, ALL).await.unwrap().recovered);
        let kept = topics.read(room, &all.events[9].offset, None, ALL).await.unwrap();
        assert!(kept.recovered && kept.events.len() == 40, "from the last one trimmed, all that is left");
        assert!(!topics.read(room, &all.events[8].offset, None, ALL).await.unwrap().recovered);
    }
}

/// Large events published at once, more together than one call carries:
/// each arrives whole, in its own topic, answered with its own offset.
async fn large_concurrent_publishes_arrive_whole(target: Target) {
    let (topics, _rx) = topics(target, HistoryConfig::default()).await;
    let rooms: Vec<String> = (0..8).map(|_| unique("large")).collect();
    let starts: Vec<_> = futures_util::future::join_all(rooms.iter().map(|r| topics.top(r))).await;
    let sends = rooms.iter().enumerate().map(|(i, room)| {
        let (topics, room) = (topics.clone(), room.clone());
        // 200 KiB each: 1.6 MiB in all.
        let payload = format!("{i}:{}", "x".repeat(200 * 1024));
        tokio::spawn(async move { (topics.publish(&room, &payload).await.unwrap(), payload) })
    });
    let sent = futures_util::future::join_all(sends).await;
    for ((room, start), sent) in rooms.iter().zip(starts).zip(sent) {
        let (offset, payload) = sent.unwrap();
        let read = topics.read(room, &start.unwrap(), None, ALL).await.unwrap();
        assert!(read.recovered && read.events.len() == 1, "{room}: {} events", read.events.len());
        assert_eq!(read.events[0].offset, offset);
        assert!(*read.events[0].payload == *payload, "{room}: the payload arrived whole");
    }
}

async fn a_dedupe_key_replays_its_batch_and_refuses_another(target: Target) {
    let (topics, _rx) = topics(target, HistoryConfig::default()).await;
    let room = unique("room");
    let key = unique("key");
    let dedupe = Dedupe { key: &key, fingerprint: "aa", replay_only: false };
    let first = topics.publish_batch(&room, &["a", "b"], Some(dedupe)).await.unwrap();
    assert!(!first.replayed && first.count == 2);
    let again = topics.publish_batch(&room, &["a", "b"], Some(dedupe)).await.unwrap();
    assert!(again.replayed);
    assert_eq!((again.first, again.last), (first.first.clone(), first.last.clone()));
    let other = Dedupe { fingerprint: "bb", ..dedupe };
    assert!(matches!(
        topics.publish_batch(&room, &["c"], Some(other)).await,
        Err(ClusterError::DedupeMismatch)
    ));
    let unseen = Dedupe { key: "never", fingerprint: "aa", replay_only: true };
    assert!(matches!(
        topics.publish_batch(&room, &["c"], Some(unseen)).await,
        Err(ClusterError::DedupeUnseen)
    ));
    assert_eq!(topics.top(&room).await.unwrap(), first.last, "nothing else was published");
}

async fn a_subscribed_node_gets_live_events_and_an_unsubscribed_one_none(target: Target) {
    let (topics, mut rx) = topics(target, HistoryConfig::default()).await;
    let room = unique("room");
    topics.subscribe(&room).await.unwrap();
    let offset = topics.publish(&room, "live").await.unwrap();
    let got = loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("a live event") {
            Some(Delivery::Event { room: r, event }) if *r == *room => break event,
            _ => {}
        }
    };
    assert_eq!((got.offset, &*got.payload), (offset, "live"));
    topics.unsubscribe(&room).await.unwrap();
    topics.publish(&room, "unheard").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Some(d)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        assert!(!matches!(d, Delivery::Event { room: r, .. } if *r == *room), "an event after unsubscribe");
    }
}

// Presence.

async fn presence_stores(target: Target) -> Arc<dyn PresenceStore> {
    match redis(target).await {
        Some(r) => Arc::new(RedisPresence::new(r)),
        None => Arc::new(LocalPresence::default()),
    }
}

async fn presence_tracks_replaces_caps_lists_and_untracks(target: Target) {
    let (nodes, _) = two_nodes(target).await;
    let presence = switchboard_cluster::Presence::with(presence_stores(target).await, nodes);
    let room = unique("room");
    assert_eq!(presence.track(&room, "c1", "one", 2).await.unwrap(), Tracked::Added);
    assert_eq!(presence.track(&room, "c1", "one again", 2).await.unwrap(), Tracked::Replaced);
    assert_eq!(presence.track(&room, "c2", "two", 2).await.unwrap(), Tracked::Added);
    assert_eq!(presence.track(&room, "c3", "three", 2).await.unwrap(), Tracked::Full);
    assert_eq!(
        presence.track(&room, "c2", "two again", 2).await.unwrap(),
        Tracked::Replaced,
        "never refused"
    );
    let mut listed = presence.list(&room).await.unwrap();
    listed.sort();
    assert_eq!(listed, ["one again", "two again"]);
    assert_eq!(presence.untrack(&room, "c1").await.unwrap().as_deref(), Some("one again"));
    assert_eq!(presence.untrack(&room, "c1").await.unwrap(), None);
    assert_eq!(presence.list(&room).await.unwrap(), ["two again"]);
}

async fn a_dead_instances_entries_are_hidden_then_reaped_once(target: Target) {
    let (nodes, _) = two_nodes(target).await;
    let store = presence_stores(target).await;
    let presence = switchboard_cluster::Presence::with(store.clone(), nodes);
    let room = unique("room");
    // An instance that never beat (a node that died long ago) left an entry.
    let ghost = unique("ghost");
    store.put(&ghost, &room, &format!("{ghost}/c9"), "ghost's", 10).await.unwrap();
    presence.track(&room, "c1", "mine", 10).await.unwrap();
    assert_eq!(presence.list(&room).await.unwrap(), ["mine"], "a dead instance's entry is not listed");
    let reaped = presence.reap_dead().await.unwrap();
    assert!(reaped.contains(&(room.clone(), "ghost's".to_owned())), "{reaped:?}");
    assert!(!presence.reap_dead().await.unwrap().iter().any(|(r, _)| *r == room), "reaped once");
    assert_eq!(store.entries(&room).await.unwrap().len(), 1, "only the live entry is left");
}

// Shared counts.

async fn counts(target: Target) -> Arc<dyn SharedCounts> {
    match redis(target).await {
        Some(r) => Arc::new(RedisCounts::new(r)),
        None => Arc::new(LocalCounts::default()),
    }
}

/// One count seen from two instances, on one backend.
async fn two_shares(target: Target) -> (Shares, Shares) {
    let (a_nodes, b_nodes) = two_nodes(target).await;
    let backend = counts(target).await;
    (Shares::with("conf", backend.clone(), a_nodes), Shares::with("conf", backend, b_nodes))
}

async fn a_count_admits_up_to_its_limit_across_instances(target: Target) {
    let (a, b) = two_shares(target).await;
    let tenant = Uuid::new_v4();
    assert!(a.acquire(tenant, 3).await && a.acquire(tenant, 3).await);
    assert!(b.acquire(tenant, 3).await, "the third, on the other instance");
    assert!(!b.acquire(tenant, 3).await && !a.acquire(tenant, 3).await, "the limit holds on both");
    a.release(tenant);
    let mut again = false;
    for _ in 0..50 {
        if b.acquire(tenant, 3).await {
            again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again, "a release frees one for any instance");
}

/// With a larger limit a node takes room a few at a time and admits from it
/// without asking again; whoever holds it, the two never admit more than the
/// limit together, and room released beyond what a node keeps spare goes back
/// for the other.
async fn room_held_by_one_instance_never_lets_the_two_pass_the_limit(target: Target) {
    let (a, b) = two_shares(target).await;
    let tenant = Uuid::new_v4();
    const MAX: u32 = 64;
    assert!(a.acquire(tenant, MAX).await);
    let mut on_b = 0;
    while b.acquire(tenant, MAX).await {
        on_b += 1;
        assert!(on_b <= MAX, "past the limit");
    }
    let mut on_a = 1;
    while a.acquire(tenant, MAX).await {
        on_a += 1;
        assert!(on_a <= MAX, "past the limit");
    }
    assert_eq!(on_a + on_b, MAX, "together exactly the limit: {on_a} on a, {on_b} on b");
    assert!(on_b < MAX, "a kept the room it took at first");
    for _ in 0..on_a {
        a.release(tenant);
    }
    // What a keeps spare is at most twice one less than its chunk (8 with
    // one live node, 4 with two); the rest goes back in the background.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut more_on_b = 0;
    while b.acquire(tenant, MAX).await {
        more_on_b += 1;
    }
    assert!(more_on_b + 14 >= on_a && more_on_b <= on_a, "b got back {more_on_b} of {on_a}");
    let mut again_on_a = 0;
    while a.acquire(tenant, MAX).await {
        again_on_a += 1;
    }
    assert_eq!(on_b + more_on_b + again_on_a, MAX, "a admits from what it kept, and no more");
}

/// A burst of handshakes on one instance takes room once, not once per
/// handshake: the other instance can still admit nearly all the rest.
async fn a_burst_on_one_instance_takes_room_once(target: Target) {
    let (a, b) = two_shares(target).await;
    let tenant = Uuid::new_v4();
    const MAX: u32 = 1_000;
    let burst: Vec<_> = (0..32)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { a.acquire(tenant, MAX).await })
        })
        .collect();
    for admitted in futures_util::future::join_all(burst).await {
        assert!(admitted.unwrap());
    }
    let mut on_b = 0;
    while b.acquire(tenant, MAX).await {
        on_b += 1;
        assert!(on_b <= MAX, "past the limit");
    }
    // a holds its 32 and at most one chunk (32) spare.
    assert!(on_b >= MAX - 64, "b admitted only {on_b}");
}

// Rate limits.

async fn rate_limit(target: Target) -> Arc<dyn RateLimit> {
    match redis(target).await {
        Some(r) => Arc::new(RedisRateLimit::new(r)),
        None => Arc::new(LocalRateLimit::default()),
    }
}

async fn a_budget_admits_its_burst_then_says_how_long_to_wait(target: Target) {
    let (a_nodes, b_nodes) = two_nodes(target).await;
    let backend = rate_limit(target).await;
    let (a, b) =
        (RateLimiter::with(Some(backend.clone()), a_nodes), RateLimiter::with(Some(backend), b_nodes));
    let key = unique("rl");
    let quota = Quota { per_second: 2, burst: 3 };
    let first = [a.check(&key, quota).await, b.check(&key, quota).await, a.check(&key, quota).await];
    assert!(first.iter().all(|d| d.allowed && d.limit == 3), "the burst, shared by both");
    assert_eq!(first.map(|d| d.remaining), [2, 1, 0]);
    let refused = b.check(&key, quota).await;
    assert!(!refused.allowed);
    assert!(
        refused.retry_after > Duration::from_millis(300) && refused.retry_after <= Duration::from_millis(500)
    );
    let big = a.check_n(&unique("rl"), quota, 4).await;
    assert!(!big.allowed, "more than the burst at once is never admitted");
}

// Membership.

async fn instances_that_beat_see_each_other(target: Target) {
    let (a, b) = two_nodes(target).await;
    assert!(a.live_set().contains(b.instance()) && a.live_set().contains(a.instance()));
    assert!(a.live_nodes() >= 2);
    let asked = vec![b.instance().to_owned(), unique("never-beat")];
    let alive = a.alive(&asked).await.unwrap();
    assert!(alive.contains(b.instance()) && alive.len() == 1, "{alive:?}");
}

// The cache (one layer in process, two with Redis).

async fn the_cache_loads_once_and_again_after_an_invalidation(target: Target) {
    use switchboard_cluster::{Cache, Kind, Namespace};
    let cache = Cache::new(redis(target).await, 100, Duration::from_secs(60), Duration::from_secs(60)).await;
    let ns = Namespace::new(Uuid::new_v4(), Kind::Tenant);
    let loads = std::sync::atomic::AtomicU32::new(0);
    let load = |v: u32| {
        let loads = &loads;
        move || async move {
            loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<u32, switchboard_cluster::cache::TypeMismatch>(v)
        }
    };
    assert_eq!(cache.get_or_load(ns, "k", load(1)).await.unwrap(), 1);
    assert_eq!(cache.get_or_load(ns, "k", load(2)).await.unwrap(), 1, "cached");
    assert!(cache.invalidate(ns).await);
    assert_eq!(cache.get_or_load(ns, "k", load(3)).await.unwrap(), 3, "loaded again");
    assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 2);
}

macro_rules! conformance {
    ($($module:ident => $target:expr),* $(,)?) => {$(
        mod $module {
            use super::*;
            #[tokio::test] async fn topics_read_back_in_order_in_pages() { published_events_read_back_in_order_in_pages($target).await }
            #[tokio::test] async fn topics_say_when_history_was_trimmed() { a_trimmed_history_says_it_cannot_recover($target).await }
            #[tokio::test] async fn topics_keep_their_length_within_a_step() { a_history_keeps_its_length_within_a_trim_step($target).await }
            #[tokio::test] async fn topics_trim_events_older_than_the_ttl() { events_older_than_the_ttl_go_at_the_next_publish($target).await }
            #[tokio::test] async fn topics_stay_whole_under_concurrent_publishes() { concurrent_publishes_keep_each_topic_whole_and_in_order($target).await }
            #[tokio::test] async fn topics_carry_large_events_whole() { large_concurrent_publishes_arrive_whole($target).await }
            #[tokio::test] async fn topics_dedupe_batches() { a_dedupe_key_replays_its_batch_and_refuses_another($target).await }
            #[tokio::test] async fn topics_deliver_live_while_subscribed() { a_subscribed_node_gets_live_events_and_an_unsubscribed_one_none($target).await }
            #[tokio::test] async fn presence_tracks_and_caps() { presence_tracks_replaces_caps_lists_and_untracks($target).await }
            #[tokio::test] async fn presence_reaps_the_dead_once() { a_dead_instances_entries_are_hidden_then_reaped_once($target).await }
            #[tokio::test] async fn counts_hold_their_limit() { a_count_admits_up_to_its_limit_across_instances($target).await }
            #[tokio::test] async fn counts_never_pass_the_limit_with_room_held() { room_held_by_one_instance_never_lets_the_two_pass_the_limit($target).await }
            #[tokio::test] async fn counts_take_room_once_for_a_burst() { a_burst_on_one_instance_takes_room_once($target).await }
            #[tokio::test] async fn rate_limits_admit_the_burst() { a_budget_admits_its_burst_then_says_how_long_to_wait($target).await }
            #[tokio::test] async fn membership_sees_beats() { instances_that_beat_see_each_other($target).await }
            #[tokio::test] async fn cache_loads_and_invalidates() { the_cache_loads_once_and_again_after_an_invalidation($target).await }
        }
    )*};
}

conformance! {
    in_process => Target::Local,
    one_redis => Target::Redis,
    redis_cluster => Target::Cluster,
}
