//! Resampling as PyTorch computes it, for reproducing the reference code's attention grids:
//! 1-D linear interpolation (`F.interpolate(mode="linear", align_corners=False)`) and the
//! antialiased bilinear resize that torchvision's `Resize` applies to tensors
//! (`F.interpolate(mode="bilinear", align_corners=False, antialias=True)`, ATen's
//! `_upsample_bilinear2d_aa`). Burn's `interpolate` has no antialiasing.
//!
//! The antialiased resize is separable: each axis is resampled with a triangle (tent) filter
//! centred on the output pixel's centre in input coordinates. When downscaling by `s > 1` the
//! filter is stretched by `s` (support `s` input pixels either side, weights
//! `1 - |d| / s`), so every input pixel contributes, and the weights of an output pixel are
//! normalised to sum to one (which also renormalises at the borders). When upscaling, the filter
//! is the plain tent of support 1, which is ordinary half-pixel bilinear interpolation.

use burn::tensor::{Int, Tensor, TensorData};

/// The weights of one axis of PyTorch's antialiased bilinear resize, `[output][input]`
/// row-major: row `i` holds the contribution of every input sample to output sample `i`.
pub fn antialias_weights(input: usize, output: usize) -> Vec<f32> {
    assert!(input > 0 && output > 0, "cannot resize {input} -> {output}");
    // As ATen's `_compute_indices_min_size_weights_aa` (align_corners=False, no scale given).
    let scale = input as f64 / output as f64;
    let (support, inverse_scale) = if scale >= 1.0 {
        (scale, 1.0 / scale) // the tent of support 1, stretched by the downscale factor
    } else {
        (1.0, 1.0)
    };
    let tent = |x: f64| (1.0 - x.abs()).max(0.0);
    let mut weights = vec![0.0f32; output * input];
    for (i, row) in weights.chunks_exact_mut(input).enumerate() {
        let center = scale * (i as f64 + 0.5);
        // The window `[first, end)` of input samples; the casts truncate as ATen's do.
        let first = ((center - support + 0.5) as i64).max(0) as usize;
        let end = ((center + support + 0.5) as i64).clamp(0, input as i64) as usize;
        let taps: Vec<f64> = (first..end)
            .map(|j| tent((j as f64 - center + 0.5) * inverse_scale))
            .collect();
        let total: f64 = taps.iter().sum();
        let norm = if total != 0.0 { total } else { 1.0 };
        for (j, w) in (first..end).zip(taps) {
            row[j] = (w / norm) as f32;
        }
    }
    weights
}

/// The weights of one axis of PyTorch's plain bilinear resize (`align_corners=False`, no
/// antialiasing), `[output][input]` row-major: output sample `i` reads the input at
/// `max((i + 0.5) * input / output - 0.5, 0)`, between its two neighbours (the last repeated).
pub fn bilinear_weights(input: usize, output: usize) -> Vec<f32> {
    assert!(input > 0 && output > 0, "cannot resize {input} -> {output}");
    let scale = input as f64 / output as f64;
    let mut weights = vec![0.0f32; output * input];
    for (i, row) in weights.chunks_exact_mut(input).enumerate() {
        let source = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let low = (source.floor() as usize).min(input - 1);
        let high = (low + 1).min(input - 1);
        let fraction = (source - low as f64) as f32;
        row[low] += 1.0 - fraction;
        row[high] += fraction;
    }
    weights
}

/// A square `from x from` map resized to `to x to`: the separable bilinear resize of
/// [`bilinear_weights`] (rows, then columns).
pub fn resize_square(map: &[f32], from: usize, to: usize) -> Vec<f32> {
    let weights = bilinear_weights(from, to);
    // Rows: [to, from].
    let mut rows = vec![0f32; to * from];
    for (i, out) in rows.chunks_exact_mut(from).enumerate() {
        for (y, &w) in weights[i * from..(i + 1) * from].iter().enumerate() {
            if w != 0.0 {
                for (o, &v) in out.iter_mut().zip(&map[y * from..(y + 1) * from]) {
                    *o += w * v;
                }
            }
        }
    }
    // Columns: [to, to].
    let mut resized = vec![0f32; to * to];
    for (row, out) in rows.chunks_exact(from).zip(resized.chunks_exact_mut(to)) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = weights[j * from..(j + 1) * from]
                .iter()
                .zip(row)
                .map(|(w, v)| w * v)
                .sum();
        }
    }
    resized
}

