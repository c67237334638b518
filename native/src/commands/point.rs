//! `lavender point`: the pointing game of stored word maps (a teacher's, from `extract`, or the
//! oracle's) against ground-truth masks: for every object of every sample, does the map of each
//! word naming it peak inside its mask? The rate is reported beside two baselines: the chance
//! level (the mean fraction of the picture the masks cover, with a z-score against it) and the
//! rate of shuffled maps (each sample scored with the next sample's maps, which knows where
//! objects tend to be but not where this one is: on a layout grid it is well above the area
//! chance). This is the study's teacher gate.
//!
//! With `--vlm` (and `--adapter`) instead of `--maps`, the maps are a student's: for each
//! sample, the per-word cross-attention maps of its answer (a question's answer, or a caption
//! as the answer to the captioning prompt), read as `lavender attend` reads them; the words of
//! the answer that name an object are scored. This is the study's student pointing game.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, bail};
use burn::tensor::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lavender_core::{
    align::grid::GridMode,
    data::{TeacherMapsIndex, conversation::CAPTION_PROMPT},
    maps::{
        pointing::{chance, points_inside},
        words::{normalise_word, word_spans},
    },
    vlm::mllama::student::Mllama,
};
use serde::Serialize;

use crate::output::{check_writable, write_atomically};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender point --maps maps/ --data data/shapes/captions-val.jsonl
  lavender point --maps data/shapes/oracle-maps --data data/shapes/captions-train.jsonl --out oracle.json
  lavender point --vlm student/ --adapter runs/lavender/adapter --data data/shapes/vqa-ood.jsonl --map-size 16

The data is a jsonl file whose lines carry an \"id\" (the maps' sample id) and \"objects\":
[{\"mask\": \"masks/x.png\", \"words\": [\"red\", \"circle\"]}, ...], mask paths relative to the
file (what `lavender shapes` writes in captions-*.jsonl and vqa-*.jsonl). With --vlm each line
also needs \"image\" and either \"text\" (a caption, the answer to the captioning prompt) or
\"conversations\" (the first user turn is the question, the first assistant turn the answer).")]
pub struct PointArgs {
    /// A folder of word maps (`extract`'s output, or `shapes`' oracle-maps/).
    #[arg(long, value_name = "DIR", required_unless_present = "vlm")]
    pub maps: Option<PathBuf>,

    /// Score a student's maps instead: a Hugging Face Mllama folder.
    #[arg(long, value_name = "DIR", conflicts_with = "maps")]
    pub vlm: Option<PathBuf>,

    /// A PEFT LoRA adapter merged into --vlm.
    #[arg(long, value_name = "DIR", requires = "vlm")]
    pub adapter: Option<PathBuf>,

    /// Side of the student's maps.
    #[arg(long, default_value_t = 16, requires = "vlm")]
    pub map_size: usize,

    /// cuda[:N], wgpu[:N] or cpu, for --vlm (default: the first CUDA GPU, else the CPU).
    #[arg(long, value_name = "DEVICE", requires = "vlm")]
    pub device: Option<crate::device::DeviceSpec>,

    /// The samples with their objects' masks and words (jsonl).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,

    /// Also write the result as JSON.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

/// An object's ground-truth mask and the words that name it.
type MaskedObject = (image::GrayImage, Vec<String>);

/// Hits against chance for a group of (word, object) pairs.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Tally {
    pub words: usize,
    pub hits: usize,
    /// Sum of the masks' chance levels.
    chance_sum: f64,
}

impl Tally {
    fn add(&mut self, hit: bool, chance: f64) {
        self.words += 1;
        self.hits += usize::from(hit);
        self.chance_sum += chance;
    }

    pub fn rate(&self) -> f64 {
        self.hits as f64 / self.words.max(1) as f64
    }

    pub fn chance(&self) -> f64 {
        self.chance_sum / self.words.max(1) as f64
    }

    /// Hits against the chance expectation, in standard deviations (a one-sample binomial
    /// z-score with the mean chance level).
    pub fn z(&self) -> f64 {
        let (n, p) = (self.words as f64, self.chance());
        let spread = (n * p * (1.0 - p)).sqrt();
        if spread == 0.0 {
            return 0.0;
        }
        (self.hits as f64 - n * p) / spread
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "words": self.words,
            "hits": self.hits,
            "rate": self.rate(),
            "chance": self.chance(),
            "z": self.z(),
        })
    }
}

