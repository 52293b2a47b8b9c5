//! The content repository: `mxc://` URIs and their files.
//!
//! A URI's record (`media` keyspace) names its file by the SHA-256 of the bytes; the
//! files themselves are in a [`BlobStore`], stored once however many URIs (or
//! thumbnails) share them, and removed when the last of those goes (`media_refs`).
//! Uploads stream to a staged file, hashed on the way ([`upload`]); thumbnails are made
//! on demand in a bounded pool and kept ([`thumbnails`]); other servers' media are
//! fetched over federation and kept the same way ([`remote`]).

pub mod admin;
pub mod image_ops;
pub mod preview;
pub mod remote;
pub mod thumbnails;
pub mod upload;
pub mod video;

use std::{collections::HashMap, sync::Arc, time::Duration};

use palisade_federation::FederationClient;
use parking_lot::Mutex;
use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId, api::error::ErrorKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{
    Error, Result,
    config::Config,
    storage::{
        Db, Keyspace,
        blobs::{BlobStore, ByteStream},
        codec::{Key, KeyReader, decode_u64},
    },
};

pub use upload::Staged;

use crate::service::users::now_ms;

/// An `mxc://` URI as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The file's SHA-256 (hex); `None` while an upload to a created URI is awaited.
    pub sha256: Option<String>,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// The local user who uploaded it (none for other servers' media).
    pub uploader: Option<OwnedUserId>,
    /// When it was created or fetched (ms).
    pub created: u64,
    /// A created URI's deadline for its upload (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Served only through the authenticated endpoints (it came after the legacy freeze).
    #[serde(default)]
    pub authenticated_only: bool,
}

/// A stored file as a download serves it.
#[derive(Clone, Debug)]
pub struct Content {
    pub sha256: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// How a request reaches media: the authenticated endpoints, or the deprecated ones
/// that serve only what came before the freeze.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Authenticated,
    Legacy,
}

/// The content repository's options, from the configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_upload_size: u64,
    pub user_quota: Option<u64>,
    pub freeze_legacy: bool,
    pub max_pending_uploads: usize,
    pub pending_expiry: Duration,
    pub max_image_pixels: u64,
    /// The ranges URL previews may reach besides the public internet; `None` when
    /// previews are off.
    pub url_previews: Option<Vec<String>>,
    /// The ffmpeg that makes video thumbnails.
    pub ffmpeg: String,
}

impl Limits {
    pub fn from_config(config: &Config) -> Self {
        let media = &config.media;
        Self {
            max_upload_size: media.max_upload_size,
            user_quota: media.user_quota,
            freeze_legacy: media.freeze_legacy_endpoints,
            max_pending_uploads: media.max_pending_uploads,
            pending_expiry: Duration::from_secs(media.pending_upload_expiry_secs),
            max_image_pixels: media.max_image_pixels,
            url_previews: media
                .url_preview_enabled
                .then(|| media.url_preview_ip_allow.clone()),
            ffmpeg: media.ffmpeg_path.clone(),
        }
    }
}

/// The longest a download waits for an awaited upload.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub struct Media {
    db: Arc<Db>,
    blobs: Arc<dyn BlobStore>,
    server_name: OwnedServerName,
    limits: Limits,
    /// Other servers, for their media (none when federation is off).
    client: Option<Arc<FederationClient>>,
    /// Downloads waiting for an upload to a created URI, by `server/media_id`.
    awaited: Mutex<HashMap<String, Arc<Notify>>>,
    /// Serialises, per file, taking a file in with its owner and letting an owner go
    /// with the file (so a file is never deleted just as a new owner appears).
    file_locks: Vec<tokio::sync::Mutex<()>>,
    thumbnailer: thumbnails::Thumbnailer,
    fetches: remote::Fetches,
    previews: Option<preview::Previews>,
}

