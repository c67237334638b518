//! End-to-end checks of the student commands (`generate`, `attend`) through the real binary, on
//! the tiny Mllama fixture (`tests/fixtures/mllama-tiny`, written by `make_mllama_fixtures.py`).

#[path = "common/mod.rs"]
mod common;

use std::{fs, path::PathBuf, process::Output};

use common::{f32s, failure, lavender, success, temp_dir};
use safetensors::SafeTensors;

fn fixture() -> PathBuf {
    common::fixture_dir("mllama-tiny")
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

/// Runs `lavender` with `leading`, then the model, image and CPU device, then `trailing`.
fn student(leading: &[&str], image: &str, vlm: &str, trailing: &[&str]) -> Output {
    let mut args = leading.to_vec();
    args.extend(["--vlm", vlm, "--image", image, "--device", "cpu"]);
    args.extend(trailing);
    lavender(&args)
}

/// Greedy generation from an image file and a question equals transformers' `generate`, and
/// the dumped cross-attention equals its attention probabilities.
#[test]
fn generate_matches_transformers_and_dumps_attention() {
    let dir = temp_dir("generate");
    let vlm = fixture().display().to_string();
    let image = fixture().join("image.png").display().to_string();
    let dump = dir.join("attention.safetensors");
    let stdout = success(&student(
        &["generate"],
        &image,
        &vlm,
        &[
            "--prompt",
            "What is in the picture?",
            "--max-new-tokens",
            "16",
            "--json",
            "--dump-attention",
            dump.to_str().unwrap(),
        ],
    ));
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let tokens: Vec<i64> = json["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(tokens, golden_ints("generated_stop"));

    let dumped_bytes = fs::read(&dump).unwrap();
    let dumped = SafeTensors::deserialize(&dumped_bytes).unwrap();
    let golden_bytes = fs::read(fixture().join("golden.safetensors")).unwrap();
    let golden = SafeTensors::deserialize(&golden_bytes).unwrap();
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
    let stdout = success(&student(
        &["generate"],
        &image,
        &vlm,
        &[
            "--adapter",
            &adapter,
            "--prompt",
            "Describe the image.",
            "--max-new-tokens",
            "4",
        ],
    ));
    assert!(stdout.ends_with('\n'), "{stdout:?}");
}

#[test]
fn attend_draws_the_answer_words() {
    let dir = temp_dir("attend");
    let vlm = fixture().display().to_string();
    let image = fixture().join("image.png").display().to_string();
    let attend = |extra: &[&str]| {
        let mut trailing = vec![
            "--prompt",
            "What is in the picture?",
            "--answer",
            "A brown dog near the zebra, a dog!",
        ];
        trailing.extend(extra);
        student(&["attend"], &image, &vlm, &trailing)
    };
    let png = dir.join("student.png");
    let stdout = success(&attend(&["--png", png.to_str().unwrap()]));
    assert!(
        stdout.contains("6 words: a, brown, dog, near, the, zebra"),
        "{stdout}"
    );
    let grid = image::open(&png).unwrap();
    assert_eq!((grid.width(), grid.height()), (4 * 256, 2 * (256 + 22)));

    // The reference's sheared placement draws different maps for the same words.
    let legacy = dir.join("legacy.png");
    let stdout = success(&attend(&[
        "--png",
        legacy.to_str().unwrap(),
        "--grid",
        "legacy",
    ]));
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
        student(
            &["generate", "--prompt", "What is in the picture?"],
            image,
            vlm,
            extra,
        )
    };

    let sd = fixture().join("../sd-tiny").display().to_string();
    let stderr = failure(&generate(&[], &sd, &image));
    assert!(stderr.contains("missing config.json"), "{stderr}");

    let wrong_adapter = fixture().join("../sd-tiny/unet").display().to_string();
    let stderr = failure(&generate(&["--adapter", &wrong_adapter], &vlm, &image));
    assert!(stderr.contains("adapter_config.json"), "{stderr}");

    fs::write(dir.join("broken.png"), b"no").unwrap();
    let broken = dir.join("broken.png").display().to_string();
    let stderr = failure(&generate(&[], &vlm, &broken));
    assert!(stderr.contains("cannot decode the image"), "{stderr}");

    let long = "dog ".repeat(400);
    let stderr = failure(&student(
        &["generate", "--prompt", long.as_str()],
        &image,
        &vlm,
        &[],
    ));
    assert!(
        stderr.contains("more than max_position_embeddings"),
        "{stderr}"
    );

    // A model folder whose chat template doubles a string (it used to abort at 6.6 GB) or
    // nests loops (it used to hang) fails on the template budget, naming the file.
    let hostile = dir.join("hostile");
    fs::create_dir_all(&hostile).unwrap();
    for entry in fs::read_dir(fixture()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fs::copy(&path, hostile.join(path.file_name().unwrap())).unwrap();
        }
    }
    for template in [
        "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
    ] {
        fs::write(
            hostile.join("chat_template.json"),
            serde_json::json!({ "chat_template": template }).to_string(),
        )
        .unwrap();
        let stderr = failure(&generate(&[], hostile.to_str().unwrap(), &image));
        assert!(
            stderr.contains("chat_template.json: rendering this conversation needs more than the template budget"),
            "{stderr}"
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// `eval` on a jsonl dataset and on a VLMEvalKit TSV: one row per question, the right ones
/// scored right (the expected answer is what `generate` answers), the summary split by
/// category; an unreadable image stops the run naming its row and leaves no results file.
#[test]
fn eval_scores_jsonl_and_vlmevalkit_questions() {
    use base64::Engine;
    let dir = temp_dir("eval");
    let vlm = fixture().display().to_string();
    let image = fixture().join("image.png");
    let question = "What is in the picture?";
    let stdout = success(&student(
        &["generate", "--json", "--max-new-tokens", "6"],
        &image.display().to_string(),
        &vlm,
        &["--prompt", question],
    ));
    let generated: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let answer = generated["text"].as_str().unwrap().trim().to_string();
    assert!(!answer.is_empty());

    // jsonl: the generated answer (right) and another (wrong).
    fs::copy(&image, dir.join("image.png")).unwrap();
    let line = |id: &str, answer: &str| {
        serde_json::json!({"id": id, "image": "image.png", "conversations": [
            {"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
        .to_string()
    };
    fs::write(
        dir.join("questions.jsonl"),
        format!(
            "{}\n{}\n",
            line("right", &answer),
            line("wrong", "zebra crossing")
        ),
    )
    .unwrap();
    let out = dir.join("results.tsv");
    let eval = |data: &str, out: &std::path::Path| {
        lavender(&[
            "eval",
            "--vlm",
            &vlm,
            "--data",
            data,
            "--out",
            &out.display().to_string(),
            "--max-new-tokens",
            "6",
            "--device",
            "cpu",
        ])
    };
    let jsonl = format!("jsonl:{}", dir.join("questions.jsonl").display());
    let stdout = success(&eval(&jsonl, &out));
    assert!(stdout.contains("accuracy 0.5000 (1 of 2)"), "{stdout}");
    let results = fs::read_to_string(&out).unwrap();
    let rows: Vec<Vec<&str>> = results.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        rows[0],
        [
            "id",
            "category",
            "question",
            "answer",
            "prediction",
            "correct"
        ]
    );
    assert_eq!(
        (rows[1][0], rows[1][4], rows[1][5]),
        ("right", answer.as_str(), "1")
    );
    assert_eq!((rows[2][0], rows[2][5]), ("wrong", "0"));
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("results.tsv.summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["count"], 2);
    assert_eq!(summary["accuracy"], 0.5);

    // A VLMEvalKit TSV: base64 image, row 2 reuses row 1's image, categories.
    let png = base64::engine::general_purpose::STANDARD.encode(fs::read(&image).unwrap());
    fs::write(
        dir.join("bench.tsv"),
        format!(
            "index\timage\tquestion\tanswer\tcategory\n\
             1\t{png}\t{question}\t{answer}\tobjects\n\
             2\t1\t{question}\tzebra\tanimals\n"
        ),
    )
    .unwrap();
    let tsv_out = dir.join("bench-results.tsv");
    let stdout = success(&eval(
        &format!("tsv:{}", dir.join("bench.tsv").display()),
        &tsv_out,
    ));
    assert!(stdout.contains("accuracy 0.5000 (1 of 2)"), "{stdout}");
    assert!(stdout.contains("objects: 1.0000 (1 of 1)"), "{stdout}");
    assert!(stdout.contains("animals: 0.0000 (0 of 1)"), "{stdout}");

    // An image that does not decode: the row is named, nothing is written.
    let broken = base64::engine::general_purpose::STANDARD.encode(b"not an image at all");
    fs::write(
        dir.join("broken.tsv"),
        format!("index\timage\tquestion\tanswer\n1\t{png}\tq\ta\n7\t{broken}\tq\ta\n"),
    )
    .unwrap();
    let broken_out = dir.join("broken-results.tsv");
    let stderr = failure(&eval(
        &format!("tsv:{}", dir.join("broken.tsv").display()),
        &broken_out,
    ));
    assert!(
        stderr.contains("question 2 (id 7): cannot read its image"),
        "{stderr}"
    );
    assert!(!broken_out.exists());
    assert!(!dir.join("broken-results.tsv.summary.json").exists());

    let stderr = failure(&eval(&jsonl, &dir.join("missing/results.tsv")));
    assert!(stderr.contains("does not exist"), "{stderr}");
    fs::remove_dir_all(&dir).unwrap();
}
