//! The student's text-to-image attention as 2-D maps. Mllama's cross-attention keys are, per
//! tile, one class token and `p x p` patches; the tiles cover a canvas of `rows x cols` tiles
//! in row-major order, and the image fills its top-left `resized` part (the rest is padding).
//! The map of a query is: drop the class tokens, lay the tiles out as the canvas, crop the
//! padding, resize to `S x S` as the reference does (torchvision's `Resize` on a tensor:
//! bilinear, half-pixel, antialiased when downscaling).
//!
//! This replaces the reference code's 1-D resampling of the whole token axis, which shears the map
//! by about one column per row (`docs/method.md`, "Student attention on the image grid"). That
//! mapping is kept, exactly, as [`legacy_attention_to_grid`] for reproducing the reference's
//! results.

use burn::tensor::Tensor;

use crate::maps::resize::{resample_linear, resize_bilinear_antialias};

/// Which placement of the attention on the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GridMode {
    /// Class tokens dropped, tiles by the processor's layout, padding cropped.
    #[default]
    Corrected,
    /// The reference code's 1-D resampling (sheared), for reproducing its numbers.
    Legacy,
}

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
    // The reference's torchvision `Resize` (antialiased: a 41x41 grid to 32x32 averages
    // neighbours instead of skipping them), as matrix products, which have a backward pass on
    // every backend.
    resize_bilinear_antialias(cropped, [size, size])
}

