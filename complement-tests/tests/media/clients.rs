//! Media as matrix-sdk (the Rust SDK behind Element X) sends and shows it.

use anyhow::{Context, Result, ensure};
use complement_tests::{TestServer, all_messages, room_of_two, token};
use matrix_sdk::{
    attachment::{AttachmentConfig, Thumbnail},
    media::{MediaFormat, MediaRequestParameters, MediaThumbnailSettings},
    ruma::{OwnedMxcUri, UInt, events::room::MediaSource, media::Method},
};
use serde_json::{Value, json};

use super::{get, jpeg, mxc_path, png, upload};

fn file(uri: &str) -> MediaRequestParameters {
    MediaRequestParameters {
        source: MediaSource::Plain(OwnedMxcUri::from(uri)),
        format: MediaFormat::File,
    }
}

fn thumbnail(uri: &str, method: Method, width: u32, height: u32) -> MediaRequestParameters {
    MediaRequestParameters {
        source: MediaSource::Plain(OwnedMxcUri::from(uri)),
        format: MediaFormat::Thumbnail(MediaThumbnailSettings::with_method(
            method,
            UInt::from(width),
            UInt::from(height),
        )),
    }
}

/// The newest event of `kind` in the room, as Bob reads it.
async fn newest(server: &TestServer, reader: &str, room_id: &str, kind: &str) -> Result<Value> {
    all_messages(server, reader, room_id)
        .await?
        .into_iter()
        .find(|event| event["type"] == kind)
        .context("no such event")
}

#[tokio::test]
async fn an_avatar_and_an_image_message_reach_the_other_user_with_thumbnails() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let room_id = room_of_two(&alice, &bob).await?;

    // An avatar: uploaded, set, and shown to Bob through the profile.
    let avatar = jpeg(256, 256);
    let avatar_url = alice
        .account()
        .upload_avatar(&mime::IMAGE_JPEG, avatar.clone())
        .await?;
    let profile = bob
        .account()
        .fetch_user_profile_of(alice.user_id().context("logged in")?)
        .await?;
    ensure!(
        profile.get("avatar_url").and_then(Value::as_str) == Some(avatar_url.as_str()),
        "{profile:?}"
    );
    let shown = bob
        .media()
        .get_media_content(&file(avatar_url.as_str()), false)
        .await?;
    ensure!(shown == avatar, "the avatar came back different");
    let small = bob
        .media()
        .get_media_content(&thumbnail(avatar_url.as_str(), Method::Crop, 32, 32), false)
        .await?;
    let small = image::load_from_memory(&small)?;
    ensure!(
        (small.width(), small.height()) == (32, 32),
        "avatar thumbnail {}x{}",
        small.width(),
        small.height()
    );

    // An image message with the thumbnail the client made.
    let photo = png(800, 600);
    let own_thumbnail = png(320, 240);
    let config = AttachmentConfig::new().thumbnail(Some(Thumbnail {
        data: own_thumbnail.clone(),
        content_type: mime::IMAGE_PNG,
        width: UInt::from(320u32),
        height: UInt::from(240u32),
        size: UInt::try_from(own_thumbnail.len())?,
    }));
    let room = alice.get_room(&room_id).context("alice's room")?;
    room.send_attachment("photo.png", &mime::IMAGE_PNG, photo.clone(), config)
        .await?;

    let event = newest(&server, &token(&bob), room_id.as_str(), "m.room.message").await?;
    let content = &event["content"];
    ensure!(content["msgtype"] == "m.image", "{event}");
    let url = content["url"].as_str().context("no url")?;
    let thumbnail_url = content["info"]["thumbnail_url"]
        .as_str()
        .context("no thumbnail")?;
    ensure!(content["info"]["thumbnail_info"]["w"] == 320, "{content}");

    let downloaded = bob.media().get_media_content(&file(url), false).await?;
    ensure!(downloaded == photo, "the photo came back different");
    let client_thumbnail = bob
        .media()
        .get_media_content(&file(thumbnail_url), false)
        .await?;
    ensure!(
        client_thumbnail == own_thumbnail,
        "the client's thumbnail came back different"
    );

    // Thumbnails the server makes: each listed size, decodable, of the size asked.
    for (method, width, height, expected) in [
        (Method::Crop, 96, 96, (96, 96)),
        (Method::Scale, 320, 240, (320, 240)),
        (Method::Scale, 640, 480, (640, 480)),
        (Method::Scale, 800, 600, (800, 600)),
    ] {
        let bytes = bob
            .media()
            .get_media_content(&thumbnail(url, method.clone(), width, height), false)
            .await?;
        let made = image::load_from_memory(&bytes)?;
        ensure!(
            (made.width(), made.height()) == expected,
            "{method:?} {width}x{height} gave {}x{}",
            made.width(),
            made.height()
        );
    }
    Ok(())
}

