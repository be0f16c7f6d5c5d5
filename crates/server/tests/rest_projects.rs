//! Projects over REST: CRUD with audit, pagination, and another tenant's ids.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use switchboard_domain::{Role, UserId};
use switchboard_testkit::{TestApp, user_token};

#[tokio::test]
async fn a_member_creates_lists_patches_and_deletes_projects_and_each_change_is_audited() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("projects").await;
    let token = user_token(tenant, UserId::new(), Role::Member);
    let mut ids = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let res = app
            .http
            .post(app.url("/api/v1/projects"))
            .bearer_auth(&token)
            .json(&json!({ "name": name, "description": "d" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["tenant_id"], tenant.to_string());
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    let page: Value = app.get_json("/api/v1/projects?limit=2", &token).await;
    let names: Vec<&str> =
        page["data"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gamma", "beta"], "newest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .http
        .get(app.url(&format!("/api/v1/projects?limit=2&cursor={cursor}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["data"][0]["name"], "alpha");
    assert!(rest["next_cursor"].is_null());

    let url = app.url(&format!("/api/v1/projects/{}", ids[0]));
    let res =
        app.http.patch(&url).bearer_auth(&token).json(&json!({ "name": "renamed" })).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["name"], "renamed");
    assert_eq!(app.http.delete(&url).bearer_auth(&token).send().await.unwrap().status(), 204);
    assert_eq!(app.http.get(&url).bearer_auth(&token).send().await.unwrap().status(), 404);

    // The audit log (read straight from Postgres in the tenant's context).
    let db = switchboard_db::Database::connect(&switchboard_testkit::env("DATABASE_URL")).await.unwrap();
    let mut tx = db.begin(&switchboard_db::TenantContext::new(tenant, None, Role::Admin)).await.unwrap();
    let logs = switchboard_db::repo::audit::list(&mut tx, &Default::default(), None, 50).await.unwrap();
    let actions: Vec<&str> = logs.iter().map(|l| l.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "project.delete",
            "project.update",
            "project.create",
            "project.create",
            "project.create",
            "tenant.create"
        ]
    );
    assert!(logs[0].request_id.as_deref().is_some_and(|r| !r.is_empty()));
    assert_eq!(logs[0].ip.as_deref(), Some("127.0.0.1"));
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_project_is_not_found_for_read_update_and_delete() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.create_tenant("a").await, app.create_tenant("b").await);
    let (ta, tb) = (user_token(a, UserId::new(), Role::Owner), user_token(b, UserId::new(), Role::Owner));
    let res = app
        .http
        .post(app.url("/api/v1/projects"))
        .bearer_auth(&tb)
        .json(&json!({ "name": "b's" }))
        .send()
        .await
        .unwrap();
    let b_project: Value = res.json().await.unwrap();
    let url = app.url(&format!("/api/v1/projects/{}", b_project["id"].as_str().unwrap()));

    assert_eq!(app.http.get(&url).bearer_auth(&ta).send().await.unwrap().status(), 404);
    let res = app.http.patch(&url).bearer_auth(&ta).json(&json!({ "name": "stolen" })).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(app.http.delete(&url).bearer_auth(&ta).send().await.unwrap().status(), 404);
    let list: Value = app.get_json("/api/v1/projects", &ta).await;
    assert_eq!(list["data"], json!([]));

    let still: Value = app.http.get(&url).bearer_auth(&tb).send().await.unwrap().json().await.unwrap();
    assert_eq!(still["name"], "b's", "B's project is unchanged");
    app.stop().await;
}

#[tokio::test]
async fn project_input_is_validated() {
    let app = TestApp::spawn().await;
    let tenant = app.create_tenant("validation").await;
    let token = user_token(tenant, UserId::new(), Role::Member);
    let url = app.url("/api/v1/projects");
    for (body, status) in [
        (json!({}), 422),
        (json!({ "name": "" }), 422),
        (json!({ "name": "x".repeat(201) }), 422),
        (json!({ "name": 5 }), 422),
        (json!({ "name": "ok", "description": "d".repeat(2001) }), 422),
        (json!({ "name": "nul\u{0}byte" }), 422),
        (json!({ "name": "ok", "description": "a\u{0}b" }), 422),
    ] {
        let res = app.http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(res.status(), status, "{body}");
    }
    let res = app
        .http
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let list: Value = app.http.get(&url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["data"], json!([]), "nothing was created by bad input");

    // Metadata Postgres could store but not hand back, or absurdly nested: refused.
    let res = app.http.post(&url).bearer_auth(&token).json(&json!({ "name": "ok" })).send().await.unwrap();
    let project: Value = res.json().await.unwrap();
    let project_url = app.url(&format!("/api/v1/projects/{}", project["id"].as_str().unwrap()));
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    for metadata in [json!({ "x": -1.797_693_134_862_315_7e308 }), json!({ "d": deep }), json!([1])] {
        let res = app
            .http
            .patch(&project_url)
            .bearer_auth(&token)
            .json(&json!({ "metadata": metadata }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422);
    }
    let after: Value =
        app.http.get(&project_url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(after["metadata"], json!({}), "unchanged");
    assert_eq!(app.status_of(reqwest::Method::GET, "/api/v1/projects/123", &token).await, 404);
    app.stop().await;
}
