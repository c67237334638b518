//! `lavender`: the command-line side of lavender-rs. Owns I/O, logging and exit codes;
//! the method itself lives in `lavender-core`.

mod commands;
mod cuda;
mod device;
mod limits;
mod output;
mod panic_capture;
mod train;

use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "lavender",
    version,
    about = "Lavender (Diffusion Instruction Tuning, arXiv 2502.06814) in Rust",
    long_about = "Lavender fine-tunes a vision-language model so that its text-to-image attention \
                  matches Stable Diffusion's per-word cross-attention maps.\n\n\
                  Every command that computes takes --device cuda[:N] | wgpu[:N] | cpu; \
                  `lavender devices` lists what this machine offers.",
    after_help = "Examples:\n  lavender devices\n  lavender attend-sd --sd ./stable-diffusion-v1-4 --image dog.jpg --text \"a dog\" --out dog.safetensors --png dog.png"
)]
struct Cli {
    /// More log output on stderr (-v: debug, -vv: trace). RUST_LOG overrides it.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    /// Refuse images of more pixels than this, from their header, before decoding them
    /// (decompression bombs; the default is PIL's refusal threshold, about 13,400 x 13,400).
    #[arg(long, global = true, value_name = "PIXELS", default_value_t = lavender_core::images::MAX_PIXELS)]
    max_image_pixels: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole pipeline on bundled data and tiny models: teacher maps, Lavender and SFT runs, heatmaps.
    Demo(commands::demo::DemoArgs),
    /// List CUDA GPUs, wgpu adapters and the CPU backend, checking each with a small computation.
    Devices(commands::devices::DevicesArgs),
    /// Stable Diffusion's per-word attention maps for one image and text.
    AttendSd(commands::attend_sd::AttendSdArgs),
    /// Stable Diffusion's per-word attention maps for a whole dataset (resumable, shardable).
    Extract(commands::extract::ExtractArgs),
    /// Per-word heatmaps of where the student looks for each word of an answer.
    Attend(commands::attend::AttendArgs),
    /// Train a small Stable Diffusion v1.x from scratch on captioned images (a diffusers folder).
    TrainTeacher(commands::train_teacher::TrainTeacherArgs),
    /// Lavender fine-tuning of the student against teacher maps (or plain SFT with --lambda 0).
    Train(commands::train::TrainArgs),
    /// Answer a question about an image with Llama-3.2-Vision (optionally with a LoRA adapter).
    Generate(commands::generate::GenerateArgs),
    /// Answer every question of a dataset (or a VLMEvalKit TSV) and score the answers.
    Eval(commands::eval::EvalArgs),
    /// The pointing game of word maps (stored, or a student's) against ground-truth masks.
    Point(commands::point::PointArgs),
    /// The self-contained Lavender study on shapes: data, teacher, student, arms, eval, report.
    Study(commands::study::StudyArgs),
    /// Generate the synthetic shapes dataset (captions, questions, masks, a held-out split).
    Shapes(commands::shapes::ShapesArgs),
    /// Write the student (adapter merged, weights quantized) as a bundle for the browser explorer.
    ExportWeb(commands::export_web::ExportWebArgs),
    /// Benchmark: UNet evaluations per second with attention capture (random weights).
    BenchUnet(commands::bench_unet::BenchUnetArgs),
    /// Benchmark: a Lavender LoRA training step and decoding at Llama-3.2-11B-Vision size (random weights).
    BenchTrain(commands::bench_train::BenchTrainArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Train(args) = &cli.command
        && std::env::var_os("BURN_DEVICE").is_none()
    {
        // Burn creates a resumed optimiser's state on its default device, CUDA whenever it is
        // compiled in; point it at the training device. Set here, before any thread exists.
        match commands::train::device_spec(args) {
            // SAFETY: single-threaded so far; nothing else reads or writes the environment.
            Ok(spec) => unsafe { std::env::set_var("BURN_DEVICE", spec.burn_device_env()) },
            Err(error) => {
                eprintln!("error: {}", describe(&error));
                return ExitCode::FAILURE;
            }
        }
    }
    init_logging(cli.verbose);
    limits::set_max_image_pixels(cli.max_image_pixels);
    match run_command(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text the message so far
/// already holds (a library error that prints its source, then lists it as its source, would
/// otherwise say everything twice or three times).
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        let cause = cause.trim();
        if cause.is_empty() || text.contains(cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(cause);
    }
    text
}

fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Devices(args) => commands::devices::run(args, &mut std::io::stdout().lock()),
        Command::AttendSd(args) => commands::attend_sd::run(args),
        Command::Extract(args) => commands::extract::run(args),
        Command::Shapes(args) => commands::shapes::run(args),
        Command::TrainTeacher(args) => commands::train_teacher::run(args),
        Command::Point(args) => commands::point::run(args),
        Command::Study(args) => commands::study::run(args, run_args),
        Command::BenchUnet(args) => commands::bench_unet::run(args),
        Command::BenchTrain(args) => commands::bench_train::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::ExportWeb(args) => commands::export_web::run(args),
        Command::Attend(args) => commands::attend::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Demo(args) => commands::demo::run(args, run_args),
    }
}

/// A `lavender` command line (without the program name), parsed and run in this process.
fn run_args(args: &[String]) -> anyhow::Result<()> {
    let cli =
        Cli::try_parse_from(std::iter::once("lavender".to_string()).chain(args.iter().cloned()))
            .map_err(|error| anyhow::anyhow!("lavender {}: {error}", args.join(" ")))?;
    run_command(cli.command)
        .with_context(|| format!("lavender {}", args.first().map_or("", String::as_str)))
}

fn init_logging(verbose: u8) {
    // Graphics drivers are chatty: wgpu's hardware layer reports every API it probes and
    // cannot open (EGL on a headless machine) as an error; `lavender devices` says what works.
    let default = match verbose {
        0 => "error,wgpu_hal=off,lavender=info",
        1 => "warn,lavender=debug",
        _ => "info,lavender=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
