//! [`DataLoader`]: batches of a dataset, optionally shuffled, assembled on a background thread.

use crate::shuffle::permutation;
use crate::Dataset;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use tandem_tensor::{Device, Error, Result, Tensor};

/// Batches of a [`Dataset`], epoch after epoch.
///
/// Built with a builder: `DataLoader::new(dataset, batch_size)` then optionally
/// [`shuffle`](DataLoader::shuffle), [`drop_last`](DataLoader::drop_last),
/// [`prefetch`](DataLoader::prefetch) and [`device`](DataLoader::device). Each [`epoch`](DataLoader::epoch) visits every sample
/// exactly once (except the last partial batch when `drop_last` is on), in index order or in
/// a seeded order that depends only on `(seed, epoch)`.
///
/// ```
/// use std::sync::Arc;
/// use tandem_data::{DataLoader, TensorDataset};
/// use tandem_tensor::Tensor;
///
/// let x = Tensor::from_vec((0..10).map(|v| v as f32).collect::<Vec<_>>(), &[10, 1]).unwrap();
/// let loader = DataLoader::new(Arc::new(TensorDataset::new(vec![x]).unwrap()), 4).shuffle(7);
/// assert_eq!(loader.len(), 3); // 4 + 4 + 2
/// let mut seen = Vec::new();
/// for batch in loader.epoch(0) {
///     let batch = batch.unwrap();
///     seen.extend(batch[0].to_vec::<f32>().unwrap());
/// }
/// seen.sort_by(|a, b| a.total_cmp(b));
/// assert_eq!(seen, (0..10).map(|v| v as f32).collect::<Vec<_>>());
/// ```
#[derive(Clone)]
pub struct DataLoader {
    dataset: Arc<dyn Dataset>,
    batch_size: usize,
    seed: Option<u64>,
    drop_last: bool,
    prefetch: usize,
    device: Device,
}

impl std::fmt::Debug for DataLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("samples", &self.dataset.len())
            .field("batch_size", &self.batch_size)
            .field("seed", &self.seed)
            .field("drop_last", &self.drop_last)
            .field("prefetch", &self.prefetch)
            .field("device", &self.device)
            .finish()
    }
}

impl DataLoader {
    /// A loader of `batch_size` samples per batch, in index order, keeping the last partial
    /// batch, prefetching 2 batches on a background thread.
    ///
    /// A `batch_size` of 0 is accepted here, but every [`epoch`](DataLoader::epoch) of such a
    /// loader yields a single error.
    pub fn new(dataset: Arc<dyn Dataset>, batch_size: usize) -> DataLoader {
        DataLoader {
            dataset,
            batch_size,
            seed: None,
            drop_last: false,
            prefetch: 2,
            device: Device::Cpu,
        }
    }

    /// Shuffles each epoch with the order [`shuffle::permutation`](crate::shuffle::permutation)
    /// gives for `(seed, epoch)`: reproducible, and different from one epoch to the next.
    pub fn shuffle(mut self, seed: u64) -> DataLoader {
        self.seed = Some(seed);
        self
    }

    /// When `true`, the last batch of an epoch is skipped if it would be smaller than
    /// `batch_size`.
    pub fn drop_last(mut self, drop_last: bool) -> DataLoader {
        self.drop_last = drop_last;
        self
    }

    /// How many assembled batches may wait for the training loop (default 2). With 0, no
    /// background thread is used: each batch is assembled when the iterator is advanced.
    pub fn prefetch(mut self, batches: usize) -> DataLoader {
        self.prefetch = batches;
        self
    }

    /// Delivers every batch on `device` (default the CPU), like PyTorch's `pin_memory=True`
    /// followed by `.to(device, non_blocking=True)`: the background thread copies each batch
    /// there as soon as it is assembled, so the copy overlaps the training step. On a CUDA
    /// device (feature `cuda` of `tandem-tensor`) the bytes go through page-locked (pinned) host
    /// buffers and the transfer is queued without waiting for the GPU. A device that cannot be
    /// used makes each batch an error naming it.
    pub fn device(mut self, device: Device) -> DataLoader {
        self.device = device;
        self
    }

