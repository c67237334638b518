//! `lavender demo`: the whole pipeline on bundled data with no flags. The teacher (the tiny
//! Stable Diffusion test model) extracts per-word maps for the bundled images and captions;
//! the student (the tiny Llama-3.2-Vision test model) is trained a few steps with Lavender and,
//! for comparison, with plain SFT; both runs' metrics and loss plots and the three heatmap
//! grids (teacher, Lavender student, SFT student) for one image are written, and their paths
//! printed. The tiny models have random weights: the demo shows the machinery, not a result.
//! Each stage is the real command, run in this process with the arguments it would get.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, bail};
use clap::Args;

use crate::{
    device::DeviceSpec,
    train::run_dir::{Split, read_metrics},
};

/// The repository's bundled demo data and tiny test models, found from the source tree this
/// binary was built from.
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Marks a folder the demo wrote, so a re-run may replace it and nothing else.
const MARKER: &str = "lavender-demo.json";

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender demo
  lavender demo --out /tmp/demo --steps 20 --device cpu")]
pub struct DemoArgs {
    /// Where to write everything (replaced if an earlier demo wrote it).
    #[arg(long, value_name = "DIR", default_value = "lavender-demo")]
    pub out: PathBuf,

    /// Training steps of each run.
    #[arg(long, default_value_t = 12)]
    pub steps: u64,

    /// The student (default: the tiny test model).
    #[arg(long, value_name = "DIR")]
    pub vlm: Option<PathBuf>,

    /// The teacher (default: the tiny test model).
    #[arg(long, value_name = "DIR")]
    pub sd: Option<PathBuf>,

    /// Images and captions, `{"id", "image", "text"}` per line (default: the bundled ones).
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,

    /// cuda[:N], wgpu[:N] or cpu (default: the CPU, where the tiny models are quickest).
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: DeviceSpec,
}

/// Runs one `lavender` command line (without the program name) in this process.
pub type RunCommand = fn(&[String]) -> anyhow::Result<()>;

