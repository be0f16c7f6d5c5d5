//! A node killed in the middle of an outbound webhook delivery loses
//! nothing: the receiver holds the first request, the node is killed, and a
//! node started afterwards takes the endpoint once the dead one's lease runs
//! out, sending that delivery again under the same id and then the rest, in
//! order, each signature good. (Its own test binary: the killed node would
//! otherwise die holding other tests' deliveries.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod webhooks_common;

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};
use webhooks_common::{Answer, Receiver, endpoint, spawn, task_event, tenant, verify};

#[tokio::test]
async fn a_node_killed_in_the_middle_of_a_delivery_loses_nothing() {
    let mut a = spawn("hooks-crash-a");
    let t = tenant(&a, "webhooks-crash").await;
    // The first request is held far past anything: the node dies meanwhile.
    let receiver = Receiver::start(&[Answer::Hang(Duration::from_secs(60))]).await;
    let (_, secret) = endpoint(&a, &t.admin, &receiver.url, json!(["*"])).await;
    let mut expected = Vec::new();
    for i in 0..3 {
        let (status, task) = a
            .send_json(
                Method::POST,
                &format!("/api/v1/projects/{}/tasks", t.project),
                &t.admin,
                &json!({ "title": format!("crash {i}") }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        expected.push((
            "task.created".to_owned(),
            task["id"].as_str().unwrap().to_owned(),
            "todo".to_owned(),
        ));
    }
    let started = Instant::now();
    while receiver.arrivals().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "nothing was sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();

    // Another node takes the endpoint once the dead node's lease runs out.
    let b = spawn("hooks-crash-b");
    let distinct = receiver.wait_for(expected.len(), Duration::from_secs(30)).await;
    let got: Vec<_> = distinct.iter().map(|a| task_event(&a.json)).collect();
    assert_eq!(got, expected);
    let arrivals = receiver.arrivals();
    assert_eq!(arrivals.iter().filter(|a| a.id == distinct[0].id).count(), 2, "sent again, same id");
    for arrival in &arrivals {
        verify(&secret, arrival).unwrap();
    }
    let hooks = b.get_json("/api/v1/webhooks", &t.admin).await;
    assert_eq!(hooks["data"][0]["pending"], 0, "{hooks}");
}
