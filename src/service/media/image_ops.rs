//! Making a thumbnail from an image's bytes: decoding within pixel and memory limits,
//! turning it upright by its EXIF orientation, resizing by the spec's `scale` or `crop`,
//! and encoding afresh (so no metadata of the original survives). Animated GIF and WebP
//! keep their animation when asked. Pure functions, run on the blocking pool.

use std::io::Cursor;

use image::{
    AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageFormat, ImageReader, Limits,
    RgbaImage,
    codecs::{gif::GifDecoder, gif::GifEncoder, webp::WebPDecoder},
    imageops::FilterType,
};

/// The spec's resizing methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// Cover the box and cut what overflows: exactly the size asked (when the image is
    /// that large).
    Crop,
    /// Fit within the box, keeping the aspect ratio.
    Scale,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Crop => "crop",
            Method::Scale => "scale",
        }
    }
}

/// A made thumbnail.
#[derive(Debug)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// Why no thumbnail could be made.
#[derive(Debug, PartialEq, Eq)]
pub enum ThumbnailError {
    /// Not an image this server reads, or a broken one.
    Unsupported(String),
    /// More pixels (or frames) than the limit allows.
    TooLarge,
}

/// The most frames an animated thumbnail keeps.
const MAX_FRAMES: usize = 500;

/// A thumbnail of `input` for a `width`×`height` box, animated when `animated` and the
/// image is, refusing images of more than `max_pixels` pixels.
pub fn thumbnail(
    input: &[u8],
    width: u32,
    height: u32,
    method: Method,
    animated: bool,
    max_pixels: u64,
) -> Result<Thumbnail, ThumbnailError> {
    if width == 0 || height == 0 {
        return Err(ThumbnailError::Unsupported("empty box".into()));
    }
    let reader = ImageReader::new(Cursor::new(input))
        .with_guessed_format()
        .map_err(|error| ThumbnailError::Unsupported(error.to_string()))?;
    let format = reader
        .format()
        .ok_or_else(|| ThumbnailError::Unsupported("unknown image format".into()))?;
    if format == ImageFormat::Jpeg && !ends_a_jpeg(input) {
        return Err(ThumbnailError::Unsupported("truncated JPEG".into()));
    }
    if animated
        && let Some(result) = animated_thumbnail(input, format, width, height, method, max_pixels)
    {
        return result;
    }
    let mut reader = reader;
    reader.limits(limits(max_pixels));
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (source_width, source_height) = decoder.dimensions();
    if u64::from(source_width) * u64::from(source_height) > max_pixels {
        return Err(ThumbnailError::TooLarge);
    }
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    let resized = resize(&image, width, height, method);
    encode_still(resized, format)
}

/// Whether a JPEG has its end-of-image marker (some cameras write data after it, so it
/// need not be last). A truncated upload would otherwise make a half-grey thumbnail.
fn ends_a_jpeg(input: &[u8]) -> bool {
    input.windows(2).rev().any(|pair| pair == [0xFF, 0xD9])
}

fn limits(max_pixels: u64) -> Limits {
    let mut limits = Limits::default();
    // Room for the decoded pixels (RGBA, 16 bits a channel at worst) and the decoder's own.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    limits
}

fn decode_error(error: image::ImageError) -> ThumbnailError {
    match error {
        image::ImageError::Limits(_) => ThumbnailError::TooLarge,
        other => ThumbnailError::Unsupported(other.to_string()),
    }
}

/// The size of a `source`-sized image fitted to the box by `method`, never larger than
/// the source.
pub fn target_size(source: (u32, u32), width: u32, height: u32, method: Method) -> (u32, u32) {
    let (source_width, source_height) = (source.0.max(1), source.1.max(1));
    match method {
        Method::Crop => (width.min(source_width), height.min(source_height)),
        Method::Scale => {
            if source_width <= width && source_height <= height {
                return (source_width, source_height);
            }
            // Fit: the tighter of the two ratios decides.
            if u64::from(width) * u64::from(source_height)
                <= u64::from(height) * u64::from(source_width)
            {
                let scaled = u64::from(width) * u64::from(source_height) / u64::from(source_width);
                (width, (scaled as u32).max(1))
            } else {
                let scaled = u64::from(height) * u64::from(source_width) / u64::from(source_height);
                ((scaled as u32).max(1), height)
            }
        }
    }
}

