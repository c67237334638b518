//! The student's per-token maps: every aligned layer's attention placed on the image grid
//! (heads as channels), combined into one map per text position by the Aligner or by maxima
//! (`docs/method.md`, "The Aligner"), then min-max normalised per position.

use std::{fmt, str::FromStr};

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::{
    aligner::Aligner,
    grid::{GridMode, attention_to_grid, legacy_attention_to_grid},
    student::TextToImageAttention,
};
use crate::maps::normalise::min_max_per_map;

/// How the layers' per-head maps become one map per position. Its stable ids
/// ([`Aggregation::id`], also its serde form) are `aligner-per-layer`, `mean-first` and
/// `max-max`: the browser explorer sends them as strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// The Aligner on each layer, then the mean over layers (the reference's default).
    #[default]
    AlignerPerLayer,
    /// The mean over layers, then the Aligner (`diffag_mean_layer`).
    MeanFirst,
    /// The maximum over heads, then over layers; no Aligner (`diffag_maxmax`).
    MaxMax,
}

impl Aggregation {
    pub const ALL: [Self; 3] = [Self::AlignerPerLayer, Self::MeanFirst, Self::MaxMax];

    /// The stable id: `aligner-per-layer`, `mean-first` or `max-max`.
    pub fn id(self) -> &'static str {
        match self {
            Self::AlignerPerLayer => "aligner-per-layer",
            Self::MeanFirst => "mean-first",
            Self::MaxMax => "max-max",
        }
    }

    /// Whether it runs the Aligner (all but [`Aggregation::MaxMax`]).
    pub fn needs_aligner(self) -> bool {
        self != Self::MaxMax
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// A string that is no [`Aggregation::id`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown aggregation `{0}`; expected aligner-per-layer, mean-first or max-max")]
pub struct UnknownAggregation(pub String);

impl FromStr for Aggregation {
    type Err = UnknownAggregation;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|aggregation| aggregation.id() == id)
            .ok_or_else(|| UnknownAggregation(id.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StudentMapsError {
    #[error("the student captured no cross-attention layer")]
    NoLayers,
    #[error("the `{0}` aggregation needs an Aligner")]
    NoAligner(Aggregation),
    #[error("the Aligner takes {aligner} heads, the attention has {attention}")]
    AlignerHeads { aligner: usize, attention: usize },
    #[error(
        "word `{word}` has token position {position}; its map is read at the position before \
         it, which must be within the sequence of {seq}"
    )]
    Position {
        word: String,
        position: usize,
        seq: usize,
    },
    #[error("word `{0}` has no token position")]
    NoPositions(String),
}

/// One layer's attention `[heads, seq, keys]` on the grid: `[seq, heads, size, size]`.
pub fn layer_grid(
    attention: Tensor<3>,
    geometry: &super::grid::TileGeometry,
    mode: GridMode,
    size: usize,
) -> Tensor<4> {
    let [heads, seq, keys] = attention.dims();
    let flat = attention.reshape([heads * seq, keys]);
    let grid = match mode {
        GridMode::Corrected => attention_to_grid(flat, geometry, size),
        GridMode::Legacy => {
            // The reference reads the valid tiles off the text's mask: the image's tiles.
            let valid = geometry.tiles[0] * geometry.tiles[1];
            let mask: Vec<bool> = (0..geometry.max_tiles).map(|t| t < valid).collect();
            legacy_attention_to_grid(flat, geometry, &mask, size)
        }
    };
    grid.reshape([heads, seq, size, size]).swap_dims(0, 1)
}

/// Per-position maps `[seq, size, size]`, each min-max normalised, from the attention of all
/// aligned layers. `aligner` is needed by the Aligner aggregations and must take as many
/// input channels as the layers have heads.
pub fn token_maps(
    attention: &TextToImageAttention,
    aligner: Option<&Aligner>,
    aggregation: Aggregation,
    mode: GridMode,
    size: usize,
) -> Result<Tensor<3>, StudentMapsError> {
    if attention.layers.is_empty() {
        return Err(StudentMapsError::NoLayers);
    }
    let grids: Vec<Tensor<4>> = attention
        .layers
        .iter()
        .map(|(_, probs)| layer_grid(probs.clone(), &attention.geometry, mode, size))
        .collect();
    let layers = grids.len();
    let [seq, heads, _, _] = grids[0].dims();
    if let Some(aligner) = aligner.filter(|_| aggregation.needs_aligner())
        && aligner.heads() != heads
    {
        // The conv would panic on the channel mismatch.
        return Err(StudentMapsError::AlignerHeads {
            aligner: aligner.heads(),
            attention: heads,
        });
    }
    let aligner = || aligner.ok_or(StudentMapsError::NoAligner(aggregation));
    let maps = match aggregation {
        Aggregation::AlignerPerLayer => {
            // One Aligner pass over all layers at once: instance norm is per sample anyway.
            let all = Tensor::cat(grids, 0);
            aligner()?
                .forward(all)
                .reshape([layers, seq, size, size])
                .mean_dim(0)
        }
        Aggregation::MeanFirst => {
            let mean = Tensor::stack::<5>(grids, 0)
                .mean_dim(0)
                .reshape([seq, heads, size, size]);
            aligner()?.forward(mean)
        }
        Aggregation::MaxMax => Tensor::stack::<5>(grids, 0)
            .max_dim(2)
            .max_dim(0)
            .reshape([seq, 1, size, size]),
    };
    Ok(min_max_per_map(maps.reshape([seq, size, size])))
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;
    use crate::{align::grid::TileGeometry, maps::normalise::NORMALISE_EPS, testing::device};

    /// 2 heads, 2 positions, one 1x1-tile of 2x2 patches; head 0 puts all on patch 0, head 1
    /// on patch 3; two layers, the second with the heads swapped.
    fn attention() -> TextToImageAttention {
        let layer = |first: usize, second: usize| {
            let mut values = vec![0.0f32; 2 * 2 * 5];
            for position in 0..2 {
                values[position * 5 + 1 + first] = 1.0; // head 0 (skip the class token)
                values[10 + position * 5 + 1 + second] = 1.0; // head 1
            }
            Tensor::<3>::from_data(TensorData::new(values, [2, 2, 5]), &device())
        };
        TextToImageAttention {
            layers: vec![(1, layer(0, 3)), (3, layer(3, 0))],
            geometry: TileGeometry {
                tokens_per_tile: 5,
                max_tiles: 1,
                tiles: [1, 1],
                tile_size: 28,
                resized: [28, 28],
            },
        }
    }

    #[test]
    fn max_max_takes_maxima_over_heads_and_layers() {
        let maps = token_maps(
            &attention(),
            None,
            Aggregation::MaxMax,
            GridMode::Corrected,
            2,
        )
        .unwrap();
        let values: Vec<f32> = maps.into_data().try_to_vec().unwrap();
        let one = 1.0 / (1.0 + NORMALISE_EPS);
        assert_eq!(values, vec![one, 0.0, 0.0, one, one, 0.0, 0.0, one]);
    }

    #[test]
    fn aggregations_have_stable_string_ids() {
        for (aggregation, id) in [
            (Aggregation::AlignerPerLayer, "aligner-per-layer"),
            (Aggregation::MeanFirst, "mean-first"),
            (Aggregation::MaxMax, "max-max"),
        ] {
            assert_eq!(aggregation.id(), id);
            assert_eq!(aggregation.to_string(), id);
            assert_eq!(id.parse::<Aggregation>(), Ok(aggregation));
            let json = serde_json::to_string(&aggregation).unwrap();
            assert_eq!(json, format!("\"{id}\""));
            assert_eq!(
                serde_json::from_str::<Aggregation>(&json).unwrap(),
                aggregation
            );
        }
        let error = "mean".parse::<Aggregation>().unwrap_err().to_string();
        assert!(error.contains("unknown aggregation `mean`"), "{error}");
    }

    #[test]
    fn an_aligner_of_other_heads_is_refused() {
        let aligner = crate::align::aligner::AlignerConfig::new(3)
            .with_hidden(4)
            .init(&device());
        for aggregation in [Aggregation::AlignerPerLayer, Aggregation::MeanFirst] {
            let result = token_maps(
                &attention(),
                Some(&aligner),
                aggregation,
                GridMode::Corrected,
                2,
            );
            assert!(
                matches!(
                    result,
                    Err(StudentMapsError::AlignerHeads {
                        aligner: 3,
                        attention: 2
                    })
                ),
                "{result:?}"
            );
        }
        // Max-max ignores it.
        token_maps(
            &attention(),
            Some(&aligner),
            Aggregation::MaxMax,
            GridMode::Corrected,
            2,
        )
        .unwrap();
    }

    #[test]
    fn aligner_aggregations_need_an_aligner() {
        for aggregation in [Aggregation::AlignerPerLayer, Aggregation::MeanFirst] {
            assert!(matches!(
                token_maps(&attention(), None, aggregation, GridMode::Corrected, 2),
                Err(StudentMapsError::NoAligner(_))
            ));
        }
    }
}
