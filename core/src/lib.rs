//! `lavender-core`: the Lavender method ("Diffusion Instruction Tuning", arXiv 2502.06814)
//! on Burn. Backend-generic: every function takes tensors or a [`burn::tensor::Device`] and
//! never prints or decides policy; the native CLI and the web app own that.

pub mod adapters;
pub mod align;
pub mod data;
pub mod maps;
pub mod probe;
pub mod sd;
pub mod vlm;
pub mod weights;

#[cfg(test)]
pub(crate) mod testing;
