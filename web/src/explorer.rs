//! The explorer: load a bundle (URL or local files), pick an image (file, drop or URL), ask a
//! question, watch the greedy answer stream in, then click any word of the prompt or answer
//! to see where the student looked for it, per cross-attention layer and head.
//!
//! The model runs in the page's inference worker (`crate::worker`): this side only sends
//! requests, draws what comes back and keeps the page responsive. Every failure is shown in
//! the explorer (`.lx-error`).

use std::{cell::RefCell, rc::Rc};

use image::RgbImage;
use leptos::{html, prelude::*, task::spawn_local};
use wasm_bindgen::JsCast;

use lavender_core::{align::words::teacher_word_row, maps::compare::map_mse};

use crate::{
    bundle_source::{Progress, fetch_bytes},
    device::Backend,
    js,
    overlay::{Colormap, blend, display_image, paint},
    worker::{
        client::Link,
        protocol::{Envelope, ExampleInfo, GRID, MapChoice, Reply, Request, WordInfo},
    },
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

/// What this side keeps of the model's work: the picture, the last run's words and maps.
#[derive(Default)]
struct View {
    image: Option<RgbImage>,
    /// The image as drawn in the canvas.
    display: Option<RgbImage>,
    /// Side of the maps, from the bundle's manifest.
    map_size: usize,
    /// The run whose replies count; older ones are ignored.
    run: u64,
    /// The load whose replies count.
    load: u64,
    /// This explorer's line to the worker (to stop a run the picture made stale).
    link: Option<Rc<Link>>,
    words: Vec<WordInfo>,
    /// `[words, size, size]` for the current layer and head choice, row-major.
    maps: Option<Vec<f32>>,
    /// The bundle's example images with their SD teacher maps.
    examples: Vec<Example>,
    /// The example the current image is (same pixels), if any.
    example: Option<usize>,
}

struct Example {
    info: ExampleInfo,
    image: RgbImage,
    /// `[words, side, side]`, in [0, 1].
    maps: Vec<f32>,
}

/// The selected word against the teacher's map for it, on an example image.
#[derive(Clone, Debug, PartialEq)]
enum Comparison {
    /// Mean squared error between the student's map and the teacher's.
    Matched { word: String, mse: f32 },
    /// The teacher has no map for this word.
    NoTeacherMap { word: String, teacher_words: String },
}

type Shared = Rc<RefCell<View>>;

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
    /// Each word's text and whether it is from the answer.
    words: RwSignal<Vec<(String, bool)>>,
    selected: RwSignal<Option<usize>>,
    layers: RwSignal<Vec<usize>>,
    heads: RwSignal<usize>,
    /// [`GRID`] or one of training's aggregations (`MapChoice`).
    aggregation: RwSignal<String>,
    /// `mean`, `max` or an index.
    layer: RwSignal<String>,
    head: RwSignal<String>,
    /// The bundle carries the trained Aligner.
    has_aligner: RwSignal<bool>,
    opacity: RwSignal<f32>,
    colormap: RwSignal<Colormap>,
    maps_version: RwSignal<u64>,
    timings: RwSignal<Timings>,
    /// Each example's id and caption.
    examples: RwSignal<Vec<(String, String)>>,
    /// The example the image is, if any.
    example: RwSignal<Option<usize>>,
    comparison: RwSignal<Option<Comparison>>,
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
            aggregation: RwSignal::new(GRID.into()),
            layer: RwSignal::new("mean".into()),
            head: RwSignal::new("mean".into()),
            has_aligner: RwSignal::new(false),
            opacity: RwSignal::new(0.6),
            colormap: RwSignal::new(Colormap::Inferno),
            maps_version: RwSignal::new(0),
            timings: RwSignal::new(Timings::default()),
            examples: RwSignal::new(Vec::new()),
            example: RwSignal::new(None),
            comparison: RwSignal::new(None),
        }
    }

    /// The map choice shown now.
    fn choice(&self) -> MapChoice {
        MapChoice {
            aggregation: self.aggregation.get_untracked(),
            layer: self.layer.get_untracked(),
            head: self.head.get_untracked(),
        }
    }

    fn fail(&self, kind: &'static str, message: impl Into<String>) {
        self.error.set(Some((kind, message.into())));
    }

    /// Clears the error shown, if it is of one of these kinds.
    fn clear_errors(&self, kinds: &[&str]) {
        let shown = self.error.try_get_untracked().flatten();
        if shown.is_some_and(|(kind, _)| kinds.contains(&kind)) {
            self.error.set(None);
        }
    }

    fn clear_run(&self) {
        self.answer.set(String::new());
        self.token_ids.set(Vec::new());
        self.words.set(Vec::new());
        self.selected.set(None);
    }
}

