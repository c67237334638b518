//! The explorer: load a bundle (URL or local files), pick an image (file, drop or URL), ask a
//! question, watch the greedy answer stream in, then click any word of the prompt or answer
//! to see where the student looked for it, per cross-attention layer and head.
//!
//! Inference runs on the main thread and returns to the event loop between tokens (and
//! awaits every read-back), so the page stays responsive for small models; see README.md for
//! why there is no Web Worker yet. Every failure is shown in the explorer (`.lx-error`).

use std::{cell::RefCell, rc::Rc};

use lavender_core::{
    vlm::mllama::{
        bundle::WEIGHTS_FILE,
        config::MllamaConfig,
        explore::{Pick, WordSource},
        prompt::Message,
        student::Mllama,
        text::{DecodeSession, Sampler, logits_to_f32},
    },
    weights::FileSource,
};
use leptos::{html, prelude::*, task::spawn_local};
use wasm_bindgen::JsCast;

use crate::{
    bundle_source::{Fetched, Progress, bundle_from_files, fetch_bundle, fetch_bytes},
    dequantize::dequantize_weights,
    device::{Backend, choose_device},
    engine::{Engine, Run},
    js::{self, now_ms},
    limits::{adapter_buffer_limit, check_fits},
    overlay::{Colormap, blend, display_image, paint},
};

/// What the page or the embedding script asks for.
#[derive(Debug, Clone, Default)]
pub struct ExplorerOptions {
    /// A bundle folder URL, relative to the page; `example/` when absent.
    pub model: Option<String>,
    /// An image URL to start with.
    pub image: Option<String>,
    /// The question to start with.
    pub prompt: Option<String>,
    /// Use the CPU even where WebGPU is available.
    pub force_cpu: bool,
    pub max_new_tokens: usize,
}

pub const DEFAULT_MAX_NEW_TOKENS: usize = 48;
const DEFAULT_PROMPT: &str = "What is in the picture?";

type Shared = Rc<RefCell<Engine>>;

