//! Web bundles: a Llama-3.2-Vision student (adapter merged, weights optionally quantized) as a
//! handful of files a browser can fetch and load from bytes alone.
//!
//! A bundle holds `model.bpk` (Burn's burnpack: the only Burn format that stores quantized
//! tensors), the model folder's `config.json`, `tokenizer.json`, chat template and processor
//! files as they were, and `manifest.json`: format and version, each file's size and SHA-256,
//! the quantization, and the image grid and cross-attention layout the explorer needs before
//! it runs the model. A bundle may also carry example images with the Stable Diffusion
//! teacher's word maps ([`super::bundle_examples`]) and the trained Aligner
//! ([`super::bundle_aligner`]). Everything here works on bytes in memory;
//! reading and writing folders is the caller's (the CLI's; the browser fetches).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use burn::{
    module::{Module, ModuleMapper, Param},
    store::{BurnpackStore, ModuleSnapshot},
    tensor::{Bytes, DType, Device, Tensor},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    bundle_aligner::aligner_entry, bundle_examples::example_files, config::MllamaConfig,
    model::MllamaModel, student::Mllama,
};
pub use super::{
    bundle_aligner::{ALIGNER_FILE, AlignerInput, BundleAligner},
    bundle_examples::{BundleExample, ExampleInput, map_mse, teacher_word_row},
};
use crate::{
    adapters::quant::{QuantReport, quantize_q8},
    weights::{FileSource, LoadError, Weights},
};

/// `format` of every bundle manifest.
pub const BUNDLE_FORMAT: &str = "lavender-web-bundle";
/// The manifest layout this code writes and reads; a reader refuses other versions.
pub const BUNDLE_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
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
    #[error("cannot export the bundle: {0}")]
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

/// A bundle's files in memory, by name; `label` (its folder or URL) names them in errors.
#[derive(Debug, Clone, Default)]
pub struct BundleFiles {
    label: PathBuf,
    files: BTreeMap<String, Vec<u8>>,
}

impl BundleFiles {
    pub fn new(label: impl Into<PathBuf>) -> Self {
        Self {
            label: label.into(),
            files: BTreeMap::new(),
        }
    }

    pub fn insert(&mut self, name: impl Into<String>, bytes: Vec<u8>) {
        self.files.insert(name.into(), bytes);
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// File names and contents, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files
            .iter()
            .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
    }

    pub fn label(&self) -> &Path {
        &self.label
    }

    fn path(&self, name: &str) -> PathBuf {
        self.label.join(name)
    }