/// Applies a reply of the worker to the view and the signals.
fn on_reply(view: &Shared, ui: Ui, message: Envelope<Reply>) {
    if ui.model_state.is_disposed() {
        return;
    }
    let current = |run: u64| view.borrow().run == run;
    let latest = |load: u64| view.borrow().load == load;
    match message.body {
        Reply::Ready => {}
        Reply::Backend {
            load,
            backend,
            reason,
        } if latest(load) => {
            let backend = if backend == Backend::WebGpu.id() {
                Backend::WebGpu
            } else {
                Backend::Cpu
            };
            ui.backend.set(Some((backend, reason)));
        }
        Reply::Status { load, message } if latest(load) => ui.model_status.set(message),
        Reply::Progress {
            load,
            done,
            total,
            file,
        } if latest(load) => ui.progress.set(Some(Progress {
            done,
            total,
            cached: 0,
            file,
        })),
        Reply::Loaded {
            load,
            message: status,
            took_ms,
            map_size,
            examples,
            aligner,
        } if latest(load) => {
            view.borrow_mut().map_size = map_size;
            ui.has_aligner.set(aligner);
            // Another model may have other layers and heads.
            ui.layer.set("mean".into());
            ui.head.set("mean".into());
            // Training's default when the bundle has the trained Aligner; else the grid.
            ui.aggregation
                .set(if aligner { "aligner-per-layer" } else { GRID }.into());
            set_examples(view, ui, examples, message.bytes, message.floats);
            ui.timings.update(|t| t.load_ms = Some(took_ms));
            ui.model_status.set(status);
            ui.model_state.set("ready");
        }
        Reply::LoadFailed { load, message } if latest(load) => {
            ui.model_state.set("error");
            ui.model_status.set("The model could not be loaded.".into());
            ui.fail("model", message);
        }
        Reply::Token {
            run,
            token_ids,
            answer,
        } if current(run) => {
            ui.token_ids.set(token_ids);
            ui.answer.set(answer);
        }
        Reply::Answered {
            run,
            first_token_ms,
            tokens_per_s,
            layers,
            heads,
            words,
        } if current(run) => {
            ui.timings.update(|t| {
                t.first_token_ms = first_token_ms;
                t.tokens_per_s = tokens_per_s;
            });
            ui.layers.set(layers);
            ui.heads.set(heads);
            ui.words
                .set(words.iter().map(|w| (w.text.clone(), w.answer)).collect());
            view.borrow_mut().words = words;
        }
        Reply::Maps { run, size, choice } if current(run) => {
            // Only the maps of the choice shown now (a newer choice's maps are on their way).
            if choice == ui.choice() {
                let mut view = view.borrow_mut();
                view.map_size = size;
                view.maps = message.floats.into_iter().next();
                drop(view);
                ui.maps_version.update(|v| *v += 1);
                if ui.run_state.get_untracked() == "running" {
                    ui.run_state.set("done");
                }
            }
        }
        Reply::RunFailed { run, message } if current(run) => {
            ui.run_state.set("error");
            ui.fail("run", message);
        }
        Reply::MapsFailed {
            run,
            choice,
            message,
        } if current(run) && choice == ui.choice() => {
            // The answer stands; another choice of map may still work.
            ui.fail("maps", message);
            if ui.run_state.get_untracked() == "running" {
                ui.run_state.set("done");
            }
        }
        Reply::SendFailed { message } => {
            ui.fail("worker", message);
            if ui.model_state.get_untracked() == "loading" {
                ui.model_state.set("error");
            }
            if ui.run_state.get_untracked() == "running" {
                ui.run_state.set("error");
            }
        }
        // About an older load, run or choice.
        Reply::Backend { .. }
        | Reply::Status { .. }
        | Reply::Progress { .. }
        | Reply::Loaded { .. }
        | Reply::LoadFailed { .. }
        | Reply::Token { .. }
        | Reply::Answered { .. }
        | Reply::Maps { .. }
        | Reply::RunFailed { .. }
        | Reply::MapsFailed { .. } => {}
        Reply::Panic { message } => {
            let hint = if ui.backend.get_untracked().map(|(backend, _)| backend)
                == Some(Backend::WebGpu)
            {
                " This WebGPU adapter may be unable to compile one of the kernels; try the CPU \
                 backend (?backend=cpu)."
            } else {
                ""
            };
            ui.fail(
                "panic",
                format!("The computation stopped: {message}.{hint}"),
            );
            if ui.run_state.get_untracked() == "running" {
                ui.run_state.set("error");
            }
            // The worker and the model in it are gone.
            if ui.model_state.get_untracked() != "idle" {
                ui.model_state.set("error");
                ui.model_status
                    .set("The model was lost with the worker; load it again.".into());
            }
        }
    }
}

