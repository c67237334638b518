//! `lavender export-web`: the student (adapter merged, weights quantized) as a web bundle the
//! browser explorer loads: `model.bpk`, the model's config / tokenizer / chat template /
//! processor files, and `manifest.json` (sizes, SHA-256, quantization, image grid,
//! cross-attention layout), and optionally example images with the Stable Diffusion teacher's
//! word maps (`--teacher-maps` / `--examples`), and optionally a training run's Aligner
//! (`--aligner`), so the explorer offers training's aggregations of a word's map. Also reads
//! bundles back for `generate --bundle` / `attend --bundle`.

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use lavender_core::{
    align::aligner::AlignerActivation,
    bundle::{
        ALIGNER_FILE, AlignerInput, BundleError, BundleExtras, BundleFiles, BundleQuant,
        ExampleInput, MANIFEST_FILE, MAX_MANIFEST_BYTES, export_bundle_with,
    },
    data::{DataSpec, TeacherMapsIndex},
    vlm::mllama::student::Mllama,
    weights::FileSource,
};

use crate::{device::DeviceSpec, output::write_folder_atomically};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuantArg {
    /// 8-bit symmetric weights, one f32 scale per block of the output dimension.
    Q8,
    /// f32 weights as loaded.
    None,
}

/// The Aligner's activation (`train` always uses relu6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActivationArg {
    /// min(max(x, 0), 6), as `lavender train` (the reference's `relu`).
    Relu6,
    /// Leaky ReLU, slope 0.1 (the reference's `leakyrelu`).
    LeakyRelu,
}

