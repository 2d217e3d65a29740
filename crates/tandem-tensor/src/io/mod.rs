//! NumPy (`.npy`, `.npz`) and safetensors I/O.
//!
//! - [`npy`]: one tensor per file, NumPy's own format (versions 1.0, 2.0 and 3.0 read; 1.0, or
//!   2.0 when the header needs it, written byte for byte like `np.save`).
//! - [`npz`]: a zip archive of `.npy` members, like `np.savez` / `np.savez_compressed`.
//! - [`safetensors`]: named tensors plus string metadata, the format of PyTorch / Hugging Face
//!   checkpoints (names such as `fc1.weight` are kept exactly).
//!
//! Every writer goes through [`atomic_write`]: a crash or an error half-way never leaves a torn
//! file behind, and an existing file is replaced only once the new one is complete on disk.
//! Every reader treats its input as hostile: sizes declared by a file are checked against the
//! bytes actually present before anything is allocated, and a malformed file is an
//! [`Error::Format`] naming the format and the path, never a panic.
//!
//! ```
//! use tandem_tensor::{io, Tensor};
//! let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
//! let bytes = io::npy::to_bytes(&t).unwrap();
//! let back = io::npy::from_bytes(&bytes).unwrap();
//! assert_eq!(back.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
//! ```

mod atomic;
pub mod npy;
pub mod npz;
pub mod safetensors;

pub use atomic::atomic_write;

use crate::{CpuStorage, DType, Device, Element, Error, Result, Tensor};
use half::{bf16, f16};
use std::path::Path;

/// A format error, with the path when the data came from a file.
pub(crate) fn format_error(
    format: &'static str,
    path: Option<&Path>,
    msg: impl Into<String>,
) -> Error {
    Error::Format {
        format,
        path: path.map(|p| p.display().to_string()),
        msg: msg.into(),
    }
}

/// The message of a format error (without its format and path prefix), for errors that are
/// re-wrapped with more context; other errors as displayed.
pub(crate) fn message(e: Error) -> String {
    match e {
        Error::Format { msg, .. } => msg,
        e => e.to_string(),
    }
}

/// An I/O error carrying the path involved.
pub(crate) fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The byte size of a tensor of `shape` and `dtype` declared by a file, checked BEFORE anything
/// is allocated: fails with an [`Error::Format`] of `format` if the element count or the byte
/// count overflows (also counting zero-sized dims as 1, so that the strides of an empty tensor
/// such as `[0, 2^62, 8]` stay representable), or if it is more than the `available` bytes the
/// file actually holds. The bound is the data present, so a lying header can never cause a
/// large allocation.
///
/// ```
/// use tandem_tensor::{io::check_declared_size, DType};
/// assert_eq!(check_declared_size("npy", &[2, 3], DType::F32, 24).unwrap(), 24);
/// assert!(check_declared_size("npy", &[2, 3], DType::F32, 23).is_err());
/// assert!(check_declared_size("npy", &[usize::MAX, 2], DType::U8, 100).is_err());
/// ```
pub fn check_declared_size(
    format: &'static str,
    shape: &[usize],
    dtype: DType,
    available: usize,
) -> Result<usize> {
    let size = dtype.size_in_bytes();
    let strides_fit = shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d.max(1)))
        .is_some();
    let bytes = shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d))
        .filter(|_| strides_fit)
        .ok_or_else(|| {
            Error::format(
                format,
                format!("shape {shape:?} of {dtype} has a byte size that overflows"),
            )
        })?;
    if bytes > available {
        return Err(Error::format(
            format,
            format!(
                "shape {shape:?} of {dtype} needs {bytes} data bytes but only {available} are present"
            ),
        ));
    }
    Ok(bytes)
}

/// The bytes of a whole input file: memory-mapped (no copy, no allocation) for regular files,
/// read into memory otherwise (pipes, special files) and for empty files, which cannot be
/// mapped.
///
/// A mapped file must not be truncated by another process while it is being read (the usual
/// caveat of memory-mapped I/O, shared with the safetensors and NumPy `mmap_mode` readers).
pub(crate) enum FileBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl FileBytes {
    /// Opens and maps (or reads) `path`; errors carry the path.
    pub(crate) fn open(path: &Path) -> Result<FileBytes> {
        let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
        let meta = file.metadata().map_err(|e| io_error(path, e))?;
        if meta.is_file() && meta.len() > 0 {
            // SAFETY: the map is only read through `&[u8]`; see the caveat above about other
            // processes truncating the file while it is mapped.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error(path, e))?;
            return Ok(FileBytes::Mapped(map));
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(|e| io_error(path, e))?;
        Ok(FileBytes::Owned(bytes))
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

/// Element types whose every bit pattern is a valid value (all but bool), so a buffer of them
/// can be filled straight from bytes.
trait Pod: Element {}
impl Pod for f32 {}
impl Pod for f64 {}
impl Pod for f16 {}
impl Pod for bf16 {}
impl Pod for i64 {}
impl Pod for i32 {}
impl Pod for u8 {}

/// Copies whole elements of `T` out of `bytes` (any alignment) with one `memcpy`, then swaps
/// the byte order of each element when `swap` is set.
fn pod_vec<T: Pod>(bytes: &[u8], swap: bool) -> Vec<T> {
    let size = std::mem::size_of::<T>();
    let n = bytes.len() / size;
    let mut out = Vec::<T>::with_capacity(n);
    // SAFETY: `out` has room for `n` elements, i.e. `n * size` bytes, and `bytes` holds at least
    // that many; the regions cannot overlap (fresh allocation). `T: Pod` is plain old data for
    // which every bit pattern is a valid value, so the elements are initialized after the copy.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr() as *mut u8, n * size);
        out.set_len(n);
    }
    if swap && size > 1 {
        // SAFETY: the same buffer viewed as bytes; any byte permutation of a Pod value is valid.
        let raw = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, n * size) };
        for element in raw.chunks_exact_mut(size) {
            element.reverse();
        }
    }
    out
}

