//! transformers' `MllamaImageProcessor`: the image is resized (aspect kept) onto the best
//! canvas of whole tiles among the supported tile arrangements, padded right and bottom, split
//! into tiles row-major, rescaled and normalised. Tiles past the image's own are zero.
//!
//! transformers 5 has two backends for this class: torchvision (the default when torchvision
//! is installed) and PIL (`MllamaImageProcessorPil`, its fallback, which made the fixture's
//! goldens). We follow the PIL backend bit for bit: Pillow's `ImagingResample` on 8-bit RGB
//! (22-bit fixed-point weights, two separable passes each rounded to 8 bits, in Pillow 13's
//! order), then numpy's `x * rescale_factor` in f64 cast to f32 and `(x - mean) / std` in f32.
//! torchvision's uint8 path uses the same filter weights quantised to 16 bits and always goes
//! horizontal first, so a resized pixel can differ by one level (1/127.5 after normalisation);
//! its fused `(x - 127.5) / 127.5` differs from ours by at most an f32 ulp.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use serde::{Deserialize, Deserializer};

use crate::weights::{FileSource, LoadError};

/// `size` in `preprocessor_config.json`: one tile's side (height == width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ImageSize {
    pub height: usize,
    pub width: usize,
}

/// `preprocessor_config.json` of a Mllama checkpoint, with transformers' field names and
/// `MllamaImageProcessor`'s defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct MllamaImageProcessor {
    /// The input is already an [`RgbImage`]; kept for the config's sake.
    #[serde(default = "yes")]
    pub do_convert_rgb: bool,
    /// transformers rejects `false` (the model needs whole tiles).
    #[serde(default = "yes")]
    pub do_resize: bool,
    #[serde(default = "default_size")]
    pub size: ImageSize,
    /// PIL's resampling code: 1 LANCZOS, 2 BILINEAR (the released model), 3 BICUBIC, 4 BOX,
    /// 5 HAMMING. 0 (NEAREST) is not supported.
    #[serde(default = "default_resample")]
    pub resample: u32,
    #[serde(default = "yes")]
    pub do_rescale: bool,
    #[serde(default = "default_rescale_factor")]
    pub rescale_factor: f64,
    #[serde(default = "yes")]
    pub do_normalize: bool,
    #[serde(default = "default_half", deserialize_with = "per_channel")]
    pub image_mean: [f64; 3],
    #[serde(default = "default_half", deserialize_with = "per_channel")]
    pub image_std: [f64; 3],
    /// transformers rejects `false`.
    #[serde(default = "yes")]
    pub do_pad: bool,
    #[serde(default = "default_max_image_tiles")]
    pub max_image_tiles: usize,
}

fn yes() -> bool {
    true
}
fn default_size() -> ImageSize {
    ImageSize {
        height: 224,
        width: 224,
    }
}
fn default_resample() -> u32 {
    2
}
fn default_rescale_factor() -> f64 {
    1.0 / 255.0
}
/// `IMAGENET_STANDARD_MEAN` / `_STD`.
fn default_half() -> [f64; 3] {
    [0.5; 3]
}
fn default_max_image_tiles() -> usize {
    4
}

/// `image_mean` / `image_std`: one number for all channels or one per channel.
fn per_channel<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[f64; 3], D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum PerChannel {
        One(f64),
        Three([f64; 3]),
    }
    Ok(match PerChannel::deserialize(deserializer)? {
        PerChannel::One(value) => [value; 3],
        PerChannel::Three(values) => values,
    })
}

/// One image, ready for the vision encoder.
#[derive(Debug, Clone)]
pub struct ProcessedImage {
    /// `[max_image_tiles, 3, tile, tile]`: the image's tiles row-major, then zero tiles.
    pub pixel_values: Tensor<4>,
    /// 1-based index of `tiles` in the supported aspect ratios (0 is batch padding).
    pub aspect_ratio_id: usize,
    /// `max_image_tiles` entries: true for the image's own tiles.
    pub aspect_ratio_mask: Vec<bool>,
    /// `tiles[0] * tiles[1]`.
    pub num_tiles: usize,
    /// `[rows, cols]` of tiles.
    pub tiles: [usize; 2],
    /// `[height, width]` of the tiled canvas in pixels (`tiles * tile`).
    pub canvas: [usize; 2],
    /// `[height, width]` of the resized image at the canvas' top left; the rest is padding.
    pub resized: [usize; 2],
}

