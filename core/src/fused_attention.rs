//! Scaled dot-product attention through Burn's fused kernel, with the options every model of
//! the project uses, so the choice is made and explained once.

use burn::tensor::{Bool, Tensor, module::attention, ops::AttentionModuleOptions};

/// Whether each query sees only the keys up to its own position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causal {
    /// Every query sees every key not blocked by the mask.
    No,
    /// Aligned bottom-right: with `k` keys and `q <= k` queries (new tokens after a cache),
    /// query `i` sees keys `0..=k - q + i`.
    Yes,
}

/// `softmax(q k^T / sqrt(head_dim)) v` for `q` `[batch, heads, queries, head_dim]` and `k`,
/// `v` `[batch, heads, keys, head_dim]` (as many heads as `q`: repeat grouped heads first);
/// `blocked` `[batch or 1, 1 or heads, queries, keys]` is true where a key must not be seen.
/// `[batch, heads, queries, head_dim]`.
///
/// The scale is left to Burn (`None` is `1/sqrt(head_dim)`, every model's scale here): the
/// CubeCL backends take their flash kernel only when no explicit scale is given.
pub fn fused_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    blocked: Option<Tensor<4, Bool>>,
    causal: Causal,
) -> Tensor<4> {
    attention(
        q,
        k,
        v,
        blocked,
        None,
        AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: causal == Causal::Yes,
        },
    )
}
