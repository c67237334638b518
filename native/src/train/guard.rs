//! Stops a run at the first non-finite loss, saying where it happened, rather than training on
//! (and checkpointing) NaN weights.

use std::fmt;

/// Which loss term went non-finite, at which step.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFiniteLoss {
    pub step: u64,
    pub ce: f64,
    pub align: f64,
}

impl fmt::Display for NonFiniteLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match (self.ce.is_finite(), self.align.is_finite()) {
            (false, false) => format!(
                "both losses are not finite (cross-entropy {}, alignment {})",
                self.ce, self.align
            ),
            (false, true) => format!(
                "the cross-entropy is not finite ({}; alignment loss {})",
                self.ce, self.align
            ),
            _ => format!(
                "the alignment loss is not finite ({}; cross-entropy {})",
                self.align, self.ce
            ),
        };
        write!(
            f,
            "step {}: {what}; stopped before the update. Resume from the last checkpoint with \
             a lower learning rate or alignment weight (`lavender train --resume RUN --lr X \
             --lambda Y`)",
            self.step
        )
    }
}

impl std::error::Error for NonFiniteLoss {}

/// `Ok` when both loss terms are finite; otherwise which step and which part is not.
pub fn check_finite(step: u64, ce: f64, align: f64) -> Result<(), NonFiniteLoss> {
    if ce.is_finite() && align.is_finite() {
        Ok(())
    } else {
        Err(NonFiniteLoss { step, ce, align })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_step_and_the_part() {
        assert!(check_finite(3, 2.5, 0.01).is_ok());
        let align = check_finite(12, 2.31, f64::NAN).unwrap_err().to_string();
        assert!(
            align
                .starts_with("step 12: the alignment loss is not finite (NaN; cross-entropy 2.31)"),
            "{align}"
        );
        let ce = check_finite(7, f64::INFINITY, 0.5).unwrap_err().to_string();
        assert!(
            ce.starts_with("step 7: the cross-entropy is not finite (inf;"),
            "{ce}"
        );
        let both = check_finite(1, f64::NAN, f64::NEG_INFINITY)
            .unwrap_err()
            .to_string();
        assert!(
            both.contains("both losses are not finite (cross-entropy NaN, alignment -inf)"),
            "{both}"
        );
    }
}
