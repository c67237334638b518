//! `flickr30k:PATH`: Karpathy's split file (`dataset_flickr30k.json`: `{"images": [{"filename",
//! "split", "sentences": [{"raw"}]}]}`), images in `flickr30k-images/` beside it (or beside
//! the file itself). One sample per image, with its first caption, keyed by file name, as the
//! reference's attention layout (`<filename>/lpm_attention/...`) is.

use std::path::Path;

use serde::Deserialize;

use super::{DataError, ImageSource, Sample};

#[derive(Deserialize)]
struct Karpathy {
    images: Vec<Image>,
}

#[derive(Deserialize)]
struct Image {
    filename: String,
    sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
struct Sentence {
    raw: String,
}

pub fn read(path: &Path) -> Result<Vec<Sample>, DataError> {
    let content = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parsed: Karpathy = serde_json::from_str(&content).map_err(|error| DataError::Format {
        path: path.to_path_buf(),
        reason: format!("not a Karpathy split file: {error}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let images = if base.join("flickr30k-images").is_dir() {
        base.join("flickr30k-images")
    } else {
        base.to_path_buf()
    };
    parsed
        .images
        .into_iter()
        .map(|image| {
            let text = image
                .sentences
                .first()
                .map(|s| s.raw.trim().to_string())
                .ok_or_else(|| DataError::Format {
                    path: path.to_path_buf(),
                    reason: format!("image {} has no caption", image.filename),
                })?;
            Ok(Sample {
                image: ImageSource::File(images.join(&image.filename)),
                id: image.filename,
                text,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_caption_per_image_with_images_folder() {
        let dir = std::env::temp_dir().join(format!("lavender-flickr-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("flickr30k-images")).unwrap();
        let path = dir.join("dataset_flickr30k.json");
        std::fs::write(
            &path,
            r#"{"images": [{"filename": "1.jpg", "split": "train", "sentences": [{"raw": " A dog. "}, {"raw": "x"}]}]}"#,
        )
        .unwrap();
        let samples = read(&path).unwrap();
        assert_eq!(
            samples,
            vec![Sample {
                id: "1.jpg".into(),
                image: ImageSource::File(dir.join("flickr30k-images/1.jpg")),
                text: "A dog.".into()
            }]
        );
        std::fs::write(
            &path,
            r#"{"images": [{"filename": "1.jpg", "sentences": []}]}"#,
        )
        .unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("no caption"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