/// Asks the worker for a bundle (from `url`, or from picked files).
fn load_model(
    link: &Link,
    view: &Shared,
    ui: Ui,
    force_cpu: bool,
    url: Option<String>,
    picked: Vec<web_sys::File>,
) {
    let url = match url.map(|url| js::resolve_url(&url, ".")).transpose() {
        Ok(url) => url,
        Err(error) => return ui.fail("model", error),
    };
    let load = {
        let mut view = view.borrow_mut();
        view.run += 1;
        view.load += 1;
        view.words.clear();
        view.maps = None;
        view.load
    };
    ui.error.set(None);
    ui.model_state.set("loading");
    ui.progress.set(None);
    ui.clear_run();
    ui.run_state.set("idle");
    ui.model_status.set(match &url {
        Some(url) => format!("Loading {url}…"),
        None => "Reading the picked files…".into(),
    });
    let mut message = Envelope::new(
        link.id(),
        Request::Load {
            load,
            url,
            force_cpu: force_cpu || js::query_param("backend").as_deref() == Some("cpu"),
            // `?max-buffer=BYTES` imitates a smaller adapter (to see this check at work).
            max_buffer: js::query_param("max-buffer").and_then(|v| v.parse::<u64>().ok()),
        },
    );
    message.files = picked;
    link.send(message);
}

/// Keeps the bundle's examples (`images`: PNG, `maps`: teacher maps, one of each per
/// example); with no picture yet, the first example becomes the picture.
fn set_examples(
    view: &Shared,
    ui: Ui,
    infos: Vec<ExampleInfo>,
    images: Vec<Vec<u8>>,
    maps: Vec<Vec<f32>>,
) {
    let mut examples = Vec::new();
    for ((info, png), maps) in infos.into_iter().zip(images).zip(maps) {
        match image::load_from_memory(&png) {
            Ok(decoded) => examples.push(Example {
                info,
                image: decoded.to_rgb8(),
                maps,
            }),
            Err(error) => ui.fail(
                "model",
                format!(
                    "the bundle's example {} cannot be decoded: {error}",
                    info.id
                ),
            ),
        }
    }
    ui.examples.set(
        examples
            .iter()
            .map(|e| (e.info.id.clone(), e.info.caption.clone()))
            .collect(),
    );
    let (current, show_first) = {
        let mut view = view.borrow_mut();
        view.examples = examples;
        let current = view
            .image
            .as_ref()
            .and_then(|image| view.examples.iter().position(|e| &e.image == image));
        view.example = current;
        (current, view.image.is_none() && !view.examples.is_empty())
    };
    ui.example.set(current);
    if show_first {
        show_example(view, ui, 0);
    }
}

