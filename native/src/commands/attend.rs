//! `lavender attend`: where the student looks for each word of an answer. The image, question
//! and answer go through the model as one conversation; each answer word's cross-attention
//! (mean over heads and layers, on the image grid) is drawn over the image.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use lavender_core::vlm::mllama::prompt::Message;

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
    let (words, maps) = student.answer_word_maps(
        &full,
        prefix.len()..end,
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
