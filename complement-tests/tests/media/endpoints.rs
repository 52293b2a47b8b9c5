//! The content repository's endpoints over raw HTTP, against the spec's statuses,
//! errcodes and headers.

use std::time::Duration;

use anyhow::{Result, ensure};
use complement_tests::{TestServer, token};
use reqwest::Method;

use super::{get, mxc_path, png, send_bytes, upload};

#[tokio::test]
async fn downloads_answer_as_the_spec_says() -> Result<()> {
    let server =
        TestServer::start_with("[global.media]\nfreeze_legacy_endpoints = false\n").await?;
    let alice = server.register("alice").await?;
    let token = token(&alice);
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 256) as u8).collect();
    let uri = upload(
        &server,
        &token,
        "application/pdf",
        Some("report.pdf"),
        bytes.clone(),
    )
    .await?;
    let download = format!("/_matrix/client/v1/media/download/{}", mxc_path(&uri));

    // No token: 401 on every authenticated endpoint.
    for path in [
        download.clone(),
        format!(
            "/_matrix/client/v1/media/thumbnail/{}?width=32&height=32",
            mxc_path(&uri)
        ),
        "/_matrix/client/v1/media/config".to_owned(),
    ] {
        let answer = get(&server, &path, None, &[]).await?;
        ensure!(
            answer.status == 401 && answer.errcode() == "M_MISSING_TOKEN",
            "{path}: {}",
            answer.status
        );
    }
    let config = get(
        &server,
        "/_matrix/client/v1/media/config",
        Some(&token),
        &[],
    )
    .await?;
    ensure!(
        config.json()["m.upload.size"] == 50 * 1024 * 1024,
        "{:?}",
        config.json()
    );

    // The file: attachment (a PDF is not among the inline types), sandboxed, cacheable.
    let whole = get(&server, &download, Some(&token), &[]).await?;
    ensure!(whole.status == 200 && whole.body == bytes);
    ensure!(whole.header("content-type") == Some("application/pdf"));
    ensure!(whole.header("content-disposition") == Some("attachment; filename=\"report.pdf\""));
    ensure!(
        whole
            .header("content-security-policy")
            .is_some_and(|csp| csp.starts_with("sandbox"))
    );
    let etag = whole.header("etag").unwrap_or_default().to_owned();
    ensure!(etag.len() == 66, "etag {etag}");
    let again = get(
        &server,
        &download,
        Some(&token),
        &[("If-None-Match", &etag)],
    )
    .await?;
    ensure!(
        again.status == 304 && again.body.is_empty(),
        "{}",
        again.status
    );

    // A name in the path is the name served.
    let named = get(
        &server,
        &format!("{download}/other%20name.pdf"),
        Some(&token),
        &[],
    )
    .await?;
    ensure!(named.header("content-disposition") == Some("attachment; filename=\"other name.pdf\""));

    // Ranges: one is served as 206, several as the whole file, past the end is 416.
    let part = get(
        &server,
        &download,
        Some(&token),
        &[("Range", "bytes=100-199")],
    )
    .await?;
    ensure!(
        part.status == 206 && part.body == bytes[100..200],
        "{}",
        part.status
    );
    ensure!(part.header("content-range") == Some("bytes 100-199/10000"));
    let tail = get(&server, &download, Some(&token), &[("Range", "bytes=-10")]).await?;
    ensure!(tail.status == 206 && tail.body == bytes[9990..]);
    let several = get(
        &server,
        &download,
        Some(&token),
        &[("Range", "bytes=0-1,5-6")],
    )
    .await?;
    ensure!(several.status == 200 && several.body == bytes);
    let past = get(
        &server,
        &download,
        Some(&token),
        &[("Range", "bytes=10000-")],
    )
    .await?;
    ensure!(past.status == 416, "{}", past.status);

    // Unknown media is 404 M_NOT_FOUND, here and through the legacy endpoint.
    for path in [
        "/_matrix/client/v1/media/download/localhost/nothing_here".to_owned(),
        "/_matrix/media/v3/download/localhost/nothing_here".to_owned(),
    ] {
        let answer = get(&server, &path, Some(&token), &[]).await?;
        ensure!(
            answer.status == 404 && answer.errcode() == "M_NOT_FOUND",
            "{path}: {}",
            answer.status
        );
    }
    // With the freeze off, the legacy endpoint serves new media too, without a token.
    let legacy = get(
        &server,
        &format!("/_matrix/media/v3/download/{}", mxc_path(&uri)),
        None,
        &[],
    )
    .await?;
    ensure!(legacy.status == 200 && legacy.body == bytes);
    // An image type is inline; HTML is not, whatever the uploader said.
    let page = upload(
        &server,
        &token,
        "text/html",
        None,
        b"<script>alert(1)</script>".to_vec(),
    )
    .await?;
    let page = get(
        &server,
        &format!("/_matrix/client/v1/media/download/{}", mxc_path(&page)),
        Some(&token),
        &[],
    )
    .await?;
    ensure!(
        page.header("content-disposition") == Some("attachment"),
        "{:?}",
        page.header("content-disposition")
    );
    Ok(())
}

