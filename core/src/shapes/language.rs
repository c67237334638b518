//! The words of a scene: its caption (what the teacher is trained on and the student is
//! pre-trained to say) and its questions, each with a one-word answer and a kind for the
//! per-type scores.
//!
//! A question names objects only by shape or only by colour (each unique in a scene), and an
//! existence question about an absent object names only a combination `allowed` in its split,
//! so training questions never mention a held-out combination.

use serde::{Deserialize, Serialize};

use super::{Colour, Object, Scene, Shape};

/// What a question asks, for the per-type scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuestionKind {
    /// "what colour is the circle?" - a colour word.
    Colour,
    /// "what shape is the red object?" - a shape word.
    Shape,
    /// "is there a blue square?" - yes or no.
    Exists,
    /// "how many objects are there?" - two or three.
    Count,
    /// "is the circle left or right of the square?" - left or right.
    LeftRight,
    /// "is the circle above or below the square?" - above or below.
    AboveBelow,
}

impl QuestionKind {
    pub fn name(self) -> &'static str {
        match self {
            QuestionKind::Colour => "colour",
            QuestionKind::Shape => "shape",
            QuestionKind::Exists => "exists",
            QuestionKind::Count => "count",
            QuestionKind::LeftRight => "left_right",
            QuestionKind::AboveBelow => "above_below",
        }
    }
}

/// A question with its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub kind: QuestionKind,
    pub text: String,
    pub answer: String,
    /// The objects (indices into the scene's) whose words the answer is about: where a student
    /// answering it should look.
    pub objects: Vec<usize>,
}

/// "a red circle left of a blue square", or for three objects "a red circle, a blue square
/// and a green triangle from left to right": colour before shape, objects left to right.
pub fn caption(scene: &Scene) -> String {
    let named: Vec<String> = scene
        .objects
        .iter()
        .map(|o| format!("a {} {}", o.colour.name(), o.shape.name()))
        .collect();
    match named.as_slice() {
        [one] => one.clone(),
        [a, b] => format!("{a} left of {b}"),
        [rest @ .., last] => format!("{} and {last} from left to right", rest.join(", ")),
        [] => String::new(),
    }
}

/// Centres closer than this fraction of the image along an axis are not called left/right or
/// above/below of each other.
const CLEAR_OFFSET: f32 = 0.15;

/// Every question the scene answers unambiguously. `absent` is a combination not in the scene
/// to ask an existence question about (chosen by the caller among those its split allows).
pub fn questions(scene: &Scene, absent: Option<(Colour, Shape)>) -> Vec<Question> {
    let mut out = Vec::new();
    let ask = |kind, text: String, answer: &str, objects: Vec<usize>| Question {
        kind,
        text,
        answer: answer.to_string(),
        objects,
    };
    for (index, object) in scene.objects.iter().enumerate() {
        out.push(ask(
            QuestionKind::Colour,
            format!("What colour is the {}?", object.shape.name()),
            object.colour.name(),
            vec![index],
        ));
        out.push(ask(
            QuestionKind::Shape,
            format!("What shape is the {} object?", object.colour.name()),
            object.shape.name(),
            vec![index],
        ));
    }
    let present = &scene.objects[0];
    out.push(ask(
        QuestionKind::Exists,
        format!(
            "Is there a {} {}?",
            present.colour.name(),
            present.shape.name()
        ),
        "yes",
        vec![0],
    ));
    if let Some((colour, shape)) = absent {
        out.push(ask(
            QuestionKind::Exists,
            format!("Is there a {} {}?", colour.name(), shape.name()),
            "no",
            Vec::new(),
        ));
    }
    let count = match scene.objects.len() {
        2 => "two",
        3 => "three",
        _ => "",
    };
    if !count.is_empty() {
        out.push(ask(
            QuestionKind::Count,
            "How many objects are there?".to_string(),
            count,
            (0..scene.objects.len()).collect(),
        ));
    }
    let clear = CLEAR_OFFSET * scene.size as f32;
    // Along x, then y: the kind, how it is asked, and the answer for the smaller coordinate.
    let axes = [
        (
            QuestionKind::LeftRight,
            "left or right of",
            ["left", "right"],
        ),
        (
            QuestionKind::AboveBelow,
            "above or below",
            ["above", "below"],
        ),
    ];
    for (i, a) in scene.objects.iter().enumerate() {
        for (j, b) in scene.objects.iter().enumerate().skip(i + 1) {
            for (axis, (kind, choice, answers)) in axes.iter().enumerate() {
                if (a.centre[axis] - b.centre[axis]).abs() > clear {
                    let answer = answers[usize::from(a.centre[axis] > b.centre[axis])];
                    out.push(relation(*kind, choice, a, b, answer, [i, j]));
                }
            }
        }
    }
    out
}

fn relation(
    kind: QuestionKind,
    choice: &str,
    a: &Object,
    b: &Object,
    answer: &str,
    objects: [usize; 2],
) -> Question {
    Question {
        kind,
        text: format!("Is the {} {choice} the {}?", a.shape.name(), b.shape.name()),
        answer: answer.to_string(),
        objects: objects.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene() -> Scene {
        let object = |colour, shape, x, y| Object {
            colour,
            shape,
            centre: [x, y],
            radius: 6.0,
        };
        Scene {
            size: 64,
            objects: vec![
                object(Colour::Red, Shape::Circle, 10.0, 50.0),
                object(Colour::Blue, Shape::Square, 32.0, 12.0),
                object(Colour::Yellow, Shape::Triangle, 54.0, 48.0),
            ],
        }
    }

    #[test]
    fn captions_name_objects_left_to_right() {
        let mut scene = scene();
        assert_eq!(
            caption(&scene),
            "a red circle, a blue square and a yellow triangle from left to right"
        );
        scene.objects.pop();
        assert_eq!(caption(&scene), "a red circle left of a blue square");
    }

    #[test]
    fn questions_have_the_answers_the_scene_gives() {
        let asked = questions(&scene(), Some((Colour::Green, Shape::Circle)));
        let answer = |text: &str| {
            asked
                .iter()
                .find(|q| q.text == text)
                .unwrap_or_else(|| panic!("{text} not asked: {asked:#?}"))
                .answer
                .clone()
        };
        assert_eq!(answer("What colour is the square?"), "blue");
        assert_eq!(answer("What shape is the yellow object?"), "triangle");
        assert_eq!(answer("Is there a red circle?"), "yes");
        assert_eq!(answer("Is there a green circle?"), "no");
        assert_eq!(answer("How many objects are there?"), "three");
        assert_eq!(answer("Is the circle left or right of the square?"), "left");
        assert_eq!(answer("Is the circle above or below the square?"), "below");
        assert_eq!(
            answer("Is the square left or right of the triangle?"),
            "left"
        );
        // The circle (y 50) and the triangle (y 48) are level: no above/below question.
        assert!(
            !asked
                .iter()
                .any(|q| q.text == "Is the circle above or below the triangle?")
        );
        assert_eq!(
            asked
                .iter()
                .filter(|q| q.kind == QuestionKind::AboveBelow)
                .count(),
            2
        );
        assert_eq!(asked.len(), 6 + 2 + 1 + 3 + 2);
    }
}
