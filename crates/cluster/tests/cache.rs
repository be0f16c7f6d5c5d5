//! The namespaced cache against the real Redis; two `Cache`s on one Redis stand
//! for two nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use switchboard_cluster::cache::TypeMismatch;
use switchboard_cluster::{Cache, Kind, Namespace, Redis};
use uuid::Uuid;

#[derive(Debug)]
struct LoadError;

impl From<TypeMismatch> for LoadError {
    fn from(_: TypeMismatch) -> Self {
        LoadError
    }
}

async fn redis() -> Redis {
    let url = std::env::var("REDIS_URL").expect("REDIS_URL must be set: run the tests through scripts/test");
    Redis::connect(&url, None, Duration::from_secs(3)).await.unwrap()
}

async fn node() -> Cache {
    Cache::new(Some(redis().await), 10_000, Duration::from_secs(60), Duration::from_secs(300)).await
}

#[tokio::test]
async fn concurrent_misses_on_one_node_load_once() {
    let cache = node().await;
    let ns = Namespace::new(Uuid::new_v4(), Kind::Tenant);
    let loads = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load(ns, "record", || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, LoadError>("v1".to_owned())
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "v1");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(stats.misses, 1);
}

#[tokio::test]
async fn a_second_node_reads_the_first_nodes_value_from_redis() {
    let (a, b) = (node().await, node().await);
    let ns = Namespace::new(Uuid::new_v4(), Kind::ApiKey);
    let v: u32 = a.get_or_load(ns, "k", || async { Ok::<_, LoadError>(7) }).await.unwrap();
    assert_eq!(v, 7);
    let from_b: u32 = b.get_or_load(ns, "k", || async { Ok::<_, LoadError>(99) }).await.unwrap();
    assert_eq!(from_b, 7, "served from L2, not reloaded");
    assert_eq!(b.stats().l2_hits, 1);
    let again: u32 = b.get_or_load(ns, "k", || async { Ok::<_, LoadError>(99) }).await.unwrap();
    assert_eq!(again, 7);
    assert_eq!(b.stats().l1_hits, 1);
}

#[tokio::test]
async fn an_invalidation_on_one_node_reaches_the_other_within_a_second() {
    let (a, b) = (node().await, node().await);
    let ns = Namespace::new(Uuid::new_v4(), Kind::Tenant);
    let source = Arc::new(AtomicU32::new(1));
    let read = |cache: Cache, source: Arc<AtomicU32>| async move {
        cache
            .get_or_load(ns, "limits", || async move { Ok::<_, LoadError>(source.load(Ordering::SeqCst)) })
            .await
            .unwrap()
    };
    assert_eq!(read(a.clone(), source.clone()).await, 1);
    assert_eq!(read(b.clone(), source.clone()).await, 1);

    source.store(2, Ordering::SeqCst);
    b.invalidate(ns).await;
    assert_eq!(read(b.clone(), source.clone()).await, 2, "the invalidating node sees it at once");
    let start = Instant::now();
    loop {
        if read(a.clone(), source.clone()).await == 2 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "node A still serves the old value after 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Other namespaces are untouched.
    let other = Namespace::new(ns.tenant, Kind::Authz);
    let v: u32 = a.get_or_load(other, "limits", || async { Ok::<_, LoadError>(5) }).await.unwrap();
    let v2: u32 = a.get_or_load(other, "limits", || async { Ok::<_, LoadError>(6) }).await.unwrap();
    assert_eq!((v, v2), (5, 5));
}

#[tokio::test]
async fn load_errors_are_returned_and_not_cached() {
    let cache = node().await;
    let ns = Namespace::new(Uuid::new_v4(), Kind::Tenant);
    let err = cache.get_or_load(ns, "x", || async { Err::<u32, _>(LoadError) }).await;
    assert!(err.is_err());
    let ok: u32 = cache.get_or_load(ns, "x", || async { Ok::<_, LoadError>(3) }).await.unwrap();
    assert_eq!(ok, 3);
}

#[tokio::test]
async fn without_redis_the_cache_is_local_and_invalidation_still_works() {
    let cache = Cache::new(None, 100, Duration::from_secs(60), Duration::from_secs(60)).await;
    let ns = Namespace::new(Uuid::new_v4(), Kind::Tenant);
    let v: u32 = cache.get_or_load(ns, "k", || async { Ok::<_, LoadError>(1) }).await.unwrap();
    cache.invalidate(ns).await;
    let w: u32 = cache.get_or_load(ns, "k", || async { Ok::<_, LoadError>(2) }).await.unwrap();
    assert_eq!((v, w), (1, 2));
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.l2_hits), (2, 0));
}

#[tokio::test]
async fn with_redis_unreachable_lookups_load_from_the_source_and_invalidation_is_local() {
    let down = Redis::connect("redis://127.0.0.1:1", None, Duration::from_millis(200)).await.unwrap();
    let cache = Cache::new(Some(down), 100, Duration::from_secs(60), Duration::from_secs(60)).await;
    let ns = Namespace::new(Uuid::new_v4(), Kind::Tenant);
    let v: u32 = cache.get_or_load(ns, "k", || async { Ok::<_, LoadError>(1) }).await.unwrap();
    let again: u32 = cache.get_or_load(ns, "k", || async { Ok::<_, LoadError>(9) }).await.unwrap();
    assert_eq!((v, again), (1, 1), "L1 still serves");
    cache.invalidate(ns).await;
    let after: u32 = cache.get_or_load(ns, "k", || async { Ok::<_, LoadError>(2) }).await.unwrap();
    assert_eq!(after, 2);
    assert_eq!(cache.stats().l2_hits, 0);
}