pub fn run(args: PointArgs) -> anyhow::Result<()> {
    if let Some(out) = &args.out {
        check_writable(out, "--out")?;
    }
    anyhow::ensure!(
        (1..=256).contains(&args.map_size),
        "--map-size must be 1 to 256"
    );
    let text = std::fs::read_to_string(&args.data)
        .with_context(|| format!("cannot read {}", args.data.display()))?;
    let base = args.data.parent().unwrap_or(std::path::Path::new("."));
    let device = Device::flex();
    // Every sample's objects (mask, words), then its maps where the folder has them.
    let mut records: Vec<(String, Vec<MaskedObject>)> = Vec::new();
    // With --vlm: each sample's question and answer, `None` when the answer names no object.
    let mut answers: Vec<Option<Answered>> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", args.data.display(), number + 1);
        let record: serde_json::Value = serde_json::from_str(line).with_context(at)?;
        let id = record["id"]
            .as_str()
            .with_context(|| format!("{}: no \"id\"", at()))?;
        let mut objects = Vec::new();
        for object in record["objects"]
            .as_array()
            .with_context(|| format!("{}: no \"objects\" list", at()))?
        {
            let mask_path = object["mask"]
                .as_str()
                .with_context(|| format!("{}: an object without \"mask\"", at()))?;
            let mask = crate::commands::open_image(&base.join(mask_path))?;
            let words: Vec<String> = object["words"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect();
            objects.push((image::DynamicImage::ImageRgb8(mask).to_luma8(), words));
        }
        if args.vlm.is_some() {
            let sample = answered(&record).with_context(at)?;
            // Only answers that name one of the objects are scored: skip the model's work
            // for the others (yes/no, counts, directions). The answer's words by the
            // project's one word rule, as the student's maps key them.
            let answer_words: Vec<String> = word_spans(&[sample.answer.as_str()])
                .iter()
                .map(|span| normalise_word(&span.text))
                .collect();
            let names_an_object = objects
                .iter()
                .any(|(_, words)| words.iter().any(|w| answer_words.contains(w)));
            answers.push(names_an_object.then_some(sample));
        }
        records.push((id.to_string(), objects));
    }
    let (maps, source) = match (&args.maps, &args.vlm) {
        (Some(folder), _) => (teacher_maps(folder, &records, &device)?, folder.clone()),
        (None, Some(vlm)) => (student_maps(&args, vlm, base, &answers)?, vlm.clone()),
        (None, None) => bail!("give --maps DIR or --vlm DIR"),
    };
    let samples = records.len();
    let without_maps = maps.iter().filter(|m| m.is_none()).count();
    let mut all = Tally::default();
    let mut shuffled = Tally::default();
    let mut by_word: BTreeMap<String, Tally> = BTreeMap::new();
    let score = |maps: &SampleMaps, word: &str, mask: &image::GrayImage| {
        let (words, side, values) = maps;
        let row = words.iter().position(|w| w == word)?;
        let map = &values[row * side * side..(row + 1) * side * side];
        Some(points_inside(map, *side, mask))
    };
    for (position, (_, objects)) in records.iter().enumerate() {
        let Some(own) = &maps[position] else { continue };
        // The next sample that has maps stands in for the shuffled control.
        let other = (1..samples)
            .map(|step| (position + step) % samples)
            .find_map(|k| maps[k].as_ref());
        for (mask, words) in objects {
            let level = chance(mask);
            for word in words {
                let Some(hit) = score(own, word, mask) else {
                    continue;
                };
                all.add(hit, level);
                by_word.entry(word.clone()).or_default().add(hit, level);
                if let Some(hit) = other.and_then(|other| score(other, word, mask)) {
                    shuffled.add(hit, level);
                }
            }
        }
    }
    if samples == without_maps {
        bail!(
            "none of the {samples} samples of {} has maps in {}",
            args.data.display(),
            source.display()
        );
    }
    println!(
        "pointing game of {} on {}: {} samples ({} without maps)",
        source.display(),
        args.data.display(),
        samples,
        without_maps
    );
    println!(
        "{:>12}  {:>6}  {:>7}  {:>7}  {:>6}",
        "word", "words", "rate", "chance", "z"
    );
    for (word, tally) in by_word.iter().chain([(&"all".to_string(), &all)]) {
        println!(
            "{word:>12}  {:>6}  {:>7.3}  {:>7.3}  {:>6.1}",
            tally.words,
            tally.rate(),
            tally.chance(),
            tally.z()
        );
    }
    if shuffled.words > 0 {
        println!(
            "shuffled maps (each sample scored with another's): rate {:.3} over {} words",
            shuffled.rate(),
            shuffled.words
        );
    }
    if let Some(out) = &args.out {
        let result = serde_json::json!({
            "maps": source.display().to_string(),
            "adapter": args.adapter.as_ref().map(|a| a.display().to_string()),
            "data": args.data.display().to_string(),
            "samples": samples,
            "without_maps": without_maps,
            "all": all.summary(),
            "shuffled": shuffled.summary(),
            "by_word": by_word.iter().map(|(w, t)| (w.clone(), t.summary())).collect::<BTreeMap<_, _>>(),
        });
        write_atomically(
            out,
            format!("{}\n", serde_json::to_string_pretty(&result)?).as_bytes(),
        )?;
    }
    Ok(())
}

