//! Comparing a student's map with the teacher's on the host, as the browser explorer does with
//! maps it has read back (the training loss compares tensors: `align::loss`).

use super::resize::resize_square;

/// Mean squared error between a student map (side `student_side`, row-major) and a teacher map
/// (side `teacher_side`); when the sides differ the student map is resized bilinearly
/// (align_corners = false, as torch's `F.interpolate` default, no antialiasing) to the
/// teacher's side first. Pure CPU on slices: the browser calls it on read-back values. NaN when
/// a side is 0 or a slice's length is not its side squared (nothing to compare).
pub fn map_mse(student: &[f32], student_side: usize, teacher: &[f32], teacher_side: usize) -> f32 {
    if student_side == 0
        || teacher_side == 0
        || student.len() != student_side * student_side
        || teacher.len() != teacher_side * teacher_side
    {
        return f32::NAN;
    }
    let resized;
    let student = if student_side == teacher_side {
        student
    } else {
        resized = resize_square(student, student_side, teacher_side);
        &resized
    };
    let sum: f64 = student
        .iter()
        .zip(teacher)
        .map(|(&s, &t)| (f64::from(s) - f64::from(t)).powi(2))
        .sum();
    (sum / teacher.len() as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f32, expected: f32) {
        assert!(
            (actual - expected).abs() < 1e-6,
            "{actual} != {expected} (expected)"
        );
    }

    #[test]
    fn map_mse_of_maps_of_the_same_side() {
        // Squared errors 1, 0, 0, 1.
        close(map_mse(&[0., 1., 0., 1.], 2, &[1., 1., 0., 0.], 2), 0.5);
        close(map_mse(&[0.25; 9], 3, &[0.75; 9], 3), 0.25);
        assert!(map_mse(&[0.; 3], 2, &[0.; 4], 2).is_nan());
        assert!(map_mse(&[], 0, &[], 0).is_nan());
    }

    /// `F.interpolate([[0, 4], [8, 12]], size=4, mode="bilinear", align_corners=False)`: output
    /// pixel `i` reads the input at `max((i + 0.5) / 2 - 0.5, 0)` = 0, 0.25, 0.75, 1.25 (the
    /// last clamped to 1), so the weights of the second input row / column are 0, 1/4, 3/4, 1
    /// and the value at (i, j) is `8 r_i + 4 r_j`.
    #[test]
    fn map_mse_resizes_the_student_bilinearly_to_the_teacher() {
        let student = [0., 4., 8., 12.];
        #[rustfmt::skip]
        let resized = [
            0., 1., 3., 4.,
            2., 3., 5., 6.,
            6., 7., 9., 10.,
            8., 9., 11., 12.,
        ];
        assert_eq!(resize_square(&student, 2, 4), resized);
        close(map_mse(&student, 2, &resized, 4), 0.0);
        // Against zeros: (26 + 74 + 266 + 410) / 16, the rows' sums of squares.
        close(map_mse(&student, 2, &[0.; 16], 4), 48.5);
        // Downscaling 4 -> 2 reads at 0.5 and 2.5: the means of the 2x2 blocks.
        close(map_mse(&resized, 4, &[1.5, 4.5, 7.5, 10.5], 2), 0.0);
    }
}
