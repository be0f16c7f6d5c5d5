//! The delivery worker every node runs. It takes the lease on endpoints of
//! any tenant that have pending deliveries and are due (`FOR UPDATE SKIP
//! LOCKED`), and sends each endpoint's deliveries one at a time, in the
//! endpoint's order, signed with its secret; endpoints are worked side by
//! side, so a slow one holds up only itself.
//!
//! An attempt that gets a 2xx settles its delivery; anything else (another
//! status, a timeout, a refused connection, a redirect) counts an attempt
//! and the endpoint waits (exponential backoff with jitter) before trying
//! the same delivery again, so nothing overtakes it. After
//! [`Settings::circuit_after`] failures in a row the endpoint's circuit opens
//! for at least the cool-down; after [`Settings::max_attempts`] a delivery is
//! given up (`failed`, redeliverable) and the next one goes. A node that dies
//! mid-delivery leaves its lease to run out; another node then sends the same
//! delivery again: at least once, and receivers deduplicate on `webhook-id`.

use crate::guard::{GuardedResolver, literal_refused};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;
use switchboard_db::repo::secrets;
use switchboard_db::repo::webhooks::{self as repo, Attempt, Claim, Due};
use switchboard_db::{Database, DbError, TenantContext};
use switchboard_domain::Role;
use switchboard_telemetry::metrics::JobLabels;
use switchboard_vault::{MasterKeys, VaultError, WrappedKey};
use tokio::task::JoinSet;

/// Deliveries one claim sends before it gives the endpoint back (it is taken
/// again at once if nothing else is due), so a busy endpoint cannot hold a
/// worker's slot for ever.
const CLAIM_BUDGET: usize = 200;

/// How long settled deliveries stay in the log, and how often (and how many
/// at a time) older ones are pruned.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_BATCH: i64 = 1_000;

/// What `AAD` name an endpoint's sealed signing secret is bound to (no
/// tenant secret can have it: `:` is not allowed in their names).
pub const SEALED_NAME: &str = ":webhook-signing-secret";

#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    /// How long one attempt may take (`WEBHOOK_TIMEOUT_MS`).
    pub timeout: Duration,
    /// The first retry's delay; each next one doubles, up to `max_delay`
    /// (`WEBHOOK_RETRY_BASE_MS`).
    pub retry_base: Duration,
    pub max_delay: Duration,
    /// Attempts before a delivery is given up (`WEBHOOK_MAX_ATTEMPTS`).
    pub max_attempts: i32,
    /// Failures in a row that open an endpoint's circuit, and how long it
    /// stays open at least (`WEBHOOK_CIRCUIT_COOL_DOWN_MS`).
    pub circuit_after: i32,
    pub cool_down: Duration,
    /// How often an idle worker looks for due endpoints.
    pub poll: Duration,
    /// Endpoints worked at once by this node.
    pub concurrency: usize,
    /// `WEBHOOK_ALLOW_PRIVATE`.
    pub allow_private: bool,
}

impl Settings {
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(5),
            max_delay: Duration::from_secs(2 * 3600),
            max_attempts: 15,
            circuit_after: 5,
            cool_down: Duration::from_secs(60),
            poll: Duration::from_millis(250),
            concurrency: 16,
            allow_private: false,
        }
    }

    /// How long a claim holds an endpoint: an attempt's timeout and a margin;
    /// renewed before every attempt.
    fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(5)
    }

    /// The wait before retrying a delivery that has failed `attempts` times:
    /// `retry_base` doubled per earlier attempt, capped, and drawn between
    /// half and all of that (so endpoints that failed together do not all
    /// come back at once).
    pub fn backoff(&self, attempts: i32) -> Duration {
        let doubled = self.retry_base.saturating_mul(1u32 << attempts.clamp(1, 20).saturating_sub(1));
        let full = doubled.min(self.max_delay);
        let mut byte = [0u8; 1];
        let fraction = match SystemRandom::new().fill(&mut byte) {
            Ok(()) => 0.5 + f64::from(byte[0]) / 510.0,
            Err(_) => 0.75,
        };
        full.mul_f64(fraction)
    }
}

