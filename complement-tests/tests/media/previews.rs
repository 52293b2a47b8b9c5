//! Link previews against a local web site: refused while its address is denied (the
//! default for loopback), read once allowed (title, description, the image kept as
//! media), and a redirect into a denied address never followed.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use anyhow::{Result, ensure};
use axum::{Router, response::IntoResponse, routing::get as route};
use complement_tests::{TestServer, token};

use super::{get, mxc_path, png};

/// A web site on 0.0.0.0 (so reachable as 127.0.0.1 and 127.0.0.2): `/page` with
/// OpenGraph tags and `/cover.png`; `/hop` redirects to `/page` on 127.0.0.2. Counts
/// the requests for `/page`.
async fn web_site() -> Result<(u16, Arc<AtomicUsize>, Vec<u8>)> {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let port = listener.local_addr()?.port();
    let pages = Arc::new(AtomicUsize::new(0));
    let cover = png(200, 100);
    let counted = pages.clone();
    let image = cover.clone();
    let app = Router::new()
        .route(
            "/page",
            route(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    (
                        [("content-type", "text/html; charset=utf-8")],
                        "<html><head><title>Fallback</title>\
                         <meta property=\"og:title\" content=\"Lunch &amp; Learn\">\
                         <meta property=\"og:description\" content=\"Fridays at one\">\
                         <meta property=\"og:image\" content=\"/cover.png\"></head></html>",
                    )
                }
            }),
        )
        .route(
            "/cover.png",
            route(move || {
                let image = image.clone();
                async move { ([("content-type", "image/png")], image).into_response() }
            }),
        )
        .route(
            "/hop",
            route(move || async move {
                axum::response::Redirect::temporary(&format!("http://127.0.0.2:{port}/page"))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((port, pages, cover))
}

fn preview_path(url: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(url.as_bytes()).collect();
    format!("/_matrix/client/v1/media/preview_url?url={encoded}")
}

#[tokio::test]
async fn previews_read_allowed_sites_and_refuse_local_addresses() -> Result<()> {
    let (port, pages, cover) = web_site().await?;
    let page = format!("http://127.0.0.1:{port}/page");

    // Off by default.
    let off = TestServer::start().await?;
    let alice = off.register("alice").await?;
    let answer = get(&off, &preview_path(&page), Some(&token(&alice)), &[]).await?;
    ensure!(answer.status == 403, "previews off: {}", answer.status);

    // On, with loopback denied as by default: refused before any request.
    let denied = TestServer::start_with("[global.media]\nurl_preview_enabled = true\n").await?;
    let alice = denied.register("alice").await?;
    let answer = get(&denied, &preview_path(&page), Some(&token(&alice)), &[]).await?;
    ensure!(
        answer.status == 403 && answer.errcode() == "M_FORBIDDEN",
        "loopback: {}",
        answer.status
    );
    let by_name = format!("http://localhost:{port}/page");
    let answer = get(&denied, &preview_path(&by_name), Some(&token(&alice)), &[]).await?;
    ensure!(
        answer.status != 200,
        "a name resolving to loopback: {}",
        answer.status
    );
    ensure!(pages.load(Ordering::SeqCst) == 0, "the page was fetched");

    // On, with 127.0.0.1 allowed: the page's tags and its image, kept as media.
    let allowed = TestServer::start_with(
        "[global.media]\nurl_preview_enabled = true\nurl_preview_ip_allow = [\"127.0.0.1/32\"]\n",
    )
    .await?;
    let alice = allowed.register("alice").await?;
    let answer = get(&allowed, &preview_path(&page), Some(&token(&alice)), &[]).await?;
    ensure!(
        answer.status == 200,
        "allowed: {} {:?}",
        answer.status,
        answer.json()
    );
    let tags = answer.json();
    ensure!(tags["og:title"] == "Lunch & Learn", "{tags}");
    ensure!(tags["og:description"] == "Fridays at one", "{tags}");
    ensure!(
        tags["og:image:width"] == 200 && tags["matrix:image:size"] == cover.len(),
        "{tags}"
    );
    let image = tags["og:image"].as_str().unwrap_or_default();
    let stored = get(
        &allowed,
        &format!("/_matrix/client/v1/media/download/{}", mxc_path(image)),
        Some(&token(&alice)),
        &[],
    )
    .await?;
    ensure!(
        stored.status == 200 && stored.body == cover,
        "the preview image"
    );

    // Asked again: from the cache, the site is not visited again.
    let visits = pages.load(Ordering::SeqCst);
    let again = get(&allowed, &preview_path(&page), Some(&token(&alice)), &[]).await?;
    ensure!(
        again.status == 200 && pages.load(Ordering::SeqCst) == visits,
        "cache"
    );

    // A redirect to 127.0.0.2, which is not allowed, is not followed.
    let hop = format!("http://127.0.0.1:{port}/hop");
    let answer = get(&allowed, &preview_path(&hop), Some(&token(&alice)), &[]).await?;
    ensure!(
        answer.status != 200,
        "redirect: {} {:?}",
        answer.status,
        answer.json()
    );
    ensure!(
        pages.load(Ordering::SeqCst) == visits,
        "the redirect was followed"
    );
    Ok(())
}
