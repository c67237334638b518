//! Decoding an image whose size is checked first: a small file can declare an enormous image
//! (a "decompression bomb": a 389 KB PNG declaring 20000 x 20000 pixels asks for 1.6 GB), so
//! the declared width and height are read from the header and an image beyond a pixel limit is
//! refused before any pixel is decoded. The default limit is PIL's (`Image.MAX_IMAGE_PIXELS`
//! is 89,478,485; PIL warns above it and refuses above twice it): [`MAX_PIXELS`].

use std::io::{BufRead, Cursor, Seek};
use std::path::Path;

use image::{DynamicImage, ImageReader};

/// Pixels above which an image is refused by default: twice PIL's `MAX_IMAGE_PIXELS`, where PIL
/// raises `DecompressionBombError` (about 13,400 x 13,400).
pub const MAX_PIXELS: u64 = 2 * 89_478_485;

/// Why an image could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "the image declares {width}x{height} = {pixels} pixels, more than the limit of {limit} \
         (a decompression bomb, or a genuinely huge image: raise the limit with --max-image-pixels)"
    )]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("cannot read the image: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot decode the image: {0}")]
    Decode(#[from] image::ImageError),
}

/// Decodes the image in `bytes` (format guessed from its content) if it has at most
/// `max_pixels` pixels.
pub fn decode_bytes(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, ImageError> {
    decode(|| Ok(Cursor::new(bytes)), max_pixels)
}

/// Decodes the image file at `path` (format guessed from its content) if it has at most
/// `max_pixels` pixels.
pub fn decode_file(path: &Path, max_pixels: u64) -> Result<DynamicImage, ImageError> {
    decode(
        || Ok(std::io::BufReader::new(std::fs::File::open(path)?)),
        max_pixels,
    )
}

/// Whether `bytes` are a JPEG cut short: they begin with the start-of-image marker but, trailing
/// zero padding aside, do not end with the end-of-image marker `FF D9`. The decoder fills what
/// is missing with grey and reports nothing (PIL raises "image file is truncated"), so callers
/// warn. Data appended after a complete JPEG also trips this: it is a reason to look, not an
/// error.
pub fn is_truncated_jpeg(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |last| last + 1);
    !bytes[..end].ends_with(&[0xFF, 0xD9])
}

/// [`is_truncated_jpeg`] of a file, reading only its first two and last 4 KiB bytes.
pub fn is_truncated_jpeg_file(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut head = [0u8; 2];
    if size < 2 {
        return Ok(false);
    }
    file.read_exact(&mut head)?;
    if head != [0xFF, 0xD8] {
        return Ok(false);
    }
    let tail_start = size.saturating_sub(4096).max(2);
    file.seek(SeekFrom::Start(tail_start))?;
    let mut tail = head.to_vec();
    file.read_to_end(&mut tail)?;
    Ok(is_truncated_jpeg(&tail))
}

/// Reads the header from one reader, then decodes from a fresh one with the allocation limit
/// set to what the checked size needs.
fn decode<R: BufRead + Seek>(
    open: impl Fn() -> std::io::Result<R>,
    max_pixels: u64,
) -> Result<DynamicImage, ImageError> {
    let (width, height) = ImageReader::new(open()?)
        .with_guessed_format()?
        .into_dimensions()?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ImageError::TooLarge {
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    let mut reader = ImageReader::new(open()?).with_guessed_format()?;
    let mut limits = image::Limits::default();
    // RGBA of 16-bit channels at most, with room for the decoder's own buffers.
    limits.max_alloc = Some(pixels.saturating_mul(8).saturating_mul(2).max(64 << 20));
    reader.limits(limits);
    Ok(reader.decode()?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PNG of `width` x `height` whose header says so but whose only image data is an
    /// empty deflate stream: what a decompression bomb's first bytes look like (every chunk's
    /// CRC is valid).
    pub(crate) fn bomb_header(width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = width.to_be_bytes().to_vec();
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &ihdr));
        png.extend(chunk(
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        ));
        png.extend(chunk(b"IEND", &[]));
        png
    }

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut body = kind.to_vec();
        body.extend(data);
        let mut crc = 0xffff_ffffu32;
        for &byte in &body {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out.extend((!crc).to_be_bytes());
        out
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::RgbImage::new(width, height)
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        bytes
    }

    #[test]
    fn huge_declared_sizes_are_refused_before_decoding() {
        let error = decode_bytes(&bomb_header(20_000, 20_000), MAX_PIXELS).unwrap_err();
        assert!(
            matches!(
                error,
                ImageError::TooLarge {
                    pixels: 400_000_000,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("--max-image-pixels"), "{error}");
        // Within the limit, the same truncated file is a decode error, not an allocation.
        let error = decode_bytes(&bomb_header(100, 100), MAX_PIXELS).unwrap_err();
        assert!(matches!(error, ImageError::Decode(_)), "{error}");
    }

    #[test]
    fn truncated_jpegs_are_recognised_and_still_decode() {
        let mut jpeg = Vec::new();
        image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90]))
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(!is_truncated_jpeg(&jpeg));
        let mut padded = jpeg.clone();
        padded.extend([0; 7]);
        assert!(!is_truncated_jpeg(&padded));
        let cut = &jpeg[..jpeg.len() * 2 / 3];
        assert!(is_truncated_jpeg(cut));
        assert!(!is_truncated_jpeg(&png(4, 4)));
        assert!(!is_truncated_jpeg(b""));
        // What the warning is about: the decoder accepts the cut file silently.
        let image = decode_bytes(cut, MAX_PIXELS).unwrap();
        assert_eq!((image.width(), image.height()), (64, 48));

        let dir = std::env::temp_dir().join(format!("lavender-jpeg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes, truncated) in [("whole.jpg", &jpeg[..], false), ("cut.jpg", cut, true)] {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            assert_eq!(is_truncated_jpeg_file(&path).unwrap(), truncated, "{name}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn images_within_the_limit_decode_and_the_limit_is_inclusive() {
        let image = decode_bytes(&png(40, 30), 1200).unwrap();
        assert_eq!((image.width(), image.height()), (40, 30));
        assert!(matches!(
            decode_bytes(&png(40, 30), 1199),
            Err(ImageError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_bytes(b"not an image", MAX_PIXELS),
            Err(ImageError::Decode(_))
        ));
        let missing = decode_file(Path::new("/nonexistent/x.png"), MAX_PIXELS).unwrap_err();
        assert!(matches!(missing, ImageError::Io(_)), "{missing}");
    }
}
