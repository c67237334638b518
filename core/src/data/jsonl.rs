//! `jsonl:PATH`: one JSON object per line, either a caption pair
//! `{"image": "relative/or/absolute.jpg", "text": "...", "id": "optional"}` or a conversation
//! `{"image": ..., "conversations": [{"role": "user", "content": "..."}, ...], "id": optional}`
//! (LLaVA's `{"from": "human"|"gpt", "value"}` turns are accepted too, `<image>` placeholders
//! dropped). Image paths are relative to the file; blank lines are ignored; the id defaults to
//! the image path. A conversation may name the sample whose teacher maps it uses
//! (`"teacher_id"`, default its own id: questions about one image can share the maps of its
//! caption) and a `"category"` for per-group scores. A `.json` file holding an array of such objects reads the same way.

use std::path::Path;

use serde_json::Value;

use super::{
    DataError, ImageSource, Sample,
    conversation::{
        Conversation, Role, Turn, strip_image_placeholder, truncate_before_rejected_answer,
    },
};

/// The teacher's view: one (image, text) pair per line, the text being a caption line's text
/// or a conversation's answers joined (see [`Conversation::teacher_text`]).
pub fn read(path: &Path) -> Result<Vec<Sample>, DataError> {
    Ok(parse(path, false)?
        .iter()
        .map(Conversation::teacher_sample)
        .collect())
}

/// Every line (or array element of a `.json` file) as a conversation; a caption line becomes
/// the caption prompt and its text as the answer. A blank caption is an error here (the
/// teacher's [`read`] lets `extract` count and skip it).
pub fn read_conversations(path: &Path) -> Result<Vec<Conversation>, DataError> {
    parse(path, true)
}

/// `strict`: a blank caption is an error.
fn parse(path: &Path, strict: bool) -> Result<Vec<Conversation>, DataError> {
    let content = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    if path.extension().is_some_and(|e| e == "json") {
        let records: Vec<Value> =
            serde_json::from_str(&content).map_err(|error| DataError::Format {
                path: path.to_path_buf(),
                reason: format!("expected a JSON array of samples: {error}"),
            })?;
        return records
            .iter()
            .enumerate()
            .map(|(index, record)| {
                conversation(record, base, strict).map_err(|reason| DataError::Format {
                    path: path.to_path_buf(),
                    reason: format!("record {index}: {reason}"),
                })
            })
            .collect();
    }
    content
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            let located = |reason: String| DataError::Line {
                path: path.to_path_buf(),
                line: number + 1,
                reason,
            };
            let record: Value = serde_json::from_str(line).map_err(|e| located(e.to_string()))?;
            conversation(&record, base, strict).map_err(located)
        })
        .collect()
}

fn string_field<'a>(record: &'a Value, name: &str) -> Result<Option<&'a str>, String> {
    match record.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(format!("`{name}` must be a string, found {other}")),
    }
}

