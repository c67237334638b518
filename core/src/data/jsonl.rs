//! `jsonl:PATH`: one `{"image": "relative/or/absolute.jpg", "text": "...", "id": "optional"}`
//! object per line. Blank lines are ignored; the id defaults to the image path.

use std::path::Path;

use serde::Deserialize;

use super::{DataError, ImageSource, Sample};

#[derive(Deserialize)]
struct Line {
    image: String,
    text: String,
    id: Option<String>,
}

pub fn read(path: &Path) -> Result<Vec<Sample>, DataError> {
    let content = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    content
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            let parsed: Line = serde_json::from_str(line).map_err(|error| DataError::Line {
                path: path.to_path_buf(),
                line: number + 1,
                reason: error.to_string(),
            })?;
            Ok(Sample {
                id: parsed.id.unwrap_or_else(|| parsed.image.clone()),
                image: ImageSource::File(base.join(&parsed.image)),
                text: parsed.text,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_relative_to_the_file() {
        let dir = std::env::temp_dir().join(format!("lavender-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pairs.jsonl");
        std::fs::write(
            &path,
            "{\"image\": \"a.png\", \"text\": \"a dog\"}\n\n{\"image\": \"/abs/b.png\", \"text\": \"a cat\", \"id\": \"cat-1\"}\n",
        )
        .unwrap();
        let samples = read(&path).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].id, "a.png");
        assert_eq!(samples[0].image, ImageSource::File(dir.join("a.png")));
        assert_eq!(samples[1].id, "cat-1");
        assert_eq!(samples[1].image, ImageSource::File("/abs/b.png".into()));

        std::fs::write(&path, "{\"image\": \"a.png\"}\n").unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(
            error.contains("pairs.jsonl:1") && error.contains("text"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
