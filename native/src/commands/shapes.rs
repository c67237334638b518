//! `lavender shapes`: the synthetic dataset of the self-contained study (`lavender_core::shapes`),
//! written as files every other command reads.
//!
//! Layout of `--out`:
//! - `images/{id}.png`, and `masks/{id}-{k}.png` for object `k` (255 inside);
//! - `captions-{split}.jsonl`: `{"id", "image", "text", "objects"}` per scene, the text its
//!   caption (teacher training, `extract`, student pre-training);
//! - `vqa-{split}.jsonl`: one question per line as a conversation, with `"teacher_id"` (its
//!   scene: the caption's teacher maps serve every question about the scene), `"category"`
//!   (the question kind) and `"objects"` (the scene objects the answer is about);
//! - `vqa-train-shuffled-teacher.jsonl`: the training questions with each scene's
//!   `teacher_id` moved to another scene (a fixed derangement): attention supervision that
//!   carries no information about the image, the study's control;
//! - `oracle-maps/`: teacher-map shards whose maps are the ground truth (a colour or shape
//!   word's map is its object's mask, other words uniform), readable by `train
//!   --teacher-maps`, the upper bound of attention supervision;
//! - `dataset.json`: the settings, the held-out combinations and the counts;
//! - `student/`: a Llama-3.2-Vision folder without weights for the study's student
//!   (`shapes::student`: word-level tokenizer of this language, an 8x8 patch grid), for
//!   `lavender train --full --from-scratch --vlm DIR/student` (when --size is a multiple of 8).
//!
//! The folder is written under a temporary name and renamed when complete.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::PathBuf};

use anyhow::{Context, bail};
use burn::tensor::Device;
use clap::Args;
use image::{GrayImage, ImageFormat, imageops::FilterType};
use lavender_core::{
    data::attn_store::{StoredSample, shard_bytes},
    maps::WordMaps,
    rng::SeededRng,
    shapes::{
        self, HELD_OUT, SceneRecord, ShapesConfig, Split,
        language::QuestionKind,
        render::render,
        student::{StudentSize, student_files},
    },
};
use serde_json::json;

use crate::output::write_regenerable_folder;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender shapes --out data/shapes
  lavender shapes --out data/shapes-small --train 200 --val 50 --test 50 --ood 50 --seed 3

Then, for instance:
  lavender extract --sd TEACHER --data jsonl:data/shapes/captions-train.jsonl --out maps/
  lavender train --vlm STUDENT --data jsonl:data/shapes/vqa-train.jsonl --teacher-maps maps/ --out runs/lavender
  lavender eval --vlm STUDENT --adapter runs/lavender/final --data jsonl:data/shapes/vqa-ood.jsonl --out ood.tsv")]
pub struct ShapesArgs {
    /// Output folder (must not exist, unless it holds an earlier `shapes` dataset and
    /// --overwrite is given).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Everything is a function of this seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Image side in pixels (16 to 512).
    #[arg(long, default_value_t = 64)]
    pub size: u32,

    /// Training scenes.
    #[arg(long, default_value_t = 2000)]
    pub train: usize,

    /// Validation scenes (in distribution; for choices such as a second lambda).
    #[arg(long, default_value_t = 200)]
    pub val: usize,

    /// In-distribution test scenes.
    #[arg(long, default_value_t = 400)]
    pub test: usize,

    /// Out-of-distribution test scenes (each shows a held-out combination).
    #[arg(long, default_value_t = 400)]
    pub ood: usize,

    /// Side of the oracle's maps (the teacher maps' side: Lavender's 32).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub map_size: u32,

    /// Replace an existing dataset folder.
    #[arg(long)]
    pub overwrite: bool,
}

/// Samples per oracle shard.
const SHARD_SIZE: usize = 256;

