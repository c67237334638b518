//! One explorer's model inside the worker: loading a bundle, the streamed greedy answer and
//! the word maps. Tensors and the model are neither `Send` nor cheap to clone, so they stay
//! here and only what the page shows travels back as messages.

use std::{cell::RefCell, rc::Rc};

use image::RgbImage;
use lavender_core::{
    align::{aligner::Aligner, student_maps::Aggregation},
    bundle::WEIGHTS_FILE,
    explore::{Pick, SequenceAttention, SequenceWord, WordSource},
    vlm::mllama::{
        config::MllamaConfig,
        prompt::Message,
        student::{Mllama, Prepared},
        text::{DecodeSession, Sampler, logits_to_f32},
    },
    weights::FileSource,
};

use super::{
    protocol::{Envelope, ExampleInfo, GRID, MapChoice, Reply, WordInfo},
    scope::post,
};
use crate::{
    bundle_source::{Fetched, bundle_from_files, fetch_bundle},
    device::{Backend, Chosen, choose_device},
    js::{self, now_ms},
    limits::{adapter_buffer_limit, check_fits},
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
    pub student: Option<Rc<Mllama>>,
    /// The bundle's trained Aligner, for the Aligner aggregations.
    pub aligner: Option<Rc<Aligner>>,
    /// Side of the maps, from the bundle's manifest.
    pub map_size: usize,
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
        engine.student = None;
        engine.aligner = None;
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
    let fetched = match &url {
        Some(url) => {
            status(format!("Downloading {url}…"));
            let progress_engine = engine.clone();
            fetch_bundle(url, &move |progress| {
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
            })
            .await
        }
        None => {
            status("Reading the picked files…".into());
            bundle_from_files(files).await
        }
    };
    // Not built at all when superseded meanwhile: two models at once may not fit.
    if superseded(&engine, load) {
        return;
    }
    status("Building the model…".into());
    let result = build(&chosen, fetched, max_buffer).await;
    if superseded(&engine, load) {
        return;
    }
    match result {
        Ok(Built {
            student,
            aligner,
            map_size,
            cached,
            dequantized,
            examples,
        }) => {
            // Finite, so the reply's JSON parses (serde writes NaN as null).
            let took_ms = Some(now_ms() - started)
                .filter(|ms| ms.is_finite())
                .unwrap_or(0.0);
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
            {
                let mut engine = engine.borrow_mut();
                engine.student = Some(Rc::new(student));
                engine.aligner = aligner.map(Rc::new);
                engine.map_size = map_size;
            }
            let explorer = engine.borrow().explorer;
            let has_aligner = engine.borrow().aligner.is_some();
            let mut message = Envelope::new(
                explorer,
                Reply::Loaded {
                    load,
                    message: format!(
                        "Model loaded from {source} in {took_ms:.0} ms{cache_note}.{dequantized_note}"
                    ),
                    took_ms,
                    map_size,
                    examples: Vec::new(),
                    aligner: has_aligner,
                },
            );
            for (info, image, maps) in examples {
                if let Reply::Loaded { examples, .. } = &mut message.body {
                    examples.push(info);
                }
                message.bytes.push(image);
                message.floats.push(maps);
            }
            post(message);
        }
        Err(message) => reply(&engine, Reply::LoadFailed { load, message }),
    }
}

/// The model from verified bundle files: (model, map side, files from the cache, weights
/// dequantized for WebGPU).
async fn build(
    chosen: &Chosen,
    fetched: Result<Fetched, String>,
    max_buffer: Option<u64>,
) -> Result<Built, String> {
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
    let config = {
        let mut small = std::collections::BTreeMap::new();
        for (name, bytes) in files.iter().filter(|(name, _)| *name != WEIGHTS_FILE) {
            small.insert(name.to_string(), bytes.to_vec());
        }
        MllamaConfig::from_source(&FileSource::Memory {
            label: files.label(),
            files: &small,
        })
        .map_err(|error| error.to_string())?
    };
    if chosen.backend == Backend::WebGpu
        && let Some(limit) = max_buffer.or(adapter_buffer_limit().await)
    {
        check_fits(&config, limit)?;
    }
    let (student, dequantized) = if chosen.backend == Backend::WebGpu {
        // Loaded and dequantized on the CPU, then copied: WebGPU kernels cannot read 8-bit
        // weights (see `Mllama::dequantized`). The download stays Q8; the GPU holds f32 (the
        // buffer-limit check above already assumes f32).
        let student = Mllama::from_bundle(files, &burn::tensor::Device::flex())
            .map_err(|error| error.to_string())?;
        let (student, count) = student.dequantized();
        (student.into_device(&chosen.device), count)
    } else {
        let student =
            Mllama::from_bundle(files, &chosen.device).map_err(|error| error.to_string())?;
        (student, 0)
    };
    Ok(Built {
        student,
        aligner,
        map_size: manifest.grid.map_size,
        cached,
        dequantized,
        examples,
    })
}

/// A loaded model and what the page needs to know of its bundle.
struct Built {
    student: Mllama,
    aligner: Option<Aligner>,
    map_size: usize,
    /// Files served from the cache.
    cached: usize,
    /// Weights dequantized for WebGPU.
    dequantized: usize,
    /// Each example: what it is, its image (PNG) and its teacher maps.
    examples: Vec<(ExampleInfo, Vec<u8>, Vec<f32>)>,
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
    let student = {
        let mut engine = engine.borrow_mut();
        engine.current_run = id;
        engine.run = None;
        engine.student.clone()
    };
    let Some(student) = student else {
        return reply(
            &engine,
            Reply::RunFailed {
                run: id,
                message: "load a model first".into(),
            },
        );
    };
    match generate(&engine, id, &student, &image, &prompt, max_new_tokens).await {
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
    let (student, aligner, run, size) = {
        let engine = engine.borrow();
        (
            engine.student.clone(),
            engine.aligner.clone(),
            engine.run.clone(),
            engine.map_size,
        )
    };
    let (Some(student), Some(run)) = (student, run) else {
        return Ok(());
    };
    if run.id != id {
        return Ok(());
    }
    let maps = if choice.aggregation == GRID {
        student.sequence_word_maps(
            &run.prepared,
            &run.attention,
            &run.words,
            pick_from_id(&choice.layer),
            pick_from_id(&choice.head),
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
                aligner.as_deref(),
                aggregation,
                size,
            )
            .map_err(|error| error.to_string())?
    };
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
    let mut message = Envelope::new(
        explorer,
        Reply::Maps {
            run: id,
            size,
            choice,
        },
    );
    message.floats.push(values);
    post(message);
    Ok(())
}
