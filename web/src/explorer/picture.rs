//! The picture to ask about: a file (picked or dropped), an image URL, or one of the bundle's
//! examples. A new picture makes the last run's answer and maps stale.

use image::RgbImage;
use leptos::{prelude::*, task::spawn_local};

use crate::{
    bundle_source::fetch_bytes,
    js,
    overlay::display_image,
    worker::protocol::{ExampleInfo, Request},
};

use super::state::{ErrorKind, Example, RunState, Shared, Ui};

/// Keeps the bundle's examples (`images`: PNG, `maps`: teacher maps, one of each per
/// example); with no picture yet, the first example becomes the picture.
pub(super) fn set_examples(
    view: &Shared,
    ui: Ui,
    infos: Vec<ExampleInfo>,
    images: Vec<Vec<u8>>,
    maps: Vec<Vec<f32>>,
) {
    let mut examples = Vec::new();
    for ((info, png), maps) in infos.into_iter().zip(images).zip(maps) {
        match lavender_core::images::decode_bytes(&png, lavender_core::images::MAX_PIXELS) {
            Ok(decoded) => examples.push(Example {
                info,
                image: decoded.to_rgb8(),
                maps,
            }),
            Err(error) => ui.fail(
                ErrorKind::Model,
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
pub(super) fn show_example(view: &Shared, ui: Ui, index: usize) {
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
    // The pixel limit is checked from the header first: a small file declaring a huge image
    // would otherwise exhaust the tab's memory.
    match lavender_core::images::decode_bytes(bytes, lavender_core::images::MAX_PIXELS) {
        Ok(decoded) => set_picture(view, ui, name, decoded.to_rgb8()),
        Err(lavender_core::images::ImageError::Decode(error)) => ui.fail(
            ErrorKind::Image,
            format!("cannot decode the image {name}: {error} (PNG or JPEG expected)"),
        ),
        Err(error) => ui.fail(ErrorKind::Image, format!("the image {name}: {error}")),
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
    ui.clear_errors(&[
        ErrorKind::Image,
        ErrorKind::Run,
        ErrorKind::Draw,
        ErrorKind::Export,
    ]);
    ui.clear_run();
    ui.run_state.set(RunState::Idle);
    ui.image_name.set(Some(name));
    ui.maps_version.update(|v| *v += 1);
}

/// The largest image file the page downloads (its pixels are checked on decoding): far above
/// any photo, far below what would strain the page.
const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// Fetches the image at `url` and shows it.
pub(super) async fn load_image_url(view: Shared, ui: Ui, url: String) {
    let resolved = match js::resolve_url(&url, ".") {
        Ok(resolved) => resolved,
        Err(error) => return ui.fail(ErrorKind::Image, error),
    };
    match fetch_bytes(&resolved, MAX_IMAGE_BYTES, &mut |_| {}).await {
        Ok(bytes) => {
            if !ui.model_state.is_disposed() {
                set_image(&view, ui, url, &bytes)
            }
        }
        Err(error) => ui.fail(ErrorKind::Image, error),
    }
}

/// Reads a picked or dropped image file and shows it.
pub(super) fn read_image_file(view: Shared, ui: Ui, file: web_sys::File) {
    spawn_local(async move {
        let read = js::file_bytes(&file).await;
        // The explorer may have been unmounted meanwhile.
        if ui.model_state.is_disposed() {
            return;
        }
        match read {
            Ok(bytes) => set_image(&view, ui, file.name(), &bytes),
            Err(error) => ui.fail(ErrorKind::Image, error),
        }
    });
}
