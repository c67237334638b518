//! `lavender point`: the pointing game of stored word maps (a teacher's, from `extract`, or the
//! oracle's) against ground-truth masks: for every object of every sample, does the map of each
//! word naming it peak inside its mask? The rate is reported beside two baselines: the chance
//! level (the mean fraction of the picture the masks cover, with a z-score against it) and the
//! rate of shuffled maps (each sample scored with the next sample's maps, which knows where
//! objects tend to be but not where this one is: on a layout grid it is well above the area
//! chance). This is the study's teacher gate.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, bail};
use burn::tensor::Device;
use clap::Args;
use lavender_core::{
    data::TeacherMapsIndex,
    maps::pointing::{chance, points_inside},
};
use serde::Serialize;

use crate::output::{check_writable, write_atomically};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender point --maps maps/ --data data/shapes/captions-val.jsonl
  lavender point --maps data/shapes/oracle-maps --data data/shapes/captions-train.jsonl --out oracle.json

The data is a jsonl file whose lines carry an \"id\" (the maps' sample id) and \"objects\":
[{\"mask\": \"masks/x.png\", \"words\": [\"red\", \"circle\"]}, ...], mask paths relative to the
file (what `lavender shapes` writes in captions-*.jsonl).")]
pub struct PointArgs {
    /// A folder of word maps (`extract`'s output, or `shapes`' oracle-maps/).
    #[arg(long, value_name = "DIR")]
    pub maps: PathBuf,

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
    let index = TeacherMapsIndex::open(&args.maps)
        .with_context(|| format!("cannot open the maps {}", args.maps.display()))?;
    let text = std::fs::read_to_string(&args.data)
        .with_context(|| format!("cannot read {}", args.data.display()))?;
    let base = args.data.parent().unwrap_or(std::path::Path::new("."));
    let device = Device::flex();
    // Every sample's objects (mask, words), then its maps where the folder has them.
    let mut records: Vec<(String, Vec<MaskedObject>)> = Vec::new();
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
            let words = object["words"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect();
            objects.push((image::DynamicImage::ImageRgb8(mask).to_luma8(), words));
        }
        records.push((id.to_string(), objects));
    }
    let mut maps = Vec::with_capacity(records.len());
    for (id, _) in &records {
        maps.push(match index.get(id, &device)? {
            Some(found) => {
                let values = found.to_values().map_err(anyhow::Error::msg)?;
                let side = found.side();
                Some((found.words, side, values))
            }
            None => None,
        });
    }
    let samples = records.len();
    let without_maps = maps.iter().filter(|m| m.is_none()).count();
    let mut all = Tally::default();
    let mut shuffled = Tally::default();
    let mut by_word: BTreeMap<String, Tally> = BTreeMap::new();
    let score = |maps: &(Vec<String>, usize, Vec<f32>), word: &str, mask: &image::GrayImage| {
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
            args.maps.display()
        );
    }
    println!(
        "pointing game of {} on {}: {} samples ({} without maps)",
        args.maps.display(),
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
    println!(
        "shuffled maps (each sample scored with another's): rate {:.3} over {} words",
        shuffled.rate(),
        shuffled.words
    );
    if let Some(out) = &args.out {
        let result = serde_json::json!({
            "maps": args.maps.display().to_string(),
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
