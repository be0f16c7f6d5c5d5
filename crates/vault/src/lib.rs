//! Tenant secrets at rest: envelope encryption with AES-256-GCM. Each tenant
//! has its own data key (32 random bytes); values are sealed with it, and it
//! is stored only wrapped (sealed) by the master key, which lives in the
//! configuration and never in the database. Every sealed box carries what it
//! belongs to as associated data (the tenant, and for a value the secret's id,
//! name and version), so a box moved to another tenant, secret, name or
//! version does not open. (A database writer who puts back an older box of
//! the same secret, id and version included, is not detected.)
//! Master keys have ids: a wrapped key records the id that wrapped it, older
//! master keys stay readable while a rotation re-wraps every data key under
//! the new one, and values are never touched by it.
//!
//! Nothing here touches the network or a database, and no key or value is
//! ever formatted: `Debug` says only which key id is meant.

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use std::collections::HashMap;
use uuid::Uuid;

/// A key's length in bytes (AES-256).
pub const KEY_LEN: usize = 32;
/// What sealing adds to a value: the nonce before it, the tag after.
pub const OVERHEAD: usize = NONCE_LEN + 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    /// The box was altered, or is not for this key, tenant, name or version.
    #[error("the sealed data does not open with this key: altered, or someone else's")]
    Tampered,
    /// The wrapped key names a master key this node does not have.
    #[error("no master key with id `{0}` is configured")]
    UnknownMasterKey(String),
    #[error("the system random generator failed")]
    Random,
    #[error("{0}")]
    Config(String),
}

/// A tenant's data key, unwrapped: in memory only while used, its bytes
/// zeroed when dropped (copies inside the AEAD's key schedule are not).
pub struct DataKey(SecretBox<[u8; KEY_LEN]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A fresh random data key.
    pub fn generate() -> Result<Self, VaultError> {
        let mut bytes = Box::new([0u8; KEY_LEN]);
        SystemRandom::new().fill(bytes.as_mut()).map_err(|_| VaultError::Random)?;
        Ok(Self(SecretBox::new(bytes)))
    }

    /// Seals `value` as version `version` of secret `secret` (its id) named
    /// `name`, of `tenant`.
    pub fn seal(
        &self,
        tenant: Uuid,
        secret: Uuid,
        name: &str,
        version: i32,
        value: &str,
    ) -> Result<Vec<u8>, VaultError> {
        seal(self.0.expose_secret(), &value_aad(tenant, secret, name, version), value.as_bytes())
    }

    /// Opens what [`Self::seal`] sealed for the same tenant, secret, name and
    /// version.
    pub fn open(
        &self,
        tenant: Uuid,
        secret: Uuid,
        name: &str,
        version: i32,
        sealed: &[u8],
    ) -> Result<SecretString, VaultError> {
        let bytes = open(self.0.expose_secret(), &value_aad(tenant, secret, name, version), sealed)?;
        String::from_utf8(bytes.to_vec()).map(SecretString::from).map_err(|_| VaultError::Tampered)
    }
}

fn value_aad(tenant: Uuid, secret: Uuid, name: &str, version: i32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(80 + name.len());
    aad.extend_from_slice(b"switchboard/secret/v1\0");
    aad.extend_from_slice(tenant.as_bytes());
    aad.extend_from_slice(secret.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(name.as_bytes());
    aad
}

fn key_aad(tenant: Uuid, master_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64 + master_id.len());
    aad.extend_from_slice(b"switchboard/data-key/v1\0");
    aad.extend_from_slice(tenant.as_bytes());
    aad.extend_from_slice(master_id.as_bytes());
    aad
}

fn aead(key: &[u8; KEY_LEN]) -> Result<LessSafeKey, VaultError> {
    UnboundKey::new(&AES_256_GCM, key).map(LessSafeKey::new).map_err(|_| VaultError::Tampered)
}

/// nonce ‖ ciphertext ‖ tag, with a random 96-bit nonce (a data key seals
/// far fewer than the 2^32 values that random nonces allow).
fn seal(key: &[u8; KEY_LEN], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, VaultError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| VaultError::Random)?;
    let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
    out.extend_from_slice(&nonce);
    let mut body = plain.to_vec();
    aead(key)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
        .map_err(|_| VaultError::Tampered)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// The opened bytes, zeroed when dropped.
fn open(key: &[u8; KEY_LEN], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if sealed.len() < OVERHEAD {
        return Err(VaultError::Tampered);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Tampered)?;
    let mut body = Zeroizing::new(body.to_vec());
    let len =
        aead(key)?.open_in_place(nonce, Aad::from(aad), &mut body).map_err(|_| VaultError::Tampered)?.len();
    body.truncate(len);
    Ok(body)
}

