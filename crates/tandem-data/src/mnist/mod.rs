//! MNIST: 70,000 handwritten digits (LeCun, Cortes and Burges), 28x28 grey levels.
//!
//! [`Mnist::load`] finds the four IDX files of the original distribution (see [`locate`]),
//! downloading them if they are missing, and reads them into four tensors. [`train()`] and
//! [`test()`] wrap a split as a [`Dataset`](crate::Dataset) for the
//! [`DataLoader`](crate::DataLoader), with a [`Transform`] that decides what a sample looks
//! like.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tandem_data::{mnist, DataLoader};
//!
//! let data = mnist::Mnist::load(None)?; // `$MNIST_DIR`, else `data/mnist`
//! let train = mnist::train(&data, mnist::Transform::Flat);
//! let loader = DataLoader::new(Arc::new(train), 64).shuffle(0);
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     let (x, y) = (&batch[0], &batch[1]); // f32 [64, 784] in [0, 1], i64 [64]
//!     # let _ = (x, y);
//! }
//! # Ok::<(), tandem_tensor::Error>(())
//! ```

mod dataset;
mod download;

pub use dataset::{test, train, MnistDataset, Transform};

use crate::idx;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use tandem_tensor::{DType, Error, Result, Tensor};

/// One file of the dataset: its name without `.gz`, and the size and SHA-256 of its
/// decompressed content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// File name of the decompressed file; the compressed one adds `.gz`.
    pub name: &'static str,
    /// Size of the decompressed file in bytes.
    pub bytes: u64,
    /// SHA-256 of the decompressed file, in lowercase hex.
    pub sha256: &'static str,
}

/// The four files, with the checksums of the original distribution.
pub const FILES: [FileSpec; 4] = [
    FileSpec {
        name: "train-images-idx3-ubyte",
        bytes: 47_040_016,
        sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    },
    FileSpec {
        name: "train-labels-idx1-ubyte",
        bytes: 60_008,
        sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    },
    FileSpec {
        name: "t10k-images-idx3-ubyte",
        bytes: 7_840_016,
        sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    },
    FileSpec {
        name: "t10k-labels-idx1-ubyte",
        bytes: 10_008,
        sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
];

/// Public mirrors of the original files, tried in order.
pub const MIRRORS: [&str; 2] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
];

/// The environment variable naming the folder that holds the files.
pub const DIR_VAR: &str = "MNIST_DIR";

/// Set to anything but `0` or the empty string to never try to download.
pub const OFFLINE_VAR: &str = "TANDEM_OFFLINE";

/// The folder used when neither a directory nor `$MNIST_DIR` is given.
pub const DEFAULT_DIR: &str = "data/mnist";

/// The folder the files are looked for in: `dir` if given, else `$MNIST_DIR` if set and not
/// empty, else `data/mnist` under the current directory.
pub fn resolve_dir(dir: Option<&Path>) -> PathBuf {
    if let Some(d) = dir {
        return d.to_path_buf();
    }
    match std::env::var_os(DIR_VAR) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_DIR),
    }
}

/// The path of one file in `dir`: `<name>.gz` if it exists, else the decompressed `<name>`.
pub fn file_path(dir: &Path, spec: &FileSpec) -> Option<PathBuf> {
    let packed = dir.join(format!("{}.gz", spec.name));
    if packed.is_file() {
        return Some(packed);
    }
    let plain = dir.join(spec.name);
    plain.is_file().then_some(plain)
}

/// Finds the folder holding the four files (gzip-compressed `<name>.gz`, or decompressed):
/// `dir` if given, else `$MNIST_DIR`, else `data/mnist` under the current directory.
///
/// Files missing there are downloaded from [`MIRRORS`] (with a progress bar on a terminal)
/// into that folder, which is created if needed. Each download goes to a temporary name,
/// is checked against the SHA-256 of the original decompressed file, and only then renamed,
/// so a failed or corrupt download leaves nothing behind. Without network access (or with
/// `TANDEM_OFFLINE=1`) the error says which files to put where and where to get them; it is
/// an [`Error::Io`] whose source has kind [`io::ErrorKind::NotFound`].
pub fn locate(dir: Option<&Path>) -> Result<PathBuf> {
    locate_with_mirrors(dir, &MIRRORS)
}

/// [`locate`] with another list of mirrors: base URLs to which the file names (with `.gz`)
/// are appended.
pub fn locate_with_mirrors(dir: Option<&Path>, mirrors: &[&str]) -> Result<PathBuf> {
    let dir = resolve_dir(dir);
    let missing: Vec<FileSpec> = FILES
        .iter()
        .filter(|f| file_path(&dir, f).is_none())
        .copied()
        .collect();
    if missing.is_empty() {
        return Ok(dir);
    }
    let offline = std::env::var(OFFLINE_VAR).is_ok_and(|v| !v.is_empty() && v != "0");
    let mirrors: &[&str] = if offline { &[] } else { mirrors };
    download::fetch(&dir, &missing, mirrors)?;
    Ok(dir)
}

/// Checks that the four files in `dir` (compressed or not) decompress to exactly the bytes of
/// the original distribution, by size and SHA-256. Other data with the same file names (such
/// as Fashion-MNIST) fails this check but loads fine with [`Mnist::load`].
pub fn verify(dir: &Path) -> Result<()> {
    for spec in &FILES {
        let path = file_path(dir, spec).ok_or_else(|| Error::Io {
            path: dir.display().to_string(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                format!("neither {0}.gz nor {0} is here", spec.name),
            ),
        })?;
        check_file(&path, spec)?;
    }
    Ok(())
}

