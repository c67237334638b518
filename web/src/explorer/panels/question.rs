//! The question, and the words of the prompt and the answer as buttons: clicking one shows
//! where the student looked for it.

use std::rc::Rc;

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::{
    explorer::{
        requests::run,
        state::{ModelState, RunState, Shared, Ui},
    },
    worker::client::Link,
};

/// The question and its "Ask" button, usable with a model, a picture and no run going on.
#[component]
pub(in crate::explorer) fn QuestionForm(
    link: Rc<Link>,
    view_state: Shared,
    ui: Ui,
    prompt: RwSignal<String>,
    max_new_tokens: usize,
) -> impl IntoView {
    let ask = move |event: web_sys::SubmitEvent| {
        event.prevent_default();
        run(
            &link,
            &view_state,
            ui,
            prompt.get_untracked(),
            max_new_tokens,
        );
    };

    view! {
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
                disabled=move || ui.model_state.get() != ModelState::Ready || ui.image_name.get().is_none() || ui.run_state.get() == RunState::Running
            >
                "Ask"
            </button>
        </form>
    }
}

/// The prompt's words, the answer as it streams in, and the answer's words. The arrow keys
/// move the selection from word to word.
#[component]
pub(in crate::explorer) fn WordsPanel(ui: Ui) -> impl IntoView {
    let on_key = move |event: web_sys::KeyboardEvent| {
        let count = ui.words.get_untracked().len();
        let Some(next) = next_word(&event.key(), ui.selected.get_untracked(), count) else {
            return;
        };
        event.prevent_default();
        ui.selected.set(Some(next));
        // Focus follows the selection, so the next key press and a screen reader are there.
        let panel: web_sys::Element = event_target_element(&event);
        if let Ok(Some(button)) = panel.query_selector(&format!(".lx-word[data-index=\"{next}\"]"))
            && let Ok(button) = button.dyn_into::<web_sys::HtmlElement>()
        {
            let _ = button.focus();
        }
    };
    view! {
        <div class="lx-words" on:keydown=on_key>
            <p>"Prompt: " <span class="lx-prompt-words"><WordButtons ui answer_words=false /></span></p>
            <p>
                "Answer: "
                <output class="lx-answer" aria-live="polite">{move || ui.answer.get()}</output>
            </p>
            <p>"Answer words: " <span class="lx-answer-words"><WordButtons ui answer_words=true /></span></p>
        </div>
    }
}

/// The word an arrow key selects among `count`, from `selected`; `None` for other keys.
fn next_word(key: &str, selected: Option<usize>, count: usize) -> Option<usize> {
    if count == 0 {
        return None;
    }
    match (key, selected) {
        ("ArrowRight" | "ArrowDown", None) => Some(0),
        ("ArrowLeft" | "ArrowUp", None) => Some(count - 1),
        ("ArrowRight" | "ArrowDown", Some(i)) => Some((i + 1).min(count - 1)),
        ("ArrowLeft" | "ArrowUp", Some(i)) => Some(i.saturating_sub(1)),
        ("Home", _) => Some(0),
        ("End", _) => Some(count - 1),
        _ => None,
    }
}

/// The element a listener sits on (`currentTarget`).
fn event_target_element(event: &web_sys::KeyboardEvent) -> web_sys::Element {
    event
        .current_target()
        .expect("a listener's element")
        .unchecked_into()
}

/// A button per word of the answer (`answer_words`) or of the prompt; the pressed one is the
/// selected word. `data-index` is the word's index among all of them, prompt first.
#[component]
fn WordButtons(ui: Ui, answer_words: bool) -> impl IntoView {
    move || {
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
    }
}

#[cfg(test)]
mod tests {
    use super::next_word;

    #[test]
    fn arrow_keys_step_through_the_words_and_stop_at_the_ends() {
        assert_eq!(next_word("ArrowRight", None, 3), Some(0));
        assert_eq!(next_word("ArrowRight", Some(0), 3), Some(1));
        assert_eq!(next_word("ArrowRight", Some(2), 3), Some(2));
        assert_eq!(next_word("ArrowLeft", Some(0), 3), Some(0));
        assert_eq!(next_word("ArrowUp", Some(2), 3), Some(1));
        assert_eq!(next_word("End", Some(0), 3), Some(2));
        assert_eq!(next_word("Enter", Some(0), 3), None);
        assert_eq!(next_word("ArrowRight", None, 0), None);
    }
}
