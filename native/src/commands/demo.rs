//! `lavender demo`: the README's main job, with no flags and no download: the shapes study
//! (`lavender study`) cut to about two minutes. The committed teacher (a tiny Stable Diffusion
//! trained here on the shapes scenes) extracts its per-word maps; the committed student (a tiny
//! Llama-3.2-Vision pre-trained here on captioning them) is fine-tuned with Lavender and with
//! plain SFT on the same questions; both are scored on in-distribution and out-of-distribution
//! questions and on where they look, and the table and the pictures' paths are printed. One
//! seed and a small test: the numbers show the machinery and the direction, `lavender study
//! --quick` gives them with intervals.

use std::{fs, path::PathBuf};

use anyhow::Context;
use clap::Args;

use crate::{
    commands::study::{self, StudyArgs, StudyMode, StudyPlan},
    device::DeviceSpec,
};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender demo
  lavender demo --out /tmp/demo --device cpu
  lavender study --quick --out runs/shapes-quick    # the same with 3 seeds and all arms (~20 min)")]
pub struct DemoArgs {
    /// Where to write everything (replaced if an earlier demo wrote it).
    #[arg(long, value_name = "DIR", default_value = "lavender-demo")]
    pub out: PathBuf,

    /// cuda[:N], wgpu[:N] or cpu (default: the CPU, where the tiny models are quickest).
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: DeviceSpec,
}

/// Runs one `lavender` command line (without the program name) in this process.
pub type RunCommand = fn(&[String]) -> anyhow::Result<()>;

pub fn run(args: DemoArgs, run_command: RunCommand) -> anyhow::Result<()> {
    // An earlier demo is replaced, so the demo always does its work; any other folder is kept.
    if args.out.join("study.json").is_file() {
        let plan = fs::read_to_string(args.out.join("study.json")).unwrap_or_default();
        let is_demo =
            serde_json::from_str::<StudyPlan>(&plan).is_ok_and(|plan| plan.mode == StudyMode::Demo);
        anyhow::ensure!(
            is_demo,
            "{} holds a study that is not a demo: choose another --out",
            args.out.display()
        );
        fs::remove_dir_all(&args.out).with_context(|| {
            format!("cannot replace the earlier demo in {}", args.out.display())
        })?;
    }
    study::run(
        StudyArgs {
            out: args.out,
            quick: false,
            mode: Some(StudyMode::Demo),
            seeds: None,
            steps: None,
            teacher: None,
            student: None,
            device: args.device,
        },
        run_command,
    )
}
