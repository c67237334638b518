//! One training run of `lavender train`, one step a function: open the devices, read the data,
//! start or resume (model, optimiser, checkpoint), then optimiser steps with their metrics,
//! evaluations and checkpoints, and at the end the plot, the exported adapter and the report.
//!
//! The command (`commands::train`) resolves the flags into a [`TrainConfig`] and the run
//! folder; everything after that is here.

use std::{path::Path, time::Instant};

use anyhow::Context;
use burn::{optim::ModuleOptimizer, tensor::Device};
use indicatif::{ProgressBar, ProgressStyle};
use lavender_core::{
    adapters::lora::{apply_lora, export_peft, load_peft_factors},
    align::{
        aligner::{AlignerActivation, AlignerConfig, AlignerDepth},
        loss::LossConfig,
    },
    bundle::MODEL_FILES,
    data::{
        Conversation, DataSpec, EpochShuffler, Holdout, ImageLoader, TeacherMapsIndex,
        dataset_fingerprint, split_holdout,
    },
    maps::WordMaps,
    vlm::mllama::{hf_export::hf_safetensors, student::Mllama},
};

use super::{
    checkpoint::{self, Checkpoints, TrainState},
    config::{DepthArg, PrecisionArg, TrainConfig},
    guard::{NonFiniteLoss, check_finite},
    parallel::{DataParallel, SampleInput, StepSettings},
    run_dir::{MetricsLog, MetricsRecord, RunDir, Split},
    trainer::{LossValues, Trainable, sample_loss, teacher_word_maps, text_length},
};
use crate::{
    device::DeviceList,
    output::{write_atomically, write_folder_atomically},
};

/// Trains `config` on `devices`: in `existing` (a run being resumed, whose `config.toml`
/// gave `config`) or in a new run folder `out`.
pub fn run(
    devices: &DeviceList,
    existing: Option<RunDir>,
    config: TrainConfig,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    // Idle devices would hold a model copy for nothing: refuse rather than waste them.
    anyhow::ensure!(
        config.batch >= devices.specs().len(),
        "--batch {} is smaller than the {} devices ({devices}): every device needs at least \
         one sample per step; raise --batch or list fewer devices",
        config.batch,
        devices.specs().len()
    );
    // Every device is opened before a new run folder is created, so a device that cannot be
    // used leaves nothing behind.
    let opened = open_devices(devices, config.precision, config.seed)?;
    // The data is read before a new run folder is created too: bad data leaves nothing behind.
    let data = TrainingData::read(&config)?;
    anyhow::ensure!(
        config.batch <= data.holdout.train.len(),
        "--batch {} is more than the {} training samples: a step would take samples twice; \
         lower --batch",
        config.batch,
        data.holdout.train.len()
    );
    if let Some(teacher) = &config.teacher_maps {
        anyhow::ensure!(
            config.lambda == 0.0 || data.missing < data.holdout.train.len(),
            "none of the {} training samples has teacher maps in {}: the run would be plain SFT \
             while calling itself Lavender. Extract the maps for this data first, or train with \
             --lambda 0",
            data.holdout.train.len(),
            teacher.display()
        );
    }
    let config = data.complete(config);
    let resuming = existing.is_some();
    // A new run folder this call creates is removed again if the run fails before its first
    // step, so that the same command can simply be run again.
    let created = match (&existing, out) {
        (None, Some(out)) if !out.exists() => Some(out.to_path_buf()),
        _ => None,
    };
    let run_dir = match existing {
        Some(run_dir) => run_dir,
        None => RunDir::create(out.expect("clap requires --out"))?,
    };
    if !resuming {
        run_dir.write_config(&config)?;
    }
    tracing::info!(
        "{} training and {} held-out samples; {} training samples have no teacher maps (cross-entropy only)",
        data.holdout.train.len(),
        data.holdout.eval.len(),
        data.missing
    );
    let mut session = match Session::start(config, data, run_dir, &opened, resuming) {
        Ok(session) => session,
        Err(error) => {
            if let Some(folder) = &created {
                let _ = std::fs::remove_dir_all(folder);
            }
            return Err(error);
        }
    };
    if opened.len() > 1 {
        eprintln!(
            "data-parallel over {devices}: {} samples per step",
            session.config.batch
        );
    }
    while session.state.step < session.config.max_steps {
        session.step()?;
    }
    session.finish()
}