pub fn run(args: ShapesArgs) -> anyhow::Result<()> {
    let config = ShapesConfig {
        seed: args.seed,
        size: args.size,
        scenes: [args.train, args.val, args.test, args.ood],
    };
    config.check().map_err(anyhow::Error::msg)?;
    check_out(&args)?;

    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut counts = BTreeMap::new();
    let mut train_records = Vec::new();
    // The training scenes' masks, kept for the oracle's maps (rendered once).
    let mut train_masks = Vec::new();
    for split in Split::ALL {
        let records = shapes::records(&config, split);
        let mut captions = String::new();
        let mut questions = String::new();
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for record in &records {
            let (picture, masks) = render(&record.scene);
            let image = format!("images/{}.png", record.id);
            files.push((image.clone(), png(&picture)?));
            for (k, mask) in masks.iter().enumerate() {
                files.push((format!("masks/{}-{k}.png", record.id), png(mask)?));
            }
            if split == Split::Train {
                train_masks.push(masks);
            }
            let objects = objects_json(record);
            writeln!(
                captions,
                "{}",
                json!({"id": record.id, "image": image, "text": record.caption, "objects": objects})
            )?;
            for (q, question) in record.questions.iter().enumerate() {
                *kinds.entry(question.kind.name()).or_default() += 1;
                writeln!(
                    questions,
                    "{}",
                    vqa_line(record, q, &image, &record.id, &objects)
                )?;
            }
        }
        files.push((
            format!("captions-{}.jsonl", split.name()),
            captions.into_bytes(),
        ));
        files.push((
            format!("vqa-{}.jsonl", split.name()),
            questions.into_bytes(),
        ));
        counts.insert(
            split.name(),
            json!({"scenes": records.len(), "questions": kinds.values().sum::<usize>(), "by_kind": kinds}),
        );
        if split == Split::Train {
            train_records = records;
        }
    }
    files.push((
        "vqa-train-shuffled-teacher.jsonl".into(),
        shuffled_teacher(&train_records, config.seed)?.into_bytes(),
    ));
    for (name, bytes) in oracle_shards(&train_records, &train_masks, args.map_size as usize)? {
        files.push((format!("oracle-maps/{name}"), bytes));
    }
    let held_out: Vec<String> = HELD_OUT
        .iter()
        .map(|(c, s)| format!("{} {}", c.name(), s.name()))
        .collect();
    let kinds = [
        QuestionKind::Colour,
        QuestionKind::Shape,
        QuestionKind::Exists,
        QuestionKind::Count,
        QuestionKind::LeftRight,
        QuestionKind::AboveBelow,
    ]
    .map(QuestionKind::name);
    let manifest = json!({
        "generator": "lavender shapes",
        "config": config,
        "map_size": args.map_size,
        "held_out": held_out,
        "counts": counts,
        "question_kinds": kinds,
    });
    files.push(("dataset.json".into(), serde_json::to_vec_pretty(&manifest)?));
    if args.size.is_multiple_of(8) {
        let size = StudentSize {
            image_size: args.size as usize,
            patch_size: args.size as usize / 8,
            ..StudentSize::default()
        };
        for (name, bytes) in student_files(size) {
            files.push((format!("student/{name}"), bytes));
        }
    }
    write_regenerable_folder(
        &args.out,
        files
            .iter()
            .map(|(name, bytes)| (name.as_str(), bytes.as_slice())),
    )?;
    println!(
        "wrote {} files to {}: {} / {} / {} / {} scenes (train / val / test / ood), held out: {}",
        files.len(),
        args.out.display(),
        args.train,
        args.val,
        args.test,
        args.ood,
        held_out.join(", ")
    );
    Ok(())
}

/// An existing `--out` is replaced only with --overwrite, and only when it is a dataset this
/// command wrote.
fn check_out(args: &ShapesArgs) -> anyhow::Result<()> {
    let Ok(mut entries) = fs::read_dir(&args.out) else {
        return Ok(());
    };
    if entries.next().is_none() {
        return Ok(());
    }
    if !args.out.join("dataset.json").is_file() {
        bail!(
            "{} exists and is not a `lavender shapes` dataset (no dataset.json); choose another --out",
            args.out.display()
        );
    }
    if !args.overwrite {
        bail!(
            "{} already holds a dataset; pass --overwrite to replace it",
            args.out.display()
        );
    }
    Ok(())
}

fn png<P>(picture: &image::ImageBuffer<P, Vec<u8>>) -> anyhow::Result<Vec<u8>>
where
    P: image::PixelWithColorType<Subpixel = u8>,
{
    let mut bytes = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
        .context("encoding a PNG")?;
    Ok(bytes)
}

