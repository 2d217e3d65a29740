//! Zero-copy crossing between eager tensors and the plain tensors a [`Session`] feeds and
//! fetches. Both modes share `tandem_tensor::Tensor` (an `Arc` over the storage plus a
//! layout), so crossing costs a reference count, never a copy of the elements.

use tandem_eager::Tensor as EagerTensor;
use tandem_graph::{Output, Session};
use tandem_tensor::{Error, Result, Tensor};

/// The plain value of an eager tensor, for a feed (shares the storage).
pub fn to_feed(t: &EagerTensor) -> Tensor {
    t.value()
}

/// An eager leaf over a fetched value (shares the storage, does not require grad).
pub fn from_fetch(t: Tensor) -> EagerTensor {
    EagerTensor::from_value(t)
}

/// Runs `fetches` in `session` with eager tensors as feeds and returns eager tensors; no
/// element is copied on the way in or out. Each feed is checked against its placeholder's dtype
/// (an error names the placeholder).
pub fn run_eager(
    session: &Session,
    fetches: &[&Output],
    feeds: &[(&Output, &EagerTensor)],
) -> Result<Vec<EagerTensor>> {
    let values: Vec<Tensor> = feeds.iter().map(|(_, t)| to_feed(t)).collect();
    for ((ph, _), v) in feeds.iter().zip(&values) {
        if ph.dtype() != v.dtype() {
            return Err(Error::DTypeMismatch {
                op: "run_eager",
                expected: format!("{} for placeholder `{}`", ph.dtype(), ph.name()),
                got: v.dtype(),
            });
        }
    }
    let pairs: Vec<(&Output, &Tensor)> = feeds.iter().map(|(p, _)| *p).zip(&values).collect();
    Ok(session
        .run(fetches, &pairs)?
        .into_iter()
        .map(from_fetch)
        .collect())
}
