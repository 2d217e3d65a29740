//! The tensor value type: shared storage plus a layout.

use crate::layout::{infer_reshape, normalize_axis, Layout, Shape};
use crate::{CpuStorage, DType, Device, Element, Error, Result, Storage};
use std::sync::Arc;

/// An n-dimensional array: reference-counted storage plus a [`Layout`] (shape, strides, offset).
///
/// Cloning a tensor, and every view (reshape of contiguous data, permute, narrow, expand,
/// squeeze, unsqueeze), shares the storage: no element is copied. Tensors are immutable values;
/// the few in-place operations (optimizer updates) copy first when the storage is shared.
/// `Tensor` is `Send + Sync`. It has no autograd: that is `tandem-eager`'s job.
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    layout: Layout,
}

impl Tensor {
    /// A tensor over existing storage with the given layout. Fails if the layout reaches past
    /// the end of the storage.
    pub fn from_storage(storage: Arc<Storage>, layout: Layout) -> Result<Tensor> {
        let (_, end) = layout.storage_span();
        if end > storage.len() {
            return Err(Error::BadShape {
                op: "from_storage",
                shape: layout.shape().to_vec(),
                msg: format!(
                    "layout reaches element {end} of a storage of {}",
                    storage.len()
                ),
            });
        }
        Ok(Tensor { storage, layout })
    }

    /// A contiguous tensor owning a host buffer.
    pub fn from_cpu_storage(storage: CpuStorage, shape: &[usize]) -> Result<Tensor> {
        let n = crate::layout::numel(shape);
        if storage.len() != n {
            return Err(Error::BadShape {
                op: "from_vec",
                shape: shape.to_vec(),
                msg: format!("{} elements given for {n}", storage.len()),
            });
        }
        Ok(Tensor {
            storage: Arc::new(Storage::Cpu(storage)),
            layout: Layout::contiguous(shape),
        })
    }

