//! What Switchboard nodes share. Each role (per-topic bus, rate limiter, cache L2,
//! presence, topic history, counters) is a trait whose docs state its guarantees,
//! with a Redis implementation (fred) and an in-process twin side by side; without
//! `REDIS_URL` a node runs alone on the twins.
//!
//! [`Redis`] owns the connection: it reconnects by itself, and a node whose Redis
//! is down keeps serving and reports itself not ready.

pub mod cache;
pub mod presence;
pub mod ratelimit;
mod redis;
pub mod shares;
pub mod topics;

pub use cache::{Cache, CacheStats, Kind, Namespace};
pub use presence::{Presence, Tracked};
pub use ratelimit::{Decision, Quota, RateLimiter};
pub use redis::{ClusterError, Redis};
pub use shares::Shares;
pub use topics::{
    DEDUPE_TTL, Dedupe, Delivery, HistoryConfig, Offset, Published, ReadPage, Replay, TopicEvent, Topics,
};
