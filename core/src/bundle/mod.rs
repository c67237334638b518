//! Web bundles: a Llama-3.2-Vision student (adapter merged, weights optionally quantized) as a
//! handful of files a browser can fetch and load from bytes alone.
//!
//! A bundle holds `model.bpk` (Burn's burnpack: the only Burn format that stores quantized
//! tensors), the model folder's `config.json`, `tokenizer.json`, chat template and processor
//! files as they were, and `manifest.json`: format and version, each file's size and SHA-256,
//! the quantization, and the image grid and cross-attention layout the explorer needs before
//! it runs the model. A bundle may also carry example images with the Stable Diffusion
//! teacher's word maps ([`examples`]) and the trained Aligner
//! ([`aligner`]). Everything here works on bytes in memory;
//! reading and writing folders is the caller's (the CLI's; the browser fetches).

mod aligner;
mod examples;
mod export;
mod files;
mod load;
mod manifest;
#[cfg(test)]
mod tests;

pub use aligner::{ALIGNER_FILE, AlignerInput};
pub use examples::{EXAMPLE_MAX_SIDE, ExampleInput, MAPS_TENSOR};
pub use export::{BundleExtras, export_bundle, export_bundle_with, export_bundle_with_examples};
pub use files::{BundleFiles, is_plain_name, sha256_hex};
pub use load::quantized_param_count;
pub use manifest::{
    BUNDLE_FORMAT, BUNDLE_VERSION, BundleAligner, BundleError, BundleExample, BundleQuant,
    CrossAttentionInfo, FileEntry, GridInfo, MANIFEST_FILE, MAX_MANIFEST_BYTES, MODEL_FILES,
    Manifest, WEIGHTS_FILE,
};
