//! A synthetic world small enough to measure Lavender on a laptop CPU: scenes of two or three
//! coloured shapes on a plain background, each with a caption, questions with one-word answers
//! and every object's mask, and a compositional split in the manner of CLEVR-CoGenT (Johnson
//! et al. 2017): some colour–shape combinations ([`HELD_OUT`]) never appear in the training,
//! validation or in-distribution test scenes, and every out-of-distribution scene shows one.
//!
//! Within a scene every object has its own shape and its own colour, so "the circle" and "the
//! red object" each name one object and every question has one answer. Everything is a pure
//! function of a seed ([`generate`]); each split draws from its own stream, so changing how many
//! scenes one split has does not change the others.

pub mod language;
pub mod render;
pub mod student;

#[cfg(test)]
mod committed_models;

use serde::{Deserialize, Serialize};

use crate::rng::SeededRng;

/// Object colours, with the words captions use for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
}

impl Colour {
    pub const ALL: [Colour; 4] = [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
        }
    }

    /// sRGB, far apart from each other and from the background.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [214, 39, 40],
            Colour::Green => [44, 160, 44],
            Colour::Blue => [31, 90, 200],
            Colour::Yellow => [235, 200, 30],
        }
    }
}

/// Object shapes, with the words captions use for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }
}

/// The combinations no training, validation or in-distribution test scene shows: one per
/// shape and per colour (a Latin-square choice), so every colour and every shape is still
/// seen in training, only not together.
pub const HELD_OUT: [(Colour, Shape); 3] = [
    (Colour::Red, Shape::Square),
    (Colour::Green, Shape::Triangle),
    (Colour::Blue, Shape::Circle),
];

/// Whether a combination is one of [`HELD_OUT`].
pub fn is_held_out(colour: Colour, shape: Shape) -> bool {
    HELD_OUT.contains(&(colour, shape))
}

/// One object: its kind and where it is, in pixels of the scene.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub colour: Colour,
    pub shape: Shape,
    /// Centre `(x, y)`, pixels from the top-left corner.
    pub centre: [f32; 2],
    /// Half the object's extent (a circle's radius, half a square's side).
    pub radius: f32,
}

/// A square image of `size` pixels with its objects, left to right.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub size: u32,
    pub objects: Vec<Object>,
}

impl Scene {
    /// Whether the scene shows a [`HELD_OUT`] combination.
    pub fn has_held_out(&self) -> bool {
        self.objects.iter().any(|o| is_held_out(o.colour, o.shape))
    }
}

/// The parts of the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
    /// The out-of-distribution test: every scene shows a held-out combination.
    Ood,
}

impl Split {
    pub const ALL: [Split; 4] = [Split::Train, Split::Val, Split::Test, Split::Ood];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
            Split::Ood => "ood",
        }
    }

    /// The split's own random stream, so the splits do not depend on each other's sizes.
    fn stream(self, seed: u64) -> SeededRng {
        let tag = match self {
            Split::Train => 0x7472_6169_6e00_0000,
            Split::Val => 0x7661_6c00_0000_0000,
            Split::Test => 0x7465_7374_0000_0000,
            Split::Ood => 0x6f6f_6400_0000_0000,
        };
        let mut mixer = SeededRng::new(seed ^ tag);
        SeededRng::new(mixer.next_u64())
    }
}

/// How a dataset is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapesConfig {
    pub seed: u64,
    /// Image side in pixels (16 to 512).
    pub size: u32,
    /// Scenes per split, in [`Split::ALL`] order.
    pub scenes: [usize; 4],
}

impl ShapesConfig {
    pub fn check(&self) -> Result<(), String> {
        if !(16..=512).contains(&self.size) {
            return Err(format!(
                "size {} is out of range (16 to 512 pixels)",
                self.size
            ));
        }
        if let Some(split) = Split::ALL
            .iter()
            .zip(self.scenes)
            .find(|(_, n)| *n > 1_000_000)
        {
            return Err(format!(
                "{} scenes in {} is out of range (at most 1,000,000)",
                split.1,
                split.0.name()
            ));
        }
        Ok(())
    }

