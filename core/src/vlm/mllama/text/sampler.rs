//! Choosing the next token from logits: greedy, or temperature + nucleus (top-p) sampling
//! with a seeded generator, so a run repeats exactly on every backend.

use crate::rng::SeededRng;

/// How [`MllamaTextModel::generate`](super::MllamaTextModel::generate) picks tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// 0 (or less): greedy, the first highest logit as `torch.argmax`.
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`
    /// (1: all of them).
    pub top_p: f32,
    pub seed: u64,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::greedy()
    }
}

impl Sampler {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }

    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Self {
        Self {
            temperature,
            top_p,
            seed,
        }
    }

    pub(crate) fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// The next token from one position's `logits` `[vocab]`.
    pub(crate) fn pick(&self, logits: &[f32], rng: &mut SeededRng) -> u32 {
        if self.is_greedy() {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = logits
            .iter()
            .map(|&l| (((l - max) / self.temperature) as f64).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        // Most likely first; equal weights by id so the order is the same everywhere.
        order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
        let mut kept = 0.0;
        let mut nucleus = 0;
        for &id in &order {
            if nucleus > 0 && kept >= self.top_p as f64 * total {
                break;
            }
            kept += weights[id];
            nucleus += 1;
        }
        let mut target = rng.next_f64() * kept;
        for &id in &order[..nucleus] {
            target -= weights[id];
            if target < 0.0 {
                return id as u32;
            }
        }
        order[nucleus - 1] as u32
    }
}

/// The index of the first largest value.
pub(crate) fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut rng = SeededRng::new(0);
        assert_eq!(Sampler::greedy().pick(&[0.0, 2.0, 2.0, -1.0], &mut rng), 1);
    }

    #[test]
    fn top_p_keeps_the_nucleus_and_the_seed_repeats() {
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.5 leaves only the first token.
        let logits = [3.0, 2.0, 1.0, 0.0];
        let narrow = Sampler::new(1.0, 0.5, 7);
        let mut rng = SeededRng::new(narrow.seed);
        assert!((0..50).all(|_| narrow.pick(&logits, &mut rng) == 0));

        let wide = Sampler::new(1.0, 1.0, 7);
        let draw = |seed| {
            let mut rng = SeededRng::new(seed);
            (0..200)
                .map(|_| wide.pick(&logits, &mut rng))
                .collect::<Vec<_>>()
        };
        let run = draw(7);
        assert_eq!(run, draw(7));
        assert!(
            (0..4).all(|id| run.contains(&id)),
            "every token drawn at top_p 1"
        );
        // top_p 0.8 keeps the first two (0.64 < 0.8 <= 0.88).
        let two = Sampler::new(1.0, 0.8, 3);
        let mut rng = SeededRng::new(3);
        let picks: Vec<u32> = (0..200).map(|_| two.pick(&logits, &mut rng)).collect();
        assert!(picks.iter().all(|&id| id < 2) && picks.contains(&1));
    }
}
