//! Data-parallel training over several devices of one machine (`lavender train --devices`).
//!
//! Every device holds a replica of the [`Trainable`] module. A step's global batch (`--batch`
//! samples, the same whatever the device count) is cut into contiguous shares, one per device;
//! each replica back-propagates its share in micro-batches of `--micro-batch` samples, each a
//! padded batch through one forward pass (each loss divided by the global batch, so the sum of
//! all gradients is the batch mean), the replicas' gradients are summed on
//! the main device (the first one listed), the optimiser steps there once, and the updated
//! trainable parameters (LoRA factors and Aligner; everything with `--full`) are copied back to
//! the replicas. The result is the single-device step's up to the order of the float sums.
//!
//! Why not Burn's own multi-device machinery (0.22.1):
//! * `burn-train`'s `ExecutionStrategy::ddp` only drives a `Learner` (its `TrainStep` over a
//!   `DataLoader`), not this loop with its per-sample accumulation, resumable data order and
//!   checkpoints.
//! * `burn::tensor::distributed::all_reduce` (NCCL through CubeCL) is implemented by CubeCL's
//!   CUDA runtime only: Flex (the CPU) is not a distributed backend and a collective on wgpu
//!   panics inside CubeCL (see `burn-backend-extension`'s catalog). It would leave the CPU path
//!   untestable and wgpu broken, and it needs `libnccl` at run time. The gradient hook of its
//!   sync server (`register_sync_parameters`) all-reduces inside every backward pass, i.e. once
//!   per sample here, with equal sample counts on every device.
//! * What is sent between devices is small for a LoRA run (the factors and the Aligner, a few
//!   MB at 11B size) next to a sample's forward and backward pass, so a reduce to one device
//!   with `GradientsParams::to_device` and a broadcast with `Tensor::to_device` cost little
//!   and work on every backend. A `--full` run sends every parameter both ways each step.
//!
//! Replicas run on scoped threads, one per extra device (the main device's share runs on the
//! calling thread): in Burn 0.22 `Device` and our modules are `Send + Sync` and gradients are
//! `Send` (asserted below), and autodiff graphs belong to their tensors, so concurrent backward
//! passes on different replicas do not interact. [`Module::fork`] gives each replica its own
//! autodiff leaves, also when two replicas share a device (`--devices cpu,cpu`, which is how
//! this is tested without GPUs). On CUDA each thread gets its own CubeCL stream; the
//! gradients and parameters that cross devices are moved with `to_device`, which CubeCL
//! orders after the work that wrote them. That path compiles here but has not been run on
//! several GPUs.

use anyhow::Context;
use burn::{
    module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId},
    optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer},
    tensor::{Device, Tensor, container::TensorContainer},
};
use image::RgbImage;
use lavender_core::{align::loss::LossConfig, data::Conversation, maps::WordMaps};

use super::{
    clip::clip_grad_norm,
    trainer::{
        BatchGradients, BatchSample, LossValues, SampleSettings, Trainable, micro_batch_losses,
        teacher_word_maps,
    },
};

// The replica threads borrow modules and return gradients: this is what makes that sound.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Trainable>();
    send_sync::<Device>();
    send::<GradientsParams>();
};

/// One training sample, read from disk on the calling thread; its teacher maps become a tensor
/// on the device that processes it.
pub struct SampleInput<'a> {
    pub sample: &'a Conversation,
    pub image: RgbImage,
    pub maps: Option<WordMaps>,
}

/// What a replica needs besides its module and samples.
pub struct StepSettings<'a> {
    pub loss: &'a LossConfig,
    pub map_size: usize,
    /// How a sample becomes the student's input.
    pub sample: SampleSettings,
    /// Samples per optimiser step, over all devices: each loss is divided by it.
    pub batch: usize,
    /// Samples per forward and backward pass on a device (0: the device's whole share).
    pub micro_batch: usize,
    /// The L2 norm all gradients together are clipped to before the optimiser step, as
    /// PyTorch's `clip_grad_norm_` (0: no clipping).
    pub clip_grad_norm: f64,
    /// Called with every sample's loss values before its backward pass; an error (a non-finite
    /// loss) stops the step before the optimiser runs.
    pub check: &'a (dyn Fn(&Conversation, &LossValues) -> anyhow::Result<()> + Sync),
}