/// The client every delivery goes through: no proxy from the environment
/// (it would connect around the guard), no redirects, the guarded resolver.
pub fn client(settings: &Settings) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .user_agent(concat!("Switchboard-Webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver { allow_private: settings.allow_private }))
        .build()
}

/// Runs for as long as its task lives (abort it to stop: what it was
/// sending is sent again by whichever node takes the lease next).
pub async fn run(db: Database, vault: Arc<MasterKeys>, settings: Settings) {
    let http = match client(&settings) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook deliveries stopped: no HTTP client");
            return;
        }
    };
    let worker = Arc::new(Worker { db, vault, settings, http });
    let mut running: JoinSet<()> = JoinSet::new();
    let mut pruned = tokio::time::Instant::now();
    loop {
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = tokio::time::Instant::now();
            worker.prune().await;
        }
        let room = worker.settings.concurrency.saturating_sub(running.len());
        let mut claimed = 0;
        if room > 0 {
            match worker.claim(room as i64).await {
                Ok(claims) => {
                    claimed = claims.len();
                    for claim in claims {
                        let w = worker.clone();
                        running.spawn(async move { w.endpoint(claim).await });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not look for due webhook endpoints"),
            }
        }
        if claimed == 0 || running.len() >= worker.settings.concurrency {
            tokio::select! {
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = tokio::time::sleep(worker.settings.poll) => {}
            }
        }
    }
}

struct Worker {
    db: Database,
    vault: Arc<MasterKeys>,
    settings: Settings,
    http: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
enum EndpointError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the endpoint's signing secret does not open: {0}")]
    Vault(#[from] VaultError),
    #[error("the tenant has no data key")]
    NoDataKey,
}

impl Worker {
    /// Deletes settled deliveries past [`RETENTION`], a batch at a time.
    async fn prune(&self) {
        loop {
            let pruned = async {
                let mut tx = self.db.begin_platform().await?;
                let n = repo::prune(&mut tx, RETENTION, PRUNE_BATCH).await?;
                tx.commit().await?;
                Ok::<_, DbError>(n)
            };
            match pruned.await {
                Ok(n) if n < PRUNE_BATCH as u64 => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not prune old webhook deliveries");
                    return;
                }
            }
        }
    }

    async fn claim(&self, n: i64) -> Result<Vec<Claim>, DbError> {
        let mut tx = self.db.begin_platform().await?;
        let claims = repo::claim(&mut tx, &self.settings.node, n, self.settings.lease()).await?;
        tx.commit().await?;
        Ok(claims)
    }

    fn ctx(claim: &Claim) -> TenantContext {
        TenantContext::new(claim.tenant, None, Role::Service)
    }

    /// Sends `claim`'s deliveries until none is left, one fails, or the
    /// lease is lost; then gives the lease back.
    async fn endpoint(&self, claim: Claim) {
        let worked = self.deliver_all(&claim).await;
        if let Err(e) = &worked {
            tracing::warn!(endpoint_id = %claim.endpoint, error = %e, "webhook endpoint not worked; put off");
        }
        let release = async {
            let mut tx = self.db.begin(&Self::ctx(&claim)).await?;
            if worked.is_err() {
                // Not at once again (whatever stopped it, a secret this node
                // cannot open or Postgres, is unlikely to pass in a moment),
                // but soon: another node, configured right, may take it.
                repo::defer(&mut tx, &claim, self.settings.cool_down.min(Duration::from_secs(5))).await?;
            }
            repo::release(&mut tx, &claim).await?;
            tx.commit().await
        };
        if let Err(e) = release.await {
            // The lease runs out on its own.
            tracing::warn!(endpoint_id = %claim.endpoint, error = %e, "could not give back a webhook lease");
        }
    }

    /// The endpoint's URL and signing secret, opened with the tenant's data key.
    /// The endpoint's URL and signing secrets (the current one, and the
    /// previous one while it still signs), opened with the tenant's data key.
    async fn signing(&self, claim: &Claim) -> Result<(String, Vec<SecretString>), EndpointError> {
        let mut tx = self.db.begin(&Self::ctx(claim)).await?;
        let signing = repo::signing(&mut tx, claim.endpoint).await?;
        let (master_id, bytes) = secrets::data_key(&mut tx).await?.ok_or(EndpointError::NoDataKey)?;
        tx.commit().await?;
        let tenant = claim.tenant.as_uuid();
        let key = self.vault.unwrap(tenant, &WrappedKey { master_id, bytes })?;
        let mut secrets =
            vec![key.open(tenant, claim.endpoint, SEALED_NAME, signing.version, &signing.sealed)?];
        if let Some(previous) = &signing.previous {
            secrets.push(key.open(tenant, claim.endpoint, SEALED_NAME, signing.version - 1, previous)?);
        }
        Ok((signing.url, secrets))
    }

