//! Video thumbnails: the first frame through ffmpeg when it is installed, a clean 400
//! when it is not.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use complement_tests::{TestServer, token};

use super::{get, mxc_path, upload};

/// A one-second 640×360 H.264 MP4 made by ffmpeg's test source.
fn video() -> Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("clip.mp4");
    let status = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x360:rate=10",
        ])
        .args(["-t", "1", "-pix_fmt", "yuv420p"])
        .arg(&path)
        .status()
        .context("ffmpeg is needed for this test (scripts/install-deps.sh installs it)")?;
    ensure!(status.success(), "ffmpeg could not make a video: {status}");
    Ok(std::fs::read(path)?)
}

#[tokio::test]
async fn videos_get_a_poster_frame_thumbnail_when_ffmpeg_is_there() -> Result<()> {
    let clip = video()?;
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let uri = upload(
        &server,
        &token(&alice),
        "video/mp4",
        Some("clip.mp4"),
        clip.clone(),
    )
    .await?;
    let thumbnail = format!(
        "/_matrix/client/v1/media/thumbnail/{}?width=320&height=240&method=scale",
        mxc_path(&uri)
    );
    let answer = get(&server, &thumbnail, Some(&token(&alice)), &[]).await?;
    ensure!(
        answer.status == 200,
        "video thumbnail: {} {:?}",
        answer.status,
        answer.json()
    );
    let frame = image::load_from_memory(&answer.body)?;
    ensure!(
        (frame.width(), frame.height()) == (320, 180),
        "{}x{}",
        frame.width(),
        frame.height()
    );
    let download = get(
        &server,
        &format!("/_matrix/client/v1/media/download/{}", mxc_path(&uri)),
        Some(&token(&alice)),
        &[],
    )
    .await?;
    ensure!(
        download.body == clip
            && download.header("content-disposition") == Some("inline; filename=\"clip.mp4\"")
    );

    // Without ffmpeg: no thumbnail, the spec's 400, and the video still downloads.
    let without =
        TestServer::start_with("[global.media]\nffmpeg_path = \"/nonexistent/ffmpeg\"\n").await?;
    let bob = without.register("bob").await?;
    let uri = upload(&without, &token(&bob), "video/mp4", None, clip.clone()).await?;
    let thumbnail = format!(
        "/_matrix/client/v1/media/thumbnail/{}?width=96&height=96&method=crop",
        mxc_path(&uri)
    );
    let answer = get(&without, &thumbnail, Some(&token(&bob)), &[]).await?;
    ensure!(
        answer.status == 400 && answer.errcode() == "M_UNKNOWN",
        "without ffmpeg: {}",
        answer.status
    );
    let download = get(
        &without,
        &format!("/_matrix/client/v1/media/download/{}", mxc_path(&uri)),
        Some(&token(&bob)),
        &[],
    )
    .await?;
    ensure!(download.status == 200 && download.body == clip);
    Ok(())
}
