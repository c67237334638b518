//! The trained Aligner a web bundle may carry, so the explorer can draw a word's map as
//! training's alignment loss sees it (the Aligner per layer, or after the mean over layers)
//! besides the plain attention.
//!
//! The file is a training run's `aligner.safetensors` as `train` wrote it (tensor names in
//! [`crate::align::aligner`]), copied byte for byte so its SHA-256 in the manifest is the run's;
//! the manifest's `aligner` entry records what the tensors alone do not say for sure: the
//! activation (`train` uses ReLU6), and, for a reader that has not opened the file yet, the
//! heads, hidden width and depth. The export reads depth and width off the tensors and refuses
//! an Aligner whose input channels are not the model's cross-attention heads: it could not run
//! on this model's attention.

use std::path::PathBuf;

use burn::tensor::Device;

use super::{
    files::BundleFiles,
    manifest::{BundleAligner, BundleError, MANIFEST_FILE, Manifest},
};
use crate::{
    align::aligner::{Aligner, AlignerActivation, AlignerDepth},
    weights::Weights,
};

/// The bundle file of the Aligner.
pub const ALIGNER_FILE: &str = "aligner.safetensors";

/// An Aligner to put into a bundle: the bytes of a training run's `aligner.safetensors`, the
/// activation it was trained with (`train` always uses [`AlignerActivation::Relu6`]), and
/// `label`, the file it came from, which names it in errors.
#[derive(Debug, Clone)]
pub struct AlignerInput {
    pub label: PathBuf,
    pub bytes: Vec<u8>,
    pub activation: AlignerActivation,
}

/// The manifest entry of `input` for a model with `heads` cross-attention heads, after loading
/// it on `device` to check every tensor. The depth is the number of `convs.{i}.weight` tensors,
/// the hidden width the first one's output channels.
pub(super) fn aligner_entry(
    input: &AlignerInput,
    heads: usize,
    device: &Device,
) -> Result<BundleAligner, BundleError> {
    let refuse = |reason: String| BundleError::Aligner {
        path: input.label.clone(),
        reason,
    };
    let weights = Weights::from_bytes(&input.label, input.bytes.clone())?;
    let convs = (0..)
        .take_while(|index| weights.contains(&format!("convs.{index}.weight")))
        .count();
    let depth = AlignerDepth::from_convs(convs).ok_or_else(|| {
        refuse(format!(
            "{convs} tensors `convs.{{i}}.weight`; an Aligner has 2 (light), 3 (sim) or 5 (deep): \
             is this a training run's aligner.safetensors?"
        ))
    })?;
    let first = weights.shape("convs.0.weight")?;
    let &[hidden, channels, 3, 3] = first else {
        return Err(refuse(format!(
            "`convs.0.weight` has shape {first:?}, expected [hidden, heads, 3, 3]"
        )));
    };
    if channels != heads {
        return Err(refuse(format!(
            "`convs.0.weight` has shape {first:?}: an Aligner of {channels} heads, but the \
             model's cross-attention has {heads} heads (expected [{hidden}, {heads}, 3, 3]); was \
             it trained on another model?"
        )));
    }
    let entry = BundleAligner {
        file: ALIGNER_FILE.into(),
        heads,
        hidden,
        depth: depth.id().into(),
        activation: input.activation.id().into(),
    };
    let config = entry.config().map_err(refuse)?;
    // Every other tensor's shape follows from these; loading checks them, naming the file.
    config.load_weights(&weights, "", device)?;
    Ok(entry)
}

impl BundleFiles {
    /// The bundle's Aligner on `device`, `Ok(None)` when it has none; errors name the file and
    /// expected vs found shapes.
    pub fn aligner(
        &self,
        manifest: &Manifest,
        device: &Device,
    ) -> Result<Option<Aligner>, BundleError> {
        let Some(entry) = &manifest.aligner else {
            return Ok(None);
        };
        let manifest_error = |reason: String| BundleError::Manifest {
            path: self.label().join(MANIFEST_FILE),
            reason,
        };
        if entry.heads != manifest.cross_attention.heads {
            return Err(manifest_error(format!(
                "the aligner takes {} heads, the model's cross-attention has {}",
                entry.heads, manifest.cross_attention.heads
            )));
        }
        let config = entry.config().map_err(manifest_error)?;
        let listed = manifest.files.get(&entry.file).ok_or_else(|| {
            manifest_error(format!(
                "the aligner's file {} is not listed in `files`",
                entry.file
            ))
        })?;
        let path = self.label().join(&entry.file);
        let bytes = self.get(&entry.file).ok_or_else(|| BundleError::Missing {
            path: path.clone(),
            expected: listed.size,
        })?;
        if bytes.len() as u64 != listed.size {
            return Err(BundleError::Size {
                path,
                expected: listed.size,
                found: bytes.len() as u64,
            });
        }
        Ok(Some(config.load(
            &path.display().to_string(),
            bytes.to_vec(),
            device,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::aligner::AlignerConfig;
    use crate::testing::device;

    fn input(heads: usize, depth: AlignerDepth) -> AlignerInput {
        let aligner = AlignerConfig::new(heads)
            .with_hidden(6)
            .with_depth(depth)
            .init(&device());
        AlignerInput {
            label: "run/aligner.safetensors".into(),
            bytes: aligner.to_safetensors().unwrap(),
            activation: AlignerActivation::LeakyRelu,
        }
    }

    #[test]
    fn depth_and_width_are_read_off_the_tensors() {
        for depth in AlignerDepth::ALL {
            let entry = aligner_entry(&input(4, depth), 4, &device()).unwrap();
            assert_eq!(
                entry,
                BundleAligner {
                    file: ALIGNER_FILE.into(),
                    heads: 4,
                    hidden: 6,
                    depth: depth.id().into(),
                    activation: "leaky-relu".into(),
                }
            );
        }
    }

    #[test]
    fn other_files_are_refused_naming_them() {
        let error = aligner_entry(&input(5, AlignerDepth::Sim), 4, &device())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("run/aligner.safetensors: `convs.0.weight` has shape [6, 5, 3, 3]")
                && error.contains("expected [6, 4, 3, 3]"),
            "{error}"
        );

        let not_an_aligner = AlignerInput {
            bytes: b"not safetensors".to_vec(),
            ..input(4, AlignerDepth::Sim)
        };
        let error = aligner_entry(&not_an_aligner, 4, &device())
            .unwrap_err()
            .to_string();
        assert!(error.contains("run/aligner.safetensors"), "{error}");

        let config = BundleAligner {
            file: ALIGNER_FILE.into(),
            heads: 4,
            hidden: 6,
            depth: "sim".into(),
            activation: "gelu".into(),
        }
        .config()
        .unwrap_err();
        assert!(config.contains("activation `gelu`"), "{config}");
    }
}
