//! Deterministic data order: a seeded hold-out split (`--eval-fraction`) and a seeded epoch
//! shuffler whose position can be saved in a checkpoint and restored exactly. Everything is a
//! pure function of the seed (no global RNG), so the same seed gives the same order on every
//! machine and backend.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Conversation;
use crate::fnv::Fnv1a64;
pub use crate::rng::SeededRng;

/// A short digest of a dataset's sample ids in order (count and FNV-1a 64), saved with a
/// checkpoint so that a resume over different data (which would silently change the order the
/// saved position refers to) is caught.
pub fn dataset_fingerprint<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut hash = Fnv1a64::default();
    let mut count = 0usize;
    for id in ids {
        // 0xff never occurs in UTF-8: it separates the ids.
        hash.update(id.as_bytes());
        hash.update(&[0xff]);
        count += 1;
    }
    format!("{count}:{:016x}", hash.finish())
}

/// A dataset split into training and held-out samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdout {
    pub train: Vec<Conversation>,
    pub eval: Vec<Conversation>,
}

/// Holds out `fraction` of the images (rounded to the nearest whole image), chosen by `seed`.
/// Samples sharing teacher maps (a Flickr30k image's captions) stay on the same side, so no
/// image is both trained and evaluated on. Both sides keep the dataset's order.
pub fn split_holdout(
    samples: Vec<Conversation>,
    fraction: f64,
    seed: u64,
) -> Result<Holdout, String> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(format!(
            "the eval fraction must be in [0, 1), found {fraction}"
        ));
    }
    // Groups by teacher id, in order of first appearance.
    let mut groups: HashMap<&str, usize> = HashMap::new();
    let mut group_of = Vec::with_capacity(samples.len());
    for sample in &samples {
        let next = groups.len();
        group_of.push(*groups.entry(sample.teacher_id.as_str()).or_insert(next));
    }
    let count = groups.len();
    let held = (fraction * count as f64).round() as usize;
    if fraction > 0.0 && held == count {
        return Err(format!(
            "an eval fraction of {fraction} leaves no training sample ({count} images)"
        ));
    }
    let mut order: Vec<usize> = (0..count).collect();
    SeededRng::new(seed).shuffle(&mut order);
    let mut is_eval = vec![false; count];
    for &group in &order[..held] {
        is_eval[group] = true;
    }
    let (eval, train): (Vec<_>, Vec<_>) = samples
        .into_iter()
        .zip(group_of)
        .partition(|(_, group)| is_eval[*group]);
    Ok(Holdout {
        train: train.into_iter().map(|(sample, _)| sample).collect(),
        eval: eval.into_iter().map(|(sample, _)| sample).collect(),
    })
}

/// Where a run is in its data: `index` samples of epoch `epoch` (from 0) have been taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    pub epoch: usize,
    pub index: usize,
}

/// Sample indices `0..len` in a new seeded order each epoch (the order of epoch `e` depends on
/// `(seed, e)` alone). An infinite iterator: after the last sample of an epoch comes the first
/// of the next. Save [`position`](Self::position) with a checkpoint and [`resume`](Self::resume)
/// from it to continue with exactly the sample an uninterrupted run would take next.
///
/// [`grouped_by_length`](Self::grouped_by_length) orders an epoch as llama-recipes'
/// `LengthBasedBatchSampler` does: the samples sorted by length (stably), cut into batches of
/// consecutive lengths, and the batches shuffled, so a padded batch wastes little.
#[derive(Debug, Clone)]
pub struct EpochShuffler {
    len: usize,
    seed: u64,
    position: DataPosition,
    order: Vec<usize>,
    groups: Option<LengthGroups>,
}

/// Each sample's length and the batch size a length-grouped order cuts.
#[derive(Debug, Clone)]
struct LengthGroups {
    lengths: Vec<usize>,
    batch: usize,
}

impl EpochShuffler {
    pub fn new(len: usize, seed: u64) -> Self {
        Self {
            len,
            seed,
            position: DataPosition::default(),
            order: Self::epoch_order(len, seed, 0),
            groups: None,
        }
    }

    /// The same shuffler with every epoch ordered by length in batches of `batch` (type docs);
    /// `lengths` has one entry per sample. The position is kept.
    pub fn grouped_by_length(mut self, lengths: Vec<usize>, batch: usize) -> Result<Self, String> {
        if lengths.len() != self.len {
            return Err(format!(
                "{} lengths for {} samples",
                lengths.len(),
                self.len
            ));
        }
        let groups = LengthGroups {
            lengths,
            batch: batch.max(1),
        };
        self.order = groups.epoch_order(self.seed, self.position.epoch);
        self.groups = Some(groups);
        Ok(self)
    }

