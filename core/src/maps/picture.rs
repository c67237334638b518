//! Pictures of attention maps: each word's map as a heatmap over the image, in a labelled grid.
//! Used by `attend-sd` (the teacher) and later `attend` (the student), so a person can look at
//! what each model attends to.

use image::{ImageBuffer, Luma, Rgb, RgbImage, imageops::FilterType};

/// Side of one grid cell, in pixels.
const CELL: u32 = 256;
/// Height of the label strip above each cell.
const LABEL_HEIGHT: u32 = 22;
/// Heatmap opacity over the image.
const ALPHA: f32 = 0.55;

/// A grid of `words.len()` cells, each the image with that word's map (`side x side` values in
/// [0, 1], row-major, concatenated in `maps`) overlaid as a heatmap, labelled with the word.
pub fn overlay_grid(image: &RgbImage, words: &[String], maps: &[f32], side: usize) -> RgbImage {
    let count = words.len();
    let columns = count.clamp(1, 4) as u32;
    let rows = count.div_ceil(columns as usize).max(1) as u32;
    let mut grid = RgbImage::from_pixel(
        columns * CELL,
        rows * (CELL + LABEL_HEIGHT),
        Rgb([255, 255, 255]),
    );
    let background = image::imageops::resize(image, CELL, CELL, FilterType::Triangle);
    for (index, word) in words.iter().enumerate() {
        let map = &maps[index * side * side..(index + 1) * side * side];
        let cell = heatmap_overlay(&background, map, side);
        let (x, y) = (
            (index as u32 % columns) * CELL,
            (index as u32 / columns) * (CELL + LABEL_HEIGHT),
        );
        image::imageops::replace(&mut grid, &cell, x as i64, (y + LABEL_HEIGHT) as i64);
        draw_text(&mut grid, word, x + 4, y + 4, 2);
    }
    grid
}

/// `background` (`CELL x CELL`) with `map` (`side x side`, values in [0, 1]) upsampled
/// bilinearly and blended on top in the inferno colormap.
pub fn heatmap_overlay(background: &RgbImage, map: &[f32], side: usize) -> RgbImage {
    let map: ImageBuffer<Luma<f32>, Vec<f32>> =
        ImageBuffer::from_raw(side as u32, side as u32, map.to_vec())
            .expect("map has side^2 values");
    let (width, height) = background.dimensions();
    let map = image::imageops::resize(&map, width, height, FilterType::Triangle);
    RgbImage::from_fn(width, height, |x, y| {
        let under = background.get_pixel(x, y).0;
        let over = inferno(map.get_pixel(x, y).0[0]);
        Rgb(std::array::from_fn(|c| {
            (under[c] as f32 * (1.0 - ALPHA) + over[c] as f32 * ALPHA).round() as u8
        }))
    })
}

/// `cell` under a white strip with `text` (lower-cased; as much as fits), for grids of
/// labelled pictures of any cell size.
pub fn label_cell(cell: &RgbImage, text: &str) -> RgbImage {
    let (width, height) = cell.dimensions();
    let mut labelled = RgbImage::from_pixel(width, height + 20, Rgb([255, 255, 255]));
    image::imageops::replace(&mut labelled, cell, 0, 20);
    let fits = (width.saturating_sub(6) / 6) as usize;
    let text: String = text.to_lowercase().chars().take(fits).collect();
    draw_text(&mut labelled, &text, 3, 6, 1);
    labelled
}

/// The inferno colormap (matplotlib), linearly interpolated between five of its stops.
pub fn inferno(value: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [0.0, 0.0, 4.0],
        [87.0, 16.0, 110.0],
        [188.0, 55.0, 84.0],
        [249.0, 142.0, 9.0],
        [252.0, 255.0, 164.0],
    ];
    let position = if value.is_finite() {
        value.clamp(0.0, 1.0)
    } else {
        0.0
    } * 4.0;
    let low = (position.floor() as usize).min(3);
    let t = position - low as f32;
    std::array::from_fn(|c| (STOPS[low][c] * (1.0 - t) + STOPS[low + 1][c] * t).round() as u8)
}

/// Draws lower-case ASCII letters, digits, space, `:`, `-` and `'` in a 5x7 bitmap font, `scale`
/// pixels per dot;
/// other characters are drawn as `?`.
fn draw_text(canvas: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32) {
    let mut cursor = x;
    for ch in text.chars().take(((CELL - 8) / (6 * scale)) as usize) {
        for (column, bits) in glyph(ch).iter().enumerate() {
            for row in 0..7 {
                if bits >> row & 1 == 1 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let (px, py) =
                                (cursor + column as u32 * scale + dx, y + row * scale + dy);
                            if px < canvas.width() && py < canvas.height() {
                                canvas.put_pixel(px, py, Rgb([20, 20, 30]));
                            }
                        }
                    }
                }
            }
        }
        cursor += 6 * scale;
    }
}