fn resize(image: &DynamicImage, width: u32, height: u32, method: Method) -> DynamicImage {
    let (target_width, target_height) =
        target_size((image.width(), image.height()), width, height, method);
    if (target_width, target_height) == (image.width(), image.height()) {
        return image.clone();
    }
    match method {
        Method::Crop => image.resize_to_fill(target_width, target_height, FilterType::Triangle),
        Method::Scale => image.resize_exact(target_width, target_height, FilterType::Triangle),
    }
}

/// JPEG for a JPEG source without transparency (photos stay small), PNG otherwise.
fn encode_still(image: DynamicImage, source: ImageFormat) -> Result<Thumbnail, ThumbnailError> {
    let (width, height) = (image.width(), image.height());
    let mut bytes = Vec::new();
    let content_type = if source == ImageFormat::Jpeg && !image.color().has_alpha() {
        let encoder =
            image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut bytes), 80);
        image
            .into_rgb8()
            .write_with_encoder(encoder)
            .map_err(|error| ThumbnailError::Unsupported(error.to_string()))?;
        "image/jpeg"
    } else {
        image
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .map_err(|error| ThumbnailError::Unsupported(error.to_string()))?;
        "image/png"
    };
    Ok(Thumbnail {
        bytes,
        content_type,
        width,
        height,
    })
}

