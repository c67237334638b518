//! One explorer's model inside the worker: loading a bundle, the streamed greedy answer and
//! the word maps. Tensors and the model are neither `Send` nor cheap to clone, so they stay
//! here and only what the page shows travels back as messages.

use std::{cell::RefCell, rc::Rc};

use image::RgbImage;
use lavender_core::{
    align::student_maps::Aggregation,
    bundle::BundleFiles,
    explore::{Pick, SequenceAttention, SequenceWord, WordSource},
    maps::normalise::Normalisation,
    vlm::mllama::{
        prompt::Message,
        student::{Mllama, Prepared},
        text::{DecodeSession, Sampler, logits_to_f32},
    },
};

use super::{
    models::{self, Claim, LoadedModel},
    protocol::{Envelope, ExampleInfo, GRID, MapChoice, Reply, WordInfo},
    scope::post,
};
use crate::{
    bundle_source::{Fetched, bundle_from_files, fetch_bundle},
    device::{Backend, Chosen, choose_device},
    js::{self, now_ms},
    limits::{adapter_buffer_limit, check_bundle_fits},
};

/// A finished generation, ready for maps.
pub struct Run {
    pub id: u64,
    pub prepared: Prepared,
    pub attention: SequenceAttention,
    pub words: Vec<SequenceWord>,
}

#[derive(Default)]
pub struct Engine {
    pub explorer: u32,
    /// The model, possibly shared with other explorers ([`super::models`]).
    pub model: Option<Rc<LoadedModel>>,
    pub run: Option<Rc<Run>>,
    /// The page's number of the load it wants now: an older one stops at its next step.
    pub model_generation: u64,
    /// The run the explorer wants now; an older one stops at its next token.
    pub current_run: u64,
    /// Set when the explorer is gone: every task of it stops.
    pub closed: bool,
}

pub type Shared = Rc<RefCell<Engine>>;

fn reply(engine: &Shared, body: Reply) {
    let explorer = engine.borrow().explorer;
    post(Envelope::new(explorer, body));
}

/// The layer / head choice from its id: `mean`, `max` or an index.
pub fn pick_from_id(id: &str) -> Pick {
    match id {
        "max" => Pick::Max,
        _ => id.parse().map(Pick::One).unwrap_or(Pick::Mean),
    }
}

/// Loads a bundle (from `url`, or from picked files) onto the chosen backend.
/// Whether load `load` of `engine` should stop: a newer load, or a closed explorer.
fn superseded(engine: &Shared, load: u64) -> bool {
    let engine = engine.borrow();
    engine.model_generation != load || engine.closed
}

