//! The error type shared by every Tandem crate.

use crate::{DType, Device};

/// Shapes as they appear in error messages.
pub type ShapeVec = Vec<usize>;

/// Everything that can go wrong in Tandem. Variants carry structured fields (op, shapes, dtypes,
/// device, node or parameter names) so that messages say exactly what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two shapes that must agree (or broadcast) do not.
    #[error("{op}: shape mismatch: {lhs:?} vs {rhs:?}{}", hint_suffix(.hint))]
    ShapeMismatch {
        /// The op that failed.
        op: &'static str,
        /// First shape involved.
        lhs: ShapeVec,
        /// Second shape involved.
        rhs: ShapeVec,
        /// Extra explanation (may be empty).
        hint: String,
    },
    /// A shape is not acceptable on its own (wrong rank, zero size where forbidden, ...).
    #[error("{op}: invalid shape {shape:?}: {msg}")]
    BadShape {
        /// The op that failed.
        op: &'static str,
        /// The offending shape.
        shape: ShapeVec,
        /// What was expected.
        msg: String,
    },
    /// A dtype is not what the op needs.
    #[error("{op}: expected dtype {expected}, got {got}")]
    DTypeMismatch {
        /// The op that failed.
        op: &'static str,
        /// What the op needs (may list several, e.g. "a float dtype").
        expected: String,
        /// What it received.
        got: DType,
    },
    /// The op has no kernel for this dtype on this device.
    #[error("{op}: not supported for dtype {dtype} on {device}")]
    UnsupportedDType {
        /// The op.
        op: &'static str,
        /// The dtype.
        dtype: DType,
        /// The device.
        device: Device,
    },
    /// An axis is out of range for the tensor's rank.
    #[error("{op}: axis {axis} is out of range for a tensor of rank {rank}")]
    BadAxis {
        /// The op.
        op: &'static str,
        /// The axis as given (may be negative).
        axis: isize,
        /// The rank of the tensor.
        rank: usize,
    },
    /// An index value is out of range.
    #[error("{op}: index {index} is out of range for a dimension of size {size}")]
    IndexOutOfRange {
        /// The op.
        op: &'static str,
        /// The index as given.
        index: i64,
        /// The size of the indexed dimension.
        size: usize,
    },
    /// Operands live on different devices.
    #[error("{op}: operands are on different devices ({lhs} and {rhs})")]
    DeviceMismatch {
        /// The op.
        op: &'static str,
        /// First device.
        lhs: Device,
        /// Second device.
        rhs: Device,
    },
    /// A device cannot be used.
    #[error("device {device} is not available: {reason}")]
    DeviceUnavailable {
        /// The device requested.
        device: Device,
        /// Why.
        reason: String,
    },
    /// A device (driver, kernel launch, copy, out-of-memory) failure while running an op.
    #[error("{op} on {device}: {msg}")]
    Backend {
        /// The op or function.
        op: &'static str,
        /// The device.
        device: Device,
        /// What the driver or library reported.
        msg: String,
    },
    /// An argument is invalid for another reason.
    #[error("{op}: {msg}")]
    InvalidArgument {
        /// The op or function.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// A file or byte buffer does not follow its format.
    #[error("{format} {}: {msg}", path_or_buffer(.path))]
    Format {
        /// The format (`npy`, `npz`, `safetensors`, `onnx`, ...).
        format: &'static str,
        /// File path, when reading a file.
        path: Option<String>,
        /// What was wrong.
        msg: String,
    },
    /// An I/O error, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The path being read or written.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error in autograd (backward twice, non-scalar backward, ...).
    #[error("autograd: {0}")]
    Autograd(String),
    /// An error attached to a named graph node or model parameter.
    #[error("{context}: {source}")]
    Context {
        /// The node, parameter or file the error happened in.
        context: String,
        /// The error.
        #[source]
        source: Box<Error>,
    },
    /// A graph or session error (unfed placeholder, bad feed, unknown node, ...).
    #[error("{0}")]
    Graph(String),
    /// A NaN or infinity was produced where anomaly detection was on.
    #[error("anomaly: {op} produced {what}")]
    Anomaly {
        /// The op that produced the non-finite value.
        op: String,
        /// "NaN" or "Inf".
        what: &'static str,
    },
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    }
}

fn path_or_buffer(path: &Option<String>) -> String {
    match path {
        Some(p) => format!("file {p}"),
        None => "data".to_string(),
    }
}

impl Error {
    /// Wraps the error with a context such as a node or parameter name.
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// A format error for in-memory data.
    pub fn format(format: &'static str, msg: impl Into<String>) -> Error {
        Error::Format {
            format,
            path: None,
            msg: msg.into(),
        }
    }

    /// An invalid-argument error.
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Error {
        Error::InvalidArgument {
            op,
            msg: msg.into(),
        }
    }

    /// A shape mismatch without a hint.
    pub fn shape_mismatch(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Error {
        Error::ShapeMismatch {
            op,
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
            hint: String::new(),
        }
    }

    /// The innermost error, under any layers of context.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }
}

/// `Result` with Tandem's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to a `Result`'s error.
pub trait ResultExt<T> {
    /// Wraps an error with the given context (a node, parameter or file name).
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.context(context()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_was_wrong() {
        let e = Error::shape_mismatch("matmul", &[2, 3], &[4, 5]);
        assert_eq!(e.to_string(), "matmul: shape mismatch: [2, 3] vs [4, 5]");
        let e = e.context("fc1");
        assert_eq!(
            e.to_string(),
            "fc1: matmul: shape mismatch: [2, 3] vs [4, 5]"
        );
        assert!(matches!(e.root(), Error::ShapeMismatch { .. }));
        let e = Error::Format {
            format: "npy",
            path: Some("a.npy".into()),
            msg: "bad magic".into(),
        };
        assert_eq!(e.to_string(), "npy file a.npy: bad magic");
    }
}
