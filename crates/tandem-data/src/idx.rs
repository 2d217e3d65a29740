//! The IDX file format (used by MNIST and its relatives), plain or gzip-compressed.
//!
//! An IDX file is a 4-byte magic number — two zero bytes, a type code, the number of
//! dimensions — then each dimension as a big-endian `u32`, then the elements in row-major
//! order, big-endian. Type codes and the tensor dtype each becomes:
//!
//! | code | IDX type | tensor dtype |
//! |------|----------|--------------|
//! | 0x08 | unsigned byte | `uint8` |
//! | 0x09 | signed byte | `int32` (widened: there is no `int8` dtype) |
//! | 0x0B | 16-bit int | `int32` (widened) |
//! | 0x0C | 32-bit int | `int32` |
//! | 0x0D | 32-bit float | `float32` |
//! | 0x0E | 64-bit float | `float64` |
//!
//! Parsing treats its input as hostile: the header is checked (magic, type, rank, overflow of
//! the element count, a maximum of [`MAX_DATA_BYTES`]) and the declared size is compared with
//! the data actually present before the data buffer is allocated. A gzip stream is never
//! inflated past the size its header declares (plus one byte, to detect trailing data), and a
//! header that declares more than a gzip stream of that length could possibly hold is refused
//! up front, so a small hostile file cannot make the reader allocate gigabytes.
//!
//! ```
//! use tandem_data::idx;
//! use tandem_tensor::Tensor;
//! let t = Tensor::from_vec(vec![1u8, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
//! let bytes = idx::to_bytes(&t).unwrap();
//! let back = idx::from_bytes(&bytes).unwrap();
//! assert_eq!(back.shape(), &[2, 3]);
//! assert_eq!(back.to_vec::<u8>().unwrap(), vec![1, 2, 3, 4, 5, 6]);
//! ```

use flate2::read::MultiGzDecoder;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use tandem_tensor::{DType, Error, Result, Tensor};

/// The largest data section (in bytes) the parser accepts: 4 GiB.
pub const MAX_DATA_BYTES: u64 = 1 << 32;

/// Deflate cannot expand its input by more than about 1032 to 1; a header that declares more
/// than this many bytes per compressed byte is lying.
const MAX_DEFLATE_RATIO: u64 = 1100;

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The element type stored in an IDX file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdxType {
    /// Unsigned byte (code 0x08).
    U8,
    /// Signed byte (code 0x09).
    I8,
    /// Big-endian 16-bit signed integer (code 0x0B).
    I16,
    /// Big-endian 32-bit signed integer (code 0x0C).
    I32,
    /// Big-endian 32-bit float (code 0x0D).
    F32,
    /// Big-endian 64-bit float (code 0x0E).
    F64,
}

impl IdxType {
    /// The type of a type code, if it is one of the six IDX types.
    pub fn from_code(code: u8) -> Option<IdxType> {
        Some(match code {
            0x08 => IdxType::U8,
            0x09 => IdxType::I8,
            0x0B => IdxType::I16,
            0x0C => IdxType::I32,
            0x0D => IdxType::F32,
            0x0E => IdxType::F64,
            _ => return None,
        })
    }

    /// The type code written in the header.
    pub fn code(self) -> u8 {
        match self {
            IdxType::U8 => 0x08,
            IdxType::I8 => 0x09,
            IdxType::I16 => 0x0B,
            IdxType::I32 => 0x0C,
            IdxType::F32 => 0x0D,
            IdxType::F64 => 0x0E,
        }
    }

    /// Bytes per element in the file.
    pub fn size_in_bytes(self) -> usize {
        match self {
            IdxType::U8 | IdxType::I8 => 1,
            IdxType::I16 => 2,
            IdxType::I32 | IdxType::F32 => 4,
            IdxType::F64 => 8,
        }
    }

    /// The dtype of the tensor the parser returns for this type.
    pub fn dtype(self) -> DType {
        match self {
            IdxType::U8 => DType::U8,
            IdxType::I8 | IdxType::I16 | IdxType::I32 => DType::I32,
            IdxType::F32 => DType::F32,
            IdxType::F64 => DType::F64,
        }
    }
}

/// A parsed and checked header.
struct Header {
    ty: IdxType,
    dims: Vec<usize>,
    header_bytes: u64,
    data_bytes: u64,
}

