//! A bundle written, read and loaded end to end on the tiny fixture model.

use std::path::PathBuf;

use burn::{
    module::{Module, ModuleVisitor, Param},
    tensor::Tensor,
};

use super::*;
use crate::{
    adapters::quant::{QuantReport, quantize_q8},
    align::aligner::{Aligner, AlignerActivation, AlignerConfig},
    maps::WordMaps,
    testing::{device, mllama_golden_ids, mllama_tiny_dir, relative_error},
    vlm::mllama::{
        config::MllamaConfig,
        model::{
            MllamaModel,
            tests::{full_pass_logits, inputs},
        },
        student::Mllama,
        text::Sampler,
    },
    weights::{FileSource, Weights},
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
    let values = vec![0.0, 0.25, 0.5, 1.0, 1.0, 0.5, 0.25, 0.0];
    let maps = WordMaps::from_values(
        vec!["red".into(), "dog".into()],
        2,
        values.clone(),
        &device(),
    )
    .unwrap();
    let example = ExampleInput {
        id: "fixture".into(),
        image: image.clone(),
        caption: "a red dog".into(),
        maps: maps.clone(),
    };
    // Two examples of one id are refused by position and id; the message says only what is
    // wrong (the command line says that the export failed: it used to say so twice).
    let error = export_bundle_with_examples(
        merged(),
        &FileSource::Folder(&dir),
        BundleQuant::None,
        32,
        &[example.clone(), example.clone()],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(error, "example 1 (`fixture`): the id appears twice");
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
    let shipped = files.example_maps(entry, &device()).unwrap();
    assert_eq!(shipped.words, maps.words);
    assert_eq!(shipped.to_values().unwrap(), values);
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

/// A manifest may list plain file names only: paths out of the folder, absolute paths,
/// subfolders, hidden files and odd characters are refused by name, before anything is read.
#[test]
fn manifests_name_plain_files_only() {
    let (files, manifest) = export(BundleQuant::None);
    let mut json: serde_json::Value =
        serde_json::from_slice(files.get(MANIFEST_FILE).unwrap()).unwrap();
    let entry = json["files"]["config.json"].clone();
    for bad in [
        "../secret",
        "/dev/zero",
        "a/b.json",
        "..",
        ".hidden",
        "C:\\x",
        "",
        "sp ace",
        "caf\u{e9}",
    ] {
        let mut tampered = json.clone();
        tampered["files"][bad] = entry.clone();
        let mut bundle = BundleFiles::new("bundle");
        bundle.insert(MANIFEST_FILE, serde_json::to_vec(&tampered).unwrap());
        let error = bundle.manifest().unwrap_err().to_string();
        assert!(
            error.contains("bundle/manifest.json") && error.contains("plain files"),
            "{bad:?}: {error}"
        );
    }
    for good in ["model.bpk", "example-a_1.jpg-1.png", "config.json"] {
        assert!(is_plain_name(good), "{good}");
    }
    assert!(!is_plain_name(&"x".repeat(256)));
    json["files"]["extra-file_2.bin"] = entry;
    let mut bundle = BundleFiles::new("bundle");
    bundle.insert(MANIFEST_FILE, serde_json::to_vec(&json).unwrap());
    assert_eq!(
        bundle.manifest().unwrap().files.len(),
        manifest.files.len() + 1
    );
}
