//! Switchboard's plain types, shared by every other crate: ids, the authenticated
//! [`Principal`], tenant [`Limits`] and status, a run's [`RunStatus`] and its
//! moves, client [`Topic`]s and the room names built from them, idempotency
//! keys and request [`Fingerprint`]s, bounded client [`json`], and
//! [`ErrorKind`], the one error vocabulary every transport maps.
//! Nothing here does I/O.

mod error;
mod idempotency;
mod ids;
pub mod json;
mod limits;
pub mod policy;
mod principal;
mod run;
mod topic;

pub use error::ErrorKind;
pub use idempotency::{BadIdempotencyKey, Fingerprint, IdempotencyKey};
pub use ids::{ConversationId, ProjectId, RunId, TenantId, UserId};
pub use limits::{LimitOverrides, Limits, LimitsError, TenantStatus};
pub use principal::{ClientAddr, Principal, Role};
pub use run::RunStatus;
pub use topic::{Topic, TopicError};