    pub fn count(&self, split: Split) -> usize {
        self.scenes[split as usize]
    }
}

/// The scenes of `split`, a pure function of the config.
pub fn generate(config: &ShapesConfig, split: Split) -> Vec<Scene> {
    let mut rng = split.stream(config.seed);
    (0..config.count(split))
        .map(|_| scene(&mut rng, config.size, split))
        .collect()
}

/// A scene as the dataset stores it: its id, the scene, its caption and its questions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneRecord {
    /// `{split}-{index:05}`.
    pub id: String,
    pub scene: Scene,
    pub caption: String,
    pub questions: Vec<language::Question>,
}

/// The records of `split`: [`generate`]'s scenes with captions and questions. The absent
/// combination of each scene's "no" existence question is drawn from the split's own stream
/// among those the split allows (never a held-out one outside the OOD test).
pub fn records(config: &ShapesConfig, split: Split) -> Vec<SceneRecord> {
    let mut rng = split.stream(config.seed ^ 0x5155_4553_5449_4f4e);
    generate(config, split)
        .into_iter()
        .enumerate()
        .map(|(index, scene)| {
            let absent: Vec<(Colour, Shape)> = Colour::ALL
                .iter()
                .flat_map(|&c| Shape::ALL.iter().map(move |&s| (c, s)))
                .filter(|&(c, s)| !scene.objects.iter().any(|o| (o.colour, o.shape) == (c, s)))
                .filter(|&(c, s)| split == Split::Ood || !is_held_out(c, s))
                .collect();
            let pick = absent[rng.below(absent.len() as u64) as usize];
            SceneRecord {
                id: format!("{}-{index:05}", split.name()),
                caption: language::caption(&scene),
                questions: language::questions(&scene, Some(pick)),
                scene,
            }
        })
        .collect()
}

/// Grid cells per side: objects sit in distinct cells of a 3 x 3 grid, so they never overlap.
const CELLS: usize = 3;

