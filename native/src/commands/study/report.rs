//! The study's report: `results.json` (every number), `report.md` (the protocol, the teacher
//! gate, the table of arms with 95% intervals over seeds, the paired differences and a plain
//! reading), `accuracy.png` (accuracy per arm with intervals) and `maps.png` (OOD examples:
//! image, ground truth, teacher, SFT student, Lavender student).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, anyhow};
use burn::tensor::Device;
use image::{GrayImage, RgbImage, imageops::FilterType};
use lavender_core::{
    align::grid::GridMode,
    data::TeacherMapsIndex,
    eval::Summary,
    maps::picture::{heatmap_overlay, label_cell},
    vlm::mllama::student::Mllama,
};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Arm, StudyPlan};
use crate::output::write_atomically;

/// OOD scenes whose questions may appear in `maps.png` (their teacher maps are extracted).
pub const PICTURE_SCENES: usize = 12;
/// Rows of `maps.png`.
const PICTURE_ROWS: usize = 6;
/// Side of one picture cell.
const CELL: u32 = 160;

/// The teacher gate: `point` on the validation captions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gate {
    pub rate: f64,
    pub chance: f64,
    pub z: f64,
    pub words: usize,
    pub shuffled_rate: f64,
    pub by_word: BTreeMap<String, f64>,
}

impl Gate {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let value = read_json(path)?;
        let number = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        Ok(Self {
            rate: number(&value["all"]["rate"]),
            chance: number(&value["all"]["chance"]),
            z: number(&value["all"]["z"]),
            words: value["all"]["words"].as_u64().unwrap_or(0) as usize,
            shuffled_rate: number(&value["shuffled"]["rate"]),
            by_word: value["by_word"]
                .as_object()
                .map(|words| {
                    words
                        .iter()
                        .map(|(word, tally)| (word.clone(), number(&tally["rate"])))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Clearly above chance: at least twice the chance rate and 3 standard deviations above it.
    pub fn passes(&self) -> bool {
        self.rate >= 2.0 * self.chance && self.z >= 3.0
    }
}

/// `eval`'s summary.
pub struct EvalSummary;

impl EvalSummary {
    pub fn read(path: &Path) -> anyhow::Result<Summary> {
        serde_json::from_value(read_json(path)?)
            .with_context(|| format!("{} is not an eval summary", path.display()))
    }
}

/// One arm and seed: its accuracies and its student's pointing rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub arm: String,
    pub seed: u64,
    pub run: PathBuf,
    pub id: Summary,
    pub ood: Summary,
    /// The student's pointing rate on the OOD questions whose answer names an object.
    pub ood_pointing: f64,
    pub ood_pointing_words: usize,
    /// The last training step's cross-entropy and alignment loss.
    pub final_ce: f64,
    pub final_align: f64,
}

impl RunResult {
    pub fn read(
        arm: &str,
        seed: u64,
        run: &Path,
        id: &Path,
        ood: &Path,
        pointing: &Path,
    ) -> anyhow::Result<Self> {
        let pointing = read_json(pointing)?;
        let metrics = crate::train::run_dir::read_metrics(&run.join("metrics.jsonl"))?;
        let last = metrics
            .iter()
            .rev()
            .find(|r| r.split == crate::train::run_dir::Split::Train);
        Ok(Self {
            arm: arm.to_string(),
            seed,
            run: run.to_path_buf(),
            id: EvalSummary::read(id)?,
            ood: EvalSummary::read(ood)?,
            ood_pointing: pointing["all"]["rate"].as_f64().unwrap_or(f64::NAN),
            ood_pointing_words: pointing["all"]["words"].as_u64().unwrap_or(0) as usize,
            final_ce: last.map_or(f64::NAN, |r| r.ce),
            final_align: last.map_or(f64::NAN, |r| r.align),
        })
    }
}

/// Mean and half-width of the 95% confidence interval (Student's t) of `values`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Interval {
    pub mean: f64,
    pub half_width: f64,
    pub n: usize,
}

impl Interval {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        if n < 2 {
            return Self {
                mean,
                half_width: f64::NAN,
                n,
            };
        }
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Self {
            mean,
            half_width: t_95(n - 1) * (variance / n as f64).sqrt(),
            n,
        }
    }

    /// Whether the interval leaves out zero.
    pub fn excludes_zero(&self) -> bool {
        self.half_width.is_finite()
            && (self.mean - self.half_width > 0.0 || self.mean + self.half_width < 0.0)
    }

    /// `mean ± half-width` in per cent (the mean alone from one value).
    fn percent(&self) -> String {
        if self.half_width.is_finite() {
            format!("{:.1} ± {:.1}", 100.0 * self.mean, 100.0 * self.half_width)
        } else {
            format!("{:.1}", 100.0 * self.mean)
        }
    }

    fn signed_percent(&self) -> String {
        if self.half_width.is_finite() {
            format!("{:+.1} ± {:.1}", 100.0 * self.mean, 100.0 * self.half_width)
        } else {
            format!("{:+.1}", 100.0 * self.mean)
        }
    }
}

/// The two-sided 95% quantile of Student's t with `df` degrees of freedom.
pub fn t_95(df: usize) -> f64 {
    const TABLE: [f64; 20] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    ];
    match df {
        0 => f64::NAN,
        1..=20 => TABLE[df - 1],
        _ => 1.96,
    }
}

