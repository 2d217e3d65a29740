//! safetensors files: named tensors plus string metadata, the checkpoint format of PyTorch and
//! Hugging Face.
//!
//! Supported dtypes: `F32`, `F64`, `F16`, `BF16`, `I64`, `I32`, `U8` and `BOOL`; a file holding
//! another dtype is an error naming the tensor and its dtype. Names (`fc1.weight`, ...) are kept
//! exactly, and the `__metadata__` string map round trips.
//!
//! Reading memory-maps the file and validates its header with the `safetensors` crate (header
//! size, JSON, data offsets that tile the data exactly up to the end of the file, shape and
//! dtype sizes without overflow), then copies each tensor into its own buffer (the data may be
//! unaligned). Tensors come back **sorted by name**, whatever the order in the file.
//!
//! Writing lays the file out as the `safetensors` crate and Python package do (tensors ordered by
//! decreasing dtype alignment, then by name, header padded with spaces to a multiple of 8 bytes,
//! metadata keys sorted) and streams the tensor bytes straight from their storage into
//! [`atomic_write`], without building the whole file in memory.

use super::{atomic_write, check_declared_size, format_error, io_error, FileBytes, LeBytes};
use crate::{DType, Error, Result, Tensor};
use ::safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;

/// Tensors (sorted by name) and metadata read from a file.
type Loaded = (Vec<(String, Tensor)>, HashMap<String, String>);

/// The key of the metadata map in the header; no tensor may have this name.
const METADATA_KEY: &str = "__metadata__";

/// Reads a safetensors file (memory-mapped): its tensors sorted by name.
pub fn load(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    Ok(load_with_metadata(path)?.0)
}

/// Reads a safetensors file (memory-mapped): its tensors sorted by name, and its
/// `__metadata__` map (empty when the file has none).
pub fn load_with_metadata(path: impl AsRef<Path>) -> Result<Loaded> {
    let path = path.as_ref();
    let bytes = FileBytes::open(path)?;
    parse(&bytes).map_err(|msg| format_error("safetensors", Some(path), msg))
}

/// Parses the bytes of a safetensors file: its tensors sorted by name.
pub fn from_bytes(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    Ok(from_bytes_with_metadata(bytes)?.0)
}

/// Parses the bytes of a safetensors file: its tensors sorted by name, and its metadata.
pub fn from_bytes_with_metadata(bytes: &[u8]) -> Result<Loaded> {
    parse(bytes).map_err(|msg| format_error("safetensors", None, msg))
}

/// Writes named tensors and optional metadata to a safetensors file, atomically (see
/// [`atomic_write`]). Views of any layout are written in row-major order.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tandem-st-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// use std::collections::HashMap;
/// use tandem_tensor::{io::safetensors, Tensor};
/// let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
/// let b = Tensor::from_vec(vec![0.5f32, -0.5], &[2]).unwrap();
/// let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
/// let path = dir.join("model.safetensors");
/// safetensors::save(&path, &[("fc1.weight", &w), ("fc1.bias", &b)], Some(&meta)).unwrap();
/// let (tensors, back_meta) = safetensors::load_with_metadata(&path).unwrap();
/// assert_eq!(tensors[0].0, "fc1.bias"); // sorted by name
/// assert_eq!(tensors[1].1.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
/// assert_eq!(back_meta, meta);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn save(
    path: impl AsRef<Path>,
    tensors: &[(&str, &Tensor)],
    metadata: Option<&HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let plan = Plan::new(tensors, metadata)?;
    atomic_write(path, |w| plan.write_to(w).map_err(|e| io_error(path, e)))
}

/// The bytes of a safetensors file holding the tensors and optional metadata (see [`save`]).
pub fn to_bytes(
    tensors: &[(&str, &Tensor)],
    metadata: Option<&HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let plan = Plan::new(tensors, metadata)?;
    let mut out = Vec::with_capacity(plan.len());
    out.extend_from_slice(&plan.header);
    for data in &plan.tensors {
        out.extend_from_slice(data.bytes());
    }
    Ok(out)
}

/// The safetensors dtype of a Tandem dtype.
fn to_st(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I64 => Dtype::I64,
        DType::I32 => Dtype::I32,
        DType::U8 => Dtype::U8,
        DType::Bool => Dtype::BOOL,
    }
}

/// The Tandem dtype of a safetensors dtype, if there is one.
fn from_st(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Bool,
        _ => return None,
    })
}

