//! Drawing a word's map over the image in a `<canvas>`: the map (`size x size`, values in
//! [0, 1], stretched over the whole image as the grid placement crops it to the image)
//! upsampled bilinearly, coloured by the chosen colormap and blended at the chosen opacity.

use image::{ImageBuffer, Luma, RgbImage, imageops::FilterType};
use lavender_core::maps::picture::inferno;
use wasm_bindgen::{Clamped, JsCast};

use crate::js::describe;

/// Longest side of the drawn picture, in canvas pixels.
pub const DISPLAY_SIDE: u32 = 480;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Colormap {
    #[default]
    Inferno,
    Viridis,
    Gray,
}

impl Colormap {
    pub const ALL: [Colormap; 3] = [Self::Inferno, Self::Viridis, Self::Gray];

    pub fn id(self) -> &'static str {
        match self {
            Self::Inferno => "inferno",
            Self::Viridis => "viridis",
            Self::Gray => "gray",
        }
    }

    pub fn from_id(id: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|map| map.id() == id)
            .unwrap_or_default()
    }

    pub fn color(self, value: f32) -> [u8; 3] {
        let value = if value.is_finite() {
            value.clamp(0.0, 1.0)
        } else {
            0.0
        };
        match self {
            Self::Inferno => inferno(value),
            Self::Viridis => viridis(value),
            Self::Gray => [(value * 255.0).round() as u8; 3],
        }
    }
}

/// matplotlib's viridis, linearly interpolated between five of its stops.
fn viridis(value: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let position = value * 4.0;
    let low = (position.floor() as usize).min(3);
    let t = position - low as f32;
    std::array::from_fn(|c| (STOPS[low][c] * (1.0 - t) + STOPS[low + 1][c] * t).round() as u8)
}

/// `image` scaled so its longer side is [`DISPLAY_SIDE`].
pub fn display_image(image: &RgbImage) -> RgbImage {
    let (width, height) = image.dimensions();
    let scale = DISPLAY_SIDE as f32 / width.max(height).max(1) as f32;
    let size = |side: u32| ((side as f32 * scale).round() as u32).max(1);
    image::imageops::resize(image, size(width), size(height), FilterType::Triangle)
}

/// RGBA pixels of `base` with `map` (`side x side`) blended on top, or `base` alone.
pub fn blend(
    base: &RgbImage,
    map: Option<(&[f32], usize)>,
    opacity: f32,
    colormap: Colormap,
) -> Vec<u8> {
    let (width, height) = base.dimensions();
    let upsampled = map.map(|(values, side)| {
        let map: ImageBuffer<Luma<f32>, Vec<f32>> =
            ImageBuffer::from_raw(side as u32, side as u32, values.to_vec())
                .expect("a map has side^2 values");
        image::imageops::resize(&map, width, height, FilterType::Triangle)
    });
    let alpha = opacity.clamp(0.0, 1.0);
    let mut rgba = Vec::with_capacity((width * height * 4) as usize);
    for (x, y, pixel) in base.enumerate_pixels() {
        let under = pixel.0;
        let out = match &upsampled {
            Some(map) => {
                let over = colormap.color(map.get_pixel(x, y).0[0]);
                std::array::from_fn(|c| {
                    (under[c] as f32 * (1.0 - alpha) + over[c] as f32 * alpha).round() as u8
                })
            }
            None => under,
        };
        rgba.extend_from_slice(&[out[0], out[1], out[2], 255]);
    }
    rgba
}

/// Draws `rgba` (`width x height`) into `canvas`, resizing the canvas to it.
pub fn paint(
    canvas: &web_sys::HtmlCanvasElement,
    rgba: &[u8],
    width: u32,
    height: u32,
) -> Result<(), String> {
    canvas.set_width(width);
    canvas.set_height(height);
    let context: web_sys::CanvasRenderingContext2d = canvas
        .get_context("2d")
        .map_err(|error| describe(&error))?
        .ok_or("the canvas has no 2D context")?
        .unchecked_into();
    let data = web_sys::ImageData::new_with_u8_clamped_array_and_sh(Clamped(rgba), width, height)
        .map_err(|error| describe(&error))?;
    context
        .put_image_data(&data, 0.0, 0.0)
        .map_err(|error| describe(&error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormaps_span_dark_to_bright() {
        for map in Colormap::ALL {
            let dark: u32 = map.color(0.0).iter().map(|&c| u32::from(c)).sum();
            let bright: u32 = map.color(1.0).iter().map(|&c| u32::from(c)).sum();
            assert!(dark < bright, "{map:?}");
        }
    }

    #[test]
    fn blend_follows_the_map_and_opacity() {
        let base = RgbImage::from_pixel(4, 4, image::Rgb([100, 100, 100]));
        let plain = blend(&base, None, 0.5, Colormap::Gray);
        assert_eq!(&plain[..4], &[100, 100, 100, 255]);
        let hot = blend(&base, Some((&[1.0; 4], 2)), 1.0, Colormap::Gray);
        assert_eq!(&hot[..4], &[255, 255, 255, 255]);
    }
}
