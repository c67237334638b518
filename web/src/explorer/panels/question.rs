//! The question, and the words of the prompt and the answer as buttons: clicking one shows
//! where the student looked for it.

use std::rc::Rc;

use leptos::prelude::*;

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

/// The prompt's words, the answer as it streams in, and the answer's words.
#[component]
pub(in crate::explorer) fn WordsPanel(ui: Ui) -> impl IntoView {
    view! {
        <div class="lx-words">
            <p>"Prompt: " <span class="lx-prompt-words"><WordButtons ui answer_words=false /></span></p>
            <p>
                "Answer: "
                <output class="lx-answer" aria-live="polite">{move || ui.answer.get()}</output>
            </p>
            <p>"Answer words: " <span class="lx-answer-words"><WordButtons ui answer_words=true /></span></p>
        </div>
    }
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
