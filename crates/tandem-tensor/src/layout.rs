//! Shapes, strides and offsets: how a tensor's elements sit in its storage.
//!
//! A [`Layout`] maps a multi-index `i` to the storage position
//! `offset + sum(i[d] * strides[d])`. Views (reshape of contiguous data, permute, narrow,
//! expand, squeeze, unsqueeze) only build a new layout over the same storage.

use crate::{Error, Result};
use smallvec::SmallVec;

/// A list of dimension sizes, stored inline up to rank 6.
pub type Shape = SmallVec<[usize; 6]>;
/// A list of strides (in elements), stored inline up to rank 6.
pub type Strides = SmallVec<[usize; 6]>;

/// Shape, strides and offset of a tensor view.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Shape,
    strides: Strides,
    offset: usize,
}

/// Number of elements of a shape (1 for a 0-d shape).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major (C order) strides of a shape.
pub fn contiguous_strides(shape: &[usize]) -> Strides {
    let mut strides: Strides = smallvec::smallvec![0; shape.len()];
    let mut acc = 1;
    for d in (0..shape.len()).rev() {
        strides[d] = acc;
        acc *= shape[d].max(1);
    }
    strides
}

/// Normalizes a possibly negative axis against a rank.
pub fn normalize_axis(op: &'static str, axis: isize, rank: usize) -> Result<usize> {
    // Like PyTorch, a 0-d tensor accepts axis 0 and -1.
    let r = rank.max(1) as isize;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(Error::BadAxis { op, axis, rank });
    }
    Ok(a as usize)
}

/// The NumPy broadcast of two shapes.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Shape> {
    let rank = a.len().max(b.len());
    let mut out: Shape = smallvec::smallvec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::ShapeMismatch {
                op,
                lhs: a.to_vec(),
                rhs: b.to_vec(),
                hint: format!(
                    "dimension {i} of the broadcast: {da} vs {db} (sizes must match or one must be 1)"
                ),
            });
        };
    }
    Ok(out)
}

/// Resolves a reshape target with at most one `-1` against a number of elements.
pub fn infer_reshape(op: &'static str, from: &[usize], target: &[isize]) -> Result<Shape> {
    let total = numel(from);
    let mut known = 1usize;
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        if d == -1 {
            if infer.is_some() {
                return Err(Error::invalid(
                    op,
                    format!("only one -1 allowed in {target:?}"),
                ));
            }
            infer = Some(i);
        } else if d < 0 {
            return Err(Error::invalid(op, format!("negative size in {target:?}")));
        } else {
            known = known.saturating_mul(d as usize);
        }
    }
    let mut shape: Shape = target.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(Error::ShapeMismatch {
                op,
                lhs: from.to_vec(),
                rhs: target.iter().map(|&d| d.max(0) as usize).collect(),
                hint: format!("cannot infer -1 in {target:?} for {total} elements"),
            });
        }
        shape[i] = total / known;
    } else if known != total {
        return Err(Error::ShapeMismatch {
            op,
            lhs: from.to_vec(),
            rhs: shape.to_vec(),
            hint: format!("{total} elements cannot be viewed as {known}"),
        });
    }
    Ok(shape)
}

impl Layout {
    /// A contiguous row-major layout of the given shape.
    pub fn contiguous(shape: &[usize]) -> Layout {
        Layout {
            shape: Shape::from_slice(shape),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// A layout from explicit parts. The caller guarantees it stays inside the storage.
    pub fn from_parts(shape: Shape, strides: Strides, offset: usize) -> Layout {
        debug_assert_eq!(shape.len(), strides.len());
        Layout {
            shape,
            strides,
            offset,
        }
    }

    /// Dimension sizes.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Strides in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Offset of the first element in the storage.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// True when the elements are in row-major order with no gaps (offset may be non-zero).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for d in (0..self.shape.len()).rev() {
            if self.shape[d] != 1 && self.strides[d] != acc {
                return false;
            }
            acc *= self.shape[d];
        }
        true
    }

    /// The storage range `[start, end)` this view may touch (for bounds checks).
    pub fn storage_span(&self) -> (usize, usize) {
        if self.numel() == 0 {
            return (self.offset, self.offset);
        }
        let last: usize = self
            .shape
            .iter()
            .zip(&self.strides)
            .map(|(&d, &s)| (d - 1) * s)
            .sum();
        (self.offset, self.offset + last + 1)
    }

