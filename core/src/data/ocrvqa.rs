//! `ocrvqa:PATH`: OCR-VQA as HuggingFaceM4/the_cauldron's `ocrvqa` subset: parquet files (a
//! file or a folder of `*.parquet`) with `images` (a list of `{bytes, path}`; the first is the
//! sample's image) and `texts` (a list of `{user, assistant, source}`, one per question). Each
//! row is a multi-turn conversation; its id is `image_{row}.jpg`, `row` counting across the
//! files in order, which is how the reference names OCR-VQA's teacher maps. A `.json` or
//! `.jsonl` PATH is read as conversations instead (see [`super::jsonl`]).

use std::path::Path;

use parquet::{
    file::reader::FileReader,
    record::{Field, Row},
};

use super::{
    DataError, ImageSource,
    conversation::{Conversation, Role, Turn, strip_image_placeholder},
    jsonl,
    parquet_rows::{column, files, format_error, open, projection},
};

/// The id the reference gives row `row` (its SD folder name).
pub fn sample_id(row: usize) -> String {
    format!("image_{row}.jpg")
}

pub fn read_conversations(path: &Path) -> Result<Vec<Conversation>, DataError> {
    if path
        .extension()
        .is_some_and(|e| e == "json" || e == "jsonl")
    {
        return jsonl::read_conversations(path);
    }
    let mut samples = Vec::new();
    for file in files(path)? {
        let reader = open(&file)?;
        let schema = projection(&reader, &file, &["texts"], "a the_cauldron (ocrvqa)")?;
        // `images` must be there too, though listing reads no image bytes.
        projection(&reader, &file, &["images"], "a the_cauldron (ocrvqa)")?;
        let rows = reader
            .get_row_iter(Some(schema))
            .map_err(|error| format_error(&file, error))?;
        for (row_index, row) in rows.enumerate() {
            let at = |reason: String| format_error(&file, format!("row {row_index}: {reason}"));
            let row = row.map_err(|error| at(error.to_string()))?;
            let turns = turns(&row).map_err(at)?;
            let id = sample_id(samples.len());
            let conversation = Conversation {
                teacher_id: id.clone(),
                id,
                image: ImageSource::ParquetRow {
                    file: file.clone(),
                    row: row_index,
                },
                turns,
                category: None,
            };
            conversation.check().map_err(at)?;
            samples.push(conversation);
        }
    }
    Ok(samples)
}

/// The row's `texts` as alternating user and assistant turns.
fn turns(row: &Row) -> Result<Vec<Turn>, String> {
    let Some(Field::ListInternal(texts)) = column(row, "texts") else {
        return Err("`texts` is not a list".into());
    };
    let mut turns = Vec::with_capacity(2 * texts.len());
    for (index, text) in texts.elements().iter().enumerate() {
        let Field::Group(pair) = text else {
            return Err(format!(
                "texts[{index}] is not a {{user, assistant}} struct"
            ));
        };
        for (name, role) in [("user", Role::User), ("assistant", Role::Assistant)] {
            match column(pair, name) {
                Some(Field::Str(content)) => {
                    turns.push(Turn::new(role, strip_image_placeholder(content)))
                }
                _ => return Err(format!("texts[{index}] has no `{name}` string")),
            }
        }
    }
    Ok(turns)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::data::ImageLoader;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ocrvqa-tiny")
    }

    #[test]
    fn rows_become_multi_turn_conversations_named_as_the_reference() {
        let samples = read_conversations(&fixture()).unwrap();
        let ids: Vec<&str> = samples.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["image_0.jpg", "image_1.jpg", "image_2.jpg"]);
        assert_eq!(samples[0].teacher_id, "image_0.jpg");
        assert_eq!(
            samples[0].turns,
            vec![
                Turn::new(
                    Role::User,
                    "Who wrote this book?\nAnswer the question using a single word or phrase."
                ),
                Turn::new(Role::Assistant, "Jane Austen"),
                Turn::new(Role::User, "What is the title of this book?"),
                Turn::new(Role::Assistant, "Emma"),
            ]
        );
        assert_eq!(samples[0].teacher_text(), "Jane Austen Emma");
        assert_eq!(samples[2].turns.len(), 2);

        // Images come from the first element of `images`, across row groups.
        let mut loader = ImageLoader::default();
        let image = loader.load(&samples[2].image).unwrap();
        assert!(image.width() > 0);
        let broken = loader.load(&samples[1].image).unwrap_err().to_string();
        assert!(
            broken.contains("row 1") && broken.contains("decode"),
            "{broken}"
        );
    }

    #[test]
    fn other_parquet_files_are_refused_by_their_columns() {
        let rlaifv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/rlaifv-tiny/RLAIF-V-Dataset_000.parquet");
        let error = read_conversations(&rlaifv).unwrap_err().to_string();
        assert!(
            error.contains("RLAIF-V-Dataset_000.parquet") && error.contains("texts"),
            "{error}"
        );
    }
}