/// Builds a host buffer of `dtype` from raw element bytes stored with the given byte order
/// (`big_endian`); one-byte dtypes ignore it. Bool bytes must be 0 or 1. Returns a message
/// (without format or path) on bad data.
pub(crate) fn storage_from_bytes(
    dtype: DType,
    bytes: &[u8],
    big_endian: bool,
) -> std::result::Result<CpuStorage, String> {
    let size = dtype.size_in_bytes();
    if !bytes.len().is_multiple_of(size) {
        return Err(format!(
            "{} bytes is not a whole number of {dtype} elements",
            bytes.len()
        ));
    }
    let swap = big_endian != cfg!(target_endian = "big");
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(pod_vec(bytes, swap)),
        DType::F64 => CpuStorage::F64(pod_vec(bytes, swap)),
        DType::F16 => CpuStorage::F16(pod_vec(bytes, swap)),
        DType::BF16 => CpuStorage::BF16(pod_vec(bytes, swap)),
        DType::I64 => CpuStorage::I64(pod_vec(bytes, swap)),
        DType::I32 => CpuStorage::I32(pod_vec(bytes, swap)),
        DType::U8 => CpuStorage::U8(bytes.to_vec()),
        DType::Bool => {
            if let Some(pos) = bytes.iter().position(|&b| b > 1) {
                return Err(format!(
                    "bool element {pos} is the byte {}, not 0 or 1",
                    bytes[pos]
                ));
            }
            CpuStorage::Bool(bytes.iter().map(|&b| b != 0).collect())
        }
    })
}

/// The elements of a tensor as little-endian bytes in row-major order, ready to be written:
/// borrowed from the storage when the tensor is a contiguous host view (no copy), otherwise
/// from a contiguous host copy.
pub(crate) struct LeBytes {
    /// A contiguous host tensor whose storage holds the bytes (unless `swapped` is set).
    tensor: Tensor,
    /// Byte range of the elements in the storage.
    range: std::ops::Range<usize>,
    /// The bytes in little-endian order, on big-endian hosts only.
    swapped: Option<Vec<u8>>,
}

impl LeBytes {
    /// Prepares the bytes of `t` (copied to the host and made contiguous if needed).
    pub(crate) fn new(op: &'static str, t: &Tensor) -> Result<LeBytes> {
        let host = t.to_device(Device::Cpu)?;
        let tensor = if host.is_contiguous() {
            host
        } else {
            host.copy()?
        };
        let (storage, layout) = tensor.cpu(op)?;
        let size = storage.dtype().size_in_bytes();
        let start = layout.offset() * size;
        let range = start..start + layout.numel() * size;
        let bytes = storage.as_bytes().get(range.clone()).ok_or_else(|| {
            Error::invalid(
                op,
                format!(
                    "the view of shape {:?} reaches past its storage",
                    layout.shape()
                ),
            )
        })?;
        let swapped = if cfg!(target_endian = "big") && size > 1 {
            let mut v = bytes.to_vec();
            for element in v.chunks_exact_mut(size) {
                element.reverse();
            }
            Some(v)
        } else {
            None
        };
        Ok(LeBytes {
            tensor,
            range,
            swapped,
        })
    }

