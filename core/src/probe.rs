//! A tiny attention computation with hand-checkable results, used to prove that a backend
//! really runs: `softmax(q kᵀ / √d)` for two queries and three keys of width four.
//!
//! The numbers are chosen so the scores are halves and the probabilities follow from `e^0.5`
//! and `e^1` alone:
//!
//! ```text
//! q kᵀ / 2 = [[0.5, 0.5, 1.0],      softmax  = [[a, a, b],     a = e^0.5 / (2 e^0.5 + e)
//!             [1.0, 0.5, 0.5]]                  [b, a, a]]     b = e     / (2 e^0.5 + e)
//! ```
//!
//! Native code reads the result with `into_data`, the browser with `into_data_async`; both
//! hand the values to [`check_attention_probe`].

use burn::tensor::{DType, Device, Tensor, TensorData, activation::softmax};

/// Queries `[2, 4]`.
pub const PROBE_QUERIES: [[f32; 4]; 2] = [[1.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, -1.0]];

/// Keys `[3, 4]`.
pub const PROBE_KEYS: [[f32; 4]; 3] = [
    [1.0, 1.0, 0.0, 0.0],
    [0.0, 1.0, 1.0, 1.0],
    [2.0, 0.0, 0.0, -1.0],
];

/// The expected probabilities `[2, 3]`, row-major (computed in f64, rounded to f32).
pub const PROBE_EXPECTED: [f32; 6] = [
    0.274_068_62,
    0.274_068_62,
    0.451_862_76,
    0.451_862_76,
    0.274_068_62,
    0.274_068_62,
];

/// Largest absolute difference accepted from a backend. f32 softmax of values this small is
/// exact to a few ulps on every backend; 1e-5 still catches any wrong kernel.
pub const PROBE_TOLERANCE: f32 = 1e-5;

/// Builds the probe on `device` and returns the attention probabilities `[2, 3]`, not yet read
/// back (reading is synchronous natively and asynchronous in a browser).
pub fn attention_probe(device: &Device) -> Tensor<2> {
    // Always f32, whatever the device's default float type: the tolerance is an f32 one.
    let f32_tensor = |rows: &[[f32; 4]]| {
        let values: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::<2>::from_data(
            TensorData::new(values, [rows.len(), 4]),
            (device, DType::F32),
        )
    };
    let queries = f32_tensor(&PROBE_QUERIES);
    let keys = f32_tensor(&PROBE_KEYS);
    let scale = 1.0 / (PROBE_QUERIES[0].len() as f32).sqrt();
    softmax(queries.matmul(keys.transpose()).mul_scalar(scale), 1)
}

/// What a backend computed that differs from [`PROBE_EXPECTED`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeMismatch {
    #[error("attention probe returned {found} values, expected {expected}")]
    WrongLength { expected: usize, found: usize },
    #[error(
        "attention probe value {index} is {found}, expected {expected} (tolerance {PROBE_TOLERANCE})"
    )]
    WrongValue {
        index: usize,
        expected: f32,
        found: f32,
    },
}

/// Checks values read back from [`attention_probe`] against [`PROBE_EXPECTED`].
pub fn check_attention_probe(values: &[f32]) -> Result<(), ProbeMismatch> {
    if values.len() != PROBE_EXPECTED.len() {
        return Err(ProbeMismatch::WrongLength {
            expected: PROBE_EXPECTED.len(),
            found: values.len(),
        });
    }
    for (index, (&found, &expected)) in values.iter().zip(PROBE_EXPECTED.iter()).enumerate() {
        let error = (found - expected).abs();
        if error.is_nan() || error > PROBE_TOLERANCE {
            return Err(ProbeMismatch::WrongValue {
                index,
                expected,
                found,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants agree with the closed form in the module docs, computed in f64.
    #[test]
    fn expected_values_follow_the_closed_form() {
        let (half, one) = (0.5f64.exp(), 1f64.exp());
        let a = (half / (2.0 * half + one)) as f32;
        let b = (one / (2.0 * half + one)) as f32;
        assert_eq!(PROBE_EXPECTED, [a, a, b, b, a, a]);
    }

    #[test]
    fn flex_backend_computes_the_probe() {
        let values = attention_probe(&Device::flex())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        check_attention_probe(&values).unwrap();
    }

    #[test]
    fn mismatches_are_reported_with_the_index() {
        let mut values = PROBE_EXPECTED.to_vec();
        values[4] += 1e-3;
        assert_eq!(
            check_attention_probe(&values),
            Err(ProbeMismatch::WrongValue {
                index: 4,
                expected: PROBE_EXPECTED[4],
                found: values[4]
            })
        );
        values[4] = f32::NAN;
        assert!(check_attention_probe(&values).is_err());
        assert_eq!(
            check_attention_probe(&values[..5]),
            Err(ProbeMismatch::WrongLength {
                expected: 6,
                found: 5
            })
        );
    }
}
