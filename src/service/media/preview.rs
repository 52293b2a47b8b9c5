//! URL previews (`preview_url`): a page's OpenGraph title, description and image (the
//! image kept as media), or a common provider's oEmbed answer. Off unless configured.
//!
//! Every address a preview connects to, resolved or literal, first or after a redirect,
//! is checked against a deny list of loopback, private, link-local, multicast and other
//! special ranges (the configured allow list can open some); reads are bounded in size
//! and time; answers are cached for an hour.

use std::{
    net::IpAddr,
    num::NonZeroUsize,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use ruma::UserId;
use serde_json::{Map, Value, json};

use super::{
    Media, MediaRecord, Staged, now_ms,
    remote::{body_stream, header},
};
use crate::{
    Error, Result,
    service::address_policy::{AddressPolicy, GuardedResolver},
    storage::blobs,
};

/// How long an answer is reused.
const CACHE_FOR: Duration = Duration::from_secs(60 * 60);
/// The most of a page read for its tags.
const MAX_PAGE: u64 = 2 * 1024 * 1024;
/// The time allowed for each fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// URL previews: the guarded client and the cache.
pub struct Previews {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    cache: Mutex<lru::LruCache<String, (Instant, Value)>>,
}

impl Previews {
    pub fn new(policy: AddressPolicy) -> std::result::Result<Self, String> {
        let policy = Arc::new(policy);
        let tls = palisade_federation::tls::web_client_config().map_err(|e| e.to_string())?;
        let redirect_policy = policy.clone();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .dns_resolver(Arc::new(GuardedResolver(policy.clone())))
            .no_proxy()
            .timeout(FETCH_TIMEOUT)
            .user_agent("Mozilla/5.0 (compatible; Palisade URL preview)")
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 5 {
                    return attempt.error("too many redirects");
                }
                match literal_ip(attempt.url()) {
                    Some(ip) if !redirect_policy.permits(ip) => {
                        attempt.error("redirect to a denied address")
                    }
                    _ => attempt.follow(),
                }
            }))
            .build()
            .map_err(|error| error.to_string())?;
        Ok(Self {
            client,
            policy,
            cache: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(1000).expect("non-zero"),
            )),
        })
    }

    /// Fetches `url` with the guard: a literal address is checked here, names through
    /// the resolver, redirects by the redirect policy.
    async fn fetch(&self, url: &reqwest::Url) -> Result<reqwest::Response> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid_param(
                "Only http and https URLs are previewed",
            ));
        }
        if let Some(ip) = literal_ip(url)
            && !self.policy.permits(ip)
        {
            return Err(Error::forbidden("This address may not be previewed"));
        }
        let response = self
            .client
            .get(url.clone())
            .header(http::header::ACCEPT_LANGUAGE, "en")
            .send()
            .await
            .map_err(|error| {
                tracing::debug!(%url, error = %palisade_federation::error_chain(&error), "preview fetch failed");
                Error::not_found("The URL could not be fetched for a preview")
            })?;
        if !response.status().is_success() {
            return Err(Error::not_found(format!(
                "The URL answered {} and has no preview",
                response.status()
            )));
        }
        Ok(response)
    }
}

fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

impl Media {
    /// The preview of `url` for `user`: OpenGraph tags (with `og:image` an `mxc://` URI
    /// of this server), from the cache when fresh.
    pub async fn preview(&self, user: &UserId, url: &str) -> Result<Value> {
        let Some(previews) = &self.previews else {
            return Err(Error::forbidden("URL previews are disabled on this server"));
        };
        let url = reqwest::Url::parse(url).map_err(|_| Error::invalid_param("Not a URL"))?;
        if let Some((at, value)) = previews.cache.lock().get(url.as_str())
            && at.elapsed() < CACHE_FOR
        {
            return Ok(value.clone());
        }
        let mut tags = match oembed_endpoint(&url) {
            Some(endpoint) => match self.oembed(previews, &endpoint).await {
                Ok(tags) => tags,
                Err(_) => self.page_tags(previews, user, &url).await?,
            },
            None => self.page_tags(previews, user, &url).await?,
        };
        if let Some(image) = tags
            .remove("og:image")
            .and_then(|v| v.as_str().map(str::to_owned))
            && let Ok(image_url) = url.join(&image)
            && let Ok(stored) = self.store_preview_image(previews, user, &image_url).await
        {
            tags.extend(stored);
        }
        let value = Value::Object(tags);
        previews
            .cache
            .lock()
            .put(url.as_str().to_owned(), (Instant::now(), value.clone()));
        Ok(value)
    }