    /// Parses `manifest.json` and checks its format and version.
    pub fn manifest(&self) -> Result<Manifest, BundleError> {
        let path = self.path(MANIFEST_FILE);
        let bytes = self
            .get(MANIFEST_FILE)
            .ok_or_else(|| BundleError::Manifest {
                path: path.clone(),
                reason:
                    "missing: not a lavender web bundle (export one with `lavender export-web`)"
                        .into(),
            })?;
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|error| BundleError::Manifest {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        if manifest.format != BUNDLE_FORMAT || manifest.version != BUNDLE_VERSION {
            return Err(BundleError::Manifest {
                path,
                reason: format!(
                    "format `{}` version {}, expected `{BUNDLE_FORMAT}` version {BUNDLE_VERSION}",
                    manifest.format, manifest.version
                ),
            });
        }
        Ok(manifest)
    }

    /// Checks that every file the manifest lists is here with its size (cheap; no hashing).
    pub fn check_sizes(&self, manifest: &Manifest) -> Result<(), BundleError> {
        for (name, entry) in &manifest.files {
            let bytes = self.get(name).ok_or_else(|| BundleError::Missing {
                path: self.path(name),
                expected: entry.size,
            })?;
            if bytes.len() as u64 != entry.size {
                return Err(BundleError::Size {
                    path: self.path(name),
                    expected: entry.size,
                    found: bytes.len() as u64,
                });
            }
        }
        Ok(())
    }

    /// The manifest, after checking every listed file's size and SHA-256.
    pub fn verify(&self) -> Result<Manifest, BundleError> {
        let manifest = self.manifest()?;
        self.check_sizes(&manifest)?;
        for (name, entry) in &manifest.files {
            let found = sha256_hex(self.get(name).expect("checked above"));
            if !found.eq_ignore_ascii_case(&entry.sha256) {
                return Err(BundleError::Digest {
                    path: self.path(name),
                    expected: entry.sha256.clone(),
                    found,
                });
            }
        }
        Ok(manifest)
    }
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

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

impl Mllama {
    /// Loads a web bundle from its files' bytes (what a browser fetched, or a folder the CLI
    /// read). Checks the manifest and every file's size; call [`BundleFiles::verify`] first to
    /// check the SHA-256 too. The model's structure is built with lazy placeholders and filled
    /// from `model.bpk`, so the weights are allocated once, in the bundle's precision:
    /// quantized weights stay quantized (Flex dequantizes them in each matmul; the GPU
    /// backends read them in the matmul kernel).
    pub fn from_bundle(mut files: BundleFiles, device: &Device) -> Result<Self, BundleError> {
        let manifest = files.manifest()?;
        if manifest.model_type != "mllama" {
            return Err(BundleError::Manifest {
                path: files.path(MANIFEST_FILE),
                reason: format!(
                    "a `{}` bundle, not Llama-3.2-Vision (`mllama`)",
                    manifest.model_type
                ),
            });
        }
        files.check_sizes(&manifest)?;
        let weights_path = files.path(WEIGHTS_FILE);
        let weights = files
            .files
            .remove(WEIGHTS_FILE)
            .ok_or_else(|| BundleError::Manifest {
                path: files.path(MANIFEST_FILE),
                reason: format!("lists no {WEIGHTS_FILE}"),
            })?;
        let source = FileSource::Memory {
            label: &files.label,
            files: &files.files,
        };
        let config = MllamaConfig::from_source(&source)?;
        let mut model = MllamaModel::from_weights(config, &Weights::shapes_only(), device)?;
        let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(weights)));
        let applied = model
            .load_from(&mut store)
            .map_err(|error| BundleError::Weights {
                path: weights_path.clone(),
                reason: error.to_string(),
            })?;
        if !applied.errors.is_empty() || !applied.missing.is_empty() || !applied.unused.is_empty() {
            return Err(BundleError::Weights {
                path: weights_path,
                reason: format!("does not fit config.json: {applied}"),
            });
        }
        Ok(Self::assemble(model, &source)?)
    }

    /// The student with every quantized weight dequantized to f32, and how many there were.
    ///
    /// For the wgpu / WebGPU backends: CubeCL's WGSL compiler cannot emit a kernel that reads
    /// 8-bit integers (WGSL has no `i8`; tracel-ai/cubecl#1460), so Burn 0.22.1's quantized
    /// matmul and its dequantize kernel both fail to compile there (measured: "no definition in
    /// scope for identifier: `i8`", on SwiftShader in Chromium and on native Vulkan alike).
    /// Load the bundle on the CPU, call this, then move the model to the GPU.
    pub fn dequantized(self) -> (Self, usize) {
        struct Dequantize {
            count: usize,
        }
        impl ModuleMapper for Dequantize {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                if matches!(param.val().dtype(), DType::QFloat(_)) {
                    self.count += 1;
                    param.map(Tensor::dequantize)
                } else {
                    param
                }
            }
        }
        let mut mapper = Dequantize { count: 0 };
        let student = self
            .try_map_model(|model| Ok::<_, std::convert::Infallible>(model.map(&mut mapper)))
            .unwrap_or_else(|never| match never {});
        (student, mapper.count)
    }
}

/// The number of parameters of `model` that hold quantized values.
pub fn quantized_param_count<M: Module>(model: &M) -> usize {
    struct Count(usize);
    impl burn::module::ModuleVisitor for Count {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            if matches!(param.val().dtype(), burn::tensor::DType::QFloat(_)) {
                self.0 += 1;
            }
        }
    }
    let mut count = Count(0);
    model.visit(&mut count);
    count.0
}

#[cfg(test)]
mod tests {
    use burn::{
        module::{ModuleVisitor, Param},
        tensor::Tensor,
    };

    use super::*;
    use crate::{
        align::aligner::{Aligner, AlignerActivation, AlignerConfig},
        data::TeacherMaps,
        testing::{device, mllama_golden_ids, mllama_tiny_dir, relative_error},
        vlm::mllama::{
            model::tests::{full_pass_logits, inputs},
            text::Sampler,
        },
    };

    /// The fixture with its adapter merged, as `--vlm --adapter` loads it.
    fn merged() -> Mllama {
        let dir = mllama_tiny_dir();
        Mllama::load(&dir, Some(&dir.join("adapter")), &device()).unwrap()
    }