/// An image the processor cannot tile.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("the image is empty ({width}x{height})")]
    EmptyImage { width: u32, height: u32 },
    #[error("no supported aspect ratio is given")]
    NoAspectRatios,
    #[error("aspect ratio {rows}x{cols} needs more than max_image_tiles = {max} tiles")]
    TooManyTiles {
        rows: usize,
        cols: usize,
        max: usize,
    },
}

impl MllamaImageProcessor {
    /// Reads `folder/preprocessor_config.json`, else the `image_processor` entry of
    /// `folder/processor_config.json` (transformers 5's layout), and checks it.
    pub fn load(folder: &Path) -> Result<Self, LoadError> {
        Self::from_source(&FileSource::Folder(folder))
    }

    /// [`load`](Self::load) from a folder or from files in memory.
    pub fn from_source(source: &FileSource<'_>) -> Result<Self, LoadError> {
        let (processor, name) = if source.has("preprocessor_config.json") {
            (
                source.json::<Self>("preprocessor_config.json")?,
                "preprocessor_config.json",
            )
        } else {
            #[derive(Deserialize)]
            struct ProcessorConfig {
                image_processor: MllamaImageProcessor,
            }
            let name = "processor_config.json";
            (source.json::<ProcessorConfig>(name)?.image_processor, name)
        };
        processor.check().map_err(|reason| LoadError::Config {
            path: source.path(name),
            reason,
        })?;
        Ok(processor)
    }

    /// transformers' `_validate_mllama_preprocess_arguments`, plus the filters we implement.
    pub fn check(&self) -> Result<(), String> {
        if !self.do_pad || !self.do_resize {
            return Err("Mllama needs do_pad and do_resize".into());
        }
        if self.size.height == 0 || self.size.height != self.size.width {
            return Err(format!(
                "size must be a non-empty square, got {}x{}",
                self.size.height, self.size.width
            ));
        }
        // Far above Mllama's 560 x 560 and 4 tiles: a larger request is refused before a
        // canvas is allocated for it.
        if self.size.height > 4096 {
            return Err(format!(
                "size {0}x{0} is out of range (tiles of at most 4096 pixels)",
                self.size.height
            ));
        }
        if self.max_image_tiles == 0 || self.max_image_tiles > 64 {
            return Err(format!(
                "max_image_tiles = {} is out of range (1 to 64)",
                self.max_image_tiles
            ));
        }
        if Resample::from_pil(self.resample).is_none() {
            return Err(format!("unsupported resample filter {}", self.resample));
        }
        if self.do_normalize && self.image_std.contains(&0.0) {
            return Err("image_std has a zero".into());
        }
        Ok(())
    }

    /// Tile side in pixels.
    pub fn tile_size(&self) -> usize {
        self.size.height
    }

    /// `image` squashed to one tile (`tile_size` x `tile_size`, aspect ratio not kept) with
    /// Pillow's bicubic filter, as the reference's Flickr30k and RLAIF-V datasets do
    /// (`image.resize((560, 560))`, Pillow's default filter) before the processor, so that every
    /// training sample is one tile. [`preprocess`](Self::preprocess) then keeps it as it is.
    pub fn squash(&self, image: &RgbImage) -> RgbImage {
        let tile = self.tile_size();
        let (width, height) = image.dimensions();
        if (width as usize, height as usize) == (tile, tile) {
            return image.clone();
        }
        let pixels = resample(
            image.as_raw(),
            [height as usize, width as usize],
            [tile, tile],
            Resample::Bicubic,
        );
        RgbImage::from_raw(tile as u32, tile as u32, pixels).expect("tile x tile x 3 bytes")
    }

    /// Tiles `image` as `MllamaImageProcessor` does. `supported_aspect_ratios` is the vision
    /// config's list of `[rows, cols]` (transformers builds the same list from
    /// `max_image_tiles`, see [`supported_aspect_ratios`]).
    pub fn preprocess(
        &self,
        image: &RgbImage,
        supported_aspect_ratios: &[[usize; 2]],
        device: &Device,
    ) -> Result<ProcessedImage, PreprocessError> {
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(PreprocessError::EmptyImage { width, height });
        }
        let (height, width) = (height as usize, width as usize);
        let tile = self.tile_size();
        let max = self.max_image_tiles;

