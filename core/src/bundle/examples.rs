//! Example images a web bundle ships with the Stable Diffusion teacher's word maps, so the
//! explorer can draw the teacher's map of a word beside the student's and show their MSE,
//! the quantity `L_att` trains down, without a teacher in the browser.
//!
//! Each example is two bundle files, listed in the manifest's `files` like every other (so the
//! size and SHA-256 checks cover them): the image re-encoded as PNG (at most
//! [`EXAMPLE_MAX_SIDE`] pixels on its longer side: the explorer shows it, it does not need
//! the original's resolution) and a safetensors file with one f32 tensor [`MAPS_TENSOR`]
//! `[words, S, S]`. The names are flat (`example-<id>.png`, `example-<id>.maps.safetensors`):
//! a bundle stays one folder whose files can be picked by name in the browser.

use std::{collections::HashSet, io::Cursor};

use image::{ImageFormat, RgbImage, imageops::FilterType};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use burn::tensor::Device;

use super::{
    files::BundleFiles,
    manifest::{BundleError, BundleExample},
};
use crate::maps::WordMaps;

/// The longest side, in pixels, of an example image in a bundle.
pub const EXAMPLE_MAX_SIDE: u32 = 512;
/// The name of the one tensor of an example's maps file.
pub const MAPS_TENSOR: &str = "maps";

/// An example to put into a bundle: a dataset sample's id, image and caption, and the
/// teacher's maps of it (what `lavender extract` stored for that id).
#[derive(Debug, Clone)]
pub struct ExampleInput {
    pub id: String,
    pub image: RgbImage,
    pub caption: String,
    pub maps: WordMaps,
}

/// Bundle files as (name, bytes), in order.
type NamedFiles = Vec<(String, Vec<u8>)>;

/// The manifest entries of `examples` and their files, in order. Refuses duplicate ids, empty
/// images and maps whose size or values do not fit their words and side.
pub(super) fn example_files(
    examples: &[ExampleInput],
) -> Result<(Vec<BundleExample>, NamedFiles), BundleError> {
    let mut entries = Vec::with_capacity(examples.len());
    let mut files = Vec::with_capacity(2 * examples.len());
    let mut ids = HashSet::new();
    let mut stems = HashSet::new();
    for (index, example) in examples.iter().enumerate() {
        let refuse = |reason: String| {
            BundleError::Export(format!("example {index} (`{}`): {reason}", example.id))
        };
        if !ids.insert(example.id.as_str()) {
            return Err(refuse("the id appears twice".into()));
        }
        let values = example
            .maps
            .to_values()
            .map_err(|error| refuse(error.to_string()))?;
        check_values(&values).map_err(refuse)?;
        let (width, height) = example.image.dimensions();
        if width == 0 || height == 0 {
            return Err(refuse(format!("the image is {width}x{height}")));
        }
        // Ids are dataset keys (`1000092795.jpg`, `a/b`); file names keep their safe part, made
        // unique by the example's position when two ids reduce to the same name.
        let mut stem = file_stem(&example.id);
        if !stems.insert(stem.clone()) {
            stem = format!("{stem}-{index}");
            stems.insert(stem.clone());
        }
        let image = format!("example-{stem}.png");
        let maps = format!("example-{stem}.maps.safetensors");
        files.push((image.clone(), png_bytes(&example.image).map_err(refuse)?));
        files.push((
            maps.clone(),
            maps_bytes(&example.maps, &values).map_err(refuse)?,
        ));
        entries.push(BundleExample {
            id: example.id.clone(),
            image,
            caption: example.caption.clone(),
            words: example.maps.words.clone(),
            side: example.maps.side(),
            maps,
        });
    }
    Ok((entries, files))
}

/// Teacher maps are min-max normalised: a value outside [0, 1] is not one.
fn check_values(values: &[f32]) -> Result<(), String> {
    if let Some(bad) = values.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(format!("a map value is {bad}, outside [0, 1]"));
    }
    Ok(())
}

fn file_stem(id: &str) -> String {
    let stem: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // No hidden or empty names.
    let stem = stem.trim_start_matches('.');
    if stem.is_empty() {
        "example".into()
    } else {
        stem.into()
    }
}

/// `image` as PNG, downscaled (aspect kept) so its longer side is at most [`EXAMPLE_MAX_SIDE`].
fn png_bytes(image: &RgbImage) -> Result<Vec<u8>, String> {
    let (width, height) = image.dimensions();
    let longer = width.max(height);
    let resized;
    let image = if longer > EXAMPLE_MAX_SIDE {
        let scale = |side: u32| {
            ((u64::from(side) * u64::from(EXAMPLE_MAX_SIDE) + u64::from(longer) / 2)
                / u64::from(longer))
            .max(1) as u32
        };
        resized = image::imageops::resize(image, scale(width), scale(height), FilterType::Triangle);
        &resized
    } else {
        image
    };
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .map_err(|error| format!("cannot encode the image as PNG: {error}"))?;
    Ok(bytes)
}