/// Makes example `index` of the bundle the picture.
fn show_example(view: &Shared, ui: Ui, index: usize) {
    let picked = view
        .borrow()
        .examples
        .get(index)
        .map(|e| (e.info.id.clone(), e.image.clone()));
    if let Some((id, image)) = picked {
        set_picture(view, ui, format!("example {id}"), image);
    }
}

/// Decodes image bytes and shows the picture.
fn set_image(view: &Shared, ui: Ui, name: String, bytes: &[u8]) {
    match image::load_from_memory(bytes) {
        Ok(decoded) => set_picture(view, ui, name, decoded.to_rgb8()),
        Err(error) => ui.fail(
            "image",
            format!("cannot decode the image {name}: {error} (PNG or JPEG expected)"),
        ),
    }
}

/// Shows `image` (named `name`) as the picture to ask about.
fn set_picture(view: &Shared, ui: Ui, name: String, image: RgbImage) {
    let display = display_image(&image);
    let example = {
        let mut view = view.borrow_mut();
        view.example = view.examples.iter().position(|e| e.image == image);
        view.run += 1;
        view.image = Some(image);
        view.display = Some(display);
        view.words.clear();
        view.maps = None;
        // A run about the previous picture is of no use any more.
        if let Some(link) = &view.link {
            link.request(Request::Stop { run: view.run });
        }
        view.example
    };
    ui.example.set(example);
    // A model's failure stays in view: a new picture does not mend it.
    ui.clear_errors(&["image", "run", "draw", "export"]);
    ui.clear_run();
    ui.run_state.set("idle");
    ui.image_name.set(Some(name));
    ui.maps_version.update(|v| *v += 1);
}

async fn load_image_url(view: Shared, ui: Ui, url: String) {
    let resolved = match js::resolve_url(&url, ".") {
        Ok(resolved) => resolved,
        Err(error) => return ui.fail("image", error),
    };
    match fetch_bytes(&resolved, &mut |_| {}).await {
        Ok(bytes) => {
            if !ui.model_state.is_disposed() {
                set_image(&view, ui, url, &bytes)
            }
        }
        Err(error) => ui.fail("image", error),
    }
}

/// Sends the question and the image; the answer streams back as replies.
fn run(link: &Link, view: &Shared, ui: Ui, prompt: String, max_new_tokens: usize) {
    let (run, image) = {
        let mut view = view.borrow_mut();
        view.run += 1;
        view.words.clear();
        view.maps = None;
        (view.run, view.image.clone())
    };
    let Some(image) = image else {
        return ui.fail("run", "load an image first");
    };
    ui.error.set(None);
    ui.run_state.set("running");
    ui.clear_run();
    ui.maps_version.update(|v| *v += 1);
    let (width, height) = image.dimensions();
    let mut message = Envelope::new(
        link.id(),
        Request::Run {
            run,
            prompt,
            max_new_tokens,
            width,
            height,
            choice: ui.choice(),
        },
    );
    message.bytes.push(image.into_raw());
    link.send(message);
}

