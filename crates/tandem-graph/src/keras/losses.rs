//! Keras losses and the accuracy metric, as graph values.

use crate::graph::{Graph, Output};
use tandem_ir::{CrossEntropyOptions, EmitExt, Functional, Reduction};
use tandem_tensor::{DType, Error, Result};

/// A loss of [`crate::keras::Sequential::compile`]. `from_logits: false` (Keras' default)
/// means the model outputs probabilities (e.g. a final softmax or sigmoid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Mean squared error (`mse`).
    MeanSquaredError,
    /// Cross-entropy with integer class labels `[N]` (`sparse_categorical_crossentropy`).
    SparseCategoricalCrossentropy {
        /// The model outputs logits rather than probabilities.
        from_logits: bool,
    },
    /// Cross-entropy with one-hot (or soft) labels `[N, C]` (`categorical_crossentropy`).
    CategoricalCrossentropy {
        /// The model outputs logits rather than probabilities.
        from_logits: bool,
    },
    /// Binary cross-entropy with 0/1 labels shaped like the output (`binary_crossentropy`).
    BinaryCrossentropy {
        /// The model outputs logits rather than probabilities.
        from_logits: bool,
    },
}

/// Probabilities are clipped to `[EPS, 1 - EPS]` before the log, as Keras does.
const EPS: f64 = 1e-7;

impl Loss {
    /// Parses a Keras loss name (`mse`, `mean_squared_error`, `sparse_categorical_crossentropy`,
    /// `categorical_crossentropy`, `binary_crossentropy`), with `from_logits = false`.
    pub fn parse(name: &str) -> Result<Loss> {
        Ok(match name {
            "mse" | "mean_squared_error" => Loss::MeanSquaredError,
            "sparse_categorical_crossentropy" => {
                Loss::SparseCategoricalCrossentropy { from_logits: false }
            }
            "categorical_crossentropy" => Loss::CategoricalCrossentropy { from_logits: false },
            "binary_crossentropy" => Loss::BinaryCrossentropy { from_logits: false },
            other => {
                return Err(Error::invalid(
                    "keras",
                    format!(
                        "unknown loss `{other}` (mse, sparse_categorical_crossentropy, \
                         categorical_crossentropy, binary_crossentropy)"
                    ),
                ))
            }
        })
    }

    /// The same loss reading logits (`from_logits = true`); MSE is unchanged.
    pub fn from_logits(self) -> Loss {
        match self {
            Loss::MeanSquaredError => Loss::MeanSquaredError,
            Loss::SparseCategoricalCrossentropy { .. } => {
                Loss::SparseCategoricalCrossentropy { from_logits: true }
            }
            Loss::CategoricalCrossentropy { .. } => {
                Loss::CategoricalCrossentropy { from_logits: true }
            }
            Loss::BinaryCrossentropy { .. } => Loss::BinaryCrossentropy { from_logits: true },
        }
    }

    /// Keras' name of the loss.
    pub fn name(self) -> &'static str {
        match self {
            Loss::MeanSquaredError => "mse",
            Loss::SparseCategoricalCrossentropy { .. } => "sparse_categorical_crossentropy",
            Loss::CategoricalCrossentropy { .. } => "categorical_crossentropy",
            Loss::BinaryCrossentropy { .. } => "binary_crossentropy",
        }
    }

    /// True when labels are integer class indices `[N]`; otherwise they are float and shaped
    /// like the model's output.
    pub fn sparse_labels(self) -> bool {
        matches!(self, Loss::SparseCategoricalCrossentropy { .. })
    }

    /// Checks that the model's per-sample output shape suits the loss.
    pub fn check_output(self, output: &[usize]) -> Result<()> {
        let ok = match self {
            Loss::SparseCategoricalCrossentropy { .. } | Loss::CategoricalCrossentropy { .. } => {
                output.len() == 1 && output[0] >= 2
            }
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(
                "keras",
                format!(
                    "loss `{}` needs a model output of [classes] per sample (at least 2 \
                     classes), the model outputs {output:?}",
                    self.name()
                ),
            ))
        }
    }

    /// The mean loss of a batch: `pred` is the model's output, `y` the labels (int64 `[N]`
    /// for sparse losses, float shaped like `pred` otherwise).
    pub fn build(self, g: &Graph, pred: &Output, y: &Output) -> Result<Output> {
        let clip = |p: &Output| g.clamp(p, Some(EPS), Some(1.0 - EPS));
        match self {
            Loss::MeanSquaredError => g.mse_loss(pred, y, Reduction::Mean),
            Loss::SparseCategoricalCrossentropy { from_logits: true } => {
                g.cross_entropy(pred, y, CrossEntropyOptions::default())
            }
            Loss::SparseCategoricalCrossentropy { from_logits: false } => {
                g.nll_loss(&g.log(&clip(pred)?)?, y, Reduction::Mean, -100)
            }
            Loss::CategoricalCrossentropy { from_logits } => {
                let logp = if from_logits {
                    g.log_softmax(pred, -1)?
                } else {
                    g.log(&clip(pred)?)?
                };
                let per = g.sum(&g.mul(y, &logp)?, &[-1], false)?;
                g.neg(&g.mean(&per, &[], false)?)
            }
            Loss::BinaryCrossentropy { from_logits: true } => {
                g.binary_cross_entropy_with_logits(pred, y, Reduction::Mean)
            }
            Loss::BinaryCrossentropy { from_logits: false } => {
                g.binary_cross_entropy(&clip(pred)?, y, Reduction::Mean)
            }
        }
    }

    /// The number of correct predictions of a batch (a float32 scalar), for the `accuracy`
    /// metric. MSE has no accuracy.
    pub fn correct(self, g: &Graph, pred: &Output, y: &Output) -> Result<Output> {
        let hits = match self {
            Loss::SparseCategoricalCrossentropy { .. } => g.eq(&g.argmax(pred, -1, false)?, y)?,
            Loss::CategoricalCrossentropy { .. } => {
                g.eq(&g.argmax(pred, -1, false)?, &g.argmax(y, -1, false)?)?
            }
            Loss::BinaryCrossentropy { from_logits } => {
                let t = if from_logits { 0.0 } else { 0.5 };
                let p = g.cast(&g.gt_scalar(pred, t)?, DType::F32)?;
                g.eq(&p, &g.cast(&g.gt_scalar(y, 0.5)?, DType::F32)?)?
            }
            Loss::MeanSquaredError => {
                return Err(Error::invalid(
                    "keras",
                    "metric `accuracy` needs a classification loss, not mse",
                ))
            }
        };
        g.sum(&g.cast(&hits, DType::F32)?, &[], false)
    }

    /// How many predictions one sample contributes to accuracy (1, or the output size for
    /// binary cross-entropy, which judges every output).
    pub fn predictions_per_sample(self, output: &[usize]) -> usize {
        match self {
            Loss::BinaryCrossentropy { .. } => output.iter().product::<usize>().max(1),
            _ => 1,
        }
    }
}

impl TryFrom<&str> for Loss {
    type Error = Error;
    fn try_from(name: &str) -> Result<Loss> {
        Loss::parse(name)
    }
}