    /// The OpenGraph tags of a page, or, for an image URL, the image itself.
    async fn page_tags(
        &self,
        previews: &Previews,
        user: &UserId,
        url: &reqwest::Url,
    ) -> Result<Map<String, Value>> {
        let response = previews.fetch(url).await?;
        let content_type = header(&response, http::header::CONTENT_TYPE)
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("image/") {
            let stored = self
                .keep_preview_image(user, response, &content_type)
                .await?;
            let mut tags = stored;
            tags.insert("og:url".into(), json!(url.as_str()));
            return Ok(tags);
        }
        if !content_type.contains("html") {
            return Err(Error::not_found("The URL has no preview"));
        }
        let page = read_limited(response, MAX_PAGE).await?;
        let mut tags = og_tags(&String::from_utf8_lossy(&page));
        tags.entry("og:url").or_insert_with(|| json!(url.as_str()));
        Ok(tags)
    }

    async fn oembed(
        &self,
        previews: &Previews,
        endpoint: &reqwest::Url,
    ) -> Result<Map<String, Value>> {
        let response = previews.fetch(endpoint).await?;
        let body = read_limited(response, MAX_PAGE).await?;
        let answer: Value =
            serde_json::from_slice(&body).map_err(|_| Error::not_found("No oEmbed answer"))?;
        Ok(oembed_tags(&answer))
    }

    async fn store_preview_image(
        &self,
        previews: &Previews,
        user: &UserId,
        url: &reqwest::Url,
    ) -> Result<Map<String, Value>> {
        let response = previews.fetch(url).await?;
        let content_type = header(&response, http::header::CONTENT_TYPE)
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        if !content_type.starts_with("image/") {
            return Err(Error::not_found("The preview image is not an image"));
        }
        self.keep_preview_image(user, response, &content_type).await
    }

    /// Keeps an image fetched for a preview as media of this server; answers its tags.
    async fn keep_preview_image(
        &self,
        user: &UserId,
        response: reqwest::Response,
        content_type: &str,
    ) -> Result<Map<String, Value>> {
        let body = body_stream(response);
        let staged =
            Staged::write(&*self.blobs, Box::pin(body), self.limits.max_upload_size).await?;
        let sha256 = staged.sha256.clone();
        let size = staged.size;
        let media_id = Self::new_media_id();
        let record = MediaRecord {
            sha256: Some(sha256.clone()),
            size,
            content_type: Some(content_type.to_owned()),
            filename: None,
            uploader: None,
            created: now_ms(),
            expires: None,
            authenticated_only: self.limits.freeze_legacy,
        };
        let server = self.server_name.clone();
        self.keep(staged, &server, &media_id, record, |_| {})
            .await?;
        tracing::debug!(%user, %media_id, "kept a preview image");
        let mut tags = Map::new();
        tags.insert(
            "og:image".into(),
            json!(format!("mxc://{server}/{media_id}")),
        );
        tags.insert("og:image:type".into(), json!(content_type));
        tags.insert("matrix:image:size".into(), json!(size));
        if let Ok(bytes) = blobs::read_to_vec(&*self.blobs, &sha256, 32 * 1024 * 1024).await
            && let Ok(reader) =
                image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()
            && let Ok((width, height)) = reader.into_dimensions()
        {
            tags.insert("og:image:width".into(), json!(width));
            tags.insert("og:image:height".into(), json!(height));
        }
        Ok(tags)
    }
}

async fn read_limited(mut response: reqwest::Response, limit: u64) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| Error::not_found("The URL could not be read for a preview"))?
    {
        let room = (limit as usize).saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() as u64 >= limit {
            break;
        }
    }
    Ok(body)
}

/// The oEmbed endpoint of a URL of a common provider.
fn oembed_endpoint(url: &reqwest::Url) -> Option<reqwest::Url> {
    const PROVIDERS: &[(&[&str], &str)] = &[
        (
            &[
                "youtube.com",
                "www.youtube.com",
                "m.youtube.com",
                "youtu.be",
            ],
            "https://www.youtube.com/oembed",
        ),
        (
            &["vimeo.com", "www.vimeo.com"],
            "https://vimeo.com/api/oembed.json",
        ),
        (
            &[
                "twitter.com",
                "www.twitter.com",
                "x.com",
                "mobile.twitter.com",
            ],
            "https://publish.twitter.com/oembed",
        ),
        (&["open.spotify.com"], "https://open.spotify.com/oembed"),
        (
            &["soundcloud.com", "www.soundcloud.com"],
            "https://soundcloud.com/oembed",
        ),
        (
            &["www.reddit.com", "reddit.com"],
            "https://www.reddit.com/oembed",
        ),
        (
            &["www.flickr.com", "flickr.com", "flic.kr"],
            "https://www.flickr.com/services/oembed/",
        ),
    ];
    let host = url.host_str()?.to_ascii_lowercase();
    let (_, endpoint) = PROVIDERS
        .iter()
        .find(|(hosts, _)| hosts.contains(&host.as_str()))?;
    let mut endpoint = reqwest::Url::parse(endpoint).ok()?;
    endpoint
        .query_pairs_mut()
        .append_pair("url", url.as_str())
        .append_pair("format", "json");
    Some(endpoint)
}

