//! What Switchboard nodes share. Each role is a trait whose docs state its
//! guarantees, with a Redis implementation (fred) and an in-process one beside
//! it, and a handle the rest of the server uses:
//!
//! | role | trait | Redis | in process | handle |
//! |---|---|---|---|---|
//! | topic bus and history | [`TopicBus`] | [`RedisBus`] | [`LocalBus`] | [`Topics`] |
//! | presence | [`PresenceStore`] | [`RedisPresence`] | [`LocalPresence`] | [`Presence`] |
//! | connection and entry counts | [`SharedCounts`] | [`RedisCounts`] | [`LocalCounts`] | [`Shares`] |
//! | rate limits | [`RateLimit`] | [`RedisRateLimit`] | [`LocalRateLimit`] | [`RateLimiter`] |
//! | node membership | [`Membership`] | [`RedisMembership`] | [`LocalMembership`] | [`Nodes`] |
//! | cache second layer | [`cache::SharedCache`] | [`cache::RedisCache`] | (none: one layer) | [`Cache`] |
//!
//! Without `REDIS_URL` a node runs alone on the in-process ones.
//! `tests/conformance.rs` runs one suite against both implementations of
//! each role (and a Redis Cluster).
//!
//! [`Redis`] owns the connection: it reconnects by itself, and a node whose Redis
//! is down keeps serving and reports itself not ready.

pub mod cache;
pub mod membership;
pub mod presence;
pub mod ratelimit;
mod redis;
pub mod shares;
pub mod topics;

pub use cache::{Cache, CacheStats, Kind, Namespace};
pub use membership::{LocalMembership, Membership, NODE_EXPIRY, Nodes, RedisMembership};
pub use presence::{LocalPresence, Presence, PresenceStore, RedisPresence, Tracked};
pub use ratelimit::{Decision, LocalRateLimit, Quota, RateLimit, RateLimiter, RedisRateLimit};
pub use redis::{ClusterError, Redis};
pub use shares::{LocalCounts, RedisCounts, SharedCounts, Shares};
pub use topics::{
    DEDUPE_TTL, Dedupe, Delivery, HistoryConfig, LocalBus, Offset, Published, ReadPage, RedisBus, Replay,
    TopicBus, TopicEvent, Topics, trim_step,
};
