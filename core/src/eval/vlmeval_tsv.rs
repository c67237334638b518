//! VLMEvalKit's benchmark files: a tab-separated table with a header (written by pandas, so
//! fields holding tabs, quotes or newlines are quoted) and the columns `index`, `image` (the
//! image's encoded bytes in base64), `question`, `answer`, and optionally the options `A`,
//! `B`, ... (a multiple-choice question; an empty cell is no option), `hint` and `category`.
//! As in VLMEvalKit, an `image` cell that holds another row's `index` (short, not base64)
//! reuses that row's image.

use std::{collections::HashMap, path::Path};

use base64::Engine;

use super::{EvalImage, EvalItem};

/// A file that is not such a table.
#[derive(Debug, thiserror::Error)]
pub enum TsvError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{path}, row {row} (index {index}): {reason}")]
    Row {
        path: String,
        row: usize,
        index: String,
        reason: String,
    },
}

/// The items of the TSV at `path`, in its order.
pub fn read(path: &Path) -> Result<Vec<EvalItem>, TsvError> {
    let shown = path.display().to_string();
    let file_error = |reason: String| TsvError::File {
        path: shown.clone(),
        reason,
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .flexible(false)
        .from_path(path)
        .map_err(|error| file_error(error.to_string()))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|error| file_error(error.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    let column = |name: &str| header.iter().position(|h| h == name);
    let required = |name: &str| {
        column(name).ok_or_else(|| {
            file_error(format!(
                "no `{name}` column (the header has {header:?}); a VLMEvalKit TSV has index, image, question, answer"
            ))
        })
    };
    let (index_col, image_col, question_col, answer_col) = (
        required("index")?,
        required("image")?,
        required("question")?,
        required("answer")?,
    );
    let (hint_col, category_col) = (column("hint"), column("category"));
    let option_cols: Vec<(char, usize)> = ('A'..='Z')
        .filter_map(|letter| column(&letter.to_string()).map(|col| (letter, col)))
        .collect();

    let mut items: Vec<EvalItem> = Vec::new();
    // Row index -> position in `items`, for image cells that name another row.
    let mut by_index: HashMap<String, usize> = HashMap::new();
    for (row, record) in reader.records().enumerate() {
        let row = row + 1; // 1-based data rows, after the header
        let record = record.map_err(|error| file_error(format!("row {row}: {error}")))?;
        let cell = |col: usize| record.get(col).unwrap_or("").to_string();
        let index = cell(index_col);
        let row_error = |reason: String| TsvError::Row {
            path: shown.clone(),
            row,
            index: index.clone(),
            reason,
        };
        let image_cell = cell(image_col);
        let image = if image_cell.len() < 64 && by_index.contains_key(image_cell.trim()) {
            items[by_index[image_cell.trim()]].image.clone()
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(image_cell.trim())
                .map_err(|error| row_error(format!("the image is not base64: {error}")))?;
            if bytes.is_empty() {
                return Err(row_error("the image cell is empty".into()));
            }
            EvalImage::Bytes(bytes)
        };
        let choices: Vec<(char, String)> = option_cols
            .iter()
            .map(|&(letter, col)| (letter, cell(col)))
            .filter(|(_, text)| !text.trim().is_empty() && text.trim() != "nan")
            .collect();
        let mut question = cell(question_col);
        if let Some(hint) = hint_col
            .map(cell)
            .filter(|h| !h.trim().is_empty() && h != "nan")
        {
            question = format!("Hint: {hint}\n{question}");
        }
        let answer = cell(answer_col);
        if !choices.is_empty()
            && !choices
                .iter()
                .any(|(letter, _)| answer.trim().starts_with(*letter))
        {
            return Err(row_error(format!(
                "the answer {answer:?} is none of the options' letters {:?}",
                choices.iter().map(|(l, _)| *l).collect::<String>()
            )));
        }
        by_index.insert(index.clone(), items.len());
        items.push(EvalItem {
            id: index,
            image,
            question,
            answer,
            choices,
            category: category_col.map(cell).filter(|c| !c.is_empty()),
        });
    }
    if items.is_empty() {
        return Err(file_error("no rows".into()));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lavender-tsv-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bench.tsv");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn rows_options_hints_categories_and_shared_images() {
        let image = b64(&[1u8; 80]);
        let text = format!(
            "index\timage\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\n\
             7\t{image}\tWhat colour?\t\tred\tblue\t\t\tB\tcolour\n\
             8\t7\t\"Which shape,\nreally?\"\tLook left.\tcircle\tsquare\ttriangle\tnan\tC\tshape\n"
        );
        let items = read(&write("ok", &text)).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].id, "7");
        assert_eq!(items[0].image, EvalImage::Bytes(vec![1u8; 80]));
        assert_eq!(
            items[0].choices,
            vec![('A', "red".into()), ('B', "blue".into())]
        );
        assert_eq!(items[0].category.as_deref(), Some("colour"));
        // Row 8 names row 7's image, quotes a newline, has a hint and three options.
        assert_eq!(items[1].image, items[0].image);
        assert_eq!(items[1].question, "Hint: Look left.\nWhich shape,\nreally?");
        assert_eq!(items[1].choices.len(), 3);
        assert!(items[1].is_correct("C. triangle"));
    }

    #[test]
    fn bad_tables_name_the_file_and_row() {
        let error = read(&write("cols", "index\tquestion\n1\tq\n")).unwrap_err();
        assert!(error.to_string().contains("no `image` column"), "{error}");
        let error = read(&write(
            "b64",
            "index\timage\tquestion\tanswer\n1\tAAAA\tq\ta\n2\tnot base64!\tq\ta\n",
        ))
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("row 2 (index 2): the image is not base64"),
            "{error}"
        );
        let error = read(&write(
            "letter",
            &format!(
                "index\timage\tquestion\tA\tB\tanswer\n1\t{}\tq\tx\ty\tE\n",
                b64(b"png")
            ),
        ))
        .unwrap_err();
        assert!(error.to_string().contains("none of the options"), "{error}");
        let error = read(&write("empty", "index\timage\tquestion\tanswer\n")).unwrap_err();
        assert!(error.to_string().contains("no rows"), "{error}");
        let error = read(Path::new("/nonexistent/bench.tsv")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/bench.tsv"),
            "{error}"
        );
    }
}
