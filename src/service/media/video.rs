//! Poster frames of videos, through `ffmpeg` when it is installed: the first frame as a
//! PNG, which is then thumbnailed like any image. Without ffmpeg (or for a file it
//! cannot read) there is no thumbnail, and the request gets the spec's 400.

use std::{path::Path, process::Stdio, time::Duration};

use tokio::{io::AsyncReadExt, process::Command};

/// The longest ffmpeg may take for one frame.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest frame read back (a 4K frame as PNG is well below).
const MAX_FRAME: u64 = 64 * 1024 * 1024;

/// Why no poster frame was made.
#[derive(Debug)]
pub enum PosterError {
    /// `ffmpeg` is not installed where configured.
    NoFfmpeg,
    /// ffmpeg failed, timed out or gave nothing.
    Failed(String),
}

/// The first frame of the video in `file` as PNG bytes.
pub async fn poster_frame(ffmpeg: &str, file: &Path) -> Result<Vec<u8>, PosterError> {
    let mut child = Command::new(ffmpeg)
        .args(["-nostdin", "-loglevel", "error", "-i"])
        .arg(file)
        .args(["-frames:v", "1", "-f", "image2pipe", "-vcodec", "png", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => PosterError::NoFfmpeg,
            _ => PosterError::Failed(error.to_string()),
        })?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| PosterError::Failed("no output".into()))?;
    let run = async {
        let mut frame = Vec::new();
        (&mut stdout)
            .take(MAX_FRAME)
            .read_to_end(&mut frame)
            .await
            .map_err(|error| PosterError::Failed(error.to_string()))?;
        let status = child
            .wait()
            .await
            .map_err(|error| PosterError::Failed(error.to_string()))?;
        if !status.success() || frame.is_empty() {
            return Err(PosterError::Failed(format!("ffmpeg exited with {status}")));
        }
        Ok(frame)
    };
    tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| PosterError::Failed("ffmpeg timed out".into()))?
}
