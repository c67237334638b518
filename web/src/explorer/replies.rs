//! The worker's replies: each one about the latest load or run (and, for maps, the choice
//! shown now) updates the view and the signals; one about an older load, run or choice is
//! dropped, since a newer request superseded it.

use leptos::prelude::*;

use crate::{
    bundle_source::Progress,
    device::Backend,
    worker::protocol::{Envelope, Reply},
};

use super::{
    picture::set_examples,
    state::{Aggregation, ErrorKind, HeadMaps, ModelState, Pick, RunState, Shared, Ui},
};

/// Applies a reply of the worker to the view and the signals.
pub(super) fn on_reply(view: &Shared, ui: Ui, message: Envelope<Reply>) {
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
            shared,
        } if latest(load) => {
            view.borrow_mut().map_size = map_size;
            ui.model_shared.set(shared);
            ui.has_aligner.set(aligner);
            // Another model may have other layers and heads.
            ui.layer.set(Pick::Mean);
            ui.head.set(Pick::Mean);
            // Training's default when the bundle has the trained Aligner; else the grid.
            ui.aggregation.set(if aligner {
                Aggregation::AlignerPerLayer
            } else {
                Aggregation::Grid
            });
            set_examples(view, ui, examples, message.bytes, message.floats);
            ui.timings.update(|t| t.load_ms = Some(took_ms));
            ui.model_status.set(status);
            ui.model_state.set(ModelState::Ready);
        }
        Reply::LoadFailed { load, message } if latest(load) => {
            ui.model_state.set(ModelState::Error);
            ui.model_status.set("The model could not be loaded.".into());
            ui.fail(ErrorKind::Model, message);
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
                ui.end_run(RunState::Done);
            }
        }
        Reply::HeadMaps {
            run,
            word,
            layers,
            heads,
            size,
        } if current(run) && ui.selected.get_untracked() == Some(word) => {
            view.borrow_mut().head_maps =
                message.floats.into_iter().next().map(|values| HeadMaps {
                    word,
                    layers,
                    heads,
                    size,
                    values,
                });
            ui.head_maps_version.update(|v| *v += 1);
        }
        Reply::HeadMapsFailed { run, message, .. } if current(run) => {
            ui.fail(ErrorKind::Maps, message);
        }
        Reply::RunFailed { run, message } if current(run) => {
            ui.run_state.set(RunState::Error);
            ui.fail(ErrorKind::Run, message);
        }
        Reply::MapsFailed {
            run,
            choice,
            message,
        } if current(run) && choice == ui.choice() => {
            // The answer stands; another choice of map may still work.
            ui.fail(ErrorKind::Maps, message);
            ui.end_run(RunState::Done);
        }
        Reply::SendFailed { message } => {
            ui.fail(ErrorKind::Worker, message);
            if ui.model_state.get_untracked() == ModelState::Loading {
                ui.model_state.set(ModelState::Error);
            }
            ui.end_run(RunState::Error);
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
        | Reply::HeadMaps { .. }
        | Reply::HeadMapsFailed { .. }
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
                ErrorKind::Panic,
                format!("The computation stopped: {message}.{hint}"),
            );
            ui.end_run(RunState::Error);
            // The worker and the model in it are gone.
            if ui.model_state.get_untracked() != ModelState::Idle {
                ui.model_state.set(ModelState::Error);
                ui.model_status
                    .set("The model was lost with the worker; load it again.".into());
            }
        }
    }
}
