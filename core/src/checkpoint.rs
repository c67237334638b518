//! Writing a model back as the checkpoint it was loaded from: every parameter under its stored
//! name and in its stored layout (a Linear's weight `[out, in]`), as f32 safetensors. What a
//! trained model saves, so that its reference library (transformers, diffusers) and `lavender`
//! load it like any released model.
//!
//! The names come from building the same structure with [`Weights::naming`], which records the
//! stored name and layout of each parameter as it builds it; two models of one structure list
//! their parameters in the same order, so the trained model's parameters are matched to the
//! names by position. A parameter built without a name (a tied `lm_head`, made from the token
//! table) is left out, as the reference libraries leave it out.

use std::collections::HashMap;

use burn::{
    module::{Module, ModuleVisitor, Param, ParamId},
    tensor::{Tensor, f16},
};
use safetensors::{Dtype, tensor::TensorView};

use crate::weights::{LoadError, StoredLayout, Weights};

/// One tensor of a checkpoint: name, stored shape, f32 values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Every named parameter of `model` in its stored layout, sorted by name. `build` builds the
/// same structure from the weights it is given (the loader that made `model`).
pub fn stored_tensors<M: Module>(
    model: &M,
    build: impl FnOnce(&Weights) -> Result<M, LoadError>,
) -> Result<Vec<NamedTensor>, String> {
    let naming = Weights::naming();
    let reference =
        build(&naming).map_err(|error| format!("cannot build the reference structure: {error}"))?;
    let names = naming.take_names();
    let mut ids = Ids::default();
    reference.visit(&mut ids);
    let mut values = Values::default();
    model.visit(&mut values);
    if ids.0.len() != values.0.len() {
        return Err(format!(
            "the model has {} parameters, its config's structure {}",
            values.0.len(),
            ids.0.len()
        ));
    }
    let mut tensors = Vec::with_capacity(names.len());
    for (id, read) in ids.0.iter().zip(values.0) {
        let Some((name, layout)) = names.get(id) else {
            continue;
        };
        let (shape, data) = read.map_err(|error| format!("{name}: {error}"))?;
        let (shape, data) = match layout {
            StoredLayout::AsStored => (shape, data),
            StoredLayout::Transposed => {
                let [rows, cols] = shape[..] else {
                    return Err(format!(
                        "{name}: a transposed weight must be 2-D, is {shape:?}"
                    ));
                };
                let mut stored = vec![0.0; data.len()];
                for r in 0..rows {
                    for c in 0..cols {
                        stored[c * rows + r] = data[r * cols + c];
                    }
                }
                (vec![cols, rows], stored)
            }
        };
        tensors.push((name.clone(), shape, data));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

/// How a checkpoint stores its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoredDtype {
    #[default]
    F32,
    /// IEEE half precision, rounded to nearest: half the bytes (what `--half` teachers and
    /// released fp16 weights use); every loader here and in diffusers reads it back as f32.
    F16,
}

/// `tensors` as the bytes of a safetensors file with `format: pt` (what PyTorch libraries
/// write and expect), in f32.
pub fn safetensors_bytes(tensors: &[NamedTensor]) -> Result<Vec<u8>, String> {
    safetensors_bytes_as(tensors, StoredDtype::F32)
}

/// `tensors` as the bytes of a safetensors file with `format: pt`, stored as `dtype`.
pub fn safetensors_bytes_as(
    tensors: &[NamedTensor],
    dtype: StoredDtype,
) -> Result<Vec<u8>, String> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| match dtype {
            StoredDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StoredDtype::F16 => values
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect(),
        })
        .collect();
    let stored = match dtype {
        StoredDtype::F32 => Dtype::F32,
        StoredDtype::F16 => Dtype::F16,
    };
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), bytes)| {
            TensorView::new(stored, shape.clone(), bytes)
                .map(|view| (name.as_str(), view))
                .map_err(|error| format!("{name}: {error}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(|error| error.to_string())
}

/// Parameter ids in visiting order (the reference's parameters are lazy: never read).
#[derive(Default)]
struct Ids(Vec<ParamId>);

impl ModuleVisitor for Ids {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(param.id);
    }
}

/// A parameter's shape and values, or why they could not be read.
type ReadParam = Result<(Vec<usize>, Vec<f32>), String>;

/// Parameter shapes and values in visiting order.
#[derive(Default)]
struct Values(Vec<ReadParam>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let values = tensor
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|error| format!("reading a parameter of shape {shape:?}: {error:?}"));
        self.0.push(values.map(|values| (shape, values)));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use safetensors::SafeTensors;

    use super::*;

    /// `written` holds exactly the tensors of the checkpoint file `original`: same names,
    /// shapes and values (as f32: a half-precision original widens exactly).
    pub(crate) fn assert_same_checkpoint(written: &[u8], original: &Path) {
        let ours = SafeTensors::deserialize(written).unwrap();
        let original_bytes = std::fs::read(original).unwrap();
        let theirs = SafeTensors::deserialize(&original_bytes).unwrap();
        let sorted = |file: &SafeTensors| {
            let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
            names.sort();
            names
        };
        assert_eq!(sorted(&ours), sorted(&theirs), "{}", original.display());
        let f32s = |view: safetensors::tensor::TensorView<'_>| -> Vec<f32> {
            match view.dtype() {
                Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                Dtype::F16 => view
                    .data()
                    .chunks_exact(2)
                    .map(|b| burn::tensor::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => view
                    .data()
                    .chunks_exact(2)
                    .map(|b| burn::tensor::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => panic!("fixture dtype {other:?}"),
            }
        };
        for name in sorted(&theirs) {
            let (mine, theirs) = (ours.tensor(&name).unwrap(), theirs.tensor(&name).unwrap());
            assert_eq!(mine.shape(), theirs.shape(), "{name}");
            assert!(f32s(mine) == f32s(theirs), "{name}: values differ");
        }
    }
}