    /// Number of batches per epoch.
    pub fn len(&self) -> usize {
        if self.batch_size == 0 {
            return 0;
        }
        let n = self.dataset.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// True when an epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The dataset batches are drawn from.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// The sample indices of each batch of `epoch`, in order.
    pub fn batch_indices(&self, epoch: usize) -> Vec<Vec<usize>> {
        let n = self.dataset.len();
        let order = match self.seed {
            Some(seed) => permutation(n, seed, epoch),
            None => (0..n).collect(),
        };
        if self.batch_size == 0 {
            return Vec::new();
        }
        order
            .chunks(self.batch_size)
            .take(self.len())
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// The batches of epoch `epoch` (counting from 0). Each item is the dataset's
    /// [`get_batch`](Dataset::get_batch) result, errors included.
    ///
    /// Unless [`prefetch`](DataLoader::prefetch) is 0, batches are assembled on a background
    /// thread that keeps up to `prefetch` of them ready; dropping the iterator stops that
    /// thread (it finishes at most the batch it is working on) and waits for it.
    pub fn epoch(&self, epoch: usize) -> Epoch {
        if self.batch_size == 0 {
            return Epoch {
                remaining: 1,
                source: Source::Dead("batch_size is 0: a batch needs at least one sample".into()),
            };
        }
        let batches = self.batch_indices(epoch);
        let remaining = batches.len();
        if self.prefetch == 0 || remaining == 0 {
            return Epoch {
                remaining,
                source: Source::Inline {
                    dataset: self.dataset.clone(),
                    batches: batches.into_iter(),
                    device: self.device,
                },
            };
        }
        let (tx, rx) = sync_channel(self.prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let worker_stop = stop.clone();
        let dataset = self.dataset.clone();
        let device = self.device;
        let spawned = std::thread::Builder::new()
            .name("tandem-data-loader".into())
            .spawn(move || {
                for indices in batches {
                    if worker_stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let batch = dataset
                        .get_batch(&indices)
                        .and_then(|b| to_device(b, device));
                    if tx.send(batch).is_err() {
                        break;
                    }
                }
            });
        match spawned {
            Ok(handle) => Epoch {
                remaining,
                source: Source::Thread {
                    rx: Some(rx),
                    stop,
                    handle: Some(handle),
                },
            },
            // No thread could be started: assemble batches on the caller's thread instead.
            Err(_) => Epoch {
                remaining,
                source: Source::Inline {
                    dataset: self.dataset.clone(),
                    batches: self.batch_indices(epoch).into_iter(),
                    device: self.device,
                },
            },
        }
    }
}

/// Where an epoch's batches come from.
enum Source {
    Inline {
        dataset: Arc<dyn Dataset>,
        batches: std::vec::IntoIter<Vec<usize>>,
        device: Device,
    },
    Thread {
        rx: Option<Receiver<Result<Vec<Tensor>>>>,
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<()>>,
    },
    /// Every remaining batch is this error.
    Dead(String),
}

/// The batches of one epoch of a [`DataLoader`]: an iterator of `Result<Vec<Tensor>>`.
///
/// It owns what it needs (it does not borrow the loader). Dropping it stops its background
/// thread.
pub struct Epoch {
    remaining: usize,
    source: Source,
}

impl Epoch {
    /// Stops and joins the background thread, if any; returns a message if it panicked.
    fn shut_down(&mut self) -> Option<String> {
        if let Source::Thread { rx, stop, handle } = &mut self.source {
            stop.store(true, Ordering::Relaxed);
            // Dropping the receiver makes a worker blocked in `send` return at once.
            drop(rx.take());
            if let Some(h) = handle.take() {
                if let Err(payload) = h.join() {
                    let what = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_string());
                    return Some(what);
                }
            }
        }
        None
    }
}

impl Iterator for Epoch {
    type Item = Result<Vec<Tensor>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            self.shut_down();
            return None;
        }
        self.remaining -= 1;
        let item = match &mut self.source {
            Source::Inline {
                dataset,
                batches,
                device,
            } => {
                let Some(indices) = batches.next() else {
                    self.remaining = 0;
                    return None;
                };
                dataset
                    .get_batch(&indices)
                    .and_then(|b| to_device(b, *device))
            }
            Source::Dead(msg) => Err(Error::invalid("DataLoader", msg.clone())),
            Source::Thread { rx, .. } => match rx.as_ref().map(Receiver::recv) {
                Some(Ok(batch)) => batch,
                // The worker stopped before sending every batch: it panicked. Every batch
                // still owed is reported as an error, so the iterator's length stays exact.
                _ => {
                    let why = self
                        .shut_down()
                        .unwrap_or_else(|| "it stopped early".to_string());
                    let msg = format!("the batch-loading thread failed: {why}");
                    self.source = Source::Dead(msg.clone());
                    Err(Error::invalid("DataLoader", msg))
                }
            },
        };
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Epoch {}

impl std::iter::FusedIterator for Epoch {}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The tensors of a batch on `device` (unchanged when they are there already).
fn to_device(batch: Vec<Tensor>, device: Device) -> Result<Vec<Tensor>> {
    if batch.iter().all(|t| t.device() == device) {
        return Ok(batch);
    }
    batch.iter().map(|t| t.to_device(device)).collect()
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;
