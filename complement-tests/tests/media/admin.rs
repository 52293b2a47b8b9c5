//! Media administration through Synapse's admin API, and what deletion does to the
//! files: the same bytes are stored once, a file stays while any media id (or
//! thumbnail) uses it and goes with the last.

use anyhow::{Context, Result, ensure};
use complement_tests::{TestServer, token};

use super::{get, mxc_path, png, upload};

/// The media files on disk (staging aside).
fn files(server: &TestServer) -> Result<usize> {
    fn walk(dir: &std::path::Path, count: &mut usize) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if entry.file_name() != "staging" {
                    walk(&entry.path(), count)?;
                }
            } else {
                *count += 1;
            }
        }
        Ok(())
    }
    let mut count = 0;
    walk(&server.database_path().join("media"), &mut count)?;
    Ok(count)
}

async fn admin_request(
    server: &TestServer,
    method: &str,
    path: &str,
    token: &str,
) -> Result<(u16, serde_json::Value)> {
    server.request(method, path, Some(token), None).await
}

#[tokio::test]
async fn files_are_shared_and_deleted_with_their_last_owner() -> Result<()> {
    let server = TestServer::start().await?;
    let admin = server.register_admin("admin").await?;
    let alice = server.register("alice").await?;
    let token = token(&alice);
    let picture = png(300, 200);
    let first = upload(&server, &token, "image/png", Some("a.png"), picture.clone()).await?;
    let second = upload(&server, &token, "image/png", Some("b.png"), picture.clone()).await?;
    ensure!(first != second, "two uploads are two media ids");
    ensure!(
        files(&server)? == 1,
        "the same bytes twice are one file, not {}",
        files(&server)?
    );
    let thumbnail = format!(
        "/_matrix/client/v1/media/thumbnail/{}?width=96&height=96&method=crop",
        mxc_path(&first)
    );
    ensure!(get(&server, &thumbnail, Some(&token), &[]).await?.status == 200);
    ensure!(files(&server)? == 2, "the thumbnail is a second file");

    // Only administrators may use the admin API.
    let delete_first = format!("/_synapse/admin/v1/media/{}", mxc_path(&first));
    let (status, _) = admin_request(&server, "DELETE", &delete_first, &token).await?;
    ensure!(
        status == 403,
        "a user deleting through the admin API: {status}"
    );

    let (status, body) = admin_request(
        &server,
        "GET",
        "/_synapse/admin/v1/users/@alice:localhost/media",
        &admin,
    )
    .await?;
    ensure!(status == 200 && body["total"] == 2, "{body}");
    ensure!(
        body["media"][0]["upload_name"] == "b.png"
            && body["media"][0]["media_length"] == picture.len(),
        "{body}"
    );

    // Deleting one media id keeps the file the other still uses; its thumbnail goes.
    let (status, body) = admin_request(&server, "DELETE", &delete_first, &admin).await?;
    ensure!(
        status == 200 && body["deleted_media"][0] == first.rsplit('/').next().unwrap_or_default(),
        "{body}"
    );
    ensure!(
        files(&server)? == 1,
        "after the first delete: {} files",
        files(&server)?
    );
    let gone = get(
        &server,
        &format!("/_matrix/client/v1/media/download/{}", mxc_path(&first)),
        Some(&token),
        &[],
    )
    .await?;
    ensure!(gone.status == 404, "deleted media: {}", gone.status);
    let kept = get(
        &server,
        &format!("/_matrix/client/v1/media/download/{}", mxc_path(&second)),
        Some(&token),
        &[],
    )
    .await?;
    ensure!(
        kept.status == 200 && kept.body == picture,
        "the other media id"
    );
    let (status, _) = admin_request(&server, "DELETE", &delete_first, &admin).await?;
    ensure!(status == 404, "deleting again: {status}");

    // By age: everything local before now; the file goes with its last owner.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let (status, body) = admin_request(
        &server,
        "POST",
        &format!("/_synapse/admin/v1/media/delete?before_ts={now}"),
        &admin,
    )
    .await?;
    ensure!(status == 200 && body["total"] == 1, "{body}");
    ensure!(
        files(&server)? == 0,
        "after deleting by age: {} files",
        files(&server)?
    );

    // A user's media, all at once.
    for i in 0..3u8 {
        upload(
            &server,
            &token,
            "application/octet-stream",
            None,
            vec![i; 1000],
        )
        .await?;
    }
    let (status, body) = admin_request(
        &server,
        "DELETE",
        "/_synapse/admin/v1/users/@alice:localhost/media",
        &admin,
    )
    .await?;
    ensure!(status == 200 && body["total"] == 3, "{body}");
    ensure!(files(&server)? == 0);
    let (_, body) = admin_request(
        &server,
        "GET",
        "/_synapse/admin/v1/users/@alice:localhost/media",
        &admin,
    )
    .await?;
    ensure!(body["total"] == 0, "{body}");

    let (status, body) =
        admin_request(&server, "POST", "/_synapse/admin/v1/media/delete", &admin).await?;
    ensure!(
        status == 400 && body["errcode"] == "M_INVALID_PARAM",
        "missing before_ts: {status} {body}"
    );
    body.get("error").context("an error message")?;
    Ok(())
}
