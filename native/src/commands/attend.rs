//! `lavender attend`: where the student looks for each word of an answer. The image, question
//! and answer go through the model as one conversation; each answer word's cross-attention
//! (mean over heads and layers, on the image grid) is drawn over the image.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use lavender_core::vlm::mllama::{prompt::Message, student::Mllama};

use crate::{
    commands::{GridArg, tensor_values},
    device::DeviceSpec,
    output::write_atomically,
};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender attend --vlm ./Llama-3.2-11B-Vision-Instruct --image dog.jpg \\
      --prompt \"What is the dog doing?\" --answer \"The dog rides a skateboard.\" --png dog-student.png
  lavender attend --vlm ./model --adapter ./lavender-lora --image dog.jpg --prompt \"...\" --answer \"...\" --png out.png")]
pub struct AttendArgs {
    /// A Hugging Face Mllama folder.
    #[arg(long, value_name = "DIR")]
    pub vlm: PathBuf,

    /// A PEFT LoRA adapter folder, merged in.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,

    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,

    /// The user's question.
    #[arg(long)]
    pub prompt: String,

    /// The assistant's answer whose words are located.
    #[arg(long)]
    pub answer: String,

    /// The PNG grid of per-word heatmaps over the image.
    #[arg(long, value_name = "FILE")]
    pub png: PathBuf,

    /// Side of the maps.
    #[arg(long, default_value_t = 32)]
    pub map_size: usize,

    /// How attention is placed on the image.
    #[arg(long, value_enum, default_value_t = GridArg::Corrected)]
    pub grid: GridArg,

    /// cuda[:N], wgpu[:N] or cpu (default: the first CUDA GPU if there is one, else the CPU).
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<DeviceSpec>,
}

pub fn run(args: AttendArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.map_size > 0, "--map-size must be positive");
    anyhow::ensure!(!args.answer.trim().is_empty(), "--answer is empty");
    let device = args
        .device
        .unwrap_or_else(DeviceSpec::best_available)
        .open()?;
    let image = image::open(&args.image)
        .with_context(|| format!("cannot decode the image {}", args.image.display()))?
        .to_rgb8();
    let student = Mllama::load(&args.vlm, args.adapter.as_deref(), &device)
        .with_context(|| format!("cannot load the model from {}", args.vlm.display()))?;

    // The answer's tokens are those after the generation prompt, up to the end of its turn.
    let question = [Message::user_with_image(args.prompt.as_str())];
    let prefix = student.prepare(&image, &question, true)?.inputs.input_ids;
    let conversation = [
        Message::user_with_image(args.prompt.as_str()),
        Message::text("assistant", args.answer.as_str()),
    ];
    let full = student.prepare(&image, &conversation, false)?;
    let ids = &full.inputs.input_ids;
    if !ids.starts_with(&prefix) {
        bail!("the chat template does not place the answer after its generation prompt");
    }
    let stops = student.model.config.text_config.stop_tokens();
    let end = ids[prefix.len()..]
        .iter()
        .position(|id| stops.contains(id))
        .map_or(ids.len(), |offset| prefix.len() + offset);
    let (words, maps) =
        student.answer_word_maps(&full, prefix.len()..end, args.map_size, args.grid.into())?;
    if words.is_empty() {
        bail!("the answer has no words to locate");
    }
    let values = tensor_values(maps, "the word maps")?;
    let grid = lavender_core::maps::overlay_grid(&image, &words, &values, args.map_size);
    let mut bytes = Vec::new();
    grid.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    write_atomically(&args.png, &bytes)?;
    println!(
        "wrote {} ({} words: {})",
        args.png.display(),
        words.len(),
        words.join(", ")
    );
    Ok(())
}