    /// The little-endian bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        if let Some(v) = &self.swapped {
            return v;
        }
        // `new` checked that the tensor is on the host and that the range is inside its storage,
        // so the fallback to an empty slice is never taken.
        self.tensor
            .storage()
            .cpu("write")
            .ok()
            .and_then(|s| s.as_bytes().get(self.range.clone()))
            .unwrap_or(&[])
    }

    /// Number of bytes.
    pub(crate) fn len(&self) -> usize {
        self.range.len()
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Helpers shared by the I/O tests.
    use crate::{DType, Tensor};
    use std::path::PathBuf;

    /// A fresh, empty directory under the system temp dir, removed on drop.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("tandem-io-test-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        /// Names of the entries in the directory, sorted.
        pub fn entries(&self) -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// True when both tensors have the same dtype, shape and element bytes (NaN-safe).
    pub fn same(a: &Tensor, b: &Tensor) -> bool {
        let bytes = |t: &Tensor| super::LeBytes::new("test", t).unwrap().bytes().to_vec();
        a.dtype() == b.dtype() && a.shape() == b.shape() && bytes(a) == bytes(b)
    }

    /// A tensor of `shape` and `dtype` with varied values (including negatives, and for f32
    /// NaN, infinities and -0.0).
    pub fn sample(dtype: DType, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let values: Vec<f64> = (0..n)
            .map(|i| match dtype {
                DType::Bool => (i % 3 == 0) as u8 as f64,
                DType::U8 => ((i * 37) % 256) as f64,
                _ if dtype.is_float() => (i as f64 - 3.0) * 0.375,
                _ => (i as f64 - 3.0) * 1_000_003.0,
            })
            .collect();
        let mut t = Tensor::from_vec(values, &[n]).unwrap().cast(dtype).unwrap();
        if dtype == DType::F32 && n >= 4 {
            let s = t.make_mut::<f32>().unwrap();
            s[0] = f32::NAN;
            s[1] = f32::INFINITY;
            s[2] = f32::NEG_INFINITY;
            s[3] = -0.0;
        }
        t.reshape_to(shape).unwrap()
    }

    /// Non-contiguous views of a few shapes and dtypes: a transpose, a strided slice, an
    /// expanded (stride 0) view and a narrowed one with an offset.
    pub fn views() -> Vec<Tensor> {
        let a = sample(DType::F32, &[3, 4]);
        let b = sample(DType::I64, &[2, 3, 5]);
        vec![
            a.t().unwrap(),
            b.slice(2, 1, 5, 2).unwrap(),
            sample(DType::F64, &[3, 1]).expand(&[3, 4]).unwrap(),
            b.narrow(1, 1, 2).unwrap().permute(&[2, 0, 1]).unwrap(),
            sample(DType::Bool, &[4, 4]).t().unwrap(),
            sample(DType::F16, &[5, 2]).narrow(0, 1, 3).unwrap(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{sample, views};
    use super::*;

    #[test]
    fn storage_from_bytes_handles_byte_order_and_alignment() {
        let v = [1.5f32, -2.25, 1e30];
        let mut le: Vec<u8> = vec![0xAA]; // an odd start: the data is unaligned
        le.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        let be: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(
            storage_from_bytes(DType::F32, &le[1..], false).unwrap(),
            CpuStorage::F32(v.to_vec())
        );
        assert_eq!(
            storage_from_bytes(DType::F32, &be, true).unwrap(),
            CpuStorage::F32(v.to_vec())
        );
        let i: Vec<u8> = [-5i64, 1 << 40]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        assert_eq!(
            storage_from_bytes(DType::I64, &i, true).unwrap(),
            CpuStorage::I64(vec![-5, 1 << 40])
        );
        assert!(storage_from_bytes(DType::F32, &le[..5], false).is_err());
        let e = storage_from_bytes(DType::Bool, &[0, 1, 2], false).unwrap_err();
        assert!(e.contains("element 2"), "{e}");
        assert_eq!(
            storage_from_bytes(DType::Bool, &[0, 1, 1], true).unwrap(),
            CpuStorage::Bool(vec![false, true, true])
        );
    }

    #[test]
    fn le_bytes_of_views_are_row_major() {
        for v in views() {
            let got = LeBytes::new("test", &v).unwrap();
            let back = storage_from_bytes(v.dtype(), got.bytes(), false).unwrap();
            let expect = v.copy().unwrap();
            let expect = expect.cpu("test").unwrap().0;
            assert_eq!(back.as_bytes(), expect.as_bytes(), "{v:?}");
            assert_eq!(got.len(), v.numel() * v.dtype().size_in_bytes());
        }
        // A contiguous view with an offset borrows the right range.
        let t = sample(DType::I32, &[4, 3]).narrow(0, 2, 2).unwrap();
        let got = LeBytes::new("test", &t).unwrap();
        let expect: Vec<u8> = t
            .to_vec::<i32>()
            .unwrap()
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(got.bytes(), &expect[..]);
    }

    #[test]
    fn declared_sizes_are_checked() {
        assert_eq!(check_declared_size("npy", &[], DType::F64, 8).unwrap(), 8);
        assert_eq!(
            check_declared_size("npy", &[0, 1 << 40], DType::F64, 0).unwrap(),
            0
        );
        let e = check_declared_size("npy", &[1 << 62, 4], DType::F32, 10).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        let e = check_declared_size("npy", &[1 << 61], DType::F64, 10).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        // Empty, but the strides of the other dims would overflow.
        let e = check_declared_size("npy", &[0, 1 << 62, 8], DType::U8, 10).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        let e = check_declared_size("npy", &[usize::MAX, 2, 0], DType::U8, 10).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }
}