/// Everything the report is made of.
pub struct Inputs<'a> {
    pub out: &'a Path,
    pub plan: &'a StudyPlan,
    pub arms: &'a [Arm],
    /// `(lambda, validation accuracy)` of the second lambda's candidates.
    pub candidates: &'a [(f64, f64)],
    pub chosen: Option<f64>,
    pub gate: &'a Gate,
    /// The pre-trained student's OOD pointing rate, before fine-tuning.
    pub pointing_before: f64,
    pub results: &'a [RunResult],
    pub pictures: MapPictures<'a>,
    pub elapsed: Duration,
}

/// What the report printed.
pub struct Written {
    pub table: String,
}

/// One metric of a run.
type Metric = fn(&RunResult) -> f64;

const METRICS: [(&str, Metric); 3] = [
    ("in-distribution accuracy", |r| r.id.accuracy),
    ("OOD accuracy", |r| r.ood.accuracy),
    ("OOD student pointing", |r| r.ood_pointing),
];

/// Writes `report.md`, `results.json`, `accuracy.png` and `maps.png`.
pub fn write(inputs: Inputs<'_>) -> anyhow::Result<Written> {
    let Inputs {
        out,
        plan,
        arms,
        candidates,
        chosen,
        gate,
        pointing_before,
        results,
        pictures,
        elapsed,
    } = inputs;
    let of_arm =
        |name: &str| -> Vec<&RunResult> { results.iter().filter(|r| r.arm == name).collect() };
    let interval = |name: &str, metric: Metric| {
        Interval::of(&of_arm(name).iter().map(|r| metric(r)).collect::<Vec<_>>())
    };
    // Paired differences over seeds.
    let paired = |a: &str, b: &str, metric: Metric| {
        let diffs: Vec<f64> = of_arm(a)
            .iter()
            .filter_map(|ra| {
                of_arm(b)
                    .iter()
                    .find(|rb| rb.seed == ra.seed)
                    .map(|rb| metric(ra) - metric(rb))
            })
            .collect();
        Interval::of(&diffs)
    };
    let chosen_name = chosen.map(|chosen| format!("lavender-lambda{chosen}"));
    let has = |name: &str| arms.iter().any(|arm| arm.name == name);
    let comparisons: Vec<(&str, &str)> = [
        ("lavender", "sft"),
        ("lavender", "shuffled"),
        (chosen_name.as_deref().unwrap_or(""), "sft"),
        (chosen_name.as_deref().unwrap_or(""), "shuffled"),
        ("oracle", "sft"),
        ("shuffled", "sft"),
    ]
    .into_iter()
    .filter(|(a, b)| has(a) && has(b))
    .collect();

    // The main table.
    let mut table = String::new();
    writeln!(
        table,
        "| arm | seeds | in-distribution accuracy (%) | OOD accuracy (%) | OOD student pointing (%) |"
    )?;
    writeln!(table, "|---|---|---|---|---|")?;
    for arm in arms {
        writeln!(
            table,
            "| {} | {} | {} | {} | {} |",
            arm.name,
            of_arm(&arm.name).len(),
            interval(&arm.name, METRICS[0].1).percent(),
            interval(&arm.name, METRICS[1].1).percent(),
            interval(&arm.name, METRICS[2].1).percent(),
        )?;
    }
    let mut differences = String::new();
    writeln!(
        differences,
        "| paired difference (same seed) | in-distribution (points) | OOD (points) | OOD pointing (points) |"
    )?;
    writeln!(differences, "|---|---|---|---|")?;
    for &(a, b) in &comparisons {
        writeln!(
            differences,
            "| {a} − {b} | {} | {} | {} |",
            paired(a, b, METRICS[0].1).signed_percent(),
            paired(a, b, METRICS[1].1).signed_percent(),
            paired(a, b, METRICS[2].1).signed_percent(),
        )?;
    }
    // OOD accuracy by question kind (means over seeds).
    let kinds: Vec<String> = results
        .first()
        .map(|r| r.ood.categories.keys().cloned().collect())
        .unwrap_or_default();
    let mut by_kind = String::new();
    writeln!(by_kind, "| arm | {} |", kinds.join(" | "))?;
    writeln!(by_kind, "|---|{}", "---|".repeat(kinds.len()))?;
    for arm in arms {
        let cells: Vec<String> = kinds
            .iter()
            .map(|kind| {
                let values: Vec<f64> = of_arm(&arm.name)
                    .iter()
                    .filter_map(|r| r.ood.categories.get(kind).map(|c| c.accuracy))
                    .collect();
                Interval::of(&values).percent()
            })
            .collect();
        writeln!(by_kind, "| {} | {} |", arm.name, cells.join(" | "))?;
    }

    // The reading.
    let ood_vs_sft = paired("lavender", "sft", METRICS[1].1);
    let ood_vs_shuffled = paired("lavender", "shuffled", METRICS[1].1);
    let verdict = |diff: &Interval, other: &str| {
        if !diff.half_width.is_finite() {
            format!("cannot be judged against {other} (too few seeds)")
        } else if diff.excludes_zero() && diff.mean > 0.0 {
            format!(
                "is above {other} by {} points (95% interval over paired seeds excludes zero)",
                diff.signed_percent()
            )
        } else if diff.excludes_zero() {
            format!(
                "is below {other} by {} points (95% interval over paired seeds excludes zero)",
                diff.signed_percent()
            )
        } else {
            format!(
                "is not distinguishable from {other}: {} points, the 95% interval over paired \
                 seeds includes zero",
                diff.signed_percent()
            )
        }
    };
    let mut reading = format!(
        "On the OOD test, Lavender (lambda {}) {}.",
        plan.lambda,
        verdict(&ood_vs_sft, "plain SFT"),
    );
    if has("shuffled") {
        reading += &format!(
            " Against the shuffled-teacher control, it {}.",
            verdict(&ood_vs_shuffled, "the control")
        );
    } else {
        reading += " (No shuffled-teacher control in this run: no claim about the teacher's maps can be made from it.)";
    }

    let mut report = String::new();
    writeln!(
        report,
        "# Lavender on shapes: does aligning attention with a diffusion teacher help out of distribution?\n"
    )?;
    writeln!(report, "**Result.** {reading}\n")?;
    writeln!(report, "{table}")?;
    writeln!(
        report,
        "Mean ± half-width of the 95% confidence interval over {} seeds (Student's t). \
         Accuracy is exact match of the one-word answer. Student pointing: share of the OOD \
         colour and shape questions whose answer word's cross-attention map (mean over heads \
         and layers) peaks inside the object's mask; area chance is about {:.1}%, and the \
         pre-trained student before any fine-tuning scores {:.1}% (its attention already \
         finds objects; the question is whether it finds the one the answer names).\n",
        plan.seeds.len(),
        100.0 * gate.chance,
        100.0 * pointing_before
    )?;
    writeln!(report, "## Paired differences\n\n{differences}")?;
    writeln!(report, "## OOD accuracy by question kind (%)\n\n{by_kind}")?;
    writeln!(report, "## Protocol\n")?;
    writeln!(
        report,
        "- Data: `lavender shapes` seed 0, {}-pixel scenes of 2–3 objects (4 colours × 3 shapes); \
         {} / {} / {} / {} scenes (train / validation / test / OOD). Red squares, green \
         triangles and blue circles never appear in train, validation or test; every OOD scene \
         shows one.",
        plan.image_size, plan.scenes[0], plan.scenes[1], plan.scenes[2], plan.scenes[3]
    )?;
    writeln!(
        report,
        "- Teacher: `{}` (a tiny Stable Diffusion: CLIP text encoder, UNet with cross-attention, \
         AutoencoderKL), maps by `extract --recipe noise --timesteps 200,500` at {}×{}.",
        if plan.teacher.is_empty() {
            "teacher/, trained here by lavender train-teacher"
        } else {
            &plan.teacher
        },
        plan.map_size,
        plan.map_size
    )?;
    writeln!(
        report,
        "- Student: `{}` (a tiny Llama-3.2-Vision pre-trained on captioning the training images).",
        if plan.student.is_empty() {
            "student-pretraining/model, pre-trained here by lavender train --full --from-scratch"
        } else {
            &plan.student
        }
    )?;
    writeln!(
        report,
        "- Arms: LoRA (r 8, alpha 32, q_proj and v_proj) from the same student, {} steps of \
         {} questions at learning rate {}, identical but for the alignment term; the seed \
         changes the data order, the held-out sample and the LoRA initialisation.",
        plan.steps, plan.batch, plan.lr
    )?;
    for arm in arms {
        writeln!(report, "  - `{}`: {}", arm.name, arm.description)?;
    }
    let candidates_text: Vec<String> = candidates
        .iter()
        .map(|(lambda, accuracy)| format!("lambda {lambda}: {:.1}%", 100.0 * accuracy))
        .collect();
    if let Some(chosen) = chosen {
        writeln!(
            report,
            "- Second lambda: chosen among {:?} by in-distribution validation accuracy (first {} \
             validation questions, seed {}): {}; chosen {chosen}. Nothing was chosen on the OOD \
             test.",
            plan.lambda_candidates,
            plan.val_questions,
            plan.seeds[0],
            candidates_text.join(", ")
        )?;
    }
    writeln!(
        report,
        "- Evaluation: `lavender eval` (greedy, exact match) on all {} in-distribution test and \
         {} OOD test questions per run; `lavender point --vlm` on the OOD questions.",
        results.first().map_or(0, |r| r.id.count),
        results.first().map_or(0, |r| r.ood.count),
    )?;
    writeln!(report, "\n## Teacher gate\n")?;
    writeln!(
        report,
        "The teacher's word maps of the {} validation captions point inside the named object's \
         mask for {:.1}% of {} word–object pairs (area chance {:.1}%, z = {:.1}; another \
         scene's maps: {:.1}%). By word: {}. Gate (at least twice chance and z ≥ 3): {}.",
        plan.scenes[1],
        100.0 * gate.rate,
        gate.words,
        100.0 * gate.chance,
        gate.z,
        100.0 * gate.shuffled_rate,
        gate.by_word
            .iter()
            .map(|(w, r)| format!("{w} {:.0}%", 100.0 * r))
            .collect::<Vec<_>>()
            .join(", "),
        if gate.passes() { "passed" } else { "failed" }
    )?;
    writeln!(
        report,
        "\n## Time\n\n{:.1} minutes on `{}` for the whole study (mode {:?}).\n",
        elapsed.as_secs_f64() / 60.0,
        plan.device,
        plan.mode
    )?;
    writeln!(
        report,
        "Pictures: `accuracy.png` (accuracy per arm with intervals), `maps.png` (OOD questions: \
         image, ground truth, teacher, SFT student, Lavender student; seed {}).",
        plan.seeds[0]
    )?;

    let summary: BTreeMap<String, BTreeMap<&str, Interval>> = arms
        .iter()
        .map(|arm| {
            (
                arm.name.clone(),
                METRICS
                    .iter()
                    .map(|(name, metric)| (*name, interval(&arm.name, *metric)))
                    .collect(),
            )
        })
        .collect();
    let differences_json: BTreeMap<String, BTreeMap<&str, Interval>> = comparisons
        .iter()
        .map(|(a, b)| {
            (
                format!("{a} - {b}"),
                METRICS
                    .iter()
                    .map(|(name, metric)| (*name, paired(a, b, *metric)))
                    .collect(),
            )
        })
        .collect();
    let results_json = serde_json::json!({
        "plan": plan,
        "gate": gate,
        "ood_pointing_before_fine_tuning": pointing_before,
        "lambda_candidates": candidates,
        "lambda_chosen": chosen,
        "arms": arms,
        "summary": summary,
        "paired_differences": differences_json,
        "runs": results,
        "reading": reading,
        "minutes": elapsed.as_secs_f64() / 60.0,
    });
    write_atomically(
        &out.join("results.json"),
        format!("{}\n", serde_json::to_string_pretty(&results_json)?).as_bytes(),
    )?;
    let bars: Vec<(String, Interval, Interval)> = arms
        .iter()
        .map(|arm| {
            (
                arm.name.clone(),
                interval(&arm.name, METRICS[0].1),
                interval(&arm.name, METRICS[1].1),
            )
        })
        .collect();
    write_atomically(&out.join("accuracy.png"), &accuracy_png(&bars)?)?;
    write_atomically(&out.join("maps.png"), &pictures.png()?)?;
    write_atomically(&out.join("report.md"), report.as_bytes())?;
    Ok(Written {
        table: format!("{table}\n{differences}\n{reading}"),
    })
}