/// The signals the UI shows; `Copy`, so every handler can hold them.
#[derive(Clone, Copy)]
struct Ui {
    backend: RwSignal<Option<(Backend, Option<String>)>>,
    model_state: RwSignal<&'static str>,
    model_status: RwSignal<String>,
    progress: RwSignal<Option<Progress>>,
    error: RwSignal<Option<(&'static str, String)>>,
    image_name: RwSignal<Option<String>>,
    run_state: RwSignal<&'static str>,
    answer: RwSignal<String>,
    token_ids: RwSignal<Vec<u32>>,
    words: RwSignal<Vec<(String, WordSource)>>,
    selected: RwSignal<Option<usize>>,
    layers: RwSignal<Vec<usize>>,
    heads: RwSignal<usize>,
    layer: RwSignal<Pick>,
    head: RwSignal<Pick>,
    opacity: RwSignal<f32>,
    colormap: RwSignal<Colormap>,
    maps_version: RwSignal<u64>,
    timings: RwSignal<Timings>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Timings {
    load_ms: Option<f64>,
    first_token_ms: Option<f64>,
    tokens_per_s: Option<f64>,
}

impl Ui {
    fn new() -> Self {
        Self {
            backend: RwSignal::new(None),
            model_state: RwSignal::new("idle"),
            model_status: RwSignal::new("No model loaded.".into()),
            progress: RwSignal::new(None),
            error: RwSignal::new(None),
            image_name: RwSignal::new(None),
            run_state: RwSignal::new("idle"),
            answer: RwSignal::new(String::new()),
            token_ids: RwSignal::new(Vec::new()),
            words: RwSignal::new(Vec::new()),
            selected: RwSignal::new(None),
            layers: RwSignal::new(Vec::new()),
            heads: RwSignal::new(0),
            layer: RwSignal::new(Pick::Mean),
            head: RwSignal::new(Pick::Mean),
            opacity: RwSignal::new(0.6),
            colormap: RwSignal::new(Colormap::Inferno),
            maps_version: RwSignal::new(0),
            timings: RwSignal::new(Timings::default()),
        }
    }

    fn fail(&self, kind: &'static str, message: impl Into<String>) {
        self.error.set(Some((kind, message.into())));
    }
}

fn pick_id(pick: Pick) -> String {
    match pick {
        Pick::Mean => "mean".into(),
        Pick::One(index) => index.to_string(),
    }
}

fn pick_from_id(id: &str) -> Pick {
    id.parse().map(Pick::One).unwrap_or(Pick::Mean)
}

/// Loads a bundle (from `url`, or from picked files) onto the chosen backend.
async fn load_model(
    engine: Shared,
    ui: Ui,
    force_cpu: bool,
    url: Option<String>,
    picked: Vec<web_sys::File>,
) {
    let generation = {
        let mut engine = engine.borrow_mut();
        engine.generation += 1;
        engine.model_generation += 1;
        engine.student = None;
        engine.run = None;
        engine.maps = None;
        engine.model_generation
    };
    ui.error.set(None);
    ui.model_state.set("loading");
    ui.words.set(Vec::new());
    ui.selected.set(None);
    let started = now_ms();
    // Bound first: a borrow in the match would be held across the await below.
    let known = engine.borrow().chosen.clone();
    let chosen = match known {
        Some(chosen) => chosen,
        None => {
            ui.model_status.set("Starting the backend…".into());
            choose_device(force_cpu).await
        }
    };
    ui.backend
        .set(Some((chosen.backend, chosen.fallback_reason.clone())));
    engine.borrow_mut().chosen = Some(chosen.clone());

    let fetched = match &url {
        Some(url) => {
            ui.model_status.set(format!("Downloading {url}…"));
            fetch_bundle(url, &|progress| ui.progress.set(Some(progress))).await
        }
        None => {
            ui.model_status.set("Reading the picked files…".into());
            bundle_from_files(picked).await
        }
    };
    let result = async {
        let Fetched {
            files,
            manifest,
            cached,
        } = fetched?;
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
        if chosen.backend == Backend::WebGpu {
            // `?max-buffer=BYTES` imitates a smaller adapter (to see this check at work).
            let simulated = js::query_param("max-buffer").and_then(|v| v.parse::<u64>().ok());
            if let Some(limit) = simulated.or(adapter_buffer_limit().await) {
                check_fits(&config, limit)?;
            }
        }
        ui.model_status.set("Building the model…".into());
        js::sleep_ms(0).await;
        let (student, dequantized) = if chosen.backend == Backend::WebGpu {
            // Loaded and dequantized on the CPU, then copied: see `dequantize`.
            let student = Mllama::from_bundle(files, &burn::tensor::Device::flex())
                .map_err(|error| error.to_string())?;
            let (student, count) = dequantize_weights(student);
            (student.into_device(&chosen.device), count)
        } else {
            let student =
                Mllama::from_bundle(files, &chosen.device).map_err(|error| error.to_string())?;
            (student, 0)
        };
        Ok::<_, String>((student, manifest.grid.map_size, cached, dequantized))
    }
    .await;
    if engine.borrow().model_generation != generation || ui.model_state.is_disposed() {
        return;
    }
    match result {
        Ok((student, map_size, cached, dequantized)) => {
            let took = now_ms() - started;
            {
                let mut engine = engine.borrow_mut();
                engine.student = Some(Rc::new(student));
                engine.map_size = map_size;
            }
            ui.timings.update(|t| t.load_ms = Some(took));
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
            ui.model_status.set(format!(
                "Model loaded from {source} in {took:.0} ms{cache_note}.{dequantized_note}"
            ));
            ui.model_state.set("ready");
        }
        Err(message) => {
            ui.model_state.set("error");
            ui.model_status.set("The model could not be loaded.".into());
            ui.fail("model", message);
        }
    }
}

/// Decodes image bytes and shows the picture.
fn set_image(engine: &Shared, ui: Ui, name: String, bytes: &[u8]) {
    match image::load_from_memory(bytes) {
        Ok(decoded) => {
            let image = decoded.to_rgb8();
            let display = display_image(&image);
            {
                let mut engine = engine.borrow_mut();
                engine.generation += 1;
                engine.image = Some(image);
                engine.display = Some(display);
                engine.run = None;
                engine.maps = None;
            }
            ui.error.set(None);
            ui.words.set(Vec::new());
            ui.selected.set(None);
            ui.answer.set(String::new());
            ui.token_ids.set(Vec::new());
            ui.run_state.set("idle");
            ui.image_name.set(Some(name));
            ui.maps_version.update(|v| *v += 1);
        }
        Err(error) => ui.fail(
            "image",
            format!("cannot decode the image {name}: {error} (PNG or JPEG expected)"),
        ),
    }
}

async fn load_image_url(engine: Shared, ui: Ui, url: String) {
    let resolved = match js::resolve_url(&url, ".") {
        Ok(resolved) => resolved,
        Err(error) => return ui.fail("image", error),
    };
    match fetch_bytes(&resolved, &mut |_| {}).await {
        Ok(bytes) => set_image(&engine, ui, url, &bytes),
        Err(error) => ui.fail("image", error),
    }
}

/// Generates the answer greedily, streaming it, then captures the attention for the maps.
async fn run(engine: Shared, ui: Ui, prompt: String, max_new_tokens: usize) {
    let (student, image, generation) = {
        let mut engine = engine.borrow_mut();
        engine.generation += 1;
        engine.run = None;
        engine.maps = None;
        (
            engine.student.clone(),
            engine.image.clone(),
            engine.generation,
        )
    };
    let (Some(student), Some(image)) = (student, image) else {
        return ui.fail("run", "load a model and an image first");
    };
    ui.error.set(None);
    ui.run_state.set("running");
    ui.answer.set(String::new());
    ui.token_ids.set(Vec::new());
    ui.words.set(Vec::new());
    ui.selected.set(None);
    ui.maps_version.update(|v| *v += 1);
    let result = generate(
        &engine,
        ui,
        &student,
        &image,
        &prompt,
        max_new_tokens,
        generation,
    )
    .await;
    if engine.borrow().generation != generation || ui.run_state.is_disposed() {
        return;
    }
    match result {
        Ok(()) => ui.run_state.set("done"),
        Err(message) => {
            ui.run_state.set("error");
            ui.fail("run", message);
        }
    }
}

async fn generate(
    engine: &Shared,
    ui: Ui,
    student: &Mllama,
    image: &image::RgbImage,
    prompt: &str,
    max_new_tokens: usize,
    generation: u64,
) -> Result<(), String> {
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
        ui.token_ids.set(tokens.clone());
        let answer: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|t| !stops.contains(t))
            .collect();
        if let Ok(shown) = student.prompt.decode(&answer, true) {
            ui.answer.set(shown);
        }
        if stops.contains(&next) || tokens.len() == max_new_tokens {
            break;
        }
        // Back to the event loop: the page repaints the new text and handles input.
        js::sleep_ms(0).await;
        // A newer run, image or model, or the explorer was unmounted.
        if engine.borrow().generation != generation || ui.run_state.is_disposed() {
            return Ok(());
        }
        session.push(next);
    }
    let finished = now_ms();
    if let Some(first) = first_token_at {
        let rest = tokens.len().saturating_sub(1);
        ui.timings.update(|t| {
            t.first_token_ms = Some(first - started);
            t.tokens_per_s = (rest > 0).then(|| rest as f64 / ((finished - first) / 1000.0));
        });
    }
    drop(session);
    let answer: Vec<u32> = tokens.into_iter().filter(|t| !stops.contains(t)).collect();
    let words = student.sequence_words(&prepared, prompt, &answer);
    let attention = student.sequence_attention(&prepared, &answer);
    ui.layers
        .set(attention.layers.iter().map(|(layer, _)| *layer).collect());
    ui.heads.set(attention.heads());
    ui.words.set(
        words
            .iter()
            .map(|word| (word.text.clone(), word.source))
            .collect(),
    );
    engine.borrow_mut().run = Some(Rc::new(Run {
        prepared,
        attention,
        words,
    }));
    compute_maps(engine.clone(), ui).await
}

