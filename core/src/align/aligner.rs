//! The Aligner: a small convolutional net that turns the student's per-head attention maps of
//! one token into one map, learned so that it can be compared with the teacher's (the
//! reference's `DiffagFovProjection`, `docs/method.md`, "The Aligner"). Heads are input channels:
//! `depth` x (conv3x3 without bias -> instance norm without affine -> activation), then a 1x1
//! conv with bias to one channel; the `deep` variant has no norm after its 3rd and 4th convs.
//!
//! Tensor names (safetensors, PyTorch layout `[out, in, k, k]`): `convs.{i}.weight` for the
//! 3x3 convs in order, `head.weight` and `head.bias` for the 1x1 conv; the same names as the
//! module's record, and as `tests/fixtures/make_lavender_fixtures.py` writes them.

use std::collections::HashMap;

use burn::{
    config::Config,
    module::{Module, Param},
    nn::{
        Initializer, InstanceNorm, InstanceNormConfig, PaddingConfig2d,
        conv::{Conv2d, Conv2dConfig},
    },
    tensor::{
        Device, Tensor, TensorData,
        activation::{leaky_relu, relu6},
    },
};

use crate::weights::{LoadError, Weights};

/// The reference's `xatn_act="leakyrelu"` slope.
pub const LEAKY_RELU_SLOPE: f64 = 0.1;
/// The reference initialises the Aligner with HF's `_init_weights`: conv weights N(0, 0.02).
pub const INIT_STD: f64 = 0.02;
const NORM_EPS: f64 = 1e-5;

/// How many 3x3 convs (the reference's `conv_deep`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum AlignerDepth {
    /// 2 convs (`light`).
    Light,
    /// 3 convs (`sim`, the default: the paper's "3-layer ConvNet").
    Sim,
    /// 5 convs (`deep`); the 3rd and 4th have no instance norm after them, as the
    /// reference's `conv_deep="deep"` branch.
    Deep,
}

impl AlignerDepth {
    pub const ALL: [Self; 3] = [Self::Light, Self::Sim, Self::Deep];

    pub fn convs(self) -> usize {
        match self {
            Self::Light => 2,
            Self::Sim => 3,
            Self::Deep => 5,
        }
    }

    /// Whether the 3x3 conv at `index` (from 0) is followed by the instance norm: every one,
    /// except the 3rd and 4th of [`AlignerDepth::Deep`] (the activation follows all of them).
    pub fn normalises(self, index: usize) -> bool {
        !(self == Self::Deep && matches!(index, 2 | 3))
    }

    /// The depth with `convs` 3x3 convs, if one has that many: how a saved Aligner's depth is
    /// read off its tensors.
    pub fn from_convs(convs: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|depth| depth.convs() == convs)
    }

    /// The stable name (`train --aligner-depth`, bundle manifests): `light`, `sim`, `deep`.
    pub fn id(self) -> &'static str {
        match self {
            Self::Light => "light",
            Self::Sim => "sim",
            Self::Deep => "deep",
        }
    }

    /// The depth named `id` ([`AlignerDepth::id`]).
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|depth| depth.id() == id)
    }
}

/// The activation after each instance norm (the reference's `xatn_act`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum AlignerActivation {
    /// `min(max(x, 0), 6)`: the default (the reference's `relu` is ReLU6).
    Relu6,
    /// Leaky ReLU with slope [`LEAKY_RELU_SLOPE`].
    LeakyRelu,
}

impl AlignerActivation {
    pub const ALL: [Self; 2] = [Self::Relu6, Self::LeakyRelu];

    /// The stable name (bundle manifests, `export-web --aligner-activation`): `relu6`,
    /// `leaky-relu`.
    pub fn id(self) -> &'static str {
        match self {
            Self::Relu6 => "relu6",
            Self::LeakyRelu => "leaky-relu",
        }
    }

    /// The activation named `id` ([`AlignerActivation::id`]).
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|activation| activation.id() == id)
    }
}

/// The Aligner's shape: `heads` input channels (one per cross-attention head of the student),
/// `depth` 3x3 convs of `hidden` channels, one output channel. `init` builds an [`Aligner`].
#[derive(Config, Debug)]
pub struct AlignerConfig {
    /// Input channels: the student's cross-attention heads.
    pub heads: usize,
    /// Channels of the 3x3 convs (the reference's 32).
    #[config(default = 32)]
    pub hidden: usize,
    #[config(default = "AlignerDepth::Sim")]
    pub depth: AlignerDepth,
    #[config(default = "AlignerActivation::Relu6")]
    pub activation: AlignerActivation,
}

/// The learned map of one text position from its per-head attention maps:
/// `[n, heads, s, s]` -> `[n, 1, s, s]` ([`Aligner::forward`]), shared by every layer and
/// position and trained with the student.
#[derive(Module, Debug)]
pub struct Aligner {
    /// The 3x3 convs, `[hidden, in, 3, 3]` each, no bias.
    pub convs: Vec<Conv2d>,
    /// Instance norm (no affine, no running statistics), shared: it has no parameters.
    pub norm: InstanceNorm,
    /// The 1x1 conv to one channel, `[1, hidden, 1, 1]` with bias `[1]`.
    pub head: Conv2d,
    #[module(skip)]
    pub activation: AlignerActivation,
}