        let canvas = optimal_tiled_canvas(height, width, supported_aspect_ratios, tile)
            .ok_or(PreprocessError::NoAspectRatios)?;
        let tiles = [canvas[0] / tile, canvas[1] / tile];
        let num_tiles = tiles[0] * tiles[1];
        if num_tiles > max {
            return Err(PreprocessError::TooManyTiles {
                rows: tiles[0],
                cols: tiles[1],
                max,
            });
        }
        let resized = image_size_fit_to_canvas(height, width, canvas[0], canvas[1], tile);
        // `check` accepted the code at load; fields are public, so fall back to bilinear.
        let filter = Resample::from_pil(self.resample).unwrap_or(Resample::Bilinear);
        let pixels = resample(image.as_raw(), [height, width], resized, filter);

        // Each channel maps 256 levels; padding is level 0 (normalised like any pixel).
        let levels: [[f32; 256]; 3] =
            std::array::from_fn(|c| std::array::from_fn(|v| self.level(v as u8, c)));
        let plane = tile * tile;
        let mut values = vec![0f32; max * 3 * plane];
        for row in 0..tiles[0] {
            for col in 0..tiles[1] {
                let base = (row * tiles[1] + col) * 3 * plane;
                for y in 0..tile {
                    let py = row * tile + y;
                    for x in 0..tile {
                        let px = col * tile + x;
                        let inside = py < resized[0] && px < resized[1];
                        for c in 0..3 {
                            let level = if inside {
                                pixels[(py * resized[1] + px) * 3 + c]
                            } else {
                                0
                            };
                            values[base + c * plane + y * tile + x] = levels[c][level as usize];
                        }
                    }
                }
            }
        }
        let pixel_values = Tensor::from_data(TensorData::new(values, [max, 3, tile, tile]), device);

        // The canvas came from this list, so the arrangement is in it.
        let aspect_ratio_id = supported_aspect_ratios
            .iter()
            .position(|&ratio| ratio == tiles)
            .map_or(0, |index| index + 1);
        // transformers always marks the first tile (its padding ratio is 1x1).
        let aspect_ratio_mask = (0..max).map(|i| i < num_tiles.max(1)).collect();
        Ok(ProcessedImage {
            pixel_values,
            aspect_ratio_id,
            aspect_ratio_mask,
            num_tiles,
            tiles,
            canvas,
            resized,
        })
    }

    /// A pixel level after rescale and normalise, in numpy's order and precisions
    /// (`image_transforms.rescale`: f64 product cast to f32; `normalize`: f32).
    fn level(&self, value: u8, channel: usize) -> f32 {
        let mut x = if self.do_rescale {
            (f64::from(value) * self.rescale_factor) as f32
        } else {
            f32::from(value)
        };
        if self.do_normalize {
            x = (x - self.image_mean[channel] as f32) / self.image_std[channel] as f32;
        }
        x
    }
}

/// transformers' `get_all_supported_aspect_ratios`: every `[a, b]` with `a * b <= max`, `a`
/// major. transformers names them (width, height) but uses them as `[rows, cols]`.
pub fn supported_aspect_ratios(max_image_tiles: usize) -> Vec<[usize; 2]> {
    let mut ratios = Vec::new();
    for a in 1..=max_image_tiles {
        for b in 1..=max_image_tiles {
            if a * b <= max_image_tiles {
                ratios.push([a, b]);
            }
        }
    }
    ratios
}