/// Draws the image with the selected word's map (or the image alone) into `canvas`, and on
/// an example image the teacher's map of that word into `teacher_canvas`, with their MSE.
fn repaint(
    view: &Shared,
    ui: Ui,
    canvas: &web_sys::HtmlCanvasElement,
    teacher_canvas: Option<&web_sys::HtmlCanvasElement>,
) {
    let view = view.borrow();
    let Some(display) = &view.display else {
        return;
    };
    let size = view.map_size;
    let selected = ui.selected.get_untracked();
    let map = match (selected, &view.maps) {
        (Some(index), Some(maps)) if size > 0 && maps.len() >= (index + 1) * size * size => {
            Some(&maps[index * size * size..(index + 1) * size * size])
        }
        _ => None,
    };
    let (opacity, colormap) = (ui.opacity.get_untracked(), ui.colormap.get_untracked());
    let rgba = blend(display, map.map(|map| (map, size)), opacity, colormap);
    if let Err(error) = paint(canvas, &rgba, display.width(), display.height()) {
        ui.fail("draw", error);
    }

    let example = view.example.and_then(|index| view.examples.get(index));
    let word = selected.and_then(|index| view.words.get(index));
    let (Some(example), Some(word), Some(student)) = (example, word, map) else {
        ui.comparison.set(None);
        return;
    };
    let side = example.info.side;
    let Some(row) = teacher_word_row(&example.info.words, &word.text) else {
        ui.comparison.set(Some(Comparison::NoTeacherMap {
            word: word.text.clone(),
            teacher_words: example.info.words.join(", "),
        }));
        return;
    };
    let teacher = &example.maps[row * side * side..(row + 1) * side * side];
    ui.comparison.set(Some(Comparison::Matched {
        word: example.info.words[row].clone(),
        mse: map_mse(student, size, teacher, side),
    }));
    if let Some(teacher_canvas) = teacher_canvas {
        let rgba = blend(display, Some((teacher, side)), opacity, colormap);
        if let Err(error) = paint(teacher_canvas, &rgba, display.width(), display.height()) {
            ui.fail("draw", error);
        }
    }
}

/// The selected maps as JSON: words, their positions, the choice and every map.
fn maps_json(view: &Shared, ui: Ui) -> Option<String> {
    let view = view.borrow();
    let maps = view.maps.as_ref()?;
    let size = view.map_size;
    let words: Vec<serde_json::Value> = view
        .words
        .iter()
        .enumerate()
        .filter(|(index, _)| maps.len() >= (index + 1) * size * size)
        .map(|(index, word)| {
            serde_json::json!({
                "word": word.text,
                "source": if word.answer { "answer" } else { "prompt" },
                "positions": word.positions,
                "map": maps[index * size * size..(index + 1) * size * size]
                    .chunks(size).collect::<Vec<_>>(),
            })
        })
        .collect();
    let json = serde_json::json!({
        "aggregation": ui.aggregation.get_untracked(),
        "layer": ui.layer.get_untracked(),
        "cross_attention_layers": ui.layers.get_untracked(),
        "head": ui.head.get_untracked(),
        "size": size,
        "answer": ui.answer.get_untracked(),
        "token_ids": ui.token_ids.get_untracked(),
        "words": words,
    });
    serde_json::to_string_pretty(&json).ok()
}