    /// A view with the dimensions reordered: output dim `i` is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Layout> {
        let rank = self.rank();
        let mut seen = [false; 64];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::invalid(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the {rank} dims of {:?}",
                    self.shape
                ),
            ));
        }
        Ok(Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        })
    }

    /// A view of `len` elements of `axis` starting at `start`, taking every `step`-th.
    pub fn slice(&self, axis: usize, start: usize, len: usize, step: usize) -> Result<Layout> {
        let rank = self.rank();
        if axis >= rank {
            return Err(Error::BadAxis {
                op: "slice",
                axis: axis as isize,
                rank,
            });
        }
        let dim = self.shape[axis];
        if step == 0 {
            return Err(Error::invalid("slice", "step must be positive"));
        }
        if len > 0 && (start >= dim || start + (len - 1) * step >= dim) {
            return Err(Error::invalid(
                "slice",
                format!(
                    "range start {start}, length {len}, step {step} exceeds dimension {axis} of size {dim} (shape {:?})",
                    self.shape
                ),
            ));
        }
        let mut out = self.clone();
        out.shape[axis] = len;
        out.strides[axis] = self.strides[axis] * step;
        if len > 0 {
            out.offset += start * self.strides[axis];
        }
        Ok(out)
    }

    /// A view broadcast to `shape` (NumPy rules; new leading dims and size-1 dims get stride 0).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Layout> {
        let rank = shape.len();
        if rank < self.rank() {
            return Err(Error::shape_mismatch("expand", &self.shape, shape));
        }
        let lead = rank - self.rank();
        let mut strides: Strides = smallvec::smallvec![0; rank];
        for i in 0..rank {
            if i < lead {
                continue;
            }
            let d = self.shape[i - lead];
            if d == shape[i] {
                strides[i] = self.strides[i - lead];
            } else if d == 1 {
                strides[i] = 0;
            } else {
                return Err(Error::ShapeMismatch {
                    op: "expand",
                    lhs: self.shape.to_vec(),
                    rhs: shape.to_vec(),
                    hint: format!("dimension {i}: size {d} cannot be expanded to {}", shape[i]),
                });
            }
        }
        Ok(Layout {
            shape: Shape::from_slice(shape),
            strides,
            offset: self.offset,
        })
    }

    /// A view with a new shape, possible without copying when the layout allows it
    /// (always for contiguous layouts). `None` when a copy is needed.
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout {
                shape: Shape::from_slice(shape),
                strides: contiguous_strides(shape),
                offset: self.offset,
            });
        }
        // Merge/split dims where the strides allow it (the general PyTorch `view` rule).
        let old: Vec<(usize, usize)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(&d, _)| d != 1)
            .map(|(&d, &s)| (d, s))
            .collect();
        let mut new_strides: Strides = smallvec::smallvec![0; shape.len()];
        let mut oi = 0;
        let mut ni = 0;
        while ni < shape.len() {
            if shape[ni] == 1 {
                new_strides[ni] = 1;
                ni += 1;
                continue;
            }
            if oi >= old.len() {
                return None;
            }
            // Take a chunk of old dims that is itself contiguous.
            let chunk_start = oi;
            let mut chunk_size = old[oi].0;
            while oi + 1 < old.len() && old[oi].1 == old[oi + 1].0 * old[oi + 1].1 {
                oi += 1;
                chunk_size *= old[oi].0;
            }
            let chunk_stride = old[oi].1;
            oi += 1;
            let _ = chunk_start;
            // Fill new dims from this chunk.
            let mut acc = 1;
            let first = ni;
            while ni < shape.len() && acc < chunk_size {
                acc *= shape[ni];
                ni += 1;
            }
            while ni < shape.len() && shape[ni] == 1 && acc == chunk_size {
                ni += 1;
            }
            if acc != chunk_size {
                return None;
            }
            let mut s = chunk_stride;
            for j in (first..ni).rev() {
                new_strides[j] = s;
                s *= shape[j];
            }
        }
        if oi != old.len() {
            return None;
        }
        Some(Layout {
            shape: Shape::from_slice(shape),
            strides: new_strides,
            offset: self.offset,
        })
    }

    /// Storage position of a multi-index (no bounds check beyond debug asserts).
    #[inline]
    pub fn position(&self, index: &[usize]) -> usize {
        debug_assert_eq!(index.len(), self.rank());
        self.offset
            + index
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()
    }

    /// Iterates the storage positions of every element in row-major order.
    pub fn positions(&self) -> Positions<'_> {
        Positions::new(self)
    }

    /// Splits the layout into (outer shape, outer strides, inner contiguous run length):
    /// the trailing dims that are contiguous are merged into one run of `block` elements.
    pub fn blocks(&self) -> (Shape, Strides, usize) {
        let mut block = 1;
        let mut d = self.rank();
        while d > 0 {
            let i = d - 1;
            if self.shape[i] == 1 {
                d -= 1;
                continue;
            }
            if self.strides[i] != block {
                break;
            }
            block *= self.shape[i];
            d -= 1;
        }
        (
            Shape::from_slice(&self.shape[..d]),
            Strides::from_slice(&self.strides[..d]),
            block,
        )
    }
}

