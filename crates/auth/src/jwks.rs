//! Keys from a JWKS endpoint (`JWT_JWKS_URL`, e.g. Supabase's
//! `/auth/v1/.well-known/jwks.json`).
//!
//! Guarantees:
//! - Fetched at start; a token whose `kid` is unknown triggers a refresh, at most
//!   once every [`MIN_REFRESH`] whatever the traffic, so forged `kid`s cannot turn
//!   into a flood of fetches.
//! - When the endpoint is down or answers garbage, the last good set is kept.
//! - Each key carries the one algorithm its type allows (RSA → RS256/384/512 as
//!   published, P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA); a token must name
//!   exactly that algorithm.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// The shortest time between two fetches.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// A JWKS larger than this is refused (a key set is a few KB).
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct KeyEntry {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, KeyEntry>,
    last_attempt: Option<Instant>,
}

/// A cached, self-refreshing key set.
pub struct Jwks {
    url: String,
    http: reqwest::Client,
    state: RwLock<State>,
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.state.read().map(|s| s.keys.len()).unwrap_or(0);
        f.debug_struct("Jwks").field("url", &self.url).field("keys", &keys).finish()
    }
}

/// The algorithm a key allows, from its type (and, for RSA, its published `alg`).
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match jwk.common.key_algorithm {
            None | Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::RS384) => Some(Algorithm::RS384),
            Some(KeyAlgorithm::RS512) => Some(Algorithm::RS512),
            _ => None,
        },
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Some(Algorithm::EdDSA),
        // Symmetric keys in a public JWKS would be a misconfiguration: never used.
        _ => None,
    }
}

fn parse(body: &[u8]) -> Result<HashMap<String, KeyEntry>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let (Some(kid), Some(algorithm)) = (jwk.common.key_id.clone(), algorithm_of(jwk)) else { continue };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid, KeyEntry { key, algorithm });
        }
    }
    Ok(keys)
}

impl Jwks {
    /// Fetches the set once; a failure is logged and retried on demand.
    pub async fn new(url: &str) -> Self {
        let http = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build().unwrap_or_default();
        let jwks = Self {
            url: url.to_owned(),
            http,
            state: RwLock::new(State::default()),
            fetching: Default::default(),
        };
        jwks.refresh().await;
        jwks
    }

    fn lookup(&self, kid: &str) -> Option<KeyEntry> {
        self.state.read().ok()?.keys.get(kid).cloned()
    }

    /// The key for `kid`, refreshing the set if it is unknown (rate limited).
    pub async fn key(&self, kid: &str) -> Option<KeyEntry> {
        if let Some(entry) = self.lookup(kid) {
            return Some(entry);
        }
        self.refresh().await;
        self.lookup(kid)
    }

    /// Fetches the set unless one was attempted within [`MIN_REFRESH`]. Concurrent
    /// callers share one fetch.
    async fn refresh(&self) {
        let _one_at_a_time = self.fetching.lock().await;
        let recent =
            self.state.read().ok().and_then(|s| s.last_attempt).is_some_and(|at| at.elapsed() < MIN_REFRESH);
        if recent {
            return;
        }
        if let Ok(mut s) = self.state.write() {
            s.last_attempt = Some(Instant::now());
        }
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "jwks refreshed");
                if let Ok(mut s) = self.state.write() {
                    s.keys = keys;
                }
            }
            Err(e) => tracing::warn!(error = %e, "jwks fetch failed; keeping the last good set"),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, KeyEntry>, String> {
        let response = self.http.get(&self.url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("the key set is too large".to_owned());
        }
        let keys = parse(&body)?;
        if keys.is_empty() {
            return Err("no usable signing keys".to_owned());
        }
        Ok(keys)
    }
}
