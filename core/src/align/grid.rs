//! The student's text-to-image attention as 2-D maps. Mllama's cross-attention keys are, per
//! tile, one class token and `p x p` patches; the tiles cover a canvas of `rows x cols` tiles
//! in row-major order, and the image fills its top-left `resized` part (the rest is padding).
//! The map of a query is: drop the class tokens, lay the tiles out as the canvas, crop the
//! padding, resize bilinearly (half-pixel, as PyTorch's `align_corners=False`) to `S x S`.
//!
//! This replaces the reference code's 1-D resampling of the whole token axis, which shears the
//! map by about one column per row (see shared/docs/lavender-method.md §3.3).

use burn::tensor::{
    Tensor,
    module::interpolate,
    ops::{InterpolateMode, InterpolateOptions},
};

/// How an image's tiles were cut, from the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileGeometry {
    /// Key tokens per tile: `patches_per_side^2 + 1` (the class token first).
    pub tokens_per_tile: usize,
    /// Tiles in the key axis (the model's maximum; unused ones are padding).
    pub max_tiles: usize,
    /// `[rows, cols]` of real tiles.
    pub tiles: [usize; 2],
    /// Tile side in pixels.
    pub tile_size: usize,
    /// `[height, width]` of the image inside the canvas, in pixels.
    pub resized: [usize; 2],
}

impl TileGeometry {
    fn patches_per_side(&self) -> usize {
        ((self.tokens_per_tile - 1) as f64).sqrt().round() as usize
    }
}

/// `attention` `[n, max_tiles * tokens_per_tile]` (any `n` queries) -> `[n, size, size]`.
pub fn attention_to_grid(attention: Tensor<2>, geometry: &TileGeometry, size: usize) -> Tensor<3> {
    let [n, keys] = attention.dims();
    let TileGeometry {
        tokens_per_tile,
        max_tiles,
        tiles: [rows, cols],
        tile_size,
        resized,
    } = *geometry;
    assert_eq!(
        keys,
        max_tiles * tokens_per_tile,
        "attention keys do not match the tiles"
    );
    let p = geometry.patches_per_side();
    assert_eq!(
        p * p + 1,
        tokens_per_tile,
        "tokens per tile must be p^2 + 1"
    );
    let patches = attention
        .reshape([n, max_tiles, tokens_per_tile])
        .narrow(1, 0, rows * cols)
        .narrow(2, 1, p * p) // drop the class token
        .reshape([n, rows, cols, p, p])
        .swap_dims(2, 3) // [n, rows, p, cols, p]
        .reshape([n, rows * p, cols * p]);
    // The image covers `resized` pixels of the canvas: the patches that contain any of it.
    let patch_size = tile_size as f64 / p as f64;
    let keep_rows = ((resized[0] as f64 / patch_size).ceil() as usize).clamp(1, rows * p);
    let keep_cols = ((resized[1] as f64 / patch_size).ceil() as usize).clamp(1, cols * p);
    let cropped = patches.narrow(1, 0, keep_rows).narrow(2, 0, keep_cols);
    let resized = interpolate(
        cropped.reshape([n, 1, keep_rows, keep_cols]),
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([size, size]),
    );
    resized.reshape([n, size, size])
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;

    /// Two tiles side by side (1x2), 2x2 patches each, class tokens carrying the marker -1:
    /// the canvas is [[a0 a1 b0 b1], [a2 a3 b2 b3]] and no class token shows.
    #[test]
    fn tiles_are_laid_out_row_major_without_class_tokens() {
        let device = Device::flex();
        let tile = |base: f32| vec![-1.0, base, base + 1.0, base + 2.0, base + 3.0];
        let mut keys = [tile(0.0), tile(10.0)].concat();
        keys.extend(vec![-5.0; 10]); // two padding tiles
        let attention = Tensor::<2>::from_data(TensorData::new(keys, [1, 20]), &device);
        let geometry = TileGeometry {
            tokens_per_tile: 5,
            max_tiles: 4,
            tiles: [1, 2],
            tile_size: 28,
            resized: [28, 56],
        };
        let grid: Vec<f32> = attention_to_grid(attention, &geometry, 4)
            .into_data()
            .try_to_vec()
            .unwrap();
        // 2x4 canvas resized to 4x4: rows repeat (a 2x height upscale interpolates between them).
        assert_eq!(&grid[..4], &[0.0, 1.0, 10.0, 11.0]);
        assert_eq!(&grid[12..], &[2.0, 3.0, 12.0, 13.0]);
        assert!(
            grid.iter().all(|&v| v >= 0.0),
            "a class or padding token leaked: {grid:?}"
        );
    }

    /// Padding is cropped: an image filling the top half of a 1x1 canvas keeps the top patch row.
    #[test]
    fn padding_is_cropped() {
        let device = Device::flex();
        let attention = Tensor::<2>::from_data(
            TensorData::new(vec![0.0, 1.0, 2.0, 7.0, 7.0], [1, 5]),
            &device,
        );
        let geometry = TileGeometry {
            tokens_per_tile: 5,
            max_tiles: 1,
            tiles: [1, 1],
            tile_size: 28,
            resized: [14, 28],
        };
        let grid: Vec<f32> = attention_to_grid(attention, &geometry, 2)
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(grid, vec![1.0, 2.0, 1.0, 2.0]);
    }
}
