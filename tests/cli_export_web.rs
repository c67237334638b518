//! End-to-end checks of `lavender export-web` and of `generate` / `attend --bundle` on the tiny
//! Mllama fixture with its adapter: an f32 bundle answers exactly as `--vlm --adapter`, a Q8
//! bundle closely, and a damaged or incomplete bundle is refused naming the file. Bundles with
//! example images carry the teacher's maps exactly as `lavender extract` stored them.

#[path = "common/mod.rs"]
mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
};

use common::{failure, lavender, success, temp_dir};
use lavender_core::{
    align::aligner::AlignerConfig,
    bundle::{BundleFiles, MANIFEST_FILE, sha256_hex},
    data::TeacherMapsIndex,
};

fn fixture() -> String {
    common::fixture_dir("mllama-tiny").display().to_string()
}

fn adapter() -> String {
    common::fixture_dir("mllama-tiny")
        .join("adapter")
        .display()
        .to_string()
}

fn image() -> String {
    common::fixture_dir("mllama-tiny")
        .join("image.png")
        .display()
        .to_string()
}

/// `lavender export-web --vlm <fixture> --out out` with `extra` flags.
fn export_web(out: &Path, extra: &[&str]) -> Output {
    let vlm = fixture();
    let mut args = vec!["export-web", "--vlm", &vlm, "--out", out.to_str().unwrap()];
    args.extend(extra);
    lavender(&args)
}

/// Exports the fixture with its adapter to `out` with `--quant quant`.
fn export(out: &Path, quant: &str) -> String {
    success(&export_web(
        out,
        &["--adapter", &adapter(), "--quant", quant],
    ))
}

/// `generate --json` with `model` (e.g. `--bundle DIR`), dumping the attention to `dump`.
fn generate(model: &[&str], dump: &Path) -> Output {
    generate_on("cpu", model, dump)
}

fn generate_on(device: &str, model: &[&str], dump: &Path) -> Output {
    let image = image();
    let mut args = vec!["generate"];
    args.extend(model);
    args.extend([
        "--image",
        &image,
        "--device",
        device,
        "--prompt",
        "What is in the picture?",
        "--max-new-tokens",
        "12",
        "--json",
        "--dump-attention",
        dump.to_str().unwrap(),
    ]);
    lavender(&args)
}

