//! Pixels of a scene and the mask of each object. Edges are anti-aliased (4 x 4 samples per
//! pixel) so the shapes look drawn rather than stamped; a mask holds the pixels an object
//! covers at least half of, which is where its colour dominates.

use image::{GrayImage, Luma, Rgb, RgbImage};

use super::{Object, Scene, Shape};

/// The background: a light grey, far from every object colour.
pub const BACKGROUND: [u8; 3] = [232, 232, 228];

/// Samples per pixel side.
const SUPERSAMPLE: u32 = 4;

/// Whether the point `(x, y)` (pixels) lies inside `object`.
pub fn contains(object: &Object, x: f32, y: f32) -> bool {
    let [cx, cy] = object.centre;
    let r = object.radius;
    let (dx, dy) = (x - cx, y - cy);
    match object.shape {
        Shape::Circle => dx * dx + dy * dy <= r * r,
        // A square a little smaller than its box, so its area is near the circle's.
        Shape::Square => dx.abs() <= 0.85 * r && dy.abs() <= 0.85 * r,
        // Point up: apex at the top, base at 0.8 r below the centre.
        Shape::Triangle => {
            let top = cy - r;
            let base = cy + 0.8 * r;
            if y < top || y > base {
                return false;
            }
            let half_width = r * (y - top) / (base - top);
            dx.abs() <= half_width
        }
    }
}

/// The fraction of each pixel that `object` covers, row-major.
fn coverage(object: &Object, size: u32) -> Vec<f32> {
    let step = 1.0 / SUPERSAMPLE as f32;
    let mut cover = vec![0.0; (size * size) as usize];
    for py in 0..size {
        for px in 0..size {
            let mut hits = 0;
            for sy in 0..SUPERSAMPLE {
                for sx in 0..SUPERSAMPLE {
                    let x = px as f32 + (sx as f32 + 0.5) * step;
                    let y = py as f32 + (sy as f32 + 0.5) * step;
                    hits += u32::from(contains(object, x, y));
                }
            }
            cover[(py * size + px) as usize] = hits as f32 / (SUPERSAMPLE * SUPERSAMPLE) as f32;
        }
    }
    cover
}

/// The scene's picture and, per object in order, its mask (255 inside, 0 outside).
pub fn render(scene: &Scene) -> (RgbImage, Vec<GrayImage>) {
    let size = scene.size;
    let mut picture = RgbImage::from_pixel(size, size, Rgb(BACKGROUND));
    let mut masks = Vec::with_capacity(scene.objects.len());
    for object in &scene.objects {
        let cover = coverage(object, size);
        let colour = object.colour.rgb();
        let mut mask = GrayImage::new(size, size);
        for (index, &amount) in cover.iter().enumerate() {
            if amount == 0.0 {
                continue;
            }
            let (x, y) = (index as u32 % size, index as u32 / size);
            let pixel = picture.get_pixel_mut(x, y);
            for channel in 0..3 {
                let blended = f32::from(pixel[channel]) * (1.0 - amount)
                    + f32::from(colour[channel]) * amount;
                pixel[channel] = blended.round() as u8;
            }
            if amount >= 0.5 {
                mask.put_pixel(x, y, Luma([255]));
            }
        }
        masks.push(mask);
    }
    (picture, masks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::{Colour, Object};

    fn object(shape: Shape) -> Object {
        Object {
            colour: Colour::Red,
            shape,
            centre: [16.0, 16.0],
            radius: 8.0,
        }
    }

    /// Areas against the formulas: a circle of radius 8 covers 201 px, a square of side 13.6
    /// 185 px, the triangle (base 16, height 14.4) 115 px.
    #[test]
    fn masks_have_the_areas_of_their_shapes() {
        for (shape, area) in [
            (Shape::Circle, std::f32::consts::PI * 64.0),
            (Shape::Square, (1.7f32 * 8.0).powi(2)),
            (Shape::Triangle, 0.5 * 16.0 * 1.8 * 8.0),
        ] {
            let scene = Scene {
                size: 32,
                objects: vec![object(shape)],
            };
            let (picture, masks) = render(&scene);
            let inside = masks[0].pixels().filter(|p| p[0] == 255).count() as f32;
            // Within 10%: a half-covered edge pixel counts whole (124 px for the triangle).
            assert!(
                (inside - area).abs() <= 0.1 * area,
                "{shape:?}: {inside} vs {area}"
            );
            // Inside the mask the picture is the object's colour (blended at the edge only).
            assert_eq!(*picture.get_pixel(16, 16), Rgb(Colour::Red.rgb()));
            assert_eq!(*picture.get_pixel(0, 0), Rgb(BACKGROUND));
        }
    }
}
