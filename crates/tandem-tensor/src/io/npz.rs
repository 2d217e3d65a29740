//! NumPy `.npz` files: a zip archive of `.npy` members, one per named tensor.
//!
//! [`write()`] stores the members uncompressed like `np.savez`; [`write_compressed`] deflates
//! them like `np.savez_compressed`. A member `name.npy` holds the tensor `name` (NumPy's key).
//! Reading accepts stored and deflated members and returns them in archive order, names
//! without the `.npy` suffix.
//!
//! Archives are treated as hostile: a bad central directory, a member that is not a `.npy`
//! file, encrypted or compressed with another method, members whose data overlap (the trick of
//! quadratic zip bombs), a member declaring more uncompressed bytes than its compressed data
//! can produce, or more in total than [`MAX_UNCOMPRESSED_BYTES`] (or the limit given to
//! [`from_bytes_with_limit`]) are [`Error::Format`] errors with format
//! `npz`, checked before anything is decompressed; decompression itself stops at the declared
//! size, which must then match exactly.

use super::{atomic_write, format_error, io_error, FileBytes};
use crate::{Error, Result, Tensor};
use std::collections::HashSet;
use std::io::{Cursor, Read};
use std::path::Path;
use zip::{write::SimpleFileOptions, CompressionMethod, ZipArchive, ZipWriter};

/// The default bound on the total uncompressed size of the members of one archive (32 GiB).
/// An archive larger than this on disk may hold as many stored bytes as it has.
pub const MAX_UNCOMPRESSED_BYTES: u64 = 32 << 30;

/// The most bytes deflate can produce per compressed byte (its theoretical limit is about
/// 1032:1), so a member declaring more is lying.
const MAX_DEFLATE_RATIO: u64 = 1032;
/// Allowance for the few bytes of a tiny deflate stream.
const DEFLATE_SLACK: u64 = 1024;

/// Reads a `.npz` file: the tensors in archive order, named without the `.npy` suffix.
pub fn read(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    read_with_limit(path, MAX_UNCOMPRESSED_BYTES)
}

/// Like [`read()`], with a bound on the total uncompressed size of the members (the bound is
/// raised to the size of the file itself when that is larger).
pub fn read_with_limit(
    path: impl AsRef<Path>,
    max_uncompressed: u64,
) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let bytes = FileBytes::open(path)?;
    parse(&bytes, max_uncompressed).map_err(|msg| format_error("npz", Some(path), msg))
}

/// Parses the bytes of a `.npz` file (see [`read()`]).
pub fn from_bytes(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    from_bytes_with_limit(bytes, MAX_UNCOMPRESSED_BYTES)
}

/// Like [`from_bytes`], with a bound on the total uncompressed size of the members (raised to
/// the length of `bytes` when that is larger).
pub fn from_bytes_with_limit(bytes: &[u8], max_uncompressed: u64) -> Result<Vec<(String, Tensor)>> {
    parse(bytes, max_uncompressed).map_err(|msg| format_error("npz", None, msg))
}

/// Writes tensors to a `.npz` file with uncompressed members, like `np.savez`, atomically.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("tandem-npz-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// use tandem_tensor::{io::npz, Tensor};
/// let w = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
/// let b = Tensor::scalar(3i64);
/// let path = dir.join("params.npz");
/// npz::write(&path, &[("fc1.weight", &w), ("step", &b)]).unwrap();
/// let back = npz::read(&path).unwrap();
/// assert_eq!(back[0].0, "fc1.weight");
/// assert_eq!(back[1].1.item().unwrap(), 3.0);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn write(path: impl AsRef<Path>, tensors: &[(&str, &Tensor)]) -> Result<()> {
    write_with(path.as_ref(), tensors, CompressionMethod::Stored)
}

/// Writes tensors to a `.npz` file with deflated members, like `np.savez_compressed`,
/// atomically.
pub fn write_compressed(path: impl AsRef<Path>, tensors: &[(&str, &Tensor)]) -> Result<()> {
    write_with(path.as_ref(), tensors, CompressionMethod::Deflated)
}

/// The bytes of a `.npz` archive with uncompressed members (see [`write()`]).
pub fn to_bytes(tensors: &[(&str, &Tensor)]) -> Result<Vec<u8>> {
    archive(tensors, CompressionMethod::Stored)
}

/// The bytes of a `.npz` archive with deflated members (see [`write_compressed`]).
pub fn to_bytes_compressed(tensors: &[(&str, &Tensor)]) -> Result<Vec<u8>> {
    archive(tensors, CompressionMethod::Deflated)
}