fn tokens(stdout: &str) -> Vec<i64> {
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    json["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// Every tensor of a dumped attention file, by name.
fn dumped(path: &Path) -> Vec<(String, Vec<f32>)> {
    common::f32_tensors(path)
        .into_iter()
        .map(|(name, _, values)| (name, values))
        .collect()
}

fn folder_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum()
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// An f32 bundle gives exactly `--vlm --adapter`'s tokens and attention (bit for bit); a Q8
/// bundle the same tokens and attention within its quantization error, in about a quarter of
/// the weight bytes.
#[test]
fn bundles_answer_as_the_model_with_its_adapter() {
    let dir = temp_dir("export-web");
    let reference_dump = dir.join("reference.safetensors");
    let reference = success(&generate(
        &["--vlm", &fixture(), "--adapter", &adapter()],
        &reference_dump,
    ));

    let f32_bundle = dir.join("bundle-f32");
    let report = export(&f32_bundle, "none");
    assert!(report.contains("model.bpk"), "{report}");
    let f32_manifest = manifest(&f32_bundle);
    assert_eq!(f32_manifest["quantization"]["scheme"], "none");
    assert_eq!(f32_manifest["grid"]["patches_per_side"], 4);
    assert_eq!(f32_manifest["grid"]["map_size"], 32);
    assert_eq!(
        f32_manifest["cross_attention"]["layers"],
        serde_json::json!([1, 3])
    );
    assert_eq!(f32_manifest["cross_attention"]["heads"], 4);
    // No temporary folder is left beside the bundle.
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let f32_dump = dir.join("f32.safetensors");
    let from_f32 = success(&generate(
        &["--bundle", f32_bundle.to_str().unwrap()],
        &f32_dump,
    ));
    assert_eq!(tokens(&from_f32), tokens(&reference));
    assert_eq!(from_f32, reference);
    assert_eq!(dumped(&f32_dump), dumped(&reference_dump));

    let q8_bundle = dir.join("bundle-q8");
    export(&q8_bundle, "q8");
    let q8_manifest = manifest(&q8_bundle);
    assert_eq!(q8_manifest["quantization"]["scheme"], "q8s-per-block");
    assert_eq!(q8_manifest["quantization"]["block"], 16);
    let weights = |m: &serde_json::Value| m["files"]["model.bpk"]["size"].as_u64().unwrap();
    eprintln!(
        "bundle sizes: f32 {} bytes (model.bpk {}), q8 {} bytes (model.bpk {})",
        folder_size(&f32_bundle),
        weights(&f32_manifest),
        folder_size(&q8_bundle),
        weights(&q8_manifest)
    );
    // 1.25 bytes per quantized value (8 bits + an f32 scale per 16) against 4; the tiny model's
    // dense embeddings, lm_head and norms keep the whole file at ~63 % (measured).
    assert!(weights(&q8_manifest) * 10 < weights(&f32_manifest) * 7);

    let q8_dump = dir.join("q8.safetensors");
    let from_q8 = success(&generate(
        &["--bundle", q8_bundle.to_str().unwrap()],
        &q8_dump,
    ));
    assert_eq!(tokens(&from_q8), tokens(&reference));
    for ((name, ours), (_, theirs)) in dumped(&q8_dump).iter().zip(dumped(&reference_dump)) {
        let error = ours
            .iter()
            .zip(&theirs)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("q8 {name}: max abs error {error:e}");
        assert!(error <= 1e-2, "{name}: max abs error {error}");
    }

    // `attend --bundle` runs on the same bundle.
    let png = dir.join("words.png");
    success(&lavender(&[
        "attend",
        "--bundle",
        q8_bundle.to_str().unwrap(),
        "--image",
        &image(),
        "--device",
        "cpu",
        "--prompt",
        "What is in the picture?",
        "--answer",
        "A red square.",
        "--png",
        png.to_str().unwrap(),
    ]));
    assert!(png.is_file());
    fs::remove_dir_all(&dir).unwrap();
}

/// On wgpu (WGSL kernels cannot read 8-bit weights) a Q8 bundle is dequantized on loading and
/// answers as on the CPU: the same tokens, attention within float rounding. Runs on the
/// software Vulkan adapter that `scripts/setup.sh` installs; LAVENDER_EXPECT_LAVAPIPE=0 skips.
#[test]
fn q8_bundles_run_on_wgpu_dequantized() {
    if std::env::var("LAVENDER_EXPECT_LAVAPIPE").as_deref() == Ok("0") {
        return;
    }
    let dir = temp_dir("export-web-wgpu");
    let bundle = dir.join("bundle-q8");
    export(&bundle, "q8");
    let model = ["--bundle", bundle.to_str().unwrap()];
    let (cpu_dump, wgpu_dump) = (dir.join("cpu.safetensors"), dir.join("wgpu.safetensors"));
    let on_cpu = success(&generate_on("cpu", &model, &cpu_dump));
    let on_wgpu = success(&generate_on("wgpu", &model, &wgpu_dump));
    assert_eq!(tokens(&on_wgpu), tokens(&on_cpu));
    for ((name, wgpu), (_, cpu)) in dumped(&wgpu_dump).into_iter().zip(dumped(&cpu_dump)) {
        let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs()));
        let error = wgpu
            .iter()
            .zip(&cpu)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            error <= 1e-4 * scale.max(1e-12),
            "{name}: {error:e} of {scale:e}"
        );
    }
}

