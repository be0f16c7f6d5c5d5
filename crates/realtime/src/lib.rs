//! The Socket.IO layer: the handshake guard, topics and their authorization, one
//! file per event group, bus ↔ local rooms, and drain. [`codes`] is the one place
//! an [`ErrorKind`](switchboard_domain::ErrorKind) becomes what a Socket.IO client
//! sees.

pub mod codes;
pub mod directory;

pub use directory::{Directory, DirectoryError, TenantInfo};
