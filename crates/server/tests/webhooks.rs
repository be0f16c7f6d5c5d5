//! Outbound webhooks on real `switchboard` processes and a real receiver on
//! loopback: every event delivered at least once, in order per endpoint,
//! each signature verifiable with the endpoint's secret, through a receiver
//! that fails, then times out, then recovers (the endpoint's circuit opening
//! on the way); a change that is refused sends nothing; a node killed in the
//! the delivery log, redelivery, secret rotation, and another tenant's reach.
//! (A node killed mid-delivery is `webhooks_crash.rs`, the address guard
//! `webhooks_guard.rs`: each its own test binary, so that no other test's
//! nodes, which deliver for every tenant, die or refuse loopback under this
//! one's deliveries.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod webhooks_common;

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};
use switchboard_db::{Database, TenantContext};
use switchboard_domain::Role;
use switchboard_testkit::{env, metric_sum};
use webhooks_common::{Answer, Receiver, endpoint, spawn, task_event, tenant, verify};

#[tokio::test]
async fn deliveries_outlast_failures_and_timeouts_in_order_signed_and_logged() {
    let (a, b) = (spawn("hooks-a"), spawn("hooks-b"));
    let t = tenant(&a, "webhooks").await;
    // Three 500s, then two answers that come after the sender's timeout,
    // then the receiver is healthy.
    let hang = Answer::Hang(Duration::from_secs(2));
    let receiver =
        Receiver::start(&[Answer::Status(500), Answer::Status(500), Answer::Status(503), hang, hang]).await;
    let (id, secret) = endpoint(&a, &t.admin, &receiver.url, json!(["task.*"])).await;
    assert!(secret.starts_with("whsec_"), "{secret}");

    // Changes on both nodes, one after another: their commit order is the
    // order the endpoint must see.
    let mut expected = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (status, task) = node
            .send_json(
                Method::POST,
                &format!("/api/v1/projects/{}/tasks", t.project),
                &t.admin,
                &json!({ "title": format!("task {i}") }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        let task_id = task["id"].as_str().unwrap().to_owned();
        expected.push(("task.created".to_owned(), task_id.clone(), "todo".to_owned()));
        tasks.push(task_id);
    }
    for (i, task) in tasks.iter().take(3).enumerate() {
        let node = if i % 2 == 0 { &b } else { &a };
        let (status, moved) = node
            .send_json(
                Method::PATCH,
                &format!("/api/v1/tasks/{task}"),
                &t.admin,
                &json!({ "status": "in_progress" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{moved}");
        expected.push(("task.updated".to_owned(), task.clone(), "in_progress".to_owned()));
    }
    // A move the task's status does not allow changes nothing and sends nothing.
    let (status, refused) = a
        .send_json(
            Method::PATCH,
            &format!("/api/v1/tasks/{}", tasks[5]),
            &t.admin,
            &json!({ "status": "done" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");

    // The receiver keeps failing: the endpoint's circuit opens (seen while
    // it is open, if a look comes in time; the gap below shows it anyway).
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) && receiver.arrivals().len() < 6 {
        let shown = a.get_json(&format!("/api/v1/webhooks/{id}"), &t.admin).await;
        if shown["circuit"] == "open" {
            assert!(shown["failures"].as_i64().unwrap() >= 5, "{shown}");
            assert!(shown["open_until"].is_string(), "{shown}");
            assert_eq!(shown["pending"], expected.len(), "nothing delivered yet: {shown}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Then it recovers: every event arrives, in order, each signature good.
    let distinct = receiver.wait_for(expected.len(), Duration::from_secs(30)).await;
    let got: Vec<_> = distinct.iter().map(|a| task_event(&a.json)).collect();
    assert_eq!(got, expected, "in commit order, nothing lost, nothing extra");
    for arrival in receiver.arrivals() {
        verify(&secret, &arrival).unwrap_or_else(|e| panic!("{e}: {arrival:?}"));
        assert!(arrival.id.starts_with("msg_"), "{}", arrival.id);
        assert!(arrival.json["timestamp"].is_string());
    }
    // The first event was tried five times before it went through, under one
    // id; after the fifth failure the open circuit held the next attempt off
    // for its cool-down (3 s), longer than any backoff here (at most 1.6 s).
    let first = &distinct[0].id;
    let tries: Vec<_> = receiver.arrivals().into_iter().filter(|a| &a.id == first).collect();
    let story: Vec<_> = tries.iter().map(|a| (a.answered, a.at.duration_since(tries[0].at))).collect();
    assert_eq!(tries.len(), 6, "{story:?}");
    let held_off = tries[5].at.duration_since(tries[4].at);
    assert!(held_off >= Duration::from_secs(3), "{story:?}");
    // A signature made with another secret does not verify.
    assert!(verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &distinct[0]).is_err());

    // The log tells the same story, newest first.
    let log = b.get_json(&format!("/api/v1/webhooks/{id}/deliveries?limit=100"), &t.admin).await;
    let rows = log["data"].as_array().unwrap();
    assert_eq!(rows.len(), expected.len(), "{log}");
    assert!(rows.iter().all(|d| d["status"] == "delivered" && d["last_status"] == 200), "{log}");
    let oldest = rows.last().unwrap();
    assert_eq!((oldest["seq"].as_i64(), oldest["attempts"].as_i64()), (Some(1), Some(6)), "{oldest}");
    assert_eq!(oldest["event_id"], json!(first));
    let shown = a.get_json(&format!("/api/v1/webhooks/{id}"), &t.admin).await;
    assert_eq!((shown["circuit"].as_str(), shown["pending"].as_i64()), (Some("closed"), Some(0)), "{shown}");
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    let attempts = |outcome: &str| {
        let labels = [("outcome", outcome)];
        metric_sum(&ma, "switchboard_webhook_attempts_total", &labels)
            + metric_sum(&mb, "switchboard_webhook_attempts_total", &labels)
    };
    // Counted where they were made (the other test's nodes share the
    // database and may have made some of these attempts).
    let shown: Vec<&str> =
        ma.lines().chain(mb.lines()).filter(|l| l.starts_with("switchboard_webhook")).collect();
    assert!(attempts("retry") >= 1.0, "{shown:?}");
    assert!(attempts("delivered") >= 1.0, "{shown:?}");

    // Redelivery: the same event, the same id, at the end of the order.
    let path = format!("/api/v1/webhooks/{id}/deliveries/{}/retry", oldest["id"].as_str().unwrap());
    let (status, again) = a.send_json(Method::POST, &path, &t.admin, &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(
        (again["event_id"].as_str(), again["redelivery_of"].as_str()),
        (Some(first.as_str()), oldest["id"].as_str())
    );
    let started = Instant::now();
    while receiver.arrivals().iter().filter(|a| &a.id == first).count() < 7 {
        assert!(started.elapsed() < Duration::from_secs(10), "no redelivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = receiver.arrivals().last().cloned().unwrap();
    verify(&secret, &last).unwrap();
    assert_eq!(last.json, distinct[0].json, "the same body");

    // A rotated secret signs what comes next; for a day the old one signs
    // beside it (two signatures), so receivers can switch over.
    let (status, rotated) = a
        .send_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &t.admin,
            &json!({ "rotate_secret": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["secret_version"], 2);
    let until: chrono::DateTime<chrono::Utc> =
        rotated["previous_secret_until"].as_str().unwrap().parse().unwrap();
    let left = until - chrono::Utc::now();
    assert!(left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24), "{rotated}");
    let (status, _) = b
        .send_json(
            Method::PATCH,
            &format!("/api/v1/tasks/{}", tasks[3]),
            &t.admin,
            &json!({ "status": "in_progress" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let distinct = receiver.wait_for(expected.len() + 1, Duration::from_secs(10)).await;
    let newest = distinct.last().unwrap();
    assert_eq!(
        task_event(&newest.json),
        ("task.updated".to_owned(), tasks[3].clone(), "in_progress".to_owned())
    );
    verify(&new_secret, newest).unwrap();
    verify(&secret, newest).unwrap();
    assert_eq!(newest.signature.split(' ').count(), 2, "{}", newest.signature);

    // Once the day is over, only the new one signs.
    let db = Database::connect(&env("DATABASE_URL")).await.unwrap();
    let mut tx = db.begin(&TenantContext::new(t.id, None, Role::Service)).await.unwrap();
    sqlx::query(
        "UPDATE webhook_endpoints SET previous_until = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let shown = a.get_json(&format!("/api/v1/webhooks/{id}"), &t.admin).await;
    assert!(shown["previous_secret_until"].is_null(), "{shown}");
    let (status, _) = a
        .send_json(
            Method::PATCH,
            &format!("/api/v1/tasks/{}", tasks[4]),
            &t.admin,
            &json!({ "status": "in_progress" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let distinct = receiver.wait_for(expected.len() + 2, Duration::from_secs(10)).await;
    let newest = distinct.last().unwrap();
    assert_eq!(task_event(&newest.json).1, tasks[4]);
    verify(&new_secret, newest).unwrap();
    assert!(verify(&secret, newest).is_err());

    // Another tenant reaches none of the log, by route or at the rows.
    let other = tenant(&b, "webhooks-other").await;
    let log_path = format!("/api/v1/webhooks/{id}/deliveries");
    assert_eq!(b.status_of(Method::GET, &log_path, &other.admin).await, StatusCode::NOT_FOUND);
    let mut tx = db.begin(&TenantContext::new(other.id, None, Role::Service)).await.unwrap();
    let seen: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1::uuid")
            .bind(&id)
            .fetch_one(tx.conn())
            .await
            .unwrap();
    assert_eq!(seen, 0);
    for statement in [
        "UPDATE webhook_deliveries SET status = 'pending' WHERE endpoint_id = $1::uuid",
        "DELETE FROM webhook_deliveries WHERE endpoint_id = $1::uuid",
        "DELETE FROM webhook_endpoints WHERE id = $1::uuid",
    ] {
        let done = sqlx::query(statement).bind(&id).execute(tx.conn()).await.unwrap();
        assert_eq!(done.rows_affected(), 0, "{statement}");
    }
    let forged = sqlx::query(
        "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, seq, event_id, event_type, payload)
         VALUES ($1, $2::uuid, 999, 'msg_forged', 'task.created', '{}')",
    )
    .bind(t.id.as_uuid())
    .bind(&id)
    .execute(tx.conn())
    .await;
    let code =
        forged.err().and_then(|e| e.as_database_error().and_then(|d| d.code().map(|c| c.into_owned())));
    assert_eq!(code.as_deref(), Some("42501"));
}
