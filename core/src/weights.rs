//! Named tensors read from safetensors files and turned into Burn modules, with every
//! mismatch reported by tensor name, file and shape.
//!
//! Keys are the reference libraries' own (diffusers, transformers, PEFT), so a model folder
//! from the Hugging Face hub loads as it is. PyTorch stores linear weights `[out, in]`; Burn's
//! [`Linear`] wants `[in, out]`, so [`Weights::linear`] transposes. f16 and bf16 files are
//! converted to f32 on load.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

use burn::{
    module::{Param, ParamId},
    nn::{Embedding, GroupNorm, LayerNorm, LayerNormConfig, Linear, PaddingConfig2d, conv::Conv2d},
    tensor::{Device, Distribution, Shape, Tensor, TensorData, bf16, f16},
};
use safetensors::{Dtype, SafeTensors};

/// Why weights could not be loaded. Every variant names the file and, where there is one, the
/// tensor.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("tensor `{name}` is missing (looked in {files})")]
    Missing { name: String, files: String },
    #[error("tensor `{name}` in {path} has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}` in {path} has dtype {dtype}, expected F32, F16 or BF16")]
    Dtype {
        name: String,
        path: PathBuf,
        dtype: String,
    },
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(
        "tensor `{name}` in {path} holds {value} at flat index {index} (of {count} non-finite \
         values): the file is damaged or was saved after a diverged run"
    )]
    NonFinite {
        name: String,
        path: PathBuf,
        index: usize,
        value: f32,
        count: usize,
    },
}

struct WeightFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Where a tensor lives: which file, its dtype, shape and byte range in that file's buffer.
struct TensorEntry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    range: (usize, usize),
}

/// The tensors of one or more safetensors files (a sharded checkpoint is several), by name.
pub struct Weights {
    files: Vec<WeightFile>,
    tensors: HashMap<String, TensorEntry>,
    /// Set by [`Weights::random`]: every request is answered with N(0, std) values.
    random_std: Option<f32>,
    /// Set by [`Weights::shapes_only`]: parameters are lazy placeholders of the requested shape.
    shapes_only: bool,
    /// Tensors replaced in memory (merged LoRA weights), by name: shape and f32 values.
    overrides: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// Set by [`Weights::naming`]: the stored name and layout of every parameter built.
    names: Option<std::sync::Mutex<ParamNames>>,
    /// Set by [`Weights::fresh`]: every request is answered with a training initialisation.
    fresh: bool,
}

/// How a stored tensor became a parameter, so that it can be written back as it was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredLayout {
    /// The parameter is the stored tensor.
    AsStored,
    /// The parameter is the stored 2-D tensor transposed (a Linear's `[out, in]` weight).
    Transposed,
}

/// The stored name and layout of each parameter, by parameter id.
pub type ParamNames = HashMap<ParamId, (String, StoredLayout)>;

