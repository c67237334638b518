//! [`WordMaps`]: one sample's maps keyed by word.

use burn::tensor::{Device, Tensor, TensorData};

/// Maps keyed by word: row `i` of `maps` `[words, S, S]` is the map of `words[i]`, each in
/// `[0, 1]` (min-max normalised) wherever it came from. Teacher extraction, the maps store,
/// the students' word maps and the Lavender loss all speak this type; host-side users (the
/// store, a web bundle's examples) hold it on the CPU device and read it with
/// [`WordMaps::to_values`].
#[derive(Debug, Clone)]
pub struct WordMaps {
    /// Lower-cased words, each once, in order of first appearance.
    pub words: Vec<String>,
    /// `[words, S, S]`.
    pub maps: Tensor<3>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapsError {
    #[error("{values} map values for {words} words of side {side}, expected {expected}")]
    Size {
        values: usize,
        words: usize,
        side: usize,
        expected: usize,
    },
    #[error("map side 0 for {0} words")]
    ZeroSide(usize),
    #[error("reading the maps from the device: {0}")]
    Read(String),
}

impl WordMaps {
    /// `words` with their maps `values` (`[words, side, side]` row-major) on `device`.
    pub fn from_values(
        words: Vec<String>,
        side: usize,
        values: Vec<f32>,
        device: &Device,
    ) -> Result<Self, MapsError> {
        let expected = words.len() * side * side;
        if side == 0 && !words.is_empty() {
            return Err(MapsError::ZeroSide(words.len()));
        }
        if values.len() != expected {
            return Err(MapsError::Size {
                values: values.len(),
                words: words.len(),
                side,
                expected,
            });
        }
        let maps = Tensor::from_data(TensorData::new(values, [words.len(), side, side]), device);
        Ok(Self { words, maps })
    }

    /// No word, maps of side `side`: `[0, side, side]`.
    pub fn empty(side: usize, device: &Device) -> Self {
        Self {
            words: Vec::new(),
            maps: Tensor::zeros([0, side, side], device),
        }
    }

    /// The map side `S`.
    pub fn side(&self) -> usize {
        self.maps.dims()[1]
    }

    /// The maps `[words, S, S]` row-major as f32 (a synchronous read: on a GPU it waits).
    pub fn to_values(&self) -> Result<Vec<f32>, MapsError> {
        self.maps
            .clone()
            .try_into_data()
            .map_err(|error| MapsError::Read(format!("{error:?}")))?
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|error| MapsError::Read(format!("{error:?}")))
    }

    /// The same maps on `device`.
    pub fn to_device(&self, device: &Device) -> Self {
        Self {
            words: self.words.clone(),
            maps: self.maps.clone().to_device(device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_sizes_are_checked() {
        let device = Device::flex();
        let words = vec!["a".to_string(), "dog".to_string()];
        let values = vec![0.0, 0.25, 0.5, 1.0, 1.0, 0.5, 0.25, 0.0];
        let maps = WordMaps::from_values(words.clone(), 2, values.clone(), &device).unwrap();
        assert_eq!(maps.side(), 2);
        assert_eq!(maps.to_values().unwrap(), values);
        assert_eq!(
            WordMaps::from_values(words.clone(), 2, vec![0.0; 7], &device).unwrap_err(),
            MapsError::Size {
                values: 7,
                words: 2,
                side: 2,
                expected: 8
            }
        );
        assert_eq!(
            WordMaps::from_values(words, 0, vec![], &device).unwrap_err(),
            MapsError::ZeroSide(2)
        );
        assert_eq!(WordMaps::empty(3, &device).maps.dims(), [0, 3, 3]);
    }
}