#[tokio::test]
async fn the_legacy_endpoints_are_frozen_for_new_media() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let uri = upload(&server, &token(&alice), "image/png", None, png(64, 64)).await?;
    for path in [
        format!("/_matrix/media/v3/download/{}", mxc_path(&uri)),
        format!(
            "/_matrix/media/v3/thumbnail/{}?width=32&height=32&method=crop",
            mxc_path(&uri)
        ),
    ] {
        let answer = get(&server, &path, Some(&token(&alice)), &[]).await?;
        ensure!(answer.status == 404, "{path}: {}", answer.status);
    }
    let authenticated = format!("/_matrix/client/v1/media/download/{}", mxc_path(&uri));
    ensure!(
        get(&server, &authenticated, Some(&token(&alice)), &[])
            .await?
            .status
            == 200
    );
    Ok(())
}

#[tokio::test]
async fn an_async_upload_is_awaited_and_cannot_be_overwritten() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let (alice_token, bob_token) = (token(&alice), token(&bob));
    let (status, created) = server
        .request("POST", "/_matrix/media/v1/create", Some(&alice_token), None)
        .await?;
    ensure!(status == 200, "create answered {status}: {created}");
    let uri = created["content_uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ensure!(created["unused_expires_at"].as_u64().is_some(), "{created}");
    let download = format!("/_matrix/client/v1/media/download/{}", mxc_path(&uri));
    let upload_path = format!("/_matrix/media/v3/upload/{}", mxc_path(&uri));

    // Nothing uploaded yet: a short wait ends in 504 M_NOT_YET_UPLOADED.
    let early = get(
        &server,
        &format!("{download}?timeout_ms=200"),
        Some(&bob_token),
        &[],
    )
    .await?;
    ensure!(
        early.status == 504 && early.errcode() == "M_NOT_YET_UPLOADED",
        "{}",
        early.status
    );

    // Another user may not upload to it.
    let foreign = send_bytes(
        &server,
        Method::PUT,
        &upload_path,
        &bob_token,
        "text/plain",
        b"x".to_vec(),
    )
    .await?;
    ensure!(
        foreign.status == 403 && foreign.errcode() == "M_FORBIDDEN",
        "{}",
        foreign.status
    );

    // A download waiting when the upload comes gets it.
    let waiting = {
        let path = format!("{download}?timeout_ms=10000");
        let bob_token = bob_token.clone();
        let server_url = server.base_url();
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(format!("{server_url}{path}"))
                .bearer_auth(bob_token)
                .send()
                .await?
                .bytes()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let put = send_bytes(
        &server,
        Method::PUT,
        &upload_path,
        &alice_token,
        "text/plain",
        b"late but here".to_vec(),
    )
    .await?;
    ensure!(
        put.status == 200 && put.json() == serde_json::json!({}),
        "{}",
        put.status
    );
    let received = waiting.await??;
    ensure!(&received[..] == b"late but here", "{received:?}");

    // A second upload is 409 M_CANNOT_OVERWRITE_MEDIA; an unknown id is 404.
    let again = send_bytes(
        &server,
        Method::PUT,
        &upload_path,
        &alice_token,
        "text/plain",
        b"again".to_vec(),
    )
    .await?;
    ensure!(
        again.status == 409 && again.errcode() == "M_CANNOT_OVERWRITE_MEDIA",
        "{}",
        again.status
    );
    let unknown = send_bytes(
        &server,
        Method::PUT,
        "/_matrix/media/v3/upload/localhost/unknown",
        &alice_token,
        "text/plain",
        b"x".to_vec(),
    )
    .await?;
    ensure!(
        unknown.status == 404 && unknown.errcode() == "M_NOT_FOUND",
        "{}",
        unknown.status
    );

    // Pending URIs are limited (five by default): the sixth is 429.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            server
                .request("POST", "/_matrix/media/v1/create", Some(&bob_token), None)
                .await?
                .0,
        );
    }
    ensure!(statuses == [200, 200, 200, 200, 200, 429], "{statuses:?}");
    Ok(())
}