pub async fn load(
    engine: Shared,
    load: u64,
    url: Option<String>,
    files: Vec<web_sys::File>,
    force_cpu: bool,
    max_buffer: Option<u64>,
) {
    {
        let mut engine = engine.borrow_mut();
        engine.model_generation = load;
        engine.current_run += 1;
        engine.model = None;
        engine.run = None;
    }
    let status = |message: String| {
        if !superseded(&engine, load) {
            reply(&engine, Reply::Status { load, message });
        }
    };
    let started = now_ms();
    status("Starting the backend…".into());
    let chosen = choose_device(force_cpu).await;
    if superseded(&engine, load) {
        return;
    }
    reply(
        &engine,
        Reply::Backend {
            load,
            backend: chosen.backend.id().into(),
            reason: chosen.fallback_reason.clone(),
        },
    );
    // The same bundle on the same backend, already loaded (or being loaded) for another
    // explorer on this page, is shared rather than downloaded and built again.
    let permit = match &url {
        Some(url) => {
            let still_wanted = || !superseded(&engine, load);
            match models::claim(models::key(url, force_cpu, max_buffer), still_wanted).await {
                Claim::Shared(model) => {
                    let took_ms = finite(now_ms() - started);
                    let message = format!(
                        "Model loaded from {url} in {took_ms:.0} ms (shared with another \
                         explorer on this page)."
                    );
                    return send_loaded(&engine, load, model, message, took_ms, true);
                }
                Claim::Build(permit) => Some(permit),
                Claim::Abandoned => return,
            }
        }
        None => None,
    };
    // The adapter's buffer cap (WebGPU only): a model with a larger weight is refused before
    // its weights are downloaded (fetched bundles) or before it is built (picked files).
    let buffer_limit = if chosen.backend == Backend::WebGpu {
        max_buffer.or(adapter_buffer_limit().await)
    } else {
        None
    };
    let fits = |files: &BundleFiles| match buffer_limit {
        Some(limit) => check_bundle_fits(files, limit),
        None => Ok(()),
    };
    let fetched = match &url {
        Some(url) => {
            status(format!("Downloading {url}…"));
            let progress_engine = engine.clone();
            fetch_bundle(
                url,
                &move |progress| {
                    if !superseded(&progress_engine, load) {
                        reply(
                            &progress_engine,
                            Reply::Progress {
                                load,
                                done: progress.done,
                                total: progress.total,
                                file: progress.file,
                            },
                        )
                    }
                },
                &fits,
            )
            .await
        }
        None => {
            status("Reading the picked files…".into());
            bundle_from_files(files)
                .await
                .and_then(|picked| fits(&picked.files).map(|()| picked))
        }
    };
    // Not built at all when superseded meanwhile: two models at once may not fit.
    if superseded(&engine, load) {
        return;
    }
    status("Building the model…".into());
    let result = build(&chosen, fetched).await;
    if superseded(&engine, load) {
        return;
    }
    match result {
        Ok((model, cached, dequantized)) => {
            let model = Rc::new(model);
            if let Some(permit) = permit {
                permit.finish(&model);
            }
            let took_ms = finite(now_ms() - started);
            let source = url.unwrap_or_else(|| "local files".into());
            let cache_note = if cached > 0 {
                format!(", {cached} files from the cache")
            } else {
                String::new()
            };
            let dequantized_note = if dequantized > 0 {
                format!(" {dequantized} Q8 weights were expanded to f32 for WebGPU.")
            } else {
                String::new()
            };
            let message = format!(
                "Model loaded from {source} in {took_ms:.0} ms{cache_note}.{dequantized_note}"
            );
            send_loaded(&engine, load, model, message, took_ms, false);
        }
        Err(message) => reply(&engine, Reply::LoadFailed { load, message }),
    }
}

/// Finite, so the reply's JSON parses (serde writes NaN as null).
fn finite(ms: f64) -> f64 {
    if ms.is_finite() { ms } else { 0.0 }
}

/// Gives `engine` the model and tells its explorer, with the bundle's examples.
fn send_loaded(
    engine: &Shared,
    load: u64,
    model: Rc<LoadedModel>,
    status: String,
    took_ms: f64,
    shared: bool,
) {
    let explorer = engine.borrow().explorer;
    let mut message = Envelope::new(
        explorer,
        Reply::Loaded {
            load,
            message: status,
            took_ms,
            map_size: model.map_size,
            examples: model
                .examples
                .iter()
                .map(|(info, _, _)| info.clone())
                .collect(),
            aligner: model.aligner.is_some(),
            shared,
        },
    );
    for (_, image, maps) in &model.examples {
        message.bytes.push(image.clone());
        message.floats.push(maps.clone());
    }
    engine.borrow_mut().model = Some(model);
    post(message);
}

/// The model from verified bundle files, with the number of files served from the cache and
/// of weights dequantized for WebGPU.
async fn build(
    chosen: &Chosen,
    fetched: Result<Fetched, String>,
) -> Result<(LoadedModel, usize, usize), String> {
    let Fetched {
        files,
        manifest,
        cached,
    } = fetched?;
    // Read before the model takes the files.
    let aligner = files
        .aligner(&manifest, &chosen.device)
        .map_err(|error| error.to_string())?;
    let mut examples = Vec::new();
    for example in &manifest.examples {
        // Host values the page draws: read on the CPU, whatever the model's device.
        let maps = files
            .example_maps(example, &burn::tensor::Device::flex())
            .map_err(|error| error.to_string())?;
        let side = maps.side();
        let values = maps.to_values().map_err(|error| error.to_string())?;
        let image = files
            .get(&example.image)
            .ok_or_else(|| format!("the bundle lacks {}", example.image))?
            .to_vec();
        examples.push((
            ExampleInfo {
                id: example.id.clone(),
                caption: example.caption.clone(),
                words: maps.words,
                side,
            },
            image,
            values,
        ));
    }
    let (student, dequantized) = if chosen.backend == Backend::WebGpu {
        // Loaded and dequantized on the CPU, then copied: WebGPU kernels cannot read 8-bit
        // weights (see `Mllama::dequantized`). The download stays Q8; the GPU holds f32 (the
        // buffer-limit check in `load` already assumes f32).
        let student = Mllama::from_bundle(files, &burn::tensor::Device::flex())
            .map_err(|error| error.to_string())?;
        let (student, count) = student.dequantized();
        (student.into_device(&chosen.device), count)
    } else {
        let student =
            Mllama::from_bundle(files, &chosen.device).map_err(|error| error.to_string())?;
        (student, 0)
    };
    let model = LoadedModel {
        student,
        aligner,
        map_size: manifest.grid.map_size,
        examples,
    };
    Ok((model, cached, dequantized))
}

