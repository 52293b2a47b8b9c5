//! Thumbnails: made on demand at the sizes Synapse makes (so clients' requests land on
//! the same few), kept like any media file, and made in a bounded pool so a burst of
//! large images cannot take every core or all memory.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use ruma::{ServerName, api::error::ErrorKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::{
    Access, Content, Media, Staged,
    image_ops::{self, Method, ThumbnailError},
};
use crate::{
    Error, Result,
    storage::{Keyspace, blobs, codec::Key},
};

/// The sizes thumbnails are made at, as Synapse's default configuration lists them.
pub const SIZES: [(u32, u32, Method); 5] = [
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

/// The largest side made for a request beyond every listed size.
const MAX_SIDE: u32 = 1600;

/// What a client asked for.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub width: u32,
    pub height: u32,
    pub method: Method,
    pub animated: bool,
}

/// A made thumbnail as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThumbnailRecord {
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// The box and method it was made for.
    pub spec: String,
    /// When it was made or fetched (ms).
    #[serde(default)]
    pub created: u64,
}

/// The box a request is served from: the smallest listed size of its method that is at
/// least as large as asked (the spec: never smaller than asked unless the image is), else
/// the request itself rounded up to a multiple of 64 (at most 1600), so the variants one
/// image can have stay few.
pub fn choose(request: &Request) -> (u32, u32, Method) {
    let listed = SIZES.iter().find(|(width, height, method)| {
        *method == request.method && *width >= request.width && *height >= request.height
    });
    match listed {
        Some(size) => *size,
        None => {
            let round = |side: u32| side.div_ceil(64).saturating_mul(64).clamp(64, MAX_SIDE);
            (round(request.width), round(request.height), request.method)
        }
    }
}

/// The spec string of a box: `320x240-scale`, with `-animated` when asked.
fn spec(width: u32, height: u32, method: Method, animated: bool) -> String {
    let animated = if animated { "-animated" } else { "" };
    format!("{width}x{height}-{}{animated}", method.as_str())
}

/// A thumbnail's owner name in `media_refs`.
pub fn owner(media_owner: &str, thumbnail: &ThumbnailRecord) -> String {
    format!("{media_owner}/{}", thumbnail.spec)
}

/// The pool thumbnails are made in, and who is making which.
pub struct Thumbnailer {
    pool: Semaphore,
    max_pixels: u64,
    making: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Thumbnailer {
    /// The lock of one thumbnail being made or fetched (so it is done once).
    fn claim(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.making
            .lock()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    fn release(&self, name: &str) {
        self.making.lock().remove(name);
    }

    pub fn new(max_pixels: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            pool: Semaphore::new(cores),
            max_pixels,
            making: Mutex::new(HashMap::new()),
        }
    }
}

fn is_animatable(content_type: Option<&str>) -> bool {
    matches!(content_type, Some("image/gif" | "image/webp"))
}

impl Media {
    /// A thumbnail of `mxc://{server}/{media_id}` for `request`, made once and kept.
    pub async fn thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        request: Request,
        access: Access,
        timeout: Duration,
        allow_remote: bool,
    ) -> Result<Content> {
        if request.width == 0 || request.height == 0 {
            return Err(Error::invalid_param("width and height must be positive"));
        }
        let (width, height, method) = choose(&request);
        let remote = server != self.server_name && self.record(server, media_id)?.is_none();
        if remote && allow_remote && access == Access::Authenticated {
            // Another server's media not kept here: its own thumbnail, not the original.
            let spec = spec(width, height, method, request.animated);
            match self
                .remote_thumbnail(
                    server,
                    media_id,
                    (width, height, method),
                    request.animated,
                    &spec,
                )
                .await
            {
                Ok(thumbnail) => return Ok(thumbnail),
                Err(error) => {
                    tracing::debug!(%server, ?error, "no remote thumbnail, fetching the original")
                }
            }
        }
        let source = self
            .content(server, media_id, access, timeout, allow_remote)
            .await?;
        let animated = request.animated && is_animatable(source.content_type.as_deref());
        let spec = spec(width, height, method, animated);
        let key = Key::new().str(server.as_str()).str(media_id).str(&spec);
        if let Some(made) = self.stored_thumbnail(&key)? {
            return Ok(made);
        }
        let media_owner = Self::owner(server, media_id);
        let making = self.thumbnailer.claim(&format!("{media_owner}/{spec}"));
        let _making = making.lock().await;
        if let Some(made) = self.stored_thumbnail(&key)? {
            return Ok(made);
        }
        let made = self
            .make_thumbnail(&source, width, height, method, animated)
            .await;
        self.thumbnailer.release(&format!("{media_owner}/{spec}"));
        let made = made?;
        let staged = Staged::from_bytes(&*self.blobs, made.bytes).await?;
        let record = ThumbnailRecord {
            sha256: staged.sha256.clone(),
            size: staged.size,
            content_type: made.content_type.to_owned(),
            width: made.width,
            height: made.height,
            spec,
            created: super::now_ms(),
        };
        self.keep_thumbnail(&key, &media_owner, staged, record)
            .await
    }