/// transformers' `get_optimal_tiled_canvas`: `[height, width]` of the canvas
/// (`[rows, cols] * tile`) needing the least upscaling, else the least downscaling; ties go to
/// the smallest area, then the first in the list. None for an empty list.
pub fn optimal_tiled_canvas(
    image_height: usize,
    image_width: usize,
    supported_aspect_ratios: &[[usize; 2]],
    tile_size: usize,
) -> Option<[usize; 2]> {
    let canvases: Vec<[usize; 2]> = supported_aspect_ratios
        .iter()
        .map(|&[rows, cols]| [rows * tile_size, cols * tile_size])
        .collect();
    // The scale that fits the image into each canvas (numpy's f64 division).
    let scales: Vec<f64> = canvases
        .iter()
        .map(|&[h, w]| {
            let scale_h = h as f64 / image_height as f64;
            let scale_w = w as f64 / image_width as f64;
            if scale_w > scale_h { scale_h } else { scale_w }
        })
        .collect();
    let upscale = scales
        .iter()
        .copied()
        .filter(|&s| s >= 1.0)
        .reduce(f64::min);
    let selected = match upscale {
        Some(scale) => scale,
        None => scales
            .iter()
            .copied()
            .filter(|&s| s < 1.0)
            .reduce(f64::max)?,
    };
    // First minimum area among the canvases with the selected scale (numpy's argmin).
    let mut best: Option<[usize; 2]> = None;
    for (canvas, &scale) in canvases.iter().zip(&scales) {
        if scale == selected && best.is_none_or(|b| canvas[0] * canvas[1] < b[0] * b[1]) {
            best = Some(*canvas);
        }
    }
    best
}

/// transformers' `get_image_size_fit_to_canvas`: `[height, width]` of the image scaled (aspect
/// kept) so each side is between `tile_size` and the canvas where it can be, never past the
/// canvas, and at least 1.
pub fn image_size_fit_to_canvas(
    image_height: usize,
    image_width: usize,
    canvas_height: usize,
    canvas_width: usize,
    tile_size: usize,
) -> [usize; 2] {
    // np.clip(x, lo, hi) = min(max(x, lo), hi)
    let target_width = image_width.max(tile_size).min(canvas_width);
    let target_height = image_height.max(tile_size).min(canvas_height);
    let scale_h = target_height as f64 / image_height as f64;
    let scale_w = target_width as f64 / image_width as f64;
    if scale_w < scale_h {
        let height = ((image_height as f64 * scale_w).floor() as usize).max(1);
        [height.min(target_height), target_width]
    } else {
        let width = ((image_width as f64 * scale_h).floor() as usize).max(1);
        [target_height, width.min(target_width)]
    }
}

/// Pillow's convolution filters (`Resample.c`), by PIL's resampling codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    Lanczos,
    Bilinear,
    Bicubic,
    Box,
    Hamming,
}

impl Resample {
    /// PIL's `Image.Resampling` value; NEAREST (0) is a different algorithm, not supported.
    pub fn from_pil(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Lanczos),
            2 => Some(Self::Bilinear),
            3 => Some(Self::Bicubic),
            4 => Some(Self::Box),
            5 => Some(Self::Hamming),
            _ => None,
        }
    }

    /// Radius of the kernel at scale 1.
    fn support(self) -> f64 {
        match self {
            Self::Box => 0.5,
            Self::Bilinear | Self::Hamming => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    fn kernel(self, x: f64) -> f64 {
        fn sinc(x: f64) -> f64 {
            if x == 0.0 {
                return 1.0;
            }
            let x = x * std::f64::consts::PI;
            x.sin() / x
        }
        match self {
            Self::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            Self::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // Pillow writes the constants as C floats.
                    x.sin() / x * (f64::from(0.54f32) + f64::from(0.46f32) * x.cos())
                }
            }
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// Pillow's fixed-point precision for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first input index, number of inputs, and `ksize` fixed-point weights.
struct Coefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i64>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a full-image box.
fn coefficients(in_size: usize, out_size: usize, filter: Resample) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    // Downscaling widens the kernel (antialiasing); upscaling keeps it.
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i64; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let inverse = 1.0 / filter_scale;
        // C's (int) casts truncate toward zero, as Rust's `as` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
        let (xmin, xmax) = (xmin as usize, xmax.max(0) as usize);
        let mut total = 0.0;
        for (x, w) in k.iter_mut().enumerate().take(xmax) {
            *w = filter.kernel(((x + xmin) as f64 - center + 0.5) * inverse);
            total += *w;
        }
        for (x, &w) in k.iter().enumerate().take(xmax) {
            let w = if total != 0.0 { w / total } else { w };
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if w < 0.0 {
                (-0.5 + fixed) as i64
            } else {
                (0.5 + fixed) as i64
            };
        }
        bounds.push((xmin, xmax));
    }
    Coefficients {
        ksize,
        bounds,
        weights,
    }
}

