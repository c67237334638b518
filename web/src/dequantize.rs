//! Q8 weights back to f32 on WebGPU. Burn's quantized matmul kernel for WebGPU fails to
//! compile on SwiftShader (measured: `Invalid ShaderModule "matmul_entry_…"`, and the module
//! traps), and so did the weights dequantized on WebGPU itself, while the same bundle exported
//! unquantized runs and gives the native answer. So for WebGPU the page loads the bundle on the
//! CPU, dequantizes there and copies the f32 weights to the GPU: the download stays Q8 (about a
//! quarter of the f32 size), the GPU holds f32 (the buffer-limit check already assumes f32).
//! The CPU backend keeps them quantized (Flex dequantizes in each matmul).

use burn::{
    module::{Module, ModuleMapper, Param},
    tensor::{DType, Tensor},
};
use lavender_core::vlm::mllama::student::Mllama;

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

/// `student` with every quantized weight dequantized, and how many there were.
pub fn dequantize_weights(student: Mllama) -> (Mllama, usize) {
    let mut mapper = Dequantize { count: 0 };
    let student = student
        .try_map_model(|model| Ok::<_, std::convert::Infallible>(model.map(&mut mapper)))
        .unwrap_or_else(|never| match never {});
    (student, mapper.count)
}