impl AlignerConfig {
    /// A fresh Aligner: conv weights N(0, [`INIT_STD`]), the head's bias 0.
    pub fn init(&self, device: &Device) -> Aligner {
        let initializer = Initializer::Normal {
            mean: 0.0,
            std: INIT_STD,
        };
        let mut channels = self.heads;
        let convs = (0..self.depth.convs())
            .map(|_| {
                let conv = Conv2dConfig::new([channels, self.hidden], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(false)
                    .with_initializer(initializer.clone())
                    .init(device);
                channels = self.hidden;
                conv
            })
            .collect();
        let mut head = Conv2dConfig::new([self.hidden, 1], [1, 1])
            .with_initializer(initializer)
            .init(device);
        head.bias = Some(Param::from_tensor(Tensor::zeros([1], device)));
        Aligner {
            convs,
            norm: self.norm(device),
            head,
            activation: self.activation,
        }
    }

    fn norm(&self, device: &Device) -> InstanceNorm {
        InstanceNormConfig::new(self.hidden)
            .with_affine(false)
            .with_epsilon(NORM_EPS)
            .init(device)
    }

    /// An Aligner with the tensors of safetensors `bytes` (names in the module docs); `label`
    /// names the source in errors.
    pub fn load(&self, label: &str, bytes: Vec<u8>, device: &Device) -> Result<Aligner, LoadError> {
        self.load_weights(&Weights::from_bytes(label, bytes)?, "", device)
    }

    /// An Aligner with the tensors `{prefix}convs.0.weight`, ... of `weights`.
    pub fn load_weights(
        &self,
        weights: &Weights,
        prefix: &str,
        device: &Device,
    ) -> Result<Aligner, LoadError> {
        let mut channels = self.heads;
        let mut convs = Vec::with_capacity(self.depth.convs());
        for index in 0..self.depth.convs() {
            let weight = weights.tensor(
                &format!("{prefix}convs.{index}.weight"),
                [self.hidden, channels, 3, 3],
                device,
            )?;
            let mut conv = Conv2dConfig::new([channels, self.hidden], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device);
            conv.weight = Param::from_tensor(weight);
            convs.push(conv);
            channels = self.hidden;
        }
        let mut head = Conv2dConfig::new([self.hidden, 1], [1, 1]).init(device);
        head.weight = Param::from_tensor(weights.tensor(
            &format!("{prefix}head.weight"),
            [1, self.hidden, 1, 1],
            device,
        )?);
        head.bias = Some(Param::from_tensor(weights.tensor(
            &format!("{prefix}head.bias"),
            [1],
            device,
        )?));
        Ok(Aligner {
            convs,
            norm: self.norm(device),
            head,
            activation: self.activation,
        })
    }
}

impl Aligner {
    /// The input channels it takes: the heads of the attention it was trained on.
    pub fn heads(&self) -> usize {
        self.convs
            .first()
            .map_or(0, |conv| conv.weight.val().dims()[1])
    }

    /// `[n, heads, s, s]` per-head maps -> `[n, 1, s, s]`.
    pub fn forward(&self, maps: Tensor<4>) -> Tensor<4> {
        let depth = AlignerDepth::from_convs(self.convs.len()).unwrap_or(AlignerDepth::Sim);
        let mut x = maps;
        for (index, conv) in self.convs.iter().enumerate() {
            let convolved = conv.forward(x);
            let normed = if depth.normalises(index) {
                self.norm.forward(convolved)
            } else {
                convolved
            };
            x = match self.activation {
                AlignerActivation::Relu6 => relu6(normed),
                AlignerActivation::LeakyRelu => leaky_relu(normed, LEAKY_RELU_SLOPE),
            };
        }
        self.head.forward(x)
    }

    /// The parameters by name (module docs), in order: the convs, then the head.
    pub fn named_parameters(&self) -> Vec<(String, Tensor<4>)> {
        let mut named: Vec<(String, Tensor<4>)> = self
            .convs
            .iter()
            .enumerate()
            .map(|(i, conv)| (format!("convs.{i}.weight"), conv.weight.val()))
            .collect();
        named.push(("head.weight".into(), self.head.weight.val()));
        if let Some(bias) = &self.head.bias {
            named.push(("head.bias".into(), bias.val().reshape([1, 1, 1, 1])));
        }
        named
    }