/// The training devices, opened (with autodiff) in `precision` and seeded with `seed`.
fn open_devices(
    devices: &DeviceList,
    precision: PrecisionArg,
    seed: u64,
) -> anyhow::Result<Vec<Device>> {
    let opened = devices
        .specs()
        .iter()
        .map(|spec| {
            let device = match precision {
                PrecisionArg::F32 => spec.open(),
                PrecisionArg::Bf16 => spec.open_with_float(burn::tensor::FloatDType::BF16),
            };
            Ok(device
                .with_context(|| format!("cannot open training device {spec}"))?
                .autodiff())
        })
        .collect::<anyhow::Result<Vec<Device>>>()?;
    // Seeded after every device is open: opening runs a probe, which must not move the RNG.
    for device in &opened {
        device.seed(seed);
    }
    Ok(opened)
}

/// The samples of a run, split the same way on every (re)start, and its teacher maps.
struct TrainingData {
    holdout: Holdout,
    /// Identifies the training samples in order, saved with checkpoints.
    fingerprint: String,
    teacher: Option<TeacherMapsIndex>,
    /// Training samples without teacher maps.
    missing: usize,
}

impl TrainingData {
    fn read(config: &TrainConfig) -> anyhow::Result<Self> {
        let spec: DataSpec = config
            .data
            .parse()
            .map_err(|error| anyhow::anyhow!("--data {}: {error}", config.data))?;
        let conversations = spec
            .read_conversations()
            .with_context(|| format!("cannot read {}", config.data))?;
        anyhow::ensure!(!conversations.is_empty(), "{} has no samples", config.data);
        let holdout = split_holdout(conversations, config.eval_fraction, config.seed)
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            !holdout.train.is_empty(),
            "no training samples are left after holding out {} for evaluation",
            config.eval_fraction
        );
        let fingerprint = dataset_fingerprint(holdout.train.iter().map(|c| c.id.as_str()));
        let teacher = match &config.teacher_maps {
            Some(dir) => Some(
                TeacherMapsIndex::open(dir)
                    .with_context(|| format!("cannot open the teacher maps {}", dir.display()))?,
            ),
            None => None,
        };
        let missing = teacher.as_ref().map_or(holdout.train.len(), |index| {
            index.count_missing(holdout.train.iter().map(|c| c.teacher_id.as_str()))
        });
        Ok(Self {
            holdout,
            fingerprint,
            teacher,
            missing,
        })
    }

    /// `config` with what the data decides: the sample counts and, unless given, the steps.
    fn complete(&self, mut config: TrainConfig) -> TrainConfig {
        config.train_samples = self.holdout.train.len();
        config.eval_samples_held_out = self.holdout.eval.len();
        if config.max_steps == 0 {
            config.max_steps =
                (config.epochs * self.holdout.train.len()).div_ceil(config.batch) as u64;
        }
        config
    }

    /// A sample's teacher maps, if the run has a teacher and it has maps for this sample.
    fn teacher_maps(&self, sample: &Conversation) -> anyhow::Result<Option<WordMaps>> {
        Ok(match &self.teacher {
            Some(index) => index
                .get(&sample.teacher_id, &Device::flex())
                .with_context(|| format!("the teacher maps of {}", sample.teacher_id))?,
            None => None,
        })
    }
}

/// A run in progress: the model on its devices, the optimiser, where the run stands, and
/// where its outputs go.
struct Session {
    config: TrainConfig,
    data: TrainingData,
    run_dir: RunDir,
    /// The main device: the optimiser's, evaluation's and the checkpoints'.
    device: Device,
    parallel: DataParallel,
    optimizer: ModuleOptimizer,
    checkpoints: Checkpoints,
    state: TrainState,
    metrics: MetricsLog,
    order: EpochShuffler,
    loss_config: LossConfig,
    images: ImageLoader,
    progress: ProgressBar,
    /// The run as it was before the previous step (LoRA runs only: it holds the previous
    /// factors and optimiser state, which is small), saved when a step's loss is not finite:
    /// the previous update may be what diverged.
    before_previous_step: Option<Box<(Trainable, ModuleOptimizer, TrainState)>>,
    before_this_step: Option<Box<(Trainable, ModuleOptimizer, TrainState)>>,
    /// Samples trained in this session, and those of them without teacher maps.
    seen: usize,
    without_maps: usize,
}

