//! The training run behind `lavender train` (`run`, one step a function) and what it builds
//! on: its settings (`config`), the run folder (`config.toml`, `metrics.jsonl`, `loss.png`),
//! atomic checkpoints that resume bit-exactly, the step on one or several devices, and the
//! non-finite loss guard.
//! The data side (conversations, teacher maps, split, epoch order) is in
//! `lavender_core::data`.

pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod guard;
pub mod parallel;
pub mod plot;
pub mod run;
pub mod run_dir;
pub mod trainer;