/// The word maps for the current layer and head choice, read back and drawn.
async fn compute_maps(engine: Shared, ui: Ui) -> Result<(), String> {
    let (student, run, size, generation) = {
        let engine = engine.borrow();
        (
            engine.student.clone(),
            engine.run.clone(),
            engine.map_size,
            engine.generation,
        )
    };
    let (Some(student), Some(run)) = (student, run) else {
        return Ok(());
    };
    let (layer, head) = (ui.layer.get_untracked(), ui.head.get_untracked());
    let maps =
        student.sequence_word_maps(&run.prepared, &run.attention, &run.words, layer, head, size);
    let values: Vec<f32> = maps
        .into_data_async()
        .await
        .map_err(|error| format!("reading the maps failed: {error:?}"))?
        .convert::<f32>()
        .try_to_vec()
        .map_err(|error| format!("reading the maps failed: {error:?}"))?;
    let mut engine = engine.borrow_mut();
    if engine.generation == generation && !ui.maps_version.is_disposed() {
        engine.maps = Some(values);
        ui.maps_version.update(|v| *v += 1);
    }
    Ok(())
}

/// Draws the image with the selected word's map (or the image alone) into `canvas`.
fn repaint(engine: &Shared, ui: Ui, canvas: &web_sys::HtmlCanvasElement) {
    let engine = engine.borrow();
    let Some(display) = &engine.display else {
        return;
    };
    let size = engine.map_size;
    let map = match (ui.selected.get_untracked(), &engine.maps) {
        (Some(index), Some(maps)) if size > 0 && maps.len() >= (index + 1) * size * size => {
            Some((&maps[index * size * size..(index + 1) * size * size], size))
        }
        _ => None,
    };
    let rgba = blend(
        display,
        map,
        ui.opacity.get_untracked(),
        ui.colormap.get_untracked(),
    );
    if let Err(error) = paint(canvas, &rgba, display.width(), display.height()) {
        ui.fail("draw", error);
    }
}