pub fn run(args: DemoArgs, run_command: RunCommand) -> anyhow::Result<()> {
    anyhow::ensure!(args.steps > 0, "--steps must be positive");
    let repo = Path::new(REPO);
    let bundled = |given: &Option<PathBuf>, default: &str| -> anyhow::Result<PathBuf> {
        let path = given.clone().unwrap_or_else(|| repo.join(default));
        anyhow::ensure!(
            path.exists(),
            "{} is missing: the demo uses the repository's bundled files (run it from a checkout \
             of lavender-rs, or pass --vlm, --sd and --data)",
            path.display()
        );
        Ok(path)
    };
    let vlm = bundled(&args.vlm, "tests/fixtures/mllama-tiny")?;
    let sd = bundled(&args.sd, "tests/fixtures/sd-tiny")?;
    let data = bundled(&args.data, "native/demo/captions.jsonl")?;
    let (image, caption) = first_sample(&data)?;

    prepare_out(&args.out)?;
    let out = std::path::absolute(&args.out).unwrap_or_else(|_| args.out.clone());
    // Written first, so that a re-run may replace an interrupted demo too.
    fs::write(
        out.join(MARKER),
        serde_json::json!({ "steps": args.steps, "device": args.device.to_string() }).to_string(),
    )
    .with_context(|| format!("cannot write {}", out.join(MARKER).display()))?;
    let device = args.device.to_string();
    let started = Instant::now();
    let teacher = out.join("teacher");
    let stage = |n: usize, what: &str| eprintln!("[{n}/4] {what}");

    stage(
        1,
        "teacher: Stable Diffusion per-word maps for the bundled images",
    );
    run_command(&strings(&[
        "extract",
        "--sd",
        &path(&sd),
        "--data",
        &format!("jsonl:{}", path(&data)),
        "--out",
        &path(&teacher),
        "--image-size",
        "32",
        "--device",
        &device,
    ]))?;

    let steps = args.steps.to_string();
    let train = |name: &str, lambda: &str| -> anyhow::Result<PathBuf> {
        let run = out.join(name);
        run_command(&strings(&[
            "train",
            "--vlm",
            &path(&vlm),
            "--data",
            &format!("jsonl:{}", path(&data)),
            "--teacher-maps",
            &path(&teacher),
            "--out",
            &path(&run),
            "--lambda",
            lambda,
            // A large rate and one sample per step, so that a dozen steps visibly move the tiny
            // model in seconds.
            "--lr",
            "5e-3",
            "--batch",
            "1",
            "--max-steps",
            &steps,
            "--eval-every",
            "4",
            "--eval-fraction",
            "0.2",
            "--checkpoint-every",
            &steps,
            "--device",
            &device,
        ]))?;
        Ok(run)
    };
    stage(
        2,
        "student: Lavender fine-tuning (cross-entropy + 10 x attention alignment)",
    );
    let lavender = train("lavender", "10")?;
    stage(3, "student: plain SFT (the same code path with --lambda 0)");
    let sft = train("sft", "0")?;

    stage(
        4,
        "heatmaps: where the teacher and both students look for each word",
    );
    let heatmaps = out.join("heatmaps");
    fs::create_dir_all(&heatmaps)
        .with_context(|| format!("cannot create {}", heatmaps.display()))?;
    run_command(&strings(&[
        "attend-sd",
        "--sd",
        &path(&sd),
        "--image",
        &path(&image),
        "--text",
        &caption,
        "--out",
        &path(&heatmaps.join("teacher.safetensors")),
        "--png",
        &path(&heatmaps.join("teacher.png")),
        "--image-size",
        "32",
        "--device",
        &device,
    ]))?;
    for (name, run) in [("lavender", &lavender), ("sft", &sft)] {
        run_command(&strings(&[
            "attend",
            "--vlm",
            &path(&vlm),
            "--adapter",
            &path(&run.join("adapter")),
            "--image",
            &path(&image),
            "--prompt",
            lavender_core::data::conversation::CAPTION_PROMPT,
            "--answer",
            &caption,
            "--png",
            &path(&heatmaps.join(format!("{name}.png"))),
            "--device",
            &device,
        ]))?;
    }

    println!(
        "\ndemo finished in {:.0} s; everything is in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    println!("  teacher maps       {}", teacher.display());
    for (name, run) in [("Lavender", &lavender), ("plain SFT", &sft)] {
        let records = read_metrics(&run.join("metrics.jsonl"))?;
        let train: Vec<_> = records.iter().filter(|r| r.split == Split::Train).collect();
        let eval = records.iter().rev().find(|r| r.split == Split::Eval);
        if let (Some(first), Some(last)) = (train.first(), train.last()) {
            println!(
                "  {name:<10} run   {}  (cross-entropy {:.3} -> {:.3}, alignment {:.4} -> {:.4}{})",
                run.display(),
                first.ce,
                last.ce,
                first.align,
                last.align,
                eval.map(|e| format!(", held-out total {:.3}", e.total))
                    .unwrap_or_default()
            );
        }
        println!("                   plot {}", run.join("loss.png").display());
    }
    println!(
        "  heatmaps           {} (teacher.png, lavender.png, sft.png for \"{caption}\")",
        heatmaps.display()
    );
    Ok(())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

/// The first line's image (resolved beside the file) and caption.
fn first_sample(data: &Path) -> anyhow::Result<(PathBuf, String)> {
    let text =
        fs::read_to_string(data).with_context(|| format!("cannot read {}", data.display()))?;
    let line = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .with_context(|| format!("{} has no samples", data.display()))?;
    let value: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("{}: line 1 is not JSON", data.display()))?;
    let (Some(image), Some(caption)) = (value["image"].as_str(), value["text"].as_str()) else {
        bail!("{}: line 1 needs \"image\" and \"text\"", data.display());
    };
    let folder = data.parent().unwrap_or(Path::new("."));
    Ok((folder.join(image), caption.to_string()))
}

/// Creates `out`, replacing an earlier demo's; refuses a non-empty folder the demo did not write.
fn prepare_out(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let empty = fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_none();
        if !empty {
            anyhow::ensure!(
                out.join(MARKER).is_file(),
                "{} exists and was not written by the demo: choose another --out",
                out.display()
            );
            fs::remove_dir_all(out)
                .with_context(|| format!("cannot replace the earlier demo in {}", out.display()))?;
        }
    }
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}