/// One changed byte fails the SHA-256 check naming the file; a missing file is named too; an
/// existing bundle is replaced only with --overwrite.
#[test]
fn damaged_incomplete_or_existing_bundles_are_refused() {
    let dir = temp_dir("export-web-damaged");
    let bundle = dir.join("bundle");
    export(&bundle, "none");
    let dump = dir.join("dump.safetensors");

    let weights = bundle.join("model.bpk");
    let mut bytes = fs::read(&weights).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&weights, &bytes).unwrap();
    let error = failure(&generate(&["--bundle", bundle.to_str().unwrap()], &dump));
    assert!(
        error.contains("model.bpk is damaged or changed: its SHA-256 is"),
        "{error}"
    );

    fs::remove_file(bundle.join("tokenizer.json")).unwrap();
    let error = failure(&generate(&["--bundle", bundle.to_str().unwrap()], &dump));
    assert!(error.contains("tokenizer.json is missing"), "{error}");

    fs::remove_file(bundle.join("manifest.json")).unwrap();
    let error = failure(&generate(&["--bundle", bundle.to_str().unwrap()], &dump));
    assert!(error.contains("manifest.json"), "{error}");

    let error = failure(&export_web(&bundle, &[]));
    assert!(error.contains("pass --overwrite"), "{error}");
    // Without its manifest the folder is no longer known as a bundle: --overwrite refuses to
    // replace it (it only replaces what an export wrote), and leaves it as it is.
    let error = failure(&export_web(&bundle, &["--quant", "none", "--overwrite"]));
    assert!(
        error.contains("is not a bundle (no manifest.json)"),
        "{error}"
    );
    assert!(
        bundle.join("model.bpk").exists(),
        "the folder was left as it was"
    );
    fs::remove_dir_all(&bundle).unwrap();
    export(&bundle, "none");
    export_overwriting(&bundle);
    assert!(bundle.join("manifest.json").is_file());

    // A usage error: clap's exit code 2.
    let output = lavender(&[
        "generate",
        "--bundle",
        bundle.to_str().unwrap(),
        "--vlm",
        &fixture(),
        "--image",
        &image(),
        "--prompt",
        "x",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("cannot be used with"), "{error}");
    fs::remove_dir_all(&dir).unwrap();
}

/// A bundle from the web is hostile input: a manifest naming a path out of its folder, a listed
/// file that is a link (to a file outside, or to /dev/zero) or a FIFO, is refused by name, without
/// reading outside the folder, streaming a device or blocking.
#[test]
fn bundles_cannot_reach_outside_their_folder() {
    use std::os::unix::fs::symlink;

    let dir = temp_dir("export-web-hostile");
    let bundle = dir.join("bundle");
    export(&bundle, "none");
    let dump = dir.join("dump.safetensors");
    let run = |bundle: &Path| failure(&generate(&["--bundle", bundle.to_str().unwrap()], &dump));
    let pristine = fs::read(bundle.join("manifest.json")).unwrap();
    let secret = dir.join("secret.json");
    fs::write(&secret, "{}").unwrap();

    // The manifest names a file outside the folder.
    let mut json: serde_json::Value = serde_json::from_slice(&pristine).unwrap();
    json["files"]["../secret.json"] = json["files"]["config.json"].clone();
    fs::write(
        bundle.join("manifest.json"),
        serde_json::to_vec(&json).unwrap(),
    )
    .unwrap();
    let error = run(&bundle);
    assert!(
        error.contains("\"../secret.json\"") && error.contains("plain files"),
        "{error}"
    );
    fs::write(bundle.join("manifest.json"), &pristine).unwrap();

    // A listed file replaced by a link to a file outside, or to a device.
    let config = bundle.join("config.json");
    let original = fs::read(&config).unwrap();
    for target in [secret.as_path(), Path::new("/dev/zero")] {
        fs::remove_file(&config).unwrap();
        symlink(target, &config).unwrap();
        let error = run(&bundle);
        assert!(
            error.contains("config.json is not a regular file"),
            "{target:?}: {error}"
        );
    }
    fs::remove_file(&config).unwrap();

    // A FIFO: refused at once, where reading it would wait for a writer forever.
    let made = std::process::Command::new("mkfifo")
        .arg(&config)
        .status()
        .unwrap();
    assert!(made.success());
    let error = run(&bundle);
    assert!(
        error.contains("config.json is not a regular file"),
        "{error}"
    );
    fs::remove_file(&config).unwrap();
    fs::write(&config, &original).unwrap();

    // The manifest itself: a link to an endless device, or a file too large to be one.
    let manifest = bundle.join("manifest.json");
    fs::remove_file(&manifest).unwrap();
    symlink("/dev/zero", &manifest).unwrap();
    let error = run(&bundle);
    assert!(
        error.contains("manifest.json is not a regular file of at most 4194304 bytes"),
        "{error}"
    );
    fs::remove_file(&manifest).unwrap();
    fs::write(&manifest, vec![b' '; (4 << 20) + 1]).unwrap();
    let error = run(&bundle);
    assert!(
        error.contains("is not a regular file of at most"),
        "{error}"
    );
    fs::write(&manifest, &pristine).unwrap();
    // A listed size no machine here can hold (a sparse file can have it): an error, not an
    // abort. Only where the kernel refuses such an allocation (overcommit 0 or 2; with 1 it
    // would be granted and the read would take hours).
    let overcommit = fs::read_to_string("/proc/sys/vm/overcommit_memory").unwrap_or_default();
    if matches!(overcommit.trim(), "0" | "2") {
        let mut json: serde_json::Value = serde_json::from_slice(&pristine).unwrap();
        let huge: u64 = 1 << 43;
        json["files"]["config.json"]["size"] = huge.into();
        fs::write(&manifest, serde_json::to_vec(&json).unwrap()).unwrap();
        let sparse = fs::OpenOptions::new().write(true).open(&config).unwrap();
        sparse.set_len(huge).unwrap();
        drop(sparse);
        let error = run(&bundle);
        assert!(
            error.contains("config.json: cannot allocate the 8796093022208 bytes"),
            "{error}"
        );
        fs::write(&config, &original).unwrap();
        fs::write(&manifest, &pristine).unwrap();
    }
    success(&generate(&["--bundle", bundle.to_str().unwrap()], &dump));
    fs::remove_dir_all(&dir).unwrap();
}

