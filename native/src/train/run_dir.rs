//! A training run's folder:
//!
//! ```text
//! RUN/config.toml      every resolved setting (written once; a resumed run checks against it)
//! RUN/metrics.jsonl    one JSON object per logged step or evaluation
//! RUN/loss.png         cross-entropy, alignment and total loss against step (train and eval)
//! RUN/checkpoints/     step-NNNNNN/ folders and `latest` (see `checkpoint`)
//! ```

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::plot;
use crate::output::write_atomically;

pub const CONFIG: &str = "config.toml";
pub const METRICS: &str = "metrics.jsonl";
pub const LOSS_PLOT: &str = "loss.png";
pub const CHECKPOINTS: &str = "checkpoints";
pub const SKIPPED: &str = "skipped.jsonl";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Eval,
}

/// One line of `metrics.jsonl`: a training step, or an evaluation (means over the held-out
/// samples) after that step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    pub step: u64,
    pub epoch: usize,
    pub split: Split,
    /// Cross-entropy of the answer tokens.
    pub ce: f64,
    /// Alignment loss (mean MSE over matched words), before its weight.
    pub align: f64,
    /// What was minimised: `ce + lambda * align`.
    pub total: f64,
    /// Words matched between the teacher's and the student's maps (a mean for eval lines).
    pub matched_words: f64,
    pub lr: f64,
    pub samples_per_s: f64,
}

#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Creates the folder for a new run; refuses one that already holds a run.
    pub fn create(root: &Path) -> anyhow::Result<Self> {
        if root.join(CONFIG).exists() {
            bail!(
                "{} already holds a run ({CONFIG} exists): resume it, or choose another folder",
                root.display()
            );
        }
        fs::create_dir_all(root.join(CHECKPOINTS))
            .with_context(|| format!("cannot create {}", root.join(CHECKPOINTS).display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Opens an existing run's folder (to resume it).
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        if !root.join(CONFIG).is_file() {
            bail!("{} is not a run folder: it has no {CONFIG}", root.display());
        }
        fs::create_dir_all(root.join(CHECKPOINTS))
            .with_context(|| format!("cannot create {}", root.join(CHECKPOINTS).display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG)
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.root.join(METRICS)
    }

    pub fn loss_plot_path(&self) -> PathBuf {
        self.root.join(LOSS_PLOT)
    }

    pub fn checkpoints_dir(&self) -> PathBuf {
        self.root.join(CHECKPOINTS)
    }

    /// `skipped.jsonl`: one `{"step", "id", "reason"}` line per training sample whose image
    /// could not be read (each sample once, however often the run met it).
    pub fn skipped_path(&self) -> PathBuf {
        self.root.join(SKIPPED)
    }

    /// Records that `id` was skipped at `step` for `reason`, unless it already is.
    pub fn record_skipped(&self, step: u64, id: &str, reason: &str) -> anyhow::Result<bool> {
        let path = self.skipped_path();
        let known = fs::read_to_string(&path).unwrap_or_default();
        let already = known.lines().any(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|value| value["id"].as_str() == Some(id))
        });
        if already {
            return Ok(false);
        }
        let mut line = serde_json::json!({ "step": step, "id": id, "reason": reason }).to_string();
        line.push('\n');
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.flush())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(true)
    }

    /// Writes `config` (every resolved setting) as `config.toml`, atomically.
    pub fn write_config<T: Serialize>(&self, config: &T) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(config).context("cannot express the settings as TOML")?;
        write_atomically(&self.config_path(), text.as_bytes())
    }

    pub fn read_config<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        let path = self.config_path();
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid run config", path.display()))
    }

    /// The metrics log. A new run (`resume_step: None`) starts it empty; a resumed run keeps
    /// the lines up to and including `resume_step` and drops the later ones (they were logged
    /// after the checkpoint it resumes from, and will be logged again).
    pub fn metrics(&self, resume_step: Option<u64>) -> anyhow::Result<MetricsLog> {
        MetricsLog::open(&self.metrics_path(), resume_step)
    }

    /// Draws `loss.png` from `records`, atomically. Returns whether it has text (axis labels,
    /// legend): without a font it is drawn without, rather than failing the run.
    pub fn write_loss_plot(&self, records: &[MetricsRecord]) -> anyhow::Result<bool> {
        let (png, with_text) = plot::loss_png(records)?;
        write_atomically(&self.loss_plot_path(), &png)?;
        Ok(with_text)
    }
}

