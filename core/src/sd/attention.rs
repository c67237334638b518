//! Multi-head attention as diffusers' `Attention` in a `BasicTransformerBlock` (`to_q`, `to_k`,
//! `to_v` without bias, `to_out.0` with bias), and the capture of cross-attention
//! probabilities that the teacher recipe averages.

use burn::{
    nn::Linear,
    tensor::{Device, Tensor, activation::softmax},
};

use crate::{
    fused_attention::{Causal, fused_attention},
    weights::{LoadError, Weights},
};

/// Accumulates the softmax probabilities of the cross-attention layers whose query length
/// (the number of latent pixels, `res * res`) equals `query_len`: a running sum of the
/// per-layer head means, so memory stays `[batch, query_len, keys]` however many layers and
/// steps are recorded.
#[derive(Debug, Clone)]
pub struct AttentionCapture {
    query_len: usize,
    sum: Option<Tensor<3>>,
    count: usize,
}

impl AttentionCapture {
    /// Records layers whose maps are `res x res`.
    pub fn at_resolution(res: usize) -> Self {
        Self {
            query_len: res * res,
            sum: None,
            count: 0,
        }
    }

    /// Whether a layer with this many queries is recorded.
    pub fn wants(&self, query_len: usize) -> bool {
        query_len == self.query_len
    }

    /// Adds one layer's probabilities `[batch, heads, queries, keys]`.
    pub fn record(&mut self, probs: Tensor<4>) {
        let [batch, _, queries, keys] = probs.dims();
        let head_mean = probs.mean_dim(1).reshape([batch, queries, keys]);
        self.sum = Some(match self.sum.take() {
            Some(sum) => sum + head_mean,
            None => head_mean,
        });
        self.count += 1;
    }

    /// How many layer evaluations were recorded.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The mean over heads, layers and calls so far: `[batch, query_len, keys]`, or `None`
    /// when nothing matched.
    pub fn mean(&self) -> Option<Tensor<3>> {
        self.sum
            .clone()
            .map(|sum| sum.div_scalar(self.count as f32))
    }
}

/// diffusers `Attention` as used by SD v1.x transformer blocks.
#[derive(burn::module::Module, Debug)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    /// Loads `prefix.to_q`, `prefix.to_k`, `prefix.to_v`, `prefix.to_out.0`. `context_dim`
    /// is `query_dim` for self-attention.
    pub fn load(
        weights: &Weights,
        prefix: &str,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        device: &Device,
    ) -> Result<Self, LoadError> {
        let inner = heads * head_dim;
        Ok(Self {
            to_q: weights.linear(&format!("{prefix}.to_q"), query_dim, inner, false, device)?,
            to_k: weights.linear(&format!("{prefix}.to_k"), context_dim, inner, false, device)?,
            to_v: weights.linear(&format!("{prefix}.to_v"), context_dim, inner, false, device)?,
            to_out: weights.linear(
                &format!("{prefix}.to_out.0"),
                inner,
                query_dim,
                true,
                device,
            )?,
            heads,
            head_dim,
        })
    }

    /// `x`: `[batch, queries, query_dim]`; `context`: `[batch, keys, context_dim]`, or `None`
    /// for self-attention. Returns `[batch, queries, query_dim]`.
    ///
    /// When `capture` wants this layer, the probabilities are computed explicitly and
    /// recorded; otherwise Burn's fused attention runs.
    pub fn forward(
        &self,
        x: Tensor<3>,
        context: Option<Tensor<3>>,
        capture: Option<&mut AttentionCapture>,
    ) -> Tensor<3> {
        let [batch, queries, _] = x.dims();
        let context = context.unwrap_or_else(|| x.clone());
        let split = |t: Tensor<3>| {
            let [b, n, _] = t.dims();
            t.reshape([b, n, self.heads, self.head_dim]).swap_dims(1, 2)
        };
        let q = split(self.to_q.forward(x));
        let k = split(self.to_k.forward(context.clone()));
        let v = split(self.to_v.forward(context));
        let scale = (self.head_dim as f64).powf(-0.5);

        let out = match capture {
            Some(capture) if capture.wants(queries) => {
                let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
                let probs = softmax(scores, 3);
                capture.record(probs.clone());
                probs.matmul(v)
            }
            _ => fused_attention(q, k, v, None, Causal::No),
        };
        let out = out
            .swap_dims(1, 2)
            .reshape([batch, queries, self.heads * self.head_dim]);
        self.to_out.forward(out)
    }
}
