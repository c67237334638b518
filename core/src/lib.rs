//! `lavender-core`: the Lavender method ("Diffusion Instruction Tuning", arXiv 2502.06814)
//! on Burn. Backend-generic: every function takes tensors or a [`burn::tensor::Device`] and
//! never prints or decides policy; the native CLI and the web app own that.

/// LoRA adapters (PEFT files, applying and merging them) and weight quantization.
pub mod adapters;
/// The method: the student's attention on the image grid, the Aligner, word keying, the loss.
pub mod align;
/// The web bundle: a student and its extras as files a browser can load.
pub mod bundle;
/// A model written back as the checkpoint it was loaded from (names and layout recorded while
/// building it).
pub mod checkpoint;
/// Datasets, the teacher maps store and the training split.
pub mod data;
/// Scoring a student's answers to questions with known answers (`lavender eval`).
pub mod eval;
/// What the browser explorer shows: every word's map for a chosen layer, head or aggregation.
pub mod explore;
/// FNV-1a 64, the one non-cryptographic checksum (fixtures, checkpoints, dataset digests).
pub mod fnv;
/// Fused scaled-dot-product attention with the options every model here uses.
pub mod fused_attention;
/// Decoding images with their declared size checked first (decompression bombs).
pub mod images;
/// Per-word attention maps, the type every side speaks, and their grouping and normalisation.
pub mod maps;
/// A small attention computation that checks a backend works.
pub mod probe;
/// SplitMix64, the one seeded generator (sampling, data order).
pub mod rng;
/// The teacher: Stable Diffusion v1.x and its attention recipes.
pub mod sd;
/// A synthetic world of coloured shapes with a compositional out-of-distribution split: the
/// self-contained Lavender study's data.
pub mod shapes;
/// The students: vision-language models (Llama-3.2-Vision).
pub mod vlm;
/// Reading safetensors weights and model folders.
pub mod weights;

#[cfg(test)]
pub(crate) mod testing;
