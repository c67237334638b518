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
use serde::{Deserialize, Serialize};

use super::bundle::{BundleError, BundleFiles};
use crate::{
    align::{loss::teacher_row, resize::bilinear_weights, words::normalise_word},
    data::TeacherMaps,
};

/// The longest side, in pixels, of an example image in a bundle.
pub const EXAMPLE_MAX_SIDE: u32 = 512;
/// The name of the one tensor of an example's maps file.
pub const MAPS_TENSOR: &str = "maps";

/// One example image shipped in a bundle with the SD teacher's word maps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleExample {
    pub id: String,
    /// Bundle file name of the image (PNG), e.g. "example-<id>.png".
    pub image: String,
    /// The caption the teacher maps were extracted with.
    pub caption: String,
    /// Teacher words, in the order of the rows of the maps file.
    pub words: Vec<String>,
    /// Teacher map side S.
    pub side: usize,
    /// Bundle file name of the maps: a safetensors file with one f32 tensor "maps"
    /// [words, S, S] in [0, 1].
    pub maps: String,
}

/// An example to put into a bundle: a dataset sample's id, image and caption, and the
/// teacher's maps of it (what `lavender extract` stored for that id).
#[derive(Debug, Clone)]
pub struct ExampleInput {
    pub id: String,
    pub image: RgbImage,
    pub caption: String,
    pub maps: TeacherMaps,
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
        check_maps(&example.maps).map_err(refuse)?;
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
        files.push((maps.clone(), maps_bytes(&example.maps).map_err(refuse)?));
        entries.push(BundleExample {
            id: example.id.clone(),
            image,
            caption: example.caption.clone(),
            words: example.maps.words.clone(),
            side: example.maps.side,
            maps,
        });
    }
    Ok((entries, files))
}