/// Whether run `id` of `engine` should stop: a newer run, a new model, or a closed explorer.
fn stale(engine: &Shared, id: u64) -> bool {
    let engine = engine.borrow();
    engine.current_run != id || engine.closed
}

/// Generates the answer greedily, streaming it, then captures the attention and sends the
/// words and the maps for `choice`.
pub async fn run(
    engine: Shared,
    id: u64,
    prompt: String,
    max_new_tokens: usize,
    image: RgbImage,
    choice: MapChoice,
) {
    let model = {
        let mut engine = engine.borrow_mut();
        engine.current_run = id;
        engine.run = None;
        engine.model.clone()
    };
    let Some(model) = model else {
        return reply(
            &engine,
            Reply::RunFailed {
                run: id,
                message: "load a model first".into(),
            },
        );
    };
    match generate(&engine, id, &model.student, &image, &prompt, max_new_tokens).await {
        Ok(true) => {
            if let Err(message) = send_maps(&engine, id, choice.clone()).await
                && !stale(&engine, id)
            {
                reply(
                    &engine,
                    Reply::MapsFailed {
                        run: id,
                        choice,
                        message,
                    },
                );
            }
        }
        Ok(false) => {}
        Err(message) => {
            if !stale(&engine, id) {
                reply(&engine, Reply::RunFailed { run: id, message });
            }
        }
    }
}

/// `Ok(false)` when the run was superseded.
async fn generate(
    engine: &Shared,
    id: u64,
    student: &Mllama,
    image: &RgbImage,
    prompt: &str,
    max_new_tokens: usize,
) -> Result<bool, String> {
    let started = now_ms();
    let prepared = student
        .prepare(image, &[Message::user_with_image(prompt)], true)
        .map_err(|error| error.to_string())?;
    let text = &student.model.config.text_config;
    let room = text
        .max_position_embeddings
        .saturating_sub(prepared.inputs.input_ids.len());
    let max_new_tokens = max_new_tokens.min(room);
    let stops = text.stop_tokens();
    let mut session = DecodeSession::start(
        &student.model.text,
        &prepared.inputs.input_ids,
        Some(prepared.states.clone()),
        Some(prepared.mask.clone()),
        Sampler::greedy(),
    );
    let mut tokens: Vec<u32> = Vec::new();
    let mut first_token_at = None;
    while tokens.len() < max_new_tokens {
        let data = session
            .next_logits()
            .into_data_async()
            .await
            .map_err(|error| format!("reading the logits failed: {error:?}"))?;
        let next = session.choose(&logits_to_f32(data));
        tokens.push(next);
        first_token_at.get_or_insert_with(now_ms);
        let answer: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|t| !stops.contains(t))
            .collect();
        reply(
            engine,
            Reply::Token {
                run: id,
                token_ids: tokens.clone(),
                answer: student.prompt.decode(&answer, true).unwrap_or_default(),
            },
        );
        if stops.contains(&next) || tokens.len() == max_new_tokens {
            break;
        }
        // Back to the worker's event loop, so a newer request (another run, a close) is seen.
        js::sleep_ms(0).await;
        if stale(engine, id) {
            return Ok(false);
        }
        session.push(next);
    }
    let finished = now_ms();
    drop(session);
    // The last read-back awaited: a newer request may have come meanwhile.
    if stale(engine, id) {
        return Ok(false);
    }
    let answer: Vec<u32> = tokens
        .iter()
        .copied()
        .filter(|t| !stops.contains(t))
        .collect();
    let words = student.sequence_words(&prepared, prompt, &answer);
    let attention = student.sequence_attention(&prepared, &answer);
    let (first_token_ms, tokens_per_s) = match first_token_at {
        Some(first) => {
            let rest = tokens.len().saturating_sub(1);
            (
                Some(first - started),
                (rest > 0).then(|| rest as f64 / ((finished - first) / 1000.0)),
            )
        }
        None => (None, None),
    };
    // Finite, so the reply's JSON parses (serde writes NaN and infinities as null).
    let (first_token_ms, tokens_per_s) = (
        first_token_ms.filter(|v| v.is_finite()),
        tokens_per_s.filter(|v| v.is_finite()),
    );
    reply(
        engine,
        Reply::Answered {
            run: id,
            first_token_ms,
            tokens_per_s,
            layers: attention.layers.iter().map(|(layer, _)| *layer).collect(),
            heads: attention.heads(),
            words: words
                .iter()
                .map(|word| WordInfo {
                    text: word.text.clone(),
                    answer: word.source == WordSource::Answer,
                    positions: word.positions.clone(),
                })
                .collect(),
        },
    );
    if stale(engine, id) {
        return Ok(false);
    }
    engine.borrow_mut().run = Some(Rc::new(Run {
        id,
        prepared,
        attention,
        words,
    }));
    Ok(true)
}