    /// The gradients of the parameters by name, shaped as stored (`head.bias` is `[1]`);
    /// parameters without a gradient are left out.
    pub fn gradients(&self, grads: &burn::tensor::Gradients) -> HashMap<String, Tensor<4>> {
        let mut found = HashMap::new();
        for (index, conv) in self.convs.iter().enumerate() {
            if let Some(grad) = conv.weight.grad(grads) {
                found.insert(format!("convs.{index}.weight"), grad);
            }
        }
        if let Some(grad) = self.head.weight.grad(grads) {
            found.insert("head.weight".into(), grad);
        }
        if let Some(grad) = self.head.bias.as_ref().and_then(|bias| bias.grad(grads)) {
            found.insert("head.bias".into(), grad.reshape([1, 1, 1, 1]));
        }
        found
    }

    /// The parameters as safetensors bytes (f32, names in the module docs).
    pub fn to_safetensors(&self) -> Result<Vec<u8>, safetensors::SafeTensorError> {
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .named_parameters()
            .into_iter()
            .map(|(name, tensor)| {
                let shape = if name == "head.bias" {
                    vec![1]
                } else {
                    tensor.dims().to_vec()
                };
                let data: TensorData = tensor.into_data().convert::<f32>();
                let bytes = data.as_bytes().to_vec();
                (name, shape, bytes)
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .map(|view| (name.clone(), view))
            })
            .collect::<Result<_, _>>()?;
        safetensors::serialize(views, None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::{assert_close, device, lavender_golden};

    /// The fixture's Aligner: 4 heads, 8 hidden, 3 convs.
    pub(crate) fn fixture_aligner(device: &Device) -> Aligner {
        AlignerConfig::new(4)
            .with_hidden(8)
            .load_weights(&lavender_golden(), "aligner.", device)
            .unwrap()
    }

    #[test]
    fn forward_matches_torch() {
        let golden = lavender_golden();
        let device = device();
        let input = golden
            .tensor::<4>("aligner_input", [5, 4, 32, 32], &device)
            .unwrap();
        let expected = golden
            .tensor::<4>("aligner_output", [5, 1, 32, 32], &device)
            .unwrap();
        let output = fixture_aligner(&device).forward(input);
        assert_close("aligner_output", output, expected, 1e-4);
    }

    /// The `deep` variant (5 convs, no norm after the 3rd and 4th) on the same input.
    #[test]
    fn deep_forward_matches_torch() {
        let golden = lavender_golden();
        let device = device();
        let input = golden
            .tensor::<4>("aligner_input", [5, 4, 32, 32], &device)
            .unwrap();
        let expected = golden
            .tensor::<4>("aligner_deep_output", [5, 1, 32, 32], &device)
            .unwrap();
        let aligner = AlignerConfig::new(4)
            .with_hidden(8)
            .with_depth(AlignerDepth::Deep)
            .load_weights(&golden, "aligner_deep.", &device)
            .unwrap();
        assert_close(
            "aligner_deep_output",
            aligner.forward(input),
            expected,
            1e-4,
        );
        assert!(!AlignerDepth::Deep.normalises(2) && !AlignerDepth::Deep.normalises(3));
        assert!((0..3).all(|i| AlignerDepth::Sim.normalises(i)));
    }

    #[test]
    fn defaults_and_parameter_count_follow_the_reference() {
        let aligner = AlignerConfig::new(32).init(&device());
        // 3 x 32 x 32 x 9 conv weights + 32 head weights + 1 bias (`docs/method.md`, "The
        // Aligner").
        assert_eq!(aligner.num_params(), 27_681);
        assert_eq!(aligner.activation, AlignerActivation::Relu6);
        let head_bias: Vec<f32> = aligner
            .head
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(head_bias, vec![0.0]);
        let light = AlignerConfig::new(4)
            .with_hidden(8)
            .with_depth(AlignerDepth::Deep)
            .init(&device());
        assert_eq!(light.convs.len(), 5);
        assert_eq!(light.heads(), 4);
        let out = light.forward(Tensor::ones([2, 4, 6, 6], &device()));
        assert_eq!(out.dims(), [2, 1, 6, 6]);
    }

    #[test]
    fn depths_and_activations_have_stable_ids() {
        for depth in AlignerDepth::ALL {
            assert_eq!(AlignerDepth::from_id(depth.id()), Some(depth));
            assert_eq!(AlignerDepth::from_convs(depth.convs()), Some(depth));
        }
        assert_eq!(AlignerDepth::from_convs(4), None);
        for activation in AlignerActivation::ALL {
            assert_eq!(
                AlignerActivation::from_id(activation.id()),
                Some(activation)
            );
        }
        assert_eq!(AlignerActivation::from_id("relu"), None);
    }

    #[test]
    fn safetensors_round_trip() {
        let config = AlignerConfig::new(4).with_hidden(8);
        let aligner = config.init(&device());
        let bytes = aligner.to_safetensors().unwrap();
        let back = config.load("aligner", bytes, &device()).unwrap();
        for ((name, a), (_, b)) in aligner
            .named_parameters()
            .into_iter()
            .zip(back.named_parameters())
        {
            assert_close(&name, b, a, 0.0);
        }
        let wrong = AlignerConfig::new(5).with_hidden(8);
        assert!(
            wrong
                .load("aligner", aligner.to_safetensors().unwrap(), &device())
                .is_err()
        );
    }
}
