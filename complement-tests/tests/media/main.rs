//! The content repository through real clients, in one test binary:
//! - `clients`: matrix-sdk uploads an avatar and an image message with its thumbnail,
//!   the other user downloads the same bytes and a decodable thumbnail of the asked
//!   size; a voice message's waveform flows through untouched;
//! - `endpoints`: the spec's answers over raw HTTP: tokens, unknown media, ranges,
//!   caching headers, dispositions, async uploads, size limit and quota, the legacy
//!   freeze;
//! - `safety`: a decompression bomb, a truncated JPEG and an empty file get clean
//!   errors; a 1 GiB upload and download keep the server's memory bounded;
//! - `video`: a video's first frame as its thumbnail through ffmpeg, a clean 400
//!   without it;
//! - `admin`: Synapse's media admin API; files shared by identical uploads and deleted
//!   with their last owner;
//! - `previews`: link previews of a local site, refused and allowed by address, and
//!   no redirect into a denied address;
//! - `s3`: media kept in an S3-compatible bucket (moto's server);
//! - `federation`: media of one instance downloaded and thumbnailed through the other,
//!   the second time from its cache.

mod admin;
mod clients;
mod endpoints;
mod federation;
mod previews;
mod s3;
mod safety;
mod video;

use std::io::Cursor;

use anyhow::{Context, Result, ensure};
use complement_tests::TestServer;
use image::{DynamicImage, ImageFormat, RgbaImage};
use reqwest::header::HeaderMap;

/// A PNG of `width`×`height` with a gradient (so it does not compress to nothing).
fn png(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, ImageFormat::Png)
}

/// A JPEG of `width`×`height`.
fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, ImageFormat::Jpeg)
}

fn encode(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x * 255 / width) as u8, (y * 255 / height) as u8, 90, 255])
    });
    let image = match format {
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(image).into_rgb8()),
        _ => DynamicImage::ImageRgba8(image),
    };
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), format)
        .expect("encodes");
    bytes
}

/// A raw answer: status, headers, body.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    fn errcode(&self) -> String {
        self.json()["errcode"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// `GET {path}` with an optional token and extra headers.
async fn get(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Answer> {
    let mut request = reqwest::Client::new().get(format!("{}{path}", server.base_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    Ok(Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await?.to_vec(),
    })
}

/// `POST /_matrix/media/v3/upload` (or `PUT` to a created URI when `path` says so)
/// with `bytes` of `content_type`.
async fn send_bytes(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> Result<Answer> {
    let response = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base_url()))
        .bearer_auth(token)
        .header("Content-Type", content_type)
        .body(bytes)
        .send()
        .await?;
    Ok(Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await?.to_vec(),
    })
}

/// Uploads `bytes` and returns the `mxc://` URI.
async fn upload(
    server: &TestServer,
    token: &str,
    content_type: &str,
    filename: Option<&str>,
    bytes: Vec<u8>,
) -> Result<String> {
    let path = match filename {
        Some(name) => format!("/_matrix/media/v3/upload?filename={name}"),
        None => "/_matrix/media/v3/upload".to_owned(),
    };
    let answer = send_bytes(
        server,
        reqwest::Method::POST,
        &path,
        token,
        content_type,
        bytes,
    )
    .await?;
    ensure!(
        answer.status == 200,
        "upload answered {}: {:?}",
        answer.status,
        answer.json()
    );
    answer.json()["content_uri"]
        .as_str()
        .map(str::to_owned)
        .context("no content_uri")
}

/// `server/media_id` of an `mxc://` URI.
fn mxc_path(uri: &str) -> &str {
    uri.strip_prefix("mxc://").expect("an mxc URI")
}
