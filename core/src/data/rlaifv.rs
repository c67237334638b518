//! `rlaifv:PATH`: the RLAIF-V preference dataset (openbmb/RLAIF-V-Dataset) as its parquet files
//! (a file, or a folder of `*.parquet`). The teacher's text is the `chosen` answer, as Lavender
//! supervises the answer; ids are the dataset's `idx`. Images stay in the files and are read
//! one row group at a time by [`RowGroupImages`], so listing 83k samples reads no image bytes.

use std::path::Path;

use parquet::{file::reader::FileReader, record::Field};

use super::{
    DataError, ImageSource, Sample,
    conversation::{Conversation, Role, Turn},
    parquet_rows::{column, column_names, files, format_error, open, projection},
};

pub use super::parquet_rows::RowGroupImages;

/// One RLAIF-V row as listed (no image bytes).
struct Row {
    id: String,
    image: ImageSource,
    question: Option<String>,
    chosen: String,
}

fn rows(path: &Path) -> Result<Vec<Row>, DataError> {
    let mut listed = Vec::new();
    for file in files(path)? {
        let reader = open(&file)?;
        let has_question = column_names(&reader).iter().any(|name| name == "question");
        let columns: &[&str] = if has_question {
            &["question", "chosen", "idx"]
        } else {
            &["chosen", "idx"]
        };
        let schema = projection(&reader, &file, columns, "an RLAIF-V")?;
        let rows = reader
            .get_row_iter(Some(schema))
            .map_err(|error| format_error(&file, error))?;
        for (row_index, row) in rows.enumerate() {
            let row =
                row.map_err(|error| format_error(&file, format!("row {row_index}: {error}")))?;
            let text = |name: &str| match column(&row, name) {
                Some(Field::Str(text)) => Some(text.clone()),
                _ => None,
            };
            let id = match column(&row, "idx") {
                Some(Field::Long(idx)) => idx.to_string(),
                Some(Field::Int(idx)) => idx.to_string(),
                Some(Field::Str(idx)) => idx.clone(),
                _ => format!(
                    "{}#{row_index}",
                    file.file_name().unwrap_or_default().to_string_lossy()
                ),
            };
            listed.push(Row {
                id,
                image: ImageSource::ParquetRow {
                    file: file.clone(),
                    row: row_index,
                },
                question: text("question"),
                chosen: text("chosen").unwrap_or_default(),
            });
        }
    }
    Ok(listed)
}

/// One sample per row: the chosen answer, keyed by `idx` (the teacher's input).
pub fn read(path: &Path) -> Result<Vec<Sample>, DataError> {
    Ok(rows(path)?
        .into_iter()
        .map(|row| Sample {
            id: row.id,
            image: row.image,
            text: row.chosen,
        })
        .collect())
}

/// One conversation per row: the user asks `question` (with the image), the assistant answers
/// `chosen`; keyed by `idx`, as the teacher's maps are. A row without a question or answer is
/// an error naming the file and row.
pub fn read_conversations(path: &Path) -> Result<Vec<Conversation>, DataError> {
    rows(path)?
        .into_iter()
        .map(|row| {
            let ImageSource::ParquetRow { file, row: index } = &row.image else {
                unreachable!("RLAIF-V images are parquet rows")
            };
            let question = row.question.clone().filter(|q| !q.trim().is_empty());
            let (Some(question), false) = (question, row.chosen.trim().is_empty()) else {
                return Err(format_error(
                    file,
                    format!(
                        "row {index} (idx {}): needs a `question` and a `chosen` answer",
                        row.id
                    ),
                ));
            };
            Ok(Conversation {
                teacher_id: row.id.clone(),
                id: row.id,
                image: row.image,
                turns: vec![
                    Turn::new(Role::User, question.trim()),
                    Turn::new(Role::Assistant, row.chosen.trim()),
                ],
                category: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rlaifv-tiny")
    }

    #[test]
    fn lists_chosen_answers_by_idx_and_reads_images_across_row_groups() {
        let samples = read(&fixture()).unwrap();
        let listed: Vec<(&str, &str)> = samples
            .iter()
            .map(|s| (s.id.as_str(), s.text.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("17", "a red ball on the grass"),
                ("18", "two dogs near the zebra"),
                ("19", "a skateboard")
            ]
        );
        let png = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sd-tiny/image.png"),
        )
        .unwrap();
        let mut images = RowGroupImages::default();
        let file = fixture().join("RLAIF-V-Dataset_000.parquet");
        // Row 2 is in the second row group, row 0 in the first: both directions work.
        assert_eq!(images.bytes(&file, 2).unwrap(), b"broken image bytes");
        assert_eq!(images.bytes(&file, 0).unwrap(), png);
        assert_eq!(images.bytes(&file, 1).unwrap(), png);
        assert!(
            images
                .bytes(&file, 3)
                .unwrap_err()
                .to_string()
                .contains("past the end")
        );
    }

    #[test]
    fn conversations_ask_the_question_and_answer_the_chosen() {
        let samples = read_conversations(&fixture()).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(
            (samples[0].id.as_str(), samples[0].teacher_id.as_str()),
            ("17", "17")
        );
        assert_eq!(
            samples[1].turns,
            vec![
                Turn::new(Role::User, "What is in the picture?"),
                Turn::new(Role::Assistant, "two dogs near the zebra"),
            ]
        );
        assert_eq!(samples[1].teacher_text(), "two dogs near the zebra");
        // The OCR-VQA fixture lacks `chosen`: refused, naming the file and the columns.
        let other = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ocrvqa-tiny");
        let error = read_conversations(&other).unwrap_err().to_string();
        assert!(
            error.contains("train-00000-of-00001.parquet") && error.contains("chosen"),
            "{error}"
        );
    }

    #[test]
    fn other_parquet_files_are_refused_by_their_columns() {
        let error = read(Path::new("/nonexistent.parquet")).unwrap_err();
        assert!(matches!(error, DataError::Io { .. }), "{error}");
    }
}
