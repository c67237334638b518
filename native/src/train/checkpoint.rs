//! Checkpoints: `RUN/checkpoints/step-NNNNNN/` with
//!
//! - `model.bpk`: the trainable module's weights (burnpack; it keeps each parameter's id, which
//!   keys the optimizer's state),
//! - `optimizer.bpk`: the optimizer's state (`ModuleOptimizer::into_bytes`: AdamW's moments and
//!   step counts per parameter id, exact f32),
//! - `state.json`: where the run is ([`TrainState`]) and each file's size and checksum.
//!
//! A checkpoint is written into a temporary folder, every file and the folder synced, then
//! renamed into place, so `step-NNNNNN/` is always complete; `latest` (the folder's name) is
//! then replaced atomically and the oldest checkpoints beyond `keep` are deleted. Loading checks
//! sizes and checksums first, so a truncated or damaged file is named, not half-loaded.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use burn::{
    module::Module,
    optim::ModuleOptimizer,
    store::{BurnpackStore, ModuleSnapshot, PathFilter},
    tensor::Bytes,
};
use lavender_core::data::DataPosition;
use serde::{Deserialize, Serialize};

use crate::output::write_atomically;

pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
pub const STATE_FILE: &str = "state.json";
pub const LATEST_FILE: &str = "latest";
const STATE_FORMAT: u32 = 1;

/// Where a run is, saved with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    pub epoch: usize,
    /// The next training sample (`EpochShuffler::position`).
    pub data_position: DataPosition,
    /// `dataset_fingerprint` of the training samples' ids: a resume must see the same data.
    pub data_fingerprint: String,
    /// The run's seed (data order, split).
    pub seed: u64,
    /// The state of the run's `SeededRng` (e.g. dropout seeds), to continue its stream.
    pub rng_state: u64,
    /// The learning rate of the next step.
    pub lr: f64,
    pub best_eval_loss: Option<f64>,
    pub last_train_loss: Option<f64>,
    pub last_eval_loss: Option<f64>,
}

/// What `state.json` holds: the state, and what the other files must be.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    format: u32,
    state: TrainState,
    files: Vec<FileRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileRecord {
    name: String,
    bytes: u64,
    /// FNV-1a 64 of the contents, hex.
    fnv1a64: String,
}

fn fnv1a64(bytes: &[u8]) -> String {
    format!("{:016x}", lavender_core::fnv::fnv1a64(bytes))
}

/// The folder name of step `step`.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:06}")
}

fn parse_step(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.parse().ok()
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file =
        fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A run's checkpoints folder.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    keep: usize,
}