impl Media {
    pub fn new(
        db: Arc<Db>,
        blobs: Arc<dyn BlobStore>,
        server_name: OwnedServerName,
        limits: Limits,
        client: Option<Arc<FederationClient>>,
    ) -> Result<Self> {
        let thumbnailer = thumbnails::Thumbnailer::new(limits.max_image_pixels);
        let previews = match &limits.url_previews {
            Some(allowed) => Some(
                crate::service::address_policy::AddressPolicy::new(allowed)
                    .and_then(preview::Previews::new)
                    .map_err(|error| Error::internal(format!("URL previews: {error}")))?,
            ),
            None => None,
        };
        Ok(Self {
            db,
            blobs,
            server_name,
            limits,
            client,
            awaited: Mutex::new(HashMap::new()),
            file_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            thumbnailer,
            fetches: remote::Fetches::default(),
            previews,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// A new media id: 24 random alphanumeric characters.
    fn new_media_id() -> String {
        crate::service::users::random_string(24)
    }

    fn record_key(server: &ServerName, media_id: &str) -> Key {
        Key::new().str(server.as_str()).str(media_id)
    }

    /// The `media_by_user` key of an upload.
    fn upload_key(uploader: &UserId, created: u64, media_id: &str) -> Vec<u8> {
        Key::new()
            .str(uploader.as_str())
            .u64(created)
            .str(media_id)
            .bytes()
            .to_vec()
    }

    fn owner(server: &ServerName, media_id: &str) -> String {
        format!("{server}/{media_id}")
    }

    fn file_lock(&self, sha256: &str) -> &tokio::sync::Mutex<()> {
        let stripe = usize::from(sha256.as_bytes().first().copied().unwrap_or(0));
        &self.file_locks[stripe % self.file_locks.len()]
    }

    pub fn record(&self, server: &ServerName, media_id: &str) -> Result<Option<MediaRecord>> {
        Ok(self
            .db
            .get_json(Keyspace::Media, Self::record_key(server, media_id).bytes())?)
    }

    /// Streams an upload to staging within the size limit, refusing at once a declared
    /// length over it.
    pub async fn stage<S, E>(&self, body: S, declared_length: Option<u64>) -> Result<Staged>
    where
        S: futures::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let limit = self.limits.max_upload_size;
        if declared_length.is_some_and(|length| length > limit) {
            return Err(upload::too_large(limit));
        }
        Staged::write(&*self.blobs, body, limit).await
    }

    /// Refuses an upload of `size` more bytes that would take `user` over the quota.
    pub fn check_quota(&self, user: &UserId, size: u64) -> Result<()> {
        let Some(quota) = self.limits.user_quota else {
            return Ok(());
        };
        let mut used = 0u64;
        for (_, value) in self
            .db
            .scan_prefix(Keyspace::MediaByUser, Key::new().str(user.as_str()).bytes())?
        {
            used = used.saturating_add(decode_u64(&value)?);
        }
        if used.saturating_add(size) > quota {
            return Err(Error::forbidden(format!(
                "Media quota exceeded: {used} of {quota} bytes used"
            )));
        }
        Ok(())
    }

    /// Keeps a staged upload as the new URI `mxc://{this server}/{new id}`.
    pub async fn create_uploaded(
        &self,
        uploader: &UserId,
        staged: Staged,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<String> {
        self.check_quota(uploader, staged.size)?;
        let media_id = Self::new_media_id();
        let record = MediaRecord {
            sha256: Some(staged.sha256.clone()),
            size: staged.size,
            content_type,
            filename,
            uploader: Some(uploader.to_owned()),
            created: now_ms(),
            expires: None,
            authenticated_only: self.limits.freeze_legacy,
        };
        let server = self.server_name.clone();
        self.keep(staged, &server, &media_id, record, |_| {})
            .await?;
        Ok(media_id)
    }

    /// Creates a URI whose content `uploader` uploads later (`POST /media/v1/create`);
    /// answers the media id and when it expires (ms).
    pub fn create_pending(&self, uploader: &UserId) -> Result<(String, u64)> {
        let now = now_ms();
        let mut batch = self.db.batch();
        let mut pending = 0;
        for (key, value) in self.db.scan_prefix(
            Keyspace::MediaPending,
            Key::new().str(uploader.as_str()).bytes(),
        )? {
            if decode_u64(&value)? > now {
                pending += 1;
            } else {
                let mut reader = KeyReader::new(&key);
                reader.str()?;
                let media_id = reader.str()?;
                batch.delete(Keyspace::MediaPending, key.clone());
                batch.delete(
                    Keyspace::Media,
                    Self::record_key(&self.server_name, media_id)
                        .bytes()
                        .to_vec(),
                );
            }
        }
        if pending >= self.limits.max_pending_uploads {
            self.db.write(batch)?;
            return Err(Error::limit_exceeded(Duration::from_secs(60)));
        }
        let media_id = Self::new_media_id();
        let expires = now + self.limits.pending_expiry.as_millis() as u64;
        let record = MediaRecord {
            sha256: None,
            size: 0,
            content_type: None,
            filename: None,
            uploader: Some(uploader.to_owned()),
            created: now,
            expires: Some(expires),
            authenticated_only: self.limits.freeze_legacy,
        };
        batch.put_json(
            Keyspace::Media,
            Self::record_key(&self.server_name, &media_id)
                .bytes()
                .to_vec(),
            &record,
        );
        batch.put(
            Keyspace::MediaPending,
            Key::new()
                .str(uploader.as_str())
                .str(&media_id)
                .bytes()
                .to_vec(),
            expires.to_be_bytes(),
        );
        self.db.write(batch)?;
        Ok((media_id, expires))
    }

    /// Checks that `uploader` may upload to the created URI `media_id` now; a URI of
    /// another server, or unknown or expired, is `M_NOT_FOUND`.
    pub fn check_pending(
        &self,
        uploader: &UserId,
        server: &ServerName,
        media_id: &str,
    ) -> Result<MediaRecord> {
        let unknown = || Error::not_found("Unknown media ID");
        if server != self.server_name {
            return Err(unknown());
        }
        let record = self.record(server, media_id)?.ok_or_else(unknown)?;
        if record.sha256.is_some() {
            return Err(Error::new(
                ErrorKind::CannotOverwriteMedia,
                "Media already uploaded",
            ));
        }
        if record.uploader.as_deref() != Some(uploader) {
            return Err(Error::forbidden(
                "Only the user who created this media ID may upload to it",
            ));
        }
        if record.expires.is_some_and(|expires| expires <= now_ms()) {
            return Err(unknown());
        }
        Ok(record)
    }

    /// Fills the created URI `media_id` with a staged upload and wakes its awaited
    /// downloads.
    pub async fn complete_pending(
        &self,
        uploader: &UserId,
        media_id: &str,
        staged: Staged,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<()> {
        let server = self.server_name.clone();
        let mut record = self.check_pending(uploader, &server, media_id)?;
        self.check_quota(uploader, staged.size)?;
        record.sha256 = Some(staged.sha256.clone());
        record.size = staged.size;
        record.content_type = content_type;
        record.filename = filename;
        record.expires = None;
        let pending = Key::new().str(uploader.as_str()).str(media_id);
        self.keep(staged, &server, media_id, record, |batch| {
            batch.delete(Keyspace::MediaPending, pending.bytes().to_vec())
        })
        .await?;
        if let Some(waiting) = self
            .awaited
            .lock()
            .remove(&Self::owner(&self.server_name, media_id))
        {
            waiting.notify_waiters();
        }
        Ok(())
    }

    /// Takes a staged file in and writes `record` for `server/media_id` as its owner,
    /// with whatever `extra` adds to the same batch.
    async fn keep(
        &self,
        staged: Staged,
        server: &ServerName,
        media_id: &str,
        record: MediaRecord,
        extra: impl FnOnce(&mut crate::storage::Batch),
    ) -> Result<()> {
        let sha256 = staged.sha256.clone();
        let _file = self.file_lock(&sha256).lock().await;
        staged.adopt(&*self.blobs).await?;
        let mut batch = self.db.batch();
        batch.put_json(
            Keyspace::Media,
            Self::record_key(server, media_id).bytes().to_vec(),
            &record,
        );
        batch.put(
            Keyspace::MediaRefs,
            Key::new()
                .str(&sha256)
                .str(&Self::owner(server, media_id))
                .bytes()
                .to_vec(),
            Vec::new(),
        );
        if let Some(uploader) = &record.uploader {
            batch.put(
                Keyspace::MediaByUser,
                Self::upload_key(uploader, record.created, media_id),
                record.size.to_be_bytes(),
            );
        }
        extra(&mut batch);
        self.db.write(batch)?;
        Ok(())
    }

    /// The content of `mxc://{server}/{media_id}` as `access` may see it: local media,
    /// awaited up to `timeout` when its upload has not come yet, or other servers'
    /// media, fetched when not kept yet and `allow_remote`.
    pub async fn content(
        &self,
        server: &ServerName,
        media_id: &str,
        access: Access,
        timeout: Duration,
        allow_remote: bool,
    ) -> Result<Content> {
        let record = match self.record(server, media_id)? {
            Some(record) => record,
            None if server == self.server_name => {
                return Err(Error::not_found("Media not found"));
            }
            None if !allow_remote || (access == Access::Legacy && self.limits.freeze_legacy) => {
                return Err(Error::not_found("Media not found"));
            }
            None => self.fetch_remote(server, media_id).await?,
        };
        if access == Access::Legacy && record.authenticated_only {
            return Err(Error::not_found("Media not found"));
        }
        let record = match record.sha256 {
            Some(_) => record,
            None => self.await_upload(server, media_id, record, timeout).await?,
        };
        Ok(Content {
            sha256: record.sha256.clone().unwrap_or_default(),
            size: record.size,
            content_type: record.content_type,
            filename: record.filename,
        })
    }

    /// Waits for the upload of a created URI, up to `timeout` (at most a minute).
    async fn await_upload(
        &self,
        server: &ServerName,
        media_id: &str,
        record: MediaRecord,
        timeout: Duration,
    ) -> Result<MediaRecord> {
        let not_yet = || {
            Error::new(
                ErrorKind::NotYetUploaded,
                "Content has not yet been uploaded",
            )
        };
        if record.expires.is_some_and(|expires| expires <= now_ms()) {
            return Err(Error::not_found("Media not found"));
        }
        let notify = self
            .awaited
            .lock()
            .entry(Self::owner(server, media_id))
            .or_default()
            .clone();
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        // The upload may have landed between the first read and the subscription.
        if let Some(record) = self.record(server, media_id)?
            && record.sha256.is_some()
        {
            return Ok(record);
        }
        if tokio::time::timeout(timeout.min(MAX_WAIT), woken)
            .await
            .is_err()
        {
            return Err(not_yet());
        }
        match self.record(server, media_id)? {
            Some(record) if record.sha256.is_some() => Ok(record),
            _ => Err(not_yet()),
        }
    }

    /// The bytes of a stored file from `start` to `end` (exclusive).
    pub async fn read(&self, sha256: &str, start: u64, end: Option<u64>) -> Result<ByteStream> {
        self.blobs.read(sha256, start, end).await.map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                Error::not_found("Media not found")
            } else {
                Error::internal(format!("reading media file {sha256}: {error}"))
            }
        })
    }

    /// Deletes `mxc://{server}/{media_id}` with its thumbnails; each file goes when no
    /// other URI or thumbnail uses it. Answers whether there was such media.
    pub async fn delete(&self, server: &ServerName, media_id: &str) -> Result<bool> {
        let record = self.record(server, media_id)?;
        let thumbnails = self.thumbnails_of(server, media_id)?;
        if record.is_none() && thumbnails.is_empty() {
            return Ok(false);
        }
        let mut files = Vec::new();
        let mut batch = self.db.batch();
        let owner = Self::owner(server, media_id);
        if let Some(sha256) = record.as_ref().and_then(|record| record.sha256.clone()) {
            files.push((sha256, owner.clone()));
        }
        for (key, thumbnail) in thumbnails {
            files.push((
                thumbnail.sha256.clone(),
                thumbnails::owner(&owner, &thumbnail),
            ));
            batch.delete(Keyspace::MediaThumbnails, key);
        }
        batch.delete(
            Keyspace::Media,
            Self::record_key(server, media_id).bytes().to_vec(),
        );
        if let Some(record) = &record
            && let Some(uploader) = &record.uploader
        {
            batch.delete(
                Keyspace::MediaByUser,
                Self::upload_key(uploader, record.created, media_id),
            );
            batch.delete(
                Keyspace::MediaPending,
                Key::new()
                    .str(uploader.as_str())
                    .str(media_id)
                    .bytes()
                    .to_vec(),
            );
        }
        for (sha256, owner) in &files {
            batch.delete(
                Keyspace::MediaRefs,
                Key::new().str(sha256).str(owner).bytes().to_vec(),
            );
        }
        self.db.write(batch)?;
        for (sha256, _) in files {
            self.release_file(&sha256).await?;
        }
        Ok(true)
    }

    /// Removes a file no owner uses any more.
    async fn release_file(&self, sha256: &str) -> Result<()> {
        let _file = self.file_lock(sha256).lock().await;
        let owners = self
            .db
            .scan_prefix(Keyspace::MediaRefs, Key::new().str(sha256).bytes())?;
        if owners.is_empty() {
            self.blobs
                .delete(sha256)
                .await
                .map_err(|error| Error::internal(format!("deleting media file: {error}")))?;
        }
        Ok(())
    }

    /// The media ids `user` uploaded, oldest first, with when.
    pub fn uploads_of(&self, user: &UserId) -> Result<Vec<(String, u64)>> {
        let mut uploads = Vec::new();
        for (key, _) in self
            .db
            .scan_prefix(Keyspace::MediaByUser, Key::new().str(user.as_str()).bytes())?
        {
            let mut reader = KeyReader::new(&key);
            reader.str()?;
            let created = reader.u64()?;
            uploads.push((reader.str()?.to_owned(), created));
        }
        Ok(uploads)
    }
}
