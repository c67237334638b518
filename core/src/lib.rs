//! `lavender-core`: the Lavender method ("Diffusion Instruction Tuning", arXiv 2502.06814)
//! on Burn. Backend-generic: every function takes tensors or a [`burn::tensor::Device`] and
//! never prints, reads files on its own account, or decides policy; the native CLI and the
//! web app own that.

pub mod probe;
