//! `lavender attend-sd`: the Stable Diffusion teacher's per-word attention maps for one
//! (image, text) pair, as a safetensors file and optionally a PNG of heatmaps over the image.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context;
use clap::Args;
use lavender_core::sd::{
    preprocess::{image_to_tensor, tensor_to_image},
    teacher::{StableDiffusion, TeacherAttention, TeacherConfig},
};

use crate::{
    commands::{f32_safetensors, open_image, png_bytes, teacher_args::TeacherArgs, tensor_values},
    device::DeviceSpec,
    output::{check_writable, write_all_atomically},
};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender attend-sd --sd ./stable-diffusion-v1-4 --image dog.jpg --text \"a dog on a skateboard\" \\
      --out dog.safetensors --png dog.png
  lavender attend-sd --sd ./sd --image dog.jpg --text \"a dog\" --out dog.safetensors \\
      --recipe noise --timesteps 100,500,900 --device cuda:1
  lavender attend-sd --sd ./sd --image dog.jpg --text \"a dog\" --out dog.safetensors \\
      --recipe null-text --reconstruction dog-reconstructed.png")]
pub struct AttendSdArgs {
    /// Stable Diffusion v1.x in diffusers layout (unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long, value_name = "DIR")]
    pub sd: PathBuf,

    /// The image (PNG, JPEG).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,

    /// The text whose words are located in the image.
    #[arg(long)]
    pub text: String,

    /// Where to write the maps (safetensors: token_maps, word_maps, metadata).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Also write a PNG grid of per-word heatmaps over the image.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,

    /// Also write what the teacher ended on, decoded by the VAE: the regenerated image after
    /// inversion (close to the input with --recipe null-text; the VAE's reconstruction with
    /// --recipe noise).
    #[arg(long, value_name = "FILE")]
    pub reconstruction: Option<PathBuf>,

    #[command(flatten)]
    pub teacher: TeacherArgs,

    /// cuda[:N], wgpu[:N] or cpu (default: the first CUDA GPU if there is one, else the CPU).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<DeviceSpec>,
}

pub fn run(args: AttendSdArgs) -> anyhow::Result<()> {
    let config = args.teacher.config()?;
    check_writable(&args.out, "--out")?;
    if let Some(png) = &args.png {
        check_writable(png, "--png")?;
    }
    if let Some(path) = &args.reconstruction {
        check_writable(path, "--reconstruction")?;
    }
    let spec = args.device.unwrap_or_else(DeviceSpec::best_available);
    let device = spec.open()?;
    let image = open_image(&args.image)?;

    let started = Instant::now();
    let sd = StableDiffusion::load(&args.sd, &device)
        .with_context(|| format!("cannot load Stable Diffusion from {}", args.sd.display()))?;
    tracing::info!(
        "loaded {} on {spec} in {:.1?}",
        args.sd.display(),
        started.elapsed()
    );

    let started = Instant::now();
    let input = image_to_tensor(&image, config.image_size, &device);
    let maps = sd
        .attend(input, &[args.text.as_str()], &config, None)?
        .remove(0);
    tracing::info!(
        "{} words from {} tokens in {:.1?}",
        maps.word_maps.words.len(),
        maps.pieces.len(),
        started.elapsed()
    );

    // Every output is made before any is written, and they are written all or none.
    let metadata = maps_metadata(&maps, &config, &args.text, &args.image, &args.sd)?;
    let mut outputs = vec![(args.out.clone(), maps_safetensors(&maps, metadata)?)];
    if let Some(png) = &args.png {
        let word_maps = tensor_values(maps.word_maps.maps.clone(), "the word maps")?;
        let grid = lavender_core::maps::picture::overlay_grid(
            &image,
            &maps.word_maps.words,
            &word_maps,
            config.map_size,
        );
        outputs.push((png.clone(), png_bytes(&grid)?));
    }
    if let Some(path) = &args.reconstruction {
        let picture =
            tensor_to_image(sd.decode(maps.latent.clone())).map_err(anyhow::Error::msg)?;
        outputs.push((path.clone(), png_bytes(&picture)?));
    }
    let files: Vec<(&Path, &[u8])> = outputs
        .iter()
        .map(|(path, bytes)| (path.as_path(), bytes.as_slice()))
        .collect();
    write_all_atomically(&files)?;
    println!(
        "wrote {} ({} words: {})",
        args.out.display(),
        maps.word_maps.words.len(),
        maps.word_maps.words.join(", ")
    );
    for (path, _) in &outputs[1..] {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Everything needed to interpret the maps, as safetensors string metadata (JSON values).
fn maps_metadata(
    maps: &TeacherAttention,
    config: &TeacherConfig,
    text: &str,
    image: &Path,
    sd: &Path,
) -> anyhow::Result<HashMap<String, String>> {
    Ok(HashMap::from([
        ("text".to_string(), text.to_string()),
        ("tokens".to_string(), serde_json::to_string(&maps.pieces)?),
        (
            "token_ids".to_string(),
            serde_json::to_string(&maps.token_ids)?,
        ),
        (
            "words".to_string(),
            serde_json::to_string(&maps.word_maps.words)?,
        ),
        ("recipe".to_string(), serde_json::to_string(config)?),
        ("image".to_string(), image.display().to_string()),
        ("sd".to_string(), sd.display().to_string()),
        (
            "producer".to_string(),
            format!("lavender {}", env!("CARGO_PKG_VERSION")),
        ),
    ]))
}

fn maps_safetensors(
    maps: &TeacherAttention,
    metadata: HashMap<String, String>,
) -> anyhow::Result<Vec<u8>> {
    f32_safetensors(
        vec![
            ("token_maps".to_string(), maps.token_maps.clone()),
            ("word_maps".to_string(), maps.word_maps.maps.clone()),
        ],
        metadata,
    )
}