impl fmt::Debug for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Weights")
            .field(
                "files",
                &self.files.iter().map(|f| &f.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Weights {
    /// Reads safetensors files into memory.
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self, LoadError> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref().to_path_buf();
            let bytes = std::fs::read(&path).map_err(|source| LoadError::Io {
                path: path.clone(),
                source,
            })?;
            files.push(WeightFile { path, bytes });
        }
        Self::from_buffers(files.into_iter().map(|f| (f.path, f.bytes)).collect())
    }

    /// Uses safetensors data already in memory; `label` names it in errors.
    pub fn from_bytes(label: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, LoadError> {
        Self::from_buffers(vec![(label.into(), bytes)])
    }

    fn from_buffers(buffers: Vec<(PathBuf, Vec<u8>)>) -> Result<Self, LoadError> {
        let mut files = Vec::with_capacity(buffers.len());
        let mut tensors = HashMap::new();
        for (index, (path, bytes)) in buffers.into_iter().enumerate() {
            let (header_len, metadata) =
                SafeTensors::read_metadata(&bytes).map_err(|error| LoadError::Format {
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
            let data_start = 8 + header_len;
            for (name, info) in metadata.tensors() {
                let (start, end) = info.data_offsets;
                if data_start + end > bytes.len() {
                    return Err(LoadError::Format {
                        path: path.clone(),
                        reason: format!("tensor `{name}` extends past the end of the file"),
                    });
                }
                tensors.insert(
                    name.to_string(),
                    TensorEntry {
                        file: index,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        range: (data_start + start, data_start + end),
                    },
                );
            }
            files.push(WeightFile { path, bytes });
        }
        Ok(Self {
            files,
            tensors,
            random_std: None,
            shapes_only: false,
            overrides: HashMap::new(),
            names: None,
            fresh: false,
        })
    }

    /// Weights that answer every name with random N(0, `std`) values of the requested shape:
    /// a full-size model for benchmarks, where speed does not depend on the values.
    pub fn random(std: f32) -> Self {
        Self {
            files: Vec::new(),
            tensors: HashMap::new(),
            random_std: Some(std),
            shapes_only: false,
            overrides: HashMap::new(),
            names: None,
            fresh: false,
        }
    }

    /// Weights that answer every parameter request ([`Weights::param`] and the module builders)
    /// with a lazily initialised placeholder of the requested shape: the module structure to be
    /// filled by `load_from` (a burnpack), without allocating the values it replaces. Burn
    /// initialises a lazy parameter only when it is read; loading replaces it unread. Plain
    /// [`Weights::tensor`] requests (values read at build time) get zeros.
    pub fn shapes_only() -> Self {
        Self {
            files: Vec::new(),
            tensors: HashMap::new(),
            random_std: None,
            shapes_only: true,
            overrides: HashMap::new(),
            names: None,
            fresh: false,
        }
    }

    /// [`Weights::shapes_only`] that also records the stored name and layout of every
    /// parameter it builds ([`Weights::take_names`]): a model's structure built from it names
    /// the parameters of any model of the same structure (its parameters come in the same
    /// order), which is how a trained model is written back under its checkpoint's names.
    pub fn naming() -> Self {
        Self {
            names: Some(std::sync::Mutex::new(HashMap::new())),
            ..Self::shapes_only()
        }
    }

    /// The names recorded by a [`Weights::naming`] build (empty otherwise).
    pub fn take_names(&self) -> ParamNames {
        self.names
            .as_ref()
            .map(|names| std::mem::take(&mut *names.lock().unwrap_or_else(|e| e.into_inner())))
            .unwrap_or_default()
    }

    fn record(&self, id: ParamId, name: String, layout: StoredLayout) {
        if let Some(names) = &self.names {
            names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, (name, layout));
        }
    }

    /// Weights that answer every request with a fresh initialisation for training from
    /// scratch, by the stored name and shape (drawn from the device's seeded generator):
    /// biases zero; 1-D weights (the norms' scales) one; embedding tables N(0, 0.02), as
    /// transformers initialises them; every other weight N(0, 1/fan_in), which keeps a
    /// layer's output on the scale of its input (fan_in: the stored shape's product after
    /// its first dimension).
    pub fn fresh() -> Self {
        Self {
            fresh: true,
            ..Self::random(0.0)
        }
    }

    /// The initial values [`Weights::fresh`] gives a stored tensor.
    fn fresh_tensor<const D: usize>(name: &str, shape: [usize; D], device: &Device) -> Tensor<D> {
        if name.ends_with(".bias") {
            return Tensor::zeros(shape, device);
        }
        if D == 1 {
            return Tensor::ones(shape, device);
        }
        let std = if name.ends_with("embedding.weight") {
            0.02
        } else {
            let fan_in: usize = shape[1..].iter().product();
            1.0 / (fan_in.max(1) as f64).sqrt()
        };
        Tensor::random(shape, Distribution::Normal(0.0, std), device)
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.random_std.is_some()
            || self.shapes_only
            || self.overrides.contains_key(name)
            || self.tensors.contains_key(name)
    }

    /// The names of all tensors, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors
            .keys()
            .chain(
                self.overrides
                    .keys()
                    .filter(|name| !self.tensors.contains_key(*name)),
            )
            .map(String::as_str)
    }

    /// The stored shape of a tensor.
    pub fn shape(&self, name: &str) -> Result<&[usize], LoadError> {
        if let Some((shape, _)) = self.overrides.get(name) {
            return Ok(shape);
        }
        Ok(&self.entry(name)?.shape)
    }

    /// Replaces (or adds) the tensor `name` in memory; later reads get these values.
    pub fn set(&mut self, name: &str, shape: Vec<usize>, values: Vec<f32>) {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "{name}: shape and values differ"
        );
        self.overrides.insert(name.to_string(), (shape, values));
    }

    fn entry(&self, name: &str) -> Result<&TensorEntry, LoadError> {
        self.tensors.get(name).ok_or_else(|| LoadError::Missing {
            name: name.to_string(),
            files: self
                .files
                .iter()
                .map(|file| file.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The tensor `name` as f32 on `device`, which must have exactly `shape`.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>, LoadError> {
        if let Some((stored, values)) = self.overrides.get(name) {
            if stored.as_slice() != shape {
                return Err(LoadError::Shape {
                    name: name.to_string(),
                    path: PathBuf::from("(merged in memory)"),
                    expected: shape.to_vec(),
                    found: stored.clone(),
                });
            }
            return Ok(Tensor::from_data(
                TensorData::new(values.clone(), shape),
                device,
            ));
        }
        if self.shapes_only {
            return Ok(Tensor::zeros(shape, device));
        }
        if self.fresh {
            return Ok(Self::fresh_tensor(name, shape, device));
        }
        if let Some(std) = self.random_std {
            return Ok(Tensor::random(
                shape,
                Distribution::Normal(0.0, std as f64),
                device,
            ));
        }
        let entry = self.entry(name)?;
        let file = &self.files[entry.file];
        if entry.shape != shape {
            return Err(LoadError::Shape {
                name: name.to_string(),
                path: file.path.clone(),
                expected: shape.to_vec(),
                found: entry.shape.clone(),
            });
        }
        let raw = &file.bytes[entry.range.0..entry.range.1];
        let values: Vec<f32> = match entry.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(LoadError::Dtype {
                    name: name.to_string(),
                    path: file.path.clone(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        // NaN or infinite weights would flow silently into every output (NaN maps, `!!!`
        // answers); refuse them here, naming the tensor.
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(LoadError::NonFinite {
                name: name.to_string(),
                path: file.path.clone(),
                index,
                value: values[index],
                count: values.iter().filter(|v| !v.is_finite()).count(),
            });
        }
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// The tensor `name` as a parameter of exactly `shape`; with [`Weights::shapes_only`], a
    /// lazy placeholder that allocates nothing unless it is read.
    pub fn param<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Param<Tensor<D>>, LoadError> {
        let param = if self.shapes_only {
            lazy_param(shape, device)
        } else {
            Param::from_tensor(self.tensor(name, shape, device)?)
        };
        self.record(param.id, name.to_string(), StoredLayout::AsStored);
        Ok(param)
    }

    /// `prefix.weight` `[out, in]` (and `prefix.bias` `[out]`) as a Burn [`Linear`].
    pub fn linear(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &Device,
    ) -> Result<Linear, LoadError> {
        let name = format!("{prefix}.weight");
        let weight = if self.shapes_only {
            lazy_param([d_in, d_out], device)
        } else {
            let weight = self.tensor(&name, [d_out, d_in], device)?;
            Param::from_tensor(weight.transpose())
        };
        self.record(weight.id, name, StoredLayout::Transposed);
        let bias = if bias {
            Some(self.param(&format!("{prefix}.bias"), [d_out], device)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A square-kernel [`Conv2d`] with symmetric padding, from `prefix.weight`
    /// `[out, in, k, k]` and `prefix.bias` `[out]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &self,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        device: &Device,
    ) -> Result<Conv2d, LoadError> {
        let weight = self.param(
            &format!("{prefix}.weight"),
            [c_out, c_in, kernel, kernel],
            device,
        )?;
        let bias = self.param(&format!("{prefix}.bias"), [c_out], device)?;
        Ok(Conv2d {
            weight,
            bias: Some(bias),
            stride: [stride, stride],
            kernel_size: [kernel, kernel],
            dilation: [1, 1],
            groups: 1,
            padding: PaddingConfig2d::Explicit(padding, padding, padding, padding),
        })
    }

    /// An affine [`GroupNorm`] from `prefix.weight` and `prefix.bias`.
    pub fn group_norm(
        &self,
        prefix: &str,
        num_groups: usize,
        num_channels: usize,
        epsilon: f64,
        device: &Device,
    ) -> Result<GroupNorm, LoadError> {
        if num_groups == 0 || !num_channels.is_multiple_of(num_groups) {
            return Err(LoadError::Config {
                path: PathBuf::from(prefix),
                reason: format!("{num_channels} channels cannot be split into {num_groups} groups"),
            });
        }
        Ok(GroupNorm {
            gamma: Some(self.param(&format!("{prefix}.weight"), [num_channels], device)?),
            beta: Some(self.param(&format!("{prefix}.bias"), [num_channels], device)?),
            num_groups,
            num_channels,
            epsilon,
            affine: true,
        })
    }

    /// A [`LayerNorm`] with bias from `prefix.weight` and `prefix.bias`.
    pub fn layer_norm(
        &self,
        prefix: &str,
        dim: usize,
        epsilon: f64,
        device: &Device,
    ) -> Result<LayerNorm, LoadError> {
        let mut norm = LayerNormConfig::new(dim).with_epsilon(epsilon).init(device);
        norm.gamma = self.param(&format!("{prefix}.weight"), [dim], device)?;
        norm.beta = Some(self.param(&format!("{prefix}.bias"), [dim], device)?);
        Ok(norm)
    }

    /// An [`Embedding`] table from `prefix.weight` `[n, dim]`.
    pub fn embedding(
        &self,
        prefix: &str,
        n: usize,
        dim: usize,
        device: &Device,
    ) -> Result<Embedding, LoadError> {
        Ok(Embedding {
            weight: self.param(&format!("{prefix}.weight"), [n, dim], device)?,
        })
    }
}

/// A parameter of `shape` on `device` that is created (as zeros) only if it is ever read, as
/// [`Param::from_tensor`] makes them (requiring gradients once trained).
fn lazy_param<const D: usize>(shape: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::uninitialized(
        ParamId::new(),
        move |device, _| Tensor::zeros(shape, device),
        device.clone(),
        true,
        Shape::from(shape),
    )
}

/// The `*.safetensors` weights of a diffusers / transformers component folder: the
/// un-suffixed file (`diffusion_pytorch_model.safetensors`, `model.safetensors`) when present,
/// otherwise its `fp16` variant, otherwise the shards listed by `*.safetensors.index.json`.
pub fn component_weight_files(folder: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let read_dir = std::fs::read_dir(folder).map_err(|source| LoadError::Io {
        path: folder.to_path_buf(),
        source,
    })?;
    let mut names: Vec<String> = read_dir
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for preferred in [
        "diffusion_pytorch_model.safetensors",
        "model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
        "model.fp16.safetensors",
    ] {
        if names.iter().any(|name| name == preferred) {
            return Ok(vec![folder.join(preferred)]);
        }
    }
    // Full-precision shards first, as for single files.
    let indexes: Vec<&String> = names
        .iter()
        .filter(|name| name.ends_with(".safetensors.index.json"))
        .collect();
    let index = indexes
        .iter()
        .find(|name| !name.contains(".fp16."))
        .or(indexes.first());
    if let Some(index) = index {
        let path = folder.join(index);
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|error| LoadError::Config {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        let map = json["weight_map"]
            .as_object()
            .ok_or_else(|| LoadError::Config {
                path: path.clone(),
                reason: "no `weight_map` object".to_string(),
            })?;
        let mut shards: Vec<String> = map
            .values()
            .filter_map(|value| value.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        return Ok(shards.into_iter().map(|shard| folder.join(shard)).collect());
    }
    let singles: Vec<&String> = names
        .iter()
        .filter(|name| name.ends_with(".safetensors"))
        .collect();
    match singles.as_slice() {
        [only] => Ok(vec![folder.join(only)]),
        [] => Err(LoadError::Config {
            path: folder.to_path_buf(),
            reason: "no .safetensors weights in this folder".to_string(),
        }),
        _ => Err(LoadError::Config {
            path: folder.to_path_buf(),
            reason: format!("several .safetensors files and no index: {singles:?}"),
        }),
    }
}

/// Where a model's small files (configs, tokenizer, chat template) come from: a folder on disk,
/// or their bytes in memory (a web bundle; the browser has no file system).
#[derive(Debug, Clone, Copy)]
pub enum FileSource<'a> {
    Folder(&'a Path),
    /// `label` stands for the folder in messages.
    Memory {
        label: &'a Path,
        files: &'a std::collections::BTreeMap<String, Vec<u8>>,
    },
}

impl FileSource<'_> {
    /// The path that names file `name` in messages.
    pub fn path(&self, name: &str) -> PathBuf {
        match self {
            Self::Folder(folder) => folder.join(name),
            Self::Memory { label, .. } => label.join(name),
        }
    }

    /// Whether file `name` exists.
    pub fn has(&self, name: &str) -> bool {
        match self {
            Self::Folder(folder) => folder.join(name).is_file(),
            Self::Memory { files, .. } => files.contains_key(name),
        }
    }

    /// The bytes of file `name`; a missing file is an error naming it.
    pub fn read(&self, name: &str) -> Result<std::borrow::Cow<'_, [u8]>, LoadError> {
        match self {
            Self::Folder(folder) => {
                let path = folder.join(name);
                std::fs::read(&path)
                    .map(std::borrow::Cow::Owned)
                    .map_err(|source| LoadError::Io { path, source })
            }
            Self::Memory { files, .. } => files
                .get(name)
                .map(|bytes| std::borrow::Cow::Borrowed(bytes.as_slice()))
                .ok_or_else(|| LoadError::Io {
                    path: self.path(name),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "not in the bundle"),
                }),
        }
    }

    /// File `name` parsed as JSON into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, LoadError> {
        let bytes = self.read(name)?;
        serde_json::from_slice(&bytes).map_err(|error| LoadError::Config {
            path: self.path(name),
            reason: error.to_string(),
        })
    }

    /// File `name` as UTF-8 text.
    pub fn text(&self, name: &str) -> Result<String, LoadError> {
        let bytes = self.read(name)?;
        String::from_utf8(bytes.into_owned()).map_err(|error| LoadError::Config {
            path: self.path(name),
            reason: format!("not UTF-8: {error}"),
        })
    }
}

/// Reads and parses a component's `config.json` (or another JSON file) into `T`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|error| LoadError::Config {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(values: &[f32], dtype: Dtype) -> Vec<u8> {
        let bytes: Vec<u8> = match dtype {
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::BF16 => values
                .iter()
                .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
                .collect(),
            _ => unreachable!(),
        };
        let view = safetensors::tensor::TensorView::new(dtype, vec![2, 2], &bytes).unwrap();
        safetensors::serialize([("layer.weight", view)], None).unwrap()
    }

    /// A NaN or an infinity in a weight is an error that names the tensor, file and place, in
    /// any float type; finite weights load.
    #[test]
    fn non_finite_weights_are_refused_by_name() {
        let device = Device::flex();
        for (values, dtype, index) in [
            ([1.0, f32::NAN, 2.0, f32::NAN], Dtype::F32, 1),
            ([1.0, 2.0, f32::INFINITY, 0.0], Dtype::BF16, 2),
        ] {
            let weights =
                Weights::from_bytes("damaged.safetensors", file_with(&values, dtype)).unwrap();
            let error = weights
                .tensor::<2>("layer.weight", [2, 2], &device)
                .unwrap_err();
            assert!(
                matches!(&error, LoadError::NonFinite { name, index: i, .. } if name == "layer.weight" && *i == index),
                "{error}"
            );
            let message = error.to_string();
            assert!(message.contains("damaged.safetensors"), "{message}");
        }
        let fine =
            Weights::from_bytes("fine", file_with(&[1.0, 2.0, 3.0, 4.0], Dtype::F32)).unwrap();
        assert!(fine.tensor::<2>("layer.weight", [2, 2], &device).is_ok());
    }

    /// A fresh initialisation by name and shape: zero biases, unit norm scales, small
    /// embeddings, and weights of standard deviation 1/sqrt(fan_in).
    #[test]
    fn fresh_weights_follow_the_initialisation_rules() {
        let device = Device::flex();
        device.seed(1);
        let fresh = Weights::fresh();
        let values = |tensor: Tensor<2>| tensor.into_data().try_to_vec::<f32>().unwrap();
        let std = |v: &[f32]| {
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt()
        };
        let bias = fresh.tensor("conv.bias", [8], &device).unwrap();
        assert_eq!(bias.into_data().try_to_vec::<f32>().unwrap(), vec![0.0; 8]);
        let scale = fresh.tensor("norm1.weight", [8], &device).unwrap();
        assert_eq!(scale.into_data().try_to_vec::<f32>().unwrap(), vec![1.0; 8]);
        let linear = values(fresh.tensor("to_q.weight", [64, 256], &device).unwrap());
        assert!(
            (std(&linear) - 1.0 / 16.0).abs() < 0.003,
            "{}",
            std(&linear)
        );
        let table = values(
            fresh
                .tensor("token_embedding.weight", [100, 64], &device)
                .unwrap(),
        );
        assert!((std(&table) - 0.02).abs() < 0.002, "{}", std(&table));
        let layer = fresh.linear("proj", 256, 64, true, &device).unwrap();
        assert_eq!(layer.weight.dims(), [256, 64]);
    }
}