fn write_with(path: &Path, tensors: &[(&str, &Tensor)], method: CompressionMethod) -> Result<()> {
    // The zip writer needs to seek back to fill in sizes, so the archive is built in memory and
    // then written out in one go.
    let bytes = archive(tensors, method)?;
    atomic_write(path, |w| w.write_all(&bytes).map_err(|e| io_error(path, e)))
}

/// Builds the archive: one `name.npy` member per tensor, in the order given.
fn archive(tensors: &[(&str, &Tensor)], method: CompressionMethod) -> Result<Vec<u8>> {
    let op = "npz::write";
    let zip_error = |e: zip::result::ZipError| Error::invalid(op, format!("zip: {e}"));
    let mut seen = HashSet::new();
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for &(name, t) in tensors {
        if !seen.insert(name) {
            return Err(Error::invalid(
                op,
                format!("the name '{name}' is given twice"),
            ));
        }
        let encoded =
            super::npy::Encoded::new(t).map_err(|e| e.context(format!("tensor '{name}'")))?;
        let options = SimpleFileOptions::default()
            .compression_method(method)
            .large_file(encoded.len() as u64 >= u32::MAX as u64);
        zip.start_file(format!("{name}.npy"), options)
            .map_err(zip_error)?;
        encoded
            .write_to(&mut zip)
            .map_err(|e| Error::invalid(op, format!("zip: {e}")))?;
    }
    Ok(zip.finish().map_err(zip_error)?.into_inner())
}

/// What the central directory and local header say about one member.
struct Member {
    name: String,
    size: u64,
    /// Bytes of the archive the member occupies: local header through compressed data.
    span: std::ops::Range<u64>,
}

/// Parses an archive; errors are messages without format or path.
fn parse(
    bytes: &[u8],
    max_uncompressed: u64,
) -> std::result::Result<Vec<(String, Tensor)>, String> {
    let mut zip =
        ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a valid zip archive: {e}"))?;
    let limit = max_uncompressed.max(bytes.len() as u64);
    let members = survey(&mut zip, bytes.len() as u64, limit)?;
    let mut out = Vec::with_capacity(members.len());
    for (index, m) in members.into_iter().enumerate() {
        let context = |msg: String| format!("member '{}.npy': {msg}", m.name);
        let mut file = zip.by_index(index).map_err(|e| context(e.to_string()))?;
        // Never trust the declared size for the allocation beyond a modest start: the vector
        // grows only as real data arrives, and reading stops one byte past the declared size.
        let mut data = Vec::with_capacity(m.size.min(1 << 26) as usize);
        (&mut file)
            .take(m.size.saturating_add(1))
            .read_to_end(&mut data)
            .map_err(|e| context(format!("cannot decompress: {e}")))?;
        if data.len() as u64 != m.size {
            return Err(context(format!(
                "declares {} uncompressed bytes but holds {}{}",
                m.size,
                data.len(),
                if data.len() as u64 > m.size {
                    " or more"
                } else {
                    ""
                }
            )));
        }
        drop(file);
        let tensor = super::npy::parse(&data).map_err(context)?;
        out.push((m.name, tensor));
    }
    Ok(out)
}