fn export_overwriting(out: &Path) {
    success(&export_web(out, &["--quant", "none", "--overwrite"]));
}

/// The test drawings and their captions (`{"id", "image", "text"}` per line).
fn drawings_captions() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/drawings/captions.jsonl")
}

/// `lavender extract` of the drawings' odd samples (`--shard 1/2`: square-grass, sun-sea,
/// dog-ball) with the tiny Stable Diffusion at 32 x 32 on the CPU, into `out`.
fn extract_odd_drawings(out: &Path) {
    success(&lavender(&[
        "extract",
        "--sd",
        common::fixture_dir("sd-tiny").to_str().unwrap(),
        "--data",
        &format!("jsonl:{}", drawings_captions().display()),
        "--out",
        out.to_str().unwrap(),
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--shard",
        "1/2",
    ]));
}

/// The files of the bundle folder `dir` that its manifest lists, and the manifest.
fn read_bundle(dir: &Path) -> BundleFiles {
    let mut files = BundleFiles::new(dir);
    files.insert(MANIFEST_FILE, fs::read(dir.join(MANIFEST_FILE)).unwrap());
    for name in files.manifest().unwrap().files.keys() {
        files.insert(name.clone(), fs::read(dir.join(name)).unwrap());
    }
    files
}

/// `--teacher-maps` / `--examples`: the first samples with maps (circle-sky has none: it is not
/// in the odd shard) become examples whose files are listed with their SHA-256, whose maps are
/// what the teacher store holds for the id, and the bundle still loads for `generate`.
#[test]
fn bundles_ship_examples_with_the_teachers_maps() {
    let dir = temp_dir("export-web-examples");
    let maps = dir.join("maps");
    extract_odd_drawings(&maps);
    let bundle = dir.join("bundle");
    let examples = format!("jsonl:{}", drawings_captions().display());
    let report = success(&export_web(
        &bundle,
        &[
            "--adapter",
            &adapter(),
            "--teacher-maps",
            maps.to_str().unwrap(),
            "--examples",
            &examples,
            "--example-limit",
            "2",
        ],
    ));
    assert!(
        report.contains("example square-grass: 7 teacher words, 32x32 maps"),
        "{report}"
    );

    let files = read_bundle(&bundle);
    let manifest = files.manifest().unwrap();
    let ids: Vec<&str> = manifest.examples.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["square-grass", "sun-sea"]);
    let index = TeacherMapsIndex::open(&maps).unwrap();
    let drawings = drawings_captions().parent().unwrap().to_path_buf();
    for example in &manifest.examples {
        for name in [&example.image, &example.maps] {
            let entry = &manifest.files[name];
            let bytes = fs::read(bundle.join(name)).unwrap();
            assert_eq!(
                (bytes.len() as u64, sha256_hex(&bytes)),
                (entry.size, entry.sha256.clone())
            );
        }
        let cpu = burn::tensor::Device::flex();
        let teacher = index.get(&example.id, &cpu).unwrap().unwrap();
        let shipped = files.example_maps(example, &cpu).unwrap();
        assert_eq!(shipped.maps.dims(), [teacher.words.len(), 32, 32]);
        assert_eq!(shipped.words, teacher.words);
        assert_eq!(shipped.to_values().unwrap(), teacher.to_values().unwrap());
        let png = image::open(bundle.join(&example.image)).unwrap().to_rgb8();
        let original = image::open(drawings.join(format!("{}.png", example.id)))
            .unwrap()
            .to_rgb8();
        assert_eq!(
            png, original,
            "{} (small images are kept as they are)",
            example.id
        );
    }
    assert_eq!(manifest.examples[1].caption, "the sun above the sea");
    assert_eq!(files.verify().unwrap(), manifest);

    let dump = dir.join("dump.safetensors");
    let answer = success(&generate(&["--bundle", bundle.to_str().unwrap()], &dump));
    assert!(!tokens(&answer).is_empty());
    fs::remove_dir_all(&dir).unwrap();
}

