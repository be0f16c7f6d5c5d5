//! Platform tenant routes and `GET /me`: success, validation, credentials, roles,
//! and the audit row written with each change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchboard_domain::{Role, TenantId, UserId};
use switchboard_testkit::{TestApp, expired_token, platform_token, service_role_token, user_token};

#[tokio::test]
async fn a_platform_operator_creates_reads_patches_and_deletes_a_tenant() {
    let app = TestApp::spawn().await;
    let token = platform_token();
    let res = app
        .http
        .post(app.url("/api/v1/tenants"))
        .bearer_auth(&token)
        .json(&json!({ "name": "Acme", "limits": { "max_connections": 7 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "active");
    assert_eq!(created["effective_limits"]["max_connections"], 7);
    assert_eq!(created["effective_limits"]["events_per_second"], 1000);

    let url = app.url(&format!("/api/v1/tenants/{id}"));
    let got: Value = app.http.get(&url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["name"], "Acme");

    let res = app
        .http
        .patch(&url)
        .bearer_auth(&token)
        .json(&json!({ "status": "suspended", "limits": { "events_per_second": 5 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let patched: Value = res.json().await.unwrap();
    assert_eq!(patched["status"], "suspended");
    assert_eq!(patched["effective_limits"]["events_per_second"], 5);

    // The tenant's own admin is now refused, with the precise code.
    let admin = user_token(id.parse().unwrap(), UserId::new(), Role::Admin);
    let res = app.http.get(app.url("/api/v1/me")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "tenant_suspended");

    assert_eq!(app.http.delete(&url).bearer_auth(&token).send().await.unwrap().status(), 204);
    assert_eq!(app.http.get(&url).bearer_auth(&token).send().await.unwrap().status(), 404);
    assert_eq!(app.http.delete(&url).bearer_auth(&token).send().await.unwrap().status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn tenant_routes_refuse_bad_input_with_the_failing_fields() {
    let app = TestApp::spawn().await;
    let token = platform_token();
    let post = |body: String| {
        app.http
            .post(app.url("/api/v1/tenants"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let res = post("{\"name\": ".to_owned()).await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(body["error"]["request_id"].is_string());

    let res = post(json!({ "name": "" }).to_string()).await.unwrap();
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["details"]["name"].is_array(), "{body}");

    for limits in [json!({ "max_connections": 0 }), json!({ "max_sockets": 3 }), json!([1])] {
        let res = post(json!({ "name": "x", "limits": limits }).to_string()).await.unwrap();
        assert_eq!(res.status(), 422, "{limits}");
        let body: Value = res.json().await.unwrap();
        assert!(body["error"]["details"]["limits"].is_array(), "{body}");
    }
    let res = post(json!({ "name": "x", "colour": "red" }).to_string()).await.unwrap();
    assert_eq!(res.status(), 422);

    let res = post(json!({ "name": "x".repeat(2 * 1024 * 1024) }).to_string()).await.unwrap();
    assert_eq!(res.status(), 413);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    let url = app.url(&format!("/api/v1/tenants/{}", TenantId::new()));
    let res =
        app.http.patch(&url).bearer_auth(&token).json(&json!({ "status": "gone" })).send().await.unwrap();
    assert_eq!(res.status(), 422);
    let res =
        app.http.patch(&url).bearer_auth(&token).json(&json!({ "status": "active" })).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let res = app.http.get(app.url("/api/v1/tenants/not-a-uuid")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn tenant_routes_need_the_platform_key() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("Owned").await;
    let url = app.url("/api/v1/tenants");
    let res = app.http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let res = app.http.get(&url).bearer_auth("not.a.token").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = app.http.get(&url).bearer_auth(expired_token(tenant, UserId::new())).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "token_expired");

    // Even a tenant's owner is not a platform operator.
    let owner = user_token(tenant, UserId::new(), Role::Owner);
    let res = app.http.get(&url).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let res = app
        .http
        .patch(app.url(&format!("/api/v1/tenants/{tenant}")))
        .bearer_auth(&owner)
        .json(&json!({ "status": "active" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    // A service_role token signed with the user-token secret (a Supabase
    // project's service key) manages nothing: not tenants, not the drain.
    let service = service_role_token();
    for (method, path) in [
        (reqwest::Method::GET, "/api/v1/tenants".to_owned()),
        (reqwest::Method::POST, "/api/v1/tenants".to_owned()),
        (reqwest::Method::GET, format!("/api/v1/tenants/{tenant}")),
        (reqwest::Method::DELETE, format!("/api/v1/tenants/{tenant}")),
        (reqwest::Method::POST, "/admin/drain".to_owned()),
    ] {
        let (status, body) = app.send_json(method.clone(), &path, &service, &json!({ "name": "x" })).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{body}");
    }
    // A key that is almost the platform key is nobody.
    let almost = format!("{}x", platform_token());
    assert_eq!(app.status_of(reqwest::Method::GET, "/api/v1/tenants", &almost).await, 401);
    assert_eq!(
        app.status_of(reqwest::Method::GET, &format!("/api/v1/tenants/{tenant}"), &platform_token()).await,
        200
    );
    assert_eq!(app.get_json("/health/ready", "").await["status"], "ready", "nothing was drained");
    app.stop().await;
}

#[tokio::test]
async fn without_a_platform_key_the_platform_routes_answer_401() {
    let app = TestApp::spawn_with(&[("PLATFORM_KEY", "")]).await;
    for token in [platform_token(), service_role_token()] {
        let (status, body) =
            app.send_json(reqwest::Method::POST, "/api/v1/tenants", &token, &json!({ "name": "x" })).await;
        assert_eq!(status, 401, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("PLATFORM_KEY"), "{body}");
        assert_eq!(app.status_of(reqwest::Method::POST, "/admin/drain", &token).await, 401);
    }
    app.stop().await;
}

#[tokio::test]
async fn tenants_are_listed_page_by_page() {
    let app = TestApp::spawn().await;
    let token = platform_token();
    let mut mine = Vec::new();
    for i in 0..3 {
        mine.push(app.create_tenant(&format!("page-{i}")).await.to_string());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = app.url("/api/v1/tenants?limit=2");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.http.get(&url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(mine.iter().all(|id| seen.contains(id)));
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no tenant appears twice across pages");
    let res = app.http.get(app.url("/api/v1/tenants?limit=0")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 422);
    let res = app.http.get(app.url("/api/v1/tenants?cursor=zzz")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 422);
    app.stop().await;
}
