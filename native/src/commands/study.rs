//! `lavender study`: the self-contained experiment that shows (or refutes) Lavender's claim at a
//! scale a laptop CPU can run. Every stage is a normal `lavender` command run in this process
//! with the arguments it would get on the command line:
//!
//! 1. `shapes`: the scenes, captions, questions and masks, with a compositional OOD split;
//! 2. the teacher: `train-teacher` (full mode) or the committed one (`--quick`), then its gate:
//!    `extract` + `point` on the validation captions (the study stops if the teacher's maps do
//!    not point at the objects clearly above chance);
//! 3. `extract` of the training captions' maps (the questions share their scene's maps);
//! 4. the student: `train --full --from-scratch` on captioning (full mode) or the committed one;
//! 5. the arms, each `train` with LoRA from the same student, identical but for the alignment
//!    term: SFT (lambda 0), Lavender (lambda 10, and one more lambda chosen on the validation
//!    questions), the teacher's maps shuffled across scenes, and the ground-truth masks;
//! 6. `eval` of every arm and seed on the in-distribution and OOD tests, and `point --vlm` (the
//!    student's own attention against the masks) on the OOD questions;
//! 7. `report.md`, `results.json` and the plots (`study::report`).
//!
//! Each stage's output is kept: re-running the same command resumes after the last finished
//! stage. Nothing is chosen by looking at the OOD test.

pub mod report;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::{commands::demo::RunCommand, device::DeviceSpec};

/// The repository this binary was built from: the committed teacher and student.
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The committed teacher and pre-trained student, relative to the repository.
pub const COMMITTED_TEACHER: &str = "native/models/shapes-teacher";
pub const COMMITTED_STUDENT: &str = "native/models/shapes-student";

/// Marks a folder the study wrote, with its settings: a re-run with the same settings resumes
/// it; other settings are refused.
const MARKER: &str = "study.json";

/// How big the study is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum StudyMode {
    /// The committed teacher and student; SFT, Lavender, shuffled teacher and oracle with 3
    /// seeds of 100 steps, a smaller training set and test (under 20 minutes on 2 CPU cores).
    Quick,
    /// Trains the teacher and the student from scratch; also a second lambda chosen on
    /// validation; 5 seeds of 300 steps, the whole test.
    Full,
    /// A few steps of everything, for tests (the numbers mean nothing); trains what is not
    /// given, like full mode.
    Smoke,
    /// `lavender demo`: the quick study cut to about two minutes: the committed models, one
    /// seed, SFT and Lavender only, a smaller training set and test.
    Demo,
}