    async fn deliver_all(&self, claim: &Claim) -> Result<(), EndpointError> {
        let (url, secrets) = self.signing(claim).await?;
        let mut sent = 0;
        while sent < CLAIM_BUDGET {
            let mut tx = self.db.begin(&Self::ctx(claim)).await?;
            if repo::hold(&mut tx, claim, self.settings.lease()).await?.is_none() {
                return Ok(());
            }
            let batch = repo::due(&mut tx, claim.endpoint, 16).await?;
            tx.commit().await?;
            if batch.is_empty() {
                return Ok(());
            }
            for due in &batch {
                if !self.attempt(claim, &url, &secrets, due).await? {
                    return Ok(());
                }
                sent += 1;
            }
        }
        Ok(())
    }

    /// One attempt at `due`, recorded; whether the endpoint goes on to the
    /// next delivery.
    async fn attempt(
        &self,
        claim: &Claim,
        url: &str,
        secrets: &[SecretString],
        due: &Due,
    ) -> Result<bool, EndpointError> {
        // The lease was checked and renewed (for a whole attempt and more) a
        // moment ago: by the batch's read, or by the previous attempt's record.
        let outcome = self.send(url, secrets, due).await;

        let mut tx = self.db.begin(&Self::ctx(claim)).await?;
        let Some(failures) = repo::hold(&mut tx, claim, self.settings.lease()).await? else {
            // Another node took over (the attempt outlived the lease): it
            // sends this delivery again.
            return Ok(false);
        };
        let metrics = switchboard_telemetry::metrics();
        let count =
            |outcome: &'static str| metrics.webhook_attempts.get_or_create(&JobLabels { outcome }).inc();
        let attempt = match outcome {
            Ok(status) => {
                count("delivered");
                Attempt::Delivered { status }
            }
            Err((status, error)) => {
                let give_up = due.attempts + 1 >= self.settings.max_attempts;
                let open = failures + 1 >= self.settings.circuit_after;
                let mut retry_after = self.settings.backoff(due.attempts + 1);
                if open {
                    retry_after = retry_after.max(self.settings.cool_down);
                }
                count(if give_up { "failed" } else { "retry" });
                tracing::info!(
                    endpoint_id = %claim.endpoint, delivery_id = %due.id, attempt = due.attempts + 1,
                    status, error = %error, give_up, circuit_open = open,
                    retry_in_ms = retry_after.as_millis() as u64, "webhook delivery failed"
                );
                Attempt::Failed { status, error, give_up, retry_after, open }
            }
        };
        repo::settle(&mut tx, claim, due, &attempt).await?;
        tx.commit().await?;
        Ok(matches!(attempt, Attempt::Delivered { .. }))
    }

    /// Posts `due` to `url`: the HTTP status of a 2xx, or the status (if
    /// any) and what went wrong.
    async fn send(
        &self,
        url: &str,
        secrets: &[SecretString],
        due: &Due,
    ) -> Result<i32, (Option<i32>, String)> {
        let parsed =
            url::Url::parse(url).map_err(|_| (None, "the endpoint's URL does not parse".to_owned()))?;
        if literal_refused(&parsed, self.settings.allow_private) {
            return Err((None, "the endpoint's address is private or internal".to_owned()));
        }
        let body = serde_json::to_vec(&due.payload).map_err(|e| (None, e.to_string()))?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        // One `v1,` signature per secret, space separated (Standard Webhooks).
        let signature = secrets
            .iter()
            .map(|s| crate::sign(s, &due.event_id, timestamp, &body))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| (None, "the endpoint's signing secret is malformed".to_owned()))?
            .join(" ");
        let sent = self
            .http
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", &due.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(res) if res.status().is_success() => Ok(i32::from(res.status().as_u16())),
            Ok(res) => {
                let status = res.status();
                Err((Some(i32::from(status.as_u16())), format!("the endpoint answered {status}")))
            }
            Err(e) => {
                let why = if e.is_timeout() {
                    format!("no answer within {} ms", self.settings.timeout.as_millis())
                } else if e.is_connect() {
                    // Only the guard's refusal is told; refused and
                    // unreachable look alike (the log is not a port scanner).
                    let mut cause: &dyn std::error::Error = &e;
                    while let Some(next) = cause.source() {
                        cause = next;
                    }
                    if cause.to_string() == crate::guard::REFUSED {
                        format!("could not connect: {}", crate::guard::REFUSED)
                    } else {
                        "could not connect".to_owned()
                    }
                } else {
                    // Without the URL: it may carry a token of the tenant's.
                    e.without_url().to_string()
                };
                Err((None, why))
            }
        }
    }
}
