//! `lavender shapes`: the study's synthetic dataset through the real binary: deterministic,
//! no held-out combination in any training, validation or in-distribution test file, and files
//! the other commands read (the oracle's maps as teacher maps, the questions as conversations).

#[path = "common/mod.rs"]
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use burn::tensor::Device;
use common::{failure, lavender, success, temp_dir};
use lavender_core::data::{DataSpec, TeacherMapsIndex};
use serde_json::Value;

fn shapes(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "shapes",
        "--out",
        out.to_str().unwrap(),
        "--train",
        "60",
        "--val",
        "10",
        "--test",
        "10",
        "--ood",
        "20",
    ];
    if !extra.contains(&"--size") {
        args.extend(["--size", "32"]);
    }
    args.extend(extra);
    lavender(&args)
}

fn lines(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Every file of a folder, by relative path.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(name, fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn the_dataset_is_deterministic_split_cleanly_and_readable() {
    let dir = temp_dir("shapes");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let stdout = success(&shapes(&a, &[]));
    assert!(
        stdout.contains("held out: red square, green triangle, blue circle"),
        "{stdout}"
    );
    success(&shapes(&b, &[]));
    let files = contents(&a);
    let again = contents(&b);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        again.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &files {
        assert!(
            again[name] == *bytes,
            "{name} differs between two runs with one seed"
        );
    }
    success(&shapes(&b, &["--seed", "1", "--overwrite"]));
    assert_ne!(
        files["captions-train.jsonl"],
        fs::read(b.join("captions-train.jsonl")).unwrap()
    );

    // No held-out combination in any in-distribution picture or text; each OOD scene has one.
    let held_out = ["red square", "green triangle", "blue circle"];
    let combos = |line: &Value| -> Vec<String> {
        line["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    o["colour"].as_str().unwrap(),
                    o["shape"].as_str().unwrap()
                )
            })
            .collect()
    };
    for split in ["train", "val", "test"] {
        for line in lines(&a.join(format!("captions-{split}.jsonl"))) {
            for combo in combos(&line) {
                assert!(!held_out.contains(&combo.as_str()), "{split}: {line}");
            }
        }
        for line in lines(&a.join(format!("vqa-{split}.jsonl"))) {
            let text = line.to_string();
            for combo in held_out {
                assert!(!text.contains(combo), "{split}: {text}");
            }
        }
    }
    let ood = lines(&a.join("captions-ood.jsonl"));
    assert_eq!(ood.len(), 20);
    for line in &ood {
        assert!(
            combos(line).iter().any(|c| held_out.contains(&c.as_str())),
            "{line}"
        );
    }

    // The questions read as conversations with their scene's teacher id and a category; the
    // control moves every scene's teacher maps to another scene.
    let spec: DataSpec = format!("jsonl:{}", a.join("vqa-train.jsonl").display())
        .parse()
        .unwrap();
    let questions = spec.read_conversations().unwrap();
    assert!(questions.len() > 5 * 60, "{}", questions.len());
    let first = &questions[0];
    assert_eq!(first.teacher_id, "train-00000");
    assert!(first.category.is_some());
    let shuffled = lines(&a.join("vqa-train-shuffled-teacher.jsonl"));
    assert_eq!(shuffled.len(), questions.len());
    let mut donors = BTreeSet::new();
    let plain = lines(&a.join("vqa-train.jsonl"));
    for ((line, question), original) in shuffled.iter().zip(&questions).zip(&plain) {
        assert_eq!(line["conversations"], original["conversations"]);
        assert_eq!(line["image"], original["image"]);
        assert_ne!(
            line["teacher_id"].as_str().unwrap(),
            question.teacher_id,
            "{line}"
        );
        donors.insert(line["teacher_id"].as_str().unwrap().to_string());
    }
    assert_eq!(donors.len(), 60, "every scene's maps are used once");

    // The oracle's maps are teacher maps: a colour word's map is its object's mask.
    let index = TeacherMapsIndex::open(&a.join("oracle-maps")).unwrap();
    let caption = &lines(&a.join("captions-train.jsonl"))[0];
    let maps = index.get("train-00000", &Device::flex()).unwrap().unwrap();
    let colour = caption["objects"][0]["colour"].as_str().unwrap();
    let word = maps.words.iter().position(|w| w == colour).unwrap();
    let side = maps.side();
    let values = maps.to_values().unwrap();
    let map = &values[word * side * side..(word + 1) * side * side];
    let mask = image::open(a.join(caption["objects"][0]["mask"].as_str().unwrap()))
        .unwrap()
        .to_luma8();
    let mask = image::imageops::resize(
        &mask,
        side as u32,
        side as u32,
        image::imageops::FilterType::Nearest,
    );
    for (value, pixel) in map.iter().zip(mask.pixels()) {
        if pixel[0] == 255 {
            assert!(*value > 0.4, "inside the mask: {value}");
        }
    }
    let inside: f32 = map.iter().sum();
    assert!(
        inside > 0.0 && inside < (side * side) as f32 / 4.0,
        "{inside}"
    );

    // The pointing game: the oracle's maps always point at their object; another scene's maps
    // (the shuffled control) seldom do.
    let result = dir.join("point.json");
    let stdout = success(&lavender(&[
        "point",
        "--maps",
        a.join("oracle-maps").to_str().unwrap(),
        "--data",
        a.join("captions-train.jsonl").to_str().unwrap(),
        "--out",
        result.to_str().unwrap(),
    ]));
    assert!(stdout.contains("60 samples (0 without maps)"), "{stdout}");
    let result: Value = serde_json::from_str(&fs::read_to_string(&result).unwrap()).unwrap();
    let rate = |key: &str| result[key]["rate"].as_f64().unwrap();
    assert_eq!(rate("all"), 1.0);
    // Two words (colour, shape) per object.
    let objects: usize = lines(&a.join("captions-train.jsonl"))
        .iter()
        .map(|line| line["objects"].as_array().unwrap().len())
        .sum();
    assert_eq!(result["all"]["words"].as_u64(), Some(2 * objects as u64));
    assert!(rate("shuffled") < 0.4, "{result}");
    assert!(result["all"]["chance"].as_f64().unwrap() < 0.2, "{result}");
    assert_eq!(result["by_word"]["red"]["rate"].as_f64(), Some(1.0));
    let stderr = failure(&lavender(&[
        "point",
        "--maps",
        a.join("oracle-maps").to_str().unwrap(),
        "--data",
        a.join("captions-val.jsonl").to_str().unwrap(),
    ]));
    assert!(stderr.contains("none of the 10 samples"), "{stderr}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_requests_are_refused_before_writing() {
    let dir = temp_dir("shapes-bad");
    let other = dir.join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("notes.txt"), "mine").unwrap();
    let stderr = failure(&shapes(&other, &["--overwrite"]));
    assert!(
        stderr.contains("is not a `lavender shapes` dataset"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(other.join("notes.txt")).unwrap(), "mine");
    let data = dir.join("data");
    success(&shapes(&data, &[]));
    let stderr = failure(&shapes(&data, &[]));
    assert!(stderr.contains("pass --overwrite"), "{stderr}");
    let stderr = failure(&shapes(&dir.join("tiny"), &["--size", "8"]));
    assert!(
        stderr.contains("size 8 is out of range (16 to 512 pixels)"),
        "{stderr}"
    );
    assert!(!dir.join("tiny").exists());
    fs::remove_dir_all(&dir).unwrap();
}

/// `train-teacher` on the shapes captions writes a diffusers folder that `extract` reads, and
/// two runs with one seed write the same weights (training is deterministic on the CPU).
#[test]
fn a_teacher_trains_from_the_captions_deterministically() {
    let dir = temp_dir("shapes-teacher");
    let data = dir.join("data");
    success(&lavender(&[
        "shapes",
        "--out",
        data.to_str().unwrap(),
        "--train",
        "12",
        "--val",
        "4",
        "--test",
        "2",
        "--ood",
        "2",
        "--size",
        "32",
    ]));
    let captions = format!("jsonl:{}", data.join("captions-train.jsonl").display());
    let train = |out: &Path, seed: &str| {
        lavender(&[
            "train-teacher",
            "--data",
            &captions,
            "--out",
            out.to_str().unwrap(),
            "--image-size",
            "32",
            "--vae-steps",
            "3",
            "--steps",
            "3",
            "--batch",
            "4",
            "--seed",
            seed,
            "--device",
            "cpu",
        ])
    };
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    let stdout = success(&train(&a, "1"));
    assert!(
        stdout.contains("12 images at 32 px") && stdout.contains("wrote the teacher"),
        "{stdout}"
    );
    success(&train(&b, "1"));
    success(&train(&c, "2"));
    for part in [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    ] {
        let bytes = fs::read(a.join(part)).unwrap();
        assert!(
            bytes == fs::read(b.join(part)).unwrap(),
            "{part}: two runs of one seed differ"
        );
        assert!(
            bytes != fs::read(c.join(part)).unwrap(),
            "{part}: another seed, same weights"
        );
    }
    // Every caption word is one token of the teacher's vocabulary.
    let vocab: Value =
        serde_json::from_str(&fs::read_to_string(a.join("tokenizer/vocab.json")).unwrap()).unwrap();
    for word in ["red", "circle", "triangle", "yellow", "left"] {
        assert!(vocab.get(format!("{word}</w>")).is_some(), "{word}");
    }
    // A folder that exists is not overwritten.
    let stderr = failure(&train(&a, "1"));
    assert!(stderr.contains("exists; choose a new --out"), "{stderr}");

    // The teacher's maps of the validation captions, and their pointing game.
    let maps = dir.join("maps");
    success(&lavender(&[
        "extract",
        "--sd",
        a.to_str().unwrap(),
        "--data",
        &format!("jsonl:{}", data.join("captions-val.jsonl").display()),
        "--out",
        maps.to_str().unwrap(),
        "--image-size",
        "32",
        // The tiny teacher's cross-attention is at 8x8 and 4x4 for 32 px images.
        "--attn-res",
        "8",
        "--recipe",
        "noise",
        "--timesteps",
        "500",
        "--device",
        "cpu",
    ]));
    let stdout = success(&lavender(&[
        "point",
        "--maps",
        maps.to_str().unwrap(),
        "--data",
        data.join("captions-val.jsonl").to_str().unwrap(),
    ]));
    assert!(stdout.contains("4 samples (0 without maps)"), "{stdout}");
    fs::remove_dir_all(&dir).unwrap();
}
