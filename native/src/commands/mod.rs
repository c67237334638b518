//! One module per subcommand; each takes its parsed arguments and writes its own output.

pub mod attend_sd;
pub mod bench_unet;
pub mod devices;
pub mod extract;
pub mod teacher_args;

use burn::tensor::Tensor;

/// Reads a tensor back to the host as f32 values (`what` names it in the error).
pub fn tensor_values<const D: usize>(tensor: Tensor<D>, what: &str) -> anyhow::Result<Vec<f32>> {
    tensor
        .try_into_data()
        .map_err(|error| anyhow::anyhow!("reading {what} from the device: {error:?}"))?
        .try_to_vec::<f32>()
        .map_err(|error| anyhow::anyhow!("reading {what}: {error:?}"))
}
