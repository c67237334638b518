//! `lavender extract`: the teacher's word maps for a whole dataset, resumable and shardable.
//!
//! Output folder: `maps-*.safetensors` shards (u8 maps per sample, see
//! `lavender_core::data::attn_store`), `index*.jsonl` (one line per sample: id, shard, words),
//! and `recipe.json` (the teacher's settings and identity). A shard is written whole under a temporary name and renamed, so a killed
//! run loses at most the shard in progress; the next run skips every sample already in a shard.
//! `--shard i/n` takes samples `k` with `k % n == i`, so n machines split a dataset with no
//! overlap and may write into the same folder.

use std::{
    collections::HashSet,
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, bail};
use burn::tensor::{Device, Tensor};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use lavender_core::{
    data::{
        DataSpec, Sample, Shard,
        attn_store::{StoredSample, read_shard, read_shard_ids, shard_bytes},
        reference_layout,
    },
    sd::{preprocess::image_to_tensor, teacher::StableDiffusion},
};

use crate::{commands::teacher_args::TeacherArgs, device::DeviceSpec, output::write_atomically};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Safetensors shards with lossless u8 maps.
    Native,
    /// Shards, and also the reference's `reference/<image>/lpm_attention/<stem>/attention_<word>.jpg`.
    Reference,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender extract --sd ./stable-diffusion-v1-4 --data flickr30k:data/dataset_flickr30k.json --out maps/
  lavender extract --sd ./sd --data jsonl:pairs.jsonl --out maps/ --shard $SLURM_ARRAY_TASK_ID/8 --batch 4
  lavender extract --sd ./sd --data jsonl:pairs.jsonl --out maps/ --recipe noise --format reference

