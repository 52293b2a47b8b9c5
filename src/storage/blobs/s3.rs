//! Media files in an S3-compatible bucket (AWS S3, MinIO, Garage, Ceph, R2...): one
//! object per hash, `{prefix}{hash}`. Requests are signed (AWS signature version 4, as
//! presigned URLs) by `rusty-s3` and sent with the server's HTTP client; uploads stream
//! from the staged file, downloads stream from the bucket, ranges included.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use futures::{StreamExt, TryStreamExt, future::BoxFuture};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::{BlobStore, ByteStream};

/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(60 * 60);

/// Where the bucket is and how to reach it.
#[derive(Clone, Debug)]
pub struct S3Options {
    /// The service's URL, e.g. `https://s3.eu-central-1.amazonaws.com` or
    /// `http://127.0.0.1:9000`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Object names start with this (e.g. `media/`).
    pub prefix: String,
    /// Path-style URLs (`endpoint/bucket/key`), which most self-hosted services need;
    /// otherwise virtual-host style (`bucket.endpoint/key`).
    pub path_style: bool,
}

pub struct S3Blobs {
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
    client: reqwest::Client,
    staging: PathBuf,
}

impl S3Blobs {
    /// A store in the bucket `options` names, staging uploads in `staging` (a local
    /// directory, emptied of what an earlier run left).
    pub fn open(options: &S3Options, staging: &Path) -> io::Result<Self> {
        let invalid = |error: String| io::Error::new(io::ErrorKind::InvalidInput, error);
        let endpoint = options
            .endpoint
            .parse()
            .map_err(|error| invalid(format!("S3 endpoint: {error}")))?;
        let style = if options.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            endpoint,
            style,
            options.bucket.clone(),
            options.region.clone(),
        )
        .map_err(|error| invalid(format!("S3 bucket: {error}")))?;
        let tls = palisade_federation::tls::web_client_config()
            .map_err(|error| invalid(format!("TLS: {error}")))?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(|error| invalid(format!("HTTP client: {error}")))?;
        if staging.exists() {
            std::fs::remove_dir_all(staging)?;
        }
        std::fs::create_dir_all(staging)?;
        Ok(Self {
            bucket,
            credentials: Credentials::new(&options.access_key_id, &options.secret_access_key),
            prefix: options.prefix.clone(),
            client,
            staging: staging.to_owned(),
        })
    }

    fn key(&self, hash: &str) -> io::Result<String> {
        Ok(format!("{}{}", self.prefix, super::checked_hash(hash)?))
    }

    async fn exists(&self, key: &str) -> io::Result<bool> {
        let url = self
            .bucket
            .head_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let response = self.client.head(url).send().await.map_err(transport)?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(io::Error::other(format!("S3 HEAD answered {status}"))),
        }
    }
}

fn transport(error: reqwest::Error) -> io::Error {
    io::Error::other(format!("S3: {}", palisade_federation::error_chain(&error)))
}

impl BlobStore for S3Blobs {
    fn staging_dir(&self) -> &Path {
        &self.staging
    }

    fn adopt<'a>(&'a self, staged: PathBuf, hash: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let key = self.key(hash)?;
            if !self.exists(&key).await? {
                let file = tokio::fs::File::open(&staged).await?;
                let length = file.metadata().await?.len();
                let url = self
                    .bucket
                    .put_object(Some(&self.credentials), &key)
                    .sign(SIGNED_FOR);
                let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                    file,
                    256 * 1024,
                ));
                let response = self
                    .client
                    .put(url)
                    .header(http::header::CONTENT_LENGTH, length)
                    .body(body)
                    .send()
                    .await
                    .map_err(transport)?;
                if !response.status().is_success() {
                    return Err(io::Error::other(format!(
                        "S3 PUT answered {}",
                        response.status()
                    )));
                }
            }
            tokio::fs::remove_file(&staged).await
        })
    }

    fn read<'a>(
        &'a self,
        hash: &'a str,
        start: u64,
        end: Option<u64>,
    ) -> BoxFuture<'a, io::Result<ByteStream>> {
        Box::pin(async move {
            let key = self.key(hash)?;
            let url = self
                .bucket
                .get_object(Some(&self.credentials), &key)
                .sign(SIGNED_FOR);
            let mut request = self.client.get(url);
            match end {
                Some(end) if end <= start => {
                    return Ok(Box::pin(futures::stream::empty()) as ByteStream);
                }
                Some(end) => {
                    request = request.header("Range", format!("bytes={start}-{}", end - 1))
                }
                None if start > 0 => request = request.header("Range", format!("bytes={start}-")),
                None => {}
            }
            let response = request.send().await.map_err(transport)?;
            match response.status().as_u16() {
                200 | 206 => {}
                404 => return Err(io::Error::new(io::ErrorKind::NotFound, "no such object")),
                status => return Err(io::Error::other(format!("S3 GET answered {status}"))),
            }
            let stream = response.bytes_stream().map_err(transport).boxed();
            Ok(stream as ByteStream)
        })
    }

    fn local_path(&self, _: &str) -> Option<PathBuf> {
        None
    }

    fn delete<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let key = self.key(hash)?;
            let url = self
                .bucket
                .delete_object(Some(&self.credentials), &key)
                .sign(SIGNED_FOR);
            let response = self.client.delete(url).send().await.map_err(transport)?;
            match response.status().as_u16() {
                200 | 204 | 404 => Ok(()),
                status => Err(io::Error::other(format!("S3 DELETE answered {status}"))),
            }
        })
    }
}
