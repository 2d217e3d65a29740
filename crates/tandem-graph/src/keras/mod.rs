//! A Keras-style API over graph mode (`tf.keras` on TensorFlow 1.x graphs).
//!
//! ```
//! use tandem_graph::keras::{Dense, FitOptions, Sequential};
//! use tandem_tensor::Tensor;
//! // tf.keras.Sequential([Dense(10, activation="relu"), Dense(1)])
//! let mut model = Sequential::new(vec![
//!     Box::new(Dense::new(10).activation("relu")),
//!     Box::new(Dense::new(1)),
//! ]);
//! model.compile("adam", "mse", &[]).unwrap();
//! let x = Tensor::from_vec(vec![0.0f32, 1.0, 2.0, 3.0], &[4, 1]).unwrap();
//! let y = Tensor::from_vec(vec![1.0f32, 3.0, 5.0, 7.0], &[4, 1]).unwrap();
//! let history = model.fit(&x, &y, &FitOptions::new().epochs(3).verbose(false)).unwrap();
//! assert_eq!(history.loss().len(), 3);
//! let pred = model.predict(&x, 32).unwrap();
//! assert_eq!(pred.shape(), &[4, 1]);
//! ```
//!
//! The layers are built into one [`crate::Graph`] when the per-sample input shape is known
//! (given with [`Sequential::input_shape`] or taken from the first `fit`); `compile` adds the
//! loss, the symbolic gradients and the optimizer's update ops, and `fit`, `evaluate` and
//! `predict` run prepared [`crate::Callable`]s. Images are channels-first (`[C, H, W]`).

pub mod layers;
pub mod losses;
pub mod model;

pub use layers::{Conv2D, Dense, Dropout, Flatten, Layer, MaxPool2D};
pub use losses::Loss;
pub use model::{Evaluation, FitOptions, History, LossSpec, OptimizerSpec, Sequential};