/// `values` (those of `maps`) as a safetensors file with the one tensor [`MAPS_TENSOR`].
fn maps_bytes(maps: &WordMaps, values: &[f32]) -> Result<Vec<u8>, String> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape = vec![maps.words.len(), maps.side(), maps.side()];
    let view = TensorView::new(Dtype::F32, shape, &data).map_err(|error| error.to_string())?;
    safetensors::serialize([(MAPS_TENSOR, view)], None).map_err(|error| error.to_string())
}

impl BundleFiles {
    /// The teacher maps of one example on `device`, checked against the entry (`[words, side,
    /// side]` f32); errors name the file.
    pub fn example_maps(
        &self,
        example: &BundleExample,
        device: &Device,
    ) -> Result<WordMaps, BundleError> {
        let path = self.label().join(&example.maps);
        let error = |reason: String| BundleError::Example {
            path: path.clone(),
            reason,
        };
        let bytes = self.get(&example.maps).ok_or_else(|| {
            error(format!(
                "missing (the maps of the manifest's example `{}`)",
                example.id
            ))
        })?;
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| error(format!("not a safetensors file: {e}")))?;
        let view = tensors
            .tensor(MAPS_TENSOR)
            .map_err(|_| error(format!("has no tensor `{MAPS_TENSOR}`")))?;
        let expected = [example.words.len(), example.side, example.side];
        if view.dtype() != Dtype::F32 || view.shape() != expected {
            return Err(error(format!(
                "`{MAPS_TENSOR}` is {:?} {:?}, the manifest's example `{}` ({} words, side {}) \
                 needs F32 {expected:?}",
                view.dtype(),
                view.shape(),
                example.id,
                example.words.len(),
                example.side
            )));
        }
        let maps = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        WordMaps::from_values(example.words.clone(), example.side, maps, device)
            .map_err(|e| error(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn input(id: &str, words: &[&str], side: usize) -> ExampleInput {
        let count = words.len() * side * side;
        ExampleInput {
            id: id.into(),
            image: RgbImage::from_fn(4, 2, |x, y| image::Rgb([x as u8 * 60, y as u8 * 60, 7])),
            caption: words.join(" "),
            maps: WordMaps::from_values(
                strings(words),
                side,
                (0..count).map(|i| i as f32 / count as f32).collect(),
                &Device::flex(),
            )
            .unwrap(),
        }
    }

    fn bundle(files: NamedFiles) -> BundleFiles {
        let mut bundle = BundleFiles::new("bundle");
        for (name, bytes) in files {
            bundle.insert(name, bytes);
        }
        bundle
    }

    #[test]
    fn example_files_round_trip_and_keep_the_image() {
        let examples = [
            input("a/1.jpg", &["red", "ball"], 3),
            input("a_1.jpg", &["sky"], 2),
        ];
        let (entries, files) = example_files(&examples).unwrap();
        assert_eq!(entries[0].image, "example-a_1.jpg.png");
        assert_eq!(entries[0].maps, "example-a_1.jpg.maps.safetensors");
        // The second id reduces to the same name: made unique by its position.
        assert_eq!(entries[1].image, "example-a_1.jpg-1.png");
        let files = bundle(files);
        for (entry, example) in entries.iter().zip(&examples) {
            let shipped = files.example_maps(entry, &Device::flex()).unwrap();
            assert_eq!(shipped.words, example.maps.words);
            assert_eq!(
                shipped.to_values().unwrap(),
                example.maps.to_values().unwrap()
            );
            let png = image::load_from_memory(files.get(&entry.image).unwrap()).unwrap();
            assert_eq!(png.to_rgb8(), example.image);
        }
    }

    #[test]
    fn large_images_are_downscaled_to_512() {
        let mut example = input("big", &["sky"], 2);
        example.image = RgbImage::new(1024, 300);
        let (entries, files) = example_files(&[example]).unwrap();
        let png = image::load_from_memory(bundle(files).get(&entries[0].image).unwrap()).unwrap();
        assert_eq!((png.width(), png.height()), (512, 150));
    }

    #[test]
    fn bad_examples_are_refused_by_id() {
        let mut loud = input("loud", &["sky"], 2);
        loud.maps.maps = loud.maps.maps.mul_scalar(2.0);
        let error = example_files(&[loud]).unwrap_err().to_string();
        assert!(
            error.contains("`loud`") && error.contains("outside [0, 1]"),
            "{error}"
        );
        let error = example_files(&[input("x", &["a"], 1), input("x", &["b"], 1)])
            .unwrap_err()
            .to_string();
        assert!(error.contains("appears twice"), "{error}");
    }

    #[test]
    fn maps_that_do_not_fit_their_entry_are_named() {
        let (mut entries, files) = example_files(&[input("sky", &["blue", "sky"], 2)]).unwrap();
        let files = bundle(files);
        entries[0].side = 3;
        let error = files
            .example_maps(&entries[0], &Device::flex())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("bundle/example-sky.maps.safetensors")
                && error.contains("[2, 2, 2]")
                && error.contains("F32 [2, 3, 3]"),
            "{error}"
        );
        entries[0].maps = "nothing.safetensors".into();
        let error = files
            .example_maps(&entries[0], &Device::flex())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("bundle/nothing.safetensors: missing"),
            "{error}"
        );
    }
}
