//! Credentials → [`Principal`](switchboard_domain::Principal).
//!
//! [`jwt`] verifies user and platform tokens (HS256 with the secret, RS/ES/EdDSA
//! through the [`jwks`] cache) (the algorithm allowed is fixed by the
//! key, so `none` and HS/RS confusion never pass) and mints development tokens in
//! the contract's claim layout. The same verifier serves the Socket.IO handshake
//! and REST.

pub mod api_key;
pub mod jwks;
pub mod jwt;

pub use api_key::{ApiKeyHasher, GeneratedKey};
pub use jwt::{AuthError, Claims, JwtConfig, Verifier, mint_token};
