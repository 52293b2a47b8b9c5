//! Reading a response body with a size cap, so a remote server cannot make us buffer more
//! than we chose to.

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The connection failed while reading.
    Transport(reqwest::Error),
    /// The body is larger than the cap.
    TooLarge(usize),
}

/// The whole body of `response`, or [`BodyError::TooLarge`] as soon as it exceeds `limit` bytes.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let announced = response.content_length().unwrap_or(0);
    if announced > limit as u64 {
        return Err(BodyError::TooLarge(limit));
    }
    // Trust the announced length only as a hint for the first allocation, within the cap.
    let mut body = Vec::with_capacity(announced.min(64 * 1024) as usize);
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