/// Parses a whole file; errors are messages without format or path.
fn parse(bytes: &[u8]) -> std::result::Result<Loaded, String> {
    // `read_metadata` is the validation `SafeTensors::deserialize` runs; calling it directly
    // also gives the `__metadata__` map, with one parse of the header.
    let (header_len, meta) = SafeTensors::read_metadata(bytes).map_err(|e| describe(&e))?;
    let data = bytes.get(8 + header_len..).unwrap_or_default();
    let mut infos: Vec<_> = meta.tensors().into_iter().collect();
    infos.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::with_capacity(infos.len());
    for (name, info) in infos {
        let fail = |msg: String| format!("tensor '{name}': {msg}");
        let dtype = from_st(info.dtype).ok_or_else(|| {
            fail(format!(
                "dtype {} is not supported (Tandem reads F32, F64, F16, BF16, I64, I32, U8 \
                 and BOOL)",
                info.dtype
            ))
        })?;
        let (start, end) = info.data_offsets;
        let raw = data.get(start..end).ok_or_else(|| {
            fail(format!(
                "data offsets [{start}, {end}) are outside the data"
            ))
        })?;
        let size = check_declared_size("safetensors", &info.shape, dtype, raw.len())
            .map_err(|e| fail(super::message(e)))?;
        if size != raw.len() {
            return Err(fail(format!(
                "shape {:?} of {dtype} needs {size} bytes but its offsets span {}",
                info.shape,
                raw.len()
            )));
        }
        let storage = super::storage_from_bytes(dtype, raw, false).map_err(fail)?;
        let tensor =
            Tensor::from_cpu_storage(storage, &info.shape).map_err(|e| fail(e.to_string()))?;
        out.push((name, tensor));
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

/// A message for a validation error of the `safetensors` crate, with a hint where its own
/// wording is terse.
fn describe(e: &::safetensors::SafeTensorError) -> String {
    use ::safetensors::SafeTensorError as E;
    let hint = match e {
        E::HeaderTooSmall => " (the file is shorter than the 8-byte header length)",
        E::InvalidHeaderLength => " (the header length points past the end of the file)",
        E::HeaderTooLarge => " (the declared header length is over the 100 MB limit)",
        E::MetadataIncompleteBuffer => {
            " (the tensors' data does not end where the file ends: truncated or trailing bytes)"
        }
        _ => "",
    };
    format!("{e}{hint}")
}

/// A file ready to be written: the header (with its length prefix) and the tensor bytes in
/// file order.
struct Plan {
    header: Vec<u8>,
    tensors: Vec<LeBytes>,
}

impl Plan {
    fn new(
        tensors: &[(&str, &Tensor)],
        metadata: Option<&HashMap<String, String>>,
    ) -> Result<Plan> {
        let op = "safetensors::save";
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(tensors.len());
        for &(name, t) in tensors {
            if name == METADATA_KEY {
                return Err(Error::invalid(
                    op,
                    format!("'{METADATA_KEY}' is reserved for the metadata"),
                ));
            }
            if !seen.insert(name) {
                return Err(Error::invalid(
                    op,
                    format!("the name '{name}' is given twice"),
                ));
            }
            let bytes = LeBytes::new(op, t).map_err(|e| e.context(format!("tensor '{name}'")))?;
            entries.push((name, to_st(t.dtype()), t.shape().to_vec(), bytes));
        }
        // The order of the reference implementation: larger alignment first, then by name, so
        // that every tensor starts aligned to its element size.
        entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));

        let json =
            |s: &str| serde_json::to_string(s).map_err(|e| Error::invalid(op, e.to_string()));
        let mut text = String::from("{");
        if let Some(meta) = metadata {
            let sorted: BTreeMap<&String, &String> = meta.iter().collect();
            text.push_str(&json(METADATA_KEY)?);
            text.push_str(":{");
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&format!("{}:{}", json(k)?, json(v)?));
            }
            text.push('}');
        }
        let mut offset = 0usize;
        for (i, (name, dtype, shape, bytes)) in entries.iter().enumerate() {
            if i > 0 || metadata.is_some() {
                text.push(',');
            }
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            let end = offset + bytes.len();
            text.push_str(&format!(
                "{}:{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
                json(name)?,
                dims.join(",")
            ));
            offset = end;
        }
        text.push('}');
        let padded = text.len().next_multiple_of(8);
        let mut header = Vec::with_capacity(8 + padded);
        header.extend_from_slice(&(padded as u64).to_le_bytes());
        header.extend_from_slice(text.as_bytes());
        header.resize(8 + padded, b' ');
        Ok(Plan {
            header,
            tensors: entries.into_iter().map(|(_, _, _, bytes)| bytes).collect(),
        })
    }

    /// Total size in bytes.
    fn len(&self) -> usize {
        self.header.len() + self.tensors.iter().map(LeBytes::len).sum::<usize>()
    }

    fn write_to(&self, w: &mut dyn Write) -> std::io::Result<()> {
        w.write_all(&self.header)?;
        for data in &self.tensors {
            w.write_all(data.bytes())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_util::{same, sample, views, TempDir};
    use ::safetensors::tensor::TensorView;

    fn err(bytes: &[u8]) -> String {
        let e = from_bytes(bytes).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Format {
                    format: "safetensors",
                    ..
                }
            ),
            "{e:?}"
        );
        e.to_string()
    }

    /// A file with the given header JSON (unpadded) and data.
    fn file(json: &str, data: &[u8]) -> Vec<u8> {
        let mut f = (json.len() as u64).to_le_bytes().to_vec();
        f.extend(json.as_bytes());
        f.extend(data);
        f
    }

    fn every_kind() -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = DType::ALL
            .iter()
            .flat_map(|&d| {
                [
                    (format!("layer.{d}.weight"), sample(d, &[3, 5])),
                    (format!("scalar.{d}"), sample(d, &[])),
                    (format!("empty.{d}"), sample(d, &[0, 4])),
                ]
            })
            .collect();
        for (i, t) in views().into_iter().enumerate() {
            v.push((format!("view.{i}"), t));
        }
        v.push((
            "odd \"name\" \\ with\nescapes é".into(),
            sample(DType::F32, &[2]),
        ));
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn refs(v: &[(String, Tensor)]) -> Vec<(&str, &Tensor)> {
        v.iter().map(|(n, t)| (n.as_str(), t)).collect()
    }

    #[test]
    fn round_trips_every_dtype_view_and_metadata() {
        let tensors = every_kind();
        let meta = HashMap::from([
            ("format".to_string(), "pt".to_string()),
            ("note".to_string(), "quotes \" and \\ and é".to_string()),
        ]);
        for metadata in [None, Some(&meta)] {
            let bytes = to_bytes(&refs(&tensors), metadata).unwrap();
            let (back, back_meta) = from_bytes_with_metadata(&bytes).unwrap();
            assert_eq!(back.len(), tensors.len());
            for ((n, t), (bn, bt)) in tensors.iter().zip(&back) {
                assert_eq!(n, bn);
                assert!(same(t, bt), "{n}");
            }
            assert_eq!(back_meta, metadata.cloned().unwrap_or_default());
        }
        assert!(from_bytes(&to_bytes(&[], None).unwrap())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn writes_what_the_reference_serializer_writes() {
        let a = sample(DType::F32, &[2, 3]);
        let b = sample(DType::I64, &[4]);
        let c = sample(DType::Bool, &[3]);
        let d = sample(DType::BF16, &[]);
        let ours = to_bytes(
            &[
                ("fc1.weight", &a),
                ("step", &b),
                ("mask", &c),
                ("scale", &d),
            ],
            None,
        )
        .unwrap();
        let bytes: Vec<Vec<u8>> = [&a, &b, &c, &d]
            .iter()
            .map(|t| LeBytes::new("test", t).unwrap().bytes().to_vec())
            .collect();
        let views = vec![
            (
                "fc1.weight",
                TensorView::new(Dtype::F32, vec![2, 3], &bytes[0]).unwrap(),
            ),
            (
                "step",
                TensorView::new(Dtype::I64, vec![4], &bytes[1]).unwrap(),
            ),
            (
                "mask",
                TensorView::new(Dtype::BOOL, vec![3], &bytes[2]).unwrap(),
            ),
            (
                "scale",
                TensorView::new(Dtype::BF16, vec![], &bytes[3]).unwrap(),
            ),
        ];
        let reference = ::safetensors::serialize(views, None).unwrap();
        assert_eq!(ours, reference);
        // With metadata (one key, so the reference's hash-map order is fixed).
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let ours = to_bytes(&[("w", &a)], Some(&meta)).unwrap();
        let view = TensorView::new(Dtype::F32, vec![2, 3], &bytes[0]).unwrap();
        let reference = ::safetensors::serialize([("w", view)], Some(meta.clone())).unwrap();
        assert_eq!(ours, reference);
    }

    #[test]
    fn reads_known_good_bytes() {
        // The example file of the safetensors documentation: one I32 tensor of zeros, plus an
        // unaligned F32 tensor and metadata written by hand.
        let json = r#"{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}"#;
        let t = from_bytes(&file(json, &[0; 16])).unwrap();
        assert_eq!(t[0].0, "test");
        assert_eq!(t[0].1.to_vec::<i32>().unwrap(), vec![0; 4]);
        let json = r#"{"__metadata__":{"k":"v"},"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}}"#;
        let mut data = vec![200u8];
        data.extend([1.5f32, -2.0].iter().flat_map(|x| x.to_le_bytes()));
        let (t, meta) = from_bytes_with_metadata(&file(json, &data)).unwrap();
        assert_eq!(t[0].0, "a");
        assert_eq!(t[0].1.to_vec::<f32>().unwrap(), vec![1.5, -2.0]);
        assert_eq!(t[1].1.to_vec::<u8>().unwrap(), vec![200]);
        assert_eq!(meta["k"], "v");
    }

    #[test]
    fn files_round_trip_atomically() {
        let dir = TempDir::new("safetensors");
        let p = dir.path("model.safetensors");
        let tensors = every_kind();
        let meta = HashMap::from([("epoch".to_string(), "3".to_string())]);
        save(&p, &refs(&tensors), Some(&meta)).unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            to_bytes(&refs(&tensors), Some(&meta)).unwrap()
        );
        let (back, back_meta) = load_with_metadata(&p).unwrap();
        assert!(back
            .iter()
            .zip(&tensors)
            .all(|(a, b)| a.0 == b.0 && same(&a.1, &b.1)));
        assert_eq!(back_meta, meta);
        assert_eq!(load(&p).unwrap().len(), tensors.len());
        // Refused names leave the file as it was, and no temporary file behind.
        let before = std::fs::read(&p).unwrap();
        let t = &tensors[0].1;
        let e = save(&p, &[("a", t), ("a", t)], None).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = save(&p, &[("__metadata__", t)], None).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), before);
        assert_eq!(dir.entries(), vec!["model.safetensors".to_string()]);
        // Errors name the file.
        std::fs::write(&p, &before[..before.len() - 1]).unwrap();
        let e = load(&p).unwrap_err();
        assert!(
            matches!(&e, Error::Format { path: Some(s), .. } if s.ends_with("model.safetensors")),
            "{e:?}"
        );
        std::fs::write(&p, b"").unwrap();
        assert!(load(&p).is_err());
        assert!(matches!(
            load(dir.path("missing")).unwrap_err(),
            Error::Io { .. }
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let a = sample(DType::F32, &[3]);
        let b = sample(DType::I64, &[2]);
        let meta = HashMap::from([("k".to_string(), "v".to_string())]);
        let bytes = to_bytes(&[("a", &a), ("b", &b)], Some(&meta)).unwrap();
        for len in 0..bytes.len() {
            err(&bytes[..len]);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(err(&longer).contains("trailing"));
    }

    #[test]
    fn hostile_headers_are_clear_errors() {
        // Header lengths that are huge or point past the end.
        for n in [u64::MAX, 1 << 40, 200_000_000, 1000] {
            let mut f = n.to_le_bytes().to_vec();
            f.extend(b"{}");
            err(&f);
        }
        let e = err(&file("not json", b""));
        assert!(e.contains("JSON"), "{e}");
        let cases = [
            // Offsets past the data.
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0u8; 4][..],
                "a",
            ),
            // Shape and offsets disagree.
            (
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
                "invalid",
            ),
            // A shape whose size overflows.
            (
                r#"{"a":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,8]}}"#,
                &[0; 8],
                "overflow",
            ),
            // Empty, but strides that would overflow.
            (
                r#"{"a":{"dtype":"U8","shape":[0,4611686018427387904,8],"data_offsets":[0,0]}}"#,
                &[],
                "overflows",
            ),
            // Unsupported dtypes name the tensor and the dtype.
            (
                r#"{"w.q":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}}"#,
                &[0; 2],
                "tensor 'w.q': dtype I8",
            ),
            (
                r#"{"x":{"dtype":"U64","shape":[1],"data_offsets":[0,8]}}"#,
                &[0; 8],
                "dtype U64",
            ),
            // Bool bytes other than 0 and 1.
            (
                r#"{"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"#,
                &[1, 9],
                "tensor 'm'",
            ),
        ];
        for (json, data, expected) in cases {
            let e = err(&file(json, data));
            assert!(e.contains(expected), "{json}: {e}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn corrupted_files_never_panic(
            flips in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 1..6),
        ) {
            let a = sample(DType::F32, &[3, 2]);
            let b = sample(DType::Bool, &[5]);
            let mut f = to_bytes(&[("a", &a), ("b", &b)], None).unwrap();
            for (pos, byte) in flips {
                let len = f.len();
                f[pos % len] = byte;
            }
            let _ = from_bytes(&f);
        }
    }
}