/// `report.md` of a study whose teacher failed its gate: the gate's numbers and nothing else.
pub fn write_gate_failure(
    out: &Path,
    plan: &StudyPlan,
    gate: &Gate,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let report = format!(
        "# Lavender on shapes: the teacher failed its gate\n\n\
         The teacher's word maps of the {} validation captions point inside the named object's \
         mask for {:.1}% of {} word–object pairs, against {:.1}% by area chance (z = {:.1}): not \
         clearly above chance (the gate asks for twice chance and z ≥ 3). Attention supervision \
         from this teacher would carry no information about where objects are, so no student \
         was trained.\n\nTeacher: `{}`. Time: {:.1} minutes.\n",
        plan.scenes[1],
        100.0 * gate.rate,
        gate.words,
        100.0 * gate.chance,
        gate.z,
        plan.teacher,
        elapsed.as_secs_f64() / 60.0
    );
    write_atomically(&out.join("report.md"), report.as_bytes())
}

/// Grouped bars (in-distribution, OOD) per arm with 95% interval whiskers.
fn accuracy_png(bars: &[(String, Interval, Interval)]) -> anyhow::Result<Vec<u8>> {
    const WIDTH: u32 = 1000;
    const HEIGHT: u32 = 600;
    let with_text = crate::train::plot::font_available();
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("cannot draw: {e}"))?;
        let n = bars.len().max(1) as f64;
        let mut builder = ChartBuilder::on(&root);
        builder.margin(20);
        if with_text {
            builder
                .caption(
                    "accuracy per arm (mean, 95% interval over seeds)",
                    ("sans-serif", 22),
                )
                .x_label_area_size(40)
                .y_label_area_size(50);
        }
        let mut chart = builder
            .build_cartesian_2d(0.0..n, -0.08..1.0)
            .map_err(|e| anyhow!("cannot draw: {e}"))?;
        if with_text {
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .y_desc("exact-match accuracy")
                .draw()
                .map_err(|e| anyhow!("cannot draw: {e}"))?;
        }
        let colours = [RGBColor(31, 119, 180), RGBColor(214, 39, 40)];
        for (index, (name, id, ood)) in bars.iter().enumerate() {
            for (k, value) in [id, ood].into_iter().enumerate() {
                let left = index as f64 + 0.1 + 0.4 * k as f64;
                let right = left + 0.35;
                let mean = value.mean.clamp(0.0, 1.0);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(left, 0.0), (right, mean)],
                        colours[k].filled(),
                    )))
                    .map_err(|e| anyhow!("cannot draw: {e}"))?;
                if value.half_width.is_finite() {
                    let centre = (left + right) / 2.0;
                    let (low, high) = (
                        (value.mean - value.half_width).clamp(0.0, 1.0),
                        (value.mean + value.half_width).clamp(0.0, 1.0),
                    );
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(centre, low), (centre, high)],
                            BLACK.stroke_width(2),
                        )))
                        .map_err(|e| anyhow!("cannot draw: {e}"))?;
                }
            }
            if with_text {
                chart
                    .draw_series(std::iter::once(Text::new(
                        name.clone(),
                        (index as f64 + 0.1, -0.02),
                        ("sans-serif", 16),
                    )))
                    .map_err(|e| anyhow!("cannot draw: {e}"))?;
            }
        }
        if with_text {
            for (k, label) in ["in-distribution test", "OOD test"].iter().enumerate() {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [
                            (0.0, 0.96 - 0.05 * k as f64),
                            (0.05, 0.99 - 0.05 * k as f64),
                        ],
                        colours[k].filled(),
                    )))
                    .map_err(|e| anyhow!("cannot draw: {e}"))?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        label.to_string(),
                        (0.07, 0.99 - 0.05 * k as f64),
                        ("sans-serif", 16),
                    )))
                    .map_err(|e| anyhow!("cannot draw: {e}"))?;
            }
        }
        root.present().map_err(|e| anyhow!("cannot draw: {e}"))?;
    }
    let image = RgbImage::from_raw(WIDTH, HEIGHT, pixels).context("plot buffer")?;
    png_bytes(&image)
}