fn conversation(record: &Value, base: &Path, strict: bool) -> Result<Conversation, String> {
    if !record.is_object() {
        return Err(format!("expected an object, found {record}"));
    }
    let image = string_field(record, "image")?.ok_or("missing field `image`")?;
    let id = string_field(record, "id")?.unwrap_or(image).to_string();
    let source = ImageSource::File(base.join(image));
    if let Some(text) = string_field(record, "text")? {
        if strict && text.trim().is_empty() {
            return Err("the caption `text` is blank".into());
        }
        return Ok(Conversation::caption(id, source, text));
    }
    let turns = record
        .get("conversations")
        .ok_or("missing field `text` (a caption) or `conversations`")?
        .as_array()
        .ok_or("`conversations` must be an array of turns")?;
    let mut parsed = Vec::with_capacity(turns.len());
    for (index, turn) in turns.iter().enumerate() {
        let field = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|name| turn.get(*name).and_then(Value::as_str))
                .ok_or_else(|| {
                    format!(
                        "turn {}: needs `{}` (or `{}`) as a string",
                        index + 1,
                        names[0],
                        names[1]
                    )
                })
        };
        let role_name = field(["role", "from"])?;
        let role = Role::parse(role_name)
            .ok_or_else(|| format!("turn {}: unknown role `{role_name}`", index + 1))?;
        let content = strip_image_placeholder(field(["content", "value"])?);
        parsed.push(Turn::new(role, content));
    }
    truncate_before_rejected_answer(&mut parsed);
    let conversation = Conversation {
        teacher_id: string_field(record, "teacher_id")?
            .unwrap_or(&id)
            .to_string(),
        id,
        image: source,
        turns: parsed,
        category: string_field(record, "category")?.map(str::to_string),
    };
    conversation.check()?;
    Ok(conversation)
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

    /// Questions about one image share its caption's teacher maps, and carry a category.
    #[test]
    fn conversations_name_their_teacher_sample_and_category() {
        let dir =
            std::env::temp_dir().join(format!("lavender-jsonl-teacher-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vqa.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"image": "a.png", "id": "a-q0", "teacher_id": "a", "category": "colour", "conversations": [{"role": "user", "content": "What colour?"}, {"role": "assistant", "content": "red"}]}"#,
                "\n",
                r#"{"image": "a.png", "id": "a-q1", "conversations": [{"role": "user", "content": "Shape?"}, {"role": "assistant", "content": "circle"}]}"#,
                "\n",
                r#"{"image": "a.png", "id": "a-q2", "teacher_id": 3, "conversations": [{"role": "user", "content": "Shape?"}, {"role": "assistant", "content": "circle"}]}"#,
                "\n",
            ),
        )
        .unwrap();
        let error = read_conversations(&path).unwrap_err().to_string();
        assert!(
            error.contains("vqa.jsonl:3") && error.contains("`teacher_id` must be a string"),
            "{error}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.lines().take(2).collect::<Vec<_>>().join("\n")).unwrap();
        let samples = read_conversations(&path).unwrap();
        assert_eq!(
            (samples[0].id.as_str(), samples[0].teacher_id.as_str()),
            ("a-q0", "a")
        );
        assert_eq!(samples[0].category.as_deref(), Some("colour"));
        assert_eq!(
            (
                samples[1].teacher_id.as_str(),
                samples[1].category.as_deref()
            ),
            ("a-q1", None)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_conversation_lines_and_json_arrays() {
        let dir = std::env::temp_dir().join(format!("lavender-jsonl-conv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chat.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"image": "a.png", "text": "a dog"}"#,
                "\n",
                r#"{"image": "b.png", "id": "b", "conversations": [{"role": "user", "content": "<image>\nWho wrote it?"}, {"role": "assistant", "content": "Austen"}, {"role": "user", "content": "Genre?"}, {"role": "assistant", "content": "Novel"}]}"#,
                "\n",
            ),
        )
        .unwrap();
        let samples = read_conversations(&path).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(
            samples[0].turns[0].content,
            super::super::conversation::CAPTION_PROMPT
        );
        assert_eq!(samples[0].teacher_text(), "a dog");
        assert_eq!(samples[1].id, "b");
        assert_eq!(samples[1].image, ImageSource::File(dir.join("b.png")));
        assert_eq!(samples[1].turns[0].content, "Who wrote it?");
        assert_eq!(samples[1].teacher_text(), "Austen Novel");
        // The teacher's view of the same file.
        assert_eq!(read(&path).unwrap()[1].text, "Austen Novel");

        let json = dir.join("ocrvqa.json");
        std::fs::write(
            &json,
            r#"[{"image": "image_0.jpg", "conversations": [{"from": "human", "value": "Title?"}, {"from": "gpt", "value": "Emma"}, {"from": "human", "value": "What was the rejected answer?"}, {"from": "gpt", "value": "x"}]}]"#,
        )
        .unwrap();
        let records = read_conversations(&json).unwrap();
        assert_eq!(records[0].id, "image_0.jpg");
        assert_eq!(records[0].turns.len(), 2);

        for (line, expected) in [
            (
                r#"{"image": "a.png", "conversations": [{"role": "robot", "content": "x"}]}"#,
                "unknown role `robot`",
            ),
            (
                r#"{"image": "a.png", "conversations": [{"role": "user"}]}"#,
                "turn 1: needs `content`",
            ),
            (
                r#"{"image": "a.png", "conversations": [{"role": "assistant", "content": "x"}]}"#,
                "before any user turn",
            ),
            (
                r#"{"image": "a.png", "conversations": [{"role": "user", "content": "x"}]}"#,
                "no assistant answer",
            ),
            (r#"{"image": 3, "text": "x"}"#, "`image` must be a string"),
            (r#"{"image": "a.png"}"#, "`conversations`"),
            (r#"{"image": "a.png", "text": "  "}"#, "blank"),
        ] {
            std::fs::write(&path, format!("\n{line}\n")).unwrap();
            let error = read_conversations(&path).unwrap_err().to_string();
            assert!(
                error.contains("chat.jsonl:2") && error.contains(expected),
                "{error}"
            );
        }
        std::fs::write(&json, r#"[{"image": "a.png", "conversations": []}]"#).unwrap();
        let error = read_conversations(&json).unwrap_err().to_string();
        assert!(
            error.contains("ocrvqa.json") && error.contains("record 0"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
