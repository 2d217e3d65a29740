//! One MNIST split as a [`Dataset`].

use super::Mnist;
use crate::Dataset;
use tandem_tensor::{Error, Result, Tensor};

/// What an MNIST sample looks like. Labels are always `int64` scalars (batched: `[B]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transform {
    /// `float32 [784]`: the pixels in row-major order, divided by 255 (for MLPs).
    Flat,
    /// `float32 [1, 28, 28]`: one channel, divided by 255 (for convolutions, NCHW).
    Image,
    /// `uint8 [28, 28]`: the pixels as stored.
    Raw,
}

/// One split of MNIST (or of any `uint8 [N, H, W]` image set with `int64 [N]` labels) as a
/// [`Dataset`] of `[image, label]` samples, shaped by a [`Transform`].
///
/// Batches are gathered straight out of the image buffer: for [`Transform::Flat`] and
/// [`Transform::Image`] each pixel is converted to `f32` and divided by 255 directly into the
/// batch buffer.
#[derive(Clone, Debug)]
pub struct MnistDataset {
    images: Tensor,
    labels: Tensor,
    transform: Transform,
}

/// The training split (60,000 samples) with a transform.
pub fn train(m: &Mnist, transform: Transform) -> MnistDataset {
    MnistDataset::new(&m.train_images, &m.train_labels, transform)
}

/// The test split (10,000 samples) with a transform.
pub fn test(m: &Mnist, transform: Transform) -> MnistDataset {
    MnistDataset::new(&m.test_images, &m.test_labels, transform)
}

impl MnistDataset {
    /// A dataset over `images` (`uint8 [N, H, W]`) and `labels` (`int64 [N]`). The tensors are
    /// only checked when samples are read: a wrong dtype or shape makes `get` and `get_batch`
    /// fail with a message that says what was expected.
    pub fn new(images: &Tensor, labels: &Tensor, transform: Transform) -> MnistDataset {
        // Store contiguous tensors when possible, so batches can be gathered row by row.
        let images = images.contiguous().unwrap_or_else(|_| images.clone());
        let labels = labels.contiguous().unwrap_or_else(|_| labels.clone());
        MnistDataset {
            images,
            labels,
            transform,
        }
    }

    /// The transform applied to each sample.
    pub fn transform(&self) -> Transform {
        self.transform
    }

    /// The same split with another transform (no copy).
    pub fn with_transform(&self, transform: Transform) -> MnistDataset {
        MnistDataset {
            transform,
            ..self.clone()
        }
    }

    /// The images (`uint8 [N, H, W]`) and labels (`int64 [N]`) as host slices, with the
    /// image height and width.
    fn parts(&self, op: &'static str) -> Result<(&[u8], &[i64], usize, usize)> {
        let bad = |what: &str, t: &Tensor| {
            Error::invalid(
                op,
                format!(
                    "{what}, found {} {:?} on {}",
                    t.dtype(),
                    t.shape(),
                    t.device()
                ),
            )
        };
        let pixels = match (self.images.as_slice::<u8>(), self.images.shape()) {
            (Some(p), [_, _, _]) => p,
            _ => {
                return Err(bad(
                    "images must be uint8 [N, H, W] in host memory",
                    &self.images,
                ))
            }
        };
        let labels = match self.labels.as_slice::<i64>() {
            Some(l) if self.labels.rank() == 1 && l.len() == self.images.shape()[0] => l,
            _ => {
                return Err(bad(
                    "labels must be int64 [N] in host memory, N the number of images",
                    &self.labels,
                ))
            }
        };
        let (h, w) = (self.images.shape()[1], self.images.shape()[2]);
        Ok((pixels, labels, h, w))
    }

    fn sample_shape(&self, h: usize, w: usize) -> Vec<usize> {
        match self.transform {
            Transform::Flat => vec![h * w],
            Transform::Image => vec![1, h, w],
            Transform::Raw => vec![h, w],
        }
    }
}

/// Converts pixels to `f32` in `[0, 1]`, appending them to `out`.
#[inline(always)]
fn push_scaled(out: &mut Vec<f32>, pixels: &[u8]) {
    // Division (not multiplication by 1/255) gives the same values as torchvision's ToTensor.
    out.extend(pixels.iter().map(|&p| f32::from(p) / 255.0));
}

impl Dataset for MnistDataset {
    fn len(&self) -> usize {
        self.images.shape().first().copied().unwrap_or(0)
    }

    fn get(&self, index: usize) -> Result<Vec<Tensor>> {
        self.get_batch(&[index])?
            .into_iter()
            .map(|t| t.squeeze(0))
            .collect()
    }

    fn get_batch(&self, indices: &[usize]) -> Result<Vec<Tensor>> {
        let (pixels, labels, h, w) = self.parts("MnistDataset::get_batch")?;
        let row = h * w;
        let n = labels.len();
        let out_of_range = |i: usize| Error::IndexOutOfRange {
            op: "MnistDataset::get_batch",
            index: i64::try_from(i).unwrap_or(i64::MAX),
            size: n,
        };
        let mut rows: Vec<&[u8]> = Vec::with_capacity(indices.len());
        let mut batch_labels: Vec<i64> = Vec::with_capacity(indices.len());
        for &i in indices {
            let label = labels.get(i).ok_or_else(|| out_of_range(i))?;
            let r = pixels
                .get(i * row..(i + 1) * row)
                .ok_or_else(|| out_of_range(i))?;
            rows.push(r);
            batch_labels.push(*label);
        }
        let mut shape = vec![indices.len()];
        shape.extend(self.sample_shape(h, w));
        let images = match self.transform {
            Transform::Raw => Tensor::from_vec(rows.concat(), &shape)?,
            Transform::Flat | Transform::Image => {
                let mut out: Vec<f32> = Vec::with_capacity(row * indices.len());
                tandem_tensor::cpu::simd::dispatch(|| {
                    for r in &rows {
                        push_scaled(&mut out, r);
                    }
                });
                Tensor::from_vec(out, &shape)?
            }
        };
        let labels = Tensor::from_vec(batch_labels, &[indices.len()])?;
        Ok(vec![images, labels])
    }
}