/// An animated GIF thumbnail of an animated GIF or WebP; `None` when the image is not
/// animated (a still thumbnail is made instead).
fn animated_thumbnail(
    input: &[u8],
    format: ImageFormat,
    width: u32,
    height: u32,
    method: Method,
    max_pixels: u64,
) -> Option<Result<Thumbnail, ThumbnailError>> {
    let frames = match format {
        ImageFormat::Gif => {
            let mut decoder = GifDecoder::new(Cursor::new(input)).ok()?;
            decoder.set_limits(limits(max_pixels)).ok()?;
            let (w, h) = decoder.dimensions();
            if u64::from(w) * u64::from(h) > max_pixels {
                return Some(Err(ThumbnailError::TooLarge));
            }
            decoder.into_frames()
        }
        ImageFormat::WebP => {
            let mut decoder = WebPDecoder::new(Cursor::new(input)).ok()?;
            if !decoder.has_animation() {
                return None;
            }
            decoder.set_limits(limits(max_pixels)).ok()?;
            let (w, h) = decoder.dimensions();
            if u64::from(w) * u64::from(h) > max_pixels {
                return Some(Err(ThumbnailError::TooLarge));
            }
            decoder.into_frames()
        }
        _ => return None,
    };
    let mut resized = Vec::new();
    let mut pixels = 0u64;
    for frame in frames {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => return Some(Err(decode_error(error))),
        };
        if resized.len() >= MAX_FRAMES {
            break;
        }
        let delay = frame.delay();
        let buffer: RgbaImage = frame.into_buffer();
        pixels += u64::from(buffer.width()) * u64::from(buffer.height());
        if pixels > max_pixels.saturating_mul(4) {
            return Some(Err(ThumbnailError::TooLarge));
        }
        let image = resize(&DynamicImage::ImageRgba8(buffer), width, height, method);
        resized.push(Frame::from_parts(image.into_rgba8(), 0, 0, delay));
    }
    if resized.len() < 2 {
        return None;
    }
    let (out_width, out_height) = resized[0].buffer().dimensions();
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        if encoder
            .set_repeat(image::codecs::gif::Repeat::Infinite)
            .is_err()
        {
            return None;
        }
        if let Err(error) = encoder.encode_frames(resized) {
            return Some(Err(ThumbnailError::Unsupported(error.to_string())));
        }
    }
    Some(Ok(Thumbnail {
        bytes,
        content_type: "image/gif",
        width: out_width,
        height: out_height,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = RgbaImage::from_fn(width, height, |x, y| {
            image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
        });
        let mut bytes = Vec::new();
        DynamicImage::ImageRgba8(image)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    }

    fn decoded(thumbnail: &Thumbnail) -> DynamicImage {
        image::load_from_memory(&thumbnail.bytes).unwrap()
    }

    #[test]
    fn scale_fits_and_crop_fills_the_box() {
        let source = png(1000, 500);
        let scaled = thumbnail(&source, 320, 240, Method::Scale, false, 1 << 30).unwrap();
        assert_eq!((scaled.width, scaled.height), (320, 160));
        assert_eq!(decoded(&scaled).width(), 320);
        let cropped = thumbnail(&source, 96, 96, Method::Crop, false, 1 << 30).unwrap();
        assert_eq!((cropped.width, cropped.height), (96, 96));
        assert_eq!(cropped.content_type, "image/png");
    }

    #[test]
    fn small_images_are_not_upscaled() {
        let source = png(40, 20);
        let scaled = thumbnail(&source, 320, 240, Method::Scale, false, 1 << 30).unwrap();
        assert_eq!((scaled.width, scaled.height), (40, 20));
        let cropped = thumbnail(&source, 96, 96, Method::Crop, false, 1 << 30).unwrap();
        assert_eq!((cropped.width, cropped.height), (40, 20));
    }

    #[test]
    fn bombs_broken_files_and_non_images_are_refused() {
        let source = png(2000, 2000);
        assert_eq!(
            thumbnail(&source, 32, 32, Method::Crop, false, 1_000_000).unwrap_err(),
            ThumbnailError::TooLarge
        );
        let truncated = &source[..source.len() / 2];
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(image::RgbImage::new(300, 200))
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        assert!(thumbnail(&jpeg, 32, 32, Method::Crop, false, 1 << 30).is_ok());
        assert!(matches!(
            thumbnail(
                &jpeg[..jpeg.len() / 2],
                32,
                32,
                Method::Crop,
                false,
                1 << 30
            ),
            Err(ThumbnailError::Unsupported(_))
        ));
        assert!(matches!(
            thumbnail(truncated, 32, 32, Method::Crop, false, 1 << 30),
            Err(ThumbnailError::Unsupported(_))
        ));
        assert!(matches!(
            thumbnail(
                b"%PDF-1.4 not an image",
                32,
                32,
                Method::Crop,
                false,
                1 << 30
            ),
            Err(ThumbnailError::Unsupported(_))
        ));
        assert!(matches!(
            thumbnail(b"", 32, 32, Method::Crop, false, 1 << 30),
            Err(ThumbnailError::Unsupported(_))
        ));
    }

    /// A JPEG with an EXIF segment saying "rotate 90° clockwise" (orientation 6).
    fn jpeg_turned(width: u32, height: u32) -> Vec<u8> {
        let mut plain = Vec::new();
        DynamicImage::ImageRgb8(image::RgbImage::new(width, height))
            .write_to(&mut Cursor::new(&mut plain), ImageFormat::Jpeg)
            .unwrap();
        let mut exif = b"Exif\0\0MM\0*\0\0\0\x08".to_vec();
        exif.extend_from_slice(&[
            0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        let mut turned = plain[..2].to_vec();
        turned.extend_from_slice(&[0xFF, 0xE1]);
        turned.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
        turned.extend_from_slice(&exif);
        turned.extend_from_slice(&plain[2..]);
        turned
    }

    #[test]
    fn the_exif_orientation_is_applied_and_not_kept() {
        let turned = jpeg_turned(200, 100);
        let made = thumbnail(&turned, 1000, 1000, Method::Scale, false, 1 << 30).unwrap();
        assert_eq!((made.width, made.height), (100, 200));
        assert!(
            !made.bytes.windows(4).any(|window| window == b"Exif"),
            "metadata kept"
        );
    }

    #[test]
    fn animated_gifs_stay_animated_when_asked() {
        let mut bytes = Vec::new();
        {
            let mut encoder = GifEncoder::new(&mut bytes);
            let frames = (0..3).map(|i| {
                let buffer = RgbaImage::from_pixel(200, 100, image::Rgba([i * 80, 0, 0, 255]));
                Frame::new(buffer)
            });
            encoder.encode_frames(frames).unwrap();
        }
        let animated = thumbnail(&bytes, 96, 96, Method::Scale, true, 1 << 30).unwrap();
        assert_eq!(animated.content_type, "image/gif");
        assert_eq!((animated.width, animated.height), (96, 48));
        let decoder = GifDecoder::new(Cursor::new(&animated.bytes)).unwrap();
        assert_eq!(decoder.into_frames().count(), 3);
        let still = thumbnail(&bytes, 96, 96, Method::Scale, false, 1 << 30).unwrap();
        assert_eq!(still.content_type, "image/png");
    }
}