Data specs:
  jsonl:PATH       one {\"image\": ..., \"text\": ..., \"id\": optional} per line, images relative to PATH
  flickr30k:PATH   Karpathy's dataset_flickr30k.json, images in flickr30k-images/ beside it
  rlaifv:PATH      RLAIF-V parquet file(s) (a file or a folder); the text is the chosen answer
  ocrvqa:PATH      the_cauldron ocrvqa parquet file(s), or a .json/.jsonl of conversations;
                   the text is the answers joined, ids image_{row}.jpg

Re-running the same command resumes: samples already in a shard are skipped.")]
pub struct ExtractArgs {
    /// Stable Diffusion v1.x in diffusers layout.
    #[arg(long, value_name = "DIR")]
    pub sd: PathBuf,

    /// The dataset: jsonl:PATH, flickr30k:PATH, rlaifv:PATH or ocrvqa:PATH.
    #[arg(long, value_name = "SPEC")]
    pub data: DataSpec,

    /// Output folder (created if missing; shared by all shards of a run).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// This worker's part of the dataset, i/n.
    #[arg(long, value_name = "I/N", default_value = "0/1")]
    pub shard: Shard,

    /// Pairs per UNet call.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,

    /// Samples per output file; a killed run recomputes at most this many.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_size: u64,

    /// Also write the reference implementation's JPEG layout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Native)]
    pub format: OutputFormat,

    /// Process at most this many samples of this worker's share (for trials).
    #[arg(long)]
    pub limit: Option<usize>,

    #[command(flatten)]
    pub teacher: TeacherArgs,

    /// cuda[:N], wgpu[:N] or cpu (default: the first CUDA GPU if there is one, else the CPU).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<DeviceSpec>,
}

/// What a run did, printed at the end.
#[derive(Debug, Default)]
struct Tally {
    extracted: usize,
    unreadable_images: usize,
    empty_texts: usize,
    shards_written: usize,
}

pub fn run(args: ExtractArgs) -> anyhow::Result<()> {
    let config = args.teacher.config()?;
    let mut recipe = serde_json::to_value(&config)?;
    recipe["teacher"] = serde_json::json!({
        "sd": args.sd.display().to_string(),
        "fingerprint": teacher_fingerprint(&args.sd)?,
    });
    let recipe_json = serde_json::to_string(&recipe)?;
    let samples = args
        .data
        .read()
        .with_context(|| format!("cannot read the dataset {}", args.data))?;
    if args.format == OutputFormat::Reference {
        check_reference_keys(&samples)?;
    }
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    check_recipe(&args.out, &recipe)?;

    let done = finished_ids(&args.out)?;
    let mut mine: Vec<Sample> = samples
        .iter()
        .enumerate()
        .filter(|(position, _)| args.shard.contains(*position))
        .map(|(_, sample)| sample.clone())
        .collect();
    if let Some(limit) = args.limit {
        mine.truncate(limit);
    }
    let share = mine.len();
    let todo: Vec<Sample> = mine.into_iter().filter(|s| !done.contains(&s.id)).collect();
    println!(
        "{}: {} samples; shard {} has {share}, {} already extracted, {} to do",
        args.data,
        samples.len(),
        args.shard,
        share - todo.len(),
        todo.len()
    );
    // Created before any work: it also completes an index a killed run left short.
    let mut writer = ShardWriter::new(&args, &recipe_json)?;
    if todo.is_empty() {
        return Ok(());
    }

    let spec = args.device.unwrap_or_else(DeviceSpec::best_available);
    let device = spec.open()?;
    let sd = StableDiffusion::load(&args.sd, &device)
        .with_context(|| format!("cannot load Stable Diffusion from {}", args.sd.display()))?;

    let progress = ProgressBar::new(todo.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} samples  {per_sec}  ETA {eta}  {msg}")
            .expect("valid template"),
    );
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut loader = crate::limits::image_loader();
    for batch in todo.chunks(args.batch as usize) {
        let mut images = Vec::new();
        let mut ready = Vec::new();
        for sample in batch {
            if sample.text.trim().is_empty() {
                progress.suspend(|| tracing::warn!("{}: empty text, skipped", sample.id));
                tally.empty_texts += 1;
                progress.inc(1);
                continue;
            }
            match loader.load(&sample.image) {
                Ok(image) => {
                    images.push(image_to_tensor(
                        &image.to_rgb8(),
                        config.image_size,
                        &device,
                    ));
                    ready.push(sample);
                }
                Err(error) => {
                    progress.suspend(|| tracing::warn!("{}: {error}; skipped", sample.id));
                    tally.unreadable_images += 1;
                    progress.inc(1);
                }
            }
        }
        if ready.is_empty() {
            continue;
        }
        let texts: Vec<&str> = ready.iter().map(|s| s.text.as_str()).collect();
        let maps = sd
            .attend(Tensor::cat(images, 0), &texts, &config, None)
            .with_context(|| format!("extracting {}", ready[0].id))?;
        for (sample, maps) in ready.into_iter().zip(maps) {
            writer.push(StoredSample {
                id: sample.id.clone(),
                text: sample.text.clone(),
                image: sample.image.to_string(),
                token_ids: maps.token_ids,
                maps: maps.word_maps,
            })?;
            tally.extracted += 1;
            progress.inc(1);
        }
        progress.set_message(format!("{} shard(s) written", writer.written));
    }
    writer.flush()?;
    tally.shards_written = writer.written;
    progress.finish_and_clear();

    let seconds = started.elapsed().as_secs_f64();
    println!(
        "extracted {} samples in {seconds:.1} s ({:.2} samples/s); skipped {} unreadable image(s) and {} empty text(s); wrote {} shard(s) to {}",
        tally.extracted,
        tally.extracted as f64 / seconds.max(1e-9),
        tally.unreadable_images,
        tally.empty_texts,
        tally.shards_written,
        args.out.display()
    );
    Ok(())
}

/// The first run records its recipe; later runs into the same folder must use the same
/// settings and the same teacher, or the shards would mix maps made differently. A folder from
/// before the teacher was recorded is resumed with a warning (its teacher cannot be checked).
fn check_recipe(out: &Path, recipe: &serde_json::Value) -> anyhow::Result<()> {
    let path = out.join("recipe.json");
    let Ok(existing) = fs::read_to_string(&path) else {
        return write_atomically(&path, format!("{recipe}\n").as_bytes());
    };
    let mut existing: serde_json::Value = serde_json::from_str(&existing).with_context(|| {
        format!(
            "{} is not JSON; delete it or use another --out",
            path.display()
        )
    })?;
    let recorded_teacher = existing.as_object_mut().and_then(|o| o.remove("teacher"));
    let mut settings = recipe.clone();
    let teacher = settings
        .as_object_mut()
        .and_then(|o| o.remove("teacher"))
        .unwrap_or_default();
    if existing != settings {
        bail!(
            "{} was extracted with another recipe ({existing}); this run asks for {settings}. \
             Use the same flags to resume, or another --out.",
            out.display()
        );
    }
    match recorded_teacher {
        Some(recorded) if recorded["fingerprint"] != teacher["fingerprint"] => bail!(
            "{} was extracted with another teacher ({}, fingerprint {}); this run's --sd {} has \
             fingerprint {}. Resume with that teacher, or use another --out.",
            out.display(),
            recorded["sd"],
            recorded["fingerprint"],
            teacher["sd"],
            teacher["fingerprint"]
        ),
        Some(_) => Ok(()),
        None => {
            tracing::warn!(
                "{} records no teacher (written by an older lavender): resuming without \
                 checking that --sd is the teacher of its maps",
                path.display()
            );
            Ok(())
        }
    }
}