impl Checkpoints {
    /// `keep`: how many of the newest checkpoints to keep (at least 1).
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Self {
        Self {
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The complete checkpoints, oldest first.
    pub fn list(&self) -> anyhow::Result<Vec<(u64, PathBuf)>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot list {}", self.dir.display()));
            }
        };
        let mut steps: Vec<(u64, PathBuf)> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| {
                let step = parse_step(entry.file_name().to_str()?)?;
                Some((step, entry.path()))
            })
            .collect();
        steps.sort();
        Ok(steps)
    }

    /// The checkpoint to resume from: the one `latest` names, or (if `latest` is missing or
    /// names no folder, as after a crash between the rename and its update) the newest one.
    pub fn latest(&self) -> anyhow::Result<Option<PathBuf>> {
        if let Ok(name) = fs::read_to_string(self.dir.join(LATEST_FILE)) {
            let path = self.dir.join(name.trim());
            if parse_step(name.trim()).is_some() && path.is_dir() {
                return Ok(Some(path));
            }
        }
        Ok(self.list()?.pop().map(|(_, path)| path))
    }

    /// Writes a checkpoint of `module`, `optimizer` and `state` as `step-{state.step}`
    /// (replacing one of the same step), points `latest` at it, and deletes the oldest beyond
    /// `keep`. Returns its folder.
    ///
    /// `filter` (a regex over parameter paths) keeps only the matching parameters, e.g. a
    /// LoRA run's factors and not the frozen base it reloads from the model folder.
    pub fn save<M: Module>(
        &self,
        module: &M,
        optimizer: &ModuleOptimizer,
        state: &TrainState,
        filter: Option<&str>,
    ) -> anyhow::Result<PathBuf> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        self.remove_partials();
        let name = step_dir_name(state.step);
        let temporary = self
            .dir
            .join(format!(".{name}.partial-{}", std::process::id()));
        let _ = fs::remove_dir_all(&temporary);
        fs::create_dir(&temporary)
            .with_context(|| format!("cannot create {}", temporary.display()))?;

        let written = (|| -> anyhow::Result<()> {
            let mut store = BurnpackStore::from_bytes(None);
            if let Some(pattern) = filter {
                store = store.with_regex(pattern);
            }
            module
                .save_into(&mut store)
                .with_context(|| format!("cannot serialise the weights for {name}"))?;
            let model = store
                .get_bytes()
                .with_context(|| format!("cannot serialise the weights for {name}"))?;
            let optimizer = optimizer
                .into_bytes()
                .with_context(|| format!("cannot serialise the optimizer state for {name}"))?;
            let mut files = Vec::new();
            for (file, bytes) in [(MODEL_FILE, &model[..]), (OPTIMIZER_FILE, &optimizer[..])] {
                write_synced(&temporary.join(file), bytes)?;
                files.push(FileRecord {
                    name: file.to_string(),
                    bytes: bytes.len() as u64,
                    fnv1a64: fnv1a64(bytes),
                });
            }
            let state_file = StateFile {
                format: STATE_FORMAT,
                state: state.clone(),
                files,
            };
            let json = serde_json::to_string_pretty(&state_file)?;
            write_synced(&temporary.join(STATE_FILE), json.as_bytes())?;
            sync_dir(&temporary)
        })();
        if let Err(error) = written {
            let _ = fs::remove_dir_all(&temporary);
            return Err(error);
        }

        let target = self.dir.join(&name);
        if target.exists() {
            fs::remove_dir_all(&target)
                .with_context(|| format!("cannot replace {}", target.display()))?;
        }
        fs::rename(&temporary, &target).with_context(|| {
            format!(
                "cannot rename {} to {}",
                temporary.display(),
                target.display()
            )
        })?;
        sync_dir(&self.dir)?;
        write_atomically(&self.dir.join(LATEST_FILE), format!("{name}\n").as_bytes())?;
        sync_dir(&self.dir)?;
        self.prune(&target)?;
        Ok(target)
    }

    /// Temporary folders a killed run left.
    fn remove_partials(&self) {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".step-") && name.contains(".partial-") {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    }

    /// Deletes the oldest checkpoints beyond `keep`, never `current`.
    fn prune(&self, current: &Path) -> anyhow::Result<()> {
        let all = self.list()?;
        let excess = all.len().saturating_sub(self.keep);
        for (_, path) in all.into_iter().take(excess) {
            if path != current {
                fs::remove_dir_all(&path).with_context(|| {
                    format!("cannot delete the old checkpoint {}", path.display())
                })?;
            }
        }
        Ok(())
    }
}

/// A checkpoint's contents, loaded into the given module and optimizer.
pub struct Loaded<M> {
    pub module: M,
    pub optimizer: ModuleOptimizer,
    pub state: TrainState,
}

/// Reads a file a checkpoint lists, checking its size and checksum against `state.json`.
fn read_checked(dir: &Path, record: &FileRecord) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(&record.name);
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 != record.bytes {
        bail!(
            "{} is truncated or damaged: {} bytes, {} records {}",
            path.display(),
            bytes.len(),
            STATE_FILE,
            record.bytes
        );
    }
    if fnv1a64(&bytes) != record.fnv1a64 {
        bail!(
            "{} is damaged: its checksum differs from the one in {}",
            path.display(),
            STATE_FILE
        );
    }
    Ok(bytes)
}