impl From<ActivationArg> for AlignerActivation {
    fn from(arg: ActivationArg) -> Self {
        match arg {
            ActivationArg::Relu6 => Self::Relu6,
            ActivationArg::LeakyRelu => Self::LeakyRelu,
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender export-web --vlm ./Llama-3.2-11B-Vision-Instruct --adapter ./lavender-lora \\
      --out ./web-bundle
  lavender export-web --vlm ./model --quant none --out ./bundle-f32
  lavender extract --sd ./stable-diffusion-v1-4 --data jsonl:examples.jsonl --out ./teacher-maps
  lavender export-web --vlm ./model --adapter ./lavender-lora --out ./web-bundle \\
      --teacher-maps ./teacher-maps --examples jsonl:examples.jsonl --example-limit 6
  lavender export-web --vlm ./model --adapter runs/lavender/adapter --out ./web-bundle \
      --aligner runs/lavender/aligner.safetensors
  lavender generate --bundle ./web-bundle --image dog.jpg --prompt \"What is the dog doing?\"

Linear weights are quantized (Q8 per block; --quant-block, else the largest of 32/16/8/4 that
divides every weight); embeddings, norms, gates, biases and the patch convolution stay f32, and
so does the lm_head when its width does not divide (or with --dense-lm-head); manifest.json
lists what was kept dense. The bundle is built in memory before it is written.

With --teacher-maps and --examples, the first --example-limit samples of the dataset that have
teacher maps are shipped as examples: each image (PNG, at most 512 px on its longer side) and its
teacher word maps, so the explorer shows the teacher's map of a word beside the student's.

With --aligner (a training run's aligner.safetensors, or the run folder holding it), the bundle
carries the trained Aligner and the explorer offers training's aggregations of a word's map (the
Aligner per layer then the mean over layers, the mean over layers then the Aligner, max-max). Its
input channels must be the model's cross-attention heads; its depth and width are read off its
tensors; --aligner-activation must be the one it was trained with (train uses relu6).")]
pub struct ExportWebArgs {
    /// A Hugging Face Mllama folder (config.json, safetensors shards, tokenizer.json, chat template).
    #[arg(long, value_name = "DIR")]
    pub vlm: PathBuf,

    /// A PEFT LoRA adapter folder, merged into the weights before quantizing.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,

    /// How the weights are stored.
    #[arg(long, value_enum, default_value_t = QuantArg::Q8)]
    pub quant: QuantArg,

    /// Values per quantization scale (must divide every quantized weight's output width).
    #[arg(long, value_name = "N")]
    pub quant_block: Option<u8>,

    /// Keep the output projection (lm_head) f32 even when its width divides the block.
    #[arg(long)]
    pub dense_lm_head: bool,

    /// Side of the attention maps the explorer draws, recorded in the manifest.
    #[arg(long, default_value_t = 32)]
    pub map_size: usize,

    /// The bundle folder; it must not exist or be empty, unless --overwrite (which replaces
    /// only a folder an earlier export wrote).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Replace an existing non-empty --out folder.
    #[arg(long)]
    pub overwrite: bool,

    /// A `lavender extract` output (or a reference-layout root) holding the teacher's maps of
    /// the --examples samples.
    #[arg(long, value_name = "DIR", requires = "examples")]
    pub teacher_maps: Option<PathBuf>,

    /// The examples' images and captions, as `extract --data` takes them (jsonl:PATH, ...);
    /// samples without teacher maps are passed over.
    #[arg(long, value_name = "SPEC", requires = "teacher_maps")]
    pub examples: Option<DataSpec>,

    /// How many examples to ship (the first samples with teacher maps).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4,
        requires = "examples",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub example_limit: u64,

    /// A training run's aligner.safetensors (or the run folder holding it), shipped so the
    /// explorer can show training's Aligner aggregations of a word's map.
    #[arg(long, value_name = "FILE")]
    pub aligner: Option<PathBuf>,

    /// The activation the --aligner was trained with.
    #[arg(long, value_enum, default_value_t = ActivationArg::Relu6, requires = "aligner")]
    pub aligner_activation: ActivationArg,

    /// Where the model is loaded and quantized (default: the CPU).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<DeviceSpec>,
}

pub fn run(args: ExportWebArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.map_size > 0, "--map-size must be positive");
    anyhow::ensure!(
        args.quant == QuantArg::Q8 || (args.quant_block.is_none() && !args.dense_lm_head),
        "--quant-block and --dense-lm-head need --quant q8"
    );
    check_out(&args.out, args.overwrite)?;
    // Read before the model loads: a bad example fails the export in seconds.
    let examples = match (&args.teacher_maps, &args.examples) {
        (Some(maps), Some(data)) => read_examples(maps, data, args.example_limit as usize)?,
        _ => Vec::new(),
    };
    let aligner = args
        .aligner
        .as_deref()
        .map(|path| read_aligner(path, args.aligner_activation.into()))
        .transpose()?;
    let device = args.device.unwrap_or(DeviceSpec::Cpu).open()?;
    let student = Mllama::load(&args.vlm, args.adapter.as_deref(), &device)
        .with_context(|| format!("cannot load the model from {}", args.vlm.display()))?;
    let quant = match args.quant {
        QuantArg::Q8 => BundleQuant::Q8 {
            block: args.quant_block,
            dense_lm_head: args.dense_lm_head,
        },
        QuantArg::None => BundleQuant::None,
    };
    // Burn panics on some quantization failures; report them as errors.
    let source = args.vlm.clone();
    let map_size = args.map_size;
    let (files, manifest) = crate::panic_capture::catch_panic(move || {
        let extras = BundleExtras {
            examples: &examples,
            aligner: aligner.as_ref(),
        };
        export_bundle_with(
            student,
            &FileSource::Folder(&source),
            quant,
            map_size,
            &extras,
        )
    })
    .map_err(|message| anyhow::anyhow!("cannot export the bundle: {message}"))?
    .context("cannot export the bundle")?;
    write_bundle(&files, &args.out, args.overwrite)?;

    let mut stdout = std::io::stdout().lock();
    for (name, bytes) in files.iter() {
        writeln!(stdout, "{:>14} bytes  {name}", bytes.len())?;
    }
    let q = &manifest.quantization;
    writeln!(
        stdout,
        "quantization: {} (block {}, {} linear weights quantized, {} dense)",
        q.scheme,
        q.block,
        q.quantized,
        q.dense.len()
    )?;
    for dense in &q.dense {
        writeln!(stdout, "  dense: {dense}")?;
    }
    for example in &manifest.examples {
        writeln!(
            stdout,
            "example {}: {} teacher words, {}x{} maps ({})",
            example.id,
            example.words.len(),
            example.side,
            example.side,
            example.image
        )?;
    }
    if let Some(aligner) = &manifest.aligner {
        writeln!(
            stdout,
            "aligner: {} heads, {} hidden, depth {}, {} ({})",
            aligner.heads, aligner.hidden, aligner.depth, aligner.activation, aligner.file
        )?;
    }
    writeln!(stdout, "wrote {}", args.out.display())?;
    Ok(())
}

/// The first `limit` samples of `data` that have maps in the teacher store `maps`, with their
/// images decoded. Samples without maps (or with no word) are passed over; an image that cannot
/// be read is an error naming it, as is a dataset none of whose samples has maps.
fn read_examples(maps: &Path, data: &DataSpec, limit: usize) -> anyhow::Result<Vec<ExampleInput>> {
    if !maps.is_dir() {
        bail!(
            "--teacher-maps {} is not a folder (expected a `lavender extract` output)",
            maps.display()
        );
    }
    let index = TeacherMapsIndex::open(maps)
        .with_context(|| format!("cannot open the teacher maps {}", maps.display()))?;
    let samples = data
        .read()
        .with_context(|| format!("cannot read the examples' dataset {data}"))?;
    let mut loader = crate::limits::image_loader();
    let mut examples = Vec::new();
    for sample in &samples {
        if examples.len() == limit {
            break;
        }
        let teacher = index.get(&sample.id, &Device::flex()).with_context(|| {
            format!(
                "cannot read the teacher maps of `{}` in {}",
                sample.id,
                maps.display()
            )
        })?;
        let Some(teacher) = teacher.filter(|t| !t.words.is_empty()) else {
            continue;
        };
        // The loader's error names the image file.
        let image = loader
            .load(&sample.image)
            .with_context(|| format!("example `{}`: cannot read its image", sample.id))?;
        examples.push(ExampleInput {
            id: sample.id.clone(),
            image: image.to_rgb8(),
            caption: sample.text.clone(),
            maps: teacher,
        });
    }
    if examples.is_empty() {
        bail!(
            "none of the {} samples of {data} has teacher maps in {}; extract them first \
             (`lavender extract --data {data} --out {}`)",
            samples.len(),
            maps.display(),
            maps.display()
        );
    }
    Ok(examples)
}

/// The Aligner file at `path` (a run folder means its `aligner.safetensors`), read before the
/// model loads so a wrong path fails in seconds; the export checks its tensors.
fn read_aligner(path: &Path, activation: AlignerActivation) -> anyhow::Result<AlignerInput> {
    let file = if path.is_dir() {
        path.join(ALIGNER_FILE)
    } else {
        path.to_path_buf()
    };
    let bytes = fs::read(&file).with_context(|| {
        format!(
            "cannot read --aligner {} (expected a training run's {ALIGNER_FILE})",
            file.display()
        )
    })?;
    Ok(AlignerInput {
        label: file,
        bytes,
        activation,
    })
}

/// Fails early, before the model loads, when `out` would be refused at the end.
fn check_out(out: &Path, overwrite: bool) -> anyhow::Result<()> {
    if !out.exists() || is_empty_dir(out)? {
        return Ok(());
    }
    if !overwrite {
        bail!(
            "{} exists and is not empty; pass --overwrite to replace it",
            out.display()
        );
    }
    // --overwrite replaces an earlier export, never an arbitrary folder.
    if !out.join("manifest.json").is_file() {
        bail!(
            "{} is not a bundle (no manifest.json): --overwrite only replaces a folder that \
             export-web wrote; choose another --out",
            out.display()
        );
    }
    Ok(())
}

fn is_empty_dir(path: &Path) -> anyhow::Result<bool> {
    if !path.is_dir() {
        bail!("{} exists and is not a folder", path.display());
    }
    Ok(fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .next()
        .is_none())
}

/// The bundle folder, written atomically ([`write_folder_atomically`]): an existing `out`
/// (empty, or any with `overwrite`) is replaced only once the new one is complete.
fn write_bundle(files: &BundleFiles, out: &Path, overwrite: bool) -> anyhow::Result<()> {
    check_out(out, overwrite)?;
    write_folder_atomically(out, files.iter())
}

/// Reads the bundle folder `dir` (the files its manifest lists), checks every file's size and
/// SHA-256 against the manifest, and loads the student on `device`. With `dequantize` (for
/// wgpu, whose WGSL kernels cannot read 8-bit weights: see [`Mllama::dequantized`]) it is
/// loaded on the CPU, its quantized weights expanded to f32, then moved to `device`.
pub fn load_bundle(dir: &Path, device: &Device, dequantize: bool) -> anyhow::Result<Mllama> {
    let mut files = BundleFiles::new(dir);
    let manifest_path = dir.join(MANIFEST_FILE);
    let metadata = fs::symlink_metadata(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    anyhow::ensure!(
        metadata.file_type().is_file() && metadata.len() <= MAX_MANIFEST_BYTES,
        "{} is not a regular file of at most {MAX_MANIFEST_BYTES} bytes (a link, device or \
         an endless manifest); a bundle's manifest is a small plain file",
        manifest_path.display()
    );
    let mut manifest = Vec::new();
    fs::File::open(&manifest_path)
        .and_then(|file| file.take(MAX_MANIFEST_BYTES).read_to_end(&mut manifest))
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    files.insert(MANIFEST_FILE, manifest);
    // Only plain names inside `dir` (checked by `manifest`), each read only if it is a regular
    // file of exactly the listed size, and never past it: a shared bundle cannot make this
    // read outside its folder, follow a link, block on a FIFO or stream a device.
    let manifest = files.manifest()?;
    for (name, entry) in &manifest.files {
        let path = dir.join(name);
        // A missing file is left out here and reported by the check below, with its size.
        let Ok(metadata) = fs::symlink_metadata(&path) else {
            continue;
        };
        anyhow::ensure!(
            metadata.file_type().is_file(),
            "{} is not a regular file (a link, folder or device); a bundle holds plain files",
            path.display()
        );
        if metadata.len() != entry.size {
            return Err(BundleError::Size {
                path,
                expected: entry.size,
                found: metadata.len(),
            }
            .into());
        }
        let mut bytes = Vec::new();
        // A sparse file can claim any size: ask for the memory instead of aborting without it.
        bytes.try_reserve_exact(entry.size as usize).map_err(|_| {
            anyhow::anyhow!(
                "{}: cannot allocate the {} bytes the manifest lists",
                path.display(),
                entry.size
            )
        })?;
        fs::File::open(&path)
            .and_then(|file| file.take(entry.size).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {}", path.display()))?;
        files.insert(name.clone(), bytes);
    }
    files.verify()?;
    if dequantize {
        let student = Mllama::from_bundle(files, &DeviceSpec::Cpu.open()?)?;
        let (student, count) = student.dequantized();
        if count > 0 {
            tracing::info!("{count} quantized weights expanded to f32 for wgpu");
        }
        return Ok(student.into_device(device));
    }
    Ok(Mllama::from_bundle(files, device)?)
}