/// A data key as stored: sealed by the master key `master_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub master_id: String,
    pub bytes: Vec<u8>,
}

/// The master keys this node has: the current one (new data keys and
/// re-wraps use it) and older ones still accepted while a rotation runs.
pub struct MasterKeys {
    current: String,
    keys: HashMap<String, SecretBox<[u8; KEY_LEN]>>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        f.debug_struct("MasterKeys").field("current", &self.current).field("ids", &ids).finish()
    }
}

fn decode_key(what: &str, text: &str) -> Result<SecretBox<[u8; KEY_LEN]>, VaultError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| VaultError::Config(format!("{what} is not base64")))?;
    let key: [u8; KEY_LEN] = bytes
        .try_into()
        .map_err(|_| VaultError::Config(format!("{what} must decode to exactly {KEY_LEN} bytes")))?;
    Ok(SecretBox::new(Box::new(key)))
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl MasterKeys {
    /// From `SECRETS_MASTER_KEY` (base64 of 32 bytes), `SECRETS_MASTER_KEY_ID`
    /// and `SECRETS_PREVIOUS_KEYS` (`id:base64` pairs, comma-separated).
    /// Errors name the setting, never a key.
    pub fn from_config(
        current: &SecretString,
        current_id: &str,
        previous: Option<&str>,
    ) -> Result<Self, VaultError> {
        if !valid_id(current_id) {
            return Err(VaultError::Config(
                "SECRETS_MASTER_KEY_ID: 1 to 64 letters, digits, `-`, `_` or `.`".to_owned(),
            ));
        }
        let mut keys = HashMap::new();
        keys.insert(current_id.to_owned(), decode_key("SECRETS_MASTER_KEY", current.expose_secret())?);
        for (i, pair) in
            previous.unwrap_or("").split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate()
        {
            let Some((id, key)) = pair.split_once(':') else {
                return Err(VaultError::Config(format!(
                    "SECRETS_PREVIOUS_KEYS: entry {} is not `id:base64`",
                    i + 1
                )));
            };
            if !valid_id(id) || id == current_id {
                return Err(VaultError::Config(format!(
                    "SECRETS_PREVIOUS_KEYS: entry {} has a bad or repeated id",
                    i + 1
                )));
            }
            let key = decode_key(&format!("SECRETS_PREVIOUS_KEYS entry {}", i + 1), key)?;
            if keys.insert(id.to_owned(), key).is_some() {
                return Err(VaultError::Config(format!("SECRETS_PREVIOUS_KEYS: id `{id}` appears twice")));
            }
        }
        Ok(Self { current: current_id.to_owned(), keys })
    }

    /// The id new data keys are wrapped under.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    fn key(&self, id: &str) -> Result<&[u8; KEY_LEN], VaultError> {
        self.keys
            .get(id)
            .map(|k| k.expose_secret())
            .ok_or_else(|| VaultError::UnknownMasterKey(id.to_owned()))
    }

    /// Wraps `tenant`'s data key under the current master key.
    pub fn wrap(&self, tenant: Uuid, key: &DataKey) -> Result<WrappedKey, VaultError> {
        let bytes = seal(self.key(&self.current)?, &key_aad(tenant, &self.current), key.0.expose_secret())?;
        Ok(WrappedKey { master_id: self.current.clone(), bytes })
    }

    /// Unwraps `tenant`'s data key (under whichever master key wrapped it).
    pub fn unwrap(&self, tenant: Uuid, wrapped: &WrappedKey) -> Result<DataKey, VaultError> {
        let plain =
            open(self.key(&wrapped.master_id)?, &key_aad(tenant, &wrapped.master_id), &wrapped.bytes)?;
        if plain.len() != KEY_LEN {
            return Err(VaultError::Tampered);
        }
        let mut key = Box::new([0u8; KEY_LEN]);
        key.copy_from_slice(&plain);
        Ok(DataKey(SecretBox::new(key)))
    }

    /// The same data key wrapped under the current master key; `None` when
    /// it already is.
    pub fn rewrap(&self, tenant: Uuid, wrapped: &WrappedKey) -> Result<Option<WrappedKey>, VaultError> {
        if wrapped.master_id == self.current {
            return Ok(None);
        }
        let key = self.unwrap(tenant, wrapped)?;
        self.wrap(tenant, &key).map(Some)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn b64(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; KEY_LEN])
    }

    fn master(id: &str, byte: u8, previous: Option<&str>) -> MasterKeys {
        MasterKeys::from_config(&SecretString::from(b64(byte)), id, previous).unwrap()
    }

    #[test]
    fn a_value_opens_only_for_its_tenant_name_and_version_and_never_shows() {
        let (tenant, other, id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let key = DataKey::generate().unwrap();
        let sealed = key.seal(tenant, id, "GITHUB_TOKEN", 1, "ghp_supersecret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"ghp_su"), "the value is not in the box");
        assert_eq!(sealed.len(), "ghp_supersecret".len() + OVERHEAD);
        assert_eq!(
            key.open(tenant, id, "GITHUB_TOKEN", 1, &sealed).unwrap().expose_secret(),
            "ghp_supersecret"
        );
        assert_eq!(key.open(other, id, "GITHUB_TOKEN", 1, &sealed).err(), Some(VaultError::Tampered));
        assert_eq!(key.open(tenant, id, "SLACK_TOKEN", 1, &sealed).err(), Some(VaultError::Tampered));
        assert_eq!(key.open(tenant, id, "GITHUB_TOKEN", 2, &sealed).err(), Some(VaultError::Tampered));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(
                key.open(tenant, id, "GITHUB_TOKEN", 1, &bad).err(),
                Some(VaultError::Tampered),
                "byte {i}"
            );
        }
        assert_eq!(key.open(tenant, id, "GITHUB_TOKEN", 1, &sealed[..10]).err(), Some(VaultError::Tampered));
        // Another data key does not open it.
        let stranger = DataKey::generate().unwrap();
        assert_eq!(stranger.open(tenant, id, "GITHUB_TOKEN", 1, &sealed).err(), Some(VaultError::Tampered));
        // Two seals of one value differ (fresh nonces).
        assert_ne!(sealed, key.seal(tenant, id, "GITHUB_TOKEN", 1, "ghp_supersecret").unwrap());
        // Another secret (deleted and made again under the same name) does not open it.
        assert_eq!(
            key.open(tenant, Uuid::new_v4(), "GITHUB_TOKEN", 1, &sealed).err(),
            Some(VaultError::Tampered)
        );
        assert_eq!(format!("{key:?}"), "DataKey(..)");
    }

    #[test]
    fn data_keys_survive_a_master_key_rotation() {
        let tenant = Uuid::new_v4();
        let old = master("k1", 7, None);
        let data = DataKey::generate().unwrap();
        let id = Uuid::new_v4();
        let sealed = data.seal(tenant, id, "X", 1, "value").unwrap();
        let wrapped = old.wrap(tenant, &data).unwrap();
        assert_eq!(wrapped.master_id, "k1");
        // Wrapped for one tenant, it does not unwrap as another's.
        assert_eq!(old.unwrap(Uuid::new_v4(), &wrapped).err(), Some(VaultError::Tampered));

        // The new key is current; the old one still reads until re-wrapped.
        let new = master("k2", 9, Some(&format!("k1:{}", b64(7))));
        let again = new.unwrap(tenant, &wrapped).unwrap();
        assert_eq!(again.open(tenant, id, "X", 1, &sealed).unwrap().expose_secret(), "value");
        let rewrapped = new.rewrap(tenant, &wrapped).unwrap().unwrap();
        assert_eq!(rewrapped.master_id, "k2");
        assert_eq!(new.rewrap(tenant, &rewrapped).unwrap(), None, "already under the current key");
        // Once the old key is gone, only the re-wrapped key reads, and the value is unchanged.
        let only_new = master("k2", 9, None);
        assert_eq!(only_new.unwrap(tenant, &wrapped).err(), Some(VaultError::UnknownMasterKey("k1".into())));
        let key = only_new.unwrap(tenant, &rewrapped).unwrap();
        assert_eq!(key.open(tenant, id, "X", 1, &sealed).unwrap().expose_secret(), "value");
        assert!(!format!("{only_new:?}").contains(&b64(9)));
    }

    #[test]
    fn bad_master_key_settings_name_the_setting_not_the_key() {
        let short = SecretString::from(base64::engine::general_purpose::STANDARD.encode([1u8; 16]));
        let err = MasterKeys::from_config(&short, "k1", None).unwrap_err().to_string();
        assert!(err.contains("SECRETS_MASTER_KEY") && err.contains("32 bytes"), "{err}");
        let good = SecretString::from(b64(1));
        assert!(MasterKeys::from_config(&good, "bad id!", None).is_err());
        let err = MasterKeys::from_config(&good, "k1", Some("k0")).unwrap_err().to_string();
        assert!(err.contains("SECRETS_PREVIOUS_KEYS"), "{err}");
        let err =
            MasterKeys::from_config(&good, "k1", Some(&format!("k1:{}", b64(2)))).unwrap_err().to_string();
        assert!(err.contains("repeated"), "{err}");
        assert!(MasterKeys::from_config(&SecretString::from("not base64!".to_owned()), "k1", None).is_err());
    }
}
