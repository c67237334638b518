//! What a word's map is on either side of the method: the mean of its rows, then min-max
//! normalised per map.

use burn::tensor::{Int, Tensor, TensorData};

/// Added to the range in min-max normalisation so a flat map stays finite.
pub const NORMALISE_EPS: f32 = 1e-6;

/// `(m - min) / (max - min + eps)` per map of `[n, h, w]`.
pub fn min_max_per_map(maps: Tensor<3>) -> Tensor<3> {
    let [n, h, w] = maps.dims();
    let flat = maps.reshape([n, h * w]);
    let min = flat.clone().min_dim(1);
    let max = flat.clone().max_dim(1);
    let range = (max - min.clone()).add_scalar(NORMALISE_EPS);
    ((flat - min) / range).reshape([n, h, w])
}

/// One map per entry of `members` from maps `[rows, h, w]`: the mean of the rows it lists, then
/// min-max normalised; `[members, h, w]`.
pub fn mean_rows_normalised(maps: Tensor<3>, members: &[Vec<usize>]) -> Tensor<3> {
    let device = maps.device();
    let means: Vec<Tensor<3>> = members
        .iter()
        .map(|rows| {
            let indices = Tensor::<1, Int>::from_data(
                TensorData::new(
                    rows.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                    [rows.len()],
                ),
                &device,
            );
            maps.clone().select(0, indices).mean_dim(0)
        })
        .collect();
    if means.is_empty() {
        let [_, h, w] = maps.dims();
        return Tensor::zeros([0, h, w], &device);
    }
    min_max_per_map(Tensor::cat(means, 0))
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;

    #[test]
    fn each_map_is_normalised_on_its_own() {
        let device = Device::flex();
        let maps = Tensor::<3>::from_floats([[[1.0, 3.0]], [[-2.0, -2.0]]], &device);
        let values: Vec<f32> = min_max_per_map(maps).into_data().try_to_vec().unwrap();
        assert_eq!(values[0], 0.0);
        assert!((values[1] - 2.0 / (2.0 + NORMALISE_EPS)).abs() < 1e-7);
        assert_eq!(values[2..], [0.0, 0.0]);
    }
}