/// The teacher's identity, recorded in `recipe.json`: FNV-1a 64 over the model files of the
/// folder's parts (relative names, sizes, small files whole; of a weight file its first
/// 64 KiB, which hold the safetensors header, and 64 blocks of 4 KiB spread over the rest up to its end:
/// any fine-tune changes those, and hashing gigabytes would cost more than a small extraction).
/// A copied or moved folder keeps its fingerprint.
fn teacher_fingerprint(sd: &Path) -> anyhow::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    const WHOLE: u64 = 1 << 20;
    const HEAD: u64 = 64 << 10;
    const BLOCK: u64 = 4 << 10;
    const BLOCKS: u64 = 64;
    let mut hash = lavender_core::fnv::Fnv1a64::default();
    for part in ["scheduler", "text_encoder", "tokenizer", "unet", "vae"] {
        let folder = sd.join(part);
        let Ok(entries) = fs::read_dir(&folder) else {
            continue; // loading names a missing part
        };
        let mut files: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
            .map(|entry| {
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                )
            })
            .collect();
        files.sort();
        for (name, path) in files {
            let cannot = || format!("cannot read {} to fingerprint the teacher", path.display());
            let mut file = fs::File::open(&path).with_context(cannot)?;
            let size = file.metadata().with_context(cannot)?.len();
            hash.update(format!("{part}/{name}\0{size}\0").as_bytes());
            let mut read_at = |offset: u64, length: u64| -> anyhow::Result<()> {
                let mut bytes = vec![0; length as usize];
                file.seek(SeekFrom::Start(offset)).with_context(cannot)?;
                file.read_exact(&mut bytes).with_context(cannot)?;
                hash.update(&bytes);
                Ok(())
            };
            if size <= WHOLE {
                read_at(0, size)?;
            } else {
                read_at(0, HEAD)?;
                // The last block ends at the end of the file.
                for block in 1..=BLOCKS {
                    read_at(HEAD + (size - HEAD - BLOCK) * block / BLOCKS, BLOCK)?;
                }
            }
        }
    }
    Ok(format!("{:016x}", hash.finish()))
}

/// The reference layout keys maps by image file name: two samples of one image would write
/// into one folder, each word's map overwriting the other's. Refused before any work.
fn check_reference_keys(samples: &[Sample]) -> anyhow::Result<()> {
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for sample in samples.iter().filter(|s| !s.text.trim().is_empty()) {
        let key = reference_file_name(&sample.id, &sample.image.to_string());
        if let Some(first) = seen.insert(key.clone(), &sample.id) {
            bail!(
                "--format reference keeps one set of maps per image file, and samples {first} \
                 and {} are both {key}: their maps would overwrite each other. Keep one caption \
                 per image for that layout, or use --format native (the default), which keys \
                 maps by sample id.",
                sample.id
            );
        }
    }
    Ok(())
}