/// Iterator over the storage positions of a layout in row-major order.
pub struct Positions<'a> {
    layout: &'a Layout,
    index: Shape,
    next: Option<usize>,
    remaining: usize,
}

impl<'a> Positions<'a> {
    fn new(layout: &'a Layout) -> Self {
        let n = layout.numel();
        Positions {
            layout,
            index: smallvec::smallvec![0; layout.rank()],
            next: if n == 0 { None } else { Some(layout.offset) },
            remaining: n,
        }
    }
}

impl Iterator for Positions<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        let cur = self.next?;
        self.remaining -= 1;
        if self.remaining == 0 {
            self.next = None;
            return Some(cur);
        }
        let mut pos = cur;
        let shape = &self.layout.shape;
        let strides = &self.layout.strides;
        let mut d = shape.len();
        while d > 0 {
            d -= 1;
            self.index[d] += 1;
            pos += strides[d];
            if self.index[d] < shape[d] {
                break;
            }
            pos -= strides[d] * shape[d];
            self.index[d] = 0;
        }
        self.next = Some(pos);
        Some(cur)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Positions<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast() {
        assert_eq!(
            broadcast_shapes("add", &[3, 1, 4], &[2, 4])
                .unwrap()
                .as_slice(),
            &[3, 2, 4]
        );
        assert_eq!(broadcast_shapes("add", &[], &[2]).unwrap().as_slice(), &[2]);
        let e = broadcast_shapes("add", &[3], &[4]).unwrap_err();
        assert!(e.to_string().contains("[3] vs [4]"), "{e}");
    }

    #[test]
    fn axes() {
        assert_eq!(normalize_axis("sum", -1, 3).unwrap(), 2);
        assert_eq!(normalize_axis("sum", 0, 0).unwrap(), 0);
        assert!(normalize_axis("sum", 3, 3).is_err());
        assert!(normalize_axis("sum", -4, 3).is_err());
    }

    #[test]
    fn reshape_infer() {
        assert_eq!(
            infer_reshape("reshape", &[2, 3, 4], &[4, -1])
                .unwrap()
                .as_slice(),
            &[4, 6]
        );
        assert!(infer_reshape("reshape", &[2, 3, 4], &[5, -1]).is_err());
        assert!(infer_reshape("reshape", &[2, 3, 4], &[-1, -1]).is_err());
    }

    #[test]
    fn positions_of_permuted() {
        let l = Layout::contiguous(&[2, 3]).permute(&[1, 0]).unwrap();
        assert_eq!(l.positions().collect::<Vec<_>>(), vec![0, 3, 1, 4, 2, 5]);
        assert!(!l.is_contiguous());
        let l = Layout::contiguous(&[4]).broadcast_to(&[2, 4]).unwrap();
        assert_eq!(
            l.positions().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 0, 1, 2, 3]
        );
    }

    #[test]
    fn slice_and_blocks() {
        let l = Layout::contiguous(&[2, 3, 4]).slice(1, 1, 2, 1).unwrap();
        assert_eq!(l.offset(), 4);
        let (outer, _, block) = l.blocks();
        assert_eq!((outer.as_slice(), block), (&[2][..], 8));
        assert!(Layout::contiguous(&[2, 3]).slice(1, 2, 2, 1).is_err());
    }

    #[test]
    fn view_reshape_of_non_contiguous() {
        // [2,3,4] sliced on dim 0 keeps rows contiguous: merging dims 1,2 is a view.
        let l = Layout::contiguous(&[4, 3, 4]).slice(0, 0, 2, 2).unwrap();
        let r = l.reshape(&[2, 12]).unwrap();
        assert_eq!(r.strides(), &[24, 1]);
        // A transpose cannot be flattened without a copy.
        let t = Layout::contiguous(&[2, 3]).permute(&[1, 0]).unwrap();
        assert!(t.reshape(&[6]).is_none());
    }
}