    /// A thumbnail of another server's media from that server, kept like one made here.
    async fn remote_thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        box_size: (u32, u32, Method),
        animated: bool,
        spec: &str,
    ) -> Result<Content, String> {
        let key = Key::new().str(server.as_str()).str(media_id).str(spec);
        if let Some(kept) = self.stored_thumbnail(&key).map_err(|e| e.to_string())? {
            return Ok(kept);
        }
        let media_owner = Self::owner(server, media_id);
        let making = self.thumbnailer.claim(&format!("{media_owner}/{spec}"));
        let _making = making.lock().await;
        if let Some(kept) = self.stored_thumbnail(&key).map_err(|e| e.to_string())? {
            return Ok(kept);
        }
        let fetched = self
            .fetch_remote_thumbnail(server, media_id, box_size, animated)
            .await;
        self.thumbnailer.release(&format!("{media_owner}/{spec}"));
        let fetched = fetched.map_err(|error| format!("{error:?}"))?;
        let content_type = fetched
            .content_type
            .filter(|kind| kind.starts_with("image/"))
            .ok_or("the remote thumbnail is not an image")?;
        let record = ThumbnailRecord {
            sha256: fetched.staged.sha256.clone(),
            size: fetched.staged.size,
            content_type,
            width: box_size.0,
            height: box_size.1,
            spec: spec.to_owned(),
            created: super::now_ms(),
        };
        self.keep_thumbnail(&key, &media_owner, fetched.staged, record)
            .await
            .map_err(|error| error.to_string())
    }

    /// Takes a staged thumbnail in under `key` with its file owned by it.
    async fn keep_thumbnail(
        &self,
        key: &Key,
        media_owner: &str,
        staged: Staged,
        record: ThumbnailRecord,
    ) -> Result<Content> {
        let _file = self.file_lock(&record.sha256).lock().await;
        staged.adopt(&*self.blobs).await?;
        let mut batch = self.db.batch();
        batch.put_json(Keyspace::MediaThumbnails, key.bytes().to_vec(), &record);
        batch.put(
            Keyspace::MediaRefs,
            Key::new()
                .str(&record.sha256)
                .str(&owner(media_owner, &record))
                .bytes()
                .to_vec(),
            Vec::new(),
        );
        self.db.write(batch)?;
        Ok(thumbnail_content(record))
    }

    fn stored_thumbnail(&self, key: &Key) -> Result<Option<Content>> {
        let stored: Option<ThumbnailRecord> =
            self.db.get_json(Keyspace::MediaThumbnails, key.bytes())?;
        Ok(stored.map(thumbnail_content))
    }

    async fn make_thumbnail(
        &self,
        source: &Content,
        width: u32,
        height: u32,
        method: Method,
        animated: bool,
    ) -> Result<image_ops::Thumbnail> {
        if source.size > self.limits.max_upload_size {
            return Err(Error::new(
                ErrorKind::TooLarge,
                "Content is too large to thumbnail",
            ));
        }
        let _permit = self
            .thumbnailer
            .pool
            .acquire()
            .await
            .map_err(Error::internal)?;
        let is_video = source
            .content_type
            .as_deref()
            .is_some_and(|kind| kind.starts_with("video/"));
        // The source is read in the blocking thread where the store keeps files locally,
        // so every large allocation of a thumbnail lives and dies in that thread.
        let (source_bytes, local, animated) = if is_video {
            (self.poster_frame(source).await?, None, false)
        } else if let Some(path) = self.blobs.local_path(&source.sha256) {
            (Vec::new(), Some(path), animated)
        } else {
            let bytes =
                blobs::read_to_vec(&*self.blobs, &source.sha256, self.limits.max_upload_size)
                    .await
                    .map_err(|error| {
                        Error::internal(format!("reading media to thumbnail: {error}"))
                    })?;
            (bytes, None, animated)
        };
        let max_pixels = self.thumbnailer.max_pixels;
        let made = tokio::task::spawn_blocking(move || {
            let bytes = match local {
                Some(path) => std::fs::read(path).map_err(|error| error.to_string())?,
                None => source_bytes,
            };
            let made = image_ops::thumbnail(&bytes, width, height, method, animated, max_pixels);
            drop(bytes);
            crate::service::memory::release_freed_memory();
            Ok::<_, String>(made)
        })
        .await
        .map_err(Error::internal)?
        .map_err(|error| Error::internal(format!("reading media to thumbnail: {error}")))?;
        made.map_err(|error| match error {
            ThumbnailError::TooLarge => {
                Error::new(ErrorKind::TooLarge, "The image is too large to thumbnail")
            }
            ThumbnailError::Unsupported(reason) => {
                tracing::debug!(%reason, "no thumbnail");
                cannot_thumbnail()
            }
        })
    }

    /// The first frame of a video, as PNG; no ffmpeg, or a file it cannot read, is the
    /// spec's 400 for content that cannot be thumbnailed.
    async fn poster_frame(&self, source: &Content) -> Result<Vec<u8>> {
        // ffmpeg reads a file: the store's own, or a copy staged from the bucket.
        let copy;
        let path = match self.blobs.local_path(&source.sha256) {
            Some(path) => path,
            None => {
                let stream = self.read(&source.sha256, 0, None).await?;
                copy = Staged::write(&*self.blobs, stream, self.limits.max_upload_size).await?;
                copy.path().to_owned()
            }
        };
        super::video::poster_frame(&self.limits.ffmpeg, &path)
            .await
            .map_err(|error| {
                tracing::debug!(?error, "no poster frame");
                cannot_thumbnail()
            })
    }

    /// Every thumbnail kept of a media, with its key.
    pub(super) fn thumbnails_of(
        &self,
        server: &ServerName,
        media_id: &str,
    ) -> Result<Vec<(Vec<u8>, ThumbnailRecord)>> {
        self.db
            .scan_prefix(
                Keyspace::MediaThumbnails,
                Key::new().str(server.as_str()).str(media_id).bytes(),
            )?
            .into_iter()
            .map(|(key, value)| {
                let record = crate::storage::codec::decode_json(&value)?;
                Ok((key, record))
            })
            .collect()
    }
}

