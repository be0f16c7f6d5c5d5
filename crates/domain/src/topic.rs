//! Client topic names and the tenant-scoped room names built from them.
//!
//! A client only ever names a topic; [`Topic::room`] is the one function that
//! turns a topic into a room, and it always puts the tenant first, so no client
//! string can reach another tenant's room.

use crate::{ConversationId, ProjectId, RunId, TenantId};
use std::fmt;
use uuid::Uuid;

/// A topic a client may subscribe to (docs/socketio.md).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Conversation(ConversationId),
    Project(ProjectId),
    Run(RunId),
    /// `[A-Za-z0-9_.-]{1,64}`
    Channel(String),
}

/// Why a topic string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicError {
    #[error("unknown topic kind; expected conversation:, project:, run: or channel:")]
    UnknownKind,
    #[error("topic id must be a UUID")]
    BadId,
    #[error("channel names are 1 to 64 characters of A-Z a-z 0-9 _ . -")]
    BadChannel,
}

impl Topic {
    pub fn parse(s: &str) -> Result<Self, TopicError> {
        let (kind, rest) = s.split_once(':').ok_or(TopicError::UnknownKind)?;
        let uuid = || Uuid::parse_str(rest).map_err(|_| TopicError::BadId);
        match kind {
            "conversation" => Ok(Topic::Conversation(uuid()?.into())),
            "project" => Ok(Topic::Project(uuid()?.into())),
            "run" => Ok(Topic::Run(uuid()?.into())),
            "channel" => {
                let ok = (1..=64).contains(&rest.len())
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
                if ok { Ok(Topic::Channel(rest.to_owned())) } else { Err(TopicError::BadChannel) }
            }
            _ => Err(TopicError::UnknownKind),
        }
    }

    /// Whether clients may `publish` ephemeral events to this topic.
    pub fn client_publishable(&self) -> bool {
        matches!(self, Topic::Conversation(_) | Topic::Channel(_))
    }

    /// The room (and bus channel) for this topic in `tenant`.
    pub fn room(&self, tenant: TenantId) -> String {
        format!("t:{tenant}:{self}")
    }

    /// The tenant and topic a [`Topic::room`] name stands for.
    pub fn from_room(room: &str) -> Option<(TenantId, Topic)> {
        let (tenant, topic) = room.strip_prefix("t:")?.split_once(':')?;
        Some((tenant.parse().ok()?, Topic::parse(topic).ok()?))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Conversation(id) => write!(f, "conversation:{id}"),
            Topic::Project(id) => write!(f, "project:{id}"),
            Topic::Run(id) => write!(f, "run:{id}"),
            Topic::Channel(name) => write!(f, "channel:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_kind_round_trips_through_its_string() {
        let id = Uuid::new_v4();
        for s in [
            format!("conversation:{id}"),
            format!("project:{id}"),
            format!("run:{id}"),
            "channel:lobby_1.a-b".to_owned(),
        ] {
            assert_eq!(Topic::parse(&s).map(|t| t.to_string()), Ok(s));
        }
    }

    #[test]
    fn malformed_topics_are_refused_with_a_reason() {
        assert_eq!(Topic::parse("lobby"), Err(TopicError::UnknownKind));
        assert_eq!(Topic::parse("room:x"), Err(TopicError::UnknownKind));
        assert_eq!(Topic::parse("run:not-a-uuid"), Err(TopicError::BadId));
        assert_eq!(Topic::parse("channel:"), Err(TopicError::BadChannel));
        assert_eq!(Topic::parse("channel:a b"), Err(TopicError::BadChannel));
        assert_eq!(Topic::parse("channel:t:other:x"), Err(TopicError::BadChannel));
        assert_eq!(Topic::parse(&format!("channel:{}", "a".repeat(65))), Err(TopicError::BadChannel));
    }

    #[test]
    fn the_same_channel_in_two_tenants_maps_to_two_rooms() {
        let topic = Topic::parse("channel:general").ok();
        let (a, b) = (TenantId::new(), TenantId::new());
        let rooms = topic.map(|t| (t.room(a), t.room(b)));
        assert!(matches!(rooms, Some((ra, rb)) if ra != rb && ra.starts_with(&format!("t:{a}:"))));
    }

    #[test]
    fn a_room_name_gives_back_its_tenant_and_topic() {
        let (tenant, topic) = (TenantId::new(), Topic::Run(Uuid::new_v4().into()));
        assert_eq!(Topic::from_room(&topic.room(tenant)), Some((tenant, topic)));
        assert_eq!(Topic::from_room("t:not-a-uuid:channel:x"), None);
        assert_eq!(Topic::from_room("channel:x"), None);
    }
}
