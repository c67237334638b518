//! The pointing game (Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop"):
//! a word's map "points" at an object when its maximum lies inside the object's ground-truth
//! mask. Its chance level is the fraction of the picture the mask covers (where a uniformly
//! random point would land). The study uses it twice: the teacher's gate (do the diffusion
//! maps find the object a caption word names?) and the students' attention.

use image::GrayImage;

/// Where the maximum of a `side x side` map (row-major) falls, as `(column, row)`; the first
/// of equal maxima, `None` for an empty or all-NaN map.
pub fn argmax(map: &[f32], side: usize) -> Option<(usize, usize)> {
    let (index, _) = map.iter().enumerate().filter(|(_, v)| !v.is_nan()).fold(
        None,
        |best: Option<(usize, f32)>, (i, &v)| match best {
            Some((_, top)) if top >= v => best,
            _ => Some((i, v)),
        },
    )?;
    (side > 0).then(|| (index % side, index / side))
}

/// Whether the maximum of `map` (`side x side`, covering the whole picture) lies inside `mask`
/// (non-zero pixels): the centre of the map's top cell, scaled to the mask's pixels.
pub fn points_inside(map: &[f32], side: usize, mask: &GrayImage) -> bool {
    let Some((column, row)) = argmax(map, side) else {
        return false;
    };
    let x = ((column as f32 + 0.5) * mask.width() as f32 / side as f32) as u32;
    let y = ((row as f32 + 0.5) * mask.height() as f32 / side as f32) as u32;
    x < mask.width() && y < mask.height() && mask.get_pixel(x, y)[0] > 0
}

/// The fraction of the picture inside `mask`: the pointing game's chance level.
pub fn chance(mask: &GrayImage) -> f64 {
    let pixels = u64::from(mask.width()) * u64::from(mask.height());
    if pixels == 0 {
        return 0.0;
    }
    mask.pixels().filter(|p| p[0] > 0).count() as f64 / pixels as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    /// A 8x8 mask with the 2x2 block at columns 4-5, rows 2-3 inside.
    fn mask() -> GrayImage {
        GrayImage::from_fn(8, 8, |x, y| {
            Luma([if (4..6).contains(&x) && (2..4).contains(&y) {
                255
            } else {
                0
            }])
        })
    }

    #[test]
    fn the_maximum_is_found_and_scaled_to_the_mask() {
        // A 4x4 map: its cell (2, 1) covers mask pixels x 4-5, y 2-3.
        let mut map = vec![0.1; 16];
        map[4 + 2] = 0.9;
        assert_eq!(argmax(&map, 4), Some((2, 1)));
        assert!(points_inside(&map, 4, &mask()));
        map[4 + 2] = 0.0;
        map[15] = 0.9;
        assert!(!points_inside(&map, 4, &mask()));
        // Ties go to the first maximum; NaN is never a maximum; an empty map points nowhere.
        assert_eq!(argmax(&[1.0, f32::NAN, 1.0, 0.0], 2), Some((0, 0)));
        assert_eq!(argmax(&[f32::NAN; 4], 2), None);
        assert!(!points_inside(&[], 0, &mask()));
        assert_eq!(chance(&mask()), 4.0 / 64.0);
    }
}
