//! One Lavender training step, independent of where data and checkpoints live: the trainable
//! module (the student, LoRA'd or whole, and the Aligner), a sample's loss, and the optimiser
//! step over an accumulated batch. Plain SFT is the same path with `lambda = 0`, so the two
//! are comparable step for step.

use anyhow::Context;
use burn::{
    module::Module,
    optim::{GradientsAccumulator, GradientsParams},
    tensor::{Device, Tensor},
};
use image::RgbImage;
use lavender_core::{
    align::{
        aligner::Aligner,
        loss::{LavenderLoss, LossConfig, lavender_loss},
        student::Supervision,
    },
    data::{Conversation, Role},
    maps::WordMaps,
    vlm::mllama::{prompt::Message, student::Mllama},
};

/// Everything the optimiser updates: the student's parameters (only the LoRA factors are
/// trainable after `apply_lora`) and the Aligner's.
#[derive(Module, Debug)]
pub struct Trainable {
    pub student: Mllama,
    pub aligner: Aligner,
}

/// Checkpoint filter for a LoRA run: the factors and the Aligner; the frozen base is
/// reloaded from the model folder.
pub const LORA_CHECKPOINT_FILTER: &str = r"(\.lora\.(a|b)$)|(^aligner\.)";

/// The numbers of one sample's loss.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossValues {
    pub ce: f64,
    pub align: f64,
    pub total: f64,
    pub matched: usize,
    /// Whether the sample had teacher maps.
    pub has_maps: bool,
}

impl LossValues {
    fn read(loss: &LavenderLoss, has_maps: bool) -> anyhow::Result<Self> {
        let value = |tensor: &Tensor<1>, what: &str| -> anyhow::Result<f64> {
            let values = tensor
                .clone()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|error| anyhow::anyhow!("cannot read the {what}: {error:?}"))?;
            Ok(f64::from(values[0]))
        };
        Ok(Self {
            ce: value(&loss.ce, "cross-entropy")?,
            align: value(&loss.align, "alignment loss")?,
            total: value(&loss.total, "total loss")?,
            matched: loss.matched.len(),
            has_maps,
        })
    }
}

/// The chat messages of a conversation, the image in its first user turn.
pub fn messages(sample: &Conversation) -> Vec<Message> {
    let image_turn = sample.image_turn();
    sample
        .turns
        .iter()
        .enumerate()
        .map(|(index, turn)| {
            if Some(index) == image_turn {
                Message::user_with_image(turn.content.clone())
            } else {
                let role = match turn.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                Message::text(role, turn.content.clone())
            }
        })
        .collect()
}

/// Teacher maps as the loss wants them, `[words, side, side]` on `device`; `None` (no maps for
/// this sample) gives no words, so only the cross-entropy counts.
pub fn teacher_word_maps(
    maps: Option<WordMaps>,
    map_size: usize,
    device: &Device,
) -> anyhow::Result<WordMaps> {
    match maps {
        Some(maps) if !maps.words.is_empty() => {
            anyhow::ensure!(
                maps.side() == map_size,
                "the teacher maps are {0}x{0}, the student's are {map_size}x{map_size}: \
                 extract with --map-size {map_size} or train with --map-size {0}",
                maps.side()
            );
            Ok(maps.to_device(device))
        }
        _ => Ok(WordMaps::empty(map_size, device)),
    }
}

/// The number of text tokens of a sample's whole conversation (its chat template rendered and
/// tokenized), for `--group-by-length`.
pub fn text_length(student: &Mllama, sample: &Conversation) -> anyhow::Result<usize> {
    let rendered = student
        .prompt
        .render(&messages(sample), false)
        .with_context(|| format!("sample {}", sample.id))?;
    let encoding = student
        .prompt
        .tokenizer()
        .encode(rendered.as_str(), false)
        .map_err(|error| anyhow::anyhow!("sample {}: cannot tokenize: {error}", sample.id))?;
    Ok(encoding.len())
}

/// How a sample becomes the student's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SampleSettings {
    /// Which tokens the cross-entropy learns.
    pub supervision: Supervision,
    /// Squash the image to one tile first (`--image-fit squash`).
    pub squash: bool,
}