impl Session {
    /// A fresh model and optimiser, or the latest checkpoint's when resuming.
    fn start(
        config: TrainConfig,
        data: TrainingData,
        run_dir: RunDir,
        devices: &[Device],
        resuming: bool,
    ) -> anyhow::Result<Self> {
        let device = devices[0].clone();
        let mut trainable = build_trainable(&config, &device)?;
        let mut optimizer = config.optimizer();
        let checkpoints = Checkpoints::new(run_dir.checkpoints_dir(), config.keep_checkpoints);
        let mut state = TrainState {
            step: 0,
            epoch: 0,
            data_position: Default::default(),
            data_fingerprint: data.fingerprint.clone(),
            seed: config.seed,
            rng_state: config.seed,
            lr: config.lr,
            best_eval_loss: None,
            last_train_loss: None,
            last_eval_loss: None,
        };
        if resuming {
            match checkpoints.latest()? {
                Some(latest) => {
                    let loaded = checkpoint::load(
                        &latest,
                        trainable,
                        optimizer,
                        config.checkpoint_filter(),
                    )?;
                    trainable = loaded.module;
                    optimizer = loaded.optimizer;
                    state = loaded.state;
                    anyhow::ensure!(
                        state.data_fingerprint == data.fingerprint,
                        "the training data changed since {} was written: resuming would not continue the same run",
                        latest.display()
                    );
                    eprintln!(
                        "resuming {} from step {}",
                        run_dir.path().display(),
                        state.step
                    );
                }
                None => eprintln!(
                    "{} has no checkpoint yet: starting from step 0",
                    run_dir.path().display()
                ),
            }
        }
        // After the checkpoint is loaded: the replicas take its parameter ids and values.
        let parallel = DataParallel::new(trainable, devices)?;
        let metrics = run_dir.metrics(resuming.then_some(state.step))?;
        let mut order =
            EpochShuffler::resume(data.holdout.train.len(), config.seed, state.data_position)
                .map_err(anyhow::Error::msg)?;
        if config.group_by_length {
            let student = &parallel.main().student;
            let lengths = data
                .holdout
                .train
                .iter()
                .map(|sample| text_length(student, sample))
                .collect::<anyhow::Result<Vec<_>>>()?;
            order = order
                .grouped_by_length(lengths, config.batch)
                .map_err(anyhow::Error::msg)?;
        }
        let progress = ProgressBar::new(config.max_steps).with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps ({eta} left) {msg}",
            )
            .expect("a valid template"),
        );
        progress.set_position(state.step);
        Ok(Self {
            loss_config: config.loss(),
            config,
            data,
            run_dir,
            device,
            parallel,
            optimizer,
            checkpoints,
            state,
            metrics,
            order,
            images: crate::limits::image_loader(),
            progress,
            before_previous_step: None,
            before_this_step: None,
            seen: 0,
            without_maps: 0,
        })
    }

    /// One optimiser step over the next `--batch` samples, its metrics, and the evaluation and
    /// checkpoint that are due after it.
    fn step(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        // The epoch of the batch's first sample (StepLR's), the same whether or not the run
        // was resumed at an epoch's end.
        let epoch = self.order.next_epoch();
        let lr = self.config.lr_at(epoch);
        if !self.config.full {
            self.before_previous_step = self.before_this_step.take();
            self.before_this_step = Some(Box::new((
                self.parallel.main().clone(),
                self.optimizer.clone(),
                self.state.clone(),
            )));
        }
        let mean = match self.optimise(lr) {
            Ok(mean) => mean,
            // Nothing was updated (the optimiser runs last): keep the state before this step
            // as a checkpoint, so that `--resume` (with other settings) starts right there.
            Err(error) => return Err(self.checkpoint_before_failure(error)),
        };
        self.state.step += 1;
        self.state.epoch = self.order.position().epoch;
        self.state.data_position = self.order.position();
        self.state.lr = lr;
        let samples_per_s = self.config.batch as f64 / started.elapsed().as_secs_f64();
        self.state.last_train_loss = Some(mean.total);
        self.metrics.append(mean.record(
            self.state.step,
            epoch,
            Split::Train,
            lr,
            samples_per_s,
        ))?;
        self.progress.set_message(format!(
            "ce {:.4} align {:.4} words {:.1} | {samples_per_s:.2} samples/s",
            mean.ce, mean.align, mean.matched
        ));
        self.progress.inc(1);

        let last = self.state.step == self.config.max_steps;
        let eval_due = last
            || (self.config.eval_every > 0
                && self.state.step.is_multiple_of(self.config.eval_every));
        if !self.data.holdout.eval.is_empty() && eval_due {
            self.evaluate(epoch, lr)?;
        }
        if last || self.state.step.is_multiple_of(self.config.checkpoint_every) {
            self.checkpoints.save(
                self.parallel.main(),
                &self.optimizer,
                &self.state,
                self.config.checkpoint_filter(),
            )?;
        }
        Ok(())
    }

    /// `error` stopped the step after `self.state.step`, before any update. Saves the last
    /// good state as a checkpoint (unless the latest checkpoint is it) and says which:
    /// - a non-finite loss: the update before this step may be what diverged, so the state
    ///   before it (LoRA runs; a `--full` run keeps no copy and saves nothing more);
    /// - any other error (an unreadable file): the current state.
    fn checkpoint_before_failure(&mut self, error: anyhow::Error) -> anyhow::Error {
        let diverged = error.chain().any(|cause| cause.is::<NonFiniteLoss>());
        let snapshot = if diverged {
            match self.before_previous_step.take() {
                Some(snapshot) => *snapshot,
                None => return error,
            }
        } else {
            (
                self.parallel.main().clone(),
                self.optimizer.clone(),
                self.state.clone(),
            )
        };
        let (trainable, optimizer, state) = snapshot;
        let latest = self
            .checkpoints
            .list()
            .ok()
            .and_then(|list| list.last().map(|(step, _)| *step));
        if state.step == 0 && latest.is_none() {
            return error.context(
                "the last good state is the run's start: `--resume` starts it over".to_string(),
            );
        }
        if latest.is_some_and(|latest| latest >= state.step) {
            return error;
        }
        match self.checkpoints.save(
            &trainable,
            &optimizer,
            &state,
            self.config.checkpoint_filter(),
        ) {
            Ok(_) => error.context(format!(
                "the state after step {} (the last good one) was saved as a checkpoint",
                state.step
            )),
            Err(save_error) => error.context(format!(
                "the state after step {} could not be saved either: {save_error:#}",
                state.step
            )),
        }
    }

    /// Reads the next batch and takes one optimiser step at `lr` on it; the batch's mean losses.
    fn optimise(&mut self, lr: f64) -> anyhow::Result<Mean> {
        let mut inputs = Vec::with_capacity(self.config.batch);
        let mut skipped = 0;
        while inputs.len() < self.config.batch {
            let index = self.order.next().expect("a non-empty dataset never ends");
            let sample = &self.data.holdout.train[index];
            // An unreadable image skips its sample (recorded in skipped.jsonl) and the next
            // one takes its place, so one bad file does not stop the run (nor a resume of it).
            let skip = SkipUnreadable {
                run_dir: &self.run_dir,
                progress: &self.progress,
                strict: self.config.strict,
                step: self.state.step + 1,
                what: "sample",
            };
            let Some(image) = skip.load(&mut self.images, sample)? else {
                skipped += 1;
                anyhow::ensure!(
                    skipped <= self.data.holdout.train.len(),
                    "no training image could be read (the last: sample {})",
                    sample.id
                );
                continue;
            };
            let maps = self.data.teacher_maps(sample)?;
            inputs.push(SampleInput {
                sample,
                image,
                maps,
            });
        }
        let step_number = self.state.step + 1;
        let checkpoints = self.checkpoints.dir();
        let check = |sample: &Conversation, values: &LossValues| {
            check_finite(step_number, values.ce, values.align).map_err(|error| {
                anyhow::Error::new(error).context(format!(
                    "sample {}: the run stopped; checkpoints are in {}",
                    sample.id,
                    checkpoints.display()
                ))
            })
        };
        let settings = StepSettings {
            loss: &self.loss_config,
            map_size: self.config.map_size,
            sample: self.config.sample_settings(),
            batch: self.config.batch,
            micro_batch: self.config.micro_batch,
            clip_grad_norm: self.config.clip_grad_norm,
            check: &check,
        };
        let mut sums = Sums::default();
        for values in self
            .parallel
            .step(inputs, &settings, &mut self.optimizer, lr)?
        {
            self.seen += 1;
            self.without_maps += usize::from(!values.has_maps);
            sums.add(values);
        }
        Ok(sums.mean())
    }

    /// Mean losses over (at most `--eval-samples`) held-out samples on the main device, no
    /// backward pass; recorded in the metrics and the state.
    fn evaluate(&mut self, epoch: usize, lr: f64) -> anyhow::Result<()> {
        let mut sums = Sums::default();
        let limit = self.config.eval_samples.max(1);
        for sample in self.data.holdout.eval.iter().take(limit) {
            let skip = SkipUnreadable {
                run_dir: &self.run_dir,
                progress: &self.progress,
                strict: self.config.strict,
                step: self.state.step,
                what: "held-out sample",
            };
            let Some(image) = skip.load(&mut self.images, sample)? else {
                continue;
            };
            let maps = self.data.teacher_maps(sample)?;
            let teacher = teacher_word_maps(maps, self.config.map_size, &self.device)?;
            let (_, values) = sample_loss(
                self.parallel.main(),
                sample,
                &image,
                &teacher,
                &self.loss_config,
                &self.config.sample_settings(),
            )?;
            sums.add(values);
        }
        let eval = sums.mean();
        self.state.last_eval_loss = Some(eval.total);
        if self
            .state
            .best_eval_loss
            .is_none_or(|best| eval.total < best)
        {
            self.state.best_eval_loss = Some(eval.total);
        }
        self.metrics
            .append(eval.record(self.state.step, epoch, Split::Eval, lr, 0.0))
    }

    /// The loss plot, the exported adapter and Aligner, and the report.
    fn finish(self) -> anyhow::Result<()> {
        self.progress.finish_and_clear();
        self.run_dir.write_loss_plot(self.metrics.records())?;
        export(&self.run_dir, self.parallel.main(), &self.config)?;
        println!(
            "trained {} steps ({}): {}",
            self.state.step,
            if self.config.lambda > 0.0 && self.config.teacher_maps.is_some() {
                "Lavender"
            } else {
                "plain SFT"
            },
            self.run_dir.path().display()
        );
        if let Some(loss) = self.state.last_train_loss {
            println!("  last training loss {loss:.4}");
        }
        if let Some(loss) = self.state.last_eval_loss {
            println!("  held-out loss {loss:.4}");
        }
        if self.without_maps > 0 {
            println!(
                "  {} of the {} samples trained in this session had no teacher maps \
                 (cross-entropy only)",
                self.without_maps, self.seen
            );
        }
        let skipped = std::fs::read_to_string(self.run_dir.skipped_path())
            .map(|text| text.lines().count())
            .unwrap_or(0);
        if skipped > 0 {
            println!(
                "  {skipped} sample(s) skipped: their images could not be read (listed in {})",
                self.run_dir.skipped_path().display()
            );
        }
        println!(
            "  metrics {}, plot {}",
            self.run_dir.metrics_path().display(),
            self.run_dir.loss_plot_path().display()
        );
        Ok(())
    }
}