/// `metrics.jsonl`, appended one flushed line at a time.
pub struct MetricsLog {
    path: PathBuf,
    file: fs::File,
    records: Vec<MetricsRecord>,
}

impl MetricsLog {
    fn open(path: &Path, resume_step: Option<u64>) -> anyhow::Result<Self> {
        let records = match resume_step {
            None => Vec::new(),
            Some(step) => {
                // The kept lines are written back as they were: serde_json's parser is not
                // exact for every float, so re-serialising could change their last digit.
                let (kept, lines): (Vec<MetricsRecord>, Vec<String>) = read_metrics_lines(path)?
                    .into_iter()
                    .filter(|(record, _)| record.step <= step)
                    .unzip();
                let mut text = String::new();
                for line in &lines {
                    text.push_str(line);
                    text.push('\n');
                }
                write_atomically(path, text.as_bytes())?;
                kept
            }
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if resume_step.is_none() {
            file.set_len(0)
                .with_context(|| format!("cannot empty {}", path.display()))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            records,
        })
    }

    /// Appends one line and flushes it to the file.
    pub fn append(&mut self, record: MetricsRecord) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(&record)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.records.push(record);
        Ok(())
    }

    /// Every line so far (kept from before a resume, and appended since).
    pub fn records(&self) -> &[MetricsRecord] {
        &self.records
    }
}

/// The records of a metrics log (see [`read_metrics_lines`]).
pub fn read_metrics(path: &Path) -> anyhow::Result<Vec<MetricsRecord>> {
    Ok(read_metrics_lines(path)?
        .into_iter()
        .map(|(record, _)| record)
        .collect())
}

