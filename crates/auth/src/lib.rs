//! Credentials → [`Principal`](switchboard_domain::Principal).
//!
//! [`jwt`] verifies user tokens (HS256 with the secret, RS/ES/EdDSA through the
//! [`jwks`] cache; the algorithm allowed is fixed by the key, so `none` and
//! HS/RS confusion never pass) and mints development tokens in the claim layout
//! clients use. The same verifier serves the Socket.IO handshake and REST.
//! [`platform`] holds the operator's own credential, which no token can stand
//! in for; [`api_key`] hashes tenant API keys; [`failures`] limits failed
//! authentications per client address.

pub mod api_key;
pub mod failures;
pub mod jwks;
pub mod jwt;
pub mod platform;

pub use api_key::{ApiKeyHasher, GeneratedKey};
pub use failures::AuthFailures;
pub use jwt::{AuthError, Claims, JwtConfig, Verifier, mint_token};
pub use platform::PlatformKey;