/// Sums of sample losses, for their mean over a step or an evaluation.
#[derive(Debug, Default)]
struct Sums {
    ce: f64,
    align: f64,
    total: f64,
    matched: f64,
    count: usize,
}

#[derive(Debug)]
struct Mean {
    ce: f64,
    align: f64,
    total: f64,
    matched: f64,
}

impl Sums {
    fn add(&mut self, values: LossValues) {
        self.ce += values.ce;
        self.align += values.align;
        self.total += values.total;
        self.matched += values.matched as f64;
        self.count += 1;
    }

    fn mean(&self) -> Mean {
        let n = self.count.max(1) as f64;
        Mean {
            ce: self.ce / n,
            align: self.align / n,
            total: self.total / n,
            matched: self.matched / n,
        }
    }
}

impl Mean {
    fn record(
        &self,
        step: u64,
        epoch: usize,
        split: Split,
        lr: f64,
        samples_per_s: f64,
    ) -> MetricsRecord {
        MetricsRecord {
            step,
            epoch,
            split,
            ce: self.ce,
            align: self.align,
            total: self.total,
            matched_words: self.matched,
            lr,
            samples_per_s,
        }
    }
}

/// How a session treats a sample whose image cannot be read: skipped, listed once in the
/// run's `skipped.jsonl` and warned about, or with `--strict` an error.
struct SkipUnreadable<'a> {
    run_dir: &'a RunDir,
    progress: &'a ProgressBar,
    strict: bool,
    /// The step recorded with a skip.
    step: u64,
    /// How the sample is named in messages ("sample", "held-out sample").
    what: &'static str,
}