/// Checks every member before anything is decompressed: a `.npy` name, a supported method, no
/// encryption, sizes that deflate could produce, data inside the archive and not shared with
/// another member, and a total uncompressed size within `limit`.
fn survey(
    zip: &mut ZipArchive<Cursor<&[u8]>>,
    archive_len: u64,
    limit: u64,
) -> std::result::Result<Vec<Member>, String> {
    let mut members = Vec::with_capacity(zip.len());
    let mut total = 0u64;
    for index in 0..zip.len() {
        let file = zip
            .by_index_raw(index)
            .map_err(|e| format!("member {index}: {e}"))?;
        let full_name = file.name().to_string();
        let fail = |msg: String| format!("member '{full_name}': {msg}");
        let name = match full_name.strip_suffix(".npy") {
            Some(stem) if !file.is_dir() => stem.to_string(),
            _ => return Err(fail("not a .npy file".into())),
        };
        if file.encrypted() {
            return Err(fail("encrypted members are not supported".into()));
        }
        let (size, compressed) = (file.size(), file.compressed_size());
        let most = match file.compression() {
            CompressionMethod::Stored => compressed,
            CompressionMethod::Deflated => compressed
                .saturating_mul(MAX_DEFLATE_RATIO)
                .saturating_add(DEFLATE_SLACK),
            other => {
                return Err(fail(format!(
                    "compression method {other} is not supported (stored and deflated are)"
                )))
            }
        };
        if size > most {
            return Err(fail(format!(
                "declares {size} uncompressed bytes from {compressed} compressed bytes, \
                 more than its method can produce"
            )));
        }
        let end = file
            .data_start()
            .checked_add(compressed)
            .filter(|&end| end <= archive_len)
            .ok_or_else(|| fail("its data reaches past the end of the archive".into()))?;
        total = total.saturating_add(size);
        if total > limit {
            return Err(format!(
                "the members declare more than {limit} uncompressed bytes in total \
                 (use read_with_limit / from_bytes_with_limit to allow more)"
            ));
        }
        members.push(Member {
            name,
            size,
            span: file.header_start()..end,
        });
    }
    let mut spans: Vec<(&std::ops::Range<u64>, &str)> =
        members.iter().map(|m| (&m.span, m.name.as_str())).collect();
    spans.sort_by_key(|(s, _)| (s.start, s.end));
    for pair in spans.windows(2) {
        if let [(a, a_name), (b, b_name)] = pair {
            if b.start < a.end {
                return Err(format!(
                    "members '{a_name}.npy' and '{b_name}.npy' share archive bytes"
                ));
            }
        }
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_util::{same, sample, views, TempDir};
    use crate::DType;
    use std::io::Write;

    fn err(bytes: &[u8]) -> String {
        let e = from_bytes(bytes).unwrap_err();
        assert!(matches!(e, Error::Format { format: "npz", .. }), "{e:?}");
        e.to_string()
    }

    fn all_kinds() -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = DType::ALL
            .iter()
            .filter(|&&d| d != DType::BF16)
            .flat_map(|&d| {
                [
                    (format!("{d}"), sample(d, &[3, 4])),
                    (format!("{d}.scalar"), sample(d, &[])),
                    (format!("{d}/empty"), sample(d, &[2, 0])),
                ]
            })
            .collect();
        for (i, t) in views().into_iter().enumerate() {
            v.push((format!("view_{i}"), t));
        }
        v
    }

    fn refs(v: &[(String, Tensor)]) -> Vec<(&str, &Tensor)> {
        v.iter().map(|(n, t)| (n.as_str(), t)).collect()
    }

    #[test]
    fn round_trips_stored_and_compressed() {
        let tensors = all_kinds();
        for compressed in [false, true] {
            let bytes = if compressed {
                to_bytes_compressed(&refs(&tensors)).unwrap()
            } else {
                to_bytes(&refs(&tensors)).unwrap()
            };
            let back = from_bytes(&bytes).unwrap();
            assert_eq!(back.len(), tensors.len());
            for ((n, t), (bn, bt)) in tensors.iter().zip(&back) {
                assert_eq!(n, bn);
                assert!(same(t, bt), "{n} (compressed: {compressed})");
            }
        }
        // Deflate actually compresses.
        let zeros = Tensor::zeros(&[1000], DType::F64);
        let stored = to_bytes(&[("z", &zeros)]).unwrap();
        let deflated = to_bytes_compressed(&[("z", &zeros)]).unwrap();
        assert!(deflated.len() * 10 < stored.len());
        assert!(same(&from_bytes(&deflated).unwrap()[0].1, &zeros));
        // Members are the exact .npy bytes.
        let mut zip = ZipArchive::new(Cursor::new(&stored[..])).unwrap();
        let mut member = Vec::new();
        zip.by_name("z.npy")
            .unwrap()
            .read_to_end(&mut member)
            .unwrap();
        assert_eq!(member, crate::io::npy::to_bytes(&zeros).unwrap());
        assert!(from_bytes(&to_bytes(&[]).unwrap()).unwrap().is_empty());
    }

    #[test]
    fn files_round_trip_atomically() {
        let dir = TempDir::new("npz");
        let p = dir.path("data.npz");
        let tensors = all_kinds();
        write(&p, &refs(&tensors)).unwrap();
        assert_eq!(read(&p).unwrap().len(), tensors.len());
        write_compressed(&p, &refs(&tensors)).unwrap();
        let back = read(&p).unwrap();
        assert!(back
            .iter()
            .zip(&tensors)
            .all(|(a, b)| a.0 == b.0 && same(&a.1, &b.1)));
        // A failing write (bf16 has no NumPy dtype; a duplicate name) leaves the file as it was.
        let before = std::fs::read(&p).unwrap();
        let bf = sample(DType::BF16, &[2]);
        let e = write(&p, &[("ok", &tensors[0].1), ("bad", &bf)]).unwrap_err();
        assert!(e.to_string().contains("bad"), "{e}");
        let e = write(&p, &[("a", &tensors[0].1), ("a", &tensors[1].1)]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), before);
        assert_eq!(dir.entries(), vec!["data.npz".to_string()]);
        let e = read(dir.path("nope.npz")).unwrap_err();
        assert!(e.to_string().contains("nope.npz"), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let a = sample(DType::F32, &[3]);
        let b = sample(DType::I64, &[2, 2]);
        for bytes in [
            to_bytes(&[("a", &a), ("b", &b)]).unwrap(),
            to_bytes_compressed(&[("a", &a), ("b", &b)]).unwrap(),
        ] {
            for len in 0..bytes.len() {
                err(&bytes[..len]);
            }
        }
    }

    /// A zip with one member written by the zip crate directly.
    fn raw_zip(name: &str, data: &[u8], method: CompressionMethod) -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(method);
        zip.start_file(name, options).unwrap();
        zip.write_all(data).unwrap();
        zip.finish().unwrap().into_inner()
    }

    /// Offsets of the central directory record of the first member and its local header.
    fn central(bytes: &[u8]) -> usize {
        bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap()
    }

    #[test]
    fn hostile_archives_are_clear_errors() {
        assert!(err(b"").contains("not a valid zip"));
        assert!(err(b"PK\x05\x06 definitely not").contains("not a valid zip"));
        let npy = crate::io::npy::to_bytes(&sample(DType::F32, &[4])).unwrap();

        let text = raw_zip("notes.txt", b"hello", CompressionMethod::Stored);
        assert!(err(&text).contains("not a .npy file"));
        let bad_npy = raw_zip("x.npy", b"\x93NUMPX", CompressionMethod::Stored);
        let e = err(&bad_npy);
        assert!(e.contains("member 'x.npy'") && e.contains("magic"), "{e}");

        // A member whose central directory claims a huge uncompressed size.
        for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
            let mut z = raw_zip("x.npy", &npy, method);
            let c = central(&z);
            z[c + 24..c + 28].copy_from_slice(&0xfff0_0000u32.to_le_bytes());
            let e = err(&z);
            assert!(e.contains("more than its method can produce"), "{e}");
        }
        // A deflated member declaring fewer bytes than it holds, or more than it holds.
        for delta in [-1i64, 1] {
            let mut z = raw_zip("x.npy", &npy, CompressionMethod::Deflated);
            let c = central(&z);
            let size = (npy.len() as i64 + delta) as u32;
            z[c + 24..c + 28].copy_from_slice(&size.to_le_bytes());
            let e = err(&z);
            assert!(e.contains("declares"), "{e}");
        }
        // A compressed size reaching past the end of the archive.
        let mut z = raw_zip("x.npy", &npy, CompressionMethod::Stored);
        let c = central(&z);
        z[c + 20..c + 24].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
        z[c + 24..c + 28].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
        err(&z);
        // Over the total limit.
        let z = to_bytes_compressed(&[("z", &Tensor::zeros(&[10_000], DType::F64))]).unwrap();
        let e = from_bytes_with_limit(&z, 1000).unwrap_err().to_string();
        assert!(e.contains("in total"), "{e}");
        assert_eq!(from_bytes_with_limit(&z, 100_000).unwrap().len(), 1);
        // A corrupted deflate stream or checksum.
        let mut z = raw_zip("x.npy", &npy, CompressionMethod::Deflated);
        let c = central(&z);
        z[c + 16] ^= 0xff; // CRC-32 in the central directory
        err(&z);
    }

    #[test]
    fn overlapping_members_are_refused() {
        // Two central directory entries pointing at the same local data (a zip bomb trick):
        // build an archive with two members, then point the second entry at the first.
        let t = sample(DType::U8, &[8]);
        let mut z = to_bytes(&[("a", &t), ("b", &t)]).unwrap();
        let first = central(&z);
        let second = first + 4 + central(&z[first + 4..]);
        let offset: [u8; 4] = z[first + 42..first + 46].try_into().unwrap();
        z[second + 42..second + 46].copy_from_slice(&offset);
        let e = err(&z);
        assert!(e.contains("share archive bytes"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        #[test]
        fn corrupted_archives_never_panic(
            flips in proptest::collection::vec((0usize..600, proptest::prelude::any::<u8>()), 1..6),
            compressed in proptest::prelude::any::<bool>(),
        ) {
            let a = sample(DType::F32, &[3, 2]);
            let b = sample(DType::Bool, &[5]);
            let mut z = if compressed {
                to_bytes_compressed(&[("a", &a), ("b", &b)]).unwrap()
            } else {
                to_bytes(&[("a", &a), ("b", &b)]).unwrap()
            };
            for (pos, byte) in flips {
                let len = z.len();
                z[pos % len] = byte;
            }
            let _ = from_bytes(&z);
        }
    }
}