fn check_maps(maps: &TeacherMaps) -> Result<(), String> {
    let expected = maps.words.len() * maps.side * maps.side;
    if maps.side == 0 || maps.maps.len() != expected {
        return Err(format!(
            "{} map values for {} words of side {}, expected {expected}",
            maps.maps.len(),
            maps.words.len(),
            maps.side
        ));
    }
    if let Some(bad) = maps.maps.iter().find(|v| !(0.0..=1.0).contains(*v)) {
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

fn maps_bytes(maps: &TeacherMaps) -> Result<Vec<u8>, String> {
    let data: Vec<u8> = maps.maps.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape = vec![maps.words.len(), maps.side, maps.side];
    let view = TensorView::new(Dtype::F32, shape, &data).map_err(|error| error.to_string())?;
    safetensors::serialize([(MAPS_TENSOR, view)], None).map_err(|error| error.to_string())
}

impl BundleFiles {
    /// The teacher maps of one example, checked against the entry (`[words, side, side]` f32);
    /// errors name the file.
    pub fn example_maps(&self, example: &BundleExample) -> Result<TeacherMaps, BundleError> {
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
        Ok(TeacherMaps {
            words: example.words.clone(),
            side: example.side,
            maps,
        })
    }
}

/// Row of `word` in the teacher's `words`: the same matching rule as training's alignment loss
/// ([`teacher_row`]: punctuation and empty words never match) after the word is keyed as
/// training keys the student's answer words ([`normalise_word`]: lower-cased, surrounding
/// punctuation removed, so the explorer's `"Dog."` finds the teacher's `"dog"`).
pub fn teacher_word_row(teacher_words: &[String], word: &str) -> Option<usize> {
    teacher_row(teacher_words, &normalise_word(word))
}

/// Mean squared error between a student map (side `student_side`, row-major) and a teacher map
/// (side `teacher_side`); when the sides differ the student map is resized bilinearly
/// (align_corners = false, as torch's `F.interpolate` default, no antialiasing) to the
/// teacher's side first. Pure CPU on slices: the browser calls it on read-back values. NaN when
/// a side is 0 or a slice's length is not its side squared (nothing to compare).
pub fn map_mse(student: &[f32], student_side: usize, teacher: &[f32], teacher_side: usize) -> f32 {
    if student_side == 0
        || teacher_side == 0
        || student.len() != student_side * student_side
        || teacher.len() != teacher_side * teacher_side
    {
        return f32::NAN;
    }
    let resized;
    let student = if student_side == teacher_side {
        student
    } else {
        resized = resize_square(student, student_side, teacher_side);
        &resized
    };
    let sum: f64 = student
        .iter()
        .zip(teacher)
        .map(|(&s, &t)| (f64::from(s) - f64::from(t)).powi(2))
        .sum();
    (sum / teacher.len() as f64) as f32
}

/// A square `from x from` map resized to `to x to`: the separable bilinear resize of
/// [`bilinear_weights`] (rows, then columns).
fn resize_square(map: &[f32], from: usize, to: usize) -> Vec<f32> {
    let weights = bilinear_weights(from, to);
    // Rows: [to, from].
    let mut rows = vec![0f32; to * from];
    for (i, out) in rows.chunks_exact_mut(from).enumerate() {
        for (y, &w) in weights[i * from..(i + 1) * from].iter().enumerate() {
            if w != 0.0 {
                for (o, &v) in out.iter_mut().zip(&map[y * from..(y + 1) * from]) {
                    *o += w * v;
                }
            }
        }
    }
    // Columns: [to, to].
    let mut resized = vec![0f32; to * to];
    for (row, out) in rows.chunks_exact(from).zip(resized.chunks_exact_mut(to)) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = weights[j * from..(j + 1) * from]
                .iter()
                .zip(row)
                .map(|(w, v)| w * v)
                .sum();
        }
    }
    resized
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn close(actual: f32, expected: f32) {
        assert!(
            (actual - expected).abs() < 1e-6,
            "{actual} != {expected} (expected)"
        );
    }

    #[test]
    fn map_mse_of_maps_of_the_same_side() {
        // Squared errors 1, 0, 0, 1.
        close(map_mse(&[0., 1., 0., 1.], 2, &[1., 1., 0., 0.], 2), 0.5);
        close(map_mse(&[0.25; 9], 3, &[0.75; 9], 3), 0.25);
        assert!(map_mse(&[0.; 3], 2, &[0.; 4], 2).is_nan());
        assert!(map_mse(&[], 0, &[], 0).is_nan());
    }

    /// `F.interpolate([[0, 4], [8, 12]], size=4, mode="bilinear", align_corners=False)`: output
    /// pixel `i` reads the input at `max((i + 0.5) / 2 - 0.5, 0)` = 0, 0.25, 0.75, 1.25 (the
    /// last clamped to 1), so the weights of the second input row / column are 0, 1/4, 3/4, 1
    /// and the value at (i, j) is `8 r_i + 4 r_j`.
    #[test]
    fn map_mse_resizes_the_student_bilinearly_to_the_teacher() {
        let student = [0., 4., 8., 12.];
        #[rustfmt::skip]
        let resized = [
            0., 1., 3., 4.,
            2., 3., 5., 6.,
            6., 7., 9., 10.,
            8., 9., 11., 12.,
        ];
        assert_eq!(resize_square(&student, 2, 4), resized);
        close(map_mse(&student, 2, &resized, 4), 0.0);
        // Against zeros: (26 + 74 + 266 + 410) / 16, the rows' sums of squares.
        close(map_mse(&student, 2, &[0.; 16], 4), 48.5);
        // Downscaling 4 -> 2 reads at 0.5 and 2.5: the means of the 2x2 blocks.
        close(map_mse(&resized, 4, &[1.5, 4.5, 7.5, 10.5], 2), 0.0);
    }

    #[test]
    fn teacher_words_match_as_training_matches_them() {
        let teacher = strings(&["a", "brown", "dog", "-"]);
        assert_eq!(teacher_word_row(&teacher, "dog"), Some(2));
        assert_eq!(teacher_word_row(&teacher, "Dog"), Some(2));
        assert_eq!(teacher_word_row(&teacher, "dog."), Some(2));
        assert_eq!(teacher_word_row(&teacher, " BROWN,"), Some(1));
        assert_eq!(teacher_word_row(&teacher, "dogs"), None);
        assert_eq!(teacher_word_row(&teacher, "-"), None);
        assert_eq!(teacher_word_row(&teacher, "."), None);
        assert_eq!(teacher_word_row(&teacher, ""), None);
        assert_eq!(teacher_word_row(&strings(&[""]), ""), None);
    }

    fn input(id: &str, words: &[&str], side: usize) -> ExampleInput {
        let count = words.len() * side * side;
        ExampleInput {
            id: id.into(),
            image: RgbImage::from_fn(4, 2, |x, y| image::Rgb([x as u8 * 60, y as u8 * 60, 7])),
            caption: words.join(" "),
            maps: TeacherMaps {
                words: strings(words),
                side,
                maps: (0..count).map(|i| i as f32 / count as f32).collect(),
            },
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
            assert_eq!(files.example_maps(entry).unwrap(), example.maps);
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
        let mut short = input("short", &["sky"], 2);
        short.maps.maps.pop();
        let error = example_files(&[short]).unwrap_err().to_string();
        assert!(
            error.contains("`short`") && error.contains("expected 4"),
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
        let error = files.example_maps(&entries[0]).unwrap_err().to_string();
        assert!(
            error.contains("bundle/example-sky.maps.safetensors")
                && error.contains("[2, 2, 2]")
                && error.contains("F32 [2, 3, 3]"),
            "{error}"
        );
        entries[0].maps = "nothing.safetensors".into();
        let error = files.example_maps(&entries[0]).unwrap_err().to_string();
        assert!(
            error.contains("bundle/nothing.safetensors: missing"),
            "{error}"
        );
    }
}
