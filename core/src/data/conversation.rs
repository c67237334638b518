//! Training samples: an image and a conversation about it. The image belongs to the first user turn
//! (the chat template puts it there); the assistant turns are what the student learns
//! (cross-entropy) and, concatenated, the text the teacher drew its maps for (`docs/method.md`,
//! "Teacher text of a conversation").

use serde::{Deserialize, Serialize};

use super::{ImageSource, Sample};

/// The user prompt of caption datasets (Flickr30k, `{"image", "text"}` lines), as the
/// reference's Flickr30k collator writes it.
pub const CAPTION_PROMPT: &str = "Describe the image in a single sentence as a caption.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The role names datasets use: `user`/`human`, `assistant`/`gpt`/`bot`, `system`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "user" | "human" => Some(Self::User),
            "assistant" | "gpt" | "bot" | "model" => Some(Self::Assistant),
            "system" => Some(Self::System),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

impl Turn {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// One training sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Unique within the dataset (a Flickr30k image has one sample per caption: `NAME#k`).
    pub id: String,
    /// The key of this sample's teacher maps: the id, except where several samples share an
    /// image's maps (Flickr30k's captions share `NAME`, as the reference's layout does).
    pub teacher_id: String,
    pub image: ImageSource,
    /// System turns (optional) first, then user and assistant turns; the image goes with the
    /// first user turn.
    pub turns: Vec<Turn>,
    /// A label for per-group scores (`eval`'s categories), where the dataset gives one.
    pub category: Option<String>,
}

impl Conversation {
    /// A caption sample: the user asks for a caption, the assistant gives it.
    pub fn caption(id: String, image: ImageSource, caption: &str) -> Self {
        Self {
            teacher_id: id.clone(),
            id,
            image,
            turns: vec![
                Turn::new(Role::User, CAPTION_PROMPT),
                Turn::new(Role::Assistant, caption.trim()),
            ],
            category: None,
        }
    }

    /// The teacher's prompt: the assistant answers joined by single spaces (`docs/method.md`,
    /// "Teacher text of a conversation").
    pub fn teacher_text(&self) -> String {
        self.turns
            .iter()
            .filter(|turn| turn.role == Role::Assistant)
            .map(|turn| turn.content.trim())
            .filter(|content| !content.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The index of the turn that carries the image: the first user turn.
    pub fn image_turn(&self) -> Option<usize> {
        self.turns.iter().position(|turn| turn.role == Role::User)
    }

    /// The (image, teacher text) pair `extract` works on, keyed by the teacher id.
    pub fn teacher_sample(&self) -> Sample {
        Sample {
            id: self.teacher_id.clone(),
            image: self.image.clone(),
            text: self.teacher_text(),
        }
    }

    /// Checks the shape a chat template needs: optional system turns, then a user turn, and
    /// at least one non-empty assistant answer; no turn after the first user turn is a system
    /// turn. Returns what is wrong.
    pub fn check(&self) -> Result<(), String> {
        let first = self
            .turns
            .iter()
            .position(|turn| turn.role != Role::System)
            .ok_or("no user turn")?;
        if self.turns[first].role != Role::User {
            return Err(format!(
                "turn {} is an assistant turn before any user turn",
                first + 1
            ));
        }
        if let Some(late) = self.turns[first..]
            .iter()
            .position(|turn| turn.role == Role::System)
        {
            return Err(format!(
                "turn {} is a system turn after the user's",
                first + late + 1
            ));
        }
        if !self
            .turns
            .iter()
            .any(|turn| turn.role == Role::Assistant && !turn.content.trim().is_empty())
        {
            return Err("no assistant answer".into());
        }
        Ok(())
    }
}

/// Drops `<image>` placeholders (LLaVA-style conversations mark the image in the text; here
/// the chat template places it) and trims.
pub fn strip_image_placeholder(content: &str) -> String {
    content.replace("<image>", "").trim().to_string()
}

/// Cuts a conversation before a user turn asking for the rejected answer (the preference
/// datasets' SFT conversions append one, see the reference's `extract_before_rejected_answer`).
pub fn truncate_before_rejected_answer(turns: &mut Vec<Turn>) {
    if let Some(at) = turns.iter().position(|turn| {
        turn.role == Role::User
            && turn
                .content
                .to_ascii_lowercase()
                .contains("what was the rejected answer")
    }) {
        turns.truncate(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation(turns: Vec<Turn>) -> Conversation {
        Conversation {
            id: "x".into(),
            teacher_id: "x".into(),
            image: ImageSource::File("x.png".into()),
            turns,
            category: None,
        }
    }

    #[test]
    fn teacher_text_joins_the_answers() {
        let sample = conversation(vec![
            Turn::new(Role::System, "be brief"),
            Turn::new(Role::User, "Who wrote this book?"),
            Turn::new(Role::Assistant, " Jane Austen "),
            Turn::new(Role::User, "Is it a novel?"),
            Turn::new(Role::Assistant, "Yes."),
        ]);
        assert_eq!(sample.teacher_text(), "Jane Austen Yes.");
        assert_eq!(sample.image_turn(), Some(1));
        assert_eq!(sample.check(), Ok(()));
        assert_eq!(sample.teacher_sample().text, "Jane Austen Yes.");

        let caption = Conversation::caption("1.jpg".into(), sample.image.clone(), " A dog. ");
        assert_eq!(caption.turns[0].content, CAPTION_PROMPT);
        assert_eq!(caption.teacher_text(), "A dog.");
    }

    #[test]
    fn badly_shaped_conversations_are_explained() {
        let answer_first = conversation(vec![Turn::new(Role::Assistant, "hi")]);
        assert!(
            answer_first
                .check()
                .unwrap_err()
                .contains("before any user")
        );
        let unanswered = conversation(vec![Turn::new(Role::User, "hi")]);
        assert!(unanswered.check().unwrap_err().contains("no assistant"));
        let late_system = conversation(vec![
            Turn::new(Role::User, "hi"),
            Turn::new(Role::System, "x"),
            Turn::new(Role::Assistant, "yo"),
        ]);
        assert!(late_system.check().unwrap_err().contains("turn 2"));
        assert!(conversation(vec![]).check().is_err());
    }

    #[test]
    fn roles_placeholders_and_rejected_answers() {
        assert_eq!(Role::parse("human"), Some(Role::User));
        assert_eq!(Role::parse("GPT"), Some(Role::Assistant));
        assert_eq!(Role::parse("narrator"), None);
        assert_eq!(
            strip_image_placeholder("<image>\nWhat is it?"),
            "What is it?"
        );
        let mut turns = vec![
            Turn::new(Role::User, "q"),
            Turn::new(Role::Assistant, "a"),
            Turn::new(Role::User, "What was the rejected answer?"),
            Turn::new(Role::Assistant, "b"),
        ];
        truncate_before_rejected_answer(&mut turns);
        assert_eq!(turns.len(), 2);
    }
}
