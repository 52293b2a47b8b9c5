//! Media across two instances of this server: uploaded on A, downloaded and thumbnailed
//! by a user of B through B, which fetches it over federation once and then serves it
//! from its cache (also with A gone); a thumbnail alone is fetched as A made it,
//! without the original.

use anyhow::Result;
use anyhow::ensure;
use complement_tests::{TestServer, tls::TestCa, token};

use super::{get, jpeg, mxc_path, upload};

#[tokio::test]
async fn media_of_one_server_is_served_by_the_other_and_cached() -> Result<()> {
    let ca = TestCa::new();
    let (mut a, b) = TestServer::start_federated_pair(&ca).await?;
    let alice = a.register("alice").await?;
    let bob = b.register("bob").await?;
    let photo = jpeg(1024, 768);
    let uri = upload(
        &a,
        &token(&alice),
        "image/jpeg",
        Some("holiday.jpg"),
        photo.clone(),
    )
    .await?;
    ensure!(
        uri.starts_with(&format!("mxc://{}/", a.server_name())),
        "{uri}"
    );
    let download = format!("/_matrix/client/v1/media/download/{}", mxc_path(&uri));
    let thumbnail = format!(
        "/_matrix/client/v1/media/thumbnail/{}?width=320&height=240&method=scale",
        mxc_path(&uri)
    );

    let first = get(&b, &download, Some(&token(&bob)), &[]).await?;
    ensure!(
        first.status == 200,
        "first download: {} {:?}\n{}",
        first.status,
        first.json(),
        b.log()
    );
    ensure!(first.body == photo, "the photo came back different");
    ensure!(first.header("content-disposition") == Some("inline; filename=\"holiday.jpg\""));
    let small = get(&b, &thumbnail, Some(&token(&bob)), &[]).await?;
    ensure!(small.status == 200);
    let made = image::load_from_memory(&small.body)?;
    ensure!(
        (made.width(), made.height()) == (320, 240),
        "{}x{}",
        made.width(),
        made.height()
    );

    // Another photo, only thumbnailed on B: B fetches A's thumbnail, not the original.
    let other = jpeg(1280, 960);
    let other_uri = upload(&a, &token(&alice), "image/jpeg", None, other).await?;
    let other_thumbnail = format!(
        "/_matrix/client/v1/media/thumbnail/{}?width=96&height=96&method=crop",
        mxc_path(&other_uri)
    );
    let first_look = get(&b, &other_thumbnail, Some(&token(&bob)), &[]).await?;
    ensure!(
        first_look.status == 200,
        "remote thumbnail: {} {:?}",
        first_look.status,
        first_look.json()
    );
    let made = image::load_from_memory(&first_look.body)?;
    ensure!(
        (made.width(), made.height()) == (96, 96),
        "{}x{}",
        made.width(),
        made.height()
    );

    // A is gone: B still has what it fetched, and not what it did not.
    a.kill9()?;
    let second = get(&b, &download, Some(&token(&bob)), &[]).await?;
    ensure!(
        second.status == 200 && second.body == photo,
        "second download: {}",
        second.status
    );
    let again = get(&b, &thumbnail, Some(&token(&bob)), &[]).await?;
    ensure!(again.status == 200 && again.body == small.body);
    let second_look = get(&b, &other_thumbnail, Some(&token(&bob)), &[]).await?;
    ensure!(second_look.status == 200 && second_look.body == first_look.body);
    let never = format!("/_matrix/client/v1/media/download/{}", mxc_path(&other_uri));
    let never = get(&b, &never, Some(&token(&bob)), &[]).await?;
    ensure!(
        never.status == 502,
        "the original was fetched: {}",
        never.status
    );

    // Purged from B's cache, it cannot come back while A is down.
    let admin = b.register_admin("admin").await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let (status, body) = b
        .request(
            "POST",
            &format!("/_synapse/admin/v1/purge_media_cache?before_ts={now}"),
            Some(&admin),
            None,
        )
        .await?;
    ensure!(
        status == 200 && body["deleted"] == 2,
        "purge: {status} {body}"
    );
    let purged = get(&b, &download, Some(&token(&bob)), &[]).await?;
    ensure!(purged.status == 502, "after the purge: {}", purged.status);

    // Media B never had, of a server that is down: a clean 502, not a hang.
    let missing = format!(
        "/_matrix/client/v1/media/download/{}/never_fetched",
        a.server_name()
    );
    let answer = get(&b, &missing, Some(&token(&bob)), &[]).await?;
    ensure!(
        answer.status == 502,
        "unreachable server: {} {:?}",
        answer.status,
        answer.json()
    );
    Ok(())
}