impl StudyMode {
    /// Whether the committed models are the default.
    fn uses_committed_models(self) -> bool {
        matches!(self, StudyMode::Quick | StudyMode::Demo)
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lavender study --quick --out runs/shapes-quick      # committed teacher and student, ~20 min on 2 CPU cores
  lavender study --out runs/shapes                    # trains teacher and student too (full mode)
  lavender study --quick --out runs/x --seeds 5 --device cuda

A killed study resumes where it stopped when the same command is run again. The report
(report.md, results.json, accuracy.png, maps.png) lands in --out.")]
pub struct StudyArgs {
    /// The run folder (resumed if an earlier study with the same settings wrote it).
    #[arg(long, value_name = "DIR", default_value = "runs/shapes")]
    pub out: PathBuf,

    /// Use the committed teacher and pre-trained student, 3 seeds and a smaller test.
    #[arg(long, conflicts_with = "mode")]
    pub quick: bool,

    /// quick, full or smoke (default: full, or quick with --quick).
    #[arg(long, value_enum)]
    pub mode: Option<StudyMode>,

    /// Seeds per arm (default: 3 quick, 5 full).
    #[arg(long)]
    pub seeds: Option<usize>,

    /// Fine-tuning steps of each arm (default: the mode's).
    #[arg(long)]
    pub steps: Option<u64>,

    /// The teacher, a diffusers folder (default: trained here in full mode, the committed one
    /// in quick mode).
    #[arg(long, value_name = "DIR")]
    pub teacher: Option<PathBuf>,

    /// The pre-trained student, a Hugging Face Mllama folder (default: pre-trained here in
    /// full mode, the committed one in quick mode).
    #[arg(long, value_name = "DIR")]
    pub student: Option<PathBuf>,

    /// cuda[:N], wgpu[:N] or cpu (default: the CPU, where these tiny models are quickest).
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: DeviceSpec,
}

/// Every size and setting of a study; recorded in `study.json` and the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyPlan {
    pub mode: StudyMode,
    pub seeds: Vec<u64>,
    /// Scenes per split: train, val, test, ood (`shapes`' seed 0; the first scenes of each
    /// split's stream, so a smaller split is a prefix of a larger one).
    pub scenes: [usize; 4],
    pub image_size: u32,
    /// Fine-tuning: steps, batch, learning rate (LoRA, the project's defaults otherwise).
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    /// Lavender's lambda (the authors'), and the candidates for the second lambda, chosen by
    /// validation accuracy (seed of the first seed only).
    pub lambda: f64,
    pub lambda_candidates: Vec<f64>,
    /// Teacher training (full mode): autoencoder and denoiser steps.
    pub teacher_vae_steps: u64,
    pub teacher_steps: u64,
    /// Student pre-training (full mode): epochs of captioning at this rate.
    pub pretrain_epochs: usize,
    pub pretrain_lr: f64,
    /// Validation questions scoring the lambda candidates.
    pub val_questions: usize,
    /// Side of the teacher's, oracle's and student's maps.
    pub map_size: usize,
    pub teacher: String,
    pub student: String,
    pub device: String,
}

impl StudyPlan {
    fn new(args: &StudyArgs) -> anyhow::Result<Self> {
        let mode = match (args.quick, args.mode) {
            (true, _) => StudyMode::Quick,
            (false, Some(mode)) => mode,
            (false, None) => StudyMode::Full,
        };
        let (scenes, seeds, steps, val_questions) = match mode {
            StudyMode::Quick => ([1000, 200, 100, 100], 3, 100, 0),
            StudyMode::Full => ([2000, 200, 400, 400], 5, 300, 2000),
            StudyMode::Smoke => ([40, 10, 8, 8], 2, 3, 20),
            StudyMode::Demo => ([200, 100, 30, 30], 1, 40, 0),
        };
        let seeds = args.seeds.unwrap_or(seeds);
        let fewest = if mode == StudyMode::Demo { 1 } else { 2 };
        anyhow::ensure!(
            (fewest..=20).contains(&seeds),
            "--seeds must be {fewest} to 20 (intervals need two)"
        );
        let steps = args.steps.unwrap_or(steps);
        anyhow::ensure!(steps > 0, "--steps must be positive");
        let repo = Path::new(REPO);
        let committed = |given: &Option<PathBuf>, default: &str| -> anyhow::Result<String> {
            match given {
                Some(path) => Ok(absolute(path)),
                None if !mode.uses_committed_models() => Ok(String::new()),
                None => {
                    let path = repo.join(default);
                    anyhow::ensure!(
                        path.is_dir(),
                        "{} is missing: --quick uses the repository's committed models (run it \
                         from a checkout of lavender-rs, or pass --teacher and --student)",
                        path.display()
                    );
                    Ok(absolute(&path))
                }
            }
        };
        Ok(Self {
            mode,
            seeds: (0..seeds as u64).collect(),
            scenes,
            image_size: 64,
            steps,
            batch: 16,
            // Chosen on the validation questions for SFT (seed 0, 100 steps: 2e-3 42.8%,
            // 5e-3 46.2%, 1e-2 45.5%), then used by every arm.
            lr: 5e-3,
            lambda: 10.0,
            // The second lambda costs two more runs and their validation: full and smoke
            // modes only (quick and demo keep to their time).
            lambda_candidates: if matches!(mode, StudyMode::Full | StudyMode::Smoke) {
                vec![1.0, 100.0]
            } else {
                Vec::new()
            },
            teacher_vae_steps: if mode == StudyMode::Smoke { 2 } else { 150 },
            teacher_steps: if mode == StudyMode::Smoke { 2 } else { 600 },
            pretrain_epochs: if mode == StudyMode::Smoke { 1 } else { 10 },
            pretrain_lr: 1e-3,
            val_questions,
            map_size: 16,
            teacher: committed(&args.teacher, COMMITTED_TEACHER)?,
            student: committed(&args.student, COMMITTED_STUDENT)?,
            device: args.device.to_string(),
        })
    }
}

/// One arm: its name, the questions it trains on, the teacher maps and lambda.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Arm {
    pub name: String,
    pub description: String,
    pub lambda: f64,
    /// `vqa-train.jsonl` or the shuffled-teacher copy.
    pub questions: String,
    /// Folder of teacher maps (`None`: SFT).
    pub maps: Option<PathBuf>,
}

