//! NumPy `.npy` files: one tensor per file.
//!
//! Reading accepts format versions 1.0, 2.0 and 3.0, C order, and the dtypes `<f4` (float32),
//! `<f8` (float64), `<f2` (float16), `<i8` (int64), `<i4` (int32), `|u1` (uint8) and `|b1`
//! (bool), little- or big-endian (big-endian data is converted; one-byte types accept any
//! byte-order mark). Fortran-order files, other dtypes and structured dtypes are clear errors.
//!
//! Writing produces the bytes `np.save` writes: format 1.0 (2.0 only when the header needs
//! more than 65535 bytes), the header dict with sorted keys and NumPy's spare space, padded so
//! the data starts on a 64-byte boundary, then the elements in row-major order (views of any
//! layout are written in row-major order). `bfloat16` has no NumPy dtype: writing it is an
//! error that suggests casting to float32 or using safetensors.
//!
//! The header is parsed by a small parser for the dict literal NumPy writes (keys in any order,
//! spaces, trailing commas), not by evaluating anything. Hostile input (truncated files, wrong
//! magic, malformed or huge headers, shapes whose size overflows or exceeds the data present)
//! is an [`Error::Format`] with format `npy`, never a panic and never an
//! allocation larger than the data present.

mod header;

use super::{atomic_write, check_declared_size, format_error, io_error, FileBytes, LeBytes};
use crate::{DType, Error, Result, Tensor};
use header::{parse_dict, printable, Header};
use std::io::Write;
use std::path::Path;

/// The magic string that starts every `.npy` file.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// The data of a file NumPy writes starts on a multiple of this many bytes.
const ARRAY_ALIGN: usize = 64;
/// NumPy leaves room in the header for the first dimension to grow to this many digits.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// The largest header accepted when reading (NumPy's own headers for the dtypes Tandem reads
/// are a few hundred bytes).
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// The largest rank accepted when reading (NumPy's own limit).
pub const MAX_RANK: usize = 64;

/// Reads a `.npy` file. Errors carry the path.
pub fn read(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = FileBytes::open(path)?;
    parse(&bytes).map_err(|msg| format_error("npy", Some(path), msg))
}

/// Parses the bytes of a `.npy` file.
///
/// ```
/// use tandem_tensor::io::npy;
/// let mut bytes = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
/// bytes.extend(b"{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }");
/// bytes.resize(127, b' ');
/// bytes.push(b'\n');
/// bytes.extend([7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
/// let t = npy::from_bytes(&bytes).unwrap();
/// assert_eq!(t.to_vec::<i32>().unwrap(), vec![7, -1]);
/// ```
pub fn from_bytes(bytes: &[u8]) -> Result<Tensor> {
    parse(bytes).map_err(|msg| format_error("npy", None, msg))
}

/// Writes a tensor to a `.npy` file, atomically (see [`atomic_write`]).
pub fn write(path: impl AsRef<Path>, t: &Tensor) -> Result<()> {
    let path = path.as_ref();
    let encoded = Encoded::new(t)?;
    atomic_write(path, |w| encoded.write_to(w).map_err(|e| io_error(path, e)))
}

/// The bytes of a `.npy` file holding the tensor, exactly as `np.save` writes them.
pub fn to_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let encoded = Encoded::new(t)?;
    let mut out = Vec::with_capacity(encoded.len());
    out.extend_from_slice(&encoded.header);
    out.extend_from_slice(encoded.data.bytes());
    Ok(out)
}

impl Tensor {
    /// Reads a tensor from a NumPy `.npy` file (see [`read()`]).
    pub fn read_npy(path: impl AsRef<Path>) -> Result<Tensor> {
        read(path)
    }

    /// Writes the tensor to a NumPy `.npy` file, atomically (see [`write()`]).
    pub fn write_npy(&self, path: impl AsRef<Path>) -> Result<()> {
        write(path, self)
    }
}

/// A tensor ready to be written as `.npy`: the header and the element bytes.
pub(crate) struct Encoded {
    header: Vec<u8>,
    data: LeBytes,
}

impl Encoded {
    /// Encodes the header (failing for dtypes NumPy has not) and prepares the data bytes.
    pub(crate) fn new(t: &Tensor) -> Result<Encoded> {
        let header = header_bytes(t.dtype(), t.shape())?;
        let data = LeBytes::new("npy::write", t)?;
        Ok(Encoded { header, data })
    }

