//! Gradient clipping as PyTorch's `torch.nn.utils.clip_grad_norm_`: one L2 norm over every
//! gradient of the step together, and all of them scaled by the same factor. (Burn's own
//! clipping, `--clip-norm`, clips each parameter's gradient on its own.)

use burn::{
    module::{Module, ModuleVisitor, Param},
    optim::GradientsParams,
    tensor::Tensor,
};

/// PyTorch's epsilon in the clipping factor `max_norm / (total + 1e-6)`.
const CLIP_EPS: f64 = 1e-6;

/// `grads` (those of `module`'s parameters) scaled by `min(1, max_norm / (total + 1e-6))`,
/// `total` the L2 norm of all of them together.
pub fn clip_grad_norm<M: Module>(
    module: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> anyhow::Result<GradientsParams> {
    let total = total_norm(module, &grads)?;
    let factor = (max_norm / (total + CLIP_EPS)).min(1.0);
    Ok(scale(module, grads, factor))
}

/// The L2 norm of every gradient in `grads` together, in f64 from per-tensor f32 sums.
pub fn total_norm<M: Module>(module: &M, grads: &GradientsParams) -> anyhow::Result<f64> {
    struct SquaredSums<'g> {
        grads: &'g GradientsParams,
        sums: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for SquaredSums<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.get::<D>(param.id) {
                self.sums
                    .push(grad.cast(burn::tensor::DType::F32).powi_scalar(2).sum());
            }
        }
    }
    let mut visitor = SquaredSums {
        grads,
        sums: Vec::new(),
    };
    module.visit(&mut visitor);
    if visitor.sums.is_empty() {
        return Ok(0.0);
    }
    let sums: Vec<f32> = Tensor::cat(visitor.sums, 0)
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .map_err(|error| anyhow::anyhow!("reading the gradient norms: {error:?}"))?;
    Ok(sums.iter().map(|&s| f64::from(s)).sum::<f64>().sqrt())
}

fn scale<M: Module>(module: &M, mut grads: GradientsParams, factor: f64) -> GradientsParams {
    struct Scale<'g> {
        grads: &'g mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, grad.mul_scalar(self.factor));
            }
        }
    }
    module.visit(&mut Scale {
        grads: &mut grads,
        factor,
    });
    grads
}

#[cfg(test)]
mod tests {
    use burn::{
        module::{Module, ParamId},
        nn::{Linear, LinearConfig},
        tensor::Device,
    };

    use super::*;

    #[derive(Module, Debug)]
    struct Two {
        first: Linear,
        second: Linear,
    }

    fn grads_of(module: &Two, values: [[f32; 2]; 2]) -> GradientsParams {
        let device = Device::flex();
        let mut grads = GradientsParams::new();
        grads.register(
            module.first.weight.id,
            Tensor::<2>::from_floats([values[0]], &device),
        );
        grads.register(
            module.second.weight.id,
            Tensor::<2>::from_floats([values[1]], &device),
        );
        grads
    }

    fn values(grads: &GradientsParams, id: ParamId) -> Vec<f32> {
        grads
            .get::<2>(id)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap()
    }

    /// Gradients (3, 0) and (0, 4): total norm 5, so `max_norm` 1 scales both by 1 / 5 (plus
    /// PyTorch's epsilon), and `max_norm` 10 leaves them as they are.
    #[test]
    fn one_norm_over_all_gradients_scales_them_all() {
        let device = Device::flex();
        let module = Two {
            first: LinearConfig::new(1, 2).with_bias(false).init(&device),
            second: LinearConfig::new(1, 2).with_bias(false).init(&device),
        };
        let grads = grads_of(&module, [[3.0, 0.0], [0.0, 4.0]]);
        assert!((total_norm(&module, &grads).unwrap() - 5.0).abs() < 1e-9);
        let clipped = clip_grad_norm(&module, grads, 1.0).unwrap();
        let factor = (1.0 / (5.0 + CLIP_EPS)) as f32;
        assert_eq!(
            values(&clipped, module.first.weight.id),
            [3.0 * factor, 0.0]
        );
        assert_eq!(
            values(&clipped, module.second.weight.id),
            [0.0, 4.0 * factor]
        );

        let grads = grads_of(&module, [[3.0, 0.0], [0.0, 4.0]]);
        let kept = clip_grad_norm(&module, grads, 10.0).unwrap();
        assert_eq!(values(&kept, module.first.weight.id), [3.0, 0.0]);
        assert_eq!(values(&kept, module.second.weight.id), [0.0, 4.0]);
    }
}
