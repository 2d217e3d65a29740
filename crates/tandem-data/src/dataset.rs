//! Map-style datasets: the [`Dataset`] trait, batch assembly ([`collate`]) and
//! [`TensorDataset`].

use tandem_tensor::{bf16, f16, DType, Element, Error, Result, ResultExt, Tensor};

/// A map-style dataset: `len()` samples, each a small tuple of tensors (for example
/// `[image, label]`), fetched by index.
///
/// Implementations must be `Send + Sync`: the [`DataLoader`](crate::DataLoader) calls them
/// from a background thread.
///
/// ```
/// use tandem_data::Dataset;
/// use tandem_tensor::{Result, Tensor};
///
/// /// The squares of 0..n, as (x, x²) pairs.
/// struct Squares(usize);
///
/// impl Dataset for Squares {
///     fn len(&self) -> usize {
///         self.0
///     }
///     fn get(&self, index: usize) -> Result<Vec<Tensor>> {
///         let x = index as f32;
///         Ok(vec![Tensor::scalar(x), Tensor::scalar(x * x)])
///     }
/// }
///
/// let batch = Squares(10).get_batch(&[2, 3]).unwrap();
/// assert_eq!(batch[1].shape(), &[2]);
/// assert_eq!(batch[1].to_vec::<f32>().unwrap(), vec![4.0, 9.0]);
/// ```
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// True when the dataset has no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `index` (in `0..len()`) as a tuple of tensors.
    fn get(&self, index: usize) -> Result<Vec<Tensor>>;

    /// A whole batch: element `k` of the result stacks element `k` of each sample along a new
    /// leading dimension of size `indices.len()`.
    ///
    /// The default calls [`Dataset::get`] for each index and stacks the results with
    /// [`collate`]; datasets that hold their data in one buffer override it with a direct
    /// gather.
    fn get_batch(&self, indices: &[usize]) -> Result<Vec<Tensor>> {
        let samples = indices
            .iter()
            .map(|&i| self.get(i))
            .collect::<Result<Vec<_>>>()?;
        collate(&samples)
    }
}

/// Stacks samples into a batch: element `k` of the result has shape `[samples.len()] +
/// shape_k`, where every sample's element `k` must have shape `shape_k` and the same dtype.
///
/// Fails on an empty list (the shapes would be unknown), and on samples that disagree in
/// length, shape or dtype, naming the sample and element.
///
/// ```
/// use tandem_data::collate;
/// use tandem_tensor::Tensor;
/// let a = vec![Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap(), Tensor::scalar(0i64)];
/// let b = vec![Tensor::from_vec(vec![3.0f32, 4.0], &[2]).unwrap(), Tensor::scalar(1i64)];
/// let batch = collate(&[a, b]).unwrap();
/// assert_eq!(batch[0].shape(), &[2, 2]);
/// assert_eq!(batch[1].to_vec::<i64>().unwrap(), vec![0, 1]);
/// ```
pub fn collate(samples: &[Vec<Tensor>]) -> Result<Vec<Tensor>> {
    let first = samples
        .first()
        .ok_or_else(|| Error::invalid("collate", "cannot stack an empty list of samples"))?;
    for (i, s) in samples.iter().enumerate() {
        if s.len() != first.len() {
            return Err(Error::invalid(
                "collate",
                format!(
                    "sample {i} has {} tensors but sample 0 has {}",
                    s.len(),
                    first.len()
                ),
            ));
        }
    }
    (0..first.len())
        .map(|k| {
            let parts: Vec<&Tensor> = samples.iter().map(|s| &s[k]).collect();
            stack(&parts).context(|| format!("element {k} of the samples"))
        })
        .collect()
}

/// Stacks tensors of one shape and dtype along a new leading dimension.
fn stack(parts: &[&Tensor]) -> Result<Tensor> {
    let first = parts
        .first()
        .ok_or_else(|| Error::invalid("stack", "cannot stack an empty list"))?;
    for (i, p) in parts.iter().enumerate() {
        if p.shape() != first.shape() {
            return Err(Error::ShapeMismatch {
                op: "stack",
                lhs: first.shape().to_vec(),
                rhs: p.shape().to_vec(),
                hint: format!("sample 0 vs sample {i}: samples must agree in shape"),
            });
        }
        if p.dtype() != first.dtype() {
            return Err(Error::DTypeMismatch {
                op: "stack",
                expected: format!("{} (the dtype of sample 0)", first.dtype()),
                got: p.dtype(),
            })
            .context(|| format!("sample {i}"));
        }
    }
    let mut shape = Vec::with_capacity(first.rank() + 1);
    shape.push(parts.len());
    shape.extend_from_slice(first.shape());
    match first.dtype() {
        DType::F32 => stack_typed::<f32>(parts, &shape),
        DType::F64 => stack_typed::<f64>(parts, &shape),
        DType::F16 => stack_typed::<f16>(parts, &shape),
        DType::BF16 => stack_typed::<bf16>(parts, &shape),
        DType::I64 => stack_typed::<i64>(parts, &shape),
        DType::I32 => stack_typed::<i32>(parts, &shape),
        DType::U8 => stack_typed::<u8>(parts, &shape),
        DType::Bool => stack_typed::<bool>(parts, &shape),
    }
}