    /// A contiguous tensor from a vector and a shape (the lengths must agree).
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    /// assert_eq!(t.shape(), &[2, 2]);
    /// ```
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_cpu_storage(T::into_cpu_storage(data), shape)
    }

    /// A contiguous tensor copied from a slice.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A 0-d tensor holding one value.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor {
            storage: Arc::new(Storage::Cpu(T::into_cpu_storage(vec![value]))),
            layout: Layout::contiguous(&[]),
        }
    }

    /// A tensor of the given shape filled with `value` (converted to `dtype`).
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Tensor {
        let n = crate::layout::numel(shape);
        Tensor {
            storage: Arc::new(Storage::Cpu(CpuStorage::full(dtype, n, value))),
            layout: Layout::contiguous(shape),
        }
    }

    /// A tensor of the given shape filled with `value` (converted to `dtype`), created directly
    /// on `device` (no host copy for a GPU). Fails when the device is not available.
    pub fn full_on(shape: &[usize], value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Ok(Tensor::full(shape, value, dtype)),
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => crate::cuda::full(ordinal, shape, value, dtype),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Tensor::full(shape, value, dtype).to_device(device),
        }
    }

    /// Zeros created on `device` (see [`Tensor::full_on`]).
    pub fn zeros_on(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full_on(shape, 0.0, dtype, device)
    }

    /// Ones created on `device` (see [`Tensor::full_on`]).
    pub fn ones_on(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full_on(shape, 1.0, dtype, device)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
        let n = crate::layout::numel(shape);
        Tensor {
            storage: Arc::new(Storage::Cpu(CpuStorage::zeros(dtype, n))),
            layout: Layout::contiguous(shape),
        }
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(shape, 1.0, dtype)
    }

    /// Zeros with this tensor's shape and dtype.
    pub fn zeros_like(&self) -> Tensor {
        Tensor::zeros(self.shape(), self.dtype())
    }

    /// `[start, start+step, ...)` up to `end` (exclusive), like `torch.arange`.
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::invalid(
                "arange",
                format!("bad range {start}..{end} step {step}"),
            ));
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        if n > (1 << 40) {
            return Err(Error::invalid(
                "arange",
                format!("{n} elements is too many"),
            ));
        }
        let values: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Tensor::from_vec(values, &[n])?.cast(dtype)
    }

    /// Dimension sizes.
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// Dimension sizes (alias of [`Tensor::shape`]).
    pub fn dims(&self) -> &[usize] {
        self.layout.shape()
    }

    /// Size of one dimension (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        let a = normalize_axis("dim", axis, self.rank())?;
        Ok(self.shape().get(a).copied().unwrap_or(1))
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.layout.rank()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// Device of the data.
    pub fn device(&self) -> Device {
        self.storage.device()
    }

    /// Shape, strides and offset.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Strides in elements.
    pub fn strides(&self) -> &[usize] {
        self.layout.strides()
    }

    /// The shared storage.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// True when the elements are laid out row-major with no gaps.
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// True when both tensors view the same storage (no copy was made between them).
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The host buffer and layout, or an error naming the op if the data is on a GPU.
    pub fn cpu(&self, op: &'static str) -> Result<(&CpuStorage, &Layout)> {
        Ok((self.storage.cpu(op)?, &self.layout))
    }

    /// The elements in row-major order as a slice, without copying, when the tensor is a
    /// contiguous view of host memory of dtype `T`. `None` otherwise.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        if !self.is_contiguous() {
            return None;
        }
        let s = T::cpu_slice(self.storage.cpu("as_slice").ok()?)?;
        let start = self.layout.offset();
        s.get(start..start + self.numel())
    }

    /// Copies the elements in row-major order into a vector of `T` (the dtype must be `T`).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch {
                op: "to_vec",
                expected: T::DTYPE.name().to_string(),
                got: self.dtype(),
            });
        }
        if let Some(s) = self.as_slice::<T>() {
            return Ok(s.to_vec());
        }
        let host = self.to_device(Device::Cpu)?;
        let data = T::cpu_slice(host.storage.cpu("to_vec")?).ok_or(Error::DTypeMismatch {
            op: "to_vec",
            expected: T::DTYPE.name().to_string(),
            got: self.dtype(),
        })?;
        Ok(host.layout.positions().map(|p| data[p]).collect())
    }

    /// Copies the elements in row-major order, converted to `f64`, whatever the dtype.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        let host = self.to_device(Device::Cpu)?;
        let s = host.storage.cpu("to_f64_vec")?;
        Ok(
            crate::match_cpu_storage!(s, v => host.layout.positions().map(|p| v[p].to_f64()).collect()),
        )
    }

    /// The single value of a one-element tensor, as `f64`.
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// assert_eq!(Tensor::scalar(7.0f32).item().unwrap(), 7.0);
    /// ```
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::BadShape {
                op: "item",
                shape: self.shape().to_vec(),
                msg: "item() needs a tensor with exactly one element".into(),
            });
        }
        Ok(self.to_f64_vec()?[0])
    }

    /// A view with a new layout over the same storage (checked against the storage size).
    pub fn with_layout(&self, layout: Layout) -> Result<Tensor> {
        Tensor::from_storage(self.storage.clone(), layout)
    }

    fn view(&self, layout: Layout) -> Tensor {
        Tensor {
            storage: self.storage.clone(),
            layout,
        }
    }

    /// A tensor with the same elements and a new shape; one `-1` is inferred. A view when the
    /// layout allows it (always for contiguous tensors), otherwise a copy.
    pub fn reshape(&self, shape: &[isize]) -> Result<Tensor> {
        let shape = infer_reshape("reshape", self.shape(), shape)?;
        self.reshape_to(&shape)
    }

    /// Like [`Tensor::reshape`] with a fully known shape.
    pub fn reshape_to(&self, shape: &[usize]) -> Result<Tensor> {
        if crate::layout::numel(shape) != self.numel() {
            return Err(Error::shape_mismatch("reshape", self.shape(), shape));
        }
        match self.layout.reshape(shape) {
            Some(l) => Ok(self.view(l)),
            None => {
                let c = self.contiguous()?;
                Ok(c.view(Layout::contiguous(shape)))
            }
        }
    }

    /// Reorders dimensions: output dim `i` is input dim `perm[i]` (negative axes allowed).
    pub fn permute(&self, perm: &[isize]) -> Result<Tensor> {
        let rank = self.rank();
        let perm: Vec<usize> = perm
            .iter()
            .map(|&p| normalize_axis("permute", p, rank))
            .collect::<Result<_>>()?;
        Ok(self.view(self.layout.permute(&perm)?))
    }

    /// Swaps two dimensions.
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let rank = self.rank();
        let a = normalize_axis("transpose", a, rank)?;
        let b = normalize_axis("transpose", b, rank)?;
        if rank < 2 {
            return Ok(self.clone());
        }
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(a, b);
        Ok(self.view(self.layout.permute(&perm)?))
    }

    /// Transpose of the last two dimensions (`.mT` in PyTorch).
    pub fn t(&self) -> Result<Tensor> {
        self.transpose(-2, -1)
    }

    /// Elements `start..start+len` of `axis`, as a view.
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let a = normalize_axis("narrow", axis, self.rank())?;
        Ok(self.view(self.layout.slice(a, start, len, 1)?))
    }

    /// Python-style slice `start..end` with `step` along `axis`, as a view. Negative `start`/`end`
    /// count from the end; out-of-range bounds are clamped like Python.
    pub fn slice(&self, axis: isize, start: isize, end: isize, step: usize) -> Result<Tensor> {
        let a = normalize_axis("slice", axis, self.rank())?;
        let (start, len) = slice_range(self.shape()[a], start, end, step)?;
        Ok(self.view(self.layout.slice(a, start, len, step)?))
    }

    /// Index `index` of `axis`, removing that dimension (`x[i]` in PyTorch), as a view.
    pub fn select(&self, axis: isize, index: isize) -> Result<Tensor> {
        let a = normalize_axis("select", axis, self.rank())?;
        let dim = self.shape()[a];
        let i = if index < 0 {
            index + dim as isize
        } else {
            index
        };
        if i < 0 || i as usize >= dim {
            return Err(Error::IndexOutOfRange {
                op: "select",
                index: index as i64,
                size: dim,
            });
        }
        self.narrow(a as isize, i as usize, 1)?.squeeze(a as isize)
    }

    /// A view broadcast to `shape` (NumPy rules).
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(self.view(self.layout.broadcast_to(shape)?))
    }

    /// Removes `axis`, which must have size 1.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let a = normalize_axis("squeeze", axis, self.rank())?;
        if self.rank() == 0 {
            return Ok(self.clone());
        }
        if self.shape()[a] != 1 {
            return Err(Error::BadShape {
                op: "squeeze",
                shape: self.shape().to_vec(),
                msg: format!("dimension {a} has size {}, not 1", self.shape()[a]),
            });
        }
        let mut shape = Shape::from_slice(self.shape());
        let mut strides = crate::layout::Strides::from_slice(self.strides());
        shape.remove(a);
        strides.remove(a);
        Ok(self.view(Layout::from_parts(shape, strides, self.layout.offset())))
    }

    /// Removes every dimension of size 1.
    pub fn squeeze_all(&self) -> Tensor {
        let (shape, strides): (Shape, crate::layout::Strides) = self
            .shape()
            .iter()
            .zip(self.strides())
            .filter(|(&d, _)| d != 1)
            .map(|(&d, &s)| (d, s))
            .unzip();
        self.view(Layout::from_parts(shape, strides, self.layout.offset()))
    }

    /// Inserts a dimension of size 1 at `axis` (in `-(rank+1)..=rank`).
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        let a = normalize_axis("unsqueeze", axis, self.rank() + 1)?;
        let mut shape = Shape::from_slice(self.shape());
        let mut strides = crate::layout::Strides::from_slice(self.strides());
        let stride = if a < self.rank() {
            self.strides()[a] * self.shape()[a]
        } else {
            1
        };
        shape.insert(a, 1);
        strides.insert(a, stride);
        Ok(self.view(Layout::from_parts(shape, strides, self.layout.offset())))
    }

    /// Merges dims `start..=end` into one (negative axes allowed).
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape_to(&[1]);
        }
        let s = normalize_axis("flatten", start, self.rank())?;
        let e = normalize_axis("flatten", end, self.rank())?;
        if s > e {
            return Err(Error::invalid(
                "flatten",
                format!("start dim {s} is after end dim {e}"),
            ));
        }
        let mut shape: Vec<usize> = self.shape()[..s].to_vec();
        shape.push(self.shape()[s..=e].iter().product());
        shape.extend_from_slice(&self.shape()[e + 1..]);
        self.reshape_to(&shape)
    }

    /// A contiguous tensor with the same elements: the same tensor if already contiguous with
    /// offset 0 and no extra storage, otherwise a copy.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() && self.layout.offset() == 0 && self.storage.len() == self.numel() {
            return Ok(self.clone());
        }
        self.copy()
    }

    /// A fresh contiguous copy that shares nothing with this tensor.
    pub fn copy(&self) -> Result<Tensor> {
        match &*self.storage {
            Storage::Cpu(s) => {
                let out = crate::cpu::copy::copy_strided(s, &self.layout);
                Tensor::from_cpu_storage(out, self.shape())
            }
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => crate::cuda::copy(self),
        }
    }

    /// Mutable access to the host elements of a contiguous, uniquely owned tensor: copies first
    /// if the storage is shared or the layout is not a plain contiguous one (copy-on-write).
    pub fn make_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        if T::DTYPE != self.dtype() {
            return Err(Error::DTypeMismatch {
                op: "make_mut",
                expected: T::DTYPE.name().to_string(),
                got: self.dtype(),
            });
        }
        if !(self.is_contiguous()
            && self.layout.offset() == 0
            && self.storage.len() == self.numel())
        {
            *self = self.copy()?;
        }
        let storage = Arc::make_mut(&mut self.storage);
        let cpu = storage.cpu_mut("make_mut")?;
        cpu.as_mut_slice::<T>()
    }

    /// Mutable access to the storage of a contiguous, uniquely owned tensor (copy-on-write).
    pub fn storage_mut(&mut self) -> Result<&mut Storage> {
        if !(self.is_contiguous()
            && self.layout.offset() == 0
            && self.storage.len() == self.numel())
        {
            *self = self.copy()?;
        }
        Ok(Arc::make_mut(&mut self.storage))
    }

    /// Copies the tensor to a device (a no-op clone when it is already there).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        match device {
            Device::Cpu => {
                #[cfg(feature = "cuda")]
                if let Storage::Cuda(_) = &*self.storage {
                    return crate::cuda::to_host(self);
                }
                Ok(self.clone())
            }
            Device::Cuda(_ordinal) => {
                #[cfg(feature = "cuda")]
                {
                    crate::cuda::to_device(self, _ordinal)
                }
                #[cfg(not(feature = "cuda"))]
                Err(Error::DeviceUnavailable {
                    device,
                    reason: "Tandem was built without the `cuda` feature (rebuild with `--features cuda`)".into(),
                })
            }
        }
    }
}