/// OpenGraph tags from an oEmbed answer.
fn oembed_tags(answer: &Value) -> Map<String, Value> {
    let mut tags = Map::new();
    let text = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_owned);
    if let Some(title) = text("title") {
        tags.insert("og:title".into(), json!(title));
    }
    if let Some(site) = text("provider_name") {
        tags.insert("og:site_name".into(), json!(site));
    }
    if let Some(author) = text("author_name") {
        tags.insert("og:description".into(), json!(author));
    }
    let image = match text("type").as_deref() {
        Some("photo") => text("url"),
        _ => text("thumbnail_url"),
    };
    if let Some(image) = image {
        tags.insert("og:image".into(), json!(image));
    }
    tags
}

/// The `og:*` meta tags of a page, with its `<title>` and description as fallbacks.
pub fn og_tags(html: &str) -> Map<String, Value> {
    let mut tags = Map::new();
    let mut description = None;
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(start) = lower[from..].find("<meta") {
        let start = from + start;
        let Some(end) = lower[start..].find('>') else {
            break;
        };
        let attributes = attributes(&html[start + 5..start + end]);
        from = start + end;
        let key = attributes
            .iter()
            .find(|(name, _)| name == "property" || name == "name")
            .map(|(_, value)| value.to_ascii_lowercase());
        let content = attributes
            .iter()
            .find(|(name, _)| name == "content")
            .map(|(_, value)| value.clone());
        match (key.as_deref(), content) {
            (Some(key), Some(content)) if key.starts_with("og:") => {
                tags.entry(key.to_owned()).or_insert(json!(content));
            }
            (Some("description"), Some(content)) => description = Some(content),
            _ => {}
        }
    }
    if !tags.contains_key("og:title")
        && let Some(start) = lower.find("<title")
        && let Some(open_end) = lower[start..].find('>')
        && let Some(close) = lower[start..].find("</title")
    {
        let title = decode_entities(html[start + open_end + 1..start + close].trim());
        if !title.is_empty() {
            tags.insert("og:title".into(), json!(title));
        }
    }
    if !tags.contains_key("og:description")
        && let Some(description) = description
    {
        tags.insert("og:description".into(), json!(description));
    }
    tags
}

/// The attributes of a tag's inside, names lowercased, values unquoted and decoded.
fn attributes(inside: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let bytes = inside.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && bytes[i] != b'='
            && bytes[i] != b'/'
        {
            i += 1;
        }
        let name = inside[name_start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            if !name.is_empty() {
                found.push((name, String::new()));
            }
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
            let quote = bytes[i];
            let start = i + 1;
            let end = inside[start..]
                .bytes()
                .position(|byte| byte == quote)
                .map_or(bytes.len(), |offset| start + offset);
            i = end + 1;
            &inside[start..end.min(inside.len())]
        } else {
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            &inside[start..i]
        };
        if !name.is_empty() {
            found.push((name, decode_entities(value)));
        }
    }
    found
}

/// The common HTML character references.
fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';').filter(|end| *end <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" | "#39" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(character) => {
                out.push(character);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_read_from_real_world_markup() {
        let html = r#"<html><head><title>Fallback &amp; title</title>
            <META property="og:title" content="Matrix &quot;Blog&quot;">
            <meta content='A post' property=og:description />
            <meta name="description" content="ignored, og wins">
            <meta property="og:image" content="/img/cover.png"></head></html>"#;
        let tags = og_tags(html);
        assert_eq!(tags["og:title"], "Matrix \"Blog\"");
        assert_eq!(tags["og:description"], "A post");
        assert_eq!(tags["og:image"], "/img/cover.png");
        let plain =
            og_tags("<title>Just a title</title><meta name=description content=\"About it\">");
        assert_eq!(plain["og:title"], "Just a title");
        assert_eq!(plain["og:description"], "About it");
        assert!(og_tags("<meta property=\"og:title\"").is_empty());
    }

    #[test]
    fn oembed_answers_become_opengraph() {
        let url = reqwest::Url::parse("https://www.youtube.com/watch?v=abc").unwrap();
        let endpoint = oembed_endpoint(&url).unwrap();
        assert!(
            endpoint
                .as_str()
                .starts_with("https://www.youtube.com/oembed?url=https%3A%2F%2Fwww.youtube.com")
        );
        assert!(oembed_endpoint(&reqwest::Url::parse("https://example.org/").unwrap()).is_none());
        let tags = oembed_tags(&json!({
            "type": "video", "title": "A talk", "provider_name": "YouTube",
            "author_name": "Matrix", "thumbnail_url": "https://i.ytimg.com/x.jpg"
        }));
        assert_eq!(tags["og:title"], "A talk");
        assert_eq!(tags["og:site_name"], "YouTube");
        assert_eq!(tags["og:image"], "https://i.ytimg.com/x.jpg");
    }
}