/// `[n, height, width]` -> `[n, size[0], size[1]]`: PyTorch's
/// `F.interpolate(x[:, None], size, mode="bilinear", align_corners=False, antialias=True)`,
/// which is torchvision's `Resize(size)` on a float tensor. Separable: one matrix product per
/// axis with the [`antialias_weights`].
pub fn resize_bilinear_antialias(x: Tensor<3>, size: [usize; 2]) -> Tensor<3> {
    resize_separable(x, size, antialias_weights)
}

/// Resamples both axes with `[output][input]` weight matrices from `weights(input, output)`.
fn resize_separable(
    x: Tensor<3>,
    size: [usize; 2],
    weights: fn(usize, usize) -> Vec<f32>,
) -> Tensor<3> {
    let [n, height, width] = x.dims();
    let [out_height, out_width] = size;
    let device = x.device();
    let dtype = x.dtype();
    // Weights transposed to `[input, output]`, so that `values @ weights` resamples the last axis.
    let weights_t = |input: usize, output: usize| {
        let w = Tensor::<2>::from_data(
            TensorData::new(weights(input, output), [output, input]),
            (&device, dtype),
        );
        w.transpose()
    };
    // Along the width: [n * height, width] @ [width, out_width].
    let x = x
        .reshape([n * height, width])
        .matmul(weights_t(width, out_width))
        .reshape([n, height, out_width]);
    // Along the height, on the transposed maps: [n * out_width, height] @ [height, out_height].
    x.swap_dims(1, 2)
        .reshape([n * out_width, height])
        .matmul(weights_t(height, out_height))
        .reshape([n, out_width, out_height])
        .swap_dims(1, 2)
}

