//! Loading a bundle into the Llama-3.2-Vision student, and making its quantized weights f32 for
//! the backends that cannot read them.

use burn::{
    module::{Module, ModuleMapper, Param},
    store::{BurnpackStore, ModuleSnapshot},
    tensor::{Bytes, DType, Device, Tensor},
};

use super::{
    files::BundleFiles,
    manifest::{BundleError, MANIFEST_FILE, WEIGHTS_FILE},
};
use crate::{
    vlm::mllama::{config::MllamaConfig, model::MllamaModel, student::Mllama},
    weights::{FileSource, Weights},
};

impl Mllama {
    /// Loads a web bundle from its files' bytes (what a browser fetched, or a folder the CLI
    /// read). Checks the manifest and every file's size; call [`BundleFiles::verify`] first to
    /// check the SHA-256 too. The model's structure is built with lazy placeholders and filled
    /// from `model.bpk`, so the weights are allocated once, in the bundle's precision:
    /// quantized weights stay quantized (Flex dequantizes them in each matmul; the GPU
    /// backends read them in the matmul kernel).
    pub fn from_bundle(mut files: BundleFiles, device: &Device) -> Result<Self, BundleError> {
        let manifest = files.manifest()?;
        if manifest.model_type != "mllama" {
            return Err(BundleError::Manifest {
                path: files.path(MANIFEST_FILE),
                reason: format!(
                    "a `{}` bundle, not Llama-3.2-Vision (`mllama`)",
                    manifest.model_type
                ),
            });
        }
        files.check_sizes(&manifest)?;
        let weights_path = files.path(WEIGHTS_FILE);
        let weights = files
            .files
            .remove(WEIGHTS_FILE)
            .ok_or_else(|| BundleError::Manifest {
                path: files.path(MANIFEST_FILE),
                reason: format!("lists no {WEIGHTS_FILE}"),
            })?;
        let source = FileSource::Memory {
            label: &files.label,
            files: &files.files,
        };
        let config = MllamaConfig::from_source(&source)?;
        let mut model = MllamaModel::from_weights(config, &Weights::shapes_only(), device)?;
        let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(weights)));
        let applied = model
            .load_from(&mut store)
            .map_err(|error| BundleError::Weights {
                path: weights_path.clone(),
                reason: error.to_string(),
            })?;
        if !applied.errors.is_empty() || !applied.missing.is_empty() || !applied.unused.is_empty() {
            return Err(BundleError::Weights {
                path: weights_path,
                reason: format!("does not fit config.json: {applied}"),
            });
        }
        Ok(Self::assemble(model, &source)?)
    }

    /// The student with every quantized weight dequantized to f32, and how many there were.
    ///
    /// For the wgpu / WebGPU backends: CubeCL's WGSL compiler cannot emit a kernel that reads
    /// 8-bit integers (WGSL has no `i8`; tracel-ai/cubecl#1460), so Burn 0.22.1's quantized
    /// matmul and its dequantize kernel both fail to compile there (measured: "no definition in
    /// scope for identifier: `i8`", on SwiftShader in Chromium and on native Vulkan alike).
    /// Load the bundle on the CPU, call this, then move the model to the GPU.
    pub fn dequantized(self) -> (Self, usize) {
        struct Dequantize {
            count: usize,
        }
        impl ModuleMapper for Dequantize {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                if matches!(param.val().dtype(), DType::QFloat(_)) {
                    self.count += 1;
                    param.map(Tensor::dequantize)
                } else {
                    param
                }
            }
        }
        let mut mapper = Dequantize { count: 0 };
        let student = self
            .try_map_model(|model| Ok::<_, std::convert::Infallible>(model.map(&mut mapper)))
            .unwrap_or_else(|never| match never {});
        (student, mapper.count)
    }
}

/// The number of parameters of `model` that hold quantized values.
pub fn quantized_param_count<M: Module>(model: &M) -> usize {
    struct Count(usize);
    impl burn::module::ModuleVisitor for Count {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            if matches!(param.val().dtype(), burn::tensor::DType::QFloat(_)) {
                self.0 += 1;
            }
        }
    }
    let mut count = Count(0);
    model.visit(&mut count);
    count.0
}