/// What `maps.png` is drawn from.
pub struct MapPictures<'a> {
    pub data: &'a Path,
    pub student: &'a Path,
    pub teacher_maps: &'a Path,
    pub sft: &'a Path,
    pub lavender: &'a Path,
    pub device: &'a str,
    pub map_size: usize,
}

impl MapPictures<'_> {
    /// Rows of OOD colour and shape questions about a held-out object (of the first
    /// [`PICTURE_SCENES`] OOD scenes): image, ground truth, the teacher's map of the answer
    /// word, the SFT and the Lavender students' maps of it.
    fn png(&self) -> anyhow::Result<Vec<u8>> {
        let spec: crate::device::DeviceSpec = self
            .device
            .parse()
            .map_err(|error| anyhow!("device {error}"))?;
        let device = spec.open()?;
        let students = [self.sft, self.lavender]
            .iter()
            .map(|run| {
                Mllama::load(self.student, Some(&run.join("adapter")), &device)
                    .with_context(|| format!("cannot load the student with {}", run.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let index = TeacherMapsIndex::open(self.teacher_maps)?;
        let text = std::fs::read_to_string(self.data.join("vqa-ood.jsonl"))?;
        let mut rows: Vec<Vec<(String, RgbImage)>> = Vec::new();
        for line in text.lines() {
            if rows.len() == PICTURE_ROWS {
                break;
            }
            let record: serde_json::Value = serde_json::from_str(line)?;
            let category = record["category"].as_str().unwrap_or("");
            let object = &record["objects"][0];
            let held_out = object["colour"]
                .as_str()
                .zip(object["shape"].as_str())
                .is_some_and(|(colour, shape)| {
                    lavender_core::shapes::HELD_OUT
                        .iter()
                        .any(|(c, s)| c.name() == colour && s.name() == shape)
                });
            if !(held_out && (category == "colour" || category == "shape")) {
                continue;
            }
            let scene = record["teacher_id"].as_str().unwrap_or("");
            let Some(teacher) = index.get(scene, &Device::flex())? else {
                continue;
            };
            let turns = record["conversations"]
                .as_array()
                .context("conversations")?;
            let question = turns[0]["content"].as_str().unwrap_or("");
            // The map cell labels: the image cell says which question it is.
            let answer = turns[1]["content"].as_str().unwrap_or("");
            let image = crate::commands::open_image(
                &self.data.join(record["image"].as_str().unwrap_or("")),
            )?;
            let mask = crate::commands::open_image(
                &self.data.join(object["mask"].as_str().unwrap_or("")),
            )?;
            let background = image::imageops::resize(&image, CELL, CELL, FilterType::Nearest);
            let side = teacher.side();
            let values = teacher.to_values().map_err(anyhow::Error::msg)?;
            let Some(row) = teacher.words.iter().position(|w| w == answer) else {
                continue;
            };
            let mut cells = vec![
                (format!("{category}: {answer}"), background.clone()),
                (
                    "ground truth".to_string(),
                    mask_overlay(
                        &background,
                        &image::DynamicImage::ImageRgb8(mask).to_luma8(),
                    ),
                ),
                (
                    format!("teacher: {answer}"),
                    heatmap_overlay(
                        &background,
                        &values[row * side * side..(row + 1) * side * side],
                        side,
                    ),
                ),
            ];
            for (name, student) in ["SFT", "Lavender"].iter().zip(&students) {
                let (words, maps) = student.answer_maps(
                    &image,
                    question,
                    answer,
                    self.map_size,
                    GridMode::Corrected,
                )?;
                let maps = crate::commands::tensor_values(maps, "student maps")?;
                let size = self.map_size;
                let cell = match words.iter().position(|w| w == answer) {
                    Some(k) => heatmap_overlay(
                        &background,
                        &maps[k * size * size..(k + 1) * size * size],
                        size,
                    ),
                    None => background.clone(),
                };
                cells.push((format!("{name}: {answer}"), cell));
            }
            rows.push(cells);
        }
        let columns = rows.first().map_or(1, Vec::len) as u32;
        let label = 20;
        let mut grid = RgbImage::from_pixel(
            columns * CELL,
            (rows.len().max(1) as u32) * (CELL + label),
            image::Rgb([255, 255, 255]),
        );
        for (r, cells) in rows.iter().enumerate() {
            for (c, (text, cell)) in cells.iter().enumerate() {
                let labelled = label_cell(cell, text);
                image::imageops::replace(
                    &mut grid,
                    &labelled,
                    (c as u32 * CELL) as i64,
                    (r as u32 * (CELL + label)) as i64,
                );
            }
        }
        png_bytes(&grid)
    }
}

/// `background` with the mask's inside tinted.
fn mask_overlay(background: &RgbImage, mask: &GrayImage) -> RgbImage {
    let (width, height) = background.dimensions();
    let mask = image::imageops::resize(mask, width, height, FilterType::Nearest);
    RgbImage::from_fn(width, height, |x, y| {
        let under = background.get_pixel(x, y).0;
        if mask.get_pixel(x, y).0[0] > 127 {
            image::Rgb([
                255,
                (under[1] as u16 / 3) as u8,
                (under[2] as u16 / 3) as u8,
            ])
        } else {
            image::Rgb(under.map(|v| v / 2))
        }
    })
}

fn png_bytes(image: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("cannot encode a PNG")?;
    Ok(png)
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: values 0.5, 0.6, 0.7 have mean 0.6, sample sd 0.1, and the half-width
    /// t(2) x 0.1 / sqrt(3) = 4.303 x 0.05774 = 0.2484.
    #[test]
    fn interval_of_three_values() {
        let interval = Interval::of(&[0.5, 0.6, 0.7]);
        assert!((interval.mean - 0.6).abs() < 1e-12);
        assert!(
            (interval.half_width - 0.248434).abs() < 1e-5,
            "{}",
            interval.half_width
        );
        assert!(interval.excludes_zero());
        assert!(!Interval::of(&[-0.1, 0.1, 0.05]).excludes_zero());
        assert!(Interval::of(&[0.3]).half_width.is_nan());
    }

    #[test]
    fn gate_needs_twice_chance_and_three_sigma() {
        let gate = |rate, chance, z| Gate {
            rate,
            chance,
            z,
            words: 100,
            shuffled_rate: 0.0,
            by_word: BTreeMap::new(),
        };
        assert!(gate(0.24, 0.034, 36.0).passes());
        assert!(!gate(0.055, 0.034, 3.6).passes());
        assert!(!gate(0.2, 0.034, 2.0).passes());
    }
}
