//! The Mllama (Llama-3.2-Vision) text decoder: Llama 3 self-attention layers with gated
//! cross-attention layers to the image states interleaved (`cross_attention_layers`), a
//! key/value cache for generation, and the capture of the cross-attention probabilities
//! (text token -> vision token) that Lavender aligns with the teacher's maps.
//!
//! Keys are the released checkpoints' (`language_model.model.embed_tokens`,
//! `language_model.model.layers.N.*`, `language_model.model.norm`, `language_model.lm_head`).

pub mod cache;
pub mod cross_attention;
pub mod decode;
pub mod mlp;
pub mod rope;
pub mod sampler;
pub mod self_attention;

use std::path::PathBuf;

use burn::{
    module::Module,
    nn::{Embedding, Linear, RmsNorm},
    tensor::{Device, Int, Tensor},
};

pub use cache::KvCache;
pub use cross_attention::{CrossAttentionDecoderLayer, CrossAttentionMask};
pub use decode::{DecodeSession, logits_to_f32};
pub use sampler::Sampler;
pub use self_attention::SelfAttentionDecoderLayer;

use self::{mlp::rms_norm, rope::RotaryEmbedding};
use crate::{
    vlm::mllama::config::MllamaTextConfig,
    weights::{LoadError, Weights},
};

/// transformers makes the token table this many rows longer than `vocab_size`.
const EXTRA_EMBEDDINGS: usize = 8;

/// Query heads, key/value heads (grouped-query attention) and the head size.
#[derive(Debug, Clone, Copy)]
pub struct HeadShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl HeadShape {
    pub fn of(config: &MllamaTextConfig) -> Self {
        Self {
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim(),
        }
    }
}

/// `[batch, kv_heads, n, d]` -> `[batch, heads, n, d]`, each key/value head shared by
/// `heads / kv_heads` query heads in turn (transformers' `repeat_kv`).
pub(crate) fn repeat_kv(x: Tensor<4>, heads: usize) -> Tensor<4> {
    let [batch, kv_heads, n, d] = x.dims();
    if kv_heads == heads {
        return x;
    }
    x.unsqueeze_dim::<5>(2)
        .expand([batch, kv_heads, heads / kv_heads, n, d])
        .reshape([batch, heads, n, d])
}

/// Module paths include the variant name (`text.layers.1.CrossAttention.cross_attn...`), as
/// Burn's enum derive enters it.
#[derive(Module, Debug)]
// Not boxed: Burn implements `Module` for no `Box<T>`; the size difference is a few handles.
#[allow(clippy::large_enum_variant)]
enum DecoderLayer {
    SelfAttention(SelfAttentionDecoderLayer),
    CrossAttention(CrossAttentionDecoderLayer),
}

/// What [`MllamaTextModel::forward`] returns.
#[derive(Debug, Clone)]
pub struct TextOutput {
    /// `[batch, seq, vocab_size]` for the tokens of this call.
    pub logits: Tensor<3>,
    /// With `capture`: for each cross-attention layer that ran, its index and the softmax
    /// probabilities `[batch, heads, seq, vision tokens]` of this call's tokens.
    pub cross_attention: Vec<(usize, Tensor<4>)>,
}

/// transformers' `MllamaTextModel` plus the `lm_head` (`MllamaForCausalLM`'s decoder part).
#[derive(Module, Debug)]
pub struct MllamaTextModel {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    #[module(skip)]
    rope: RotaryEmbedding,
    vocab_size: usize,
}