fn format_error(path: Option<&str>, msg: impl Into<String>) -> Error {
    Error::Format {
        format: "idx",
        path: path.map(str::to_string),
        msg: msg.into(),
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
pub(crate) fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn stream_error(path: Option<&str>, compressed: bool, e: io::Error) -> Error {
    if compressed {
        format_error(path, format!("corrupt gzip stream: {e}"))
    } else {
        format_error(path, format!("read failed: {e}"))
    }
}

fn read_header<R: Read>(reader: &mut R, path: Option<&str>, compressed: bool) -> Result<Header> {
    let mut magic = [0u8; 4];
    let got = read_full(reader, &mut magic).map_err(|e| stream_error(path, compressed, e))?;
    if got < 4 {
        return Err(format_error(
            path,
            format!("truncated: {got} bytes, shorter than the 4-byte magic number"),
        ));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(format_error(
            path,
            format!(
                "bad magic number {:02x} {:02x} {:02x} {:02x}: an IDX file starts with two zero bytes",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    let ty = IdxType::from_code(magic[2]).ok_or_else(|| {
        format_error(
            path,
            format!(
                "unknown element type code 0x{:02x} (known: 0x08 u8, 0x09 i8, 0x0b i16, 0x0c i32, 0x0d f32, 0x0e f64)",
                magic[2]
            ),
        )
    })?;
    let rank = usize::from(magic[3]);
    if rank == 0 {
        return Err(format_error(
            path,
            "the header declares 0 dimensions (at least one is needed)",
        ));
    }
    let mut raw_dims = vec![0u8; 4 * rank];
    let got = read_full(reader, &mut raw_dims).map_err(|e| stream_error(path, compressed, e))?;
    if got < raw_dims.len() {
        return Err(format_error(
            path,
            format!(
                "truncated header: {rank} dimensions need {} bytes after the magic number, found {got}",
                raw_dims.len()
            ),
        ));
    }
    let mut dims = Vec::with_capacity(rank);
    let mut count: u64 = 1;
    for chunk in raw_dims.chunks_exact(4) {
        let d = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        dims.push(d as usize);
        count = count.checked_mul(u64::from(d)).ok_or_else(|| {
            format_error(
                path,
                "the element count of the declared dimensions overflows",
            )
        })?;
    }
    let data_bytes = count
        .checked_mul(ty.size_in_bytes() as u64)
        .filter(|&b| b <= MAX_DATA_BYTES)
        .ok_or_else(|| {
            format_error(
                path,
                format!(
                    "dimensions {dims:?} of {ty:?} declare more than the {MAX_DATA_BYTES}-byte maximum"
                ),
            )
        })?;
    // Every dimension fits a usize here because their product is at most MAX_DATA_BYTES.
    Ok(Header {
        ty,
        dims,
        header_bytes: 4 + 4 * rank as u64,
        data_bytes,
    })
}

/// Parses an IDX stream: `source_len` is the length of the file (or of the compressed stream).
fn parse<R: Read>(
    mut reader: R,
    compressed: bool,
    source_len: u64,
    path: Option<&str>,
) -> Result<Tensor> {
    let h = read_header(&mut reader, path, compressed)?;
    let total = h.header_bytes + h.data_bytes;
    let describe = || {
        format!(
            "dimensions {:?} of {:?} ({} data bytes)",
            h.dims, h.ty, h.data_bytes
        )
    };
    if compressed {
        let bound = source_len
            .saturating_mul(MAX_DEFLATE_RATIO)
            .saturating_add(1024);
        if total > bound {
            return Err(format_error(
                path,
                format!(
                    "the header declares {}, more than a gzip stream of {source_len} bytes can hold",
                    describe()
                ),
            ));
        }
    } else if source_len < total {
        return Err(format_error(
            path,
            format!(
                "truncated: the header declares {} but only {} bytes follow it",
                describe(),
                source_len.saturating_sub(h.header_bytes)
            ),
        ));
    } else if source_len > total {
        return Err(format_error(
            path,
            format!(
                "{} unexpected bytes after the data (the header declares {})",
                source_len - total,
                describe()
            ),
        ));
    }
    let want = usize::try_from(h.data_bytes)
        .map_err(|_| format_error(path, format!("{} does not fit in memory", describe())))?;
    // One spare byte so that trailing data can be detected without growing the buffer.
    let mut data = Vec::with_capacity(want + 1);
    (&mut reader)
        .take(h.data_bytes + 1)
        .read_to_end(&mut data)
        .map_err(|e| stream_error(path, compressed, e))?;
    if data.len() < want {
        return Err(format_error(
            path,
            format!(
                "truncated: the header declares {} but the data has only {} bytes",
                describe(),
                data.len()
            ),
        ));
    }
    if data.len() > want {
        return Err(format_error(
            path,
            format!(
                "unexpected bytes after the data (the header declares {})",
                describe()
            ),
        ));
    }
    to_tensor(h.ty, &h.dims, data)
}

fn be_elements<T, const N: usize>(data: &[u8], conv: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            conv(a)
        })
        .collect()
}

fn to_tensor(ty: IdxType, dims: &[usize], data: Vec<u8>) -> Result<Tensor> {
    match ty {
        IdxType::U8 => Tensor::from_vec(data, dims),
        IdxType::I8 => Tensor::from_vec(
            data.iter()
                .map(|&b| i32::from(b as i8))
                .collect::<Vec<i32>>(),
            dims,
        ),
        IdxType::I16 => Tensor::from_vec(
            be_elements(&data, |a| i32::from(i16::from_be_bytes(a))),
            dims,
        ),
        IdxType::I32 => Tensor::from_vec(be_elements(&data, i32::from_be_bytes), dims),
        IdxType::F32 => Tensor::from_vec(be_elements(&data, f32::from_be_bytes), dims),
        IdxType::F64 => Tensor::from_vec(be_elements(&data, f64::from_be_bytes), dims),
    }
}

/// True when `bytes` starts with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Parses IDX data held in memory; gzip-compressed data is recognized by its magic number
/// and inflated on the fly.
pub fn from_bytes(bytes: &[u8]) -> Result<Tensor> {
    if is_gzip(bytes) {
        parse(MultiGzDecoder::new(bytes), true, bytes.len() as u64, None)
    } else {
        parse(bytes, false, bytes.len() as u64, None)
    }
}

/// Reads an IDX file, plain or gzip-compressed (recognized by its magic number, whatever
/// the file's name). Errors name the file and say what was wrong with it.
///
/// A `uint8` file is read straight into the tensor's buffer: one allocation.
pub fn read(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let io_error = |source: io::Error| Error::Io {
        path: shown.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    let mut head = [0u8; 2];
    let got = read_full(&mut file, &mut head).map_err(io_error)?;
    file.seek(SeekFrom::Start(0)).map_err(io_error)?;
    if is_gzip(&head[..got]) {
        parse(MultiGzDecoder::new(file), true, len, Some(&shown))
    } else {
        parse(file, false, len, Some(&shown))
    }
}

/// Encodes a tensor as an (uncompressed) IDX file: `uint8` as unsigned bytes, `int32` as
/// 32-bit integers, `float32` and `float64` as floats. Other dtypes, 0-d tensors, more than
/// 255 dimensions and dimensions over `u32::MAX` are errors.
pub fn to_bytes(tensor: &Tensor) -> Result<Vec<u8>> {
    let unsupported = || Error::UnsupportedDType {
        op: "idx::to_bytes",
        dtype: tensor.dtype(),
        device: tensor.device(),
    };
    let ty = match tensor.dtype() {
        DType::U8 => IdxType::U8,
        DType::I32 => IdxType::I32,
        DType::F32 => IdxType::F32,
        DType::F64 => IdxType::F64,
        _ => return Err(unsupported()),
    };
    let rank = u8::try_from(tensor.rank())
        .ok()
        .filter(|&r| r > 0)
        .ok_or_else(|| Error::BadShape {
            op: "idx::to_bytes",
            shape: tensor.shape().to_vec(),
            msg: "IDX holds 1 to 255 dimensions".into(),
        })?;
    let mut out = Vec::with_capacity(4 + 4 * tensor.rank() + tensor.numel() * ty.size_in_bytes());
    out.extend_from_slice(&[0, 0, ty.code(), rank]);
    for &d in tensor.shape() {
        let d = u32::try_from(d).map_err(|_| Error::BadShape {
            op: "idx::to_bytes",
            shape: tensor.shape().to_vec(),
            msg: "IDX dimensions are at most u32::MAX".into(),
        })?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    match ty {
        IdxType::U8 => out.extend_from_slice(&tensor.to_vec::<u8>()?),
        IdxType::I32 => {
            for v in tensor.to_vec::<i32>()? {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        IdxType::F32 => {
            for v in tensor.to_vec::<f32>()? {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        IdxType::F64 => {
            for v in tensor.to_vec::<f64>()? {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        IdxType::I8 | IdxType::I16 => return Err(unsupported()),
    }
    Ok(out)
}

#[cfg(test)]
#[path = "idx_tests.rs"]
mod tests;
