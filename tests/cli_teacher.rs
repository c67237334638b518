//! End-to-end checks of the teacher commands (`attend-sd`, `extract`) through the real binary,
//! on the tiny SD fixture (`tests/fixtures/sd-tiny`, written by `make_sd_fixtures.py`).

#[path = "common/mod.rs"]
mod common;

use std::{
    collections::{BTreeSet, HashMap},
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::{f32s, failure, lavender, success, temp_dir};
use safetensors::SafeTensors;

fn fixture() -> PathBuf {
    common::fixture_dir("sd-tiny")
}

fn metadata(bytes: &[u8]) -> HashMap<String, String> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).unwrap();
    metadata.metadata().clone().unwrap_or_default()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `attend-sd` writes the same maps as the diffusers reference (the golden file of the fixture
/// script, same recipe: 5 steps, CFG 7.5, 16x16 maps resized to 32x32).
#[test]
fn attend_sd_matches_the_reference_and_draws_a_grid() {
    let dir = temp_dir("attend-sd");
    let golden_bytes = fs::read(fixture().join("golden.safetensors")).unwrap();
    let golden = SafeTensors::deserialize(&golden_bytes).unwrap();
    let golden_meta = metadata(&golden_bytes);
    let out = dir.join("maps.safetensors");
    let png = dir.join("maps.png");
    let stdout = success(&attend_sd(
        &fixture(),
        &fixture().join("image.png"),
        &golden_meta["prompt"],
        &out,
        &[
            "--png",
            png.to_str().unwrap(),
            "--reconstruction",
            dir.join("seen.png").to_str().unwrap(),
            "--image-size",
            "32",
            "--steps",
            "5",
            "--device",
            "cpu",
        ],
    ));
    assert!(stdout.contains("8 words"), "{stdout}");

    let bytes = fs::read(&out).unwrap();
    let maps = SafeTensors::deserialize(&bytes).unwrap();
    for name in ["token_maps", "word_maps"] {
        let (shape, ours) = f32s(&maps, name);
        let (expected_shape, theirs) = f32s(&golden, name);
        assert_eq!(shape, expected_shape, "{name}");
        let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let error = ours
            .iter()
            .zip(&theirs)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        assert!(error <= 1e-4, "{name}: relative error {error}");
    }
    let meta = metadata(&bytes);
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    assert_eq!(json(&meta["words"]), json(&golden_meta["words"]));
    assert_eq!(json(&meta["tokens"]), json(&golden_meta["tokens"]));
    let recipe: serde_json::Value = serde_json::from_str(&meta["recipe"]).unwrap();
    assert_eq!(recipe["recipe"], "inversion");
    assert_eq!(recipe["steps"], 5);
    assert_eq!(recipe["guidance"], 7.5);

    let seen = image::open(dir.join("seen.png")).unwrap();
    assert_eq!((seen.width(), seen.height()), (32, 32));
    let grid = image::open(&png).unwrap();
    assert_eq!((grid.width(), grid.height()), (4 * 256, 2 * (256 + 22)));
    fs::remove_dir_all(&dir).unwrap();
}

/// A small dataset: 6 pairs, one unreadable image, one empty text; one image file per
/// sample (as the reference layout needs).
fn dataset(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    fs::create_dir_all(&data).unwrap();
    for name in ["a", "b", "d", "e"] {
        fs::copy(
            fixture().join("image.png"),
            data.join(format!("{name}.png")),
        )
        .unwrap();
    }
    fs::write(data.join("broken.png"), b"not an image").unwrap();
    let lines = [
        r#"{"image": "a.png", "text": "a brown dog", "id": "s0"}"#,
        r#"{"image": "b.png", "text": "a skateboard near the zebra", "id": "s1"}"#,
        r#"{"image": "broken.png", "text": "a dog", "id": "s2"}"#,
        r#"{"image": "a.png", "text": "   ", "id": "s3"}"#,
        r#"{"image": "d.png", "text": "the red ball", "id": "s4"}"#,
        r#"{"image": "e.png", "text": "two dogs play", "id": "s5"}"#,
    ];
    let path = data.join("pairs.jsonl");
    fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// Runs `attend-sd` on `sd` and `image` with `text`, writing `out`, then `extra`.
fn attend_sd(sd: &Path, image: &Path, text: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "attend-sd",
        "--sd",
        sd.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--text",
        text,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    lavender(&args)
}

const EXTRACTED: [&str; 4] = ["s0", "s1", "s4", "s5"];

fn extract(data: &Path, out: &Path, extra: &[&str]) -> Command {
    extract_from(&format!("jsonl:{}", data.display()), out, extra)
}

/// `extract` of the dataset `data` (`kind:path`) at 32x32 on the CPU into `out`, then `extra`.
fn extract_from(data: &str, out: &Path, extra: &[&str]) -> Command {
    extract_with(&fixture(), data, out, extra)
}

/// [`extract_from`] with the teacher `sd`.
fn extract_with(sd: &Path, data: &str, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lavender"));
    command.args([
        "extract",
        "--sd",
        sd.to_str().unwrap(),
        "--data",
        data,
        "--out",
        out.to_str().unwrap(),
        "--image-size",
        "32",
        "--device",
        "cpu",
    ]);
    command.args(extra);
    command
}

/// Every sample id found in the shards of `out`, with repetitions.
fn shard_ids(out: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(out).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("maps-") && name.ends_with(".safetensors") {
            let bytes = fs::read(&path).unwrap();
            let samples: serde_json::Value =
                serde_json::from_str(&metadata(&bytes)["samples"]).unwrap();
            let tensors = SafeTensors::deserialize(&bytes).unwrap();
            for sample in samples.as_array().unwrap() {
                let id = sample["id"].as_str().unwrap().to_string();
                let view = tensors.tensor(&id).unwrap();
                assert_eq!(view.dtype(), safetensors::Dtype::U8);
                assert_eq!(view.shape()[0], sample["words"].as_array().unwrap().len());
                ids.push(id);
            }
        }
        assert!(
            !name.contains("partial"),
            "temporary file left behind: {name}"
        );
    }
    ids.sort();
    ids
}

#[test]
fn extract_writes_shards_index_and_reference_layout_and_counts_skips() {
    let dir = temp_dir("extract");
    let data = dataset(&dir);
    let out = dir.join("out");
    let output = extract(
        &data,
        &out,
        &[
            "--recipe",
            "noise",
            "--timesteps",
            "100,500",
            "--shard-size",
            "3",
            "--batch",
            "2",
            "--format",
            "reference",
        ],
    )
    .output()
    .unwrap();
    let stdout = success(&output);
    assert!(stdout.contains("extracted 4 samples"), "{stdout}");
    assert!(
        stdout.contains("skipped 1 unreadable image(s) and 1 empty text(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("wrote 2 shard(s)"), "{stdout}");
    assert_eq!(shard_ids(&out), EXTRACTED);

    let index = fs::read_to_string(out.join("index.jsonl")).unwrap();
    let indexed: Vec<serde_json::Value> = index
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(indexed.len(), 4);
    assert_eq!(
        indexed[0]["words"],
        serde_json::json!(["a", "brown", "dog"])
    );
    assert!(
        out.join("reference/b.png/lpm_attention/b/attention_zebra.jpg")
            .is_file()
    );

    // Same command again: nothing left to do, and an index cut short (a kill between a shard
    // and its index lines) is completed from the shards.
    fs::write(
        out.join("index.jsonl"),
        format!("{}\n", index.lines().next().unwrap()),
    )
    .unwrap();
    let stdout = success(
        &extract(
            &data,
            &out,
            &["--recipe", "noise", "--timesteps", "100,500"],
        )
        .output()
        .unwrap(),
    );
    assert!(stdout.contains("4 already extracted"), "{stdout}");
    let repaired = fs::read_to_string(out.join("index.jsonl")).unwrap();
    assert_eq!(repaired.lines().count(), 4, "{repaired}");
    // Other settings into the same folder are refused.
    let stderr = failure(
        &extract(&data, &out, &["--recipe", "noise", "--timesteps", "100"])
            .output()
            .unwrap(),
    );
    assert!(stderr.contains("another recipe"), "{stderr}");

    // The teacher is part of the recipe: a copy of the same folder resumes, a changed one
    // (one weight byte) is refused by name.
    let recipe: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("recipe.json")).unwrap()).unwrap();
    assert_eq!(recipe["recipe"], "noise");
    assert_eq!(recipe["teacher"]["fingerprint"].as_str().unwrap().len(), 16);
    let copy = dir.join("sd-copy");
    copy_dir(&fixture(), &copy);
    let jsonl = format!("jsonl:{}", data.display());
    let resume = |sd: &Path| {
        extract_with(
            sd,
            &jsonl,
            &out,
            &["--recipe", "noise", "--timesteps", "100,500"],
        )
        .output()
        .unwrap()
    };
    let stdout = success(&resume(&copy));
    assert!(stdout.contains("4 already extracted"), "{stdout}");
    let weights = copy.join("unet/diffusion_pytorch_model.safetensors");
    let mut bytes = fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&weights, bytes).unwrap();
    let stderr = failure(&resume(&copy));
    assert!(
        stderr.contains("was extracted with another teacher") && stderr.contains("sd-copy"),
        "{stderr}"
    );

    // The reference layout keys maps by image: two captions of one image are refused before
    // any work, where their maps used to merge into one folder.
    let shared = data.with_file_name("shared.jsonl");
    fs::write(
        &shared,
        "{\"image\": \"a.png\", \"text\": \"a dog\", \"id\": \"x0\"}\n\
         {\"image\": \"a.png\", \"text\": \"a cat\", \"id\": \"x1\"}\n",
    )
    .unwrap();
    let fresh = dir.join("shared-out");
    let stderr = failure(
        &extract(&shared, &fresh, &["--format", "reference"])
            .output()
            .unwrap(),
    );
    assert!(
        stderr.contains("samples x0 and x1 are both a.png"),
        "{stderr}"
    );
    assert!(!fresh.exists());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shards_of_a_split_run_are_disjoint_and_complete() {
    let dir = temp_dir("extract-shards");
    let data = dataset(&dir);
    let out = dir.join("out");
    for shard in ["0/3", "1/3", "2/3"] {
        success(
            &extract(
                &data,
                &out,
                &["--recipe", "noise", "--timesteps", "300", "--shard", shard],
            )
            .output()
            .unwrap(),
        );
    }
    assert_eq!(shard_ids(&out), EXTRACTED);
    assert!(out.join("index-001of003.jsonl").is_file());
    fs::remove_dir_all(&dir).unwrap();
}

/// kill -9 in the middle of a run, then the same command: every sample ends up in exactly one
/// shard and no temporary file is left visible as a shard.
#[test]
fn a_killed_extraction_resumes_where_it_stopped() {
    let dir = temp_dir("extract-kill");
    let data = dataset(&dir);
    let out = dir.join("out");
    // Slow enough (inversion, 12 steps: seconds per sample in a debug build) that the run is
    // still going after its first shard.
    let slow = ["--steps", "12", "--shard-size", "1"];
    let mut child = extract(&data, &out, &slow)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !out.join("maps-00000.safetensors").exists() {
        assert!(
            Instant::now() < deadline,
            "no shard written within 5 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = shard_ids(&out);
    assert!(
        !before.is_empty() && before.len() < EXTRACTED.len(),
        "killed too late: {before:?}"
    );

    let stdout = success(&extract(&data, &out, &slow).output().unwrap());
    assert!(
        stdout.contains(&format!("{} already extracted", before.len())),
        "{stdout}"
    );
    let after = shard_ids(&out);
    assert_eq!(after, EXTRACTED);
    // The index names every sample once, whatever moment the kill hit.
    let mut indexed: Vec<String> = fs::read_to_string(out.join("index.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    indexed.sort();
    assert_eq!(indexed, EXTRACTED);
    assert_eq!(
        after.iter().collect::<BTreeSet<_>>().len(),
        after.len(),
        "duplicates: {after:?}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_weights_file_is_named() {
    let dir = temp_dir("corrupt");
    let sd = dir.join("sd");
    copy_dir(&fixture(), &sd);
    let unet = sd.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = fs::read(&unet).unwrap();
    fs::write(&unet, &bytes[..bytes.len() / 2]).unwrap();
    let stderr = failure(&attend_sd(
        &sd,
        &fixture().join("image.png"),
        "a dog",
        &dir.join("maps.safetensors"),
        &["--image-size", "32", "--steps", "2"],
    ));
    assert!(
        stderr.contains("diffusion_pytorch_model.safetensors"),
        "{stderr}"
    );
    assert!(stderr.contains("not a valid safetensors file"), "{stderr}");
    assert!(!dir.join("maps.safetensors").exists());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_tensor_is_named_with_its_file() {
    let dir = temp_dir("missing-tensor");
    let sd = dir.join("sd");
    copy_dir(&fixture(), &sd);
    let vae = sd.join("vae/diffusion_pytorch_model.safetensors");
    let bytes = fs::read(&vae).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != "decoder.conv_out.bias")
        .collect();
    fs::write(&vae, safetensors::serialize(kept, None).unwrap()).unwrap();
    let stderr = failure(&attend_sd(
        &sd,
        &fixture().join("image.png"),
        "a dog",
        &dir.join("maps.safetensors"),
        &[],
    ));
    assert!(
        stderr.contains("`decoder.conv_out.bias` is missing"),
        "{stderr}"
    );
    assert!(
        stderr.contains("vae/diffusion_pytorch_model.safetensors"),
        "{stderr}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = temp_dir("bad-inputs");
    fs::write(dir.join("broken.png"), b"no").unwrap();
    let stderr = failure(&attend_sd(
        &fixture(),
        &dir.join("broken.png"),
        "a dog",
        &dir.join("maps.safetensors"),
        &[],
    ));
    assert!(stderr.contains("cannot decode the image"), "{stderr}");
    let stderr = failure(&attend_sd(
        &dir.join("nowhere"),
        &fixture().join("image.png"),
        "a dog",
        &dir.join("maps.safetensors"),
        &[],
    ));
    assert!(stderr.contains("not a folder"), "{stderr}");
    let output = lavender(&["extract", "--sd", ".", "--data", "csv:x", "--out", "o"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown dataset kind"));

    // A 90-byte PNG declaring 20000 x 20000 pixels is refused from its header; the limit is
    // a flag; within it, the decoder tries (and fails on the missing data).
    fs::write(dir.join("bomb.png"), bomb_png(20_000, 20_000)).unwrap();
    let out = dir.join("bomb.safetensors");
    let stderr = failure(&attend_sd(
        &fixture(),
        &dir.join("bomb.png"),
        "a dog",
        &out,
        &[],
    ));
    assert!(
        stderr.contains("declares 20000x20000 = 400000000 pixels")
            && stderr.contains("--max-image-pixels"),
        "{stderr}"
    );
    fs::write(dir.join("small-bomb.png"), bomb_png(3000, 3000)).unwrap();
    let small = dir.join("small-bomb.png");
    let stderr = failure(&attend_sd(
        &fixture(),
        &small,
        "a dog",
        &out,
        &["--max-image-pixels", "1000000"],
    ));
    assert!(
        stderr.contains("more than the limit of 1000000"),
        "{stderr}"
    );
    let stderr = failure(&attend_sd(&fixture(), &small, "a dog", &out, &[]));
    assert!(stderr.contains("cannot decode the image"), "{stderr}");
    // Each cause is said once (the decoder's error prints its source and also lists it).
    let cut_header = dir.join("cut-header.jpg");
    fs::write(&cut_header, b"\xFF\xD8\xFF\xDB\x00\x43\x00").unwrap();
    let stderr = failure(&attend_sd(&fixture(), &cut_header, "a dog", &out, &[]));
    assert_eq!(
        stderr.matches("Format error decoding Jpeg").count(),
        1,
        "{stderr}"
    );
    // A JPEG cut short decodes (the decoder fills it with grey) but is reported.
    let mut jpeg = Vec::new();
    image::open(fixture().join("image.png"))
        .unwrap()
        .to_rgb8()
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let cut = dir.join("cut.jpg");
    fs::write(&cut, &jpeg[..jpeg.len() * 9 / 10]).unwrap();
    let output = attend_sd(
        &fixture(),
        &cut,
        "a dog",
        &out,
        &["--image-size", "32", "--steps", "1"],
    );
    success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cut.jpg: the JPEG ends before its end-of-image marker"),
        "{stderr}"
    );
    fs::remove_file(&out).unwrap();
    // An output that cannot be written is refused before the work, and no other output is
    // left behind (the maps used to be written before a failing --png).
    let stderr = failure(&attend_sd(
        &fixture(),
        &fixture().join("image.png"),
        "a dog",
        &out,
        &["--png", "/nonexistent-folder/maps.png"],
    ));
    assert!(
        stderr.contains(
            "--png /nonexistent-folder/maps.png: the folder /nonexistent-folder does not exist"
        ),
        "{stderr}"
    );
    assert!(!out.exists());
    // Sizes that used to abort on allocation.
    for (flag, value, expected) in [
        ("--image-size", "100000", "--image-size must be 1 to 4096"),
        ("--map-size", "100000", "--map-size must be 1 to 1024"),
    ] {
        let stderr = failure(&attend_sd(
            &fixture(),
            &fixture().join("image.png"),
            "a dog",
            &out,
            &[flag, value],
        ));
        assert!(stderr.contains(expected), "{stderr}");
    }
    assert!(!out.exists());
    fs::remove_dir_all(&dir).unwrap();
}

/// A PNG of `width` x `height` whose header says so but whose only image data is an empty
/// deflate stream (every chunk's CRC is valid): what a decompression bomb's first bytes look
/// like.
fn bomb_png(width: u32, height: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend(data);
        let mut crc = 0xffff_ffffu32;
        for &byte in &body {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out.extend((!crc).to_be_bytes());
        out
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}