/// `--teacher-maps` and `--examples` go together; a store with none of the samples' maps and an
/// unreadable image are refused, naming what is wrong, before the model loads.
#[test]
fn example_flags_go_together_and_bad_examples_are_named() {
    let dir = temp_dir("export-web-examples-errors");
    let out = dir.join("bundle");
    let export = |extra: &[&str]| {
        let mut args = vec![
            "export-web",
            "--vlm",
            "/nonexistent",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        lavender(&args)
    };
    let maps = dir.join("maps");
    let examples = format!("jsonl:{}", drawings_captions().display());
    for (extra, missing) in [
        (vec!["--teacher-maps", maps.to_str().unwrap()], "--examples"),
        (vec!["--examples", examples.as_str()], "--teacher-maps"),
        (vec!["--example-limit", "2"], "--examples"),
    ] {
        let output = export(&extra);
        assert_eq!(output.status.code(), Some(2), "{extra:?}");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(
            error.contains("required arguments were not provided") && error.contains(missing),
            "{extra:?}: {error}"
        );
    }

    let empty = dir.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let error = failure(&export(&[
        "--teacher-maps",
        empty.to_str().unwrap(),
        "--examples",
        &examples,
    ]));
    assert!(
        error.contains("none of the 6 samples") && error.contains("has teacher maps"),
        "{error}"
    );

    extract_odd_drawings(&maps);
    let broken = dir.join("broken.jsonl");
    fs::write(
        &broken,
        "{\"id\": \"square-grass\", \"image\": \"nowhere.png\", \"text\": \"a box\"}\n",
    )
    .unwrap();
    let error = failure(&export(&[
        "--teacher-maps",
        maps.to_str().unwrap(),
        "--examples",
        &format!("jsonl:{}", broken.display()),
    ]));
    assert!(
        error.contains("example `square-grass`: cannot read its image")
            && error.contains("nowhere.png"),
        "{error}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// A training run's `aligner.safetensors` as `train` writes it: a seeded fresh Aligner of
/// `heads` input channels (the default width and depth), written to `dir`.
fn write_aligner(dir: &Path, heads: usize) -> (PathBuf, Vec<u8>) {
    let device = burn::tensor::Device::flex();
    device.seed(5);
    let bytes = AlignerConfig::new(heads)
        .init(&device)
        .to_safetensors()
        .unwrap();
    fs::create_dir_all(dir).unwrap();
    let path = dir.join("aligner.safetensors");
    fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// `--aligner`: the run's file is shipped as it is, listed with its SHA-256 and described in the
/// manifest (heads = the model's cross-attention heads, depth and width read off the tensors),
/// loads back as the same Aligner, and the bundle still answers `generate --bundle`. A run
/// folder stands for its `aligner.safetensors`.
#[test]
fn bundles_carry_a_training_runs_aligner() {
    let dir = temp_dir("export-web-aligner");
    let run = dir.join("run");
    let (path, bytes) = write_aligner(&run, 4);
    let bundle = dir.join("bundle");
    let report = success(&export_web(
        &bundle,
        &[
            "--adapter",
            &adapter(),
            "--quant",
            "none",
            "--aligner",
            path.to_str().unwrap(),
        ],
    ));
    assert!(
        report.contains("aligner: 4 heads, 32 hidden, depth sim, relu6 (aligner.safetensors)"),
        "{report}"
    );
    let json = manifest(&bundle);
    assert_eq!(
        json["aligner"],
        serde_json::json!({
            "file": "aligner.safetensors", "heads": 4, "hidden": 32,
            "depth": "sim", "activation": "relu6",
        })
    );
    assert_eq!(
        json["files"]["aligner.safetensors"]["sha256"],
        sha256_hex(&bytes)
    );
    assert_eq!(
        json["files"]["aligner.safetensors"]["size"],
        bytes.len() as u64
    );
    assert_eq!(fs::read(bundle.join("aligner.safetensors")).unwrap(), bytes);
    let files = read_bundle(&bundle);
    let checked = files.verify().unwrap();
    let device = burn::tensor::Device::flex();
    let loaded = files.aligner(&checked, &device).unwrap().unwrap();
    assert_eq!(loaded.to_safetensors().unwrap(), bytes);

    let dump = dir.join("dump.safetensors");
    let answer = success(&generate(&["--bundle", bundle.to_str().unwrap()], &dump));
    assert!(!tokens(&answer).is_empty());

    // The run folder and the other activation.
    let leaky = dir.join("bundle-leaky");
    success(&export_web(
        &leaky,
        &[
            "--quant",
            "none",
            "--aligner",
            run.to_str().unwrap(),
            "--aligner-activation",
            "leaky-relu",
        ],
    ));
    assert_eq!(manifest(&leaky)["aligner"]["activation"], "leaky-relu");
    fs::remove_dir_all(&dir).unwrap();
}

/// An Aligner of other heads, or a missing file, fails the export naming the file; no bundle
/// folder is written. `--aligner-activation` needs `--aligner`.
#[test]
fn a_wrong_aligner_is_refused_naming_the_file() {
    let dir = temp_dir("export-web-aligner-errors");
    let (path, _) = write_aligner(&dir.join("run"), 6);
    let bundle = dir.join("bundle");
    let export = |aligner: &str| export_web(&bundle, &["--quant", "none", "--aligner", aligner]);
    let error = failure(&export(path.to_str().unwrap()));
    assert!(
        error.contains(&format!(
            "{}: `convs.0.weight` has shape [32, 6, 3, 3]",
            path.display()
        )) && error.contains("the model's cross-attention has 4 heads")
            && error.contains("expected [32, 4, 3, 3]"),
        "{error}"
    );
    assert!(!bundle.exists(), "a bundle folder was written");

    let missing = dir.join("nowhere.safetensors");
    let error = failure(&export(missing.to_str().unwrap()));
    assert!(
        error.contains(&format!("cannot read --aligner {}", missing.display())),
        "{error}"
    );
    assert!(!bundle.exists(), "a bundle folder was written");

    let output = export_web(&bundle, &["--aligner-activation", "relu6"]);
    assert_eq!(output.status.code(), Some(2));
    fs::remove_dir_all(&dir).unwrap();
}
