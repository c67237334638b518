//! The reference implementation's on-disk maps: for an image file `NAME` with stem `STEM`,
//! `<root>/NAME/lpm_attention/STEM/attention_<word>.jpg`, one 8-bit grayscale JPEG per word.
//! The published `flickr1k-sd-attn` / `rlaif1k-sd-attn` subsets use it.
//!
//! Reading differs from the reference in one respect: the word is everything between
//! `attention_` and `.jpg`, where the reference keeps only the text up to the next `_` or `.`.

use std::path::{Path, PathBuf};

use image::{GrayImage, ImageFormat};

use super::{DataError, attn_store::quantize};
use crate::maps::WordMaps;

/// The folder of one image's maps.
pub fn sample_dir(root: &Path, image_file_name: &str) -> PathBuf {
    let stem = Path::new(image_file_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| image_file_name.to_string());
    root.join(image_file_name).join("lpm_attention").join(stem)
}

/// Writes one JPEG per word, each map as 8-bit grey levels.
pub fn write_sample(root: &Path, image_file_name: &str, maps: &WordMaps) -> Result<(), DataError> {
    let dir = sample_dir(root, image_file_name);
    let bytes = quantize(&maps.to_values().map_err(|error| DataError::Format {
        path: dir.clone(),
        reason: error.to_string(),
    })?);
    std::fs::create_dir_all(&dir).map_err(|source| DataError::Io {
        path: dir.clone(),
        source,
    })?;
    let side = maps.side();
    for (index, word) in maps.words.iter().enumerate() {
        let pixels = bytes[index * side * side..(index + 1) * side * side].to_vec();
        let image = GrayImage::from_raw(side as u32, side as u32, pixels).expect("side^2 bytes");
        let path = dir.join(format!("attention_{word}.jpg"));
        image
            .save_with_format(&path, ImageFormat::Jpeg)
            .map_err(|error| DataError::Format {
                path: path.clone(),
                reason: error.to_string(),
            })?;
    }
    Ok(())
}

/// Reads every `attention_<word>.jpg` of one image, as `(word, values in [0, 1], side)`,
/// sorted by word. A missing folder is an empty result, as the reference skips such samples.
pub fn read_sample(
    root: &Path,
    image_file_name: &str,
) -> Result<Vec<(String, Vec<f32>, usize)>, DataError> {
    let dir = sample_dir(root, image_file_name);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut maps = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(word) = name
            .strip_prefix("attention_")
            .and_then(|rest| rest.strip_suffix(".jpg"))
        else {
            continue;
        };
        let path = entry.path();
        let image = image::open(&path)
            .map_err(|error| DataError::Format {
                path: path.clone(),
                reason: error.to_string(),
            })?
            .to_luma8();
        if image.width() != image.height() {
            return Err(DataError::Format {
                path,
                reason: format!(
                    "map is {}x{}, expected a square",
                    image.width(),
                    image.height()
                ),
            });
        }
        let side = image.width() as usize;
        maps.push((
            word.to_string(),
            image
                .into_raw()
                .into_iter()
                .map(|v| v as f32 / 255.0)
                .collect(),
            side,
        ));
    }
    maps.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(maps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_maps_read_back_close_to_the_originals() {
        let root = std::env::temp_dir().join(format!("lavender-reference-{}", std::process::id()));
        let side = 32;
        // A smooth gradient survives JPEG nearly unchanged.
        let dog: Vec<u8> = (0..side * side).map(|i| ((i % side) * 8) as u8).collect();
        let ball: Vec<u8> = (0..side * side).map(|i| ((i / side) * 8) as u8).collect();
        let words = vec!["dog".to_string(), "ball".to_string()];
        let maps = WordMaps::from_values(
            words,
            side,
            super::super::attn_store::dequantize(&[dog.clone(), ball].concat()),
            &burn::tensor::Device::flex(),
        )
        .unwrap();
        write_sample(&root, "1000092795.jpg", &maps).unwrap();
        assert!(
            root.join("1000092795.jpg/lpm_attention/1000092795/attention_dog.jpg")
                .is_file()
        );

        let maps = read_sample(&root, "1000092795.jpg").unwrap();
        assert_eq!(
            maps.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
            ["ball", "dog"]
        );
        let worst = maps[1]
            .1
            .iter()
            .zip(&dog)
            .map(|(read, &original)| (read - original as f32 / 255.0).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 6.0 / 255.0, "JPEG error {worst}");
        assert_eq!(maps[1].2, side);
        assert!(read_sample(&root, "missing.jpg").unwrap().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