/// The main module, its replicas on the other devices, and the step over all of them.
pub struct DataParallel {
    main: Trainable,
    main_device: Device,
    /// `(device, replica)` for every device after the first.
    replicas: Vec<(Device, Trainable)>,
}

impl DataParallel {
    /// Replicates `main` (which lives on `devices[0]`) onto the other `devices`. Call it after a
    /// checkpoint is loaded into `main`: the replicas take its parameter ids and values.
    pub fn new(main: Trainable, devices: &[Device]) -> anyhow::Result<Self> {
        let (main_device, others) = devices
            .split_first()
            .context("data-parallel training needs at least one device")?;
        let replicas = others
            .iter()
            .map(|device| (device.clone(), main.clone().fork(device)))
            .collect();
        Ok(Self {
            main,
            main_device: main_device.clone(),
            replicas,
        })
    }

    /// The number of devices, the main one included.
    pub fn devices(&self) -> usize {
        self.replicas.len() + 1
    }

    /// The module on the main device: the one to evaluate, checkpoint and export.
    pub fn main(&self) -> &Trainable {
        &self.main
    }

    /// One optimiser step over `inputs` (the whole global batch, in data order) at learning
    /// rate `lr`. Returns every sample's loss values, in the order of `inputs`.
    ///
    /// The samples are cut into contiguous shares, the first to the main device, sizes
    /// differing by at most one; a device whose share is empty (fewer samples than devices)
    /// contributes nothing.
    pub fn step(
        &mut self,
        inputs: Vec<SampleInput<'_>>,
        settings: &StepSettings<'_>,
        optimizer: &mut ModuleOptimizer,
        lr: f64,
    ) -> anyhow::Result<Vec<LossValues>> {
        let mut shares = split_shares(inputs, self.devices()).into_iter();
        let main_share = shares.next().unwrap_or_default();
        let main = &self.main;
        let main_device = &self.main_device;

        let (main_result, replica_results) = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .replicas
                .iter()
                .zip(shares)
                .enumerate()
                .map(|(index, ((device, replica), share))| {
                    std::thread::Builder::new()
                        .name(format!("lavender-replica-{}", index + 1))
                        .spawn_scoped(scope, move || {
                            share_gradients(replica, device, share, settings)
                        })
                        .context("cannot start a replica thread")
                })
                .collect();
            // The main device's share runs here while the replicas run theirs.
            let main_result = share_gradients(main, main_device, main_share, settings);
            let replica_results: Vec<_> = handles
                .into_iter()
                .map(|handle| {
                    handle?.join().unwrap_or_else(|panic| {
                        Err(anyhow::anyhow!(
                            "a replica panicked: {}",
                            panic
                                .downcast_ref::<&str>()
                                .map(|text| text.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default()
                        ))
                    })
                })
                .collect();
            (main_result, replica_results)
        });

        // Sum on the main device, in device order (the samples' order within each share).
        let grads_device = self.main_device.clone().without_autodiff();
        let mut accumulator = GradientsAccumulator::<Trainable>::new();
        let mut values = Vec::new();
        let mut any = false;
        for (device, result) in std::iter::once(main_result)
            .chain(replica_results)
            .enumerate()
        {
            // Only with several devices does it help to say which one; Burn's device type
            // (`Device<Autodiff { .. }>`) tells a user nothing.
            let (grads, share_values) = result.with_context(|| match device {
                _ if self.replicas.is_empty() => "the training step failed".to_string(),
                0 => "on the main device (the first of --devices)".to_string(),
                n => format!("on device {} of --devices", n + 1),
            })?;
            values.extend(share_values);
            if let Some(grads) = grads {
                let grads = if device == 0 {
                    grads
                } else {
                    grads.to_device(&grads_device, &self.main)
                };
                accumulator.accumulate(&self.main, grads);
                any = true;
            }
        }
        if !any {
            return Ok(values);
        }

