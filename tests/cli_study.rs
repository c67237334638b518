//! `lavender study`: the whole self-contained study through the real binary, in smoke mode (a
//! few steps of everything, the numbers meaningless): the committed teacher passes its gate on
//! the smoke validation captions, a student is pre-trained from scratch, every arm is trained
//! with two seeds, evaluated and scored, and the report, results and pictures are written; a
//! second run resumes without redoing anything. Also the committed student's first training
//! steps, re-run from its recorded command, give the losses it recorded.
//!
//! The committed teacher's and student's outputs against diffusers and transformers are
//! `lavender_core::shapes` tests (`committed_models`).

#[path = "common/mod.rs"]
mod common;

use std::{fs, path::PathBuf};

use common::{failure, lavender, success, temp_dir};
use serde_json::Value;

fn committed(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(name)
}

#[test]
fn smoke_study_runs_every_stage_and_resumes() {
    let dir = temp_dir("study-smoke");
    let out = dir.join("run");
    let teacher = committed("shapes-teacher");
    let args = [
        "study",
        "--mode",
        "smoke",
        "--teacher",
        teacher.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    success(&lavender(&args));
    let results: Value =
        serde_json::from_str(&fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let runs = results["runs"].as_array().unwrap();
    let arms: Vec<&str> = results["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arm| arm["name"].as_str().unwrap())
        .collect();
    assert_eq!(arms.len(), 5, "{arms:?}");
    for name in ["sft", "lavender", "shuffled", "oracle"] {
        assert!(arms.contains(&name), "{arms:?}");
    }
    assert_eq!(runs.len(), 10, "5 arms x 2 seeds");
    for run in runs {
        // Every question of both tests was answered and scored.
        assert_eq!(run["id"]["count"], 100, "{run}");
        assert!(run["ood"]["count"].as_u64().unwrap() > 50);
        assert!(run["ood_pointing_words"].as_u64().unwrap() > 10);
    }
    // The alignment term is zero exactly in the SFT arm.
    for run in runs {
        let align = run["final_align"].as_f64().unwrap();
        assert_eq!(run["arm"] == "sft", align == 0.0, "{run}");
    }
    assert!(
        results["gate"]["rate"].as_f64().unwrap()
            > 2.0 * results["gate"]["chance"].as_f64().unwrap()
    );
    let report = fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| lavender | 2 |"), "{report}");
    assert!(report.contains("lavender − shuffled"));
    for picture in ["accuracy.png", "maps.png"] {
        let image = image::open(out.join(picture)).unwrap();
        assert!(image.width() > 500, "{picture}");
    }
    // The student was pre-trained from scratch and exported for transformers.
    assert!(
        out.join("student-pretraining/model/model.safetensors")
            .is_file()
    );

    // A second run finds every stage done.
    let started = std::time::Instant::now();
    success(&lavender(&args));
    assert!(
        started.elapsed().as_secs() < 60,
        "the resumed study redid work"
    );
    // Other settings are refused rather than mixed into the folder.
    let refused = failure(&lavender(&[
        "study",
        "--mode",
        "smoke",
        "--seeds",
        "3",
        "--teacher",
        teacher.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(refused.contains("other settings"), "{refused}");
    fs::remove_dir_all(dir).unwrap();
}

/// The committed student's pre-training, re-run for its first three steps with the command and
/// seed it was trained with (`native/models/README.md`), gives the cross-entropy it recorded
/// (`first-steps.jsonl`): the data, the tokenizer, the initialisation and the step are what
/// they were when the committed weights were made.
#[test]
fn committed_student_first_steps_reproduce() {
    let dir = temp_dir("study-student-steps");
    let data = dir.join("data");
    // The training split is drawn from its own stream: the other splits can be tiny.
    success(&lavender(&[
        "shapes",
        "--out",
        data.to_str().unwrap(),
        "--val",
        "1",
        "--test",
        "1",
        "--ood",
        "1",
    ]));
    let run = dir.join("run");
    success(&lavender(&[
        "train",
        "--vlm",
        data.join("student").to_str().unwrap(),
        "--full",
        "--from-scratch",
        "--data",
        &format!("jsonl:{}", data.join("captions-train.jsonl").display()),
        "--out",
        run.to_str().unwrap(),
        "--lambda",
        "0",
        "--lr",
        "1e-3",
        "--batch",
        "16",
        "--epochs",
        "10",
        "--eval-fraction",
        "0.05",
        "--eval-every",
        "200",
        "--map-size",
        "16",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--max-steps",
        "3",
    ]));
    let ce = |text: &str| -> Vec<f64> {
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|record| record["split"] == "train")
            .map(|record| record["ce"].as_f64().unwrap())
            .collect()
    };
    let recorded =
        ce(&fs::read_to_string(committed("shapes-student").join("first-steps.jsonl")).unwrap());
    let now = ce(&fs::read_to_string(run.join("metrics.jsonl")).unwrap());
    assert_eq!(recorded.len(), 3);
    assert_eq!(now.len(), 3, "{now:?}");
    for (step, (a, b)) in recorded.iter().zip(&now).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "step {step}: recorded {a}, now {b}"
        );
    }
    fs::remove_dir_all(dir).unwrap();
}
