//! `lavender eval`: answer every question of a dataset greedily and score the answers (exact
//! match after normalisation; VLMEvalKit's letter reading for multiple-choice questions).
//! Everything is written at the end, under temporary names then renamed: a failed run (an
//! unreadable image names its row) leaves no partial results.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use lavender_core::{
    data::{DataSpec, ImageLoader},
    eval::{EvalImage, EvalItem, Summary, vlmeval_tsv},
    vlm::mllama::{prompt::Message, student::Mllama, text::Sampler},
};

use crate::{
    commands::student_args::ModelArgs,
    output::{check_writable, write_atomically},
};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender eval --vlm ./Llama-3.2-11B-Vision-Instruct --adapter ./run/adapter \\
      --data jsonl:test.jsonl --out results.tsv
  lavender eval --vlm ./Llama-3.2-11B-Vision-Instruct --data tsv:MMBench_DEV_EN.tsv --out mmbench.tsv
  lavender eval --bundle ./web-bundle --data jsonl:questions.jsonl --out results.tsv --limit 100

--data takes the project's data specs (jsonl:, rlaifv:, ocrvqa:, flickr30k:; each sample's first
user turn is the question and its first assistant turn the answer) or a VLMEvalKit benchmark TSV
(tsv:PATH, or a bare path ending in .tsv: index, image in base64, question, answer, optional A..Z
options, hint and category).

The answer is generated greedily. An open question is right when the prediction equals the
answer after normalisation (lower case; punctuation and the articles a/an/the removed); a
multiple-choice question when the letter read from the prediction (VLMEvalKit's rule: a lone
option letter, else the one option whose text it quotes) is the answer's.

Writes OUT (tab-separated: id, category, question, answer, prediction, correct) and
OUT.summary.json (count, correct, accuracy, and per category).")]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The questions: a data spec (jsonl:PATH, ...) or a VLMEvalKit TSV (tsv:PATH).
    #[arg(long, value_name = "SPEC")]
    pub data: String,

    /// The per-question results (TSV); the summary goes beside it as OUT.summary.json.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,

    /// Evaluate only the first N questions.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// One question's outcome.
struct Outcome {
    prediction: String,
    correct: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.max_new_tokens > 0, "--max-new-tokens must be positive");
    anyhow::ensure!(args.limit != Some(0), "--limit must be positive");
    let mut items = read_items(&args.data)?;
    if let Some(limit) = args.limit {
        items.truncate(limit);
    }
    anyhow::ensure!(!items.is_empty(), "{} has no questions", args.data);
    check_writable(&args.out, "--out")?;
    let student = args.model.load()?;

    let progress = ProgressBar::new(items.len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} questions  {per_sec}  ETA {eta}  {msg}")
            .expect("valid template"),
    );
    let mut loader = crate::limits::image_loader();
    let mut outcomes = Vec::with_capacity(items.len());
    let mut correct = 0;
    for (position, item) in items.iter().enumerate() {
        let image = decode_image(item, &mut loader).with_context(|| {
            format!(
                "question {} (id {}): cannot read its image",
                position + 1,
                item.id
            )
        })?;
        let prediction = answer(&student, &image, item, args.max_new_tokens)
            .with_context(|| format!("question {} (id {})", position + 1, item.id))?;
        let is_correct = item.is_correct(&prediction);
        correct += usize::from(is_correct);
        outcomes.push(Outcome {
            prediction,
            correct: is_correct,
        });
        progress.inc(1);
        progress.set_message(format!(
            "accuracy {:.3}",
            correct as f64 / outcomes.len() as f64
        ));
    }
    progress.finish_and_clear();

    let summary = Summary::of(items.iter().zip(outcomes.iter().map(|o| o.correct)));
    write_atomically(&args.out, &results_tsv(&items, &outcomes)?)?;
    let summary_path = summary_path(&args.out);
    write_atomically(
        &summary_path,
        format!("{}\n", serde_json::to_string_pretty(&summary)?).as_bytes(),
    )?;
    println!(
        "accuracy {:.4} ({} of {}); wrote {} and {}",
        summary.accuracy,
        summary.correct,
        summary.count,
        args.out.display(),
        summary_path.display()
    );
    for (category, score) in &summary.categories {
        println!(
            "  {category}: {:.4} ({} of {})",
            score.accuracy, score.correct, score.count
        );
    }
    Ok(())
}

/// The questions of `spec`: `tsv:PATH` (or a bare path ending in `.tsv`) is a VLMEvalKit
/// table, anything else a project data spec.
fn read_items(spec: &str) -> anyhow::Result<Vec<EvalItem>> {
    let tsv = |path: &str| Ok(vlmeval_tsv::read(Path::new(path))?);
    if let Some(path) = spec.strip_prefix("tsv:") {
        return tsv(path);
    }
    let data: DataSpec = match spec.parse() {
        Ok(data) => data,
        // A bare path (no KIND: of the data specs) naming a .tsv file.
        Err(_) if spec.ends_with(".tsv") => return tsv(spec),
        Err(error) => anyhow::bail!(error),
    };
    let conversations = data.read_conversations()?;
    conversations
        .iter()
        .map(|conversation| {
            EvalItem::from_conversation(conversation).with_context(|| {
                format!(
                    "{spec}: sample {} needs a user question and an assistant answer",
                    conversation.id
                )
            })
        })
        .collect()
}

fn decode_image(item: &EvalItem, loader: &mut ImageLoader) -> anyhow::Result<RgbImage> {
    Ok(match &item.image {
        EvalImage::Source(source) => loader.load(source)?.to_rgb8(),
        EvalImage::Bytes(bytes) => {
            let image =
                lavender_core::images::decode_bytes(bytes, crate::limits::max_image_pixels())?;
            if lavender_core::images::is_truncated_jpeg(bytes) {
                tracing::warn!("{}: {}", item.id, crate::limits::TRUNCATED_JPEG);
            }
            image.to_rgb8()
        }
    })
}

/// The greedy answer to `item`, stop tokens left out.
fn answer(
    student: &Mllama,
    image: &RgbImage,
    item: &EvalItem,
    max_new_tokens: usize,
) -> anyhow::Result<String> {
    let prepared = student.prepare(image, &[Message::user_with_image(item.prompt())], true)?;
    let stops = student.model.config.text_config.stop_tokens();
    let tokens: Vec<u32> = student
        .generate(&prepared, max_new_tokens, &Sampler::greedy(), |_| {})?
        .into_iter()
        .filter(|token| !stops.contains(token))
        .collect();
    Ok(student.prompt.decode(&tokens, true)?.trim().to_string())
}

/// One row per question: id, category, question, answer, prediction, correct (1 or 0).
fn results_tsv(items: &[EvalItem], outcomes: &[Outcome]) -> anyhow::Result<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new()
        .delimiter(b'\t')
        .from_writer(Vec::new());
    writer.write_record([
        "id",
        "category",
        "question",
        "answer",
        "prediction",
        "correct",
    ])?;
    for (item, outcome) in items.iter().zip(outcomes) {
        writer.write_record([
            item.id.as_str(),
            item.category.as_deref().unwrap_or(""),
            item.question.as_str(),
            item.answer.as_str(),
            outcome.prediction.as_str(),
            if outcome.correct { "1" } else { "0" },
        ])?;
    }
    writer.into_inner().context("cannot write the results")
}

/// `OUT.summary.json` beside `OUT`.
fn summary_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".summary.json");
    out.with_file_name(name)
}