/// A voice message (MSC3245, with MSC1767's waveform) is sent as Element sends one; the
/// other side sees the same content and downloads the same bytes.
#[tokio::test]
async fn a_voice_message_flows_through_untouched() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let room_id = room_of_two(&alice, &bob).await?;
    let recording: Vec<u8> = (0..48_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let uri = upload(
        &server,
        &token(&alice),
        "audio/ogg",
        Some("Voice%20message.ogg"),
        recording.clone(),
    )
    .await?;
    let waveform: Vec<u32> = (0..100).map(|i| (i * 37) % 1024).collect();
    let content = json!({
        "msgtype": "m.audio",
        "body": "Voice message",
        "url": uri,
        "info": { "mimetype": "audio/ogg", "size": recording.len(), "duration": 3000 },
        "org.matrix.msc1767.audio": { "duration": 3000, "waveform": waveform },
        "org.matrix.msc3245.voice": {},
        "org.matrix.msc1767.text": "Voice message",
    });
    let path = format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/voice1");
    let (status, body) = server
        .request("PUT", &path, Some(&token(&alice)), Some(content.clone()))
        .await?;
    ensure!(status == 200, "send answered {status}: {body}");

    let event = newest(&server, &token(&bob), room_id.as_str(), "m.room.message").await?;
    ensure!(
        event["content"] == content,
        "the content changed: {}",
        event["content"]
    );
    let downloaded = bob.media().get_media_content(&file(&uri), false).await?;
    ensure!(downloaded == recording, "the recording came back different");
    let answer = get(
        &server,
        &format!("/_matrix/client/v1/media/download/{}", mxc_path(&uri)),
        Some(&token(&bob)),
        &[],
    )
    .await?;
    ensure!(answer.header("content-type") == Some("audio/ogg"));
    ensure!(
        answer.header("content-disposition") == Some("inline; filename=\"Voice message.ogg\""),
        "{:?}",
        answer.header("content-disposition")
    );
    Ok(())
}

/// matrix-sdk's asynchronous upload (a URI created first, filled later) and its error
/// for unknown media.
#[tokio::test]
async fn matrix_sdk_uploads_to_a_created_uri_and_sees_unknown_media_as_404() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let bob = server.register("bob").await?;
    let created = alice.media().create_content_uri().await?;
    let uri = created.uri.clone();
    let notes = b"meeting notes, uploaded when the network came back".to_vec();
    alice
        .media()
        .upload_preallocated(created, &mime::TEXT_PLAIN, notes.clone())
        .await?;
    let downloaded = bob
        .media()
        .get_media_content(&file(uri.as_str()), false)
        .await?;
    ensure!(downloaded == notes, "the notes came back different");
    let unknown = bob
        .media()
        .get_media_content(&file("mxc://localhost/not_uploaded_anywhere"), false)
        .await;
    let status = unknown
        .err()
        .and_then(|error| error.as_client_api_error().map(|error| error.status_code));
    ensure!(status == Some(http::StatusCode::NOT_FOUND), "{status:?}");
    Ok(())
}