/// One sample of a micro-batch: the conversation, its image and the teacher's maps on the
/// device that computes it.
pub struct BatchSample<'a> {
    pub sample: &'a Conversation,
    pub image: &'a RgbImage,
    pub teacher: &'a WordMaps,
}

/// The losses of `samples` through `trainable` (graphs to differentiate on an autodiff device),
/// from one forward pass over the right-padded batch (`vlm::mllama::batch`): each sample's loss
/// is the one it has alone.
pub fn micro_batch_losses(
    trainable: &Trainable,
    samples: &[BatchSample<'_>],
    config: &LossConfig,
    inputs: &SampleSettings,
) -> anyhow::Result<Vec<(LavenderLoss, LossValues)>> {
    let student = &trainable.student;
    let mut processed = Vec::with_capacity(samples.len());
    for item in samples {
        let squashed;
        let image = if inputs.squash {
            squashed = student.processor.squash(item.image);
            &squashed
        } else {
            item.image
        };
        processed.push(
            student
                .process_supervised(image, &messages(item.sample), inputs.supervision)
                .with_context(|| format!("sample {}", item.sample.id))?,
        );
    }
    let refs: Vec<_> = processed.iter().map(|(inputs, _)| inputs).collect();
    let outputs = student.forward_batch_with_attention(&refs);
    let aligner = matches!(
        config.aggregation,
        lavender_core::align::student_maps::Aggregation::AlignerPerLayer
            | lavender_core::align::student_maps::Aggregation::MeanFirst
    )
    .then_some(&trainable.aligner);
    samples
        .iter()
        .zip(processed.iter().zip(outputs))
        .map(|(item, ((_, labels), (logits, attention)))| {
            let loss = lavender_loss(
                logits,
                &attention,
                labels,
                item.teacher,
                aligner,
                student.prompt.tokenizer(),
                config,
            )
            .with_context(|| format!("the loss of sample {}", item.sample.id))?;
            let values = LossValues::read(&loss, !item.teacher.words.is_empty())?;
            Ok((loss, values))
        })
        .collect()
}

/// The loss of one sample through `trainable`: a micro-batch of one.
pub fn sample_loss(
    trainable: &Trainable,
    sample: &Conversation,
    image: &RgbImage,
    teacher: &WordMaps,
    config: &LossConfig,
    inputs: &SampleSettings,
) -> anyhow::Result<(LavenderLoss, LossValues)> {
    let one = BatchSample {
        sample,
        image,
        teacher,
    };
    let mut losses = micro_batch_losses(trainable, &[one], config, inputs)?;
    Ok(losses.remove(0))
}

/// Gradients of a batch, accumulated micro-batch by micro-batch (each micro-batch's graph is
/// freed after its backward pass, so memory grows with the micro-batch, not the batch). The
/// optimiser step over them is [`DataParallel::step`](super::parallel::DataParallel::step), one
/// device or several.
pub struct BatchGradients {
    accumulator: GradientsAccumulator<Trainable>,
    samples: usize,
}

impl BatchGradients {
    pub fn new() -> Self {
        Self {
            accumulator: GradientsAccumulator::new(),
            samples: 0,
        }
    }

    /// Back-propagates the sum of the `losses` over `batch` (the global batch: the step's
    /// gradient is the mean of the per-sample gradients) and adds its gradients.
    pub fn add(&mut self, trainable: &Trainable, losses: &[&LavenderLoss], batch: usize) {
        let Some(total) = losses
            .iter()
            .map(|loss| loss.total.clone())
            .reduce(|sum, total| sum + total)
        else {
            return;
        };
        let grads = total.div_scalar(batch as f64).backward();
        let grads = GradientsParams::from_grads(grads, trainable);
        self.accumulator.accumulate(trainable, grads);
        self.samples += losses.len();
    }

    /// The accumulated gradients, `None` when no sample was added.
    pub fn into_grads(mut self) -> Option<GradientsParams> {
        (self.samples > 0).then(|| self.accumulator.grads())
    }
}
