//! JWKS verification against a real HTTP server on loopback that publishes the
//! keys in `tests/fixtures`, with a rotation, an outage, forged `kid`s and
//! algorithm confusion.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchboard_auth::jwks::MIN_REFRESH;
use switchboard_auth::{AuthError, Claims, JwtConfig, Verifier};
use switchboard_domain::{Principal, TenantId, UserId};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
}

/// A JWKS endpoint whose answer the test can change; `None` answers 503.
struct Endpoint {
    url: String,
    body: Arc<Mutex<Option<String>>>,
    fetches: Arc<AtomicU32>,
}

async fn endpoint(initial: &str) -> Endpoint {
    let body = Arc::new(Mutex::new(Some(fixture(initial))));
    let fetches = Arc::new(AtomicU32::new(0));
    let (b, f) = (body.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (b, f) = (b.clone(), f.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                match b.lock().unwrap().clone() {
                    Some(json) => (axum::http::StatusCode::OK, json),
                    None => (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Endpoint { url, body, fetches }
}

async fn verifier(url: &str) -> Verifier {
    Verifier::connect(&JwtConfig {
        secret: None,
        jwks_url: Some(url.to_owned()),
        issuer: None,
        audience: None,
    })
    .await
}

fn claims(tenant: TenantId, user: UserId) -> Claims {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    Claims {
        sub: Some(user.to_string()),
        tenant_id: Some(tenant.to_string()),
        exp: now + 600,
        ..Claims::default()
    }
}

fn sign(alg: Algorithm, kid: &str, pem: &str, claims: &Claims) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(fixture(pem).as_bytes()).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(fixture(pem).as_bytes()).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(fixture(pem).as_bytes()).unwrap(),
        other => panic!("{other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_verify_through_the_jwks() {
    let ep = endpoint("jwks1.json").await;
    let v = verifier(&ep.url).await;
    let (t, u) = (TenantId::new(), UserId::new());
    for (alg, kid, pem) in [
        (Algorithm::RS256, "rsa-1", "rsa1.pem"),
        (Algorithm::ES256, "ec-1", "ec1.pem"),
        (Algorithm::EdDSA, "ed-1", "ed1.pem"),
    ] {
        let token = sign(alg, kid, pem, &claims(t, u));
        assert!(
            matches!(v.verify(&token).await, Ok(Principal::User { tenant_id, .. }) if tenant_id == t),
            "{alg:?}"
        );
    }
    assert_eq!(ep.fetches.load(Ordering::SeqCst), 1, "fetched once, at start");
}

#[tokio::test]
async fn the_key_decides_the_algorithm() {
    let ep = endpoint("jwks1.json").await;
    let v = verifier(&ep.url).await;
    let c = claims(TenantId::new(), UserId::new());
    // An ES256 signature presented under the RSA key's kid.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("rsa-1".into());
    let key = EncodingKey::from_ec_pem(fixture("ec1.pem").as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &c, &key).unwrap();
    assert_eq!(v.verify(&token).await, Err(AuthError::Invalid("algorithm not allowed for this key")));
    // HS256 signed with the RSA public key's bytes (the classic confusion): no HS key here.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let token =
        jsonwebtoken::encode(&header, &c, &EncodingKey::from_secret(fixture("jwks1.json").as_bytes()))
            .unwrap();
    assert!(v.verify(&token).await.is_err());
    // No kid at all.
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &c,
        &EncodingKey::from_rsa_pem(fixture("rsa1.pem").as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(v.verify(&token).await, Err(AuthError::Invalid("no kid in the header")));
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_on_an_unknown_kid_at_most_once_per_interval() {
    let ep = endpoint("jwks1.json").await;
    let v = verifier(&ep.url).await;
    let (t, u) = (TenantId::new(), UserId::new());
    let old = sign(Algorithm::RS256, "rsa-1", "rsa1.pem", &claims(t, u));
    let new = sign(Algorithm::RS256, "rsa-2", "rsa2.pem", &claims(t, u));
    assert!(v.verify(&old).await.is_ok());

    *ep.body.lock().unwrap() = Some(fixture("jwks2.json"));
    // Right after the start-up fetch, an unknown kid does not fetch again.
    assert_eq!(v.verify(&new).await, Err(AuthError::Invalid("unknown signing key")));
    assert_eq!(ep.fetches.load(Ordering::SeqCst), 1);

    tokio::time::sleep(MIN_REFRESH + Duration::from_millis(100)).await;
    assert!(v.verify(&new).await.is_ok(), "the rotated key verifies after a refresh");
    assert_eq!(ep.fetches.load(Ordering::SeqCst), 2);
    assert!(v.verify(&old).await.is_err(), "the retired key no longer verifies");

    // A flood of forged kids within the interval costs no fetch.
    for i in 0..50 {
        let forged = sign(Algorithm::RS256, &format!("forged-{i}"), "rsa1.pem", &claims(t, u));
        assert!(v.verify(&forged).await.is_err());
    }
    assert_eq!(ep.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_last_good_set_is_kept_while_the_endpoint_is_down() {
    let ep = endpoint("jwks1.json").await;
    let v = verifier(&ep.url).await;
    *ep.body.lock().unwrap() = None;
    tokio::time::sleep(MIN_REFRESH + Duration::from_millis(100)).await;
    let (t, u) = (TenantId::new(), UserId::new());
    // An unknown kid triggers a fetch, which fails...
    assert!(v.verify(&sign(Algorithm::RS256, "rsa-2", "rsa2.pem", &claims(t, u))).await.is_err());
    assert_eq!(ep.fetches.load(Ordering::SeqCst), 2);
    // ...and the keys already known keep working.
    assert!(v.verify(&sign(Algorithm::ES256, "ec-1", "ec1.pem", &claims(t, u))).await.is_ok());

    *ep.body.lock().unwrap() = Some("{\"keys\": \"not a list\"}".to_owned());
    tokio::time::sleep(MIN_REFRESH + Duration::from_millis(100)).await;
    assert!(v.verify(&sign(Algorithm::RS256, "rsa-2", "rsa2.pem", &claims(t, u))).await.is_err());
    assert!(
        v.verify(&sign(Algorithm::RS256, "rsa-1", "rsa1.pem", &claims(t, u))).await.is_ok(),
        "garbage does not replace good keys"
    );
}

#[tokio::test]
async fn a_key_the_issuer_withdraws_stops_verifying_on_the_timer_without_an_unknown_kid() {
    let ep = endpoint("jwks1.json").await;
    let config = JwtConfig { secret: None, jwks_url: Some(ep.url.clone()), issuer: None, audience: None };
    let v = Verifier::connect_refreshing(&config, MIN_REFRESH).await;
    let (t, u) = (TenantId::new(), UserId::new());
    let old = sign(Algorithm::RS256, "rsa-1", "rsa1.pem", &claims(t, u));
    assert!(v.verify(&old).await.is_ok());
    // The issuer withdraws rsa-1; nobody presents an unknown kid.
    *ep.body.lock().unwrap() = Some(fixture("jwks2.json"));
    tokio::time::sleep(MIN_REFRESH + Duration::from_millis(700)).await;
    assert_eq!(ep.fetches.load(Ordering::SeqCst), 2, "refreshed by the timer");
    assert_eq!(v.verify(&old).await, Err(AuthError::Invalid("unknown signing key")));
}

#[tokio::test]
async fn a_key_set_over_the_cap_is_refused_while_it_streams_in() {
    use futures_util::StreamExt;
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    // A body that never ends, 64 KiB at a time, counting what was taken.
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let counter = counter.clone();
            async move {
                let chunk = bytes_of(64 * 1024);
                let stream = futures_util::stream::repeat(chunk).map(move |c| {
                    counter.fetch_add(c.len() as u64, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(c)
                });
                axum::body::Body::from_stream(stream)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let started = std::time::Instant::now();
    let v = verifier(&url).await;
    assert!(started.elapsed() < Duration::from_secs(3), "gave up at the cap, not at the timeout");
    let token = sign(Algorithm::RS256, "rsa-1", "rsa1.pem", &claims(TenantId::new(), UserId::new()));
    assert!(v.verify(&token).await.is_err(), "no key came from an oversized set");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let taken = sent.load(Ordering::SeqCst);
    assert!(taken < 4 * 1024 * 1024, "the client stopped reading near the cap, not after {taken} bytes");
}

fn bytes_of(n: usize) -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b' '; n])
}

#[tokio::test]
async fn a_jwks_url_over_plain_http_is_refused_unless_it_is_loopback() {
    use switchboard_auth::jwks::check_url;
    assert!(check_url("https://example.supabase.co/auth/v1/.well-known/jwks.json").is_ok());
    assert!(check_url("http://127.0.0.1:9999/jwks.json").is_ok());
    assert!(check_url("http://localhost/jwks.json").is_ok());
    assert!(check_url("http://[::1]:80/jwks.json").is_ok());
    for bad in ["http://example.com/jwks.json", "http://10.0.0.1/jwks.json", "ftp://x/y", "not a url"] {
        assert!(check_url(bad).is_err(), "{bad}");
    }
    // Such a URL is never fetched: nothing verifies.
    let v = verifier("http://192.0.2.1/jwks.json").await;
    let token = sign(Algorithm::RS256, "rsa-1", "rsa1.pem", &claims(TenantId::new(), UserId::new()));
    assert!(v.verify(&token).await.is_err());
}
