//! The teacher's image input: RGB squashed (no crop) to a square of `size` pixels with a
//! bicubic filter, scaled to [-1, 1], as `[1, 3, size, size]`.

use burn::tensor::{Device, Tensor, TensorData};
use image::{RgbImage, imageops::FilterType};

/// `image` as the VAE's input. An image already `size x size` is not resampled.
pub fn image_to_tensor(image: &RgbImage, size: usize, device: &Device) -> Tensor<4> {
    let resized;
    let image = if image.width() as usize == size && image.height() as usize == size {
        image
    } else {
        resized = image::imageops::resize(image, size as u32, size as u32, FilterType::CatmullRom);
        &resized
    };
    // HWC bytes -> CHW in [-1, 1].
    let pixels = image.as_raw();
    let plane = size * size;
    let mut values = vec![0f32; 3 * plane];
    for (index, rgb) in pixels.chunks_exact(3).enumerate() {
        for channel in 0..3 {
            values[channel * plane + index] = rgb[channel] as f32 / 127.5 - 1.0;
        }
    }
    Tensor::from_data(TensorData::new(values, [1, 3, size, size]), device)
}

/// The inverse of [`image_to_tensor`] for one image `[1, 3, h, w]` in [-1, 1]: an RGB picture.
/// Reads the tensor synchronously, so it is for native callers.
pub fn tensor_to_image(tensor: Tensor<4>) -> Result<RgbImage, String> {
    let [_, channels, height, width] = tensor.dims();
    if channels != 3 {
        return Err(format!("expected 3 channels, got {channels}"));
    }
    let values: Vec<f32> = tensor
        .narrow(0, 0, 1)
        .try_into_data()
        .map_err(|error| format!("{error:?}"))?
        .try_to_vec()
        .map_err(|error| format!("{error:?}"))?;
    let plane = height * width;
    Ok(RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let index = y as usize * width + x as usize;
        image::Rgb(std::array::from_fn(|c| {
            ((values[c * plane + index].clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
        }))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, device, sd_golden, sd_tiny_dir};

    #[test]
    fn fixture_image_matches_the_reference_preprocessing() {
        let image = image::open(sd_tiny_dir().join("image.png"))
            .unwrap()
            .to_rgb8();
        let ours = image_to_tensor(&image, 32, &device());
        let theirs = sd_golden()
            .tensor("image", [1, 3, 32, 32], &device())
            .unwrap();
        assert_close("image", ours, theirs, 1e-6);
    }

    #[test]
    fn images_round_trip_through_tensors() {
        let image = image::open(sd_tiny_dir().join("image.png"))
            .unwrap()
            .to_rgb8();
        let back = tensor_to_image(image_to_tensor(&image, 32, &device())).unwrap();
        assert_eq!(back, image);
    }

    #[test]
    fn other_sizes_are_squashed_to_the_square() {
        let image = RgbImage::from_pixel(40, 10, image::Rgb([255, 0, 127]));
        let tensor = image_to_tensor(&image, 8, &device());
        assert_eq!(tensor.dims(), [1, 3, 8, 8]);
        let values: Vec<f32> = tensor.into_data().try_to_vec().unwrap();
        assert!((values[0] - 1.0).abs() < 1e-6 && (values[64] + 1.0).abs() < 1e-6);
    }
}