/// The scene's objects as the jsonl lines list them, with their mask files.
fn objects_json(record: &SceneRecord) -> Vec<serde_json::Value> {
    record
        .scene
        .objects
        .iter()
        .enumerate()
        .map(|(k, object)| {
            json!({
                "colour": object.colour,
                "shape": object.shape,
                "centre": object.centre,
                "radius": object.radius,
                "mask": format!("masks/{}-{k}.png", record.id),
                "words": [object.colour.name(), object.shape.name()],
            })
        })
        .collect()
}

fn vqa_line(
    record: &SceneRecord,
    q: usize,
    image: &str,
    teacher_id: &str,
    objects: &[serde_json::Value],
) -> serde_json::Value {
    let question = &record.questions[q];
    json!({
        "id": format!("{}-q{q}", record.id),
        "image": image,
        "teacher_id": teacher_id,
        "category": question.kind.name(),
        "conversations": [
            {"role": "user", "content": question.text},
            {"role": "assistant", "content": question.answer},
        ],
        "objects": question.objects.iter().map(|&k| objects[k].clone()).collect::<Vec<_>>(),
    })
}

/// The training questions with teacher ids moved by a fixed derangement of the scenes: every
/// question keeps its image and answer, but its teacher maps are another scene's.
fn shuffled_teacher(records: &[SceneRecord], seed: u64) -> anyhow::Result<String> {
    let n = records.len();
    let mut order: Vec<usize> = (0..n).collect();
    // Sattolo's algorithm: a uniformly random cyclic permutation, so no scene keeps its maps.
    let mut rng = SeededRng::new(seed ^ 0x5348_5546_464c_4544);
    for i in (1..n).rev() {
        let j = rng.below(i as u64) as usize;
        order.swap(i, j);
    }
    let mut lines = String::new();
    for (index, record) in records.iter().enumerate() {
        let image = format!("images/{}.png", record.id);
        let donor = &records[order[index]].id;
        for q in 0..record.questions.len() {
            writeln!(
                lines,
                "{}",
                vqa_line(record, q, &image, donor, &objects_json(record))
            )?;
        }
    }
    Ok(lines)
}

/// Ground-truth teacher maps of the training captions, in `extract`'s shard format.
/// `masks`: each record's objects' masks, in order.
fn oracle_shards(
    records: &[SceneRecord],
    masks: &[Vec<GrayImage>],
    side: usize,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let device = Device::flex();
    let mut shards = Vec::new();
    let mut index = String::new();
    for (number, (chunk, chunk_masks)) in records
        .chunks(SHARD_SIZE)
        .zip(masks.chunks(SHARD_SIZE))
        .enumerate()
    {
        let name = format!("maps-{number:05}.safetensors");
        let mut samples = Vec::with_capacity(chunk.len());
        for (record, masks) in chunk.iter().zip(chunk_masks) {
            let mut words: Vec<String> = Vec::new();
            let mut values: Vec<f32> = Vec::new();
            for word in record.caption.split_whitespace() {
                let word = word
                    .trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase();
                if word.is_empty() || words.contains(&word) {
                    continue;
                }
                let object = record
                    .scene
                    .objects
                    .iter()
                    .position(|o| o.colour.name() == word || o.shape.name() == word);
                match object {
                    Some(k) => values.extend(resized(&masks[k], side)),
                    None => values.extend(std::iter::repeat_n(1.0, side * side)),
                }
                words.push(word);
            }
            let maps = WordMaps::from_values(words, side, values, &device)
                .map_err(|error| anyhow::anyhow!("oracle maps of {}: {error}", record.id))?;
            writeln!(
                index,
                "{}",
                json!({"id": record.id, "shard": name, "words": maps.words})
            )?;
            samples.push(StoredSample {
                id: record.id.clone(),
                text: record.caption.clone(),
                image: format!("images/{}.png", record.id),
                token_ids: Vec::new(),
                maps,
            });
        }
        let recipe = json!({"recipe": "oracle", "source": "ground-truth masks", "map_size": side});
        shards.push((
            name,
            shard_bytes(&samples, &recipe.to_string()).map_err(anyhow::Error::msg)?,
        ));
    }
    shards.push(("index.jsonl".into(), index.into_bytes()));
    Ok(shards)
}

/// A mask as a `side x side` map in [0, 1] (the fraction of each cell inside the object).
fn resized(mask: &GrayImage, side: usize) -> Vec<f32> {
    image::imageops::resize(mask, side as u32, side as u32, FilterType::Triangle)
        .pixels()
        .map(|p| f32::from(p[0]) / 255.0)
        .collect()
}