/// Pillow's `clip8`: drop the fraction (floor) and saturate.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `ImagingResample` of RGB bytes (HWC) from `[height, width]` `from` to `to`: two
/// separable passes, each rounded to 8 bits; a pass whose size does not change is skipped.
/// Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
/// pixels as the width (Pillow 12 and older always go horizontal first; the order changes a
/// few pixels by one level).
pub fn resample(pixels: &[u8], from: [usize; 2], to: [usize; 2], filter: Resample) -> Vec<u8> {
    let [in_h, in_w] = from;
    let [out_h, out_w] = to;
    let shrink_h = in_h as i64 - out_h as i64;
    let shrink_w = in_w as i64 - out_w as i64;
    let vertical_first = shrink_h > 0 && shrink_h > shrink_w * 2;
    if vertical_first {
        let tall = resample_vertical(pixels, in_w, in_h, out_h, filter);
        resample_horizontal(&tall, out_h, in_w, out_w, filter)
    } else {
        let wide = resample_horizontal(pixels, in_h, in_w, out_w, filter);
        resample_vertical(&wide, out_w, in_h, out_h, filter)
    }
}

/// One horizontal pass over `height` rows: `in_w` -> `out_w` pixels per row.
fn resample_horizontal(
    pixels: &[u8],
    height: usize,
    in_w: usize,
    out_w: usize,
    filter: Resample,
) -> Vec<u8> {
    if in_w == out_w {
        return pixels.to_vec();
    }
    let coeffs = coefficients(in_w, out_w, filter);
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; height * out_w * 3];
    for y in 0..height {
        let row = &pixels[y * in_w * 3..(y + 1) * in_w * 3];
        for (xx, &(xmin, xmax)) in coeffs.bounds.iter().enumerate() {
            let k = &coeffs.weights[xx * coeffs.ksize..xx * coeffs.ksize + xmax];
            for c in 0..3 {
                let sum = k.iter().enumerate().fold(half, |sum, (x, &w)| {
                    sum + i64::from(row[(xmin + x) * 3 + c]) * w
                });
                out[(y * out_w + xx) * 3 + c] = clip8(sum);
            }
        }
    }
    out
}

