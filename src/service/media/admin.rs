//! What administrators do with media: list a user's uploads, delete by id, by user and
//! by age, and purge the cache of other servers' media.

use ruma::{OwnedServerName, ServerName, UserId};

use super::{Media, MediaRecord};
use crate::{
    Result,
    storage::{Keyspace, codec::KeyReader},
};

/// One of a user's uploads, for the admin API.
#[derive(Clone, Debug)]
pub struct Upload {
    pub media_id: String,
    pub record: MediaRecord,
}

impl Media {
    /// Every `mxc://` URI kept, with its record (local and cached remote).
    fn all_records(&self) -> Result<Vec<(OwnedServerName, String, MediaRecord)>> {
        let mut all = Vec::new();
        for (key, value) in self.db.scan_prefix(Keyspace::Media, &[])? {
            let mut reader = KeyReader::new(&key);
            let Ok(server) = ServerName::parse(reader.str()?) else {
                continue;
            };
            let media_id = reader.str()?.to_owned();
            let record = crate::storage::codec::decode_json(&value)?;
            all.push((server, media_id, record));
        }
        Ok(all)
    }

    /// `user`'s uploads, oldest first.
    pub fn uploads(&self, user: &UserId) -> Result<Vec<Upload>> {
        let mut uploads = Vec::new();
        for (media_id, _) in self.uploads_of(user)? {
            if let Some(record) = self.record(&self.server_name, &media_id)? {
                uploads.push(Upload { media_id, record });
            }
        }
        Ok(uploads)
    }

    /// Deletes this server's media created before `before_ms` and larger than
    /// `larger_than` bytes; answers the media ids deleted.
    pub async fn delete_local_before(
        &self,
        before_ms: u64,
        larger_than: u64,
    ) -> Result<Vec<String>> {
        let mut deleted = Vec::new();
        for (server, media_id, record) in self.all_records()? {
            if server == self.server_name && record.created < before_ms && record.size > larger_than
            {
                self.delete(&server, &media_id).await?;
                deleted.push(media_id);
            }
        }
        Ok(deleted)
    }

    /// Drops other servers' media fetched before `before_ms` (they are fetched again
    /// when asked for); answers how many.
    pub async fn purge_remote_before(&self, before_ms: u64) -> Result<usize> {
        let mut stale = std::collections::BTreeSet::new();
        for (server, media_id, record) in self.all_records()? {
            if server != self.server_name && record.created < before_ms {
                stale.insert((server, media_id));
            }
        }
        // Thumbnails fetched from other servers without their original.
        for (key, value) in self.db.scan_prefix(Keyspace::MediaThumbnails, &[])? {
            let mut reader = KeyReader::new(&key);
            let Ok(server) = ServerName::parse(reader.str()?) else {
                continue;
            };
            let media_id = reader.str()?.to_owned();
            let thumbnail: super::thumbnails::ThumbnailRecord =
                crate::storage::codec::decode_json(&value)?;
            if server != self.server_name
                && thumbnail.created < before_ms
                && self.record(&server, &media_id)?.is_none()
            {
                stale.insert((server, media_id));
            }
        }
        for (server, media_id) in &stale {
            self.delete(server, media_id).await?;
        }
        Ok(stale.len())
    }
}
