//! `lavender attend`: where the student looks for each word of an answer. The image, question
//! and answer go through the model as one conversation; each answer word's cross-attention
//! (mean over heads and layers, on the image grid) is drawn over the image.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::commands::{student_args::StudentArgs, tensor_values, write_png};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender attend --vlm ./Llama-3.2-11B-Vision-Instruct --image dog.jpg \\
      --prompt \"What is the dog doing?\" --answer \"The dog rides a skateboard.\" --png dog-student.png
  lavender attend --vlm ./model --adapter ./lavender-lora --image dog.jpg --prompt \"...\" --answer \"...\" --png out.png
  lavender attend --bundle ./web-bundle --image dog.jpg --prompt \"...\" --answer \"...\" --png out.png")]
pub struct AttendArgs {
    /// The user's question.
    #[arg(long)]
    pub prompt: String,

    /// The assistant's answer whose words are located.
    #[arg(long)]
    pub answer: String,

    /// The PNG grid of per-word heatmaps over the image.
    #[arg(long, value_name = "FILE")]
    pub png: PathBuf,

    #[command(flatten)]
    pub student: StudentArgs,
}

pub fn run(args: AttendArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.answer.trim().is_empty(), "--answer is empty");
    crate::output::check_writable(&args.png, "--png")?;
    let (student, image) = args.student.load()?;

    let (words, maps) = student.answer_maps(
        &image,
        &args.prompt,
        &args.answer,
        args.student.map_size,
        args.student.grid.into(),
    )?;
    if words.is_empty() {
        bail!("the answer has no words to locate");
    }
    let values = tensor_values(maps, "the word maps")?;
    let grid =
        lavender_core::maps::picture::overlay_grid(&image, &words, &values, args.student.map_size);
    write_png(&args.png, &grid)?;
    println!(
        "wrote {} ({} words: {})",
        args.png.display(),
        words.len(),
        words.join(", ")
    );
    Ok(())
}
