//! `lavender generate`: answer a question about an image with Llama-3.2-Vision (optionally with
//! a LoRA adapter), streaming the text; `--dump-attention` saves the prompt pass's
//! cross-attention and its per-token maps on the image grid.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
};

use clap::Args;
use lavender_core::align::grid::GridMode;
use lavender_core::vlm::mllama::{
    prompt::Message,
    student::{Mllama, Prepared},
    text::Sampler,
};

use crate::{
    commands::{f32_safetensors, student_args::StudentArgs},
    output::write_atomically,
};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender generate --vlm ./Llama-3.2-11B-Vision-Instruct --image dog.jpg --prompt \"What is the dog doing?\"
  lavender generate --vlm ./Llama-3.2-11B-Vision-Instruct --adapter ./lavender-lora --image dog.jpg \\
      --prompt \"Describe the image.\" --temperature 0.7 --top-p 0.9 --seed 1 --json
  lavender generate --vlm ./model --image dog.jpg --prompt \"Where is the ball?\" --dump-attention attn.safetensors
  lavender generate --bundle ./web-bundle --image dog.jpg --prompt \"What is the dog doing?\"")]
pub struct GenerateArgs {
    /// The user's message; the model's chat template wraps it.
    #[arg(long)]
    pub prompt: String,

    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,

    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,

    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,

    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Print {"text": ..., "token_ids": [...]} at the end instead of streaming text.
    #[arg(long)]
    pub json: bool,

    /// Write the prompt pass's cross-attention (per layer) and per-token grid maps here.
    #[arg(long, value_name = "FILE")]
    pub dump_attention: Option<PathBuf>,

    #[command(flatten)]
    pub student: StudentArgs,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.temperature >= 0.0 && args.temperature.is_finite(),
        "--temperature must be 0 or more"
    );
    anyhow::ensure!(
        args.top_p > 0.0 && args.top_p <= 1.0,
        "--top-p must be in (0, 1]"
    );
    if let Some(path) = &args.dump_attention {
        crate::output::check_writable(path, "--dump-attention")?;
    }
    let (student, image) = args.student.load()?;
    let prepared = student.prepare(
        &image,
        &[Message::user_with_image(args.prompt.as_str())],
        true,
    )?;

    if let Some(path) = &args.dump_attention {
        dump_attention(
            &student,
            &prepared,
            path,
            args.student.map_size,
            args.student.grid.into(),
            &args.student.image,
        )?;
    }

    // Stop early rather than fail when the context has less room than asked for.
    let text_config = &student.model.config.text_config;
    let room = text_config
        .max_position_embeddings
        .saturating_sub(prepared.inputs.input_ids.len());
    let max_new_tokens = args.max_new_tokens.min(room);
    if max_new_tokens < args.max_new_tokens {
        tracing::warn!(
            "the context has room for {room} new tokens after the {}-token prompt; generating at most {room}",
            prepared.inputs.input_ids.len()
        );
    }
    let sampler = Sampler::new(args.temperature, args.top_p, args.seed);
    let stops = text_config.stop_tokens();
    let mut stdout = std::io::stdout().lock();
    let mut printed = String::new();
    let mut shown: Vec<u32> = Vec::new();
    let tokens = student.generate(&prepared, max_new_tokens, &sampler, |token| {
        if args.json || stops.contains(&token) {
            return;
        }
        shown.push(token);
        // Decode everything so far and print what is new: a character can span tokens.
        if let Ok(text) = student.prompt.decode(&shown, true)
            && let Some(new) = text.strip_prefix(printed.as_str())
            && !new.is_empty()
            && !new.ends_with('\u{FFFD}')
        {
            let _ = stdout.write_all(new.as_bytes());
            let _ = stdout.flush();
            printed = text;
        }
    })?;
    let answer: Vec<u32> = tokens
        .iter()
        .copied()
        .filter(|t| !stops.contains(t))
        .collect();
    let text = student.prompt.decode(&answer, true)?;
    if args.json {
        serde_json::to_writer(
            &mut stdout,
            &serde_json::json!({"text": text, "token_ids": tokens}),
        )?;
        writeln!(stdout)?;
    } else {
        if let Some(rest) = text.strip_prefix(printed.as_str()) {
            write!(stdout, "{rest}")?;
        }
        writeln!(stdout)?;
    }
    Ok(())
}

fn dump_attention(
    student: &Mllama,
    prepared: &Prepared,
    path: &Path,
    map_size: usize,
    grid: GridMode,
    image: &Path,
) -> anyhow::Result<()> {
    let attention = student.cross_attention(prepared);
    let grid = student.grid_maps(prepared, &attention, map_size, grid);
    let mut tensors: Vec<(String, burn::tensor::Tensor<3>)> = attention
        .into_iter()
        .map(|(layer, probs)| (format!("cross_attention.{layer}"), probs))
        .collect();
    tensors.push(("grid_maps".to_string(), grid));
    let ids = &prepared.inputs.input_ids;
    let tokens: Vec<String> = ids
        .iter()
        .map(|&id| student.prompt.decode(&[id], false).unwrap_or_default())
        .collect();
    let geometry = student.geometry(prepared);
    let metadata = HashMap::from([
        ("tokens".to_string(), serde_json::to_string(&tokens)?),
        ("token_ids".to_string(), serde_json::to_string(ids)?),
        ("image".to_string(), image.display().to_string()),
        (
            "geometry".to_string(),
            serde_json::json!({
                "tokens_per_tile": geometry.tokens_per_tile,
                "max_tiles": geometry.max_tiles,
                "tiles": geometry.tiles,
                "tile_size": geometry.tile_size,
                "resized": geometry.resized,
            })
            .to_string(),
        ),
    ]);
    write_atomically(path, &f32_safetensors(tensors, metadata)?)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
