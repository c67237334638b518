//! The student written back as a Hugging Face checkpoint: every parameter under its
//! transformers name and in the layout transformers stores it (a Linear's weight `[out, in]`),
//! as f32 safetensors. What a full fine-tune (or pre-training from scratch) saves, so that
//! transformers, `lavender` and LoRA runs load the result like any released model.
//!
//! The names come from building the same structure with [`Weights::naming`], which records the
//! stored name and layout of each parameter as it builds it; two models of one structure list
//! their parameters in the same order, so the trained model's parameters are matched to the
//! names by position. A tied `lm_head` (built from the token table) has no name and is left
//! out, as transformers leaves it out.

use std::collections::HashMap;

use burn::{
    module::{Module, ModuleVisitor, Param, ParamId},
    tensor::{Device, Tensor},
};
use safetensors::{Dtype, tensor::TensorView};

use super::model::MllamaModel;
use crate::weights::{StoredLayout, Weights};

/// One tensor of the checkpoint: name, stored shape, f32 values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Every named parameter of `model`, in the layout transformers stores it, sorted by name.
/// Fails on a model whose structure is not the one its config builds (LoRA factors: merge
/// them first).
pub fn hf_tensors(model: &MllamaModel) -> Result<Vec<NamedTensor>, String> {
    if model.lora_settings().is_some() {
        return Err("the model carries LoRA factors; merge them first".into());
    }
    let naming = Weights::naming();
    let reference = MllamaModel::from_weights(model.config.clone(), &naming, &Device::flex())
        .map_err(|error| format!("cannot build the reference structure: {error}"))?;
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

/// [`hf_tensors`] as the bytes of a `model.safetensors` (with transformers' `format: pt`).
pub fn hf_safetensors(model: &MllamaModel) -> Result<Vec<u8>, String> {
    let tensors = hf_tensors(model)?;
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
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
mod tests {
    use safetensors::SafeTensors;

    use super::*;
    use crate::testing::mllama_tiny_dir;

    /// The fixture (written by transformers) loaded and written back is the fixture: every
    /// tensor under its name, with its shape and exactly its values.
    #[test]
    fn a_loaded_checkpoint_is_written_back_as_it_was() {
        let dir = mllama_tiny_dir();
        let device = Device::flex();
        let model = MllamaModel::load(&dir, None, &device).unwrap();
        let written = hf_safetensors(&model).unwrap();
        let ours = SafeTensors::deserialize(&written).unwrap();
        let original_bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let original = SafeTensors::deserialize(&original_bytes).unwrap();
        let mut names: Vec<String> = original.names().into_iter().map(str::to_string).collect();
        names.sort();
        let mut written_names: Vec<String> = ours.names().into_iter().map(str::to_string).collect();
        written_names.sort();
        assert_eq!(written_names, names);
        let f32s = |view: safetensors::tensor::TensorView<'_>| -> Vec<f32> {
            match view.dtype() {
                Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                other => panic!("fixture dtype {other:?}"),
            }
        };
        for name in &names {
            let theirs = original.tensor(name).unwrap();
            let mine = ours.tensor(name).unwrap();
            assert_eq!(mine.shape(), theirs.shape(), "{name}");
            assert!(f32s(mine) == f32s(theirs), "{name}: values differ");
        }
    }
}