impl MllamaTextModel {
    /// Loads `{prefix}.model.*` and `{prefix}.lm_head` (`prefix` is `language_model` in the
    /// released checkpoints).
    pub fn from_weights(
        config: &MllamaTextConfig,
        weights: &Weights,
        prefix: &str,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let config_error = |reason: String| LoadError::Config {
            path: PathBuf::from(format!("{prefix} text_config")),
            reason,
        };
        if config.hidden_act != "silu" {
            return Err(config_error(format!(
                "hidden_act `{}` is not supported (only silu)",
                config.hidden_act
            )));
        }
        let (theta, scaling) = config.rope();
        if let Some(kind) = scaling
            .as_ref()
            .map(|s| s.rope_type.as_str())
            .filter(|kind| !matches!(*kind, "default" | "llama3"))
        {
            return Err(config_error(format!("rope_type `{kind}` is not supported")));
        }

        let hidden = config.hidden_size;
        let model = format!("{prefix}.model");
        let embed_tokens = weights.embedding(
            &format!("{model}.embed_tokens"),
            config.vocab_size + EXTRA_EMBEDDINGS,
            hidden,
            device,
        )?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for index in 0..config.num_hidden_layers {
            let layer = format!("{model}.layers.{index}");
            layers.push(if config.cross_attention_layers.contains(&index) {
                DecoderLayer::CrossAttention(CrossAttentionDecoderLayer::load(
                    weights, &layer, config, device,
                )?)
            } else {
                DecoderLayer::SelfAttention(SelfAttentionDecoderLayer::load(
                    weights, &layer, config, device,
                )?)
            });
        }
        let lm_head_name = format!("{prefix}.lm_head");
        let lm_head =
            if config.tie_word_embeddings && !weights.contains(&format!("{lm_head_name}.weight")) {
                // Tied: the first vocab_size rows of the token table, as `[in, out]`.
                Linear {
                    weight: burn::module::Param::from_tensor(
                        embed_tokens
                            .weight
                            .val()
                            .narrow(0, 0, config.vocab_size)
                            .transpose(),
                    ),
                    bias: None,
                }
            } else {
                weights.linear(&lm_head_name, hidden, config.vocab_size, false, device)?
            };
        Ok(Self {
            embed_tokens,
            layers,
            norm: rms_norm(
                weights,
                &format!("{model}.norm.weight"),
                hidden,
                config.rms_norm_eps,
                device,
            )?,
            lm_head,
            rope: RotaryEmbedding::new(config.head_dim(), theta, scaling.as_ref()),
            vocab_size: config.vocab_size,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The indices of the cross-attention layers.
    pub fn cross_attention_layers(&self) -> Vec<usize> {
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, layer)| matches!(layer, DecoderLayer::CrossAttention(_)))
            .map(|(index, _)| index)
            .collect()
    }

    /// Runs `input_ids` `[batch, seq]`, continuing the sequence held in `cache` (start with an
    /// empty [`KvCache`]).
    ///
    /// - `cross_attention_states` `[num_tiles_total, tokens_per_tile, hidden]`: the projected
    ///   vision output of every tile of every image, in batch order. Given, they are projected
    ///   to keys/values and cached (replacing cached ones); `None` reuses the cache, and
    ///   without either the cross-attention layers are skipped (text only), as transformers
    ///   does.
    /// - `cross_attention_mask` `[batch, seq, images, tiles]`, 1 where a token sees a tile. It
    ///   may also cover the whole sequence so far (`cache.seq_len() + seq` rows); this call's
    ///   rows are used. Tokens with no tile keep an unmasked attention row and have the
    ///   layer's feed-forward zeroed (transformers' `full_text_row_masked_out_mask`).
    /// - `capture`: also return each cross-attention layer's probabilities (computed with an
    ///   explicit softmax; otherwise Burn's fused attention runs).
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        cross_attention_states: Option<Tensor<3>>,
        cross_attention_mask: Option<Tensor<4>>,
        cache: &mut KvCache,
        capture: bool,
    ) -> TextOutput {
        let (hidden, cross_attention) = self.hidden_states(
            input_ids,
            cross_attention_states,
            cross_attention_mask,
            cache,
            capture,
        );
        TextOutput {
            logits: self.lm_head.forward(hidden),
            cross_attention,
        }
    }

    /// The final-norm hidden states `[batch, seq, hidden]`, and the captured probabilities.
    pub fn hidden_states(
        &self,
        input_ids: Tensor<2, Int>,
        cross_attention_states: Option<Tensor<3>>,
        cross_attention_mask: Option<Tensor<4>>,
        cache: &mut KvCache,
        capture: bool,
    ) -> (Tensor<3>, Vec<(usize, Tensor<4>)>) {
        let [batch, seq] = input_ids.dims();
        let device = input_ids.device();
        let past = cache.seq_len();
        cache.ensure_layers(self.layers.len());
        let rope = self.rope.tables(past, seq, &device);
        let mask = cross_attention_mask.map(|mask| {
            let rows = mask.dims()[1];
            if rows == seq {
                mask
            } else {
                assert!(
                    rows >= past + seq,
                    "cross-attention mask has {rows} rows; the sequence has {} tokens",
                    past + seq
                );
                mask.narrow(1, past, seq)
            }
        });
        // Built at the first cross-attention layer, once the tokens per tile are known.
        let mut cross_mask: Option<CrossAttentionMask> = None;
        let mut captured = Vec::new();

        let mut x = self.embed_tokens.forward(input_ids);
        for (index, layer) in self.layers.iter().enumerate() {
            match layer {
                DecoderLayer::SelfAttention(layer) => {
                    x = layer.forward(x, &rope, index, cache);
                }
                DecoderLayer::CrossAttention(layer) => {
                    if let Some(states) = &cross_attention_states {
                        cache.set_cross(index, layer.cross_attn.key_values(states.clone(), batch));
                    }
                    let Some(kv) = cache.cross(index) else {
                        continue; // no image: text-only path
                    };
                    if cross_mask.is_none() {
                        cross_mask = mask
                            .clone()
                            .map(|mask| CrossAttentionMask::new(mask, kv.tokens_per_tile));
                    }
                    let (out, probs) = layer.forward(x, &kv.kv, cross_mask.as_ref(), capture);
                    x = out;
                    captured.extend(probs.map(|probs| (index, probs)));
                }
            }
        }
        cache.advance(seq);
        (self.norm.forward(x), captured)
    }

