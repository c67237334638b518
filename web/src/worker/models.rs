//! The models this worker holds, shared by the explorers that open the same bundle URL on the
//! same backend: a second explorer gets the first one's copy (no second download, no second
//! copy in memory), and one that asks while the first is still building waits for it. A
//! model lives as long as an explorer holds it; the worker keeps only weak references.
//!
//! Each model built here is counted in the worker's global `lavenderModelBuilds`, so a test
//! can tell one shared copy from two.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::{Rc, Weak},
};

use lavender_core::{align::aligner::Aligner, vlm::mllama::student::Mllama};
use wasm_bindgen::JsValue;

use super::protocol::ExampleInfo;

/// A loaded bundle: the model and what every explorer of it is sent.
pub struct LoadedModel {
    pub student: Mllama,
    /// The bundle's trained Aligner, for the Aligner aggregations.
    pub aligner: Option<Aligner>,
    /// Side of the maps, from the bundle's manifest.
    pub map_size: usize,
    /// Each example: what it is, its image (PNG) and its teacher maps (`[words, side, side]`).
    pub examples: Vec<(ExampleInfo, Vec<u8>, Vec<f32>)>,
}

/// What a bundle URL is loaded as: the same URL on another backend, or under another
/// buffer limit, is another model.
pub fn key(url: &str, force_cpu: bool, max_buffer: Option<u64>) -> String {
    format!(
        "{url}\u{0}{}\u{0}{}",
        if force_cpu { "cpu" } else { "auto" },
        max_buffer.map_or(String::new(), |limit| limit.to_string())
    )
}

enum Slot {
    /// An explorer is building it now.
    Building,
    Ready(Weak<LoadedModel>),
}

thread_local! {
    static MODELS: RefCell<HashMap<String, Slot>> = RefCell::new(HashMap::new());
    static BUILDS: Cell<u32> = const { Cell::new(0) };
}

/// The answer of [`claim`].
pub enum Claim {
    /// Another explorer's live copy.
    Shared(Rc<LoadedModel>),
    /// Nobody holds it: build it, then give it to [`BuildPermit::finish`].
    Build(BuildPermit),
    /// The caller stopped wanting it while waiting.
    Abandoned,
}

/// The right to build one model; dropped without [`BuildPermit::finish`] (a failed or
/// superseded load), it lets the next explorer that asks build it.
pub struct BuildPermit {
    key: String,
    finished: bool,
}

impl BuildPermit {
    /// Records the built model so that later explorers share it.
    pub fn finish(mut self, model: &Rc<LoadedModel>) {
        self.finished = true;
        MODELS.with_borrow_mut(|models| {
            models.insert(self.key.clone(), Slot::Ready(Rc::downgrade(model)));
        });
        let builds = BUILDS.with(|builds| {
            builds.set(builds.get() + 1);
            builds.get()
        });
        let _ = js_sys::Reflect::set(
            &js_sys::global(),
            &JsValue::from_str("lavenderModelBuilds"),
            &JsValue::from(builds),
        );
    }
}

impl Drop for BuildPermit {
    fn drop(&mut self) {
        if !self.finished {
            MODELS.with_borrow_mut(|models| {
                if matches!(models.get(&self.key), Some(Slot::Building)) {
                    models.remove(&self.key);
                }
            });
        }
    }
}

/// The model under `key`: shared when an explorer holds it, awaited while one builds it,
/// else the caller's to build. `still_wanted` is asked while waiting.
pub async fn claim(key: String, still_wanted: impl Fn() -> bool) -> Claim {
    loop {
        let found = MODELS.with_borrow_mut(|models| match models.get(&key) {
            Some(Slot::Ready(weak)) => match weak.upgrade() {
                Some(model) => Some(Some(model)),
                None => {
                    models.insert(key.clone(), Slot::Building);
                    None
                }
            },
            Some(Slot::Building) => Some(None),
            None => {
                models.insert(key.clone(), Slot::Building);
                None
            }
        });
        match found {
            Some(Some(model)) => return Claim::Shared(model),
            None => {
                return Claim::Build(BuildPermit {
                    key,
                    finished: false,
                });
            }
            // Another explorer is building it: look again shortly.
            Some(None) => {
                if !still_wanted() {
                    return Claim::Abandoned;
                }
                crate::js::sleep_ms(25).await;
            }
        }
    }
}