/// The reference code's mapping (Lavender's `diffag_xattn_manager.py`; `docs/method.md`),
/// kept to reproduce its results: `attention` `[n, max_tiles * tokens_per_tile]` -> `[n, size,
/// size]`. Only `tokens_per_tile` and `max_tiles` of `geometry` are read; `valid_tiles_mask`
/// (`[max_tiles]`, the text's cross-attention mask, max over the text) says which tiles hold
/// the image, and their count `n_t` picks the canvas.
///
/// 1. Each tile's whole token axis (class token included, `n_p = tokens_per_tile`) is resampled
///    linearly in 1-D (half-pixel) to `r * r` samples, `r = ceil(sqrt(n_p))`, and read
///    row-major as `r x r`. Patch rows are `p = sqrt(n_p - 1) < r` tokens long, so this shears
///    the map by about a column per row: the reference's bug, reproduced on purpose.
/// 2. Canvas: `n_t == 1`: tile 0 alone; `n_t == 2`: tiles 0 and 1 side by side (`r x 2r`; the
///    reference raises for any other mask with two tiles); otherwise `g x g` tiles
///    (`g = floor(sqrt(max_tiles))`, 2x2 for Mllama), tile `i` at `(i / g, i % g)` where the
///    mask is set and zero elsewhere. The tile layout and the padding are ignored.
/// 3. torchvision's `Resize((size, size))` on a tensor: bilinear with antialiasing
///    ([`resize_bilinear_antialias`]).
pub fn legacy_attention_to_grid(
    attention: Tensor<2>,
    geometry: &TileGeometry,
    valid_tiles_mask: &[bool],
    size: usize,
) -> Tensor<3> {
    let [n, keys] = attention.dims();
    let TileGeometry {
        tokens_per_tile,
        max_tiles,
        ..
    } = *geometry;
    assert_eq!(
        keys,
        max_tiles * tokens_per_tile,
        "attention keys do not match the tiles"
    );
    assert_eq!(
        valid_tiles_mask.len(),
        max_tiles,
        "the tile mask needs one entry per tile"
    );
    // ceil(sqrt(n_p)): the smallest r with r * r >= n_p.
    let r = (1..=tokens_per_tile)
        .find(|r| r * r >= tokens_per_tile)
        .expect("a tile has tokens");
    let tiles = resample_linear(attention.reshape([n * max_tiles, tokens_per_tile]), r * r)
        .reshape([n, max_tiles, r, r]);
    let tile = |index: usize| tiles.clone().narrow(1, index, 1).reshape([n, r, r]);
    let valid = valid_tiles_mask.iter().filter(|&&v| v).count();
    let canvas = if valid == 1 {
        tile(0)
    } else if valid == 2 {
        assert!(
            valid_tiles_mask[0] && valid_tiles_mask[1],
            "the reference places two tiles only as tiles 0 and 1 side by side, not {valid_tiles_mask:?}"
        );
        Tensor::cat(vec![tile(0), tile(1)], 2)
    } else {
        let grid = (1..=max_tiles)
            .take_while(|g| g * g <= max_tiles)
            .last()
            .unwrap_or(1);
        if let Some(outside) = (grid * grid..max_tiles).find(|&i| valid_tiles_mask[i]) {
            panic!("tile {outside} falls outside the reference's {grid}x{grid} canvas");
        }
        let rows = (0..grid)
            .map(|row| {
                let slots = (0..grid)
                    .map(|col| {
                        let index = row * grid + col;
                        if valid_tiles_mask[index] {
                            tile(index)
                        } else {
                            Tensor::zeros([n, r, r], (&tiles.device(), tiles.dtype()))
                        }
                    })
                    .collect();
                Tensor::cat(slots, 2)
            })
            .collect();
        Tensor::cat(rows, 1)
    };
    resize_bilinear_antialias(canvas, [size, size])
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;
    use crate::{
        testing::{assert_close, golden_int, mllama_tiny_dir},
        weights::Weights,
    };

    /// The tiny Mllama fixture's geometry: 4x4 patches + CLS per 56-pixel tile, up to 4 tiles,
    /// its 100x50 picture kept at 100x50 on a 1x2-tile canvas (no padding patch to crop).
    fn fixture_geometry() -> TileGeometry {
        TileGeometry {
            tokens_per_tile: 17,
            max_tiles: 4,
            tiles: [1, 2],
            tile_size: 56,
            resized: [50, 100],
        }
    }

    /// The head mean of golden `cross_attention.1` `[1, 4, 29, 68]`: `[29, 68]`.
    fn fixture_attention(golden: &Weights) -> Tensor<2> {
        let device = Device::flex();
        golden
            .tensor::<4>("cross_attention.1", [1, 4, 29, 68], &device)
            .unwrap()
            .mean_dim(1)
            .reshape([29, 68])
    }

    fn golden() -> Weights {
        Weights::from_files(&[mllama_tiny_dir().join("golden.safetensors")]).unwrap()
    }

    /// The reference's valid tiles as it reads them: the cross-attention mask, max over text.
    fn fixture_valid_tiles() -> Vec<bool> {
        let mask = golden_int::<4>(
            &mllama_tiny_dir().join("golden.safetensors"),
            "cross_attention_mask",
            &Device::flex(),
        );
        mask.max_dim(1)
            .into_data()
            .iter::<i64>()
            .map(|v| v != 0)
            .collect()
    }

    #[test]
    fn legacy_mapping_matches_the_reference() {
        let golden = golden();
        let valid = fixture_valid_tiles();
        assert_eq!(valid, vec![true, true, false, false]);
        let device = Device::flex();
        for (name, size) in [("legacy_grid.1", 32), ("legacy_grid_small.1", 3)] {
            let grid = legacy_attention_to_grid(
                fixture_attention(&golden),
                &fixture_geometry(),
                &valid,
                size,
            );
            let expected = golden.tensor(name, [29, size, size], &device).unwrap();
            assert_close(name, grid, expected, 1e-4);
        }
    }

    #[test]
    fn corrected_mapping_matches_torch() {
        let golden = golden();
        let grid = attention_to_grid(fixture_attention(&golden), &fixture_geometry(), 32);
        let expected = golden
            .tensor("corrected_grid.1", [29, 32, 32], &Device::flex())
            .unwrap();
        assert_close("corrected_grid.1", grid, expected, 1e-4);
    }

    /// The shear: a 2x2-patch tile (n_p = 5, r = 3) whose tokens are CLS, a0..a3 is resampled
    /// from 5 to 9 samples and read as 3x3; with no resize (size 3) the canvas comes back as
    /// is. One tile valid: tile 0 alone, the padding tiles ignored.
    #[test]
    fn legacy_mapping_keeps_the_class_token_and_resamples_in_1d() {
        let device = Device::flex();
        let mut keys = vec![0.0, 9.0, 18.0, 27.0, 36.0];
        keys.extend([-1.0; 5]);
        let attention = Tensor::<2>::from_data(TensorData::new(keys, [1, 10]), &device);
        let geometry = TileGeometry {
            tokens_per_tile: 5,
            max_tiles: 2,
            tiles: [1, 1],
            tile_size: 28,
            resized: [28, 28],
        };
        let grid: Vec<f32> = legacy_attention_to_grid(attention, &geometry, &[true, false], 3)
            .into_data()
            .try_to_vec()
            .unwrap();
        // 5 -> 9 half-pixel: source (i + 0.5) * 5/9 - 0.5, times 9 per token step.
        let expected: Vec<f32> = (0..9)
            .map(|i| {
                let source = ((i as f32 + 0.5) * 5.0 / 9.0 - 0.5).clamp(0.0, 4.0);
                source * 9.0
            })
            .collect();
        for (a, e) in grid.iter().zip(&expected) {
            assert!((a - e).abs() < 1e-4, "{grid:?} != {expected:?}");
        }
    }

    /// Three or four tiles go on the 2x2 canvas by their index, zeros where the mask is unset.
    #[test]
    fn legacy_mapping_places_tiles_on_a_two_by_two_canvas() {
        let device = Device::flex();
        // 1-token tiles (r = 1): the canvas is the tile values themselves.
        let attention =
            Tensor::<2>::from_data(TensorData::new(vec![1.0, 2.0, 3.0, 4.0], [1, 4]), &device);
        let geometry = TileGeometry {
            tokens_per_tile: 1,
            max_tiles: 4,
            tiles: [2, 2],
            tile_size: 14,
            resized: [28, 28],
        };
        let grid: Vec<f32> =
            legacy_attention_to_grid(attention, &geometry, &[true, true, false, true], 2)
                .into_data()
                .try_to_vec()
                .unwrap();
        assert_eq!(grid, vec![1.0, 2.0, 0.0, 4.0]);
    }

    #[test]
    #[should_panic(expected = "side by side")]
    fn legacy_mapping_refuses_two_tiles_elsewhere() {
        let device = Device::flex();
        let attention = Tensor::<2>::zeros([1, 4], &device);
        let geometry = TileGeometry {
            tokens_per_tile: 1,
            max_tiles: 4,
            tiles: [2, 1],
            tile_size: 14,
            resized: [28, 14],
        };
        legacy_attention_to_grid(attention, &geometry, &[false, true, true, false], 2);
    }

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
