//! Media kept in an S3-compatible bucket (moto's S3 server from PyPI, installed with
//! the Python test dependencies): uploads land as one object per distinct file,
//! downloads, ranges and thumbnails come back from the bucket, deletion removes the
//! object with its last owner.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use complement_tests::{TestServer, free_port, token};

use super::{get, mxc_path, png, upload};

/// moto's S3 server on a free port; killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    async fn start() -> Result<Self> {
        let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/.venv/bin/moto_server");
        ensure!(
            binary.exists(),
            "{} is missing: scripts/install-deps.sh installs complement-tests/python/requirements.txt",
            binary.display()
        );
        let port = free_port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let moto = Self { child, port };
        for _ in 0..200 {
            if reqwest::get(moto.url()).await.is_ok() {
                return Ok(moto);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("moto did not come up")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The object keys in `bucket`.
    async fn keys(&self, bucket: &str) -> Result<Vec<String>> {
        let listing = reqwest::get(format!("{}/{bucket}?list-type=2", self.url()))
            .await?
            .text()
            .await?;
        Ok(listing
            .split("<Key>")
            .skip(1)
            .filter_map(|part| part.split("</Key>").next())
            .map(str::to_owned)
            .collect())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn media_lives_in_an_s3_bucket() -> Result<()> {
    let moto = Moto::start().await?;
    let created = reqwest::Client::new()
        .put(format!("{}/palisade-media", moto.url()))
        .send()
        .await?;
    ensure!(
        created.status().is_success(),
        "creating the bucket: {}",
        created.status()
    );
    let server = TestServer::start_with(&format!(
        "[global.media.s3]\nendpoint = \"{}\"\nbucket = \"palisade-media\"\n\
         access_key_id = \"test\"\nsecret_access_key = \"test\"\nprefix = \"media/\"\n",
        moto.url()
    ))
    .await?;
    let admin = server.register_admin("admin").await?;
    let alice = server.register("alice").await?;
    let token = token(&alice);

    let picture = png(640, 480);
    let first = upload(&server, &token, "image/png", Some("a.png"), picture.clone()).await?;
    let second = upload(&server, &token, "image/png", Some("b.png"), picture.clone()).await?;
    let keys = moto.keys("palisade-media").await?;
    ensure!(keys.len() == 1 && keys[0].starts_with("media/"), "{keys:?}");

    let download = format!("/_matrix/client/v1/media/download/{}", mxc_path(&first));
    let whole = get(&server, &download, Some(&token), &[]).await?;
    ensure!(
        whole.status == 200 && whole.body == picture,
        "download: {}",
        whole.status
    );
    let part = get(&server, &download, Some(&token), &[("Range", "bytes=8-15")]).await?;
    ensure!(
        part.status == 206 && part.body == picture[8..16],
        "range: {}",
        part.status
    );
    let thumbnail = get(
        &server,
        &format!(
            "/_matrix/client/v1/media/thumbnail/{}?width=96&height=96&method=crop",
            mxc_path(&first)
        ),
        Some(&token),
        &[],
    )
    .await?;
    ensure!(thumbnail.status == 200, "thumbnail: {}", thumbnail.status);
    let made = image::load_from_memory(&thumbnail.body)?;
    ensure!((made.width(), made.height()) == (96, 96));
    ensure!(
        moto.keys("palisade-media").await?.len() == 2,
        "the thumbnail is an object too"
    );

    for uri in [&first, &second] {
        let (status, body) = server
            .request(
                "DELETE",
                &format!("/_synapse/admin/v1/media/{}", mxc_path(uri)),
                Some(&admin),
                None,
            )
            .await?;
        ensure!(status == 200, "delete: {status} {body}");
    }
    let left = moto.keys("palisade-media").await?;
    ensure!(
        left.is_empty(),
        "objects left after deleting every owner: {left:?}"
    );
    Ok(())
}