/// `[n, length]` -> `[n, output]`: PyTorch's
/// `F.interpolate(x[:, None], size=output, mode="linear", align_corners=False)`. Output sample
/// `i` reads the input at `max((i + 0.5) * length / output - 0.5, 0)`, between its two
/// neighbours (the last one repeated at the end).
pub fn resample_linear(x: Tensor<2>, output: usize) -> Tensor<2> {
    let [_, length] = x.dims();
    assert!(
        length > 0 && output > 0,
        "cannot resample {length} -> {output}"
    );
    let scale = length as f64 / output as f64;
    let mut left = Vec::with_capacity(output);
    let mut right = Vec::with_capacity(output);
    let mut right_weight = Vec::with_capacity(output);
    for i in 0..output {
        let source = (scale * (i as f64 + 0.5) - 0.5).max(0.0);
        let l = (source as usize).min(length - 1);
        left.push(l as i64);
        right.push((l + 1).min(length - 1) as i64);
        right_weight.push((source - l as f64) as f32);
    }
    let device = x.device();
    let dtype = x.dtype();
    let index =
        |values: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(values, [output]), &device);
    let right_weight =
        Tensor::<2>::from_data(TensorData::new(right_weight, [1, output]), (&device, dtype));
    let left_weight = right_weight.clone().neg().add_scalar(1.0);
    x.clone().select(1, index(left)) * left_weight + x.select(1, index(right)) * right_weight
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap()
    }

    fn assert_all_close(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len());
        for (a, e) in actual.iter().zip(expected) {
            assert!(
                (a - e).abs() <= 1e-6 * e.abs().max(1.0),
                "{actual:?} != {expected:?}"
            );
        }
    }

    /// 4 -> 2 halves: the tent stretched by 2 (support 2, weights 1 - |d| / 2) around the output
    /// centres 1 and 3. Output 0: inputs 0, 1, 2 at distances 0.5, 0.5, 1.5 -> 0.75, 0.75,
    /// 0.25, normalised by 1.75 -> 3/7, 3/7, 1/7 (input -1 would weigh 0.25 but is outside).
    /// Output 1 mirrors it: inputs 1, 2, 3 -> 1/7, 3/7, 3/7 (input 4 is outside).
    #[test]
    fn downscaling_by_two_weights_pairs_with_the_stretched_tent() {
        let w = antialias_weights(4, 2);
        let (a, b) = (3.0 / 7.0, 1.0 / 7.0);
        assert_all_close(&w, &[a, a, b, 0.0, 0.0, b, a, a]);

        let device = Device::flex();
        // A 4x4 map whose rows are 0, 10, 20, 30 and columns add 0, 1, 2, 3.
        let map: Vec<f32> = (0..16).map(|k| (k / 4 * 10 + k % 4) as f32).collect();
        let x = Tensor::<3>::from_data(TensorData::new(map, [1, 4, 4]), &device);
        let out = values(resize_bilinear_antialias(x, [2, 2]));
        // Along one axis 0, 1, 2, 3 -> (0*3 + 1*3 + 2) / 7 = 5/7 and (1 + 2*3 + 3*3) / 7 = 16/7.
        let (lo, hi) = (5.0 / 7.0, 16.0 / 7.0);
        assert_all_close(
            &out,
            &[
                lo * 10.0 + lo,
                lo * 10.0 + hi,
                hi * 10.0 + lo,
                hi * 10.0 + hi,
            ],
        );
    }

    /// Upscaling is plain half-pixel bilinear: 2 -> 4 reads the input at -0.25 (clamped into
    /// the first sample by the normalisation), 0.25, 0.75 and 1.25.
    #[test]
    fn upscaling_is_plain_bilinear() {
        let w = antialias_weights(2, 4);
        assert_all_close(&w, &[1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0]);
        let device = Device::flex();
        let x = Tensor::<3>::from_data(TensorData::new(vec![0.0f32, 4.0], [1, 1, 2]), &device);
        assert_all_close(
            &values(resize_bilinear_antialias(x, [1, 4])),
            &[0.0, 1.0, 3.0, 4.0],
        );
    }

    /// Same size is the identity, and any resize keeps a constant map constant.
    #[test]
    fn identity_and_constants_are_kept() {
        let device = Device::flex();
        let x = Tensor::<3>::from_data(
            TensorData::new((0..15).map(|v| v as f32).collect::<Vec<_>>(), [1, 3, 5]),
            &device,
        );
        assert_all_close(
            &values(resize_bilinear_antialias(x.clone(), [3, 5])),
            &values(x),
        );
        let ones = Tensor::<3>::ones([2, 41, 82], &device);
        let out = values(resize_bilinear_antialias(ones, [32, 32]));
        assert!(out.iter().all(|v| (v - 1.0).abs() < 1e-5));
    }

    /// torchvision 0.29's `Resize((32, 32))` on random grids of the student's sizes (41x41: a
    /// 560-pixel tile of 14-pixel patches; 40x40; two tiles side by side), from
    /// `tests/fixtures/make_lavender_fixtures.py`: every value within 1e-5.
    #[test]
    fn antialiased_resize_matches_torchvision() {
        let golden = crate::testing::lavender_golden();
        let device = Device::flex();
        for [height, width] in [[41, 41], [40, 40], [41, 82]] {
            let input = golden
                .tensor::<3>(
                    &format!("resize_input_{height}x{width}"),
                    [3, height, width],
                    &device,
                )
                .unwrap();
            let expected = values(
                golden
                    .tensor::<3>(
                        &format!("resize_output_{height}x{width}"),
                        [3, 32, 32],
                        &device,
                    )
                    .unwrap(),
            );
            let actual = values(resize_bilinear_antialias(input, [32, 32]));
            let worst = actual
                .iter()
                .zip(&expected)
                .map(|(a, e)| (a - e).abs())
                .fold(0.0f32, f32::max);
            assert!(worst <= 1e-5, "{height}x{width}: off by {worst}");
        }
    }

    /// 1-D linear, half-pixel: 3 -> 5 reads the input at 0 (clamped from -0.2), 0.4, 1, 1.6
    /// and 2.2 (the last sample repeated past the end).
    #[test]
    fn linear_resampling_matches_pytorch_positions() {
        let device = Device::flex();
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 10.0, 20.0], [1, 3]), &device);
        assert_all_close(
            &values(resample_linear(x, 5)),
            &[0.0, 4.0, 10.0, 16.0, 20.0],
        );
    }
}