    /// Continues at `position`. An index equal to `len` (a saved end of epoch) is the start of
    /// the next epoch; a larger one means the dataset changed since the position was saved.
    pub fn resume(len: usize, seed: u64, position: DataPosition) -> Result<Self, String> {
        if position.index > len {
            return Err(format!(
                "the saved data position (epoch {}, sample {}) is past the end of a dataset of {len} samples: \
                 the data changed since the checkpoint",
                position.epoch, position.index
            ));
        }
        let position = if position.index == len && len > 0 {
            DataPosition {
                epoch: position.epoch + 1,
                index: 0,
            }
        } else {
            position
        };
        Ok(Self {
            len,
            seed,
            position,
            order: Self::epoch_order(len, seed, position.epoch),
            groups: None,
        })
    }

    /// The order of one epoch.
    pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..len).collect();
        epoch_rng(seed, epoch).shuffle(&mut order);
        order
    }

    /// The position of the next sample to be taken.
    pub fn position(&self) -> DataPosition {
        self.position
    }

    /// The epoch of the next sample to be taken: at the end of an epoch (`index == len`) that
    /// is the next one, as after [`EpochShuffler::resume`] from there.
    pub fn next_epoch(&self) -> usize {
        if self.position.index == self.len && self.len > 0 {
            self.position.epoch + 1
        } else {
            self.position.epoch
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Each epoch's stream starts from its own state, so epochs are independent of each other.
fn epoch_rng(seed: u64, epoch: usize) -> SeededRng {
    let mut rng = SeededRng::new(seed);
    SeededRng::new(rng.next_u64() ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
}

impl LengthGroups {
    /// Sorted by length (ties in dataset order), cut into batches, the batches shuffled.
    fn epoch_order(&self, seed: u64, epoch: usize) -> Vec<usize> {
        let mut by_length: Vec<usize> = (0..self.lengths.len()).collect();
        by_length.sort_by_key(|&index| self.lengths[index]);
        let mut batches: Vec<&[usize]> = by_length.chunks(self.batch).collect();
        epoch_rng(seed, epoch).shuffle(&mut batches);
        batches.concat()
    }
}

impl Iterator for EpochShuffler {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        if self.position.index == self.len {
            self.position = DataPosition {
                epoch: self.position.epoch + 1,
                index: 0,
            };
            self.order = match &self.groups {
                Some(groups) => groups.epoch_order(self.seed, self.position.epoch),
                None => Self::epoch_order(self.len, self.seed, self.position.epoch),
            };
        }
        let sample = self.order[self.position.index];
        self.position.index += 1;
        Some(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageSource;

    /// Batches hold neighbouring lengths, every sample once per epoch, the batches' order
    /// changes with the epoch, and a resumed shuffler continues as an uninterrupted one.
    #[test]
    fn length_grouped_epochs_batch_similar_lengths() {
        let lengths: Vec<usize> = (0..23).map(|i| (i * 7) % 23 + 10).collect();
        let grouped =
            |shuffler: EpochShuffler| shuffler.grouped_by_length(lengths.clone(), 4).unwrap();
        let mut order = grouped(EpochShuffler::new(23, 3));
        let epoch0: Vec<usize> = order.by_ref().take(23).collect();
        let epoch1: Vec<usize> = order.by_ref().take(23).collect();
        for epoch in [&epoch0, &epoch1] {
            let mut seen = epoch.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..23).collect::<Vec<_>>());
        }
        assert_ne!(epoch0, epoch1);
        // Lengths are 10..33 each once: sorted, batch k holds 10+4k..; each batch of the
        // order spans at most 3 (its 4 neighbours), except the last one of 3.
        let batches = |epoch: &[usize]| -> Vec<Vec<usize>> {
            let mut sorted: Vec<usize> = (0..23).collect();
            sorted.sort_by_key(|&i| lengths[i]);
            let cuts: Vec<Vec<usize>> = sorted.chunks(4).map(|c| c.to_vec()).collect();
            let mut found = Vec::new();
            let mut rest = epoch;
            while !rest.is_empty() {
                let batch = cuts
                    .iter()
                    .find(|c| c[0] == rest[0])
                    .expect("a batch starts here");
                assert_eq!(&rest[..batch.len()], &batch[..]);
                found.push(batch.clone());
                rest = &rest[batch.len()..];
            }
            found
        };
        assert_eq!(batches(&epoch0).len(), 6);
        let mut resumed =
            grouped(EpochShuffler::resume(23, 3, DataPosition { epoch: 1, index: 5 }).unwrap());
        assert_eq!(resumed.by_ref().take(18).collect::<Vec<_>>(), epoch1[5..]);
        assert!(
            EpochShuffler::new(3, 0)
                .grouped_by_length(vec![1], 2)
                .is_err()
        );
    }

    fn samples(images: usize, per_image: usize) -> Vec<Conversation> {
        (0..images)
            .flat_map(|image| {
                (0..per_image).map(move |k| {
                    let mut sample = Conversation::caption(
                        format!("{image}.jpg#{k}"),
                        ImageSource::File(format!("{image}.jpg").into()),
                        "a dog",
                    );
                    sample.teacher_id = format!("{image}.jpg");
                    sample
                })
            })
            .collect()
    }

    #[test]
    fn holdout_is_seeded_grouped_by_image_and_ordered() {
        let split = split_holdout(samples(100, 5), 0.1, 42).unwrap();
        assert_eq!((split.train.len(), split.eval.len()), (450, 50));
        assert_eq!(split, split_holdout(samples(100, 5), 0.1, 42).unwrap());
        assert_ne!(
            split.eval,
            split_holdout(samples(100, 5), 0.1, 7).unwrap().eval
        );
        let eval_images: std::collections::HashSet<&str> =
            split.eval.iter().map(|s| s.teacher_id.as_str()).collect();
        assert_eq!(eval_images.len(), 10);
        assert!(
            split
                .train
                .iter()
                .all(|s| !eval_images.contains(s.teacher_id.as_str()))
        );
        // The dataset's order is kept on both sides.
        let position = |id: &str| id.split('.').next().unwrap().parse::<usize>().unwrap();
        assert!(
            split
                .eval
                .windows(2)
                .all(|w| position(&w[0].id) <= position(&w[1].id))
        );

        let none = split_holdout(samples(3, 1), 0.0, 1).unwrap();
        assert_eq!((none.train.len(), none.eval.len()), (3, 0));
        assert!(split_holdout(samples(3, 1), 1.0, 1).is_err());
        assert!(
            split_holdout(samples(1, 1), 0.9, 1)
                .unwrap_err()
                .contains("no training")
        );
    }

    #[test]
    fn shuffler_visits_every_sample_each_epoch_and_resumes_exactly() {
        let mut shuffler = EpochShuffler::new(10, 42);
        let first: Vec<usize> = shuffler.by_ref().take(10).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(first, sorted, "seed 42 shuffles");
        assert_eq!(
            shuffler.position(),
            DataPosition {
                epoch: 0,
                index: 10
            }
        );
        // The next sample is the next epoch's, as for a shuffler resumed here.
        assert_eq!(shuffler.next_epoch(), 1);
        let resumed = EpochShuffler::resume(10, 42, shuffler.position()).unwrap();
        assert_eq!(resumed.next_epoch(), 1);
        assert_eq!(EpochShuffler::new(10, 42).next_epoch(), 0);
        let second: Vec<usize> = shuffler.by_ref().take(10).collect();
        assert_ne!(first, second, "each epoch has its own order");
        assert_eq!(
            first,
            EpochShuffler::new(10, 42).take(10).collect::<Vec<_>>()
        );

        // Interrupt anywhere (mid-epoch, at the end of an epoch) and resume.
        let uninterrupted: Vec<usize> = EpochShuffler::new(10, 42).take(35).collect();
        for stop in [0, 3, 10, 17, 20, 29] {
            let mut run = EpochShuffler::new(10, 42);
            let mut taken: Vec<usize> = run.by_ref().take(stop).collect();
            let saved = serde_json::to_string(&run.position()).unwrap();
            let position: DataPosition = serde_json::from_str(&saved).unwrap();
            let resumed = EpochShuffler::resume(10, 42, position).unwrap();
            taken.extend(resumed.take(35 - stop));
            assert_eq!(taken, uninterrupted, "stopped after {stop}");
        }
        assert!(
            EpochShuffler::resume(5, 42, DataPosition { epoch: 0, index: 6 })
                .unwrap_err()
                .contains("data changed")
        );
        assert_eq!(EpochShuffler::new(0, 1).next(), None);
    }

    #[test]
    fn fingerprints_tell_datasets_apart() {
        let a = dataset_fingerprint(["1.jpg", "2.jpg"]);
        assert_eq!(a, dataset_fingerprint(["1.jpg", "2.jpg"]));
        assert!(a.starts_with("2:"));
        assert_ne!(a, dataset_fingerprint(["2.jpg", "1.jpg"]));
        assert_ne!(
            dataset_fingerprint(["ab", "c"]),
            dataset_fingerprint(["a", "bc"])
        );
    }

    #[test]
    fn rng_state_round_trips() {
        let mut rng = SeededRng::new(7);
        rng.next_u64();
        let mut resumed = SeededRng::from_state(rng.state());
        assert_eq!(rng.next_u64(), resumed.next_u64());
        assert!((0..1000).all(|_| rng.below(3) < 3));
    }
}