/// Resolves a Python-style slice of a dimension into (start, length).
pub fn slice_range(dim: usize, start: isize, end: isize, step: usize) -> Result<(usize, usize)> {
    if step == 0 {
        return Err(Error::invalid("slice", "step must be positive"));
    }
    let d = dim as isize;
    let clamp = |v: isize| -> usize {
        let v = if v < 0 { v + d } else { v };
        v.clamp(0, d) as usize
    };
    let s = clamp(start);
    let e = clamp(end);
    let len = if e > s { (e - s).div_ceil(step) } else { 0 };
    Ok((s, len))
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor[{:?}, {}, {}]",
            self.shape(),
            self.dtype(),
            self.device()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: Vec<f32>, s: &[usize]) -> Tensor {
        Tensor::from_vec(v, s).unwrap()
    }

    #[test]
    fn views_share_storage() {
        let a = t((0..24).map(|x| x as f32).collect(), &[2, 3, 4]);
        let b = a.reshape(&[6, -1]).unwrap();
        assert!(a.shares_storage(&b));
        assert_eq!(b.shape(), &[6, 4]);
        let p = a.permute(&[2, 0, 1]).unwrap();
        assert!(a.shares_storage(&p));
        assert_eq!(p.shape(), &[4, 2, 3]);
        assert_eq!(p.to_vec::<f32>().unwrap()[..4], [0.0, 4.0, 8.0, 12.0]);
        let s = a.slice(2, 0, 4, 2).unwrap();
        assert_eq!(s.to_vec::<f32>().unwrap()[..4], [0.0, 2.0, 4.0, 6.0]);
        let sel = a.select(0, 1).unwrap();
        assert_eq!(sel.shape(), &[3, 4]);
        assert_eq!(sel.to_vec::<f32>().unwrap()[0], 12.0);
        let u = a.unsqueeze(1).unwrap();
        assert_eq!(u.shape(), &[2, 1, 3, 4]);
        assert_eq!(u.squeeze(1).unwrap().shape(), &[2, 3, 4]);
        let e = t(vec![1.0, 2.0], &[2, 1]).expand(&[2, 3]).unwrap();
        assert_eq!(
            e.to_vec::<f32>().unwrap(),
            vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
        );
    }

    #[test]
    fn reshape_of_transpose_copies() {
        let a = t((0..6).map(|x| x as f32).collect(), &[2, 3]);
        let b = a.t().unwrap().reshape(&[-1]).unwrap();
        assert!(!a.shares_storage(&b));
        assert_eq!(
            b.to_vec::<f32>().unwrap(),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
    }

    #[test]
    fn make_mut_is_copy_on_write() {
        let a = t(vec![1.0, 2.0], &[2]);
        let mut b = a.clone();
        b.make_mut::<f32>().unwrap()[0] = 5.0;
        assert_eq!(a.to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
        assert_eq!(b.to_vec::<f32>().unwrap(), vec![5.0, 2.0]);
    }

    #[test]
    fn errors() {
        let a = t(vec![1.0, 2.0], &[2]);
        assert!(a.to_vec::<f64>().is_err());
        assert!(a.item().is_err());
        assert!(a.reshape(&[3]).is_err());
        assert!(a.select(0, 2).is_err());
        assert!(a.squeeze(0).is_err());
        assert!(Tensor::from_vec(vec![1.0f32; 3], &[2, 2]).is_err());
        let err = a.to_device(Device::Cuda(0));
        if cfg!(not(feature = "cuda")) {
            assert!(err.unwrap_err().to_string().contains("cuda"));
        }
    }

    #[test]
    fn python_slices() {
        assert_eq!(slice_range(5, 1, isize::MAX, 2).unwrap(), (1, 2));
        assert_eq!(slice_range(5, -2, 5, 1).unwrap(), (3, 2));
        assert_eq!(slice_range(5, 4, 2, 1).unwrap(), (4, 0));
    }
}
