//! What `lavender train` builds on: the run folder (`config.toml`, `metrics.jsonl`,
//! `loss.png`), atomic checkpoints that resume bit-exactly, and the non-finite loss guard.
//! The data side (conversations, teacher maps, split, epoch order) is in
//! `lavender_core::data`.

pub mod checkpoint;
pub mod guard;
pub mod parallel;
pub mod plot;
pub mod run_dir;
pub mod trainer;