/// Concatenates the row-major elements of `parts` (all of dtype `T`) into one tensor.
fn stack_typed<T: Element>(parts: &[&Tensor], shape: &[usize]) -> Result<Tensor> {
    let total = tandem_tensor::layout::numel(shape);
    let mut out: Vec<T> = Vec::with_capacity(total);
    for p in parts {
        match p.as_slice::<T>() {
            Some(s) => out.extend_from_slice(s),
            None => out.extend(p.to_vec::<T>()?),
        }
    }
    Tensor::from_vec(out, shape)
}

/// A dataset over tensors that share their leading dimension: sample `i` is row `i` of each.
///
/// ```
/// use tandem_data::{Dataset, TensorDataset};
/// use tandem_tensor::Tensor;
/// let x = Tensor::from_vec((0..12).map(|v| v as f32).collect::<Vec<_>>(), &[4, 3]).unwrap();
/// let y = Tensor::from_vec(vec![0i64, 1, 0, 1], &[4]).unwrap();
/// let ds = TensorDataset::new(vec![x, y]).unwrap();
/// assert_eq!(ds.len(), 4);
/// let batch = ds.get_batch(&[3, 0]).unwrap();
/// assert_eq!(batch[0].to_vec::<f32>().unwrap(), vec![9.0, 10.0, 11.0, 0.0, 1.0, 2.0]);
/// assert_eq!(batch[1].to_vec::<i64>().unwrap(), vec![1, 0]);
/// ```
#[derive(Clone, Debug)]
pub struct TensorDataset {
    tensors: Vec<Tensor>,
    len: usize,
}

impl TensorDataset {
    /// A dataset over `tensors`, which must be at least one, each of rank 1 or more, all with
    /// the same leading dimension (the number of samples). Non-contiguous tensors are copied
    /// once here so that batches can be gathered row by row.
    pub fn new(tensors: Vec<Tensor>) -> Result<TensorDataset> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid("TensorDataset::new", "needs at least one tensor"))?;
        if first.rank() == 0 {
            return Err(Error::BadShape {
                op: "TensorDataset::new",
                shape: vec![],
                msg: "tensor 0 is 0-d; samples are taken along a leading dimension".into(),
            });
        }
        let len = first.shape()[0];
        for (i, t) in tensors.iter().enumerate() {
            if t.shape().first() != Some(&len) {
                return Err(Error::ShapeMismatch {
                    op: "TensorDataset::new",
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                    hint: format!(
                        "tensor {i} must have the same leading dimension ({len}) as tensor 0"
                    ),
                });
            }
        }
        let tensors = tensors
            .iter()
            .map(Tensor::contiguous)
            .collect::<Result<Vec<_>>>()?;
        Ok(TensorDataset { tensors, len })
    }

    /// The tensors, each of leading dimension `len()`.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    fn check_index(&self, op: &'static str, index: usize) -> Result<()> {
        if index >= self.len {
            return Err(Error::IndexOutOfRange {
                op,
                index: i64::try_from(index).unwrap_or(i64::MAX),
                size: self.len,
            });
        }
        Ok(())
    }
}

impl Dataset for TensorDataset {
    fn len(&self) -> usize {
        self.len
    }

    /// Row `index` of each tensor, as views (no copy).
    fn get(&self, index: usize) -> Result<Vec<Tensor>> {
        self.check_index("TensorDataset::get", index)?;
        self.tensors
            .iter()
            .map(|t| t.select(0, index as isize))
            .collect()
    }

    /// Copies the rows straight out of each tensor's buffer into the batch buffer.
    fn get_batch(&self, indices: &[usize]) -> Result<Vec<Tensor>> {
        for &i in indices {
            self.check_index("TensorDataset::get_batch", i)?;
        }
        self.tensors
            .iter()
            .map(|t| match t.dtype() {
                DType::F32 => gather_rows::<f32>(t, indices),
                DType::F64 => gather_rows::<f64>(t, indices),
                DType::F16 => gather_rows::<f16>(t, indices),
                DType::BF16 => gather_rows::<bf16>(t, indices),
                DType::I64 => gather_rows::<i64>(t, indices),
                DType::I32 => gather_rows::<i32>(t, indices),
                DType::U8 => gather_rows::<u8>(t, indices),
                DType::Bool => gather_rows::<bool>(t, indices),
            })
            .collect()
    }
}

