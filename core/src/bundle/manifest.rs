//! The manifest of a web bundle (`manifest.json`): format and version, every file's size and
//! SHA-256, the quantization, the image grid and the cross-attention layout; and the errors of
//! reading or writing a bundle.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    adapters::quant::QuantReport,
    align::aligner::{AlignerActivation, AlignerConfig, AlignerDepth},
    weights::LoadError,
};

/// `format` of every bundle manifest.
pub const BUNDLE_FORMAT: &str = "lavender-web-bundle";
/// The manifest layout this code writes and reads; a reader refuses other versions.
pub const BUNDLE_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
/// The largest `manifest.json` a reader accepts (an export's is a few KB; examples add about
/// 200 bytes each), so a hostile bundle cannot make a reader take in an endless manifest.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
pub const WEIGHTS_FILE: &str = "model.bpk";
/// Model-folder files a bundle carries as they are, when the folder has them (the first two
/// are required); they are what [`Mllama`] reads besides the weights.
pub const MODEL_FILES: [&str; 7] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "processor_config.json",
];

/// Why a bundle cannot be written or read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("{path} is missing (the manifest lists it, {expected} bytes)")]
    Missing { path: PathBuf, expected: u64 },
    #[error("{path} has {found} bytes, the manifest says {expected}: truncated or replaced")]
    Size {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path} is damaged or changed: its SHA-256 is {found}, the manifest says {expected}")]
    Digest {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path}: {reason}")]
    Weights { path: PathBuf, reason: String },
    /// An example's maps file that does not fit its manifest entry.
    #[error("{path}: {reason}")]
    Example { path: PathBuf, reason: String },
    /// An Aligner file that does not fit the model, or is no Aligner.
    #[error("{path}: {reason}")]
    Aligner { path: PathBuf, reason: String },
    /// Why an export failed; the caller says that it was an export.
    #[error("{0}")]
    Export(String),
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// [`BUNDLE_VERSION`].
    pub version: u32,
    /// `mllama`.
    pub model_type: String,
    /// Every other file of the bundle, by name.
    pub files: BTreeMap<String, FileEntry>,
    pub quantization: QuantReport,
    pub grid: GridInfo,
    pub cross_attention: CrossAttentionInfo,
    /// Example images with the teacher's word maps; their files are in `files` too. Absent
    /// from the manifests of bundles without examples (and of bundles written before them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<BundleExample>,
    /// The trained Aligner, for the explorer's aggregated maps; its file is in `files` too.
    /// Absent from the manifests of bundles without one (and of bundles written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aligner: Option<BundleAligner>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// Where the student's attention lands: the processor's tiling and the vision tower's patches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridInfo {
    /// Tile side in pixels.
    pub tile_size: usize,
    pub patch_size: usize,
    /// Patches per tile side (40 for the released model).
    pub patches_per_side: usize,
    /// Patches plus the class token.
    pub tokens_per_tile: usize,
    /// The processor's `max_image_tiles`.
    pub max_tiles: usize,
    /// Side of the per-word attention maps (the teacher's maps are 32 x 32).
    pub map_size: usize,
}

/// The text decoder's cross-attention layers, whose probabilities are the student's maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossAttentionInfo {
    pub layers: Vec<usize>,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// How the export stores the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleQuant {
    /// f32 as loaded.
    None,
    /// `Linear` weights Q8 symmetric per block (see [`quantize_q8`]); `block: None` picks it;
    /// `dense_lm_head` keeps the output projection f32 even when its width divides.
    Q8 {
        block: Option<u8>,
        dense_lm_head: bool,
    },
}

/// One example image shipped in a bundle with the SD teacher's word maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleExample {
    pub id: String,
    /// Bundle file name of the image (PNG), e.g. "example-<id>.png".
    pub image: String,
    /// The caption the teacher maps were extracted with.
    pub caption: String,
    /// Teacher words, in the order of the rows of the maps file.
    pub words: Vec<String>,
    /// Teacher map side S.
    pub side: usize,
    /// Bundle file name of the maps: a safetensors file with one f32 tensor "maps"
    /// [words, S, S] in [0, 1].
    pub maps: String,
}

/// The trained Aligner a bundle may carry; its tensors are in [`ALIGNER_FILE`](super::ALIGNER_FILE) (the names
/// `train` writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleAligner {
    /// Bundle file name of the tensors ([`ALIGNER_FILE`](super::ALIGNER_FILE)).
    pub file: String,
    /// Input channels: the model's cross-attention heads.
    pub heads: usize,
    /// Channels of its 3x3 convs.
    pub hidden: usize,
    /// "light" | "sim" | "deep" ([`AlignerDepth::id`]).
    pub depth: String,
    /// "relu6" | "leaky-relu" ([`AlignerActivation::id`]).
    pub activation: String,
}

impl BundleAligner {
    /// The configuration that loads the file; `Err` says which field holds an unknown name.
    pub fn config(&self) -> Result<AlignerConfig, String> {
        let depth = AlignerDepth::from_id(&self.depth).ok_or_else(|| {
            format!(
                "aligner depth `{}` is not light, sim or deep (written by a newer lavender?)",
                self.depth
            )
        })?;
        let activation = AlignerActivation::from_id(&self.activation).ok_or_else(|| {
            format!(
                "aligner activation `{}` is not relu6 or leaky-relu (written by a newer lavender?)",
                self.activation
            )
        })?;
        Ok(AlignerConfig::new(self.heads)
            .with_hidden(self.hidden)
            .with_depth(depth)
            .with_activation(activation))
    }
}
