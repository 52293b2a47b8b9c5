//! Media files, addressed by the SHA-256 of their bytes: the same bytes are stored once
//! whoever uploads them. Which media id points at which file, and who still uses a file,
//! is kept in RocksDB by the media service; this layer only keeps the bytes.
//!
//! Every write goes through a staged file: an upload (or a thumbnail, or a file fetched
//! from another server) is written to [`BlobStore::staging_dir`] as it arrives, hashed
//! on the way, and then [`adopt`](BlobStore::adopt)ed under its hash. Backends differ only
//! in where adopted files live: [`FileBlobs`] on the local disk (the default), or an
//! S3-compatible bucket.

mod files;
mod s3;

use std::{
    io,
    path::{Path, PathBuf},
    pin::Pin,
};

use bytes::Bytes;
use futures::{Stream, StreamExt, future::BoxFuture};

pub use files::FileBlobs;
pub use s3::{S3Blobs, S3Options};

/// A stream of a file's bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Where media bytes are kept. Hashes are lowercase hex SHA-256 digests.
pub trait BlobStore: Send + Sync {
    /// A local directory for files being written before they are adopted. It is on the
    /// same file system as the store where that matters (a rename adopts them).
    fn staging_dir(&self) -> &Path;

    /// Takes the staged file `staged` in as the file of `hash`. When the store already
    /// has that file, the staged copy is dropped.
    fn adopt<'a>(&'a self, staged: PathBuf, hash: &'a str) -> BoxFuture<'a, io::Result<()>>;

    /// The bytes of `hash` from `start` (inclusive) to `end` (exclusive; `None` for the
    /// end of the file). `NotFound` when the store has no such file.
    fn read<'a>(
        &'a self,
        hash: &'a str,
        start: u64,
        end: Option<u64>,
    ) -> BoxFuture<'a, io::Result<ByteStream>>;

    /// The file of `hash` on the local disk, when the store keeps it there (tools such
    /// as ffmpeg read files, not streams).
    fn local_path(&self, hash: &str) -> Option<PathBuf>;

    /// Removes the file of `hash`; removing a missing file is not an error.
    fn delete<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, io::Result<()>>;
}

/// Refuses anything but a hex digest as a file name (no path can be smuggled in).
fn checked_hash(hash: &str) -> io::Result<&str> {
    if hash.len() < 8 || !hash.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a hash"));
    }
    Ok(hash)
}

/// Reads a whole file of at most `limit` bytes (for decoding images).
pub async fn read_to_vec(store: &dyn BlobStore, hash: &str, limit: u64) -> io::Result<Vec<u8>> {
    let mut stream = store.read(hash, 0, None).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "file over limit",
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn stage(store: &FileBlobs, name: &str, bytes: &[u8]) -> PathBuf {
        let path = store.staging_dir().join(name);
        tokio::fs::write(&path, bytes).await.unwrap();
        path
    }

    #[tokio::test]
    async fn files_are_kept_once_read_in_ranges_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileBlobs::open(dir.path()).unwrap();
        let hash = "00112233445566778899aabbccddeeff";
        let first = stage(&store, "a", b"hello world").await;
        store.adopt(first, hash).await.unwrap();
        let second = stage(&store, "b", b"hello world").await;
        store.adopt(second.clone(), hash).await.unwrap();
        assert!(!second.exists(), "a second copy is dropped");

        let range = read_to_vec_range(&store, hash, 6, Some(11)).await;
        assert_eq!(range, b"world");
        assert_eq!(
            read_to_vec(&store, hash, 100).await.unwrap(),
            b"hello world"
        );
        assert!(
            read_to_vec(&store, hash, 5).await.is_err(),
            "over the limit"
        );

        store.delete(hash).await.unwrap();
        store.delete(hash).await.unwrap();
        let missing = store.read(hash, 0, None).await.err().unwrap();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(store.read("../../etc/passwd", 0, None).await.is_err());
    }

    async fn read_to_vec_range(
        store: &FileBlobs,
        hash: &str,
        start: u64,
        end: Option<u64>,
    ) -> Vec<u8> {
        let mut stream = store.read(hash, start, end).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }
}
