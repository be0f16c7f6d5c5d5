//! Database errors and the one place a SQLSTATE becomes an [`ErrorKind`].

use switchboard_domain::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    #[error("the idempotency key was already used for a different request")]
    IdempotencyMismatch,
    /// A change the row's state does not allow (a finished run moving again).
    #[error("{0}")]
    Conflict(String),
    /// Not allowed, with a reason the caller may read.
    #[error("{0}")]
    Forbidden(String),
    /// A request that names something that is not there in a way the schema
    /// cannot say (a tool call's step number the run does not have).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Config(String),
    /// Postgres failed moments ago: refused without trying (the breaker is open).
    #[error("the database is unavailable")]
    Down,
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl DbError {
    /// How a client should understand this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DbError::NotFound => ErrorKind::NotFound,
            DbError::IdempotencyMismatch | DbError::Conflict(_) => ErrorKind::Conflict,
            DbError::Invalid(_) => ErrorKind::Validation,
            DbError::Forbidden(_) => ErrorKind::Forbidden,
            DbError::Config(_) | DbError::Migrate(_) => ErrorKind::Internal,
            DbError::Down => ErrorKind::Unavailable,
            DbError::Sqlx(sqlx::Error::RowNotFound) => ErrorKind::NotFound,
            DbError::Sqlx(sqlx::Error::Database(db)) => match db.code().as_deref() {
                // A duplicate; or a concurrent change got in the way (a
                // deadlock broken by Postgres, a serialization failure): the
                // same request again goes through.
                Some("23505" | "40P01" | "40001") => ErrorKind::Conflict,
                // A reference to a parent that does not exist in this tenant.
                Some("23503") => ErrorKind::NotFound,
                // Check or not-null violation, bad text representation, value too
                // long, or text Postgres cannot store (a NUL character, in text or jsonb).
                Some("23514" | "23502" | "22P02" | "22001" | "22021" | "22P05") => ErrorKind::Validation,
                // Row-level security refused a row, or a privilege is missing.
                Some("42501") => ErrorKind::Forbidden,
                // The server is shutting down, restarting or out of connections,
                // or the connection broke: try again shortly.
                Some(c) if c.starts_with("08") || c.starts_with("57P") || c == "53300" => {
                    ErrorKind::Unavailable
                }
                _ => ErrorKind::Internal,
            },
            DbError::Sqlx(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_),
            ) => ErrorKind::Unavailable,
            DbError::Sqlx(_) => ErrorKind::Internal,
        }
    }

    /// What a client may read about this failure: the server's own words,
    /// never Postgres's (whose text names tables, constraints and values).
    pub fn public_message(&self) -> String {
        match self {
            DbError::IdempotencyMismatch
            | DbError::Conflict(_)
            | DbError::Invalid(_)
            | DbError::Forbidden(_) => self.to_string(),
            DbError::Sqlx(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("40P01" | "40001")) =>
            {
                "a concurrent change got in the way; retry".to_owned()
            }
            _ => match self.kind() {
                ErrorKind::NotFound => "not found",
                ErrorKind::Conflict => "conflicts with an existing record",
                ErrorKind::Validation => "a value is out of range or malformed",
                ErrorKind::Forbidden => "not allowed",
                ErrorKind::Unavailable => "the database is unavailable; retry shortly",
                _ => "internal error",
            }
            .to_owned(),
        }
    }

    /// The violated constraint's name, for callers that tell duplicates apart.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            DbError::Sqlx(sqlx::Error::Database(db)) => db.constraint(),
            _ => None,
        }
    }
}
