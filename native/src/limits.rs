//! Limits the whole command line shares: the largest image any command decodes
//! (`--max-image-pixels`, a global flag; see `lavender_core::images`).

use std::sync::atomic::{AtomicU64, Ordering};

use lavender_core::{data::ImageLoader, images::MAX_PIXELS};

static MAX_IMAGE_PIXELS: AtomicU64 = AtomicU64::new(MAX_PIXELS);

/// Sets the pixel limit for the rest of the process (from `--max-image-pixels`).
pub fn set_max_image_pixels(pixels: u64) {
    MAX_IMAGE_PIXELS.store(pixels, Ordering::Relaxed);
}

/// The largest image, in pixels, that a command decodes.
pub fn max_image_pixels() -> u64 {
    MAX_IMAGE_PIXELS.load(Ordering::Relaxed)
}

/// A dataset image loader with the process's pixel limit, warning of truncated JPEGs.
pub fn image_loader() -> ImageLoader {
    ImageLoader::with_max_pixels(max_image_pixels()).on_truncated_jpeg(|source| {
        tracing::warn!("{source}: {TRUNCATED_JPEG}");
    })
}

/// The warning for an image decoded from a JPEG that ends before its end-of-image marker.
pub const TRUNCATED_JPEG: &str = "the JPEG ends before its end-of-image marker (a truncated file?); the missing part decodes as grey";
