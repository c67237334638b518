//! Writing a bundle: the student's weights quantized and saved as burnpack, its model files,
//! the extras (examples, Aligner) and the manifest.

use std::path::PathBuf;

use burn::store::{BurnpackStore, ModuleSnapshot};

use super::{
    aligner::{AlignerInput, aligner_entry},
    examples::{ExampleInput, example_files},
    files::{BundleFiles, sha256_hex},
    manifest::*,
};
use crate::{
    adapters::quant::{QuantReport, quantize_q8},
    vlm::mllama::student::Mllama,
    weights::{FileSource, LoadError},
};

/// The bundle of `student` (its adapter already merged): its weights quantized as `quant` and
/// saved as burnpack, the model files of `source` (the folder it was loaded from), and the
/// manifest. `map_size` is recorded for the explorer.
pub fn export_bundle(
    student: Mllama,
    source: &FileSource<'_>,
    quant: BundleQuant,
    map_size: usize,
) -> Result<(BundleFiles, Manifest), BundleError> {
    export_bundle_with_examples(student, source, quant, map_size, &[])
}

/// [`export_bundle`] with `examples`: each one's image (as PNG) and teacher maps become bundle
/// files, listed in the manifest's `files` and described in its `examples`. The examples are
/// checked before the weights are touched, so a bad one fails the export early.
pub fn export_bundle_with_examples(
    student: Mllama,
    source: &FileSource<'_>,
    quant: BundleQuant,
    map_size: usize,
    examples: &[ExampleInput],
) -> Result<(BundleFiles, Manifest), BundleError> {
    let extras = BundleExtras {
        examples,
        aligner: None,
    };
    export_bundle_with(student, source, quant, map_size, &extras)
}

/// What a bundle may carry besides the model.
#[derive(Debug, Clone, Copy, Default)]
pub struct BundleExtras<'a> {
    /// Example images with the teacher's maps ([`export_bundle_with_examples`]).
    pub examples: &'a [ExampleInput],
    /// A training run's Aligner, stored as [`ALIGNER_FILE`] and described in the manifest's
    /// `aligner`. Its input channels must be the model's cross-attention heads; its depth and
    /// width are read off its tensors.
    pub aligner: Option<&'a AlignerInput>,
}

/// [`export_bundle`] with `extras`. Examples and Aligner are checked before the weights are
/// touched, so a bad one fails the export early.
pub fn export_bundle_with(
    student: Mllama,
    source: &FileSource<'_>,
    quant: BundleQuant,
    map_size: usize,
    extras: &BundleExtras<'_>,
) -> Result<(BundleFiles, Manifest), BundleError> {
    let (examples, example_files) = example_files(extras.examples)?;
    let heads = student.model.config.text_config.num_attention_heads;
    let aligner = extras
        .aligner
        .map(|input| aligner_entry(input, heads, student.device()).map(|entry| (entry, input)))
        .transpose()?;
    if student.model.lora_settings().is_some() {
        return Err(BundleError::Export(
            "the model carries LoRA factors; merge them first (merge_lora)".into(),
        ));
    }
    let grid = grid_info(&student, map_size);
    let config = student.model.config.clone();
    let (model, quantization) = match quant {
        BundleQuant::None => (student.model, QuantReport::none()),
        BundleQuant::Q8 {
            block,
            dense_lm_head,
        } => quantize_q8(student.model, block, dense_lm_head).map_err(BundleError::Export)?,
    };
    let mut store = BurnpackStore::from_bytes(None);
    let weights = model
        .save_into(&mut store)
        .and_then(|()| store.get_bytes())
        .map_err(|error| BundleError::Export(format!("serialising {WEIGHTS_FILE}: {error}")))?;
    drop(model);
    let mut files = BundleFiles::new(PathBuf::new());
    // Taken over without a copy when the allocation allows: the weights are the bundle's bulk.
    let weights = weights
        .try_into_vec::<u8>()
        .unwrap_or_else(|bytes| bytes.to_vec());
    files.insert(WEIGHTS_FILE, weights);
    for name in MODEL_FILES {
        if source.has(name) {
            files.insert(name, source.read(name)?.into_owned());
        } else if matches!(name, "config.json" | "tokenizer.json") {
            return Err(BundleError::Load(LoadError::Config {
                path: source.path(name),
                reason: "missing: the bundle needs it".into(),
            }));
        }
    }
    let aligner_file = aligner
        .as_ref()
        .map(|(entry, input)| (entry.file.clone(), input.bytes.clone()));
    for (name, bytes) in example_files.into_iter().chain(aligner_file) {
        if files.get(&name).is_some() || name == MANIFEST_FILE {
            return Err(BundleError::Export(format!(
                "bundle file {name} would replace another file"
            )));
        }
        files.insert(name, bytes);
    }
    let text = &config.text_config;
    let manifest = Manifest {
        format: BUNDLE_FORMAT.into(),
        version: BUNDLE_VERSION,
        model_type: "mllama".into(),
        files: files
            .iter()
            .map(|(name, bytes)| {
                let entry = FileEntry {
                    size: bytes.len() as u64,
                    sha256: sha256_hex(bytes),
                };
                (name.to_string(), entry)
            })
            .collect(),
        quantization,
        grid,
        cross_attention: CrossAttentionInfo {
            layers: text.cross_attention_layers.clone(),
            heads: text.num_attention_heads,
            kv_heads: text.num_key_value_heads,
            head_dim: text.head_dim(),
        },
        examples,
        aligner: aligner.map(|(entry, _)| entry),
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
    files.insert(MANIFEST_FILE, json);
    Ok((files, manifest))
}

fn grid_info(student: &Mllama, map_size: usize) -> GridInfo {
    let vision = &student.model.config.vision_config;
    GridInfo {
        tile_size: student.processor.tile_size(),
        patch_size: vision.patch_size,
        patches_per_side: vision.patches_per_side(),
        tokens_per_tile: vision.tokens_per_tile(),
        max_tiles: student.processor.max_image_tiles,
        map_size,
    }
}