/// Rows `indices` of `t` (leading dimension), stacked. Indices must be in range.
fn gather_rows<T: Element>(t: &Tensor, indices: &[usize]) -> Result<Tensor> {
    let mut shape = t.shape().to_vec();
    if let Some(d) = shape.first_mut() {
        *d = indices.len();
    }
    match t.as_slice::<T>() {
        Some(data) => {
            let row = t.shape()[1..].iter().product::<usize>();
            let mut out: Vec<T> = Vec::with_capacity(row * indices.len());
            for &i in indices {
                let src = data
                    .get(i * row..(i + 1) * row)
                    .ok_or(Error::IndexOutOfRange {
                        op: "TensorDataset::get_batch",
                        index: i64::try_from(i).unwrap_or(i64::MAX),
                        size: t.shape()[0],
                    })?;
                out.extend_from_slice(src);
            }
            Tensor::from_vec(out, &shape)
        }
        // Data that is not in host memory: go through per-row views.
        None => {
            let rows = indices
                .iter()
                .map(|&i| t.select(0, i as isize))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&Tensor> = rows.iter().collect();
            stack_typed::<T>(&refs, &shape)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct PerSample(usize);

    impl Dataset for PerSample {
        fn len(&self) -> usize {
            self.0
        }
        fn get(&self, index: usize) -> Result<Vec<Tensor>> {
            let v = index as f64;
            Ok(vec![
                Tensor::from_vec(vec![v, v + 0.5], &[2])?,
                Tensor::scalar(index as i64),
                Tensor::scalar(index.is_multiple_of(2)),
            ])
        }
    }

    #[test]
    fn default_get_batch_stacks_samples() {
        let b = PerSample(5).get_batch(&[4, 1, 2]).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].shape(), &[3, 2]);
        assert_eq!(
            b[0].to_vec::<f64>().unwrap(),
            vec![4.0, 4.5, 1.0, 1.5, 2.0, 2.5]
        );
        assert_eq!(b[1].to_vec::<i64>().unwrap(), vec![4, 1, 2]);
        assert_eq!(b[2].to_vec::<bool>().unwrap(), vec![true, false, true]);
        assert!(PerSample(5).get_batch(&[]).is_err());
    }

    #[test]
    fn collate_stacks_views_and_rejects_mismatches() {
        let base = Tensor::from_vec((0..6).map(|v| v as f32).collect::<Vec<_>>(), &[2, 3]).unwrap();
        let transposed = base.t().unwrap(); // [3, 2], not contiguous
        let other = Tensor::from_vec(vec![9.0f32; 6], &[3, 2]).unwrap();
        let b = collate(&[vec![transposed.clone()], vec![other]]).unwrap();
        assert_eq!(b[0].shape(), &[2, 3, 2]);
        assert_eq!(
            b[0].to_vec::<f32>().unwrap()[..6],
            [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );

        let e = collate(&[vec![transposed.clone()], vec![base.clone()]]).unwrap_err();
        assert!(e.to_string().contains("[3, 2] vs [2, 3]"), "{e}");
        assert!(e.to_string().contains("element 0"), "{e}");
        let e = collate(&[vec![base.clone()], vec![base.cast(DType::F64).unwrap()]]).unwrap_err();
        assert!(e.to_string().contains("float64"), "{e}");
        assert!(e.to_string().contains("sample 1"), "{e}");
        let e = collate(&[vec![base.clone()], vec![]]).unwrap_err();
        assert!(e.to_string().contains("sample 1 has 0 tensors"), "{e}");
    }

    #[test]
    fn tensor_dataset_checks_leading_dims() {
        let x = Tensor::zeros(&[4, 2], DType::F32);
        let y = Tensor::zeros(&[5], DType::I64);
        let e = TensorDataset::new(vec![x.clone(), y]).unwrap_err();
        assert!(e.to_string().contains("leading dimension (4)"), "{e}");
        assert!(TensorDataset::new(vec![]).is_err());
        assert!(TensorDataset::new(vec![Tensor::scalar(1.0f32)]).is_err());
        let ds = TensorDataset::new(vec![x]).unwrap();
        assert!(ds.get(4).is_err());
        assert!(ds.get_batch(&[0, 4]).is_err());
    }

    #[test]
    fn tensor_dataset_gathers_rows_like_get() {
        // A permuted (non-contiguous) input and an i32 column, odd sizes.
        let x = Tensor::from_vec((0..51).map(|v| v as f32).collect::<Vec<_>>(), &[3, 17])
            .unwrap()
            .t()
            .unwrap();
        let y = Tensor::from_vec((0..17).collect::<Vec<i32>>(), &[17]).unwrap();
        let ds = TensorDataset::new(vec![x, y]).unwrap();
        assert_eq!(ds.len(), 17);
        let idx = [16, 0, 5, 5, 9];
        let fast = ds.get_batch(&idx).unwrap();
        let samples: Vec<Vec<Tensor>> = idx.iter().map(|&i| ds.get(i).unwrap()).collect();
        let slow = collate(&samples).unwrap();
        for (a, b) in fast.iter().zip(&slow) {
            assert_eq!(a.shape(), b.shape());
            assert_eq!(a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
        }
        assert_eq!(fast[0].to_vec::<f32>().unwrap()[..3], [16.0, 33.0, 50.0]);
        let empty = ds.get_batch(&[]).unwrap();
        assert_eq!(empty[0].shape(), &[0, 3]);
    }
}
