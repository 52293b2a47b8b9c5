//! Media: upload and download throughput of distinct files (so a server that stores
//! identical bytes once gains nothing), and the latency of a timeline thumbnail
//! (320×240 scale) of photo-sized images, first asked and asked again.

use super::*;

impl Run {
    pub(super) async fn media_phases(&mut self) -> Result<()> {
        let uris = self.upload_phase().await?;
        self.download_phase(&uris).await?;
        self.thumbnail_phase().await
    }

    /// `media_uploaders` users each upload `media_files` files of `media_file_kib`.
    async fn upload_phase(&mut self) -> Result<Vec<(User, String)>> {
        let plan = self.plan.clone();
        let uploaders = self.users[..plan.media_uploaders].to_vec();
        let size = plan.media_file_kib * 1024;
        let phase = Phase::new(
            "media_upload",
            format!(
                "{} concurrent uploaders, {} files of {} KiB each",
                plan.media_uploaders, plan.media_files, plan.media_file_kib
            ),
        );
        let deadline = Instant::now() + plan.phase_time_limit;
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let results = try_join_all(uploaders.iter().enumerate().map(|(i, user)| {
            let matrix = self.matrix.clone();
            let prefix = self.prefix.clone();
            async move {
                let mut done = Vec::new();
                for n in 0..plan.media_files {
                    if Instant::now() > deadline {
                        break;
                    }
                    let bytes = distinct_bytes(&format!("{prefix}-{i}-{n}"), size);
                    let t0 = Instant::now();
                    let uri = matrix
                        .upload(user, "application/octet-stream", bytes)
                        .await?;
                    done.push((t0.elapsed(), (user.clone(), uri)));
                }
                anyhow::Ok(done)
            }
        }))
        .await?;
        let elapsed = started.elapsed();
        let usage = watch.finish();
        let (latencies, uris): (Vec<Duration>, Vec<(User, String)>) =
            results.into_iter().flatten().unzip();
        let mut phase = phase;
        phase.extra.insert(
            "mib_per_s".into(),
            mib_per_second(uris.len() * size, elapsed),
        );
        self.record(phase, &latencies, elapsed, usage);
        Ok(uris)
    }

    /// The uploaded files downloaded again, by as many concurrent readers.
    async fn download_phase(&mut self, uris: &[(User, String)]) -> Result<()> {
        let plan = self.plan.clone();
        let phase = Phase::new(
            "media_download",
            format!(
                "{} concurrent readers, the {} files just uploaded",
                plan.media_uploaders,
                uris.len()
            ),
        );
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let chunks: Vec<&[(User, String)]> = uris
            .chunks(uris.len().div_ceil(plan.media_uploaders).max(1))
            .collect();
        let results = try_join_all(chunks.into_iter().map(|chunk| {
            let matrix = self.matrix.clone();
            async move {
                let mut done = Vec::new();
                for (user, uri) in chunk {
                    let t0 = Instant::now();
                    let bytes = matrix.media(user, "download", uri, "").await?;
                    done.push((t0.elapsed(), bytes));
                }
                anyhow::Ok(done)
            }
        }))
        .await?;
        let elapsed = started.elapsed();
        let usage = watch.finish();
        let (latencies, sizes): (Vec<Duration>, Vec<usize>) = results.into_iter().flatten().unzip();
        let mut phase = phase;
        phase.extra.insert(
            "mib_per_s".into(),
            mib_per_second(sizes.iter().sum(), elapsed),
        );
        self.record(phase, &latencies, elapsed, usage);
        Ok(())
    }

    /// `media_images` distinct 1600×1200 PNG photos, each thumbnailed at 320×240 (scale)
    /// once (made, or looked up where the server made it at upload) and then again.
    async fn thumbnail_phase(&mut self) -> Result<()> {
        let plan = self.plan.clone();
        let user = self.users[0].clone();
        let mut uris = Vec::with_capacity(plan.media_images);
        for n in 0..plan.media_images {
            let image = noise_png(1600, 1200, &format!("{}-image-{n}", self.prefix));
            uris.push(self.matrix.upload(&user, "image/png", image).await?);
        }
        let phase = Phase::new(
            "media_thumbnail",
            format!(
                "{} photos of 1600×1200, a 320×240 thumbnail of each, one at a time",
                plan.media_images
            ),
        );
        let query = "?width=320&height=240&method=scale";
        let watch = Watch::start(&self.processes);
        let started = Instant::now();
        let mut first = Vec::with_capacity(uris.len());
        for uri in &uris {
            let t0 = Instant::now();
            self.matrix.media(&user, "thumbnail", uri, query).await?;
            first.push(t0.elapsed());
        }
        let elapsed = started.elapsed();
        let mut again = Vec::with_capacity(uris.len());
        for uri in &uris {
            let t0 = Instant::now();
            self.matrix.media(&user, "thumbnail", uri, query).await?;
            again.push(t0.elapsed());
        }
        let usage = watch.finish();
        let mut phase = phase;
        let cached = Latency::of(&again);
        phase.extra.insert("cached_p50_ms".into(), cached.p50);
        phase.extra.insert("cached_p99_ms".into(), cached.p99);
        self.record(phase, &first, elapsed, usage);
        Ok(())
    }
}

fn mib_per_second(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64().max(1e-9)
}

/// `size` bytes that differ for every `seed` (a xorshift stream).
fn distinct_bytes(seed: &str, size: usize) -> Vec<u8> {
    let mut state = seed.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |acc, byte| {
        (acc ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut bytes = Vec::with_capacity(size + 8);
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

/// An RGB PNG of noise (as incompressible as a photo), stored uncompressed.
fn noise_png(width: u32, height: u32, seed: &str) -> Vec<u8> {
    let row = width as usize * 3;
    let pixels = distinct_bytes(seed, row * height as usize);
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in pixels.chunks(row) {
        raw.push(0);
        raw.extend_from_slice(line);
    }
    // zlib with stored blocks of at most 65535 bytes.
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let length = block.len() as u16;
        zlib.extend_from_slice(&length.to_le_bytes());
        zlib.extend_from_slice(&(!length).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", header), (b"IDAT", zlib), (b"IEND", Vec::new())] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(&data);
        let crc = crc32(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    }
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let table: Vec<u32> = (0..256u32)
        .map(|n| {
            (0..8).fold(n, |c, _| {
                if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                }
            })
        })
        .collect();
    !bytes.iter().fold(0xFFFF_FFFFu32, |crc, byte| {
        table[((crc ^ u32::from(*byte)) & 0xFF) as usize] ^ (crc >> 8)
    })
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in bytes.chunks(5552) {
        for byte in chunk {
            a += u32::from(*byte);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}
