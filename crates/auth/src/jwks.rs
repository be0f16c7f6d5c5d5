//! Keys from a JWKS endpoint (`JWT_JWKS_URL`, e.g. Supabase's
//! `/auth/v1/.well-known/jwks.json`).
//!
//! Guarantees:
//! - Fetched at start and on a timer ([`REFRESH_EVERY`] by default), so a key
//!   the issuer withdraws stops verifying even if no token names an unknown
//!   `kid`; a token whose `kid` is unknown also triggers a refresh, at most
//!   once every [`MIN_REFRESH`] whatever the traffic, so forged `kid`s cannot
//!   turn into a flood of fetches.
//! - Only `https://` URLs, or `http://` to a loopback address (a local issuer,
//!   tests): keys must not travel where they can be swapped ([`check_url`]).
//! - A key set larger than [`MAX_JWKS_BYTES`] is refused while it streams in,
//!   never read whole.
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
/// How often the set is fetched again without being asked.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// A JWKS larger than this is refused (a key set is a few KB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why a JWKS URL cannot be used, if it cannot: it must be `https://`, or
/// `http://` to a loopback host.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(format!("`{url}` must use https:// (plain http only to a loopback address)")),
        other => Err(format!("`{url}`: unsupported scheme `{other}` (https:// only)")),
    }
}

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
    /// Fetches the set once; a failure is logged and retried on demand. A URL
    /// that [`check_url`] refuses is never fetched (no key verifies).
    pub async fn new(url: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
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

    /// Refreshes `jwks` every `every` while it is alive.
    pub fn refresh_every(jwks: &std::sync::Arc<Self>, every: Duration) {
        let weak = std::sync::Arc::downgrade(jwks);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(MIN_REFRESH));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(jwks) = weak.upgrade() else { return };
                jwks.refresh().await;
            }
        });
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
        check_url(&self.url)?;
        let mut response = self.http.get(&self.url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let too_large = || format!("the key set is over {MAX_JWKS_BYTES} bytes");
        if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(too_large());
        }
        // Read as it streams: a body that keeps coming is cut off at the cap.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse(&body)?;
        if keys.is_empty() {
            return Err("no usable signing keys".to_owned());
        }
        Ok(keys)
    }
}