/// One scene: two or three objects of distinct shapes and distinct colours in distinct cells.
/// In-distribution splits show no held-out combination; an out-of-distribution scene shows at
/// least one (its first object is one, then the others are drawn freely).
fn scene(rng: &mut SeededRng, size: u32, split: Split) -> Scene {
    let count = 2 + rng.below(2) as usize;
    let pairs = loop {
        let mut shapes = Shape::ALL.to_vec();
        let mut colours = Colour::ALL.to_vec();
        if split == Split::Ood {
            let (colour, shape) = HELD_OUT[rng.below(HELD_OUT.len() as u64) as usize];
            shapes.retain(|&s| s != shape);
            colours.retain(|&c| c != colour);
            rng.shuffle(&mut shapes);
            rng.shuffle(&mut colours);
            let mut pairs = vec![(colour, shape)];
            pairs.extend(colours.into_iter().zip(shapes).take(count - 1));
            break pairs;
        }
        rng.shuffle(&mut shapes);
        rng.shuffle(&mut colours);
        let pairs: Vec<(Colour, Shape)> = colours.into_iter().zip(shapes).take(count).collect();
        if !pairs.iter().any(|&(c, s)| is_held_out(c, s)) {
            break pairs;
        }
    };
    let mut cells: Vec<usize> = (0..CELLS * CELLS).collect();
    rng.shuffle(&mut cells);
    let cell = size as f32 / CELLS as f32;
    let mut objects: Vec<Object> = pairs
        .into_iter()
        .zip(cells)
        .map(|((colour, shape), index)| {
            let jitter = |rng: &mut SeededRng| (rng.next_f64() as f32 - 0.5) * cell * 0.2;
            let column = (index % CELLS) as f32;
            let row = (index / CELLS) as f32;
            Object {
                colour,
                shape,
                centre: [
                    (column + 0.5) * cell + jitter(rng),
                    (row + 0.5) * cell + jitter(rng),
                ],
                radius: cell * (0.3 + 0.08 * rng.next_f64() as f32),
            }
        })
        .collect();
    objects.sort_by(|a, b| a.centre[0].total_cmp(&b.centre[0]));
    Scene { size, objects }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ShapesConfig {
        ShapesConfig {
            seed: 7,
            size: 64,
            scenes: [400, 50, 50, 100],
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_scenes_and_splits_are_independent() {
        let config = config();
        for split in Split::ALL {
            assert_eq!(generate(&config, split), generate(&config, split));
        }
        // More training scenes leave the other splits as they were.
        let mut more = config.clone();
        more.scenes[0] = 500;
        assert_eq!(generate(&more, Split::Ood), generate(&config, Split::Ood));
        assert_eq!(
            generate(&more, Split::Train)[..400],
            generate(&config, Split::Train)[..]
        );
        let mut other = config.clone();
        other.seed = 8;
        assert_ne!(
            generate(&other, Split::Train),
            generate(&config, Split::Train)
        );
    }

    #[test]
    fn held_out_combinations_appear_only_in_the_ood_split() {
        let config = config();
        for split in [Split::Train, Split::Val, Split::Test] {
            for scene in generate(&config, split) {
                assert!(!scene.has_held_out(), "{split:?}: {scene:?}");
            }
        }
        let ood = generate(&config, Split::Ood);
        assert!(ood.iter().all(Scene::has_held_out));
        // Every held-out combination is tested, and every colour and shape is trained.
        for pair in HELD_OUT {
            assert!(
                ood.iter()
                    .any(|s| s.objects.iter().any(|o| (o.colour, o.shape) == pair)),
                "{pair:?}"
            );
        }
        let train = generate(&config, Split::Train);
        for colour in Colour::ALL {
            assert!(
                train
                    .iter()
                    .any(|s| s.objects.iter().any(|o| o.colour == colour))
            );
        }
        for shape in Shape::ALL {
            assert!(
                train
                    .iter()
                    .any(|s| s.objects.iter().any(|o| o.shape == shape))
            );
        }
    }

    /// No training question names a held-out combination, so nothing in the training text
    /// or pictures shows one.
    #[test]
    fn training_questions_never_name_a_held_out_combination() {
        let config = config();
        for split in [Split::Train, Split::Val, Split::Test] {
            for record in records(&config, split) {
                for (colour, shape) in HELD_OUT {
                    let named = format!("{} {}", colour.name(), shape.name());
                    assert!(!record.caption.contains(&named), "{}", record.caption);
                    for question in &record.questions {
                        assert!(
                            !question.text.to_lowercase().contains(&named),
                            "{question:?}"
                        );
                    }
                }
            }
        }
        assert_eq!(records(&config, Split::Val), records(&config, Split::Val));
    }

    #[test]
    fn objects_are_distinct_separate_and_inside_the_image() {
        for scene in generate(&config(), Split::Train)
            .into_iter()
            .chain(generate(&config(), Split::Ood))
        {
            let n = scene.objects.len();
            assert!((2..=3).contains(&n));
            for (i, a) in scene.objects.iter().enumerate() {
                assert!(a.centre[0] - a.radius >= 0.0 && a.centre[0] + a.radius <= 64.0);
                assert!(a.centre[1] - a.radius >= 0.0 && a.centre[1] + a.radius <= 64.0);
                for b in &scene.objects[i + 1..] {
                    assert_ne!(a.colour, b.colour);
                    assert_ne!(a.shape, b.shape);
                    assert!(a.centre[0] <= b.centre[0], "left to right");
                    let gap = (a.centre[0] - b.centre[0])
                        .abs()
                        .max((a.centre[1] - b.centre[1]).abs());
                    assert!(gap > a.radius + b.radius, "{a:?} overlaps {b:?}");
                }
            }
        }
    }
}
