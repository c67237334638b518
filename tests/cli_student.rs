//! End-to-end checks of the student commands (`generate`, `attend`) through the real binary, on
//! the tiny Mllama fixture (`tests/fixtures/mllama-tiny`, written by `make_mllama_fixtures.py`).

use std::{
    fs,
    path::PathBuf,
    process::{Command, Output},
};

use safetensors::SafeTensors;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mllama-tiny")
}

fn lavender(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lavender"))
        .args(args)
        .output()
        .expect("the lavender binary runs")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lavender-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr_of_failure(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn golden_ints(name: &str) -> Vec<i64> {
    let bytes = fs::read(fixture().join("golden.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    tensors
        .tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn f32s(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f32>) {
    let tensors = SafeTensors::deserialize(bytes).unwrap();
    let view = tensors.tensor(name).unwrap();
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (view.shape().to_vec(), values)
}

fn base_args<'a>(image: &'a str, vlm: &'a str) -> Vec<&'a str> {
    vec!["--vlm", vlm, "--image", image, "--device", "cpu"]
}

/// Greedy generation from an image file and a question equals transformers' `generate`, and
/// the dumped cross-attention equals its attention probabilities.
#[test]
fn generate_matches_transformers_and_dumps_attention() {
    let dir = temp_dir("generate");
    let vlm = fixture().display().to_string();
    let image = fixture().join("image.png").display().to_string();
    let dump = dir.join("attention.safetensors");
    let mut args = vec!["generate"];
    args.extend(base_args(&image, &vlm));
    args.extend([
        "--prompt",
        "What is in the picture?",
        "--max-new-tokens",
        "16",
        "--json",
    ]);
    args.extend(["--dump-attention", dump.to_str().unwrap()]);
    let stdout = stdout_of(&lavender(&args));
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let tokens: Vec<i64> = json["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(tokens, golden_ints("generated_stop"));

    let dumped = fs::read(&dump).unwrap();
    let golden = fs::read(fixture().join("golden.safetensors")).unwrap();
    for layer in [1, 3] {
        let name = format!("cross_attention.{layer}");
        let (shape, ours) = f32s(&dumped, &name);
        let (_, theirs) = f32s(&golden, &name);
        assert_eq!(shape, vec![4, 29, 68]);
        let error = ours
            .iter()
            .zip(&theirs)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(error <= 1e-4, "{name}: max abs error {error}");
    }
    let (shape, _) = f32s(&dumped, "grid_maps");
    assert_eq!(shape, vec![29, 32, 32]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn generate_streams_text_and_applies_an_adapter() {
    let vlm = fixture().display().to_string();
    let adapter = fixture().join("adapter").display().to_string();
    let image = fixture().join("image.png").display().to_string();
    let mut args = vec!["generate"];
    args.extend(base_args(&image, &vlm));
    args.extend([
        "--adapter",
        &adapter,
        "--prompt",
        "Describe the image.",
        "--max-new-tokens",
        "4",
    ]);
    let stdout = stdout_of(&lavender(&args));
    assert!(stdout.ends_with('\n'), "{stdout:?}");
}

#[test]
fn attend_draws_the_answer_words() {
    let dir = temp_dir("attend");
    let vlm = fixture().display().to_string();
    let image = fixture().join("image.png").display().to_string();
    let png = dir.join("student.png");
    let mut args = vec!["attend"];
    args.extend(base_args(&image, &vlm));
    args.extend([
        "--prompt",
        "What is in the picture?",
        "--answer",
        "A brown dog near the zebra, a dog!",
    ]);
    args.extend(["--png", png.to_str().unwrap()]);
    let stdout = stdout_of(&lavender(&args));
    assert!(
        stdout.contains("6 words: a, brown, dog, near, the, zebra"),
        "{stdout}"
    );
    let grid = image::open(&png).unwrap();
    assert_eq!((grid.width(), grid.height()), (4 * 256, 2 * (256 + 22)));

    // The reference's sheared placement draws different maps for the same words.
    let legacy = dir.join("legacy.png");
    let mut args = vec!["attend"];
    args.extend(base_args(&image, &vlm));
    args.extend([
        "--prompt",
        "What is in the picture?",
        "--answer",
        "A brown dog near the zebra, a dog!",
    ]);
    args.extend(["--png", legacy.to_str().unwrap(), "--grid", "legacy"]);
    let stdout = stdout_of(&lavender(&args));
    assert!(stdout.contains("6 words"), "{stdout}");
    assert_ne!(fs::read(&legacy).unwrap(), fs::read(&png).unwrap());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = temp_dir("student-errors");
    let vlm = fixture().display().to_string();
    let image = fixture().join("image.png").display().to_string();
    let generate = |extra: &[&str], vlm: &str, image: &str| {
        let mut args = vec!["generate", "--prompt", "What is in the picture?"];
        args.extend(base_args(image, vlm));
        args.extend(extra);
        lavender(&args)
    };

    let sd = fixture().join("../sd-tiny").display().to_string();
    let stderr = stderr_of_failure(&generate(&[], &sd, &image));
    assert!(stderr.contains("missing config.json"), "{stderr}");

    let wrong_adapter = fixture().join("../sd-tiny/unet").display().to_string();
    let stderr = stderr_of_failure(&generate(&["--adapter", &wrong_adapter], &vlm, &image));
    assert!(stderr.contains("adapter_config.json"), "{stderr}");

    fs::write(dir.join("broken.png"), b"no").unwrap();
    let broken = dir.join("broken.png").display().to_string();
    let stderr = stderr_of_failure(&generate(&[], &vlm, &broken));
    assert!(stderr.contains("cannot decode the image"), "{stderr}");

    let long = "dog ".repeat(400);
    let mut args = vec!["generate", "--prompt", long.as_str()];
    args.extend(base_args(&image, &vlm));
    let stderr = stderr_of_failure(&lavender(&args));
    assert!(
        stderr.contains("more than max_position_embeddings"),
        "{stderr}"
    );
    fs::remove_dir_all(&dir).unwrap();
}