/// Columns of a 5x7 glyph, bit 0 at the top.
fn glyph(ch: char) -> [u8; 5] {
    match ch.to_ascii_lowercase() {
        '0' => [0x3E, 0x51, 0x49, 0x45, 0x3E],
        '1' => [0x00, 0x42, 0x7F, 0x40, 0x00],
        '2' => [0x42, 0x61, 0x51, 0x49, 0x46],
        '3' => [0x21, 0x41, 0x45, 0x4B, 0x31],
        '4' => [0x18, 0x14, 0x12, 0x7F, 0x10],
        '5' => [0x27, 0x45, 0x45, 0x45, 0x39],
        '6' => [0x3C, 0x4A, 0x49, 0x49, 0x30],
        '7' => [0x01, 0x71, 0x09, 0x05, 0x03],
        '8' => [0x36, 0x49, 0x49, 0x49, 0x36],
        '9' => [0x06, 0x49, 0x49, 0x29, 0x1E],
        'a' => [0x20, 0x54, 0x54, 0x54, 0x78],
        'b' => [0x7F, 0x48, 0x44, 0x44, 0x38],
        'c' => [0x38, 0x44, 0x44, 0x44, 0x20],
        'd' => [0x38, 0x44, 0x44, 0x48, 0x7F],
        'e' => [0x38, 0x54, 0x54, 0x54, 0x18],
        'f' => [0x08, 0x7E, 0x09, 0x01, 0x02],
        'g' => [0x0C, 0x52, 0x52, 0x52, 0x3E],
        'h' => [0x7F, 0x08, 0x04, 0x04, 0x78],
        'i' => [0x00, 0x44, 0x7D, 0x40, 0x00],
        'j' => [0x20, 0x40, 0x44, 0x3D, 0x00],
        'k' => [0x7F, 0x10, 0x28, 0x44, 0x00],
        'l' => [0x00, 0x41, 0x7F, 0x40, 0x00],
        'm' => [0x7C, 0x04, 0x18, 0x04, 0x78],
        'n' => [0x7C, 0x08, 0x04, 0x04, 0x78],
        'o' => [0x38, 0x44, 0x44, 0x44, 0x38],
        'p' => [0x7C, 0x14, 0x14, 0x14, 0x08],
        'q' => [0x08, 0x14, 0x14, 0x18, 0x7C],
        'r' => [0x7C, 0x08, 0x04, 0x04, 0x08],
        's' => [0x48, 0x54, 0x54, 0x54, 0x20],
        't' => [0x04, 0x3F, 0x44, 0x40, 0x20],
        'u' => [0x3C, 0x40, 0x40, 0x20, 0x7C],
        'v' => [0x1C, 0x20, 0x40, 0x20, 0x1C],
        'w' => [0x3C, 0x40, 0x30, 0x40, 0x3C],
        'x' => [0x44, 0x28, 0x10, 0x28, 0x44],
        'y' => [0x0C, 0x50, 0x50, 0x50, 0x3C],
        'z' => [0x44, 0x64, 0x54, 0x4C, 0x44],
        '-' => [0x08, 0x08, 0x08, 0x08, 0x08],
        '\'' => [0x00, 0x05, 0x03, 0x00, 0x00],
        ' ' => [0x00; 5],
        ':' => [0x00, 0x36, 0x36, 0x00, 0x00],
        _ => [0x02, 0x01, 0x51, 0x09, 0x06],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colormap_ends_and_clamps() {
        assert_eq!(inferno(0.0), [0, 0, 4]);
        assert_eq!(inferno(1.0), [252, 255, 164]);
        assert_eq!(inferno(-3.0), inferno(0.0));
        assert_eq!(inferno(f32::NAN), inferno(0.0));
        assert_eq!(inferno(0.125), [44, 8, 57]);
    }

    /// The hot corner of a map is brighter in the overlay than the cold corner.
    #[test]
    fn overlay_follows_the_map() {
        let image = RgbImage::from_pixel(10, 10, Rgb([128, 128, 128]));
        let map = [1.0, 0.0, 0.0, 0.0];
        let grid = overlay_grid(
            &image,
            &["dog".to_string(), "ball".to_string()],
            &[map, map].concat(),
            2,
        );
        assert_eq!(grid.dimensions(), (2 * CELL, CELL + LABEL_HEIGHT));
        let hot = grid.get_pixel(2, LABEL_HEIGHT + 2).0;
        let cold = grid.get_pixel(CELL - 3, LABEL_HEIGHT + CELL - 3).0;
        assert!(
            hot.iter().map(|&c| c as u32).sum::<u32>()
                > cold.iter().map(|&c| c as u32).sum::<u32>()
        );
        // The label strip has dark text pixels.
        assert!((0..CELL).any(|x| grid.get_pixel(x, 8).0 == [20, 20, 30]));
    }
}
