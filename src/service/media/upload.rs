//! Staging: bytes written to a file in the store's staging directory as they arrive,
//! hashed on the way, never held whole in memory.

use std::path::PathBuf;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use ruma::api::error::ErrorKind;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{Error, Result, storage::blobs::BlobStore};

/// A file written to staging and hashed, not yet taken into the store. Dropped
/// unadopted, it is removed.
pub struct Staged {
    path: Option<PathBuf>,
    pub sha256: String,
    pub size: u64,
}

impl Staged {
    /// Writes `body` to a new staged file, refusing it with `413 M_TOO_LARGE` as soon as it
    /// passes `limit` bytes.
    pub async fn write<S, E>(store: &dyn BlobStore, mut body: S, limit: u64) -> Result<Self>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = store
            .staging_dir()
            .join(crate::service::users::random_string(32));
        let mut staged = Staged {
            path: Some(path.clone()),
            sha256: String::new(),
            size: 0,
        };
        let file = tokio::fs::File::create(&path).await.map_err(io_error)?;
        let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, file);
        let mut hasher = Sha256::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| {
                Error::new(ErrorKind::Unknown, format!("Upload interrupted: {error}"))
                    .with_status(http::StatusCode::BAD_REQUEST)
            })?;
            staged.size += chunk.len() as u64;
            if staged.size > limit {
                return Err(too_large(limit));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io_error)?;
        }
        file.flush().await.map_err(io_error)?;
        file.into_inner().sync_all().await.map_err(io_error)?;
        staged.sha256 = hex(&hasher.finalize());
        Ok(staged)
    }

    /// Writes bytes already in memory (a thumbnail) to staging.
    pub async fn from_bytes(store: &dyn BlobStore, bytes: Vec<u8>) -> Result<Self> {
        let chunk: std::result::Result<Bytes, std::convert::Infallible> = Ok(Bytes::from(bytes));
        Self::write(store, futures::stream::iter([chunk]), u64::MAX).await
    }

    /// Where the staged file is, until it is adopted.
    pub fn path(&self) -> &std::path::Path {
        self.path
            .as_deref()
            .expect("a staged file has a path until adopted")
    }

    /// Hands the file to the store under its hash.
    pub async fn adopt(mut self, store: &dyn BlobStore) -> Result<()> {
        let path = self.path.take().expect("a staged file is adopted once");
        store
            .adopt(path, &self.sha256)
            .await
            .map_err(|error| Error::internal(format!("storing media file: {error}")))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub fn too_large(limit: u64) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        format!("The upload is larger than this server's limit of {limit} bytes"),
    )
}

fn io_error(error: std::io::Error) -> Error {
    Error::internal(format!("staging media: {error}"))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
