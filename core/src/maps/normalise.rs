//! What a word's map is on either side of the method: the mean of its rows, then min-max
//! normalised per map. The explorer can also scale a set of maps together
//! ([`Normalisation::Shared`], DAAM's view across words), so a word that draws little
//! attention looks faint beside one that draws much.

use std::{fmt, str::FromStr};

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

/// `(m - min) / (max - min + eps)` with one `min` and `max` over all maps of `[n, h, w]`.
pub fn min_max_shared(maps: Tensor<3>) -> Tensor<3> {
    let [n, h, w] = maps.dims();
    if n == 0 {
        return maps;
    }
    // All maps stacked as one tall map, normalised as any single map is.
    min_max_per_map(maps.reshape([1, n * h, w])).reshape([n, h, w])
}

/// How a set of maps is brought to `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalisation {
    /// Each map on its own: what training compares, and what shows each word's shape best.
    #[default]
    PerMap,
    /// One range over all of them: their strengths stay comparable.
    Shared,
}

impl Normalisation {
    pub const ALL: [Normalisation; 2] = [Normalisation::PerMap, Normalisation::Shared];

    /// Its name in requests and URLs: `per-map` or `shared`.
    pub fn id(self) -> &'static str {
        match self {
            Normalisation::PerMap => "per-map",
            Normalisation::Shared => "shared",
        }
    }

    /// `maps` `[n, h, w]` in `[0, 1]`.
    pub fn apply(self, maps: Tensor<3>) -> Tensor<3> {
        match self {
            Normalisation::PerMap => min_max_per_map(maps),
            Normalisation::Shared => min_max_shared(maps),
        }
    }
}

impl fmt::Display for Normalisation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Normalisation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Normalisation::ALL
            .into_iter()
            .find(|n| n.id() == text)
            .ok_or_else(|| format!("unknown normalisation `{text}` (per-map or shared)"))
    }
}

/// One map per entry of `members` from maps `[rows, h, w]`: the mean of the rows it lists, then
/// min-max normalised; `[members, h, w]`.
pub fn mean_rows_normalised(maps: Tensor<3>, members: &[Vec<usize>]) -> Tensor<3> {
    Normalisation::PerMap.apply(mean_rows(maps, members))
}

/// One map per entry of `members` from maps `[rows, h, w]`: the mean of the rows it lists;
/// `[members, h, w]`.
pub fn mean_rows(maps: Tensor<3>, members: &[Vec<usize>]) -> Tensor<3> {
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
    Tensor::cat(means, 0)
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

    /// One range over all maps: `[1, 3]` and `[-2, -2]` span -2..3, hand-computed.
    #[test]
    fn shared_normalisation_keeps_strengths_comparable() {
        let device = Device::flex();
        let maps = Tensor::<3>::from_floats([[[1.0, 3.0]], [[-2.0, -2.0]]], &device);
        let values: Vec<f32> = Normalisation::Shared
            .apply(maps)
            .into_data()
            .try_to_vec()
            .unwrap();
        let range = 5.0 + NORMALISE_EPS;
        let expected = [3.0 / range, 5.0 / range, 0.0, 0.0];
        for (v, e) in values.iter().zip(expected) {
            assert!((v - e).abs() < 1e-7, "{values:?}");
        }
        assert_eq!(
            Normalisation::Shared
                .apply(Tensor::<3>::zeros([0, 2, 2], &device))
                .dims(),
            [0, 2, 2]
        );
        for n in Normalisation::ALL {
            assert_eq!(n.id().parse::<Normalisation>(), Ok(n));
        }
        assert!("per-word".parse::<Normalisation>().is_err());
    }
}
