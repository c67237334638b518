//! End-to-end checks of `lavender train` through the real binary, on the tiny Mllama fixture
//! (`tests/fixtures/mllama-tiny`) with teacher maps that `lavender extract` writes from the
//! tiny SD fixture for six captioned drawings (`tests/fixtures/drawings/captions.jsonl`).
//!
//! Each test extracts its own teacher folder with the one-pass `noise` recipe (a fraction of a
//! second for the six drawings), so every test owns, and removes, all it writes.

#[path = "common/mod.rs"]
mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{failure, lavender, success, temp_dir};
use serde_json::Value;

fn vlm() -> PathBuf {
    common::fixture_dir("mllama-tiny")
}

fn drawings_dir() -> PathBuf {
    // Canonical: `train` records the data path without `..`.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/drawings")
        .canonicalize()
        .unwrap()
}

fn drawings_data() -> String {
    format!("jsonl:{}", drawings_dir().join("captions.jsonl").display())
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Teacher maps (32x32) of the six drawings in `dir/teacher`.
fn extract_teacher(dir: &Path) -> PathBuf {
    let out = dir.join("teacher");
    let sd = common::fixture_dir("sd-tiny");
    success(&lavender(&[
        "extract",
        "--sd",
        path(&sd),
        "--data",
        &drawings_data(),
        "--out",
        path(&out),
        "--image-size",
        "32",
        "--recipe",
        "noise",
        "--timesteps",
        "500",
        "--device",
        "cpu",
    ]));
    assert!(out.join("index.jsonl").is_file());
    out
}

/// The arguments of a new run on the CPU: the fixture model, `data`, `teacher`, `out`, one
/// sample per step (the steps these tests count), then `extra`.
fn train_args(data: &str, teacher: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--vlm",
        path(&vlm()),
        "--data",
        data,
        "--teacher-maps",
        path(teacher),
        "--out",
        path(out),
        "--device",
        "cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !extra.contains(&"--batch") {
        args.extend(["--batch".to_string(), "1".to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn train(data: &str, teacher: &Path, out: &Path, extra: &[&str]) -> Output {
    let args = train_args(data, teacher, out, extra);
    lavender(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
struct Metric {
    step: u64,
    epoch: u64,
    split: String,
    ce: f64,
    align: f64,
    total: f64,
    matched_words: f64,
    lr: f64,
}

fn metrics(run: &Path) -> Vec<Metric> {
    fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let json: Value = serde_json::from_str(line).unwrap();
            let number = |key: &str| {
                json[key]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{key} in {line}"))
            };
            Metric {
                step: json["step"].as_u64().unwrap(),
                epoch: json["epoch"].as_u64().unwrap(),
                split: json["split"].as_str().unwrap().to_string(),
                ce: number("ce"),
                align: number("align"),
                total: number("total"),
                matched_words: number("matched_words"),
                lr: number("lr"),
            }
        })
        .collect()
}

fn split(records: &[Metric], name: &str) -> Vec<Metric> {
    records
        .iter()
        .filter(|m| m.split == name)
        .cloned()
        .collect()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every `step-*` folder of `checkpoints` is complete: its state.json parses and records the
/// size of each of its files. Returns the steps.
fn complete_checkpoints(checkpoints: &Path) -> Vec<u64> {
    let mut steps = Vec::new();
    for name in names(checkpoints) {
        let Some(step) = name.strip_prefix("step-") else {
            continue;
        };
        let dir = checkpoints.join(&name);
        let state: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
        assert_eq!(state["state"]["step"].as_u64(), Some(step.parse().unwrap()));
        let files = state["files"].as_array().unwrap();
        let mut listed: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
        listed.sort();
        assert_eq!(listed, ["model.bpk", "optimizer.bpk"], "{name}");
        for file in files {
            let size = fs::metadata(dir.join(file["name"].as_str().unwrap()))
                .unwrap()
                .len();
            assert_eq!(Some(size), file["bytes"].as_u64(), "{name}: {file}");
        }
        steps.push(step.parse().unwrap());
    }
    steps
}

/// Every path under `dir` whose name has `.partial` in it.
fn partials(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().contains(".partial") {
            found.push(entry.path());
        }
        if entry.file_type().unwrap().is_dir() {
            found.extend(partials(&entry.path()));
        }
    }
    found
}

fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A Lavender run writes its metrics (finite losses, matched words, a held-out evaluation),
/// the plot, the resolved settings, a PEFT adapter that `generate` loads, and the Aligner.
#[test]
fn lavender_trains_and_writes_the_run_folder() {
    let dir = temp_dir("train-run");
    let teacher = extract_teacher(&dir);
    let run = dir.join("run");
    // --data relative to the working folder: config.toml records it absolute, for --resume.
    let args = train_args(
        "jsonl:captions.jsonl",
        &teacher,
        &run,
        &["--max-steps", "3"],
    );
    let output = Command::new(env!("CARGO_BIN_EXE_lavender"))
        .args(&args)
        .current_dir(drawings_dir())
        .output()
        .unwrap();
    let stdout = success(&output);
    assert!(stdout.contains("trained 3 steps (Lavender)"), "{stdout}");
    assert!(stdout.contains("held-out loss"), "{stdout}");

    let records = metrics(&run);
    let train = split(&records, "train");
    assert_eq!(train.iter().map(|m| m.step).collect::<Vec<_>>(), [1, 2, 3]);
    for m in &train {
        assert!(m.ce.is_finite() && m.ce > 0.0, "{m:?}");
        assert!(m.align.is_finite() && m.align > 0.0, "{m:?}");
        // total = ce + lambda * align, lambda 10 by default.
        assert!((m.total - (m.ce + 10.0 * m.align)).abs() < 1e-4, "{m:?}");
        assert!(m.matched_words > 0.0, "{m:?}");
        assert_eq!(m.lr, 1e-4);
        assert_eq!(m.epoch, 0);
    }
    let eval = split(&records, "eval");
    assert_eq!(eval.len(), 1, "one evaluation at the end: {records:?}");
    assert_eq!(eval[0].step, 3);
    assert!(eval[0].ce.is_finite() && eval[0].align.is_finite());
    assert!(eval[0].matched_words > 0.0);

    let png = fs::read(run.join("loss.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let plot = image::load_from_memory(&png).unwrap();
    assert!(plot.width() > 100 && plot.height() > 100);

    let config: toml::Table = fs::read_to_string(run.join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(config["lambda"].as_float(), Some(10.0));
    assert_eq!(config["max_steps"].as_integer(), Some(3));
    assert_eq!(config["train_samples"].as_integer(), Some(5));
    assert_eq!(config["eval_samples_held_out"].as_integer(), Some(1));
    assert_eq!(config["map_size"].as_integer(), Some(32));
    assert_eq!(config["device"].as_str(), Some("cpu"));
    assert_eq!(config["teacher_maps"].as_str(), Some(path(&teacher)));
    assert_eq!(config["data"].as_str(), Some(drawings_data().as_str()));
    assert_eq!(config["lora"]["r"].as_integer(), Some(8));
    assert_eq!(config["lora"]["alpha"].as_float(), Some(32.0));

    assert_eq!(
        fs::read_to_string(run.join("checkpoints/latest")).unwrap(),
        "step-000003\n"
    );
    assert_eq!(complete_checkpoints(&run.join("checkpoints")), [3]);

    // The adapter: PEFT's names and shapes for q/v of 5 vision and 5 text layers, and B moved
    // off its zero initialisation.
    let adapter: Value =
        serde_json::from_str(&fs::read_to_string(run.join("adapter/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(adapter["peft_type"], "LORA");
    assert_eq!(adapter["r"], 8);
    assert_eq!(
        adapter["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    let factors = common::f32_tensors(&run.join("adapter/adapter_model.safetensors"));
    assert_eq!(factors.len(), 40);
    for (name, shape, values) in &factors {
        assert!(name.starts_with("base_model.model.model."), "{name}");
        if name.ends_with("lora_A.weight") {
            assert_eq!(shape[0], 8, "{name}");
        } else {
            assert!(name.ends_with("lora_B.weight"), "{name}");
            assert_eq!(shape[1], 8, "{name}");
            assert!(values.iter().any(|v| *v != 0.0), "{name} is still zero");
        }
        assert!(values.iter().all(|v| v.is_finite()), "{name}");
    }
    let aligner = common::f32_tensors(&run.join("aligner.safetensors"));
    assert!(!aligner.is_empty());

    // `generate` loads the adapter onto the base model.
    let stdout = success(&lavender(&[
        "generate",
        "--vlm",
        path(&vlm()),
        "--adapter",
        path(&run.join("adapter")),
        "--image",
        path(&drawings_dir().join("circle-sky.png")),
        "--prompt",
        "What is in the picture?",
        "--max-new-tokens",
        "4",
        "--json",
        "--device",
        "cpu",
    ]));
    let json: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(!json["token_ids"].as_array().unwrap().is_empty(), "{json}");
    assert!(partials(&run).is_empty());
    fs::remove_dir_all(&dir).unwrap();
}

/// Eight steps on one sample with a high learning rate and LoRA on every projection lower the
/// cross-entropy, and the alignment loss well below where plain SFT (the control) leaves it.
/// Measured with the authors' defaults: ce 5.930 -> 5.773, align 0.0617 -> 0.0426 (SFT: 0.0613),
/// total 6.547 -> 6.200.
#[test]
fn the_loss_decreases_on_one_sample() {
    let dir = temp_dir("train-decreases");
    let teacher = extract_teacher(&dir);
    let jsonl = dir.join("one.jsonl");
    fs::write(
        &jsonl,
        format!(
            "{}\n",
            serde_json::json!({
                "id": "circle-sky",
                "image": drawings_dir().join("circle-sky.png"),
                "text": "a red ball in the blue sky",
            })
        ),
    )
    .unwrap();
    // The same 8 steps with Lavender and with plain SFT (the control), under the defaults but
    // a rate that moves the tiny model in a few steps.
    let run_with = |name: &str, lambda: &str| {
        let run = dir.join(name);
        success(&train(
            &format!("jsonl:{}", jsonl.display()),
            &teacher,
            &run,
            &[
                "--max-steps",
                "8",
                "--eval-fraction",
                "0",
                "--lr",
                "5e-3",
                "--lambda",
                lambda,
                "--lora-targets",
                "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
            ],
        ));
        let records = metrics(&run);
        assert!(split(&records, "eval").is_empty(), "nothing held out");
        let train = split(&records, "train");
        assert_eq!(train.len(), 8);
        train
    };
    let lavender = run_with("lavender", "10");
    let sft = run_with("sft", "0");
    let (first, last) = (&lavender[0], &lavender[7]);
    assert!(first.matched_words > 0.0);
    assert_eq!(
        (first.ce, first.align),
        (sft[0].ce, sft[0].align),
        "the same start"
    );
    eprintln!(
        "ce {:.3} -> {:.3}, align {:.4} -> {:.4} (SFT {:.4}), total {:.3} -> {:.3}",
        first.ce, last.ce, first.align, last.align, sft[7].align, first.total, last.total
    );
    assert!(last.ce < first.ce - 0.1, "ce {} -> {}", first.ce, last.ce);
    assert!(
        last.align < 0.8 * first.align && last.align < 0.85 * sft[7].align,
        "align {} -> {} (SFT: {})",
        first.align,
        last.align,
        sft[7].align
    );
    assert!(
        last.total < first.total - 0.25,
        "total {} -> {}",
        first.total,
        last.total
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// A run killed with SIGKILL after its first checkpoint and continued with `--resume` ends with
/// the same adapter, Aligner and metrics, bit for bit, as one never interrupted; the killed
/// run left only complete checkpoints, and no temporary folder survives the resumed run.
#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    let dir = temp_dir("train-resume");
    let teacher = extract_teacher(&dir);
    // 8 steps of 2 samples (one padded batch each, epochs ordered by length) over 5 training
    // samples: the resumed part crosses an epoch inside a batch (a new order and a StepLR
    // decay) and an evaluation (at 8; the one at 4 is kept from before the kill).
    // Checkpoints at 5 (10 samples: the end of the second epoch; a resume there must not
    // change the epoch or the learning rate of step 6) and 8.
    let settings = [
        "--batch",
        "2",
        "--group-by-length",
        "--max-steps",
        "8",
        "--checkpoint-every",
        "5",
        "--eval-every",
        "4",
        "--lr",
        "1e-2",
    ];
    let whole = dir.join("whole");
    success(&train(&drawings_data(), &teacher, &whole, &settings));

    let killed = dir.join("killed");
    let args = train_args(&drawings_data(), &teacher, &killed, &settings);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lavender"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let latest = killed.join("checkpoints/latest");
    let started = Instant::now();
    while !latest.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!killed.join("adapter").exists(), "killed before the end");

    // Only complete checkpoints under their final names, `latest` naming one of them.
    let steps = complete_checkpoints(&killed.join("checkpoints"));
    assert_eq!(steps, [5], "killed after the first checkpoint");
    let named = fs::read_to_string(&latest).unwrap();
    assert!(
        steps.iter().any(|s| named.trim() == format!("step-{s:06}")),
        "{named}"
    );

    // What a kill in the middle of writing a checkpoint leaves: a hidden temporary folder,
    // which the resumed run neither loads nor keeps.
    let torn = killed.join("checkpoints/.step-000004.partial-1");
    fs::create_dir_all(&torn).unwrap();
    fs::write(torn.join("model.bpk"), b"half a checkpoint").unwrap();

    let resumed = lavender(&["train", "--resume", path(&killed)]);
    success(&resumed);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.contains("resuming"), "{stderr}");

    for file in [
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "aligner.safetensors",
    ] {
        assert!(
            fs::read(whole.join(file)).unwrap() == fs::read(killed.join(file)).unwrap(),
            "{file} differs after the resume"
        );
    }
    // The lines themselves, but for the speed (the last field).
    let lines = |run: &Path| -> Vec<String> {
        fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|line| line.split(",\"samples_per_s\"").next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        lines(&whole),
        lines(&killed),
        "metrics differ after the resume"
    );
    let (a, b) = (metrics(&whole), metrics(&killed));
    assert_eq!(split(&a, "train").len(), 8);
    assert_eq!(split(&a, "eval").len(), 2, "steps 4 and 8");
    assert_eq!(a, b, "metrics differ after the resume");
    // StepLR: a step takes the epoch (and rate) of its first sample. Samples 0-4 are epoch 0,
    // 5-9 epoch 1 and 10-14 epoch 2, so steps of 2 start in epochs 0, 0, 0, 1, 1, 2, 2, 2.
    let train = split(&a, "train");
    let epochs: Vec<u64> = train.iter().map(|m| m.epoch).collect();
    assert_eq!(epochs, [0, 0, 0, 1, 1, 2, 2, 2]);
    for metric in &train {
        let expected = 1e-2 * 0.85f64.powi(metric.epoch as i32);
        assert!((metric.lr - expected).abs() < 1e-12, "{train:?}");
    }

    assert_eq!(complete_checkpoints(&killed.join("checkpoints")), [5, 8]);
    assert!(partials(&killed).is_empty(), "{:?}", partials(&killed));
    fs::remove_dir_all(&dir).unwrap();
}

/// `--lambda 0` is plain SFT on the same path: the alignment loss is still computed and
/// logged, the total is the cross-entropy, and the first step's losses (before any update)
/// equal a Lavender run's.
#[test]
fn lambda_zero_is_plain_sft_on_the_same_path() {
    let dir = temp_dir("train-sft");
    let teacher = extract_teacher(&dir);
    let sft = dir.join("sft");
    let stdout = success(&train(
        &drawings_data(),
        &teacher,
        &sft,
        &["--max-steps", "2", "--lambda", "0"],
    ));
    assert!(stdout.contains("trained 2 steps (plain SFT)"), "{stdout}");
    let lavender_run = dir.join("lavender");
    success(&train(
        &drawings_data(),
        &teacher,
        &lavender_run,
        &["--max-steps", "1"],
    ));

    let sft_records = metrics(&sft);
    let train = split(&sft_records, "train");
    assert_eq!(train.len(), 2);
    for m in &sft_records {
        assert_eq!(m.total, m.ce, "{m:?}");
        assert!(m.align.is_finite() && m.align > 0.0, "{m:?}");
        assert!(m.matched_words > 0.0, "{m:?}");
    }
    let first = &split(&metrics(&lavender_run), "train")[0];
    assert_eq!(train[0].ce, first.ce);
    assert_eq!(train[0].align, first.align);
    assert_eq!(train[0].matched_words, first.matched_words);
    assert!(first.total > first.ce);
    fs::remove_dir_all(&dir).unwrap();
}

/// A `--full` run ends with `model/`, a Hugging Face checkpoint of the trained weights
/// (transformers' names and layout, as the fixture transformers wrote) that `lavender` loads
/// as a model folder.
#[test]
fn a_full_run_writes_a_hugging_face_model() {
    let dir = temp_dir("train-full");
    let teacher = extract_teacher(&dir);
    let run = dir.join("full");
    success(&train(
        &drawings_data(),
        &teacher,
        &run,
        &["--full", "--max-steps", "2", "--lr", "1e-3"],
    ));
    let model = run.join("model");
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "chat_template.json",
    ] {
        assert!(
            model.join(file).is_file(),
            "{file} missing from {}",
            model.display()
        );
    }
    let trained_bytes = fs::read(model.join("model.safetensors")).unwrap();
    let trained = safetensors::SafeTensors::deserialize(&trained_bytes).unwrap();
    let original_bytes = fs::read(vlm().join("model.safetensors")).unwrap();
    let original = safetensors::SafeTensors::deserialize(&original_bytes).unwrap();
    let mut names: Vec<&str> = trained.names().into_iter().collect();
    let mut expected: Vec<&str> = original.names().into_iter().collect();
    names.sort();
    expected.sort();
    assert_eq!(names, expected);
    let mut changed = 0;
    for name in &names {
        let (a, b) = (
            trained.tensor(name).unwrap(),
            original.tensor(name).unwrap(),
        );
        assert_eq!(a.shape(), b.shape(), "{name}");
        changed += usize::from(a.data() != b.data());
    }
    assert!(
        changed > names.len() / 2,
        "only {changed} of {} tensors trained",
        names.len()
    );
    // The exported folder is a model folder like any other.
    let stdout = success(&lavender(&[
        "generate",
        "--vlm",
        path(&model),
        "--image",
        path(&drawings_dir().join("circle-sky.png")),
        "--prompt",
        "What is in the picture?",
        "--max-new-tokens",
        "3",
        "--device",
        "cpu",
    ]));
    assert!(!stdout.trim().is_empty());
    fs::remove_dir_all(&dir).unwrap();
}

/// Damaged or mismatched inputs stop `train` with exit code 1 and a message naming the
/// problem, not a panic.
#[test]
fn bad_inputs_are_clear_errors() {
    let dir = temp_dir("train-errors");
    let teacher = extract_teacher(&dir);

    // A truncated checkpoint on --resume.
    let run = dir.join("run");
    success(&train(
        &drawings_data(),
        &teacher,
        &run,
        &["--max-steps", "1"],
    ));
    let model = run.join("checkpoints/step-000001/model.bpk");
    let size = fs::metadata(&model).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    let stderr = failure(&lavender(&["train", "--resume", path(&run)]));
    assert_no_panic(&stderr);
    assert!(
        stderr.contains("model.bpk is truncated or damaged"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("state.json records {size}")),
        "{stderr}"
    );

    // --out on an existing run, --resume on a folder that is not one.
    let stderr = failure(&train(
        &drawings_data(),
        &teacher,
        &run,
        &["--max-steps", "1"],
    ));
    assert_no_panic(&stderr);
    assert!(stderr.contains("already holds a run"), "{stderr}");
    let stderr = failure(&lavender(&["train", "--resume", path(&teacher)]));
    assert_no_panic(&stderr);
    assert!(
        stderr.contains(&format!("{} is not a run folder", teacher.display())),
        "{stderr}"
    );

    // A truncated teacher store.
    let damaged = dir.join("damaged-teacher");
    fs::create_dir_all(&damaged).unwrap();
    for name in names(&teacher) {
        fs::copy(teacher.join(&name), damaged.join(&name)).unwrap();
    }
    let shard = damaged.join("maps-00000.safetensors");
    let size = fs::metadata(&shard).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    let stderr = failure(&train(
        &drawings_data(),
        &damaged,
        &dir.join("run-damaged"),
        &["--max-steps", "1"],
    ));
    assert_no_panic(&stderr);
    assert!(stderr.contains("cannot open the teacher maps"), "{stderr}");
    assert!(
        stderr.contains("maps-00000.safetensors: truncated"),
        "{stderr}"
    );

    // Teacher maps of another side than --map-size.
    let stderr = failure(&train(
        &drawings_data(),
        &teacher,
        &dir.join("run-16"),
        &["--max-steps", "1", "--map-size", "16"],
    ));
    assert_no_panic(&stderr);
    assert!(
        stderr.contains("the teacher maps are 32x32, the student's are 16x16"),
        "{stderr}"
    );

    // A missing model folder.
    let missing = dir.join("no-such-model");
    let mut args = train_args(&drawings_data(), &teacher, &dir.join("run-missing"), &[]);
    args[2] = path(&missing).to_string();
    let stderr = failure(&lavender(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert_no_panic(&stderr);
    assert!(
        stderr.contains(&format!("--vlm {} is not a folder", missing.display())),
        "{stderr}"
    );
    assert!(
        !dir.join("run-missing").exists(),
        "no run folder for a refused run"
    );

    // A teacher folder with no maps for this data: refused rather than a "Lavender" run that
    // is plain SFT.
    let empty_teacher = dir.join("empty-teacher");
    fs::create_dir_all(&empty_teacher).unwrap();
    fs::write(empty_teacher.join("index.jsonl"), b"").unwrap();
    let out = dir.join("run-no-maps");
    let stderr = failure(&train(
        &drawings_data(),
        &empty_teacher,
        &out,
        &["--max-steps", "1"],
    ));
    assert_no_panic(&stderr);
    assert!(
        stderr.contains("none of the 5 training samples has teacher maps"),
        "{stderr}"
    );
    assert!(!out.exists());

    // An adapter this code cannot apply (DoRA) fails when the model is built, after the run
    // folder was made: the folder is removed again, so the same command can be re-run.
    let dora = dir.join("dora-adapter");
    fs::create_dir_all(&dora).unwrap();
    let adapter = vlm().join("adapter");
    fs::copy(
        adapter.join("adapter_model.safetensors"),
        dora.join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(adapter.join("adapter_config.json")).unwrap())
            .unwrap();
    config["use_dora"] = true.into();
    fs::write(dora.join("adapter_config.json"), config.to_string()).unwrap();
    let out = dir.join("run-dora");
    let stderr = failure(&train(
        &drawings_data(),
        &teacher,
        &out,
        &["--max-steps", "1", "--adapter", path(&dora)],
    ));
    assert_no_panic(&stderr);
    assert!(stderr.contains("`use_dora` is set"), "{stderr}");
    assert!(!out.exists(), "the failed run's folder is removed");

    // Sizes that used to abort on allocation are refused up front, leaving no run folder.
    for (flags, expected) in [
        (&["--lora-r", "1000000"][..], "--lora-r must be 1 to 4096"),
        (&["--batch", "1000000"][..], "--batch must be 1 to 65536"),
        (
            &["--batch", "6"][..],
            "--batch 6 is more than the 5 training samples",
        ),
        (
            &["--map-size", "100000"][..],
            "--map-size must be 1 to 1024",
        ),
        (
            &["--batch", "2", "--micro-batch", "3"][..],
            "--micro-batch 3 is larger than --batch 2",
        ),
        // Flags that made no sense were accepted before.
        (
            &["--lr-gamma=-1"][..],
            "--lr-gamma must be a positive number",
        ),
        (&["--max-steps", "0"][..], "--max-steps must be positive"),
        (&["--clip-norm=-1"][..], "cannot be negative"),
        (&["--lr", "NaN"][..], "--lr must be a positive number"),
        (&["--lambda", "inf"][..], "--lambda must be a number"),
    ] {
        let out = dir.join("run-sizes");
        let stderr = failure(&train(&drawings_data(), &teacher, &out, flags));
        assert_no_panic(&stderr);
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert!(!out.exists(), "{flags:?} left a run folder");
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// A diverging run (a huge learning rate: step 1's update explodes, step 2's loss is not
/// finite) stops before any further update and says where its last good state is (here the
/// start); `--resume --lr` continues from it with a sane rate, which the run's config.toml
/// then records. Other settings cannot change on `--resume`.
#[test]
fn a_diverged_run_resumes_with_a_lower_learning_rate() {
    let dir = temp_dir("train-diverge");
    let teacher = extract_teacher(&dir);
    let run = dir.join("run");
    let output = train(
        &drawings_data(),
        &teacher,
        &run,
        &[
            "--max-steps",
            "6",
            "--checkpoint-every",
            "100",
            "--lr",
            "1e30",
        ],
    );
    let stderr = failure(&output);
    assert_no_panic(&stderr);
    assert!(
        stderr.contains("step 2: both losses are not finite"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the last good state is the run's start"),
        "{stderr}"
    );
    assert!(complete_checkpoints(&run.join("checkpoints")).is_empty());

    let output = lavender(&["train", "--resume", path(&run), "--batch", "2"]);
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");

    let resumed = lavender(&["train", "--resume", path(&run), "--lr", "1e-4"]);
    success(&resumed);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        stderr.contains("resuming with --lr 0.0001 (was 1000000000000000000000000000000)"),
        "{stderr}"
    );
    let config = fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("lr = 0.0001"), "{config}");
    assert!(run.join("adapter/adapter_model.safetensors").exists());
    fs::remove_dir_all(&dir).unwrap();
}

/// A sample whose image cannot be read (a 0-byte file) is skipped and listed in the run's
/// skipped.jsonl, once, and the run ends normally; with --strict it stops the run, naming it.
#[test]
fn an_unreadable_image_is_skipped_and_recorded() {
    let dir = temp_dir("train-skip");
    let teacher = extract_teacher(&dir);
    let data_dir = dir.join("data");
    fs::create_dir_all(&data_dir).unwrap();
    for entry in fs::read_dir(drawings_dir()).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), data_dir.join(entry.file_name())).unwrap();
    }
    fs::write(data_dir.join("house.png"), b"").unwrap();
    let data = format!("jsonl:{}", data_dir.join("captions.jsonl").display());

    let run = dir.join("run");
    let stdout = success(&train(
        &data,
        &teacher,
        &run,
        &["--max-steps", "6", "--eval-every", "3"],
    ));
    assert!(stdout.contains("1 sample(s) skipped"), "{stdout}");
    let skipped = fs::read_to_string(run.join("skipped.jsonl")).unwrap();
    assert_eq!(skipped.lines().count(), 1, "{skipped}");
    assert!(skipped.contains("\"id\":\"house\""), "{skipped}");
    assert!(run.join("adapter/adapter_model.safetensors").exists());

    let stderr = failure(&train(
        &data,
        &teacher,
        &dir.join("strict"),
        &["--max-steps", "6", "--eval-every", "3", "--strict"],
    ));
    assert_no_panic(&stderr);
    assert!(
        stderr.contains("house") && stderr.contains("--strict"),
        "{stderr}"
    );
    fs::remove_dir_all(&dir).unwrap();
}