/// One sample's maps: its words, the maps' side and `[words, side, side]` values.
type SampleMaps = (Vec<String>, usize, Vec<f32>);

/// A sample's image (relative to the data file) and the question and answer a student is
/// read on.
struct Answered {
    image: String,
    question: String,
    answer: String,
}

/// The image, question and answer of a jsonl record: a caption answers the captioning prompt;
/// a conversation's first user and assistant turns are the question and answer.
fn answered(record: &serde_json::Value) -> anyhow::Result<Answered> {
    let image = record["image"]
        .as_str()
        .context("no \"image\"")?
        .to_string();
    if let Some(text) = record["text"].as_str() {
        return Ok(Answered {
            image,
            question: CAPTION_PROMPT.to_string(),
            answer: text.to_string(),
        });
    }
    let turns = record["conversations"]
        .as_array()
        .context("neither \"text\" nor \"conversations\"")?;
    let turn = |role: &str| {
        turns
            .iter()
            .find(|t| t["role"] == role)
            .and_then(|t| t["content"].as_str())
            .map(str::to_string)
            .with_context(|| format!("no {role} turn"))
    };
    Ok(Answered {
        image,
        question: turn("user")?,
        answer: turn("assistant")?,
    })
}

/// The stored maps of every record (`None` where the folder has none).
fn teacher_maps(
    folder: &std::path::Path,
    records: &[(String, Vec<MaskedObject>)],
    device: &Device,
) -> anyhow::Result<Vec<Option<SampleMaps>>> {
    let index = TeacherMapsIndex::open(folder)
        .with_context(|| format!("cannot open the maps {}", folder.display()))?;
    let mut maps = Vec::with_capacity(records.len());
    for (id, _) in records {
        maps.push(match index.get(id, device)? {
            Some(found) => {
                let values = found.to_values().map_err(anyhow::Error::msg)?;
                let side = found.side();
                Some((found.words, side, values))
            }
            None => None,
        });
    }
    Ok(maps)
}

/// The student's answer maps of every record ([`Mllama::answer_maps`]).
fn student_maps(
    args: &PointArgs,
    vlm: &std::path::Path,
    base: &std::path::Path,
    answers: &[Option<Answered>],
) -> anyhow::Result<Vec<Option<SampleMaps>>> {
    let spec = args
        .device
        .unwrap_or_else(crate::device::DeviceSpec::best_available);
    let device = spec.open()?;
    let student = Mllama::load(vlm, args.adapter.as_deref(), &device)
        .with_context(|| format!("cannot load the model from {}", vlm.display()))?;
    let progress = ProgressBar::new(answers.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} samples, {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut maps = Vec::with_capacity(answers.len());
    for answered in answers {
        let Some(answered) = answered else {
            maps.push(None);
            progress.inc(1);
            continue;
        };
        let path = base.join(&answered.image);
        let image = crate::commands::open_image(&path)?;
        let (words, values) = student
            .answer_maps(
                &image,
                &answered.question,
                &answered.answer,
                args.map_size,
                GridMode::Corrected,
            )
            .with_context(|| format!("the student's maps of {}", path.display()))?;
        let values = crate::commands::tensor_values(values, "the word maps")?;
        maps.push(Some((words, args.map_size, values)));
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(maps)
}