/// The selected maps as JSON: words, their positions, the choice and every map.
fn maps_json(engine: &Shared, ui: Ui) -> Option<String> {
    let engine = engine.borrow();
    let (run, maps) = (engine.run.as_ref()?, engine.maps.as_ref()?);
    let size = engine.map_size;
    let words: Vec<serde_json::Value> = run
        .words
        .iter()
        .enumerate()
        .map(|(index, word)| {
            serde_json::json!({
                "word": word.text,
                "source": match word.source { WordSource::Prompt => "prompt", WordSource::Answer => "answer" },
                "positions": word.positions,
                "map": maps[index * size * size..(index + 1) * size * size]
                    .chunks(size).collect::<Vec<_>>(),
            })
        })
        .collect();
    let json = serde_json::json!({
        "layer": pick_id(ui.layer.get_untracked()),
        "cross_attention_layers": ui.layers.get_untracked(),
        "head": pick_id(ui.head.get_untracked()),
        "size": size,
        "answer": ui.answer.get_untracked(),
        "token_ids": ui.token_ids.get_untracked(),
        "words": words,
    });
    serde_json::to_string_pretty(&json).ok()
}

#[component]
pub fn Explorer(options: ExplorerOptions) -> impl IntoView {
    let engine: Shared = Rc::new(RefCell::new(Engine::default()));
    let ui = Ui::new();
    let canvas = NodeRef::<html::Canvas>::new();
    let model_url = RwSignal::new(options.model.clone().unwrap_or_else(|| "example/".into()));
    let image_url = RwSignal::new(options.image.clone().unwrap_or_default());
    let prompt = RwSignal::new(
        options
            .prompt
            .clone()
            .unwrap_or_else(|| DEFAULT_PROMPT.into()),
    );
    let force_cpu = options.force_cpu;
    let max_new_tokens = if options.max_new_tokens == 0 {
        DEFAULT_MAX_NEW_TOKENS
    } else {
        options.max_new_tokens
    };

    spawn_local(load_model(
        engine.clone(),
        ui,
        force_cpu,
        Some(model_url.get_untracked()),
        Vec::new(),
    ));
    if let Some(url) = options.image.clone() {
        spawn_local(load_image_url(engine.clone(), ui, url));
    }

    // A panic (a wasm trap) stops whatever was running: say so here, not only in the console.
    let panic_listener = window_event_listener_untyped(js::PANIC_EVENT, move |event| {
        let detail = event
            .dyn_ref::<web_sys::CustomEvent>()
            .and_then(|event| event.detail().as_string())
            .unwrap_or_default();
        let backend = ui.backend.get_untracked().map(|(backend, _)| backend);
        let hint = if backend == Some(Backend::WebGpu) {
            " This WebGPU adapter may be unable to compile one of the kernels; try the CPU \
             backend (?backend=cpu)."
        } else {
            ""
        };
        ui.fail("panic", format!("The computation stopped: {detail}.{hint}"));
        if ui.run_state.get_untracked() == "running" {
            ui.run_state.set("error");
        }
        if ui.model_state.get_untracked() == "loading" {
            ui.model_state.set("error");
        }
    });
    on_cleanup(move || panic_listener.remove());

    // The canvas follows the image, the maps, the selection, the opacity and the colormap.
    {
        let engine = engine.clone();
        Effect::new(move |_| {
            ui.maps_version.track();
            ui.selected.track();
            ui.opacity.track();
            ui.colormap.track();
            if let Some(canvas) = canvas.get() {
                repaint(&engine, ui, &canvas);
            }
        });
    }

    let load_url = {
        let engine = engine.clone();
        move |_| {
            spawn_local(load_model(
                engine.clone(),
                ui,
                force_cpu,
                Some(model_url.get_untracked()),
                Vec::new(),
            ))
        }
    };
    let load_files = {
        let engine = engine.clone();
        move |event: web_sys::Event| {
            let input: web_sys::HtmlInputElement = event_target(&event);
            let Some(list) = input.files() else { return };
            let picked: Vec<web_sys::File> =
                (0..list.length()).filter_map(|i| list.get(i)).collect();
            if !picked.is_empty() {
                spawn_local(load_model(engine.clone(), ui, force_cpu, None, picked));
            }
        }
    };
    let pick_image = {
        let engine = engine.clone();
        move |event: web_sys::Event| {
            let input: web_sys::HtmlInputElement = event_target(&event);
            if let Some(file) = input.files().and_then(|list| list.get(0)) {
                let engine = engine.clone();
                spawn_local(async move {
                    match js::file_bytes(&file).await {
                        Ok(bytes) => set_image(&engine, ui, file.name(), &bytes),
                        Err(error) => ui.fail("image", error),
                    }
                });
            }
        }
    };
    let drop_image = {
        let engine = engine.clone();
        move |event: web_sys::DragEvent| {
            event.prevent_default();
            let file = event
                .data_transfer()
                .and_then(|transfer| transfer.files())
                .and_then(|list| list.get(0));
            if let Some(file) = file {
                let engine = engine.clone();
                spawn_local(async move {
                    match js::file_bytes(&file).await {
                        Ok(bytes) => set_image(&engine, ui, file.name(), &bytes),
                        Err(error) => ui.fail("image", error),
                    }
                });
            }
        }
    };
    let load_image = {
        let engine = engine.clone();
        move |_| {
            let url = image_url.get_untracked();
            if !url.trim().is_empty() {
                spawn_local(load_image_url(engine.clone(), ui, url));
            }
        }
    };
    let ask = {
        let engine = engine.clone();
        move |event: web_sys::SubmitEvent| {
            event.prevent_default();
            spawn_local(run(
                engine.clone(),
                ui,
                prompt.get_untracked(),
                max_new_tokens,
            ));
        }
    };
    let rechoose = {
        let engine = engine.clone();
        move || {
            let engine = engine.clone();
            spawn_local(async move {
                if let Err(error) = compute_maps(engine, ui).await {
                    ui.fail("run", error);
                }
            });
        }
    };
    let on_layer = {
        let rechoose = rechoose.clone();
        move |event: web_sys::Event| {
            ui.layer.set(pick_from_id(&event_target_value(&event)));
            rechoose();
        }
    };
    let on_head = move |event: web_sys::Event| {
        ui.head.set(pick_from_id(&event_target_value(&event)));
        rechoose();
    };
    let export_png = move |_| {
        let Some(canvas) = canvas.get_untracked() else {
            return;
        };
        match canvas.to_data_url_with_type("image/png") {
            Ok(url) => {
                if let Err(error) = js::download_url("lavender-overlay.png", &url) {
                    ui.fail("export", error);
                }
            }
            Err(error) => ui.fail("export", js::describe(&error)),
        }
    };
    let export_json = {
        let engine = engine.clone();
        move |_| match maps_json(&engine, ui) {
            Some(json) => {
                if let Err(error) =
                    js::download("lavender-maps.json", "application/json", json.as_bytes())
                {
                    ui.fail("export", error);
                }
            }
            None => ui.fail("export", "no maps yet: ask a question first"),
        }
    };

    let word_buttons = move |source: WordSource| {
        ui.words
            .get()
            .into_iter()
            .enumerate()
            .filter(move |(_, (_, from))| *from == source)
            .map(|(index, (text, _))| {
                let pressed = move || ui.selected.get() == Some(index);
                view! {
                    <button
                        type="button"
                        class="lx-word"
                        data-index=index
                        aria-pressed=move || pressed().to_string()
                        on:click=move |_| ui.selected.set(Some(index))
                    >
                        {text}
                    </button>
                }
            })
            .collect_view()
    };
    let has_maps = move || ui.run_state.get() == "done";
    let token_ids_attr = move || {
        let ids: Vec<String> = ui.token_ids.get().iter().map(u32::to_string).collect();
        ids.join(",")
    };

    view! {
        <section
            class="lavender-explorer-ui"
            data-model-state=move || ui.model_state.get()
            data-run-state=move || ui.run_state.get()
            data-backend=move || ui.backend.get().map(|(backend, _)| backend.id()).unwrap_or("")
            data-token-ids=token_ids_attr
            data-selected=move || ui.selected.get().map(|i| i.to_string()).unwrap_or_default()
            data-maps-version=move || ui.maps_version.get()
        >
            <div class="lx-bar">
                <span class="lx-backend">
                    "Backend: "
                    <strong>{move || ui.backend.get().map(|(b, _)| b.label()).unwrap_or("starting…")}</strong>
                </span>
                {move || ui.backend.get().and_then(|(_, reason)| reason).map(|reason| view! {
                    <span class="lx-fallback note">{reason}</span>
                })}
            </div>
            {move || ui.error.get().map(|(kind, message)| view! {
                <p class="lx-error" role="alert" data-kind=kind>{message}</p>
            })}
            <fieldset class="lx-model">
                <legend>"Model bundle"</legend>
                <div class="lx-row">
                    <label>
                        "Bundle URL "
                        <input
                            type="url"
                            class="lx-model-url"
                            prop:value=move || model_url.get()
                            on:input=move |ev| model_url.set(event_target_value(&ev))
                        />
                    </label>
                    <button type="button" class="lx-load-model" on:click=load_url>"Load"</button>
                    <label class="lx-file">
                        "or bundle files "
                        <input type="file" class="lx-model-files" multiple on:change=load_files />
                    </label>
                </div>
                <p class="lx-status" aria-live="polite">{move || ui.model_status.get()}</p>
                {move || ui.progress.get().filter(|_| ui.model_state.get() == "loading").map(|p| view! {
                    <progress class="lx-progress" max=p.total.max(1) value=p.done aria-label="download progress"></progress>
                    <span class="lx-progress-text">{format!("{} / {} bytes ({})", p.done, p.total, p.file)}</span>
                })}
            </fieldset>
            <fieldset class="lx-image">
                <legend>"Image"</legend>
                <div class="lx-row">
                    <label>"Image file " <input type="file" class="lx-image-file" accept="image/*" on:change=pick_image /></label>
                    <label>
                        "or image URL "
                        <input
                            type="url"
                            class="lx-image-url"
                            prop:value=move || image_url.get()
                            on:input=move |ev| image_url.set(event_target_value(&ev))
                        />
                    </label>
                    <button type="button" class="lx-load-image" on:click=load_image>"Load image"</button>
                </div>
            </fieldset>
            <div
                class="lx-stage"
                on:dragover=|ev: web_sys::DragEvent| ev.prevent_default()
                on:drop=drop_image
            >
                <canvas class="lx-canvas" node_ref=canvas role="img" aria-label="the image with the selected word's attention map"></canvas>
                <p class="lx-drop-hint note">
                    {move || match ui.image_name.get() {
                        Some(name) => format!("{name} — drop another image here to replace it"),
                        None => "Drop an image here, or pick one above.".to_string(),
                    }}
                </p>
            </div>
            <form class="lx-ask" on:submit=ask>
                <label>
                    "Question "
                    <input
                        type="text"
                        class="lx-prompt"
                        prop:value=move || prompt.get()
                        on:input=move |ev| prompt.set(event_target_value(&ev))
                    />
                </label>
                <button
                    type="submit"
                    class="lx-run"
                    disabled=move || ui.model_state.get() != "ready" || ui.image_name.get().is_none() || ui.run_state.get() == "running"
                >
                    "Ask"
                </button>
            </form>
            <div class="lx-words">
                <p>"Prompt: " <span class="lx-prompt-words">{move || word_buttons(WordSource::Prompt)}</span></p>
                <p>
                    "Answer: "
                    <output class="lx-answer" aria-live="polite">{move || ui.answer.get()}</output>
                </p>
                <p>"Answer words: " <span class="lx-answer-words">{move || word_buttons(WordSource::Answer)}</span></p>
            </div>
            <fieldset class="lx-controls" disabled=move || !has_maps()>
                <legend>"Map"</legend>
                <label>
                    "Layer "
                    <select class="lx-layer" on:change=on_layer prop:value=move || pick_id(ui.layer.get())>
                        <option value="mean">"mean of layers"</option>
                        {move || ui.layers.get().into_iter().enumerate().map(|(i, layer)| view! {
                            <option value=i.to_string()>{format!("cross-attention layer {layer}")}</option>
                        }).collect_view()}
                    </select>
                </label>
                <label>
                    "Head "
                    <select class="lx-head" on:change=on_head prop:value=move || pick_id(ui.head.get())>
                        <option value="mean">"mean of heads"</option>
                        {move || (0..ui.heads.get()).map(|h| view! {
                            <option value=h.to_string()>{format!("head {h}")}</option>
                        }).collect_view()}
                    </select>
                </label>
                <label>
                    "Opacity "
                    <input
                        type="range"
                        class="lx-opacity"
                        min="0"
                        max="1"
                        step="0.05"
                        prop:value=move || ui.opacity.get().to_string()
                        on:input=move |ev| ui.opacity.set(event_target_value(&ev).parse().unwrap_or(0.6))
                    />
                </label>
                <label>
                    "Colormap "
                    <select
                        class="lx-colormap"
                        on:change=move |ev| ui.colormap.set(Colormap::from_id(&event_target_value(&ev)))
                    >
                        {Colormap::ALL.into_iter().map(|map| view! { <option value=map.id()>{map.id()}</option> }).collect_view()}
                    </select>
                </label>
                <button type="button" class="lx-export-png" on:click=export_png>"Export PNG"</button>
                <button type="button" class="lx-export-json" on:click=export_json>"Export maps (JSON)"</button>
            </fieldset>
            <dl class="lx-timings">
                <dt>"Bundle load"</dt>
                <dd class="lx-load-ms">{move || ui.timings.get().load_ms.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "–".into())}</dd>
                <dt>"First token"</dt>
                <dd class="lx-ttft-ms">{move || ui.timings.get().first_token_ms.map(|ms| format!("{ms:.0} ms")).unwrap_or_else(|| "–".into())}</dd>
                <dt>"Decoding"</dt>
                <dd class="lx-tokens-per-s">{move || ui.timings.get().tokens_per_s.map(|r| format!("{r:.1} tokens/s")).unwrap_or_else(|| "–".into())}</dd>
            </dl>
        </section>
    }
}

fn event_target<T: JsCast>(event: &web_sys::Event) -> T {
    event
        .target()
        .expect("an event from an element")
        .unchecked_into()
}