/// Reads only a checkpoint's `state.json`.
#[cfg(test)]
pub fn read_state(dir: &Path) -> anyhow::Result<TrainState> {
    Ok(read_state_file(dir)?.state)
}

fn read_state_file(dir: &Path) -> anyhow::Result<StateFile> {
    let path = dir.join(STATE_FILE);
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let state: StateFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is damaged or not a checkpoint state", path.display()))?;
    if state.format != STATE_FORMAT {
        bail!(
            "{} has format {}, this build reads {STATE_FORMAT}",
            path.display(),
            state.format
        );
    }
    Ok(state)
}

/// The `BURN_DEVICE` value that makes `Device::default()` the backend of `spec`.
///
/// Loads the checkpoint in `dir` into `module` (which must have the same structure) and
/// `optimizer` (built from the same config). Parameter ids come from the checkpoint, so the
/// optimizer's per-parameter state lines up with the loaded weights. See
/// [`DeviceSpec::burn_device_env`](crate::device::DeviceSpec::burn_device_env) for where the
/// optimizer state is created.
///
/// `filter` must be the one the checkpoint was saved with: only those parameters are loaded
/// (the others keep `module`'s values) and every one of them must be in the file.
pub fn load<M: Module>(
    dir: &Path,
    mut module: M,
    optimizer: ModuleOptimizer,
    filter: Option<&str>,
) -> anyhow::Result<Loaded<M>> {
    let state = read_state_file(dir)?;
    let record = |name: &str| {
        state
            .files
            .iter()
            .find(|f| f.name == name)
            .with_context(|| format!("{} lists no {name}", dir.join(STATE_FILE).display()))
    };
    let model_path = dir.join(MODEL_FILE);
    let model_bytes = read_checked(dir, record(MODEL_FILE)?)?;
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let optimizer_bytes = read_checked(dir, record(OPTIMIZER_FILE)?)?;

    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(model_bytes)));
    if let Some(pattern) = filter {
        // The file holds only the filtered parameters: the store would call every other one
        // missing, so the check is done here, over the filtered ones only.
        store = store.with_regex(pattern).allow_partial(true);
    }
    let mut applied = module
        .load_from(&mut store)
        .with_context(|| format!("cannot load the weights of {}", model_path.display()))?;
    if let Some(pattern) = filter {
        let wanted = PathFilter::new().with_regex(pattern);
        applied.missing.retain(|(path, _)| wanted.matches(path));
    }
    if !applied.errors.is_empty() || !applied.missing.is_empty() || !applied.unused.is_empty() {
        bail!(
            "{} does not fit this model: {applied}",
            model_path.display()
        );
    }
    let optimizer = optimizer
        .from_bytes(Bytes::from_bytes_vec(optimizer_bytes))
        .with_context(|| {
            format!(
                "cannot load the optimizer state of {}",
                optimizer_path.display()
            )
        })?;
    Ok(Loaded {
        module,
        optimizer,
        state: state.state,
    })
}

#[cfg(test)]
mod tests {
    use burn::{
        nn::{Linear, LinearConfig},
        optim::{AdamWConfig, GradientsParams},
        tensor::{Device, Tensor, TensorData},
    };

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lavender-ckpt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn device() -> Device {
        Device::flex().autodiff()
    }

    fn optimizer() -> ModuleOptimizer {
        AdamWConfig::new().with_weight_decay(0.01).init()
    }

    /// One AdamW step on a fixed, step-dependent regression batch.
    fn train_step(model: Linear, optimizer: &mut ModuleOptimizer, step: u64) -> Linear {
        let device = device();
        let x: Vec<f32> = (0..8)
            .map(|i| ((i as u64 * 7 + step * 3) % 11) as f32 / 11.0)
            .collect();
        let x = Tensor::<2>::from_data(TensorData::new(x, [2, 4]), &device);
        let target = Tensor::<2>::ones([2, 3], &device).mul_scalar(step as f32 * 0.1);
        let loss = (model.forward(x) - target).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        optimizer.step(1e-2, model, grads)
    }