    /// Generates up to `max_new_tokens` after `prompt_ids` (one sequence), stopping after the
    /// first token in `stop_tokens` (which is returned). `cross_attention_mask`
    /// `[1, prompt_len, images, tiles]`; each new token repeats its last row, as transformers'
    /// `_update_model_kwargs_for_generation` does. The prompt runs once, then one cached step
    /// per token.
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        cross_attention_states: Option<Tensor<3>>,
        cross_attention_mask: Option<Tensor<4>>,
        max_new_tokens: usize,
        stop_tokens: &[u32],
        sampler: &Sampler,
    ) -> Vec<u32> {
        self.generate_streaming(
            prompt_ids,
            cross_attention_states,
            cross_attention_mask,
            max_new_tokens,
            stop_tokens,
            sampler,
            |_| {},
        )
    }

    /// [`Self::generate`], calling `on_token` with each token as soon as it is chosen (the CLI
    /// prints text as it comes).
    #[allow(clippy::too_many_arguments)]
    pub fn generate_streaming(
        &self,
        prompt_ids: &[u32],
        cross_attention_states: Option<Tensor<3>>,
        cross_attention_mask: Option<Tensor<4>>,
        max_new_tokens: usize,
        stop_tokens: &[u32],
        sampler: &Sampler,
        mut on_token: impl FnMut(u32),
    ) -> Vec<u32> {
        assert!(!prompt_ids.is_empty(), "generate needs a prompt");
        let mut session = DecodeSession::start(
            self,
            prompt_ids,
            cross_attention_states,
            cross_attention_mask,
            *sampler,
        );
        let mut generated = Vec::with_capacity(max_new_tokens);
        while generated.len() < max_new_tokens {
            let logits = logits_to_f32(session.next_logits().into_data());
            let next = session.choose(&logits);
            generated.push(next);
            on_token(next);
            if stop_tokens.contains(&next) || generated.len() == max_new_tokens {
                break;
            }
            session.push(next);
        }
        generated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        testing::{
            assert_close, device, golden_i64, mllama_golden_ids as golden_ids, mllama_golden_path,
            mllama_tiny_dir as fixture,
        },
        vlm::mllama::config::MllamaConfig,
    };
    use burn::tensor::TensorData;

    fn golden() -> Weights {
        Weights::from_files(&[mllama_golden_path()]).unwrap()
    }

    struct Inputs {
        model: MllamaTextModel,
        config: MllamaTextConfig,
        input_ids: Vec<u32>,
        states: Tensor<3>,
        mask: Tensor<4>,
        device: Device,
    }

    fn inputs() -> Inputs {
        let device = device();
        let config = MllamaConfig::load(&fixture()).unwrap().text_config;
        let weights = Weights::from_files(&[fixture().join("model.safetensors")]).unwrap();
        let model =
            MllamaTextModel::from_weights(&config, &weights, "language_model", &device).unwrap();
        let (mask, shape) = golden_i64(&mllama_golden_path(), "cross_attention_mask");
        let mask = Tensor::<4>::from_data(
            TensorData::new(
                mask.into_iter().map(|m| m as f32).collect::<Vec<_>>(),
                [shape[0], shape[1], shape[2], shape[3]],
            ),
            &device,
        );
        let states = golden()
            .tensor::<3>("cross_attention_states", [4, 17, 32], &device)
            .unwrap();
        Inputs {
            model,
            config,
            input_ids: golden_ids("input_ids"),
            states,
            mask,
            device,
        }
    }

    fn ids_tensor(ids: &[u32], device: &Device) -> Tensor<2, Int> {
        let data: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
        Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
    }

    #[test]
    fn logits_and_cross_attention_match_transformers() {
        let t = inputs();
        let seq = t.input_ids.len();
        let expected = golden()
            .tensor::<3>("logits", [1, seq, 374], &t.device)
            .unwrap();

        let fused = t.model.forward(
            ids_tensor(&t.input_ids, &t.device),
            Some(t.states.clone()),
            Some(t.mask.clone()),
            &mut KvCache::new(),
            false,
        );
        assert!(fused.cross_attention.is_empty());
        assert_close("logits", fused.logits, expected.clone(), 1e-4);

        let captured = t.model.forward(
            ids_tensor(&t.input_ids, &t.device),
            Some(t.states.clone()),
            Some(t.mask.clone()),
            &mut KvCache::new(),
            true,
        );
        assert_close("logits (capturing)", captured.logits, expected, 1e-4);
        let layers: Vec<usize> = captured.cross_attention.iter().map(|(i, _)| *i).collect();
        assert_eq!(layers, vec![1, 3]);
        for (index, probs) in captured.cross_attention {
            let name = format!("cross_attention.{index}");
            let expected = golden()
                .tensor::<4>(&name, [1, 4, seq, 68], &t.device)
                .unwrap();
            assert_close(&name, probs, expected, 1e-4);
        }
    }

    #[test]
    fn cached_steps_match_the_full_forward() {
        let t = inputs();
        let seq = t.input_ids.len();
        let full = t
            .model
            .forward(
                ids_tensor(&t.input_ids, &t.device),
                Some(t.states.clone()),
                Some(t.mask.clone()),
                &mut KvCache::new(),
                false,
            )
            .logits;
        // Prefill a prefix, then one token per call; the full mask is passed each time and
        // sliced to the call's rows.
        let prefix = 20;
        let mut cache = KvCache::new();
        let first = t.model.forward(
            ids_tensor(&t.input_ids[..prefix], &t.device),
            Some(t.states.clone()),
            Some(t.mask.clone()),
            &mut cache,
            false,
        );
        assert_close(
            "prefill logits",
            first.logits,
            full.clone().narrow(1, 0, prefix),
            1e-4,
        );
        for position in prefix..seq {
            let step = t.model.forward(
                ids_tensor(&t.input_ids[position..position + 1], &t.device),
                None,
                Some(t.mask.clone()),
                &mut cache,
                position == seq - 1,
            );
            assert_close(
                &format!("cached step {position}"),
                step.logits,
                full.clone().narrow(1, position, 1),
                1e-4,
            );
        }
        assert_eq!(cache.seq_len(), seq);
    }

    #[test]
    fn greedy_generation_matches_transformers() {
        let t = inputs();
        let expected = golden_ids("generated");
        let generated = t.model.generate(
            &t.input_ids,
            Some(t.states.clone()),
            Some(t.mask.clone()),
            expected.len(),
            &[],
            &Sampler::greedy(),
        );
        assert_eq!(generated, expected);

        let stopped = t.model.generate(
            &t.input_ids,
            Some(t.states.clone()),
            Some(t.mask.clone()),
            expected.len(),
            &t.config.stop_tokens(),
            &Sampler::greedy(),
        );
        assert_eq!(stopped, golden_ids("generated_stop"));
    }

    #[test]
    fn sampling_repeats_with_its_seed() {
        let t = inputs();
        let sampler = Sampler::new(1.0, 0.9, 42);
        let run = || {
            t.model.generate(
                &t.input_ids,
                Some(t.states.clone()),
                Some(t.mask.clone()),
                8,
                &[],
                &sampler,
            )
        };
        let first = run();
        assert_eq!(first.len(), 8);
        assert_eq!(first, run());
        assert!(first.iter().all(|&id| (id as usize) < t.model.vocab_size()));
    }

    #[test]
    fn text_only_skips_the_cross_attention_layers() {
        let t = inputs();
        let out = t.model.forward(
            ids_tensor(&t.input_ids, &t.device),
            None,
            None,
            &mut KvCache::new(),
            true,
        );
        assert!(out.cross_attention.is_empty());
        assert_eq!(out.logits.dims(), [1, t.input_ids.len(), 374]);
    }
}