pub fn run(args: StudyArgs, run_command: RunCommand) -> anyhow::Result<()> {
    let plan = StudyPlan::new(&args)?;
    let out = PathBuf::from(absolute(&args.out));
    prepare_out(&out, &plan)?;
    let started = Instant::now();
    let study = Study {
        plan: &plan,
        out: &out,
        run_command,
        started,
    };
    study.run()
}

struct Study<'a> {
    plan: &'a StudyPlan,
    out: &'a Path,
    run_command: RunCommand,
    started: Instant,
}

impl Study<'_> {
    fn stage(&self, what: &str) {
        eprintln!(
            "[study {:>5.0} s] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Runs `lavender ARGS` unless `done` exists (a finished earlier run of the stage).
    fn command(&self, done: &Path, args: &[String]) -> anyhow::Result<()> {
        if done.exists() {
            return Ok(());
        }
        (self.run_command)(args)
    }

    fn run(&self) -> anyhow::Result<()> {
        let plan = self.plan;
        let out = self.out;
        let device = plan.device.clone();
        let data = out.join("data");
        let [train, val, test, ood] = plan.scenes.map(|n| n.to_string());

        self.stage("data: `lavender shapes` (seed 0)");
        self.command(
            &data.join("dataset.json"),
            &strings(&[
                "shapes",
                "--out",
                &path(&data),
                "--train",
                &train,
                "--val",
                &val,
                "--test",
                &test,
                "--ood",
                &ood,
                "--size",
                &plan.image_size.to_string(),
                "--map-size",
                &plan.map_size.to_string(),
            ]),
        )?;

        let teacher = if plan.teacher.is_empty() {
            let teacher = out.join("teacher");
            self.stage("teacher: `lavender train-teacher` on the training captions");
            self.command(
                &teacher.join("model_index.json"),
                &strings(&[
                    "train-teacher",
                    "--data",
                    &jsonl(&data.join("captions-train.jsonl")),
                    "--out",
                    &path(&teacher),
                    "--image-size",
                    &plan.image_size.to_string(),
                    "--vae-steps",
                    &plan.teacher_vae_steps.to_string(),
                    "--steps",
                    &plan.teacher_steps.to_string(),
                    "--half",
                    "--seed",
                    "0",
                    "--device",
                    &device,
                ]),
            )?;
            teacher
        } else {
            PathBuf::from(&plan.teacher)
        };

        let extract = |split: &str, limit: Option<usize>| -> anyhow::Result<PathBuf> {
            let maps = out.join("teacher-maps").join(split);
            let mut args = strings(&[
                "extract",
                "--sd",
                &path(&teacher),
                "--data",
                &jsonl(&data.join(format!("captions-{split}.jsonl"))),
                "--out",
                &path(&maps),
                "--recipe",
                "noise",
                "--timesteps",
                "200,500",
                "--image-size",
                &plan.image_size.to_string(),
                "--attn-res",
                &(plan.image_size / 4).to_string(),
                "--map-size",
                &plan.map_size.to_string(),
                "--seed",
                "0",
                "--device",
                &device,
            ]);
            if let Some(limit) = limit {
                args.extend(strings(&["--limit", &limit.to_string()]));
            }
            self.command(&maps.join(".complete"), &args)?;
            fs::write(maps.join(".complete"), b"")?;
            Ok(maps)
        };

        self.stage("teacher gate: `extract` + `point` on the validation captions");
        let gate_maps = extract("val", None)?;
        let gate_file = out.join("gate.json");
        self.command(
            &gate_file,
            &strings(&[
                "point",
                "--maps",
                &path(&gate_maps),
                "--data",
                &path(&data.join("captions-val.jsonl")),
                "--out",
                &path(&gate_file),
            ]),
        )?;
        let gate = report::Gate::read(&gate_file)?;
        if !gate.passes() {
            report::write_gate_failure(out, plan, &gate, self.started.elapsed())?;
            bail!(
                "the teacher fails its gate (pointing rate {:.3}, chance {:.3}, z {:.1}): its maps \
                 do not point at the objects, so no student was trained; see {}",
                gate.rate,
                gate.chance,
                gate.z,
                out.join("report.md").display()
            );
        }

        self.stage("teacher maps of the training captions: `extract`");
        let train_maps = extract("train", None)?;
        // A few OOD scenes' teacher maps, for the picture of maps only.
        let ood_maps = extract("ood", Some(report::PICTURE_SCENES))?;

        let student = if plan.student.is_empty() {
            let run = out.join("student-pretraining");
            self.stage(
                "student: captioning pre-training from scratch (`train --full --from-scratch`)",
            );
            self.command(
                &run.join("model").join("model.safetensors"),
                &strings(&[
                    "train",
                    "--vlm",
                    &path(&data.join("student")),
                    "--full",
                    "--from-scratch",
                    "--data",
                    &jsonl(&data.join("captions-train.jsonl")),
                    "--out",
                    &path(&run),
                    "--lambda",
                    "0",
                    "--lr",
                    &plan.pretrain_lr.to_string(),
                    "--batch",
                    &plan.batch.to_string(),
                    "--epochs",
                    &plan.pretrain_epochs.to_string(),
                    "--eval-fraction",
                    "0.05",
                    "--eval-every",
                    "200",
                    "--map-size",
                    &plan.map_size.to_string(),
                    "--seed",
                    "0",
                    "--device",
                    &device,
                ]),
            )?;
            run.join("model")
        } else {
            PathBuf::from(&plan.student)
        };

        let questions = |name: &str| path(&data.join(name));
        let arm =
            |name: &str, description: &str, lambda: f64, file: &str, maps: Option<&Path>| Arm {
                name: name.to_string(),
                description: description.to_string(),
                lambda,
                questions: questions(file),
                maps: maps.map(Path::to_path_buf),
            };
        let oracle_maps = data.join("oracle-maps");
        let train_arm = |arm: &Arm, seed: u64| -> anyhow::Result<PathBuf> {
            let run = out.join("arms").join(format!("{}-seed{seed}", arm.name));
            let mut args = strings(&[
                "train",
                "--vlm",
                &path(&student),
                "--data",
                &format!("jsonl:{}", arm.questions),
                "--out",
                &path(&run),
                "--lambda",
                &arm.lambda.to_string(),
                "--lr",
                &plan.lr.to_string(),
                "--batch",
                &plan.batch.to_string(),
                "--max-steps",
                &plan.steps.to_string(),
                "--eval-fraction",
                "0.02",
                "--checkpoint-every",
                &plan.steps.to_string(),
                "--map-size",
                &plan.map_size.to_string(),
                "--seed",
                &seed.to_string(),
                "--device",
                &device,
            ]);
            if let Some(maps) = &arm.maps {
                args.extend(strings(&["--teacher-maps", &path(maps)]));
            }
            self.command(
                &run.join("adapter").join("adapter_model.safetensors"),
                &args,
            )?;
            Ok(run)
        };
        let eval = |run: &Path, split: &str, limit: Option<usize>| -> anyhow::Result<PathBuf> {
            let result = run.join(format!("eval-{split}.tsv"));
            let mut args = strings(&[
                "eval",
                "--vlm",
                &path(&student),
                "--adapter",
                &path(&run.join("adapter")),
                "--data",
                &jsonl(&data.join(format!("vqa-{split}.jsonl"))),
                "--out",
                &path(&result),
                "--max-new-tokens",
                "4",
                "--device",
                &device,
            ]);
            if let Some(limit) = limit {
                args.extend(strings(&["--limit", &limit.to_string()]));
            }
            let summary = result.with_extension("tsv.summary.json");
            self.command(&summary, &args)?;
            Ok(summary)
        };

        // The second lambda, chosen on the validation questions with the first seed.
        let first_seed = plan.seeds[0];
        let mut candidates = Vec::new();
        for &lambda in &plan.lambda_candidates {
            let name = format!("lavender-lambda{lambda}");
            self.stage(&format!(
                "choosing the second lambda on validation: lambda {lambda}, seed {first_seed}"
            ));
            let candidate = arm(&name, "", lambda, "vqa-train.jsonl", Some(&train_maps));
            let run = train_arm(&candidate, first_seed)?;
            let summary = eval(&run, "val", Some(plan.val_questions))?;
            candidates.push((lambda, report::EvalSummary::read(&summary)?.accuracy));
        }
        // The candidate with the best validation accuracy (the first of equals).
        let chosen = candidates
            .iter()
            .copied()
            .fold(None, |best: Option<(f64, f64)>, candidate| match best {
                Some(best) if best.1 >= candidate.1 => Some(best),
                _ => Some(candidate),
            })
            .map(|(lambda, _)| lambda);

        let mut arms = vec![
            arm(
                "sft",
                "plain fine-tuning (lambda 0)",
                0.0,
                "vqa-train.jsonl",
                None,
            ),
            arm(
                "lavender",
                "Lavender, the teacher's maps (lambda 10)",
                plan.lambda,
                "vqa-train.jsonl",
                Some(&train_maps),
            ),
        ];
        if let Some(chosen) = chosen {
            arms.push(arm(
                &format!("lavender-lambda{chosen}"),
                &format!("Lavender, lambda {chosen} (chosen on validation)"),
                chosen,
                "vqa-train.jsonl",
                Some(&train_maps),
            ));
        }
        if plan.mode != StudyMode::Demo {
            arms.push(arm(
                "shuffled",
                "the teacher's maps shuffled across scenes (lambda 10)",
                plan.lambda,
                "vqa-train-shuffled-teacher.jsonl",
                Some(&train_maps),
            ));
            arms.push(arm(
                "oracle",
                "the ground-truth masks as maps (lambda 10)",
                plan.lambda,
                "vqa-train.jsonl",
                Some(&oracle_maps),
            ));
        }
        // The pre-trained student's own pointing, before any fine-tuning: the level the
        // arms start from (its attention already finds objects; which one is the question).
        self.stage("the pre-trained student's pointing on the OOD questions");
        // `point --vlm` on the OOD questions, with an arm's adapter or none.
        let point_student = |adapter: Option<&Path>, result: &Path| -> anyhow::Result<()> {
            let mut args = strings(&[
                "point",
                "--vlm",
                &path(&student),
                "--data",
                &path(&data.join("vqa-ood.jsonl")),
                "--map-size",
                &plan.map_size.to_string(),
                "--out",
                &path(result),
                "--device",
                &device,
            ]);
            if let Some(adapter) = adapter {
                args.extend(strings(&["--adapter", &path(adapter)]));
            }
            self.command(result, &args)
        };
        let before = out.join("student-point-ood.json");
        point_student(None, &before)?;
        let pointing_before = report::Gate::read(&before)?.rate;
        let test_limit = None;
        let mut results = Vec::new();
        for arm in &arms {
            for &seed in &plan.seeds {
                self.stage(&format!(
                    "arm {}, seed {seed}: train, eval, point",
                    arm.name
                ));
                let run = train_arm(arm, seed)?;
                let id = eval(&run, "test", test_limit)?;
                let ood = eval(&run, "ood", test_limit)?;
                let pointing = run.join("point-ood.json");
                point_student(Some(&run.join("adapter")), &pointing)?;
                results.push(report::RunResult::read(
                    &arm.name, seed, &run, &id, &ood, &pointing,
                )?);
            }
        }

        self.stage("report: report.md, results.json, accuracy.png, maps.png");
        let pictures = report::MapPictures {
            data: &data,
            student: &student,
            teacher_maps: &ood_maps,
            sft: &out.join("arms").join(format!("sft-seed{first_seed}")),
            lavender: &out.join("arms").join(format!("lavender-seed{first_seed}")),
            device: &plan.device,
            map_size: plan.map_size,
        };
        let written = report::write(report::Inputs {
            out,
            plan,
            arms: &arms,
            candidates: &candidates,
            chosen,
            gate: &gate,
            pointing_before,
            results: &results,
            pictures,
            elapsed: self.started.elapsed(),
        })?;
        println!("{}", written.table);
        println!(
            "study finished in {:.1} min; report {}",
            self.started.elapsed().as_secs_f64() / 60.0,
            out.join("report.md").display()
        );
        println!(
            "  plots {} and {}",
            out.join("accuracy.png").display(),
            out.join("maps.png").display()
        );
        Ok(())
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

fn jsonl(path: &Path) -> String {
    format!("jsonl:{}", path.display())
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// Creates `out` and records the plan; an existing folder is resumed only when a study with the
/// same plan wrote it.
fn prepare_out(out: &Path, plan: &StudyPlan) -> anyhow::Result<()> {
    let marker = out.join(MARKER);
    if out.exists() {
        let empty = fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_none();
        if !empty {
            let text = fs::read_to_string(&marker).map_err(|_| {
                anyhow::anyhow!(
                    "{} exists and was not written by `lavender study`: choose another --out",
                    out.display()
                )
            })?;
            let earlier: StudyPlan = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a study plan", marker.display()))?;
            anyhow::ensure!(
                &earlier == plan,
                "{} holds a study with other settings ({}); choose another --out or remove it",
                out.display(),
                marker.display()
            );
            eprintln!("resuming the study in {}", out.display());
            return Ok(());
        }
    }
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    crate::output::write_atomically(&marker, &serde_json::to_vec_pretty(plan)?)
}