#[component]
pub fn Explorer(options: ExplorerOptions) -> impl IntoView {
    let view_state: Shared = Rc::new(RefCell::new(View::default()));
    let ui = Ui::new();
    let link = {
        let view_state = view_state.clone();
        Rc::new(Link::open(move |message| {
            on_reply(&view_state, ui, message)
        }))
    };
    // Unmounting closes this explorer's side in the worker and frees its model.
    view_state.borrow_mut().link = Some(link.clone());
    let explorer_id = link.id();
    on_cleanup(move || crate::worker::client::close(explorer_id));
    let canvas = NodeRef::<html::Canvas>::new();
    let teacher_canvas = NodeRef::<html::Canvas>::new();
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

    load_model(
        &link,
        &view_state,
        ui,
        force_cpu,
        Some(model_url.get_untracked()),
        Vec::new(),
    );
    if let Some(url) = options.image.clone() {
        spawn_local(load_image_url(view_state.clone(), ui, url));
    }

    // A panic on this side (drawing, decoding) traps the call that hit it: say so here.
    let panic_listener = window_event_listener_untyped(js::PANIC_EVENT, move |event| {
        let detail = event
            .dyn_ref::<web_sys::CustomEvent>()
            .and_then(|event| event.detail().as_string())
            .unwrap_or_default();
        ui.fail("panic", format!("The page stopped: {detail}."));
    });
    on_cleanup(move || panic_listener.remove());

    // The canvas follows the image, the maps, the selection, the opacity and the colormap.
    {
        let view_state = view_state.clone();
        Effect::new(move |_| {
            ui.maps_version.track();
            ui.selected.track();
            ui.opacity.track();
            ui.colormap.track();
            ui.example.track();
            if let Some(canvas) = canvas.get() {
                repaint(&view_state, ui, &canvas, teacher_canvas.get().as_ref());
            }
        });
    }

    let load_url = {
        let (link, view_state) = (link.clone(), view_state.clone());
        move |_| {
            load_model(
                &link,
                &view_state,
                ui,
                force_cpu,
                Some(model_url.get_untracked()),
                Vec::new(),
            )
        }
    };
    let load_files = {
        let (link, view_state) = (link.clone(), view_state.clone());
        move |event: web_sys::Event| {
            let input: web_sys::HtmlInputElement = event_target(&event);
            let Some(list) = input.files() else { return };
            let picked: Vec<web_sys::File> =
                (0..list.length()).filter_map(|i| list.get(i)).collect();
            if !picked.is_empty() {
                load_model(&link, &view_state, ui, force_cpu, None, picked);
            }
        }
    };
    let read_file = {
        let view_state = view_state.clone();
        move |file: web_sys::File| {
            let view_state = view_state.clone();
            spawn_local(async move {
                let read = js::file_bytes(&file).await;
                // The explorer may have been unmounted meanwhile.
                if ui.model_state.is_disposed() {
                    return;
                }
                match read {
                    Ok(bytes) => set_image(&view_state, ui, file.name(), &bytes),
                    Err(error) => ui.fail("image", error),
                }
            });
        }
    };
    let pick_image = {
        let read_file = read_file.clone();
        move |event: web_sys::Event| {
            let input: web_sys::HtmlInputElement = event_target(&event);
            if let Some(file) = input.files().and_then(|list| list.get(0)) {
                read_file(file);
            }
        }
    };
    let drop_image = move |event: web_sys::DragEvent| {
        event.prevent_default();
        let file = event
            .data_transfer()
            .and_then(|transfer| transfer.files())
            .and_then(|list| list.get(0));
        if let Some(file) = file {
            read_file(file);
        }
    };
    let load_image = {
        let view_state = view_state.clone();
        move |_| {
            let url = image_url.get_untracked();
            if !url.trim().is_empty() {
                spawn_local(load_image_url(view_state.clone(), ui, url));
            }
        }
    };
    let ask = {
        let (link, view_state) = (link.clone(), view_state.clone());
        move |event: web_sys::SubmitEvent| {
            event.prevent_default();
            run(
                &link,
                &view_state,
                ui,
                prompt.get_untracked(),
                max_new_tokens,
            );
        }
    };
    let rechoose = {
        let (link, view_state) = (link.clone(), view_state.clone());
        move || {
            let run = view_state.borrow().run;
            link.request(Request::Maps {
                run,
                choice: ui.choice(),
            });
        }
    };
    let on_aggregation = {
        let rechoose = rechoose.clone();
        move |event: web_sys::Event| {
            ui.aggregation.set(event_target_value(&event));
            rechoose();
        }
    };
    let on_layer = {
        let rechoose = rechoose.clone();
        move |event: web_sys::Event| {
            ui.layer.set(event_target_value(&event));
            rechoose();
        }
    };
    let on_head = move |event: web_sys::Event| {
        ui.head.set(event_target_value(&event));
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
        let view_state = view_state.clone();
        move |_| match maps_json(&view_state, ui) {
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

    // `Copy` and `Send`, as the reactive children of the view must be; the value stays here.
    let view_for_examples = StoredValue::new_local(view_state.clone());
    let word_buttons = move |answer_words: bool| {
        ui.words
            .get()
            .into_iter()
            .enumerate()
            .filter(move |(_, (_, answer))| *answer == answer_words)
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
    // Usable once there are words, also after a choice of map failed.
    let has_maps = move || !ui.words.get().is_empty() && ui.run_state.get() != "running";
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
                {move || (!ui.examples.get().is_empty()).then(|| view! {
                    <div class="lx-row lx-examples" role="group" aria-label="example images with teacher maps">
                        "Examples with Stable Diffusion maps: "
                        {ui.examples.get().into_iter().enumerate().map(|(index, (id, caption))| {
                            view! {
                                <button
                                    type="button"
                                    class="lx-example"
                                    data-id=id.clone()
                                    title=caption.clone()
                                    aria-pressed=move || (ui.example.get() == Some(index)).to_string()
                                    on:click=move |_| view_for_examples.with_value(|view| show_example(view, ui, index))
                                >
                                    {caption.clone()}
                                </button>
                            }
                        }).collect_view()}
                    </div>
                })}
            </fieldset>
            <div
                class="lx-stage"
                on:dragover=|ev: web_sys::DragEvent| ev.prevent_default()
                on:drop=drop_image
            >
                <div class="lx-pair">
                    <figure>
                        <canvas class="lx-canvas" node_ref=canvas role="img" aria-label="the image with the selected word's attention map"></canvas>
                        <figcaption>"Student (this model)"</figcaption>
                    </figure>
                    <figure class="lx-teacher" hidden=move || !matches!(ui.comparison.get(), Some(Comparison::Matched { .. }))>
                        <canvas class="lx-teacher-canvas" node_ref=teacher_canvas role="img" aria-label="the image with the Stable Diffusion teacher's map of the selected word"></canvas>
                        <figcaption>"Teacher (Stable Diffusion)"</figcaption>
                    </figure>
                </div>
                {move || ui.comparison.get().map(|comparison| match comparison {
                    Comparison::Matched { word, mse } => view! {
                        <p class="lx-comparison" data-mse=mse.to_string()>
                            {format!("“{word}”: MSE between the student's map and the teacher's = {mse:.4}")}
                        </p>
                    }.into_any(),
                    Comparison::NoTeacherMap { word, teacher_words } => view! {
                        <p class="lx-comparison note">
                            {format!("The teacher has no map for “{word}”; its words: {teacher_words}.")}
                        </p>
                    }.into_any(),
                })}
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
                <p>"Prompt: " <span class="lx-prompt-words">{move || word_buttons(false)}</span></p>
                <p>
                    "Answer: "
                    <output class="lx-answer" aria-live="polite">{move || ui.answer.get()}</output>
                </p>
                <p>"Answer words: " <span class="lx-answer-words">{move || word_buttons(true)}</span></p>
            </div>
            <fieldset class="lx-controls" disabled=move || !has_maps()>
                <legend>"Map"</legend>
                <label>
                    "Aggregation "
                    <select class="lx-aggregation" on:change=on_aggregation prop:value=move || ui.aggregation.get()>
                        {move || ui.has_aligner.get().then(|| view! {
                            <option value="aligner-per-layer">"Aligner per layer, then mean (training)"</option>
                            <option value="mean-first">"mean of layers, then Aligner"</option>
                        })}
                        <option value="max-max">"max over heads, then layers"</option>
                        <option value=GRID>"attention grid (no Aligner)"</option>
                    </select>
                </label>
                <label>
                    "Layer "
                    <select class="lx-layer" on:change=on_layer prop:value=move || ui.layer.get() disabled=move || ui.aggregation.get() != GRID>
                        <option value="mean">"mean of layers"</option>
                        <option value="max">"max over layers"</option>
                        {move || ui.layers.get().into_iter().enumerate().map(|(i, layer)| view! {
                            <option value=i.to_string()>{format!("cross-attention layer {layer}")}</option>
                        }).collect_view()}
                    </select>
                </label>
                <label>
                    "Head "
                    <select class="lx-head" on:change=on_head prop:value=move || ui.head.get() disabled=move || ui.aggregation.get() != GRID>
                        <option value="mean">"mean of heads"</option>
                        <option value="max">"max over heads"</option>
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
