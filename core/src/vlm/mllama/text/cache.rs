//! The decoder's key/value cache: self-attention keys and values grow by the tokens of each
//! call, cross-attention ones are projected once from the image states and reused, so one
//! more generated token costs one step.

use burn::tensor::Tensor;

/// Keys and values of one layer, `[batch, kv_heads, keys, head_dim]` (not yet repeated for
/// grouped-query attention).
#[derive(Debug, Clone)]
pub struct LayerKv {
    pub key: Tensor<4>,
    pub value: Tensor<4>,
}

/// One text decoder's cache; start empty with [`KvCache::new`] (or `default`) for each new
/// sequence.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// By layer index; `None` for cross-attention layers and before the first call.
    self_attention: Vec<Option<LayerKv>>,
    /// By layer index; the projected image states of each cross-attention layer.
    cross_attention: Vec<Option<CrossKv>>,
    /// Tokens seen so far: the position of the next one.
    seq_len: usize,
}

/// Cross-attention keys and values, with the vision tokens per tile they came from (to expand
/// a per-tile mask over them).
#[derive(Debug, Clone)]
pub struct CrossKv {
    pub kv: LayerKv,
    pub tokens_per_tile: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens processed so far.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Whether the image states of cross-attention layers are cached.
    pub fn has_cross_attention(&self) -> bool {
        self.cross_attention.iter().any(Option::is_some)
    }

    /// Forgets everything (a new sequence).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    pub(crate) fn ensure_layers(&mut self, layers: usize) {
        if self.self_attention.len() < layers {
            self.self_attention.resize(layers, None);
            self.cross_attention.resize(layers, None);
        }
    }

    /// Appends this call's keys and values of layer `layer` along the sequence and returns
    /// all of them.
    pub(crate) fn append(&mut self, layer: usize, key: Tensor<4>, value: Tensor<4>) -> LayerKv {
        let kv = match self.self_attention[layer].take() {
            Some(past) => LayerKv {
                key: Tensor::cat(vec![past.key, key], 2),
                value: Tensor::cat(vec![past.value, value], 2),
            },
            None => LayerKv { key, value },
        };
        self.self_attention[layer] = Some(kv.clone());
        kv
    }

    pub(crate) fn cross(&self, layer: usize) -> Option<&CrossKv> {
        self.cross_attention.get(layer).and_then(Option::as_ref)
    }

    pub(crate) fn set_cross(&mut self, layer: usize, kv: CrossKv) {
        self.cross_attention[layer] = Some(kv);
    }

    pub(crate) fn advance(&mut self, tokens: usize) {
        self.seq_len += tokens;
    }
}
