//! Weight-only quantization of a model's `Linear` weights for the web export: 8-bit symmetric
//! values with one f32 scale per block of the output dimension (Burn's `Q8S`, per-block).
//!
//! Burn quantizes weights only; every op dequantizes (Flex) or feeds the quantized operand into
//! the matmul kernel (CubeCL backends), so activations stay f32. Only `Linear` weights are
//! quantized: embeddings, norms, gates, biases and the vision patch convolution stay dense
//! (they are small, or read by ops such as the embedding lookup that gain nothing from it).
//! A block spans the trailing (output) dimension of Burn's `[in, out]` weight, so every
//! quantized weight's output width must be a multiple of the block.

use burn::{
    module::{Module, ModuleVisitor, Param, ParamGroup, Quantizer},
    tensor::{
        Tensor,
        quantization::{Calibration, QuantScheme, QuantStore, QuantValue, ScaleDtype},
    },
};
use serde::{Deserialize, Serialize};

/// Block sizes tried, largest first, when none is asked for: 32 (llama.cpp's Q8_0 block)
/// divides every Llama-3.2-Vision weight; small test models need smaller ones.
const BLOCKS: [u8; 4] = [32, 16, 8, 4];

/// What a quantization did, for the bundle's manifest and the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantReport {
    /// `q8s-per-block` or `none`.
    pub scheme: String,
    /// Values per block (one f32 scale each); 0 when nothing is quantized.
    pub block: u8,
    /// How many `Linear` weights were quantized.
    pub quantized: usize,
    /// `Linear` weights kept dense, by Burn path, with the reason.
    pub dense: Vec<String>,
}

impl QuantReport {
    /// The report of an unquantized model.
    pub fn none() -> Self {
        Self {
            scheme: "none".into(),
            block: 0,
            quantized: 0,
            dense: Vec::new(),
        }
    }
}

/// The Q8 symmetric per-block scheme with `block` values per scale, packed in u32 words.
pub fn q8_block_scheme(block: u8) -> QuantScheme {
    QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .with_store(QuantStore::PackedU32(0))
        .per_block([block], ScaleDtype::F32)
}

/// A `Linear` weight's Burn path and `[in, out]` shape.
#[derive(Debug, Clone)]
pub struct LinearWeightShape {
    pub path: String,
    pub shape: [usize; 2],
}

/// Every `Linear` weight of `module`, in module order.
pub fn linear_weight_shapes<M: Module>(module: &M) -> Vec<LinearWeightShape> {
    #[derive(Default)]
    struct Collect {
        names: Vec<String>,
        containers: Vec<String>,
        found: Vec<LinearWeightShape>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.names.push(name.to_string());
            self.containers.push(container_type.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.names.pop();
            self.containers.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let is_linear_weight = D == 2
                && self.names.last().is_some_and(|n| n == "weight")
                && self.containers.last().is_some_and(|c| c == "Struct:Linear");
            if is_linear_weight {
                let dims = param.lazy_shape();
                self.found.push(LinearWeightShape {
                    path: self.names.join("."),
                    shape: [dims[0], dims[1]],
                });
            }
        }
    }
    let mut collect = Collect::default();
    module.visit(&mut collect);
    collect.found
}

/// Whether the weight at `path` is the output projection (`...lm_head.weight`).
fn is_lm_head(path: &str) -> bool {
    path.ends_with("lm_head.weight")
}

/// Quantizes every `Linear` weight of `module` to Q8 symmetric per block (min-max
/// calibration). `block`: values per scale; `None` picks the largest of 32, 16, 8, 4 that
/// divides every weight's output width but the output projection's. The output projection
/// (`lm_head`, the largest matrix of a Llama) is quantized too when its width divides, and
/// otherwise kept dense and reported (always, with `dense_lm_head`); any other weight that
/// does not divide is an error naming it.
pub fn quantize_q8<M: Module>(
    module: M,
    block: Option<u8>,
    dense_lm_head: bool,
) -> Result<(M, QuantReport), String> {
    let linears = linear_weight_shapes(&module);
    let body: Vec<&LinearWeightShape> = linears.iter().filter(|l| !is_lm_head(&l.path)).collect();
    let divides = |block: u8, l: &LinearWeightShape| l.shape[1].is_multiple_of(block as usize);
    let block = match block {
        Some(0) => return Err("the quantization block must be positive".into()),
        Some(block) => {
            if let Some(bad) = body.iter().find(|l| !divides(block, l)) {
                return Err(format!(
                    "`{}` has output width {} (shape [in, out] {:?}), not a multiple of the \
                     block {block}; pick a block that divides every linear weight",
                    bad.path, bad.shape[1], bad.shape
                ));
            }
            block
        }
        None => *BLOCKS
            .iter()
            .find(|&&b| body.iter().all(|l| divides(b, l)))
            .ok_or_else(|| {
                format!(
                    "no block of {BLOCKS:?} divides every linear weight's output width: {:?}",
                    body.iter().map(|l| l.shape[1]).collect::<Vec<_>>()
                )
            })?,
    };
    let (quantized, dense): (Vec<&LinearWeightShape>, Vec<&LinearWeightShape>) = linears
        .iter()
        .partition(|l| divides(block, l) && !(dense_lm_head && is_lm_head(&l.path)));
    let report = QuantReport {
        scheme: "q8s-per-block".into(),
        block,
        quantized: quantized.len(),
        dense: dense
            .iter()
            .map(|l| {
                if divides(block, l) {
                    format!("{}: kept dense as asked", l.path)
                } else {
                    format!(
                        "{}: output width {} is not a multiple of {block}",
                        l.path, l.shape[1]
                    )
                }
            })
            .collect(),
    };
    let mut quantizer = Quantizer::new(Calibration::MinMax, q8_block_scheme(block));
    quantizer.set_param_group(ParamGroup::from_paths(
        quantized.iter().map(|l| l.path.clone()).collect(),
    ));
    Ok((module.quantize_weights(&mut quantizer), report))
}
