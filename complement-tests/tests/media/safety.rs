//! Hostile or broken media get clean errors, and size does not cost memory.

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use complement_tests::{TestServer, token};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{get, jpeg, mxc_path, upload};

/// A PNG whose header claims 60000×60000 RGBA pixels (14 GB decoded) over a few bytes.
fn png_bomb() -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&60_000u32.to_be_bytes());
    header.extend_from_slice(&60_000u32.to_be_bytes());
    header.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &header);
    // A zlib stream of one stored block of zeros (the first rows, all filter 0).
    let zeros = [0u8; 1024];
    let mut idat = vec![0x78, 0x01, 0x01];
    idat.extend_from_slice(&(zeros.len() as u16).to_le_bytes());
    idat.extend_from_slice(&(!(zeros.len() as u16)).to_le_bytes());
    idat.extend_from_slice(&zeros);
    idat.extend_from_slice(&adler32(&zeros).to_be_bytes());
    chunk(&mut png, b"IDAT", &idat);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for byte in bytes {
        a = (a + u32::from(*byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

#[tokio::test]
async fn bombs_truncated_and_empty_files_get_clean_errors() -> Result<()> {
    let server = TestServer::start().await?;
    let alice = server.register("alice").await?;
    let token = token(&alice);
    let thumbnail = |uri: &str| {
        format!(
            "/_matrix/client/v1/media/thumbnail/{}?width=96&height=96&method=crop",
            mxc_path(uri)
        )
    };

    let bomb = upload(&server, &token, "image/png", None, png_bomb()).await?;
    let answer = get(&server, &thumbnail(&bomb), Some(&token), &[]).await?;
    ensure!(
        answer.status == 413 && answer.errcode() == "M_TOO_LARGE",
        "bomb: {} {:?}",
        answer.status,
        answer.json()
    );

    let whole = jpeg(400, 300);
    let truncated = upload(
        &server,
        &token,
        "image/jpeg",
        None,
        whole[..whole.len() / 3].to_vec(),
    )
    .await?;
    let answer = get(&server, &thumbnail(&truncated), Some(&token), &[]).await?;
    ensure!(
        answer.status == 400 && answer.errcode() == "M_UNKNOWN",
        "truncated: {} {:?}",
        answer.status,
        answer.json()
    );

    let empty = upload(&server, &token, "image/png", None, Vec::new()).await?;
    let download = get(
        &server,
        &format!("/_matrix/client/v1/media/download/{}", mxc_path(&empty)),
        Some(&token),
        &[],
    )
    .await?;
    ensure!(download.status == 200 && download.body.is_empty());
    let answer = get(&server, &thumbnail(&empty), Some(&token), &[]).await?;
    ensure!(
        answer.status == 400 && answer.errcode() == "M_UNKNOWN",
        "empty: {} {:?}",
        answer.status,
        answer.json()
    );

    let answer = get(
        &server,
        &format!("{}&method=fancy", thumbnail(&empty)),
        Some(&token),
        &[],
    )
    .await?;
    ensure!(answer.status == 400, "unknown method: {}", answer.status);

    // The server is still there and well.
    ensure!(server.whoami_status(&token).await? == 200);
    Ok(())
}

/// The server's peak resident memory (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")
}

#[tokio::test]
async fn a_gigabyte_goes_up_and_down_in_bounded_memory() -> Result<()> {
    const CHUNK: usize = 1024 * 1024;
    const CHUNKS: usize = 1024;
    let server = TestServer::start_with("[global.media]\nmax_upload_size = 2147483648\n").await?;
    let alice = server.register("alice").await?;
    let token = token(&alice);
    let pid = server.pid().context("running")?;
    let before = peak_rss_kib(pid)?;

    let block = Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let mut expected = Sha256::new();
    for _ in 0..CHUNKS {
        expected.update(&block);
    }
    let expected = expected.finalize();
    let body =
        futures::stream::iter((0..CHUNKS).map(move |_| Ok::<_, std::io::Error>(block.clone())));
    let response = reqwest::Client::new()
        .post(format!("{}/_matrix/media/v3/upload", server.base_url()))
        .bearer_auth(&token)
        .header("Content-Type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "upload answered {}",
        response.status()
    );
    let uri = response.json::<serde_json::Value>().await?["content_uri"]
        .as_str()
        .context("no uri")?
        .to_owned();
    let after_upload = peak_rss_kib(pid)?;

    let response = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{}",
            server.base_url(),
            mxc_path(&uri)
        ))
        .bearer_auth(&token)
        .send()
        .await?;
    ensure!(response.status() == 200);
    let mut received = Sha256::new();
    let mut length = 0usize;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        length += chunk.len();
        received.update(&chunk);
    }
    ensure!(length == CHUNK * CHUNKS, "received {length} bytes");
    ensure!(
        received.finalize() == expected,
        "the gigabyte came back different"
    );
    let after_download = peak_rss_kib(pid)?;
    println!(
        "peak RSS: {before} KiB at start, {after_upload} after the upload, {after_download} after the download"
    );
    // A gigabyte through memory would show; streaming keeps the peak near the start's.
    ensure!(
        after_download < before + 64 * 1024,
        "peak RSS grew from {before} to {after_download} KiB"
    );
    Ok(())
}
