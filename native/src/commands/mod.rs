//! One module per subcommand; each takes its parsed arguments and writes its own output.

pub mod attend;
pub mod attend_sd;
pub mod bench_train;
pub mod bench_unet;
pub mod demo;
pub mod devices;
pub mod eval;
pub mod export_web;
pub mod extract;
pub mod generate;
pub mod point;
pub mod shapes;
pub mod student_args;
pub mod study;
pub mod teacher_args;
pub mod train;
pub mod train_teacher;

use std::collections::HashMap;

use burn::tensor::Tensor;
use safetensors::{Dtype, tensor::TensorView};

/// Reads a tensor back to the host as f32 values (`what` names it in the error).
pub fn tensor_values<const D: usize>(tensor: Tensor<D>, what: &str) -> anyhow::Result<Vec<f32>> {
    tensor
        .try_into_data()
        .map_err(|error| anyhow::anyhow!("reading {what} from the device: {error:?}"))?
        .try_to_vec::<f32>()
        .map_err(|error| anyhow::anyhow!("reading {what}: {error:?}"))
}

/// Named f32 tensors and string metadata as the bytes of a safetensors file.
pub fn f32_safetensors<const D: usize>(
    tensors: Vec<(String, Tensor<D>)>,
    metadata: HashMap<String, String>,
) -> anyhow::Result<Vec<u8>> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let shape = tensor.dims().to_vec();
        let values = tensor_values(tensor, &name)?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name, shape, bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((
                name.as_str(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// `--grid`: where the student's attention lands on the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GridArg {
    /// Class tokens dropped, tiles by the processor's layout, padding cropped.
    #[default]
    Corrected,
    /// The reference code's sheared 1-D resampling, to reproduce its numbers.
    Legacy,
}

impl From<GridArg> for lavender_core::align::grid::GridMode {
    fn from(arg: GridArg) -> Self {
        match arg {
            GridArg::Corrected => Self::Corrected,
            GridArg::Legacy => Self::Legacy,
        }
    }
}

/// Decodes an image file to RGB, naming the file when it cannot.
pub fn open_image(path: &std::path::Path) -> anyhow::Result<image::RgbImage> {
    use anyhow::Context;
    let image = lavender_core::images::decode_file(path, crate::limits::max_image_pixels())
        .with_context(|| format!("{}", path.display()))?
        .to_rgb8();
    if lavender_core::images::is_truncated_jpeg_file(path).unwrap_or(false) {
        tracing::warn!("{}: {}", path.display(), crate::limits::TRUNCATED_JPEG);
    }
    Ok(image)
}

/// `picture` encoded as PNG.
pub fn png_bytes(picture: &image::RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    picture.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    Ok(bytes)
}

/// Encodes `picture` as PNG and writes it atomically.
pub fn write_png(path: &std::path::Path, picture: &image::RgbImage) -> anyhow::Result<()> {
    crate::output::write_atomically(path, &png_bytes(picture)?)
}