    /// Total size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.header.len() + self.data.len()
    }

    /// Writes header and data.
    pub(crate) fn write_to(&self, w: &mut dyn Write) -> std::io::Result<()> {
        w.write_all(&self.header)?;
        w.write_all(self.data.bytes())
    }
}

/// The NumPy `descr` of a dtype, as `np.save` writes it.
fn descr(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
        DType::BF16 => {
            return Err(Error::invalid(
                "npy::write",
                "bfloat16 has no NumPy dtype: cast to float32 first (`t.cast(DType::F32)`, \
                 exact) or save it as safetensors, which keeps bfloat16",
            ))
        }
    })
}

/// The header `np.save` writes for a C-order array of `dtype` and `shape`: magic, version,
/// header length, then the dict literal with NumPy's spare space, padded with spaces and a
/// newline so that the data starts on a multiple of 64 bytes.
fn header_bytes(dtype: DType, shape: &[usize]) -> Result<Vec<u8>> {
    let shape_repr = match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", dims.join(", "))
        }
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_repr}, }}",
        descr(dtype)?
    );
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        dict.extend(std::iter::repeat_n(
            ' ',
            GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits),
        ));
    }
    // The dict plus its final newline, then as many spaces as needed (1 to 64, like NumPy).
    let text_len = dict.len() + 1;
    for (major, len_bytes) in [(1u8, 2usize), (2, 4)] {
        let prefix = MAGIC.len() + 2 + len_bytes;
        let padding = ARRAY_ALIGN - (prefix + text_len) % ARRAY_ALIGN;
        let header_len = text_len + padding;
        let len_field = match len_bytes {
            2 => match u16::try_from(header_len) {
                Ok(n) => n.to_le_bytes().to_vec(),
                Err(_) => continue,
            },
            _ => match u32::try_from(header_len) {
                Ok(n) => n.to_le_bytes().to_vec(),
                Err(_) => break,
            },
        };
        let mut out = Vec::with_capacity(prefix + header_len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[major, 0]);
        out.extend_from_slice(&len_field);
        out.extend_from_slice(dict.as_bytes());
        out.resize(out.len() + padding, b' ');
        out.push(b'\n');
        return Ok(out);
    }
    Err(Error::BadShape {
        op: "npy::write",
        shape: shape.to_vec(),
        msg: "the npy header of this shape does not fit in 4 GiB".into(),
    })
}

/// Parses a whole `.npy` file; errors are messages without format or path.
pub(crate) fn parse(bytes: &[u8]) -> std::result::Result<Tensor, String> {
    let (header, data_start) = parse_header(bytes)?;
    let data = bytes.get(data_start..).unwrap_or_default();
    let size = check_declared_size("npy", &header.shape, header.dtype, data.len())
        .map_err(super::message)?;
    if data.len() > size {
        return Err(format!(
            "{} unexpected bytes follow the {size} data bytes of shape {:?} of {}",
            data.len() - size,
            header.shape,
            header.dtype
        ));
    }
    let storage = super::storage_from_bytes(header.dtype, data, header.big_endian)?;
    Tensor::from_cpu_storage(storage, &header.shape).map_err(|e| e.to_string())
}

