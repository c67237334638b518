//! The Mllama vision tower (transformers `MllamaVisionModel`) and the projector into the text
//! model (`multi_modal_projector`).
//!
//! Each image arrives as up to `max_num_tiles` square tiles. Every tile is cut into patches
//! (a conv without bias), gets a class token, tile- and position-embeddings chosen by the
//! image's aspect-ratio id, and is padded to a multiple of 8 tokens. The tiles of one image
//! then run *together* through the local `transformer` (whose chosen intermediate outputs are
//! kept) and the gated `global_transformer`; the output per token is the final state followed
//! by the intermediate states, interleaved as transformers stacks them.

mod embedding;
mod encoder;
mod projector;

use std::path::PathBuf;

use burn::{
    module::{Module, Param},
    nn::{LayerNorm, PaddingConfig2d, conv::Conv2d},
    tensor::{Bool, Device, Int, Tensor},
};

pub use embedding::{PrecomputedAspectRatioEmbedding, PrecomputedPositionEmbedding};
pub use encoder::{
    VisionActivation, VisionAttention, VisionEncoder, VisionEncoderLayer, VisionLayerShape,
    VisionMlp,
};
pub use projector::MultiModalProjector;

use super::config::MllamaVisionConfig;
use crate::weights::{LoadError, Weights};

/// transformers builds `layernorm_pre` / `layernorm_post` with `nn.LayerNorm`'s default eps,
/// not the config's `norm_eps`.
const OUTER_NORM_EPS: f64 = 1e-5;

/// `MllamaVisionModel`, loaded from the released key names under `prefix` (`vision_model`).
#[derive(Module, Debug)]
pub struct MllamaVisionModel {
    patch_embedding: Conv2d,
    /// `[hidden]`.
    class_embedding: Param<Tensor<1>>,
    gated_positional_embedding: PrecomputedPositionEmbedding,
    pre_tile_positional_embedding: PrecomputedAspectRatioEmbedding,
    post_tile_positional_embedding: PrecomputedAspectRatioEmbedding,
    layernorm_pre: LayerNorm,
    layernorm_post: LayerNorm,
    transformer: VisionEncoder,
    global_transformer: VisionEncoder,
    intermediate_layers_indices: Vec<usize>,
    image_size: usize,
    num_channels: usize,
    max_num_tiles: usize,
    heads: usize,
}

impl MllamaVisionModel {
    /// Loads every `prefix.*` tensor with the shapes `config` implies.
    pub fn from_weights(
        config: &MllamaVisionConfig,
        weights: &Weights,
        prefix: &str,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let config_error = |reason: String| LoadError::Config {
            path: PathBuf::from(prefix),
            reason,
        };
        let activation = VisionActivation::from_name(&config.hidden_act).ok_or_else(|| {
            config_error(format!(
                "unsupported vision hidden_act `{}`",
                config.hidden_act
            ))
        })?;
        if config.patch_size == 0 || !config.image_size.is_multiple_of(config.patch_size) {
            return Err(config_error(format!(
                "image_size {} is not a multiple of patch_size {}",
                config.image_size, config.patch_size
            )));
        }
        if config.attention_heads == 0 || !config.hidden_size.is_multiple_of(config.attention_heads)
        {
            return Err(config_error(format!(
                "hidden_size {} is not divisible by attention_heads {}",
                config.hidden_size, config.attention_heads
            )));
        }
        if let Some(bad) = config
            .intermediate_layers_indices
            .iter()
            .find(|&&i| i >= config.num_hidden_layers)
        {
            return Err(config_error(format!(
                "intermediate layer {bad} is past the {} vision layers",
                config.num_hidden_layers
            )));
        }

        let hidden = config.hidden_size;
        let patch = config.patch_size;
        // Ids start at 1 (one per supported aspect ratio); 0 is the padding id.
        let num_ids = config.supported_aspect_ratios.len() + 1;
        let tiles = config.max_num_tiles;
        let shape = VisionLayerShape {
            hidden_size: hidden,
            intermediate_size: config.intermediate_size,
            heads: config.attention_heads,
            norm_eps: config.norm_eps,
            activation,
        };
        let name = |field: &str| format!("{prefix}.{field}");

        let patch_weight = weights.param(
            &name("patch_embedding.weight"),
            [hidden, config.num_channels, patch, patch],
            device,
        )?;
        Ok(Self {
            patch_embedding: Conv2d {
                weight: patch_weight,
                bias: None,
                stride: [patch, patch],
                kernel_size: [patch, patch],
                dilation: [1, 1],
                groups: 1,
                padding: PaddingConfig2d::Valid,
            },
            class_embedding: weights.param(&name("class_embedding"), [hidden], device)?,
            gated_positional_embedding: PrecomputedPositionEmbedding::load(
                weights,
                &name("gated_positional_embedding"),
                num_ids,
                tiles,
                config.tokens_per_tile(),
                hidden,
                device,
            )?,
            pre_tile_positional_embedding: PrecomputedAspectRatioEmbedding::load(
                weights,
                &name("pre_tile_positional_embedding"),
                num_ids,
                tiles,
                hidden,
                device,
            )?,
            post_tile_positional_embedding: PrecomputedAspectRatioEmbedding::load(
                weights,
                &name("post_tile_positional_embedding"),
                num_ids,
                tiles,
                hidden,
                device,
            )?,
            layernorm_pre: weights.layer_norm(
                &name("layernorm_pre"),
                hidden,
                OUTER_NORM_EPS,
                device,
            )?,
            layernorm_post: weights.layer_norm(
                &name("layernorm_post"),
                hidden,
                OUTER_NORM_EPS,
                device,
            )?,
            transformer: VisionEncoder::load(
                weights,
                &name("transformer"),
                config.num_hidden_layers,
                shape,
                false,
                device,
            )?,
            global_transformer: VisionEncoder::load(
                weights,
                &name("global_transformer"),
                config.num_global_layers,
                shape,
                true,
                device,
            )?,
            intermediate_layers_indices: config.intermediate_layers_indices.clone(),
            image_size: config.image_size,
            num_channels: config.num_channels,
            max_num_tiles: tiles,
            heads: config.attention_heads,
        })
    }