fn cannot_thumbnail() -> Error {
    Error::new(
        ErrorKind::Unknown,
        "Cannot generate thumbnails for the requested content",
    )
    .with_status(http::StatusCode::BAD_REQUEST)
}

fn thumbnail_content(record: ThumbnailRecord) -> Content {
    let extension = match record.content_type.as_str() {
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        _ => "png",
    };
    Content {
        sha256: record.sha256,
        size: record.size,
        content_type: Some(record.content_type),
        filename: Some(format!("thumbnail.{extension}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(width: u32, height: u32, method: Method) -> Request {
        Request {
            width,
            height,
            method,
            animated: false,
        }
    }

    #[test]
    fn requests_land_on_the_listed_sizes_never_smaller() {
        assert_eq!(
            choose(&request(32, 32, Method::Crop)),
            (32, 32, Method::Crop)
        );
        assert_eq!(
            choose(&request(40, 40, Method::Crop)),
            (96, 96, Method::Crop)
        );
        assert_eq!(
            choose(&request(800, 600, Method::Scale)),
            (800, 600, Method::Scale)
        );
        assert_eq!(
            choose(&request(300, 300, Method::Scale)),
            (640, 480, Method::Scale)
        );
        assert_eq!(
            choose(&request(300, 300, Method::Crop)),
            (320, 320, Method::Crop)
        );
        assert_eq!(
            choose(&request(5000, 1, Method::Scale)),
            (1600, 64, Method::Scale)
        );
    }
}