    fn export(quant: BundleQuant) -> (BundleFiles, Manifest) {
        let dir = mllama_tiny_dir();
        export_bundle(merged(), &FileSource::Folder(&dir), quant, 32).unwrap()
    }

    /// Logits of the golden prompt and the greedy tokens after it (no stop tokens).
    fn run(model: &MllamaModel) -> (Tensor<3>, Vec<u32>) {
        let inputs = inputs(model);
        let logits = full_pass_logits(model, &inputs);
        let tokens = model.text.generate(
            &inputs.ids,
            Some(inputs.states.clone()),
            Some(inputs.mask.clone()),
            16,
            &[],
            &Sampler::greedy(),
        );
        (logits, tokens)
    }

    fn initialized_params<M: Module>(model: &M) -> (usize, usize) {
        struct Count(usize, usize);
        impl ModuleVisitor for Count {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0 += 1;
                self.1 += usize::from(param.is_initialized());
            }
        }
        let mut count = Count(0, 0);
        model.visit(&mut count);
        (count.0, count.1)
    }

    #[test]
    fn shapes_only_structure_allocates_no_parameter() {
        let config = MllamaConfig::load(&mllama_tiny_dir()).unwrap();
        let model = MllamaModel::from_weights(config, &Weights::shapes_only(), &device()).unwrap();
        let (params, initialized) = initialized_params(&model);
        assert!(params > 100, "{params} parameters");
        assert_eq!(initialized, 0, "placeholders were materialised");
    }

    /// An f32 bundle loads to the very same weights: identical logits and greedy tokens.
    #[test]
    fn unquantized_bundle_is_exactly_the_merged_model() {
        let (files, manifest) = export(BundleQuant::None);
        assert_eq!(manifest.quantization, QuantReport::none());
        assert_eq!(manifest.cross_attention.layers, vec![1, 3]);
        assert_eq!(manifest.grid.patches_per_side, 4);
        assert_eq!(files.verify().unwrap(), manifest);
        let loaded = Mllama::from_bundle(files, &device()).unwrap();
        let (logits, tokens) = run(&loaded.model);
        let (expected_logits, expected_tokens) = run(&merged().model);
        let diff: f32 = (logits - expected_logits).abs().max().into_scalar();
        assert_eq!(diff, 0.0, "logits differ by {diff}");
        assert_eq!(tokens, expected_tokens);
        assert_eq!(tokens, mllama_golden_ids("generated_adapter"));
    }

    /// A Q8 bundle keeps its weights quantized once loaded, and its logits stay within the
    /// quantization error of the f32 model's.
    #[test]
    fn q8_bundle_loads_quantized_and_stays_close() {
        let (files, manifest) = export(BundleQuant::Q8 {
            block: None,
            dense_lm_head: false,
        });
        let report = &manifest.quantization;
        // 32-wide hidden, 16-wide k/v: 16 divides all but the 374-wide lm_head.
        assert_eq!(report.block, 16);
        assert_eq!(report.dense.len(), 1, "{:?}", report.dense);
        assert!(report.dense[0].starts_with("text.lm_head.weight"));
        let loaded = Mllama::from_bundle(files, &device()).unwrap();
        assert_eq!(quantized_param_count(&loaded.model), report.quantized);
        assert!(report.quantized > 40, "{} quantized", report.quantized);
        let (logits, tokens) = run(&loaded.model);
        let (expected_logits, expected_tokens) = run(&merged().model);
        let error = relative_error(logits.clone(), expected_logits);
        eprintln!(
            "q8 bundle: logits relative error {error:e}; tokens {tokens:?} vs {expected_tokens:?}"
        );
        assert!(error < 1e-2, "relative error {error:e}");
        assert_eq!(tokens, expected_tokens);

        // Dequantized (as for WebGPU): no quantized weight left, the same numbers.
        let (dequantized, count) = loaded.dequantized();
        assert_eq!(count, report.quantized);
        assert_eq!(quantized_param_count(&dequantized.model), 0);
        let (dequantized_logits, dequantized_tokens) = run(&dequantized.model);
        let drift = relative_error(dequantized_logits, logits);
        assert!(drift < 1e-5, "dequantized vs quantized logits: {drift:e}");
        assert_eq!(dequantized_tokens, tokens);
    }

    #[test]
    fn damaged_or_missing_files_are_named() {
        let (files, _) = export(BundleQuant::None);
        let mut damaged = files.clone();
        let mut bytes = damaged.get("tokenizer.json").unwrap().to_vec();
        bytes[10] ^= 1;
        damaged.insert("tokenizer.json", bytes);
        let error = damaged.verify().unwrap_err().to_string();
        assert!(
            error.contains("tokenizer.json is damaged or changed"),
            "{error}"
        );

        let mut missing = BundleFiles::new("bundle");
        for (name, bytes) in files.iter().filter(|(name, _)| *name != WEIGHTS_FILE) {
            missing.insert(name, bytes.to_vec());
        }
        let error = Mllama::from_bundle(missing, &device())
            .unwrap_err()
            .to_string();
        assert!(error.contains("bundle/model.bpk is missing"), "{error}");

        let error = BundleFiles::new("empty").verify().unwrap_err().to_string();
        assert!(error.contains("empty/manifest.json: missing"), "{error}");
    }

    /// Examples become listed, checked files; the model still loads from such a bundle.
    #[test]
    fn examples_are_listed_checked_files() {
        let dir = mllama_tiny_dir();
        let image = image::open(dir.join("image.png")).unwrap().to_rgb8();
        let maps = TeacherMaps {
            words: vec!["red".into(), "dog".into()],
            side: 2,
            maps: vec![0.0, 0.25, 0.5, 1.0, 1.0, 0.5, 0.25, 0.0],
        };
        let example = ExampleInput {
            id: "fixture".into(),
            image: image.clone(),
            caption: "a red dog".into(),
            maps: maps.clone(),
        };
        let (files, manifest) = export_bundle_with_examples(
            merged(),
            &FileSource::Folder(&dir),
            BundleQuant::None,
            32,
            &[example],
        )
        .unwrap();
        assert_eq!(files.verify().unwrap(), manifest);
        let [entry] = manifest.examples.as_slice() else {
            panic!("{:?}", manifest.examples)
        };
        assert_eq!(entry.caption, "a red dog");
        assert_eq!((entry.words.clone(), entry.side), (maps.words.clone(), 2));
        for name in [&entry.image, &entry.maps] {
            assert!(manifest.files.contains_key(name), "{name} is not listed");
        }
        assert_eq!(files.example_maps(entry).unwrap(), maps);
        let png = image::load_from_memory(files.get(&entry.image).unwrap()).unwrap();
        assert_eq!(png.to_rgb8(), image);

        let mut damaged = files.clone();
        let mut bytes = damaged.get(&entry.maps).unwrap().to_vec();
        *bytes.last_mut().unwrap() ^= 1;
        damaged.insert(entry.maps.clone(), bytes);
        let error = damaged.verify().unwrap_err().to_string();
        assert!(error.contains("maps.safetensors is damaged"), "{error}");
        Mllama::from_bundle(files, &device()).unwrap();
    }

    /// Bundles written before examples existed have no `examples` key and still load; a bundle
    /// without examples writes none.
    #[test]
    fn a_manifest_without_examples_parses() {
        let (files, manifest) = export(BundleQuant::None);
        assert!(manifest.examples.is_empty());
        let json: serde_json::Value =
            serde_json::from_slice(files.get(MANIFEST_FILE).unwrap()).unwrap();
        assert!(json.get("examples").is_none(), "{json}");
        let old = serde_json::json!({
            "format": BUNDLE_FORMAT,
            "version": 1,
            "model_type": "mllama",
            "files": { "model.bpk": { "size": 3, "sha256": "ab" } },
            "quantization": json["quantization"],
            "grid": json["grid"],
            "cross_attention": json["cross_attention"],
        });
        let mut old_files = BundleFiles::new("old");
        old_files.insert(MANIFEST_FILE, serde_json::to_vec(&old).unwrap());
        let parsed = old_files.manifest().unwrap();
        assert!(parsed.examples.is_empty());
        assert_eq!(parsed.aligner, None);
        assert!(json.get("aligner").is_none(), "{json}");
        assert!(old_files.aligner(&parsed, &device()).unwrap().is_none());
        assert_eq!(parsed.files["model.bpk"].size, 3);
    }

    /// A training run's Aligner (4 heads as the tiny model's cross-attention, the default
    /// width and depth), as `train` writes it.
    fn run_aligner(heads: usize) -> (Aligner, AlignerInput) {
        let device = device();
        device.seed(11);
        let aligner = AlignerConfig::new(heads).init(&device);
        let input = AlignerInput {
            label: PathBuf::from("runs/lavender/aligner.safetensors"),
            bytes: aligner.to_safetensors().unwrap(),
            activation: AlignerActivation::Relu6,
        };
        (aligner, input)
    }

    fn export_with_aligner(input: &AlignerInput) -> Result<(BundleFiles, Manifest), BundleError> {
        let dir = mllama_tiny_dir();
        let extras = BundleExtras {
            aligner: Some(input),
            ..BundleExtras::default()
        };
        export_bundle_with(
            merged(),
            &FileSource::Folder(&dir),
            BundleQuant::None,
            32,
            &extras,
        )
    }

    /// The Aligner travels byte for byte, listed and described in the manifest, and comes back
    /// computing what the original does; the model still loads from such a bundle.
    #[test]
    fn an_aligner_round_trips_through_a_bundle() {
        let (original, input) = run_aligner(4);
        let (files, manifest) = export_with_aligner(&input).unwrap();
        assert_eq!(files.verify().unwrap(), manifest);
        assert_eq!(
            manifest.aligner,
            Some(BundleAligner {
                file: ALIGNER_FILE.into(),
                heads: 4,
                hidden: 32,
                depth: "sim".into(),
                activation: "relu6".into(),
            })
        );
        assert_eq!(files.get(ALIGNER_FILE), Some(input.bytes.as_slice()));
        assert_eq!(
            manifest.files[ALIGNER_FILE].sha256,
            sha256_hex(&input.bytes)
        );
        let json: serde_json::Value =
            serde_json::from_slice(files.get(MANIFEST_FILE).unwrap()).unwrap();
        assert_eq!(json["aligner"]["depth"], "sim");

        let loaded = files.aligner(&manifest, &device()).unwrap().unwrap();
        let maps = Tensor::<4>::random(
            [3, 4, 8, 8],
            burn::tensor::Distribution::Uniform(0.0, 1.0),
            &device(),
        );
        let diff: f32 = (loaded.forward(maps.clone()) - original.forward(maps))
            .abs()
            .max()
            .into_scalar();
        assert_eq!(diff, 0.0);

        // A file that no longer fits the manifest is refused naming it and the shapes.
        let mut other = files.clone();
        let (_, narrow) = run_aligner(2);
        other.insert(ALIGNER_FILE, narrow.bytes.clone());
        let mut narrowed = manifest.clone();
        narrowed.files.get_mut(ALIGNER_FILE).unwrap().size = narrow.bytes.len() as u64;
        let error = other.aligner(&narrowed, &device()).unwrap_err().to_string();
        assert!(
            error.contains("aligner.safetensors has shape [32, 2, 3, 3], expected [32, 4, 3, 3]"),
            "{error}"
        );
        Mllama::from_bundle(files, &device()).unwrap();
    }

    #[test]
    fn an_aligner_of_other_heads_is_refused_naming_the_file() {
        let (_, input) = run_aligner(5);
        let error = export_with_aligner(&input).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "runs/lavender/aligner.safetensors: `convs.0.weight` has shape [32, 5, 3, 3]"
            ) && error.contains("the model's cross-attention has 4 heads"),
            "{error}"
        );
    }

    #[test]
    fn a_block_that_does_not_divide_is_refused_by_weight() {
        let error = quantize_q8(merged().model, Some(64), false).unwrap_err();
        assert!(error.contains("not a multiple of the block 64"), "{error}");
    }

    /// Blocks of 2 divide even the 374-wide lm_head: quantized unless asked to stay dense. The
    /// logits' errors measured (relative to their largest magnitude): 2.5e-3 with every weight
    /// quantized, 6.0e-4 with the lm_head dense (it adds most of the error: it writes the
    /// logits); the greedy tokens are the same either way.
    #[test]
    fn the_lm_head_is_quantized_when_its_width_divides_unless_kept_dense() {
        let (expected, expected_tokens) = run(&merged().model);
        for (dense_lm_head, bound) in [(false, 5e-3), (true, 2e-3)] {
            let (model, report) = quantize_q8(merged().model, Some(2), dense_lm_head).unwrap();
            assert_eq!(report.dense.len(), usize::from(dense_lm_head), "{report:?}");
            assert_eq!(quantized_param_count(&model), report.quantized);
            let (logits, tokens) = run(&model);
            assert_eq!(tokens, expected_tokens);
            let error = relative_error(logits, expected.clone());
            eprintln!("block 2, dense lm_head {dense_lm_head}: logits relative error {error:e}");
            assert!(error < bound, "relative error {error:e}");
        }
    }
}
