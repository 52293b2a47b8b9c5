//! The default store: files on the local disk.

use std::{
    io,
    path::{Path, PathBuf},
};

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{BlobStore, ByteStream};

/// Files on the local disk under a directory: `ab/cd/abcd…` for the hash `abcd…`,
/// staged files in `staging/`.
pub struct FileBlobs {
    root: PathBuf,
    staging: PathBuf,
}

impl FileBlobs {
    /// Opens (creating) the store at `root`. Files left in staging by an earlier run
    /// (uploads cut off by a crash) are removed.
    pub fn open(root: &Path) -> io::Result<Self> {
        let staging = root.join("staging");
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir_all(&staging)?;
        Ok(Self {
            root: root.to_owned(),
            staging,
        })
    }

    fn path(&self, hash: &str) -> io::Result<PathBuf> {
        let hash = super::checked_hash(hash)?;
        Ok(self.root.join(&hash[0..2]).join(&hash[2..4]).join(hash))
    }
}

impl BlobStore for FileBlobs {
    fn staging_dir(&self) -> &Path {
        &self.staging
    }

    fn adopt<'a>(&'a self, staged: PathBuf, hash: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let path = self.path(hash)?;
            if tokio::fs::try_exists(&path).await? {
                return tokio::fs::remove_file(&staged).await;
            }
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            // The staged file was synced by its writer; the rename is made durable by
            // syncing the directory that now holds it.
            tokio::fs::rename(&staged, &path).await?;
            if let Some(parent) = path.parent() {
                tokio::fs::File::open(parent).await?.sync_all().await?;
            }
            Ok(())
        })
    }

    fn read<'a>(
        &'a self,
        hash: &'a str,
        start: u64,
        end: Option<u64>,
    ) -> BoxFuture<'a, io::Result<ByteStream>> {
        Box::pin(async move {
            let mut file = tokio::fs::File::open(self.path(hash)?).await?;
            if start > 0 {
                file.seek(io::SeekFrom::Start(start)).await?;
            }
            let stream: ByteStream = match end {
                Some(end) => Box::pin(tokio_util::io::ReaderStream::with_capacity(
                    file.take(end.saturating_sub(start)),
                    64 * 1024,
                )),
                None => Box::pin(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024)),
            };
            Ok(stream)
        })
    }

    fn local_path(&self, hash: &str) -> Option<PathBuf> {
        self.path(hash).ok().filter(|path| path.exists())
    }

    fn delete<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path(hash)?).await {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            }
        })
    }
}