    fn weights(model: &Linear) -> Vec<u32> {
        let mut bits: Vec<u32> = model
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f32::to_bits)
            .collect();
        bits.extend(
            model
                .bias
                .as_ref()
                .unwrap()
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(f32::to_bits),
        );
        bits
    }

    fn state(step: u64) -> TrainState {
        TrainState {
            step,
            epoch: 0,
            data_position: DataPosition {
                epoch: 0,
                index: step as usize,
            },
            data_fingerprint: "3:00000000deadbeef".into(),
            seed: 42,
            rng_state: 1234 + step,
            lr: 1e-2,
            best_eval_loss: Some(0.5),
            last_train_loss: Some(0.25),
            last_eval_loss: None,
        }
    }

    /// Runs test `name` again in a child process with `BURN_DEVICE=flex` (see
    /// [`DeviceSpec::burn_device_env`](crate::device::DeviceSpec::burn_device_env)); true in that child, which then does the work.
    fn in_child_with_flex_default(name: &str) -> bool {
        if std::env::var("BURN_DEVICE").as_deref() == Ok("flex") {
            return true;
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1", "--nocapture"])
            .env("BURN_DEVICE", "flex")
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{log}");
        assert!(log.contains("1 passed"), "the child ran no test: {log}");
        false
    }

    #[test]
    fn a_resumed_run_matches_an_uninterrupted_one_bit_for_bit() {
        if !in_child_with_flex_default(
            "train::checkpoint::tests::a_resumed_run_matches_an_uninterrupted_one_bit_for_bit",
        ) {
            return;
        }
        let dir = temp_dir("resume");
        let checkpoints = Checkpoints::new(&dir, 2);
        let mut model = LinearConfig::new(4, 3).init(&device());
        let mut optim = optimizer();
        for step in 1..=3 {
            model = train_step(model, &mut optim, step);
        }
        let saved = checkpoints.save(&model, &optim, &state(3), None).unwrap();
        assert_eq!(saved, dir.join("step-000003"));
        assert_eq!(checkpoints.latest().unwrap(), Some(saved.clone()));

        let mut uninterrupted = model;
        for step in 4..=5 {
            uninterrupted = train_step(uninterrupted, &mut optim, step);
        }

        // A fresh module (other random weights and parameter ids) and optimizer.
        let fresh = LinearConfig::new(4, 3).init(&device());
        let loaded = load(&saved, fresh, optimizer(), None).unwrap();
        assert_eq!(loaded.state, state(3));
        let mut resumed = loaded.module;
        let mut optim = loaded.optimizer;
        for step in 4..=5 {
            resumed = train_step(resumed, &mut optim, step);
        }
        assert_eq!(weights(&resumed), weights(&uninterrupted));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keeps_the_newest_and_survives_a_missing_latest() {
        let dir = temp_dir("keep");
        let checkpoints = Checkpoints::new(&dir, 2);
        let model = LinearConfig::new(2, 2).init(&device());
        let optim = optimizer();
        assert_eq!(checkpoints.latest().unwrap(), None);
        for step in [10, 20, 30] {
            checkpoints
                .save(&model, &optim, &state(step), None)
                .unwrap();
        }
        // A killed save's leftovers are cleaned by the next one.
        fs::create_dir_all(dir.join(".step-000040.partial-1")).unwrap();
        checkpoints.save(&model, &optim, &state(40), None).unwrap();
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["latest", "step-000030", "step-000040"]);
        assert_eq!(
            fs::read_to_string(dir.join("latest")).unwrap(),
            "step-000040\n"
        );
        assert_eq!(read_state(&dir.join("step-000040")).unwrap().step, 40);

        fs::remove_file(dir.join("latest")).unwrap();
        assert_eq!(checkpoints.latest().unwrap(), Some(dir.join("step-000040")));
        fs::write(dir.join("latest"), "step-000099\n").unwrap();
        assert_eq!(checkpoints.latest().unwrap(), Some(dir.join("step-000040")));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_checkpoints_are_refused_naming_the_file() {
        let dir = temp_dir("damaged");
        let checkpoints = Checkpoints::new(&dir, 1);
        let model = LinearConfig::new(2, 2).init(&device());
        let mut optim = optimizer();
        let model = train_step_small(model, &mut optim);
        let saved = checkpoints.save(&model, &optim, &state(1), None).unwrap();
        let fresh = || LinearConfig::new(2, 2).init(&device());
        let message =
            |result: anyhow::Result<Loaded<Linear>>| format!("{:#}", result.err().unwrap());

        let model_path = saved.join(MODEL_FILE);
        let original = fs::read(&model_path).unwrap();
        fs::write(&model_path, &original[..original.len() / 2]).unwrap();
        let error = message(load(&saved, fresh(), optimizer(), None));
        assert!(error.contains("model.bpk is truncated"), "{error}");
        let mut flipped = original.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        fs::write(&model_path, &flipped).unwrap();
        let error = message(load(&saved, fresh(), optimizer(), None));
        assert!(error.contains("model.bpk is damaged"), "{error}");
        fs::write(&model_path, &original).unwrap();

        let optimizer_path = saved.join(OPTIMIZER_FILE);
        fs::write(&optimizer_path, b"").unwrap();
        let error = message(load(&saved, fresh(), optimizer(), None));
        assert!(error.contains("optimizer.bpk is truncated"), "{error}");

        fs::write(saved.join(STATE_FILE), "{\"format\": 1, \"sta").unwrap();
        let error = message(load(&saved, fresh(), optimizer(), None));
        assert!(error.contains("state.json is damaged"), "{error}");

        // A checkpoint of another shape does not fit.
        let other = temp_dir("other");
        let wide = LinearConfig::new(3, 2).init(&device());
        let saved = Checkpoints::new(&other, 1)
            .save(&wide, &optimizer(), &state(1), None)
            .unwrap();
        let error = message(load(&saved, fresh(), optimizer(), None));
        assert!(error.contains("model.bpk"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&other).unwrap();
    }

    /// A filtered checkpoint (a LoRA run's: only some parameters) loads into a whole module:
    /// the filtered parameters come from the file, the others keep the module's values; a
    /// filtered parameter the file lacks is still refused.
    #[test]
    fn a_filtered_checkpoint_loads_only_its_parameters() {
        if !in_child_with_flex_default(
            "train::checkpoint::tests::a_filtered_checkpoint_loads_only_its_parameters",
        ) {
            return;
        }
        let dir = temp_dir("filtered");
        let checkpoints = Checkpoints::new(&dir, 1);
        let mut optim = optimizer();
        let model = train_step_small(LinearConfig::new(2, 2).init(&device()), &mut optim);
        let saved = checkpoints
            .save(&model, &optim, &state(1), Some(r"^weight$"))
            .unwrap();
        let fresh = LinearConfig::new(2, 2).init(&device());
        let fresh_bias = weights(&fresh)[4..].to_vec();
        let loaded = load(&saved, fresh, optimizer(), Some(r"^weight$")).unwrap();
        let bits = weights(&loaded.module);
        assert_eq!(
            bits[..4],
            weights(&model)[..4],
            "the weight is the checkpoint's"
        );
        assert_eq!(bits[4..], fresh_bias[..], "the bias is the module's own");

        let error = load(
            &saved,
            LinearConfig::new(2, 2).init(&device()),
            optimizer(),
            Some("."),
        )
        .err()
        .unwrap();
        assert!(format!("{error:#}").contains("bias"), "{error:#}");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn train_step_small(model: Linear, optimizer: &mut ModuleOptimizer) -> Linear {
        let device = device();
        let x = Tensor::<2>::ones([1, 2], &device);
        let loss = model.forward(x).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        optimizer.step(1e-2, model, grads)
    }
}
