//! `/api/docs` needs nothing from outside: the page loads Redoc from the node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchboard_testkit::TestApp;

#[tokio::test]
async fn the_docs_page_loads_its_script_from_the_node_and_names_no_other_host() {
    let app = TestApp::spawn().await;
    let page = app.http.get(app.url("/api/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "the page names another host: {html}");
    let src = html.split("<script src=\"").nth(1).and_then(|s| s.split('"').next()).unwrap();
    assert!(src.starts_with("/api/docs/redoc.js"), "{src}");

    let script = app.http.get(app.url(src)).send().await.unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(script.headers()["cache-control"].to_str().unwrap().contains("max-age=31536000"));
    let body = script.text().await.unwrap();
    assert!(body.len() > 500_000 && body.contains("spec-url"), "not the Redoc bundle");
    app.stop().await;
}
