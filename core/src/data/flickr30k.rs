//! `flickr30k:PATH`: Karpathy's split file (`dataset_flickr30k.json`: `{"images": [{"filename",
//! "split", "sentences": [{"raw"}]}]}`), images in `flickr30k-images/` beside it (or beside
//! the file itself). The teacher's view ([`read`]) is one sample per image, with its first
//! caption, keyed by file name, as the reference's attention layout
//! (`<filename>/lpm_attention/...`) is; the trainer's ([`read_conversations`]) is one sample per
//! caption, as the reference trains, all of an image's captions sharing its maps.

use std::path::Path;

use serde::Deserialize;

use super::{DataError, ImageSource, Sample, conversation::Conversation};

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

fn images(path: &Path) -> Result<(Vec<Image>, std::path::PathBuf), DataError> {
    let content = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parsed: Karpathy = serde_json::from_str(&content).map_err(|error| DataError::Format {
        path: path.to_path_buf(),
        reason: format!("not a Karpathy split file: {error}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let folder = if base.join("flickr30k-images").is_dir() {
        base.join("flickr30k-images")
    } else {
        base.to_path_buf()
    };
    for (index, image) in parsed.images.iter().enumerate() {
        if image.sentences.iter().all(|s| s.raw.trim().is_empty()) {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                reason: format!("image {index} ({}) has no caption", image.filename),
            });
        }
    }
    Ok((parsed.images, folder))
}

/// One sample per image: its first caption.
pub fn read(path: &Path) -> Result<Vec<Sample>, DataError> {
    let (images, folder) = images(path)?;
    Ok(images
        .into_iter()
        .map(|image| Sample {
            image: ImageSource::File(folder.join(&image.filename)),
            text: image.sentences[0].raw.trim().to_string(),
            id: image.filename,
        })
        .collect())
}

/// One caption conversation per (image, non-empty caption): id `NAME#k` (k counts the image's
/// captions from 0), teacher maps keyed by `NAME`.
pub fn read_conversations(path: &Path) -> Result<Vec<Conversation>, DataError> {
    let (images, folder) = images(path)?;
    let mut samples = Vec::with_capacity(images.len() * 5);
    for image in images {
        let file = ImageSource::File(folder.join(&image.filename));
        for (k, sentence) in image.sentences.iter().enumerate() {
            if sentence.raw.trim().is_empty() {
                continue;
            }
            let mut sample = Conversation::caption(
                format!("{}#{k}", image.filename),
                file.clone(),
                &sentence.raw,
            );
            sample.teacher_id = image.filename.clone();
            samples.push(sample);
        }
    }
    Ok(samples)
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
        let conversations = read_conversations(&path).unwrap();
        assert_eq!(conversations.len(), 2);
        assert_eq!(
            (
                conversations[1].id.as_str(),
                conversations[1].teacher_id.as_str()
            ),
            ("1.jpg#1", "1.jpg")
        );
        assert_eq!(conversations[0].teacher_text(), "A dog.");
        assert_eq!(
            conversations[0].image,
            ImageSource::File(dir.join("flickr30k-images/1.jpg"))
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