#[tokio::test]
async fn size_limit_and_quota_are_the_specs_errors() -> Result<()> {
    let server =
        TestServer::start_with("[global.media]\nmax_upload_size = 100000\nuser_quota = 250000\n")
            .await?;
    let alice = server.register("alice").await?;
    let token = token(&alice);
    let config = get(
        &server,
        "/_matrix/client/v1/media/config",
        Some(&token),
        &[],
    )
    .await?;
    ensure!(config.json()["m.upload.size"] == 100000);
    let over = send_bytes(
        &server,
        Method::POST,
        "/_matrix/media/v3/upload",
        &token,
        "application/octet-stream",
        vec![1; 100_001],
    )
    .await?;
    ensure!(
        over.status == 413 && over.errcode() == "M_TOO_LARGE",
        "{}",
        over.status
    );
    // Streamed without a length, the limit still holds.
    let chunks = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![2u8; 10_000])));
    let streamed = reqwest::Client::new()
        .post(format!("{}/_matrix/media/v3/upload", server.base_url()))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    ensure!(streamed.status().as_u16() == 413, "{}", streamed.status());

    for i in 0..2u8 {
        upload(
            &server,
            &token,
            "application/octet-stream",
            None,
            vec![i; 100_000],
        )
        .await?;
    }
    let third = send_bytes(
        &server,
        Method::POST,
        "/_matrix/media/v3/upload",
        &token,
        "application/octet-stream",
        vec![9; 100_000],
    )
    .await?;
    ensure!(
        third.status == 403 && third.errcode() == "M_FORBIDDEN",
        "{}",
        third.status
    );
    Ok(())
}

/// An animated GIF keeps its animation in a thumbnail when asked (`animated=true`) and
/// is a still image otherwise, as the spec says.
#[tokio::test]
async fn animated_thumbnails_only_when_asked() -> Result<()> {
    use image::{
        AnimationDecoder, Frame, RgbaImage,
        codecs::gif::{GifDecoder, GifEncoder},
    };
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let token = token(&alice);
    let mut gif = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut gif);
        let frames = (0..4u8).map(|i| {
            Frame::new(RgbaImage::from_pixel(
                400,
                300,
                image::Rgba([i * 60, 90, 200, 255]),
            ))
        });
        encoder.encode_frames(frames)?;
    }
    let uri = upload(&server, &token, "image/gif", Some("party.gif"), gif).await?;
    let path = |animated: &str| {
        format!(
            "/_matrix/client/v1/media/thumbnail/{}?width=96&height=96&method=scale{animated}",
            mxc_path(&uri)
        )
    };
    let moving = get(&server, &path("&animated=true"), Some(&token), &[]).await?;
    ensure!(
        moving.status == 200 && moving.header("content-type") == Some("image/gif"),
        "{:?}",
        moving.header("content-type")
    );
    let frames = GifDecoder::new(std::io::Cursor::new(&moving.body))?
        .into_frames()
        .count();
    ensure!(frames == 4, "{frames} frames");
    for still in ["", "&animated=false"] {
        let answer = get(&server, &path(still), Some(&token), &[]).await?;
        ensure!(
            answer.status == 200 && answer.header("content-type") == Some("image/png"),
            "{still}: {:?}",
            answer.header("content-type")
        );
    }
    Ok(())
}
