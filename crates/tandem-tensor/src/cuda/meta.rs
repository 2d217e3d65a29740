//! Shape/stride metadata passed by value to the strided CUDA kernels, and the dimension
//! coalescing that keeps it small. Pure Rust (tested without a GPU).

use crate::{Error, Result};

/// Most dimensions a strided kernel handles after coalescing.
pub const MAX_DIMS: usize = 8;
/// Most operands (inputs plus output) described by one [`Strided`].
pub const MAX_OPERANDS: usize = 3;

/// Shape and per-operand strides/offsets in elements, laid out like `struct Strided` in
/// `kernels/common.cuh` (all fields 64-bit, so there is no padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strided {
    /// Number of elements of the (broadcast) iteration space.
    pub n: i64,
    /// Number of dimensions in use.
    pub rank: i64,
    /// Dimension sizes.
    pub shape: [i64; MAX_DIMS],
    /// Strides of each operand.
    pub strides: [[i64; MAX_DIMS]; MAX_OPERANDS],
    /// Offset of each operand's first element.
    pub offset: [i64; MAX_OPERANDS],
}

/// Merges dimensions that every operand walks contiguously, drops size-1 dimensions, and
/// returns the merged shape with each operand's strides. `operands` holds (strides, offset)
/// for each operand over the common `shape`.
pub fn coalesce(
    op: &'static str,
    shape: &[usize],
    operands: &[(&[usize], usize)],
) -> Result<Strided> {
    if operands.len() > MAX_OPERANDS || operands.iter().any(|(s, _)| s.len() != shape.len()) {
        return Err(Error::invalid(
            op,
            format!(
                "internal: {} operands for a kernel of at most {MAX_OPERANDS}",
                operands.len()
            ),
        ));
    }
    // Dims kept, innermost last: (size, strides per operand).
    let mut dims: Vec<(usize, Vec<usize>)> = Vec::with_capacity(shape.len());
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        let strides: Vec<usize> = operands.iter().map(|(s, _)| s[d]).collect();
        if let Some((inner_size, inner)) = dims.last_mut() {
            // `inner` is the previous (outer) dim here; merge if outer == inner * size.
            let mergeable = inner
                .iter()
                .zip(&strides)
                .all(|(&outer_s, &s)| outer_s == s * shape[d]);
            if mergeable {
                *inner_size *= shape[d];
                *inner = strides;
                continue;
            }
        }
        dims.push((shape[d], strides));
    }
    if dims.len() > MAX_DIMS {
        return Err(Error::BadShape {
            op,
            shape: shape.to_vec(),
            msg: format!(
                "a CUDA kernel handles at most {MAX_DIMS} non-mergeable dimensions, this view has {}",
                dims.len()
            ),
        });
    }
    let n: usize = shape.iter().product();
    let mut m = Strided {
        n: n as i64,
        rank: dims.len() as i64,
        shape: [1; MAX_DIMS],
        strides: [[0; MAX_DIMS]; MAX_OPERANDS],
        offset: [0; MAX_OPERANDS],
    };
    for (d, (size, strides)) in dims.iter().enumerate() {
        m.shape[d] = *size as i64;
        for (k, &s) in strides.iter().enumerate() {
            m.strides[k][d] = s as i64;
        }
    }
    for (k, (_, off)) in operands.iter().enumerate() {
        m.offset[k] = *off as i64;
    }
    Ok(m)
}

/// Storage position of element `i` (row-major over `m.shape`) of operand `k`: the same
/// arithmetic as `tdm_offset` in `common.cuh`, used to test it on the CPU.
pub fn offset_of(m: &Strided, k: usize, mut i: i64) -> i64 {
    let mut off = m.offset[k];
    for d in (0..m.rank as usize).rev() {
        let s = m.shape[d];
        off += (i % s) * m.strides[k][d];
        i /= s;
    }
    off
}

// SAFETY: `Strided` is `repr(C)`, made of 64-bit integers only (no padding, no pointers), and
// matches `struct Strided` in `kernels/common.cuh` field for field.
#[cfg(feature = "cuda")]
unsafe impl cudarc::driver::DeviceRepr for Strided {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Layout;

    fn check_against_positions(layouts: &[Layout]) {
        let shape = layouts[0].shape().to_vec();
        let ops: Vec<(&[usize], usize)> =
            layouts.iter().map(|l| (l.strides(), l.offset())).collect();
        let m = coalesce("test", &shape, &ops).unwrap();
        for (k, l) in layouts.iter().enumerate() {
            let want: Vec<i64> = l.positions().map(|p| p as i64).collect();
            let got: Vec<i64> = (0..m.n).map(|i| offset_of(&m, k, i)).collect();
            assert_eq!(got, want, "operand {k} of {shape:?}");
        }
    }

    #[test]
    fn contiguous_merges_to_one_dim() {
        let l = Layout::contiguous(&[2, 3, 4]);
        let m = coalesce("t", l.shape(), &[(l.strides(), 0)]).unwrap();
        assert_eq!(m.rank, 1);
        assert_eq!(m.shape[0], 24);
        check_against_positions(&[l]);
    }

    #[test]
    fn views_keep_their_positions() {
        let base = Layout::contiguous(&[4, 3, 5]);
        let perm = base.permute(&[2, 0, 1]).unwrap();
        let sliced = Layout::contiguous(&[5, 4, 6])
            .slice(2, 1, 3, 2)
            .unwrap()
            .permute(&[0, 1, 2])
            .unwrap();
        let bcast = Layout::contiguous(&[4, 1])
            .broadcast_to(&[5, 4, 3])
            .unwrap();
        check_against_positions(std::slice::from_ref(&perm));
        check_against_positions(&[sliced]);
        check_against_positions(&[Layout::contiguous(&[5, 4, 3]), bcast]);
        let out = Layout::contiguous(perm.shape());
        check_against_positions(&[out, perm]);
        check_against_positions(&[Layout::contiguous(&[1, 1, 17])]);
        check_against_positions(&[Layout::contiguous(&[])]);
    }

    #[test]
    fn too_many_dims_is_an_error() {
        let shape = [2usize; 10];
        let mut l = Layout::contiguous(&shape);
        // Reversing the dims makes no pair mergeable.
        let perm: Vec<usize> = (0..10).rev().collect();
        l = l.permute(&perm).unwrap();
        let e = coalesce("add", l.shape(), &[(l.strides(), 0)]).unwrap_err();
        assert!(e.to_string().contains("add"), "{e}");
    }
}