    /// The processor's outputs in, the vision states out:
    ///
    /// - `pixel_values`: `[batch, images, max_num_tiles, channels, image_size, image_size]`
    /// - `aspect_ratio_ids`: `[batch, images]` (0 for a padding image)
    /// - `aspect_ratio_mask`: `[batch, images, max_num_tiles]`, 1 for real tiles
    ///
    /// Returns `[batch, images, max_num_tiles, tokens_per_tile, vision_output_dim]`.
    ///
    /// # Panics
    /// If the shapes do not match the config (the processor always produces these).
    pub fn forward(
        &self,
        pixel_values: Tensor<6>,
        aspect_ratio_ids: Tensor<2, Int>,
        aspect_ratio_mask: Tensor<3, Int>,
    ) -> Tensor<5> {
        let [batch, media, tiles, channels, height, width] = pixel_values.dims();
        assert!(
            tiles == self.max_num_tiles
                && channels == self.num_channels
                && height == self.image_size
                && width == self.image_size,
            "pixel_values {:?} do not match the vision config ({} tiles of {}x{}x{})",
            pixel_values.dims(),
            self.max_num_tiles,
            self.num_channels,
            self.image_size,
            self.image_size
        );
        assert_eq!(
            aspect_ratio_ids.dims(),
            [batch, media],
            "aspect_ratio_ids shape"
        );
        assert_eq!(
            aspect_ratio_mask.dims(),
            [batch, media, tiles],
            "aspect_ratio_mask shape"
        );
        let images = batch * media;
        let ids = aspect_ratio_ids.reshape([images]);

        // Patches: [images * tiles, patches, hidden].
        let patches = self.patch_embedding.forward(pixel_values.reshape([
            images * tiles,
            channels,
            height,
            width,
        ]));
        let [_, dim, rows, cols] = patches.dims();
        let num_patches = rows * cols;
        let x = patches
            .reshape([images * tiles, dim, num_patches])
            .swap_dims(1, 2);
        let x = self
            .pre_tile_positional_embedding
            .forward(x.reshape([images, tiles, num_patches, dim]), ids.clone());

        // Class token first in every tile.
        let class =
            self.class_embedding
                .val()
                .reshape([1, 1, dim])
                .expand([images * tiles, 1, dim]);
        let x = Tensor::cat(
            vec![class, x.reshape([images * tiles, num_patches, dim])],
            1,
        );
        let tokens = num_patches + 1;
        let x = self
            .gated_positional_embedding
            .forward(x.reshape([images, tiles, tokens, dim]), ids.clone());
        let x = self.layernorm_pre.forward(x);

        // Pad each tile to a multiple of 8 tokens.
        let padding = (8 - tokens % 8) % 8;
        let padded = tokens + padding;
        let x = if padding > 0 {
            let zeros = Tensor::zeros([images, tiles, padding, dim], &x.device());
            Tensor::cat(vec![x, zeros], 2)
        } else {
            x
        };
        let mask = self.attention_mask(aspect_ratio_mask.reshape([images, tiles]), tokens, padded);

        let (x, intermediate) = self.transformer.forward(
            x.reshape([images, tiles * padded, dim]),
            mask.clone(),
            &self.intermediate_layers_indices,
        );
        let x = self.layernorm_post.forward(x);
        let x = self
            .post_tile_positional_embedding
            .forward(x.reshape([images, tiles, padded, dim]), ids);
        let (x, _) =
            self.global_transformer
                .forward(x.reshape([images, tiles * padded, dim]), mask, &[]);
        let x = x.reshape([images, tiles, padded, dim]).narrow(2, 0, tokens);

        // transformers stacks the intermediate states on a new last axis, so feature
        // `d * k + j` is channel `d` of the `j`-th intermediate layer.
        let k = intermediate.len();
        let out = if k == 0 {
            x
        } else {
            let intermediate = Tensor::stack::<4>(intermediate, 3)
                .reshape([images, tiles, padded, dim * k])
                .narrow(2, 0, tokens);
            Tensor::cat(vec![x, intermediate], 3)
        };
        out.reshape([batch, media, tiles, tokens, dim * (1 + k)])
    }

