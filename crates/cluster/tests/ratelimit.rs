//! The distributed limiter against the real Redis; two limiters on one Redis
//! stand for two nodes sharing a tenant's budget.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use switchboard_cluster::{Nodes, Quota, RateLimiter, Redis};
use uuid::Uuid;

async fn redis() -> Redis {
    let url = std::env::var("REDIS_URL").expect("REDIS_URL must be set: run the tests through scripts/test");
    Redis::connect(&url, None, Duration::from_secs(3)).await.unwrap()
}

/// A node's limiter on `redis`, as instance `name`.
fn limiter(redis: Redis, name: &str) -> RateLimiter {
    RateLimiter::new(Some(redis.clone()), Nodes::new(Some(redis), name))
}

#[tokio::test]
async fn two_nodes_sharing_a_budget_admit_at_most_burst_plus_rate_times_time() {
    let (a, b) = (limiter(redis().await, "rl-a"), limiter(redis().await, "rl-b"));
    let key = format!("test:{}", Uuid::new_v4());
    let quota = Quota { per_second: 20, burst: 10 };
    let start = Instant::now();
    let window = Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for limiter in [a, b] {
        for _ in 0..4 {
            let (limiter, key) = (limiter.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0u32;
                while start.elapsed() < window {
                    if limiter.check(&key, quota).await.allowed {
                        admitted += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                admitted
            }));
        }
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ceiling = 10.0 + 20.0 * elapsed;
    assert!(f64::from(total) <= ceiling, "admitted {total} in {elapsed:.2}s, limit {ceiling:.1}");
    // And the budget was actually usable: close to the ceiling, not starved.
    assert!(f64::from(total) >= 0.8 * (10.0 + 20.0 * 1.5), "admitted only {total}");
}

#[tokio::test]
async fn a_refusal_says_how_long_to_wait_and_what_is_left() {
    let limiter = limiter(redis().await, "rl-c");
    let key = format!("test:{}", Uuid::new_v4());
    let quota = Quota { per_second: 2, burst: 3 };
    let decisions: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(limiter.check(&key, quota).await);
        }
        v
    };
    let remaining: Vec<u32> = decisions.iter().map(|d| d.remaining).collect();
    assert_eq!(remaining[..3], [2, 1, 0]);
    assert!(decisions[..3].iter().all(|d| d.allowed && d.limit == 3));
    let refused = decisions[3];
    assert!(!refused.allowed);
    assert!(
        refused.retry_after > Duration::from_millis(300) && refused.retry_after <= Duration::from_millis(500)
    );
}

#[tokio::test]
async fn with_redis_unreachable_limits_still_hold_locally() {
    let down = Redis::connect("redis://127.0.0.1:1", None, Duration::from_millis(200)).await.unwrap();
    let limiter = limiter(down, "rl-down");
    let quota = Quota { per_second: 10, burst: 10 };
    let mut admitted = 0;
    for _ in 0..50 {
        if limiter.check("test:down", quota).await.allowed {
            admitted += 1;
        }
    }
    assert!((1..=10).contains(&admitted), "admitted {admitted}: never unlimited");
}