impl SkipUnreadable<'_> {
    /// `sample`'s image, or `None` when it cannot be read and is skipped.
    fn load(
        &self,
        images: &mut ImageLoader,
        sample: &Conversation,
    ) -> anyhow::Result<Option<image::RgbImage>> {
        match images.load(&sample.image) {
            Ok(image) => Ok(Some(image.to_rgb8())),
            Err(error) if self.strict => Err(anyhow::Error::new(error).context(format!(
                "{} {}: image {} (--strict: an unreadable image stops the run)",
                self.what, sample.id, sample.image
            ))),
            Err(error) => {
                let reason = error.to_string();
                if self
                    .run_dir
                    .record_skipped(self.step, &sample.id, &reason)?
                {
                    self.progress.suspend(|| {
                        tracing::warn!("{} {}: {reason}; skipped", self.what, sample.id)
                    });
                }
                Ok(None)
            }
        }
    }
}

/// The student (LoRA'd unless `full`, factors from `adapter` if given; at random from the
/// config if `from_scratch`) and a fresh Aligner.
fn build_trainable(config: &TrainConfig, device: &Device) -> anyhow::Result<Trainable> {
    let mut student = if config.from_scratch {
        Mllama::from_scratch(&config.vlm, device)
    } else {
        Mllama::load(&config.vlm, None, device)
    }
    .with_context(|| format!("cannot load the model from {}", config.vlm.display()))?;
    if !config.full {
        student = student.try_map_model(|model| {
            let model = apply_lora(model, &config.lora)?;
            match &config.adapter {
                Some(adapter) => load_peft_factors(model, adapter),
                None => Ok(model),
            }
        })?;
    }
    let heads = student.model.config.text_config.num_attention_heads;
    let aligner = AlignerConfig::new(heads)
        .with_depth(match config.aligner_depth {
            DepthArg::Light => AlignerDepth::Light,
            DepthArg::Sim => AlignerDepth::Sim,
            DepthArg::Deep => AlignerDepth::Deep,
        })
        .with_activation(AlignerActivation::Relu6)
        .init(device);
    Ok(Trainable { student, aligner })
}