        let mut grads = accumulator.grads();
        if settings.clip_grad_norm > 0.0 {
            grads = clip_grad_norm(&self.main, grads, settings.clip_grad_norm)?;
        }
        self.main = optimizer.step(lr, self.main.clone(), grads);
        self.broadcast();
        Ok(values)
    }

    /// Copies the main module's trainable parameters onto every replica, as fresh autodiff
    /// leaves. The frozen base never changes, so it is not sent again.
    fn broadcast(&mut self) {
        if self.replicas.is_empty() {
            return;
        }
        let mut collect = TrainableParams::default();
        self.main.visit(&mut collect);
        for (device, replica) in &mut self.replicas {
            let mut update = UpdateReplica {
                params: &collect,
                device,
            };
            *replica = replica.clone().map(&mut update);
        }
    }
}

/// Cuts `inputs` into `parts` contiguous shares whose sizes differ by at most one, the larger
/// ones first.
fn split_shares<T>(inputs: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let parts = parts.max(1);
    let (base, extra) = (inputs.len() / parts, inputs.len() % parts);
    let mut inputs = inputs.into_iter();
    (0..parts)
        .map(|part| {
            let size = base + usize::from(part < extra);
            inputs.by_ref().take(size).collect()
        })
        .collect()
}

/// The summed gradients (`None` for an empty share) and loss values of one device's share.
fn share_gradients(
    trainable: &Trainable,
    device: &Device,
    mut share: Vec<SampleInput<'_>>,
    settings: &StepSettings<'_>,
) -> anyhow::Result<(Option<GradientsParams>, Vec<LossValues>)> {
    let mut batch = BatchGradients::new();
    let mut values = Vec::with_capacity(share.len());
    let teachers = share
        .iter_mut()
        .map(|input| teacher_word_maps(input.maps.take(), settings.map_size, device))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let micro_batch = match settings.micro_batch {
        0 => share.len().max(1),
        size => size,
    };
    for (inputs, teachers) in share.chunks(micro_batch).zip(teachers.chunks(micro_batch)) {
        let samples: Vec<BatchSample<'_>> = inputs
            .iter()
            .zip(teachers)
            .map(|(input, teacher)| BatchSample {
                sample: input.sample,
                image: &input.image,
                teacher,
            })
            .collect();
        let losses = micro_batch_losses(trainable, &samples, settings.loss, &settings.sample)?;
        for (input, (_, sample_values)) in inputs.iter().zip(&losses) {
            (settings.check)(input.sample, sample_values)?;
        }
        let graphs: Vec<_> = losses.iter().map(|(loss, _)| loss).collect();
        batch.add(trainable, &graphs, settings.batch);
        values.extend(losses.into_iter().map(|(_, values)| values));
    }
    Ok((batch.into_grads(), values))
}

/// The trainable (gradient-requiring) float parameters of a module, by id.
#[derive(Default)]
struct TrainableParams {
    tensors: TensorContainer<ParamId>,
}

impl ModuleVisitor for TrainableParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        // The stored value, detached: the copy must not reach back into the main graph.
        self.tensors.register(param.id, param.base().detach());
    }
}

/// Replaces a replica's trainable parameters by the main module's, moved to its device.
struct UpdateReplica<'a> {
    params: &'a TrainableParams,
    device: &'a Device,
}