fn shard_files(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(out)
        .with_context(|| format!("cannot list {}", out.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("maps-") && n.ends_with(".safetensors"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Ids already in a shard of `out`: shards, not the index, are the record of what is done.
fn finished_ids(out: &Path) -> anyhow::Result<HashSet<String>> {
    let mut done = HashSet::new();
    for path in shard_files(out)? {
        done.extend(read_shard_ids(&path).with_context(|| {
            format!(
                "{} is damaged; delete it to recompute its samples",
                path.display()
            )
        })?);
    }
    Ok(done)
}

/// Collects samples and writes them `shard_size` at a time.
struct ShardWriter {
    out: PathBuf,
    prefix: String,
    index: PathBuf,
    recipe_json: String,
    shard_size: usize,
    reference: bool,
    next: usize,
    written: usize,
    pending: Vec<StoredSample>,
}

impl ShardWriter {
    fn new(args: &ExtractArgs, recipe_json: &str) -> anyhow::Result<Self> {
        let (prefix, index) = if args.shard.count == 1 {
            ("maps".to_string(), "index.jsonl".to_string())
        } else {
            let tag = format!("{:03}of{:03}", args.shard.index, args.shard.count);
            (format!("maps-{tag}"), format!("index-{tag}.jsonl"))
        };
        // This worker's existing shards, by number.
        let mine: Vec<(usize, PathBuf)> = shard_files(&args.out)?
            .into_iter()
            .filter_map(|path| {
                let name = path.file_stem()?.to_str()?;
                let number = name.strip_prefix(&prefix)?.strip_prefix('-')?;
                Some((number.parse::<usize>().ok()?, path))
            })
            .collect();
        let next = mine.iter().map(|(number, _)| number + 1).max().unwrap_or(0);
        let writer = Self {
            out: args.out.clone(),
            prefix,
            index: args.out.join(index),
            recipe_json: recipe_json.to_string(),
            shard_size: args.shard_size as usize,
            reference: args.format == OutputFormat::Reference,
            next,
            written: 0,
            pending: Vec::new(),
        };
        writer.repair_index(mine.into_iter().map(|(_, path)| path))?;
        Ok(writer)
    }

    /// A run killed between writing a shard and appending its lines to the index leaves the
    /// index short; add the samples of this worker's shards that it does not mention.
    fn repair_index(&self, shards: impl Iterator<Item = PathBuf>) -> anyhow::Result<()> {
        let indexed: HashSet<String> = fs::read_to_string(&self.index)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|entry| entry["id"].as_str().map(str::to_string))
            .collect();
        for path in shards {
            let damaged = || format!("{} is damaged; delete it to recompute", path.display());
            let ids = read_shard_ids(&path).with_context(damaged)?;
            if ids.iter().all(|id| indexed.contains(id)) {
                continue;
            }
            let missing: Vec<StoredSample> = read_shard(&path, &Device::flex())
                .with_context(damaged)?
                .into_iter()
                .filter(|sample| !indexed.contains(&sample.id))
                .collect();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            self.append_index(&name, &missing)?;
        }
        Ok(())
    }

    /// One line per sample: id, shard file, words.
    fn append_index(&self, shard: &str, samples: &[StoredSample]) -> anyhow::Result<()> {
        let mut lines = String::new();
        for sample in samples {
            lines.push_str(&serde_json::to_string(&serde_json::json!({
                "id": sample.id,
                "shard": shard,
                "words": sample.maps.words,
            }))?);
            lines.push('\n');
        }
        let mut index = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.index)
            .with_context(|| format!("cannot open {}", self.index.display()))?;
        index
            .write_all(lines.as_bytes())
            .with_context(|| format!("cannot append to {}", self.index.display()))
    }

    fn push(&mut self, maps: StoredSample) -> anyhow::Result<()> {
        self.pending.push(maps);
        if self.pending.len() >= self.shard_size {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let name = format!("{}-{:05}.safetensors", self.prefix, self.next);
        let bytes = shard_bytes(&self.pending, &self.recipe_json).map_err(anyhow::Error::msg)?;
        if self.reference {
            let root = self.out.join("reference");
            for sample in &self.pending {
                let file_name = reference_file_name(&sample.id, &sample.image);
                reference_layout::write_sample(&root, &file_name, &sample.maps)?;
            }
        }
        write_atomically(&self.out.join(&name), &bytes)?;
        self.append_index(&name, &self.pending)?;
        self.next += 1;
        self.written += 1;
        self.pending.clear();
        Ok(())
    }
}

/// The image file name that keys a sample in the reference layout: the image's own file name,
/// or for images embedded in a dataset file, the id with `.jpg` added unless it ends so already
/// (OCR-VQA's `image_{row}.jpg`, as the reference names them).
fn reference_file_name(id: &str, image: &str) -> String {
    let path = Path::new(image);
    match path.file_name() {
        Some(name) if path.is_file() => name.to_string_lossy().into_owned(),
        _ if id.ends_with(".jpg") => id.to_string(),
        _ => format!("{id}.jpg"),
    }
}
