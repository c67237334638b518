//! What a host page can do to a mounted explorer through its handle (`mountExplorer`'s
//! handle, the `<lavender-explorer>` element's attributes): load another bundle or backend,
//! show another image, set the question, ask it, select a word. Each does what the matching
//! control of the explorer does, so the page and the API cannot drift apart.

use std::{cell::RefCell, rc::Rc};

use leptos::{prelude::*, task::spawn_local};

use crate::worker::client::Link;

use super::{
    picture::load_image_url,
    requests::{load_model, run},
    state::{ModelState, Shared, Ui},
};

/// The explorer's parts a host page drives; filled in when the explorer mounts.
#[derive(Clone)]
pub struct Control {
    pub(super) link: Rc<Link>,
    pub(super) view: Shared,
    pub(super) ui: Ui,
    pub(super) model_url: RwSignal<String>,
    pub(super) image_url: RwSignal<String>,
    pub(super) prompt: RwSignal<String>,
    pub(super) force_cpu: RwSignal<bool>,
    pub(super) max_new_tokens: usize,
}

/// Where the mounted explorer leaves its [`Control`] for the handle.
pub type ControlSlot = Rc<RefCell<Option<Control>>>;

impl Control {
    /// False once the explorer is unmounted (its signals are gone).
    fn alive(&self) -> bool {
        !self.ui.model_state.is_disposed()
    }

    /// Loads the bundle at `url` (relative to the page), on the CPU when `force_cpu`, or on
    /// the backend chosen so far when `None`.
    pub fn load_model(&self, url: String, force_cpu: Option<bool>) {
        if !self.alive() {
            return;
        }
        if let Some(force_cpu) = force_cpu {
            self.force_cpu.set(force_cpu);
        }
        self.model_url.set(url.clone());
        load_model(
            &self.link,
            &self.view,
            self.ui,
            self.force_cpu.get_untracked(),
            Some(url),
            Vec::new(),
        );
    }

    /// Shows the image at `url` (relative to the page).
    pub fn set_image(&self, url: String) {
        if !self.alive() {
            return;
        }
        self.image_url.set(url.clone());
        spawn_local(load_image_url(self.view.clone(), self.ui, url));
    }

    pub fn set_prompt(&self, prompt: String) {
        if self.alive() {
            self.prompt.set(prompt);
        }
    }

    /// Asks the question shown (after [`Self::set_prompt`]); the answer comes as events.
    pub fn ask(&self) -> Result<(), String> {
        if !self.alive() {
            return Err("the explorer was unmounted".into());
        }
        if self.ui.model_state.get_untracked() != ModelState::Ready {
            return Err("the model is not loaded yet (wait for the ready event)".into());
        }
        if self.view.borrow().image.is_none() {
            return Err("no image yet: set one first".into());
        }
        run(
            &self.link,
            &self.view,
            self.ui,
            self.prompt.get_untracked(),
            self.max_new_tokens,
        );
        Ok(())
    }

    /// Selects word `index` (prompt words first, then the answer's) of the last answer.
    pub fn select_word(&self, index: usize) -> Result<(), String> {
        if !self.alive() {
            return Err("the explorer was unmounted".into());
        }
        let words = self.ui.words.get_untracked().len();
        if index >= words {
            return Err(format!(
                "no word {index}: the last answer has {words} words"
            ));
        }
        self.ui.selected.set(Some(index));
        Ok(())
    }
}