impl ModuleMapper for UpdateReplica<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(updated) = self.params.tensors.get::<Tensor<D>>(&param.id) else {
            return param;
        };
        let require_grad = param.is_require_grad();
        let updated = updated.to_device(self.device).detach();
        // As `fork` does: a fresh leaf, so each replica's backward pass has its own graph.
        param.map(|_| {
            if require_grad {
                updated.require_grad()
            } else {
                updated
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use burn::{
        grad_clipping::GradientClippingConfig,
        optim::{SgdConfig, momentum::MomentumConfig},
    };
    use lavender_core::{
        adapters::lora::{LoraSettings, apply_lora},
        align::{aligner::AlignerConfig, student::Supervision},
        data::ImageSource,
        vlm::mllama::student::Mllama,
    };

    use super::*;

    #[test]
    fn shares_are_contiguous_and_balanced() {
        let shares = split_shares((0..7).collect(), 3);
        assert_eq!(shares, vec![vec![0, 1, 2], vec![3, 4], vec![5, 6]]);
        let shares = split_shares(vec![0, 1], 3);
        assert_eq!(shares, vec![vec![0], vec![1], vec![]]);
        let shares = split_shares((0..4).collect(), 1);
        assert_eq!(shares, vec![vec![0, 1, 2, 3]]);
    }

    /// The tiny fixture student with LoRA factors on q/v and an Aligner, on `device`.
    fn tiny_trainable(device: &Device) -> Trainable {
        let folder =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mllama-tiny");
        let settings = LoraSettings {
            r: 4,
            alpha: 8.0,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
        };
        let student = Mllama::load(&folder, None, device)
            .expect("the tiny fixture loads")
            .try_map_model(|model| apply_lora(model, &settings))
            .expect("LoRA applies");
        let heads = student.model.config.text_config.num_attention_heads;
        let aligner = AlignerConfig::new(heads).init(device);
        Trainable { student, aligner }
    }

    fn samples() -> Vec<Conversation> {
        [
            "a red ball in the blue sky",
            "a yellow box on the green grass",
            "a blue ball and an orange ball",
            "a small house under the sun",
            "the sun over a calm sea",
        ]
        .iter()
        .enumerate()
        .map(|(index, caption)| {
            let image = ImageSource::File(PathBuf::from(format!("{index}.png")));
            Conversation::caption(format!("sample-{index}"), image, caption)
        })
        .collect()
    }

    /// Deterministic, distinct images and teacher maps per sample.
    fn input(index: usize, sample: &Conversation, map_size: usize) -> SampleInput<'_> {
        let index = index as u32;
        let image = RgbImage::from_fn(40, 32, |x, y| {
            image::Rgb([
                ((x * 7 + index * 31) % 256) as u8,
                ((y * 5 + index * 17) % 256) as u8,
                ((x + y + index * 3) % 256) as u8,
            ])
        });
        let words: Vec<String> = sample.turns[1]
            .content
            .split_whitespace()
            .filter(|word| word.len() > 2)
            .map(str::to_string)
            .collect();
        let maps = (0..words.len() * map_size * map_size)
            .map(|i| ((i as u32 * 13 + index * 7) % 29) as f32 / 28.0)
            .collect();
        SampleInput {
            sample,
            image,
            maps: Some(WordMaps::from_values(words, map_size, maps, &Device::flex()).unwrap()),
        }
    }

    /// The tensor `name` of `weights` as `[first dimension, the rest]` (`[1, n]` for a vector).
    fn flat(weights: &lavender_core::weights::Weights, name: &str, device: &Device) -> Tensor<2> {
        let shape = weights.shape(name).unwrap().to_vec();
        let count: usize = shape.iter().product();
        let values: Tensor<1> = match shape.as_slice() {
            [n] => weights.tensor(name, [*n], device).unwrap(),
            [a, b] => weights
                .tensor::<2>(name, [*a, *b], device)
                .unwrap()
                .reshape([count]),
            [a, b, c, d] => weights
                .tensor::<4>(name, [*a, *b, *c, *d], device)
                .unwrap()
                .reshape([count]),
            other => panic!("{name}: unexpected shape {other:?}"),
        };
        let rows = if shape.len() == 1 { 1 } else { shape[0] };
        values.reshape([rows, count / rows])
    }

    fn fixture_dir(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
    }

    /// `lavender train`'s defaults against PyTorch + peft (tests/fixtures/make_training_fixtures.py):
    /// from the fixture adapter and Aligner, two AdamW steps (eps 1e-8, no weight decay) over a
    /// global batch of two samples whose image is squashed to one tile, without clipping and
    /// with `--clip-grad-norm 1`. Every LoRA factor and Aligner weight after the two steps is
    /// within 1e-4 of torch's (relative, over each tensor), and what the two steps changed
    /// within 2e-3. Measured: 8.8e-6 and 5.7e-4 unclipped, 2.6e-6 and 1.5e-4 clipped. Each of
    /// the old defaults fails the weights check: Burn's eps 1e-5 by 2.7e-4, no clipping in the
    /// clipped case by 8.0e-3, the image not squashed by 9.9e-2.
    #[test]
    fn two_steps_match_pytorch_and_peft() {
        use lavender_core::{
            adapters::lora::{export_peft, load_peft_factors},
            data::{Role, Turn},
            vlm::mllama::model::released_key,
            weights::Weights,
        };

        let golden =
            Weights::from_files(&[fixture_dir("training-tiny/golden.safetensors")]).unwrap();
        let bytes = std::fs::read(fixture_dir("training-tiny/golden.safetensors")).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let header = header.metadata().clone().unwrap();
        let metadata = |key: &str| -> String { header[key].clone() };
        let pairs: Vec<(String, String)> = serde_json::from_str(&metadata("samples")).unwrap();
        let words: Vec<String> = serde_json::from_str(&metadata("teacher_words")).unwrap();
        let lr: f64 = metadata("lr").parse().unwrap();
        let max_norm: f64 = metadata("clip_max_norm").parse().unwrap();
        let device = Device::flex().autodiff();
        let cpu = Device::flex();
        let image = image::open(fixture_dir("mllama-tiny/image.png"))
            .unwrap()
            .to_rgb8();
        let conversations: Vec<Conversation> = pairs
            .iter()
            .enumerate()
            .map(|(index, (question, answer))| Conversation {
                id: format!("sample-{index}"),
                teacher_id: format!("sample-{index}"),
                image: ImageSource::File(PathBuf::from("image.png")),
                turns: vec![
                    Turn::new(Role::User, question),
                    Turn::new(Role::Assistant, answer),
                ],
                category: None,
            })
            .collect();

        let start = || {
            let student = Mllama::load(&fixture_dir("mllama-tiny"), None, &device)
                .unwrap()
                .try_map_model(|model| {
                    let model = apply_lora(model, &LoraSettings::default())?;
                    load_peft_factors(model, &fixture_dir("mllama-tiny/adapter"))
                })
                .unwrap();
            let aligner = AlignerConfig::new(4)
                .with_hidden(8)
                .load_weights(
                    &Weights::from_files(&[fixture_dir("lavender-tiny/golden.safetensors")])
                        .unwrap(),
                    "aligner.",
                    &device,
                )
                .unwrap();
            Trainable { student, aligner }
        };
        // Every trained tensor by torch's name (PEFT's released module names, `aligner.*`),
        // flattened to `[rows, columns]`, sorted by name.
        let named = |trainable: &Trainable| -> Vec<(String, Tensor<2>)> {
            let export =
                export_peft(&trainable.student.model, &LoraSettings::default(), None).unwrap();
            let factors = Weights::from_bytes("export", export.adapter_model_safetensors).unwrap();
            let aligner =
                Weights::from_bytes("aligner", trainable.aligner.to_safetensors().unwrap())
                    .unwrap();
            let mut named: Vec<(String, Tensor<2>)> = factors
                .names()
                .map(|name| {
                    let module = name.strip_prefix("base_model.model.").unwrap();
                    let key = format!("base_model.model.{}", released_key(module));
                    (key, flat(&factors, name, &cpu))
                })
                .chain(
                    aligner
                        .names()
                        .map(|name| (format!("aligner.{name}"), flat(&aligner, name, &cpu))),
                )
                .collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named
        };
        let relative = |actual: &Tensor<2>, expected: &Tensor<2>| -> f32 {
            let difference = (actual.clone() - expected.clone())
                .powi_scalar(2)
                .sum()
                .sqrt();
            let size = expected.clone().powi_scalar(2).sum().sqrt();
            (difference / size).into_scalar::<f32>()
        };

        let before = named(&start());
        for (case, clip) in [("plain", 0.0), ("clipped", max_norm)] {
            let loss = LossConfig::default();
            let check = |_: &Conversation, values: &LossValues| {
                anyhow::ensure!(values.total.is_finite(), "non-finite loss");
                Ok(())
            };
            let settings = StepSettings {
                loss: &loss,
                map_size: 32,
                // The new defaults: answers supervised, the image squashed to one tile.
                sample: SampleSettings {
                    supervision: Supervision::Answers,
                    squash: true,
                },
                batch: conversations.len(),
                micro_batch: 0,
                clip_grad_norm: clip,
                check: &check,
            };
            // What a new run builds: PyTorch's eps, no per-parameter clipping.
            let mut optimizer = super::super::config::adamw(1e-8, 0.0);
            let mut parallel = DataParallel::new(start(), std::slice::from_ref(&device)).unwrap();
            for _ in 0..2 {
                let inputs = conversations
                    .iter()
                    .enumerate()
                    .map(|(index, sample)| {
                        let maps = golden
                            .tensor::<3>(
                                &format!("teacher_maps.{index}"),
                                [words.len(), 32, 32],
                                &cpu,
                            )
                            .unwrap();
                        SampleInput {
                            sample,
                            image: image.clone(),
                            maps: Some(WordMaps {
                                words: words.clone(),
                                maps,
                            }),
                        }
                    })
                    .collect();
                parallel
                    .step(inputs, &settings, &mut optimizer, lr)
                    .unwrap();
            }
            let after = named(parallel.main());
            assert_eq!(
                after.len(),
                20 * 2 + 5,
                "{case}: every factor and Aligner tensor"
            );
            let mut worst = (0f32, 0f32);
            for ((name, ours), (_, initial)) in after.iter().zip(&before) {
                let expected = flat(&golden, &format!("{case}.{name}"), &cpu);
                let change = |values: &Tensor<2>| (values.clone() - initial.clone()).abs().max();
                if name == "aligner.head.bias" {
                    // The min-max normalisation after the Aligner cancels any constant, so the
                    // bias has no gradient but float noise, and Adam moves it by up to the
                    // learning rate in a direction of that noise, on either side: check only
                    // that it moved no more than two steps can.
                    for moved in [change(ours), change(&expected)] {
                        assert!(moved.into_scalar::<f32>() <= 2.0 * lr as f32 * 1.01);
                    }
                    continue;
                }
                let error = relative(ours, &expected);
                let moved = relative(
                    &(ours.clone() - initial.clone()),
                    &(expected.clone() - initial.clone()),
                );
                worst = (worst.0.max(error), worst.1.max(moved));
                assert!(error <= 1e-4, "{case} {name}: relative error {error}");
                assert!(
                    moved <= 2e-3,
                    "{case} {name}: the update's relative error is {moved}"
                );
            }
            eprintln!(
                "{case}: worst relative error {:.2e} (weights), {:.2e} (updates)",
                worst.0, worst.1
            );
        }
    }

    /// Every trainable parameter's values, by id.
    fn trainable_values(module: &Trainable) -> Vec<(ParamId, Vec<f32>)> {
        struct Collect(Vec<(ParamId, Vec<f32>)>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if param.is_require_grad() {
                    let values = param
                        .base()
                        .into_data()
                        .convert::<f32>()
                        .try_to_vec::<f32>()
                        .unwrap();
                    self.0.push((param.id, values));
                }
            }
        }
        let mut collect = Collect(Vec::new());
        module.visit(&mut collect);
        collect.0.sort_by_key(|(id, _)| *id);
        collect.0
    }

    /// Two steps of `batch` samples over `devices` with a fresh `optimizer()` at rate `lr`:
    /// the trainable parameters afterwards and the mean loss of each step.
    fn train(
        initial: &Trainable,
        devices: &[Device],
        samples: &[Conversation],
        batch: usize,
        optimizer: impl Fn() -> ModuleOptimizer,
        lr: f64,
    ) -> (Vec<(ParamId, Vec<f32>)>, Vec<f64>) {
        let map_size = 8;
        let loss = LossConfig {
            map_size,
            ..LossConfig::default()
        };
        let check = |_: &Conversation, values: &LossValues| {
            anyhow::ensure!(values.total.is_finite(), "non-finite loss");
            Ok(())
        };
        let settings = StepSettings {
            loss: &loss,
            map_size,
            sample: SampleSettings::default(),
            batch,
            micro_batch: 1,
            clip_grad_norm: 0.0,
            check: &check,
        };
        let mut optimizer = optimizer();
        let mut parallel = DataParallel::new(initial.clone(), devices).unwrap();
        let mut losses = Vec::new();
        for step in 0..2 {
            let inputs = (0..batch)
                .map(|k| {
                    let index = (step * batch + k) % samples.len();
                    input(index, &samples[index], map_size)
                })
                .collect();
            let values = parallel
                .step(inputs, &settings, &mut optimizer, lr)
                .unwrap();
            assert_eq!(values.len(), batch);
            assert!(values.iter().any(|v| v.matched > 0), "no word was matched");
            losses.push(values.iter().map(|v| v.total).sum::<f64>() / batch as f64);
        }
        (trainable_values(parallel.main()), losses)
    }

    /// One CPU device against two CPU replicas (3 + 2 samples of a global batch of 5).
    ///
    /// The optimiser is SGD with momentum (state carried between the steps, as AdamW's is)
    /// and gradient clipping: its update is linear in the summed gradient, so the two runs
    /// differ only by the order of the float sums, and each parameter is compared within 1e-6
    /// of its tensor's largest value. (AdamW divides by the gradient's RMS, which turns the
    /// rounding noise of a gradient that cancels to ~0 — the Aligner's output bias: the maps
    /// are normalised, so a constant offset has no true gradient — into steps of about the
    /// learning rate, so it cannot be compared this tightly; the optimiser runs on the main
    /// device only anyway, identically in both runs.)
    #[test]
    fn two_replicas_match_one_device() {
        let device = Device::flex().autodiff();
        device.seed(7);
        let initial = tiny_trainable(&device);
        let samples = samples();
        let batch = 5;
        let sgd = || {
            SgdConfig::new()
                .with_momentum(Some(MomentumConfig::new()))
                .with_gradient_clipping(Some(GradientClippingConfig::Norm(1.0)))
                .init()
        };
        let lr = 0.05;

        let one_device = std::slice::from_ref(&device);
        let two_devices = [device.clone(), device.clone()];
        let (one, one_losses) = train(&initial, one_device, &samples, batch, sgd, lr);
        let (two, two_losses) = train(&initial, &two_devices, &samples, batch, sgd, lr);

        let initial_values = trainable_values(&initial);
        assert_eq!(one.len(), initial_values.len());
        assert_eq!(two.len(), initial_values.len());
        assert!(!one.is_empty());
        let mut moved = 0;
        for ((id, a), ((id2, b), (_, start))) in one.iter().zip(two.iter().zip(&initial_values)) {
            assert_eq!(id, id2);
            moved += usize::from(a != start);
            let scale = a.iter().fold(1e-2f32, |max, x| max.max(x.abs()));
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-6 * scale,
                    "parameter {id}: {x} on one device, {y} on two (tensor scale {scale})"
                );
            }
        }
        // Not all: the LoRA `a` factors get no gradient while `b` is still zero (step 1), and
        // at step 2 it is of order lr², which can be below their last bit.
        assert!(
            moved * 4 >= one.len() * 3,
            "only {moved} of {} parameters moved",
            one.len()
        );
        for (a, b) in one_losses.iter().zip(&two_losses) {
            assert!(
                (a - b).abs() <= 1e-6 * a.abs(),
                "loss {a} on one device, {b} on two"
            );
        }
    }
}
