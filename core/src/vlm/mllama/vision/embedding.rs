//! The vision tower's learned position embeddings, selected by aspect-ratio id (transformers
//! `MllamaPrecomputedAspectRatioEmbedding` and `MllamaPrecomputedPositionEmbedding`).

use burn::{
    module::{Module, Param},
    tensor::{Device, Int, Tensor},
};

use crate::weights::{LoadError, Weights};

/// One embedding per tile, chosen by the image's aspect-ratio id and added to every token of
/// that tile, scaled by `tanh(gate)` (`pre_tile_positional_embedding`,
/// `post_tile_positional_embedding`).
#[derive(Module, Debug)]
pub struct PrecomputedAspectRatioEmbedding {
    /// `[max_aspect_ratio_id + 1, max_num_tiles * hidden]`.
    embedding: Param<Tensor<2>>,
    /// `[1]`, applied as `tanh(gate)`.
    gate: Param<Tensor<1>>,
    max_num_tiles: usize,
    hidden_size: usize,
}

impl PrecomputedAspectRatioEmbedding {
    /// Loads `prefix.embedding.weight` and `prefix.gate`. The released model gates both of its
    /// aspect-ratio embeddings, so the gate is required.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        num_aspect_ratio_ids: usize,
        max_num_tiles: usize,
        hidden_size: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            embedding: weights.param(
                &format!("{prefix}.embedding.weight"),
                [num_aspect_ratio_ids, max_num_tiles * hidden_size],
                device,
            )?,
            gate: weights.param(&format!("{prefix}.gate"), [1], device)?,
            max_num_tiles,
            hidden_size,
        })
    }

    /// `hidden`: `[images, max_num_tiles, tokens, hidden]`; `aspect_ratio_ids`: `[images]`.
    /// Returns the same shape.
    pub fn forward(&self, hidden: Tensor<4>, aspect_ratio_ids: Tensor<1, Int>) -> Tensor<4> {
        let [images] = aspect_ratio_ids.dims();
        let embeddings = self.embedding.val().select(0, aspect_ratio_ids).reshape([
            images,
            self.max_num_tiles,
            1,
            self.hidden_size,
        ]);
        hidden + embeddings * self.gate.val().tanh().reshape([1, 1, 1, 1])
    }
}

/// The per-token position embedding, blended with a per-(aspect ratio, tile, token) one by a
/// single gate: `(1 - tanh(gate)) * embedding + tanh(gate) * tile_embedding[id]`
/// (`gated_positional_embedding`).
#[derive(Module, Debug)]
pub struct PrecomputedPositionEmbedding {
    /// `[tokens_per_tile, hidden]`.
    embedding: Param<Tensor<2>>,
    /// `[max_aspect_ratio_id + 1, max_num_tiles * tokens_per_tile * hidden]`.
    tile_embedding: Param<Tensor<2>>,
    /// `[1]`, applied as `tanh(gate)`.
    gate: Param<Tensor<1>>,
    max_num_tiles: usize,
    tokens_per_tile: usize,
    hidden_size: usize,
}

impl PrecomputedPositionEmbedding {
    /// Loads `prefix.embedding`, `prefix.gate` and `prefix.tile_embedding.weight`.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        num_aspect_ratio_ids: usize,
        max_num_tiles: usize,
        tokens_per_tile: usize,
        hidden_size: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        Ok(Self {
            embedding: weights.param(
                &format!("{prefix}.embedding"),
                [tokens_per_tile, hidden_size],
                device,
            )?,
            tile_embedding: weights.param(
                &format!("{prefix}.tile_embedding.weight"),
                [
                    num_aspect_ratio_ids,
                    max_num_tiles * tokens_per_tile * hidden_size,
                ],
                device,
            )?,
            gate: weights.param(&format!("{prefix}.gate"), [1], device)?,
            max_num_tiles,
            tokens_per_tile,
            hidden_size,
        })
    }

    /// `hidden`: `[images, max_num_tiles, tokens_per_tile, hidden]`; `aspect_ratio_ids`:
    /// `[images]`. Returns the same shape.
    pub fn forward(&self, hidden: Tensor<4>, aspect_ratio_ids: Tensor<1, Int>) -> Tensor<4> {
        let [images] = aspect_ratio_ids.dims();
        let gate = self.gate.val().tanh().reshape([1, 1, 1, 1]);
        let position = self
            .embedding
            .val()
            .reshape([1, 1, self.tokens_per_tile, self.hidden_size]);
        let tile = self
            .tile_embedding
            .val()
            .select(0, aspect_ratio_ids)
            .reshape([
                images,
                self.max_num_tiles,
                self.tokens_per_tile,
                self.hidden_size,
            ]);
        hidden + position * (gate.clone().neg() + 1.0) + tile * gate
    }
}