/// Decompresses (when gzipped) and hashes one file, comparing size and SHA-256 with `spec`.
pub(crate) fn check_file(path: &Path, spec: &FileSpec) -> Result<()> {
    let shown = path.display().to_string();
    let io_error = |source: io::Error| Error::Io {
        path: shown.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let mut head = [0u8; 2];
    let got = idx::read_full(&mut file, &mut head).map_err(io_error)?;
    file.seek(SeekFrom::Start(0)).map_err(io_error)?;
    let reader: Box<dyn Read> = if idx::is_gzip(&head[..got]) {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut hasher = Sha256::new();
    // Never read past one byte more than expected, whatever the file holds.
    let n = io::copy(&mut reader.take(spec.bytes + 1), &mut hasher).map_err(io_error)?;
    let digest = hex(&hasher.finalize());
    let mismatch = |msg: String| Error::Format {
        format: "mnist",
        path: Some(shown.clone()),
        msg,
    };
    if n != spec.bytes {
        return Err(mismatch(format!(
            "decompresses to {}{n} bytes, expected {} (a corrupt file, or not the original {})",
            if n > spec.bytes { "more than " } else { "" },
            spec.bytes,
            spec.name
        )));
    }
    if digest != spec.sha256 {
        return Err(mismatch(format!(
            "SHA-256 of the decompressed data is {digest}, expected {} (a corrupt file, or not the original {})",
            spec.sha256, spec.name
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The four tensors of MNIST.
#[derive(Clone, Debug)]
pub struct Mnist {
    /// Training images, `uint8 [60000, 28, 28]`, 0 (background) to 255 (ink).
    pub train_images: Tensor,
    /// Training labels, `int64 [60000]`, 0 to 9.
    pub train_labels: Tensor,
    /// Test images, `uint8 [10000, 28, 28]`.
    pub test_images: Tensor,
    /// Test labels, `int64 [10000]`.
    pub test_labels: Tensor,
}

impl Mnist {
    /// Finds the files with [`locate`] (downloading them if needed) and reads them. Each
    /// image tensor is read straight from the gzip stream into its buffer, and the two image
    /// files are read in parallel.
    ///
    /// Files that parse but do not look like MNIST (images not `uint8 [N, H, W]`, labels not
    /// `uint8 [N]` with values 0 to 9, or counts that disagree) are errors naming the file.
    /// The checksums are not checked here (so that MNIST-shaped datasets such as
    /// Fashion-MNIST load too): see [`verify`].
    pub fn load(dir: Option<&Path>) -> Result<Mnist> {
        let dir = locate(dir)?;
        let path = |i: usize| -> Result<PathBuf> {
            file_path(&dir, &FILES[i]).ok_or_else(|| Error::Io {
                path: dir.join(FILES[i].name).display().to_string(),
                source: io::Error::new(io::ErrorKind::NotFound, "file vanished"),
            })
        };
        let paths = [path(0)?, path(1)?, path(2)?, path(3)?];
        let (train, test) = std::thread::scope(|s| {
            let test = s.spawn(|| read_split(&paths[2], &paths[3]));
            let train = read_split(&paths[0], &paths[1]);
            let test = test
                .join()
                .unwrap_or_else(|_| Err(Error::invalid("Mnist::load", "reader thread panicked")));
            (train, test)
        });
        let (train_images, train_labels) = train?;
        let (test_images, test_labels) = test?;
        Ok(Mnist {
            train_images,
            train_labels,
            test_images,
            test_labels,
        })
    }
}

/// Reads and checks one split: images `uint8 [N, H, W]`, labels `uint8 [N]` in 0..=9,
/// returned as `int64`.
fn read_split(images: &Path, labels: &Path) -> Result<(Tensor, Tensor)> {
    let bad = |path: &Path, msg: String| Error::Format {
        format: "mnist",
        path: Some(path.display().to_string()),
        msg,
    };
    let x = idx::read(images)?;
    if x.dtype() != DType::U8 || x.rank() != 3 {
        return Err(bad(
            images,
            format!(
                "expected uint8 images [N, H, W], found {} {:?}",
                x.dtype(),
                x.shape()
            ),
        ));
    }
    let y = idx::read(labels)?;
    let raw = y
        .as_slice::<u8>()
        .filter(|_| y.rank() == 1)
        .ok_or_else(|| {
            bad(
                labels,
                format!(
                    "expected uint8 labels [N], found {} {:?}",
                    y.dtype(),
                    y.shape()
                ),
            )
        })?;
    if raw.len() != x.shape()[0] {
        return Err(bad(
            labels,
            format!(
                "{} labels for {} images in {}",
                raw.len(),
                x.shape()[0],
                images.display()
            ),
        ));
    }
    if let Some(pos) = raw.iter().position(|&l| l > 9) {
        return Err(bad(
            labels,
            format!("label {pos} is {}, not a digit 0-9", raw[pos]),
        ));
    }
    let y = Tensor::from_vec(
        raw.iter().map(|&l| i64::from(l)).collect::<Vec<_>>(),
        &[raw.len()],
    )?;
    Ok((x, y))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