    /// transformers' `_prepare_aspect_ratio_attention_mask`: a token is "padding" when its tile
    /// is masked or it is one of the pad tokens, and a score is dropped only when *both* query
    /// and key are padding. Real tokens thus still attend to padding (as in the reference);
    /// padding queries attend to real tokens only. The processor always keeps the first tile,
    /// so no row is fully dropped.
    ///
    /// `aspect_ratio_mask`: `[images, tiles]`. Returns `[images, heads, tiles * padded, tiles *
    /// padded]`, `true` where dropped.
    fn attention_mask(
        &self,
        aspect_ratio_mask: Tensor<2, Int>,
        tokens: usize,
        padded: usize,
    ) -> Tensor<4, Bool> {
        let [images, tiles] = aspect_ratio_mask.dims();
        let device = aspect_ratio_mask.device();
        let real_token = Tensor::<1, Int>::arange(0..padded as i64, &device)
            .lower_elem(tokens as i64)
            .float()
            .reshape([1, 1, padded]);
        let real = aspect_ratio_mask.float().reshape([images, tiles, 1]) * real_token;
        let padding = real.neg().add_scalar(1.0).reshape([images, tiles * padded]);
        let seq = tiles * padded;
        let both = padding.clone().reshape([images, seq, 1]) * padding.reshape([images, 1, seq]);
        both.greater_elem(0.5)
            .reshape([images, 1, seq, seq])
            .expand([images, self.heads, seq, seq])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        assert_close, device, golden_int, mllama_golden_path, mllama_tiny_dir as fixture,
    };
    use crate::vlm::mllama::config::MllamaConfig;

    fn golden() -> Weights {
        Weights::from_files(&[mllama_golden_path()]).unwrap()
    }

    fn vision_output(device: &Device) -> (MllamaConfig, Weights, Tensor<5>) {
        let config = MllamaConfig::load(&fixture()).unwrap();
        let weights = Weights::from_files(&[fixture().join("model.safetensors")]).unwrap();
        let model = MllamaVisionModel::from_weights(
            &config.vision_config,
            &weights,
            "vision_model",
            device,
        )
        .unwrap();
        let golden = golden();
        let pixel_values = golden
            .tensor::<6>("pixel_values", [1, 1, 4, 3, 56, 56], device)
            .unwrap();
        let output = model.forward(
            pixel_values,
            golden_int::<2>(&mllama_golden_path(), "aspect_ratio_ids", device),
            golden_int::<3>(&mllama_golden_path(), "aspect_ratio_mask", device),
        );
        (config, weights, output)
    }

    #[test]
    fn vision_output_matches_transformers() {
        let device = device();
        let (config, weights, output) = vision_output(&device);
        let expected = golden()
            .tensor::<5>("vision_output", [1, 1, 4, 17, 96], &device)
            .unwrap();
        assert_close("vision_output", output.clone(), expected, 1e-4);

        let projector = MultiModalProjector::from_weights(
            &weights,
            "multi_modal_projector",
            config.vision_config.vision_output_dim,
            config.text_config.hidden_size,
            &device,
        )
        .unwrap();
        let expected = golden()
            .tensor::<3>("cross_attention_states", [4, 17, 32], &device)
            .unwrap();
        assert_close(
            "cross_attention_states",
            projector.forward(output),
            expected,
            1e-4,
        );
    }

    #[test]
    fn bad_config_is_an_error() {
        let device = device();
        let mut config = MllamaConfig::load(&fixture()).unwrap().vision_config;
        let weights = Weights::from_files(&[fixture().join("model.safetensors")]).unwrap();
        config.hidden_act = "swish".into();
        let error = MllamaVisionModel::from_weights(&config, &weights, "vision_model", &device)
            .unwrap_err();
        assert!(error.to_string().contains("swish"), "{error}");

        // A wrong shape names the tensor.
        let mut config = MllamaConfig::load(&fixture()).unwrap().vision_config;
        config.intermediate_size = 65;
        let error = MllamaVisionModel::from_weights(&config, &weights, "vision_model", &device)
            .unwrap_err();
        assert!(error.to_string().contains("mlp.fc1.weight"), "{error}");
    }
}