/// Reads a metrics log, each record with its line. A missing file is empty; an unreadable last
/// line is the one a killed run was writing and is dropped; an unreadable line before it is an
/// error naming the line.
fn read_metrics_lines(path: &Path) -> anyhow::Result<Vec<(MetricsRecord, String)>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .collect();
    let mut records = Vec::with_capacity(lines.len());
    for (position, (number, line)) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(record) => records.push((record, line.to_string())),
            Err(_) if position + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(error) => bail!("{}:{}: {error}", path.display(), number + 1),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lavender-run-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    pub(crate) fn record(step: u64, split: Split) -> MetricsRecord {
        let t = step as f64;
        MetricsRecord {
            step,
            epoch: (step / 10) as usize,
            split,
            ce: 3.0 / (1.0 + 0.1 * t),
            align: 0.05 / (1.0 + 0.05 * t),
            total: 3.0 / (1.0 + 0.1 * t) + 10.0 * 0.05 / (1.0 + 0.05 * t),
            matched_words: 4.0,
            lr: 1e-4,
            samples_per_s: 2.5,
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Settings {
        data: Vec<String>,
        lr: f64,
        lambda: f64,
        eval_fraction: f64,
        seed: u64,
        lora: Lora,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Lora {
        rank: usize,
        alpha: f64,
        targets: Vec<String>,
    }

    #[test]
    fn config_is_written_as_toml_and_read_back() {
        let dir = temp_dir("config");
        let run = RunDir::create(&dir).unwrap();
        assert!(run.checkpoints_dir().is_dir());
        let settings = Settings {
            data: vec![
                "flickr30k:data/flickr.json".into(),
                "ocrvqa:data/ocrvqa".into(),
            ],
            lr: 1e-4,
            lambda: 10.0,
            eval_fraction: 0.1,
            seed: 42,
            lora: Lora {
                rank: 8,
                alpha: 32.0,
                targets: vec!["q_proj".into(), "v_proj".into()],
            },
        };
        run.write_config(&settings).unwrap();
        let text = fs::read_to_string(dir.join(CONFIG)).unwrap();
        assert!(text.contains("lr = 0.0001"), "{text}");
        assert!(text.contains("seed = 42"), "{text}");
        assert!(text.contains("[lora]\nrank = 8"), "{text}");
        assert!(text.contains("\"ocrvqa:data/ocrvqa\""), "{text}");
        assert_eq!(
            RunDir::open(&dir)
                .unwrap()
                .read_config::<Settings>()
                .unwrap(),
            settings
        );

        let error = RunDir::create(&dir).unwrap_err().to_string();
        assert!(error.contains("already holds a run"), "{error}");
        let error = RunDir::open(&dir.join("missing")).unwrap_err().to_string();
        assert!(error.contains("no config.toml"), "{error}");
        fs::write(dir.join(CONFIG), "lr = [").unwrap();
        let error = format!("{:#}", run.read_config::<Settings>().unwrap_err());
        assert!(error.contains("config.toml"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn metrics_append_and_a_resume_drops_the_lines_after_its_step() {
        let dir = temp_dir("metrics");
        let run = RunDir::create(&dir).unwrap();
        let mut log = run.metrics(None).unwrap();
        for step in 1..=6 {
            let mut train = record(step, Split::Train);
            // A value serde_json's parser reads back 1 ulp off.
            train.align = 0.111_468_769_609_928_13;
            log.append(train).unwrap();
            if step % 3 == 0 {
                log.append(record(step, Split::Eval)).unwrap();
            }
        }
        drop(log);
        let text = fs::read_to_string(run.metrics_path()).unwrap();
        assert_eq!(text.lines().count(), 8);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        for key in [
            "step",
            "epoch",
            "split",
            "ce",
            "align",
            "total",
            "matched_words",
            "lr",
            "samples_per_s",
        ] {
            assert!(first.get(key).is_some(), "{key} missing from {first}");
        }
        assert_eq!(first["split"], "train");

        // A killed run left half a line; the resume from step 4 keeps steps 1..=4 (and the
        // evaluation at 3) and drops the rest.
        fs::OpenOptions::new()
            .append(true)
            .open(run.metrics_path())
            .unwrap()
            .write_all(b"{\"step\": 7, \"epo")
            .unwrap();
        let mut log = run.metrics(Some(4)).unwrap();
        // The kept lines are the very lines written.
        let kept: Vec<&str> = text.lines().take(5).collect();
        assert_eq!(
            fs::read_to_string(run.metrics_path()).unwrap(),
            format!("{}\n", kept.join("\n"))
        );
        let steps: Vec<(u64, Split)> = log.records().iter().map(|r| (r.step, r.split)).collect();
        assert_eq!(
            steps,
            [
                (1, Split::Train),
                (2, Split::Train),
                (3, Split::Train),
                (3, Split::Eval),
                (4, Split::Train)
            ]
        );
        log.append(record(5, Split::Train)).unwrap();
        let reread = read_metrics(&run.metrics_path()).unwrap();
        assert_eq!(reread.len(), 6);
        assert_eq!(reread.last().unwrap(), &record(5, Split::Train));

        // Damage before the last line is an error naming the line.
        fs::write(run.metrics_path(), "{\"step\": 1}\n{}\n").unwrap();
        let error = run.metrics(Some(1)).err().unwrap().to_string();
        assert!(error.contains("metrics.jsonl:1"), "{error}");
        // A new run starts the log empty.
        assert!(run.metrics(None).unwrap().records().is_empty());
        assert_eq!(fs::read(run.metrics_path()).unwrap().len(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loss_plot_is_a_png_with_drawn_series() {
        let dir = temp_dir("plot");
        let run = RunDir::create(&dir).unwrap();
        let mut records: Vec<MetricsRecord> = (1..=50).map(|s| record(s, Split::Train)).collect();
        records.extend((1..=5).map(|s| record(s * 10, Split::Eval)));
        run.write_loss_plot(&records).unwrap();
        let image = image::open(run.loss_plot_path()).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (plot::WIDTH, plot::HEIGHT));
        let background = *image.get_pixel(0, 0);
        let drawn = image.pixels().filter(|p| **p != background).count();
        assert!(
            drawn > 2000,
            "only {drawn} pixels differ from the background"
        );
        // Nothing logged yet still gives a (blank) plot.
        run.write_loss_plot(&[]).unwrap();
        assert!(image::open(run.loss_plot_path()).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }
}