/// One vertical pass over rows of `width` pixels: `in_h` -> `out_h` rows.
fn resample_vertical(
    pixels: &[u8],
    width: usize,
    in_h: usize,
    out_h: usize,
    filter: Resample,
) -> Vec<u8> {
    if in_h == out_h {
        return pixels.to_vec();
    }
    let coeffs = coefficients(in_h, out_h, filter);
    let half = 1i64 << (PRECISION_BITS - 1);
    let stride = width * 3;
    let mut out = vec![0u8; out_h * stride];
    for (yy, &(ymin, ymax)) in coeffs.bounds.iter().enumerate() {
        let k = &coeffs.weights[yy * coeffs.ksize..yy * coeffs.ksize + ymax];
        for i in 0..stride {
            let sum = k.iter().enumerate().fold(half, |sum, (y, &w)| {
                sum + i64::from(pixels[(ymin + y) * stride + i]) * w
            });
            out[yy * stride + i] = clip8(sum);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{device, golden_i64, mllama_golden_path, mllama_tiny_dir};
    use crate::vlm::mllama::config::MllamaConfig;

    fn golden_f32(name: &str) -> (Vec<f32>, Vec<usize>) {
        let bytes = std::fs::read(mllama_golden_path()).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = tensors.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (values, view.shape().to_vec())
    }

    #[test]
    fn fixture_image_matches_transformers() {
        let dir = mllama_tiny_dir();
        let processor = MllamaImageProcessor::load(&dir).unwrap();
        let config = MllamaConfig::load(&dir).unwrap();
        let image = image::open(dir.join("image.png")).unwrap().to_rgb8();
        let out = processor
            .preprocess(
                &image,
                &config.vision_config.supported_aspect_ratios,
                &device(),
            )
            .unwrap();

        // 100x50 fits a 1x2 canvas (56x112) without resizing.
        assert_eq!(out.tiles, [1, 2]);
        assert_eq!(out.canvas, [56, 112]);
        assert_eq!(out.resized, [50, 100]);
        assert_eq!(out.num_tiles, 2);

        let (ids, _) = golden_i64(&mllama_golden_path(), "aspect_ratio_ids");
        assert_eq!(ids, vec![out.aspect_ratio_id as i64]);
        let (mask, _) = golden_i64(&mllama_golden_path(), "aspect_ratio_mask");
        let ours: Vec<i64> = out.aspect_ratio_mask.iter().map(|&m| m as i64).collect();
        assert_eq!(mask, ours);

        let (expected, shape) = golden_f32("pixel_values");
        assert_eq!(shape, vec![1, 1, 4, 3, 56, 56]);
        assert_eq!(out.pixel_values.dims(), [4, 3, 56, 56]);
        let actual: Vec<f32> = out.pixel_values.into_data().try_to_vec().unwrap();
        let error = actual
            .iter()
            .zip(&expected)
            .map(|(a, e)| (a - e).abs())
            .fold(0f32, f32::max);
        eprintln!("pixel_values: max abs error {error:e}");
        // Same integer resampler and the same f64/f32 arithmetic as the PIL backend: exact.
        assert_eq!(error, 0.0);
    }

    #[test]
    fn canvas_choice_matches_hand_computed_cases() {
        let ratios = supported_aspect_ratios(4);
        assert_eq!(
            ratios,
            vec![
                [1, 1],
                [1, 2],
                [1, 3],
                [1, 4],
                [2, 1],
                [2, 2],
                [3, 1],
                [4, 1]
            ]
        );
        // (height, width) -> canvas, resized, aspect ratio id.
        let cases = [
            // Tall: no canvas holds 300 rows, the tallest (4x1, scale 224/300) shrinks least.
            ((300, 50), [224, 56], [224, 37], 8),
            // Wide, mirrored: 1x4.
            ((50, 300), [56, 224], [37, 224], 4),
            // Square 100: only 2x2 upscales (1.12); kept at 100x100.
            ((100, 100), [112, 112], [100, 100], 6),
            // Small: 1x1 and the 2x1..4x1 tie at scale 1.4; the smallest area wins. The
            // image grows to the tile's width, 30 * 1.4 = 42 rows.
            ((30, 40), [56, 56], [42, 56], 1),
            // The fixture picture: 1x2, 1x3, 1x4, 2x2 tie at 1.12; 1x2 is smallest.
            ((50, 100), [56, 112], [50, 100], 2),
        ];
        for ((h, w), canvas, resized, id) in cases {
            let got = optimal_tiled_canvas(h, w, &ratios, 56).unwrap();
            assert_eq!(got, canvas, "canvas of {h}x{w}");
            assert_eq!(
                image_size_fit_to_canvas(h, w, got[0], got[1], 56),
                resized,
                "size of {h}x{w}"
            );
            let tiles = [got[0] / 56, got[1] / 56];
            assert_eq!(ratios.iter().position(|&r| r == tiles).unwrap() + 1, id);
        }
        assert_eq!(optimal_tiled_canvas(10, 10, &[], 56), None);
    }

    /// A noisy RGB test pattern both sides can generate (HWC bytes).
    fn pattern(height: usize, width: usize) -> Vec<u8> {
        let mut pixels = Vec::with_capacity(height * width * 3);
        for y in 0..height {
            for x in 0..width {
                for c in 0..3 {
                    pixels.push(((x * 37 + y * 91 + c * 53 + (x * y) % 17 * 11) % 256) as u8);
                }
            }
        }
        pixels
    }

    /// `train --image-fit squash`: the fixture image squashed to one tile gives the pixels
    /// transformers' processor gives the same image after `image.resize((56, 56))` (Pillow's
    /// default, bicubic), as the reference's Flickr30k and RLAIF-V datasets prepare it
    /// (tests/fixtures/make_training_fixtures.py).
    #[test]
    fn squashed_image_matches_transformers_on_a_pil_resized_image() {
        let dir = mllama_tiny_dir();
        let processor = MllamaImageProcessor::load(&dir).unwrap();
        let config = MllamaConfig::load(&dir).unwrap();
        let image = image::open(dir.join("image.png")).unwrap().to_rgb8();
        let squashed = processor.squash(&image);
        assert_eq!(squashed.dimensions(), (56, 56));
        let out = processor
            .preprocess(
                &squashed,
                &config.vision_config.supported_aspect_ratios,
                &device(),
            )
            .unwrap();
        assert_eq!(
            (out.tiles, out.resized, out.num_tiles),
            ([1, 1], [56, 56], 1)
        );

        let golden = dir.join("../training-tiny/golden.safetensors");
        let (ids, _) = golden_i64(&golden, "squashed_aspect_ratio_ids");
        assert_eq!(ids, vec![out.aspect_ratio_id as i64]);
        let bytes = std::fs::read(&golden).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = tensors.tensor("squashed_pixel_values").unwrap();
        assert_eq!(view.shape(), [4, 3, 56, 56]);
        let expected: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let ours: Vec<f32> = out.pixel_values.into_data().try_to_vec().unwrap();
        // Pillow's integer bicubic resampler reproduced bit for bit, then the same arithmetic.
        // (These values are the fixture's first generation; regenerated on another CPU,
        // PyTorch's normalisation moved 4,422 of them by one ulp.)
        assert_eq!(ours, expected);
    }

    #[test]
    fn resampling_matches_pillow() {
        // FNV-1a of `np.array(Image.fromarray(pattern).resize((ow, oh), resample))`, Pillow
        // 13.0.0. The first and the last two go vertical first.
        let cases = [
            (
                (300, 50),
                (224, 37),
                Resample::Bilinear,
                0x88571e259c726e22u64,
            ),
            ((50, 300), (37, 224), Resample::Bilinear, 0xc1f72412ca7ba936),
            ((30, 40), (42, 56), Resample::Bilinear, 0xc0e4a8ca2fa6ba40),
            ((123, 77), (56, 35), Resample::Bilinear, 0x829597c580a39641),
            ((123, 77), (250, 160), Resample::Bicubic, 0x516ce3e608d75363),
            ((64, 90), (37, 51), Resample::Lanczos, 0xcc644aad8e323ddc),
            ((64, 90), (37, 51), Resample::Hamming, 0x6d1c446c7397c437),
            ((64, 90), (100, 51), Resample::Box, 0xf0629afdb16bfee5),
            ((100, 40), (30, 90), Resample::Bilinear, 0xf0b3daf7968f1aec),
            ((100, 40), (30, 90), Resample::Bicubic, 0xdf6fa47127140513),
        ];
        for ((h, w), (oh, ow), filter, expected) in cases {
            let out = resample(&pattern(h, w), [h, w], [oh, ow], filter);
            assert_eq!(out.len(), oh * ow * 3);
            assert_eq!(
                crate::fnv::fnv1a64(&out),
                expected,
                "{h}x{w} -> {oh}x{ow} {filter:?}"
            );
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        let mut processor: MllamaImageProcessor = serde_json::from_str("{}").unwrap();
        assert_eq!(processor.size.height, 224);
        assert_eq!(processor.image_mean, [0.5; 3]);
        assert!(processor.check().is_ok());
        processor.resample = 0;
        assert!(processor.check().is_err());
        let scalar: MllamaImageProcessor =
            serde_json::from_str(r#"{"image_mean": 0.25, "size": {"height": 8, "width": 9}}"#)
                .unwrap();
        assert_eq!(scalar.image_mean, [0.25; 3]);
        assert!(scalar.check().is_err());
    }

    #[test]
    fn too_many_tiles_and_empty_images_are_errors() {
        let processor: MllamaImageProcessor =
            serde_json::from_str(r#"{"size": {"height": 8, "width": 8}, "max_image_tiles": 2}"#)
                .unwrap();
        let image = RgbImage::new(40, 10);
        let result = processor.preprocess(&image, &supported_aspect_ratios(4), &device());
        assert!(matches!(result, Err(PreprocessError::TooManyTiles { .. })));
        let result = processor.preprocess(&RgbImage::new(0, 3), &[[1, 1]], &device());
        assert!(matches!(result, Err(PreprocessError::EmptyImage { .. })));
    }
}
