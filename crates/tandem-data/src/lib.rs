//! # tandem-data
//!
//! Tandem's data pipeline, independent of autograd: it hands plain
//! [`tandem_tensor::Tensor`] values to either execution mode.
//!
//! - [`Dataset`]: a map-style dataset of samples, each a small tuple of tensors, with a
//!   batch gather that datasets can speed up; [`TensorDataset`] over in-memory tensors;
//!   [`collate`] to stack samples.
//! - [`DataLoader`]: batches of a dataset per epoch, optionally shuffled in an order that is a
//!   function of `(seed, epoch)` only (see [`shuffle`]), assembled on a background thread.
//! - [`idx`]: the IDX format, plain or gzip-compressed, parsed defensively.
//! - [`mnist`]: finding, downloading, checking and loading MNIST, and datasets over it.
//!
//! ```
//! use std::sync::Arc;
//! use tandem_data::{DataLoader, TensorDataset};
//! use tandem_tensor::Tensor;
//!
//! let x = Tensor::from_vec((0..20).map(|v| v as f32).collect::<Vec<_>>(), &[10, 2]).unwrap();
//! let y = Tensor::from_vec((0..10).collect::<Vec<i64>>(), &[10]).unwrap();
//! let loader = DataLoader::new(Arc::new(TensorDataset::new(vec![x, y]).unwrap()), 4)
//!     .shuffle(42)
//!     .drop_last(true);
//! for epoch in 0..2 {
//!     for batch in loader.epoch(epoch) {
//!         let batch = batch.unwrap();
//!         assert_eq!(batch[0].shape(), &[4, 2]);
//!         assert_eq!(batch[1].shape(), &[4]);
//!     }
//! }
//! ```

mod dataset;
pub mod idx;
mod loader;
pub mod mnist;
pub mod shuffle;

pub use dataset::{collate, Dataset, TensorDataset};
pub use loader::{DataLoader, Epoch};

#[cfg(test)]
mod test_util;
