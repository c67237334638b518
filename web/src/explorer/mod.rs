//! The explorer: load a bundle (URL or local files), pick an image (file, drop or URL), ask a
//! question, watch the greedy answer stream in, then click any word of the prompt or answer
//! to see where the student looked for it, per cross-attention layer and head.
//!
//! The model runs in the page's inference worker (`crate::worker`): this side only sends
//! requests, draws what comes back and keeps the page responsive. Every failure is shown in
//! the explorer (`.lx-error`).
//!
//! Here is what other modules use ([`ExplorerOptions`], the [`Explorer`] component) and the
//! wiring; the parts are [`state`] (what the explorer keeps, and the states it shows),
//! [`requests`] (to the worker), [`replies`] (from it), [`picture`], [`draw`], [`export`]
//! and the view's [`panels`].

pub mod control;
mod draw;
mod events;
mod export;
mod panels;
mod picture;
mod replies;
mod requests;
mod state;
mod url_state;

use std::{cell::RefCell, rc::Rc};

use leptos::{html, prelude::*, task::spawn_local};
use wasm_bindgen::JsCast;

use crate::{js, worker::client::Link};

use self::{
    draw::repaint,
    panels::{
        BackendBar, ErrorNotice, HeadGrid, ImagePanel, LoadStatus, MapControls, ModelPanel,
        QuestionForm, Stage, TimingsPanel, WordsPanel,
    },
    picture::load_image_url,
    replies::on_reply,
    requests::load_model,
    state::{ErrorKind, Shared, Ui, View},
};

/// How much of the explorer shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Layout {
    /// Every control: the bundle URL and files, the image file and URL, the examples.
    #[default]
    Full,
    /// The picture, the question, the answer and the maps; the loading controls are folded
    /// away (for a page that chose the model and the image itself).
    Compact,
}

impl Layout {
    pub fn from_id(id: &str) -> Option<Self> {
        match id {
            "full" => Some(Self::Full),
            "compact" => Some(Self::Compact),
            _ => None,
        }
    }
}

/// What the page or the embedding script asks for.
#[derive(Clone, Default)]
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
    pub layout: Layout,
    /// The element the explorer's events are dispatched on ([`events`]).
    pub host: Option<web_sys::HtmlElement>,
    /// Where the explorer leaves its [`control::Control`] for the host page.
    pub control: Option<control::ControlSlot>,
    /// Keep the view in the page's URL ([`url_state`]): the explorer's own page only.
    pub url_state: bool,
}

pub const DEFAULT_MAX_NEW_TOKENS: usize = 48;
const DEFAULT_PROMPT: &str = "What is in the picture?";

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
    let force_cpu = RwSignal::new(options.force_cpu);
    let max_new_tokens = if options.max_new_tokens == 0 {
        DEFAULT_MAX_NEW_TOKENS
    } else {
        options.max_new_tokens
    };

    if let Some(host) = options.host.clone() {
        events::announce(host, view_state.clone(), ui);
    }
    if let Some(slot) = &options.control {
        *slot.borrow_mut() = Some(control::Control {
            link: link.clone(),
            view: view_state.clone(),
            ui,
            model_url,
            image_url,
            prompt,
            force_cpu,
            max_new_tokens,
        });
    }
    if options.url_state {
        url_state::keep_in_url(
            link.clone(),
            view_state.clone(),
            ui,
            (model_url, image_url, prompt),
            max_new_tokens,
        );
    }
    load_model(
        &link,
        &view_state,
        ui,
        options.force_cpu,
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
        ui.fail(ErrorKind::Panic, format!("The page stopped: {detail}."));
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

    let token_ids_attr = move || {
        let ids: Vec<String> = ui.token_ids.get().iter().map(u32::to_string).collect();
        ids.join(",")
    };

    let compact = options.layout == Layout::Compact;
    let setup = view! {
        <ModelPanel link=link.clone() view_state=view_state.clone() ui force_cpu model_url />
        <ImagePanel view_state=view_state.clone() ui image_url />
    };
    view! {
        <section
            class="lavender-explorer-ui"
            class:lx-compact=compact
            data-layout=if compact { "compact" } else { "full" }
            data-model-state=move || ui.model_state.get().id()
            data-model-shared=move || ui.model_shared.get().to_string()
            data-run-state=move || ui.run_state.get().id()
            data-backend=move || ui.backend.get().map(|(backend, _)| backend.id()).unwrap_or("")
            data-token-ids=token_ids_attr
            data-selected=move || ui.selected.get().map(|i| i.to_string()).unwrap_or_default()
            data-maps-version=move || ui.maps_version.get()
        >
            <BackendBar ui />
            <ErrorNotice ui />
            <LoadStatus ui />
            // Folded away in the compact layout, open in the full one.
            <details class="lx-setup" open=!compact>
                <summary>"Model and image"</summary>
                {setup}
            </details>
            <Stage view_state=view_state.clone() ui canvas teacher_canvas />
            <QuestionForm link=link.clone() view_state=view_state.clone() ui prompt max_new_tokens />
            <WordsPanel ui />
            <MapControls link=link.clone() view_state=view_state.clone() ui canvas teacher_canvas />
            <HeadGrid link view_state ui />
            <TimingsPanel ui />
        </section>
    }
}