/// Parses magic, version and header; returns the header and where the data starts.
fn parse_header(bytes: &[u8]) -> std::result::Result<(Header, usize), String> {
    let Some(magic) = bytes.get(..MAGIC.len() + 2) else {
        return Err(format!(
            "only {} bytes: too short for the npy magic string and version",
            bytes.len()
        ));
    };
    if &magic[..MAGIC.len()] != MAGIC {
        return Err(format!(
            "not an npy file: it starts with \"{}\" instead of the magic string \"\\x93NUMPY\"",
            printable(&magic[..MAGIC.len()])
        ));
    }
    let (major, minor) = (magic[6], magic[7]);
    let (len_bytes, utf8) = match (major, minor) {
        (1, 0) => (2, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => {
            return Err(format!(
                "unsupported npy format version {major}.{minor} (1.0, 2.0 and 3.0 are read)"
            ))
        }
    };
    let start = MAGIC.len() + 2 + len_bytes;
    let header_len = match bytes.get(MAGIC.len() + 2..start) {
        Some(&[a, b]) => u16::from_le_bytes([a, b]) as usize,
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) as usize,
        _ => return Err("truncated in the header length field".into()),
    };
    if header_len > MAX_HEADER_BYTES {
        return Err(format!(
            "the header declares {header_len} bytes, more than the {MAX_HEADER_BYTES} accepted"
        ));
    }
    let end = start + header_len;
    let Some(text) = bytes.get(start..end) else {
        return Err(format!(
            "truncated: the header declares {header_len} bytes but only {} follow",
            bytes.len().saturating_sub(start)
        ));
    };
    Ok((parse_dict(text, utf8)?, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_util::{same, sample, views, TempDir};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The 128-byte header NumPy writes for a small array, from the dict text.
    fn numpy_header(dict: &str) -> Vec<u8> {
        let mut h = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
        h.extend(dict.as_bytes());
        h.resize(127, b' ');
        h.push(b'\n');
        h
    }

    fn err(bytes: &[u8]) -> String {
        let e = from_bytes(bytes).unwrap_err();
        assert!(matches!(e, Error::Format { format: "npy", .. }), "{e:?}");
        e.to_string()
    }

    /// A file with the given header dict (version 1.0, unpadded) and data.
    fn file(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        f.extend((dict.len() as u16).to_le_bytes());
        f.extend(dict.as_bytes());
        f.extend(data);
        f
    }

    // Byte strings written by NumPy 2 (`np.save` and `np.lib.format.write_array`).
    const ARANGE_F4: &str = "934e554d5059010076007b276465736372273a20273c6634272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a000000000000803f00000040";
    const SCALAR_F8: &str = "934e554d5059010076007b276465736372273a20273c6638272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028292c207d20202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0000000000000440";
    const I8_2X3: &str = "934e554d5059010076007b276465736372273a20273c6938272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c2033292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200afeffffffffffffffffffffffffffffff0000000000000000010000000000000002000000000000000300000000000000";
    const EMPTY_B1: &str = "934e554d5059010076007b276465736372273a20277c6231272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028302c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a";
    const F2: &str = "934e554d5059010076007b276465736372273a20273c6632272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028332c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a003c00b8ff7b";
    const BE_F4: &str = "934e554d5059010076007b276465736372273a20273e6634272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c292c207d2020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a3fc00000c0000000";
    const FORTRAN_I4: &str = "934e554d5059010076007b276465736372273a20273c6934272c2027666f727472616e5f6f72646572273a20547275652c20277368617065273a2028322c2033292c207d20202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a000000000300000001000000040000000200000005000000";
    const V2_I4: &str = "934e554d50590200740000007b276465736372273a20273c6934272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0100000002000000";
    const V3_I4: &str = "934e554d50590300740000007b276465736372273a20273c6934272c2027666f727472616e5f6f72646572273a2046616c73652c20277368617065273a2028322c292c207d202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020202020200a0100000002000000";

    #[test]
    fn writes_the_bytes_numpy_writes() {
        // np.save of np.arange(3, dtype='<f4'), spelled out.
        let mut expected =
            numpy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }");
        expected.extend([0.0f32, 1.0, 2.0].iter().flat_map(|x| x.to_le_bytes()));
        assert_eq!(expected, hex(ARANGE_F4));
        let t = Tensor::from_vec(vec![0.0f32, 1.0, 2.0], &[3]).unwrap();
        assert_eq!(to_bytes(&t).unwrap(), expected);
        assert!(same(&from_bytes(&expected).unwrap(), &t));

        let cases = [
            (SCALAR_F8, Tensor::scalar(2.5f64)),
            (
                I8_2X3,
                Tensor::from_vec(vec![-2i64, -1, 0, 1, 2, 3], &[2, 3]).unwrap(),
            ),
            (
                EMPTY_B1,
                Tensor::from_vec(Vec::<bool>::new(), &[0]).unwrap(),
            ),
            (
                F2,
                Tensor::from_vec(
                    vec![half::f16::ONE, half::f16::from_f32(-0.5), half::f16::MAX],
                    &[3],
                )
                .unwrap(),
            ),
        ];
        for (numpy, t) in cases {
            let numpy = hex(numpy);
            assert_eq!(to_bytes(&t).unwrap(), numpy, "{t:?}");
            assert!(same(&from_bytes(&numpy).unwrap(), &t), "{t:?}");
        }
    }

    #[test]
    fn header_layout_matches_numpy() {
        // NumPy's spare space for the first dim can push the header to a second 64-byte block.
        let h = header_bytes(DType::F32, &[7, 12345]).unwrap();
        assert_eq!(h.len(), 128);
        let dims = [2usize, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        for rank in 0..dims.len() {
            let h = header_bytes(DType::U8, &dims[..rank]).unwrap();
            assert_eq!(h.len() % ARRAY_ALIGN, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
            assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize, h.len() - 10);
        }
        // A header longer than 65535 bytes needs format 2.0.
        let h = header_bytes(DType::U8, &vec![1; 30000]).unwrap();
        assert_eq!(&h[..8], b"\x93NUMPY\x02\x00");
        assert_eq!(h.len() % ARRAY_ALIGN, 0);
        let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        assert_eq!(len, h.len() - 12);
    }

    #[test]
    fn reads_versions_byte_orders_and_one_byte_types() {
        for v in [V2_I4, V3_I4] {
            let t = from_bytes(&hex(v)).unwrap();
            assert_eq!(t.to_vec::<i32>().unwrap(), vec![1, 2]);
        }
        let t = from_bytes(&hex(BE_F4)).unwrap();
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.5, -2.0]);
        let be: Vec<u8> = [-7i64, 1 << 50]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let t = from_bytes(&file(
            "{'descr': '>i8', 'fortran_order': False, 'shape': (2,)}",
            &be,
        ))
        .unwrap();
        assert_eq!(t.to_vec::<i64>().unwrap(), vec![-7, 1 << 50]);
        let native: Vec<u8> = [3.0f64].iter().flat_map(|x| x.to_ne_bytes()).collect();
        let t = from_bytes(&file(
            "{'descr': '=f8', 'fortran_order': False, 'shape': ()}",
            &native,
        ))
        .unwrap();
        assert_eq!(t.item().unwrap(), 3.0);
        for descr in ["<u1", ">u1", "|u1", "u1"] {
            let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,)}}");
            let t = from_bytes(&file(&dict, &[5, 250])).unwrap();
            assert_eq!(t.to_vec::<u8>().unwrap(), vec![5, 250], "{descr}");
        }
        let t = from_bytes(&file(
            "{'descr': '|b1', 'fortran_order': False, 'shape': (3,)}",
            &[1, 0, 1],
        ))
        .unwrap();
        assert_eq!(t.to_vec::<bool>().unwrap(), vec![true, false, true]);
    }

    #[test]
    fn header_parser_is_tolerant_of_what_numpy_may_write() {
        let data: Vec<u8> = (0..6i32).flat_map(|x| x.to_le_bytes()).collect();
        for dict in [
            "{'shape': (2, 3), 'fortran_order': False, 'descr': '<i4'}",
            "{\"descr\":\"<i4\",\"fortran_order\":False,\"shape\":(2,3,),}",
            "  {  'descr' : '<i4' ,\n 'fortran_order' : False , 'shape' : ( 2 , 3 ) , }  \r\n ",
            "{'descr': '<i4', 'fortran_order': False, 'shape': (2L, 3L), }",
        ] {
            let t = from_bytes(&file(dict, &data)).unwrap();
            assert_eq!(t.shape(), &[2, 3], "{dict}");
            assert_eq!(t.to_vec::<i32>().unwrap(), vec![0, 1, 2, 3, 4, 5]);
        }
    }

    #[test]
    fn round_trips_every_dtype_and_shape() {
        let shapes: [&[usize]; 7] = [&[], &[0], &[1], &[3], &[2, 3], &[2, 0, 3], &[1, 1, 2, 5]];
        for dtype in DType::ALL {
            for shape in shapes {
                let t = sample(dtype, shape);
                if dtype == DType::BF16 {
                    let e = to_bytes(&t).unwrap_err();
                    assert!(e.to_string().contains("float32"), "{e}");
                    continue;
                }
                let back = from_bytes(&to_bytes(&t).unwrap()).unwrap();
                assert!(same(&back, &t), "{dtype} {shape:?}");
            }
        }
        for v in views() {
            let back = from_bytes(&to_bytes(&v).unwrap()).unwrap();
            assert!(same(&back, &v), "{v:?}");
            assert!(back.is_contiguous());
        }
    }

    #[test]
    fn files_round_trip_and_errors_name_the_path() {
        let dir = TempDir::new("npy");
        let p = dir.path("x.npy");
        let t = sample(DType::F32, &[4, 5]).t().unwrap();
        t.write_npy(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), to_bytes(&t).unwrap());
        assert!(same(&Tensor::read_npy(&p).unwrap(), &t));
        // An empty file and a bad one: format errors carrying the path.
        std::fs::write(&p, b"").unwrap();
        let e = read(&p).unwrap_err();
        assert!(
            matches!(&e, Error::Format { path: Some(s), .. } if s.ends_with("x.npy")),
            "{e:?}"
        );
        std::fs::write(&p, b"PK\x03\x04 not npy at all").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("x.npy"));
        let e = read(dir.path("missing.npy")).unwrap_err();
        assert!(
            matches!(&e, Error::Io { path, .. } if path.ends_with("missing.npy")),
            "{e:?}"
        );
        // Writing bf16 fails before touching the file system.
        let bf = sample(DType::BF16, &[2]);
        assert!(bf.write_npy(dir.path("bf.npy")).is_err());
        assert_eq!(dir.entries(), vec!["x.npy".to_string()]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for numpy in [ARANGE_F4, SCALAR_F8, I8_2X3, V2_I4, V3_I4] {
            let f = hex(numpy);
            for len in 0..f.len() {
                let e = err(&f[..len]);
                assert!(!e.is_empty());
            }
            // Bytes after the data are rejected too.
            let mut longer = f.clone();
            longer.push(0);
            assert!(err(&longer).contains("unexpected bytes"));
        }
    }

    #[test]
    fn hostile_headers_are_clear_errors() {
        let ok = hex(ARANGE_F4);
        let mut bad_magic = ok.clone();
        bad_magic[0] = b'X';
        assert!(err(&bad_magic).contains("magic"));
        let mut bad_version = ok.clone();
        bad_version[6] = 4;
        assert!(err(&bad_version).contains("version 4.0"));
        // A version-2 header length of 4 GiB.
        let mut huge = b"\x93NUMPY\x02\x00\xff\xff\xff\xff{".to_vec();
        huge.extend([b' '; 100]);
        assert!(err(&huge).contains("more than"));
        // A header length larger than the file.
        let mut long = ok.clone();
        long[8] = 0xff;
        long[9] = 0x7f;
        assert!(err(&long).contains("truncated"));

        let cases: [(&str, &[u8], &str); 19] = [
            ("not a dict", b"", "expected '{'"),
            (
                "{'descr': '<f4', 'fortran_order': False}",
                b"",
                "'shape' is missing",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
                b"",
                "unexpected key",
            ),
            (
                "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': ()}",
                b"",
                "twice",
            ),
            (
                "{'descr': '<f4', 'fortran_order': Maybe, 'shape': ()}",
                b"",
                "True or False",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3)}",
                b"",
                "not a tuple",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': [3]}",
                b"",
                "expected '('",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,)}",
                b"",
                "negative",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3,)} junk",
                b"",
                "after the dictionary",
            ),
            (
                "{'descr': '<f4, 'fortran_order': False, 'shape': ()}",
                b"",
                "expected ',' or '}'",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
                b"",
                "too large",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4)}",
                b"",
                "overflows",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000,)}",
                &[0; 8],
                "only 8 are present",
            ),
            (
                "{'descr': '<u2', 'fortran_order': False, 'shape': (1,)}",
                &[0; 2],
                "unsupported dtype '<u2'",
            ),
            (
                "{'descr': '|i1', 'fortran_order': False, 'shape': (1,)}",
                &[0; 1],
                "unsupported dtype",
            ),
            (
                "{'descr': '|f4', 'fortran_order': False, 'shape': (1,)}",
                &[0; 4],
                "no byte order",
            ),
            (
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
                &[0; 4],
                "structured",
            ),
            (
                "{'descr': '|b1', 'fortran_order': False, 'shape': (2,)}",
                &[1, 7],
                "not 0 or 1",
            ),
            (
                "{'descr': 'O', 'fortran_order': False, 'shape': (1,)}",
                &[0; 8],
                "unsupported dtype 'O'",
            ),
        ];
        for (dict, data, expected) in cases {
            let e = err(&file(dict, data));
            assert!(e.contains(expected), "{dict}: {e}");
        }
        let deep = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({})}}",
            "1, ".repeat(MAX_RANK + 1)
        );
        assert!(err(&file(&deep, &[0; 4])).contains("dimensions"));
    }

    #[test]
    fn fortran_order_is_refused_not_misread() {
        let e = err(&hex(FORTRAN_I4));
        assert!(e.contains("Fortran"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn corrupted_files_never_panic(
            flips in proptest::collection::vec((0usize..200, proptest::prelude::any::<u8>()), 1..6),
            cut in 0usize..220,
        ) {
            let mut f = hex(I8_2X3);
            for (pos, byte) in flips {
                if let Some(b) = f.get_mut(pos) {
                    *b = byte;
                }
            }
            f.truncate(cut.max(1));
            let _ = from_bytes(&f);
        }
    }
}