/// Computes, reads back and sends the maps of run `id` for `choice`.
pub async fn send_maps(engine: &Shared, id: u64, choice: MapChoice) -> Result<(), String> {
    let (model, run) = {
        let engine = engine.borrow();
        (engine.model.clone(), engine.run.clone())
    };
    let (Some(model), Some(run)) = (model, run) else {
        return Ok(());
    };
    let (student, aligner, size) = (&model.student, model.aligner.as_ref(), model.map_size);
    if run.id != id {
        return Ok(());
    }
    let normalisation: Normalisation = choice.normalisation.parse()?;
    let maps = if choice.aggregation == GRID {
        student.sequence_word_maps(
            &run.prepared,
            &run.attention,
            &run.words,
            pick_from_id(&choice.layer),
            pick_from_id(&choice.head),
            normalisation,
            size,
        )
    } else {
        let aggregation: Aggregation = choice
            .aggregation
            .parse()
            .map_err(|_| format!("unknown aggregation `{}`", choice.aggregation))?;
        student
            .sequence_word_maps_aggregated(
                &run.prepared,
                &run.attention,
                &run.words,
                aligner,
                aggregation,
                normalisation,
                size,
            )
            .map_err(|error| error.to_string())?
    };
    send_values(
        engine,
        id,
        maps,
        Reply::Maps {
            run: id,
            size,
            choice,
        },
    )
    .await
}

/// Reads `maps` back from the device and sends them with `reply` (as its `floats[0]`), unless
/// run `id` went stale meanwhile.
async fn send_values(
    engine: &Shared,
    id: u64,
    maps: burn::tensor::Tensor<3>,
    reply: Reply,
) -> Result<(), String> {
    let values: Vec<f32> = maps
        .into_data_async()
        .await
        .map_err(|error| format!("reading the maps failed: {error:?}"))?
        .convert::<f32>()
        .try_to_vec()
        .map_err(|error| format!("reading the maps failed: {error:?}"))?;
    if stale(engine, id) {
        return Ok(());
    }
    let explorer = engine.borrow().explorer;
    let mut message = Envelope::new(explorer, reply);
    message.floats.push(values);
    post(message);
    Ok(())
}

/// Computes, reads back and sends word `word`'s map of run `id` for every cross-attention
/// layer and head.
pub async fn send_head_maps(engine: &Shared, id: u64, word: usize) -> Result<(), String> {
    let (model, run) = {
        let engine = engine.borrow();
        (engine.model.clone(), engine.run.clone())
    };
    let (Some(model), Some(run)) = (model, run) else {
        return Ok(());
    };
    if run.id != id {
        return Ok(());
    }
    if word >= run.words.len() {
        return Err(format!(
            "no word {word}: the run has {} words",
            run.words.len()
        ));
    }
    let (layers, heads, size) = (
        run.attention.layers.len(),
        run.attention.heads(),
        model.map_size,
    );
    let maps = model
        .student
        .word_head_maps(&run.prepared, &run.attention, &run.words[word], size)
        .map_err(|error| error.to_string())?;
    send_values(
        engine,
        id,
        maps,
        Reply::HeadMaps {
            run: id,
            word,
            layers,
            heads,
            size,
        },
    )
    .await
}