/// `adapter/` (PEFT) for a LoRA run and `aligner.safetensors`, each written atomically.
fn export(run_dir: &RunDir, trainable: &Trainable, config: &TrainConfig) -> anyhow::Result<()> {
    if !config.full {
        let peft = export_peft(
            &trainable.student.model,
            &config.lora,
            Some(&config.vlm.display().to_string()),
        )?;
        write_folder_atomically(
            &run_dir.path().join("adapter"),
            [
                ("adapter_config.json", peft.adapter_config_json.as_bytes()),
                (
                    "adapter_model.safetensors",
                    &peft.adapter_model_safetensors[..],
                ),
            ],
        )?;
    }
    let aligner = trainable
        .aligner
        .to_safetensors()
        .map_err(|error| anyhow::anyhow!("cannot serialise the Aligner: {error}"))?;
    write_atomically(&run_dir.path().join("aligner.safetensors"), &aligner)?;
    if config.full {
        export_full_model(run_dir, trainable, config)?;
    }
    Ok(())
}

/// `model/`: a full run's model as a Hugging Face checkpoint (transformers' names and layout,
/// f32), with the source folder's config, tokenizer, chat template and processor files, so
/// that transformers, `lavender --vlm` and LoRA runs load it like any released model.
fn export_full_model(
    run_dir: &RunDir,
    trainable: &Trainable,
    config: &TrainConfig,
) -> anyhow::Result<()> {
    let weights = hf_safetensors(&trainable.student.model)
        .map_err(|error| anyhow::anyhow!("cannot export the model: {error}"))?;
    let mut files: Vec<(&str, Vec<u8>)> = vec![("model.safetensors", weights)];
    for name in MODEL_FILES {
        let path = config.vlm.join(name);
        if path.is_file() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            files.push((name, bytes));
        }
    }
    write_folder_atomically(
        &run_dir.path().join("model"),
        files.iter().map(|(name, bytes)| (*name, bytes.as_slice())),
    )
}
