//! Direct (im2col-free) kernels for stride-1 convolutions with few channels per group, such
//! as LeNet's 1->6 and 6->16 5x5 layers.
//!
//! The trick: copy one group's image into a zero-padded `[C/g, hp, wp]` buffer and number the
//! output positions on the padded width, `q = y * wp + x`. With stride 1, tap `(c, ki, kj)` of
//! output `q` reads padded element `c*hp*wp + ki*dh*wp + kj*dw + q`, so for every tap the
//! inputs of consecutive outputs are consecutive: the convolution is a sum of shifted,
//! scaled copies of one buffer ([`correlate`]), one long vectorized axpy per tap and output
//! channel. The positions with `x >= ow` are computed and thrown away (the
//! price of the layout: 12% for LeNet's conv1, 28% for conv2), but nothing is packed or laid
//! out as columns, and the whole working set of one sample stays in L1.
//!
//! The input gradient is the same correlation run backwards (zero-padded output gradient,
//! negative tap offsets, weights transposed), the weight gradient a set of dot products
//! between output-gradient rows and shifted input rows ([`dot`]).

use super::super::matmul::GemmScalar;
use super::super::simd::dispatch;
use super::ConvGeom;
use crate::{Error, Float, Result};

/// Flat row lengths are rounded up to a multiple of this (whole vectors at the row ends).
const TILE: usize = 32;
/// Lanes of the weight-gradient partial sums.
const LANES: usize = 16;

/// Scalars of the convolution kernels: `f32` and `f64` (the half types are computed in `f32`
/// by the tensor ops).
pub trait DirectScalar: GemmScalar + Float {}
impl DirectScalar for f32 {}
impl DirectScalar for f64 {}

/// True when the direct kernels handle `g`: stride 1 and few channels per group, where
/// im2col + gemm spends most of its time laying out and packing small matrices.
pub(crate) fn applies(g: &ConvGeom) -> bool {
    g.params.stride == [1, 1] && g.cg() <= 32 && g.og() <= 32 && g.n > 0
}

/// Layout of one sample's padded planes.
#[derive(Clone, Copy)]
struct Flat {
    /// Padded width (the row pitch of every flat buffer).
    wp: usize,
    /// Length of one padded plane.
    plane: usize,
    /// Outputs of one channel on the padded width: `(oh - 1) * wp + ow`.
    q: usize,
    /// `q` rounded up to whole tiles.
    q_tiles: usize,
}

impl Flat {
    fn new(g: &ConvGeom) -> Flat {
        let (hp, wp) = g.padded_hw();
        let q = (g.oh - 1) * wp + g.ow;
        Flat {
            wp,
            plane: hp * wp,
            q,
            q_tiles: q.div_ceil(TILE) * TILE,
        }
    }
}

/// `out[m * pitch + q] = sum over t of wts[m * taps + t] * src[offs[t] + q]` for
/// `m < m_total` and `q < q_len`: one axpy over a whole row per tap and output row (long
/// contiguous loops that vectorize; the rows stay in L1 for the layer sizes this path takes).
/// Returns `None` (instead of panicking) if a read or write would leave a slice.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn correlate_rows<T: DirectScalar>(
    src: &[T],
    offs: &[usize],
    wts: &[T],
    m_total: usize,
    out: &mut [T],
    pitch: usize,
    q_len: usize,
) -> Option<()> {
    let taps = offs.len();
    for m in 0..m_total {
        let row = out.get_mut(m * pitch..m * pitch + q_len)?;
        let w = wts.get(m * taps..(m + 1) * taps)?;
        for (t, (&off, &wv)) in offs.iter().zip(w).enumerate() {
            let x = src.get(off..off + q_len)?;
            if t == 0 {
                for (o, &xv) in row.iter_mut().zip(x) {
                    *o = wv * xv;
                }
            } else {
                for (o, &xv) in row.iter_mut().zip(x) {
                    *o += wv * xv;
                }
            }
        }
        if taps == 0 {
            row.fill(<T as Float>::ZERO);
        }
    }
    Some(())
}

/// [`correlate_rows`] run under the widest instruction set the CPU has.
#[allow(clippy::too_many_arguments)]
fn correlate<T: DirectScalar>(
    src: &[T],
    offs: &[usize],
    wts: &[T],
    m_total: usize,
    out: &mut [T],
    pitch: usize,
    q_len: usize,
) -> Option<()> {
    dispatch(
        #[inline(always)]
        || correlate_rows(src, offs, wts, m_total, out, pitch, q_len),
    )
}

/// `sum over q < q_len of a[q] * b[q]` with [`LANES`] independent partial sums (so the loop
/// vectorizes); `q_len` is a multiple of [`LANES`].
#[inline(always)]
fn dot<T: DirectScalar>(a: &[T], b: &[T]) -> T {
    let mut acc = [<T as Float>::ZERO; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s = <T as Float>::ZERO;
    for v in acc {
        s += v;
    }
    s
}

/// Per-task buffers of the direct kernels; the zero padding of `pad` and `gy` is written once
/// and never overwritten.
pub(crate) struct Direct<T> {
    flat: Flat,
    pad: Vec<T>,
    gy: Vec<T>,
    gy_key: (usize, usize, usize),
    out: Vec<T>,
}

impl<T: DirectScalar> Direct<T> {
    pub(crate) fn new(g: &ConvGeom) -> Direct<T> {
        Direct {
            flat: Flat::new(g),
            pad: Vec::new(),
            gy: Vec::new(),
            gy_key: (0, 0, 0),
            out: Vec::new(),
        }
    }

    /// Copies channels `c0..c0 + channels` of an unpadded `[C, H, W]` sample into the padded
    /// planes of `self.pad` (sized on first use with room for a tile's overrun).
    fn load_padded(&mut self, g: &ConvGeom, x: &[T], channels: usize) -> Option<()> {
        let f = self.flat;
        let [ph, pw] = g.params.padding;
        let len = channels * f.plane + f.q_tiles + LANES;
        if self.pad.len() != len {
            self.pad = vec![<T as Float>::ZERO; len];
        }
        for c in 0..channels {
            for y in 0..g.h {
                let to = c * f.plane + (y + ph) * f.wp + pw;
                let from = (c * g.h + y) * g.w;
                self.pad
                    .get_mut(to..to + g.w)?
                    .copy_from_slice(x.get(from..from + g.w)?);
            }
        }
        Some(())
    }

    /// Tap offsets `(c, ki, kj)` into the padded planes, in weight order.
    fn forward_offsets(&self, g: &ConvGeom) -> Vec<usize> {
        let f = self.flat;
        let [dh, dw] = g.params.dilation;
        let mut offs = Vec::with_capacity(g.kg());
        for c in 0..g.cg() {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    offs.push(c * f.plane + ki * dh * f.wp + kj * dw);
                }
            }
        }
        offs
    }

    /// Forward convolution of one sample's group `x_g` `[C/g, H, W]` with `w_g`
    /// `[O/g, C/g*kh*kw]`, written (`+=` when `accumulate`) to `out_g` `[O/g, oh, ow]`.
    pub(crate) fn forward(
        &mut self,
        g: &ConvGeom,
        x_g: &[T],
        w_g: &[T],
        out_g: &mut [T],
        accumulate: bool,
    ) -> Result<()> {
        self.forward_inner(g, x_g, w_g, out_g, accumulate)
            .ok_or_else(|| internal(g))
    }

    fn forward_inner(
        &mut self,
        g: &ConvGeom,
        x_g: &[T],
        w_g: &[T],
        out_g: &mut [T],
        accumulate: bool,
    ) -> Option<()> {
        let f = self.flat;
        self.load_padded(g, x_g, g.cg())?;
        let offs = self.forward_offsets(g);
        self.out.resize(g.og() * f.q_tiles, <T as Float>::ZERO);
        correlate(
            &self.pad,
            &offs,
            w_g,
            g.og(),
            &mut self.out,
            f.q_tiles,
            f.q_tiles,
        )?;
        for (o, plane) in out_g.chunks_exact_mut(g.p()).enumerate() {
            for (y, row) in plane.chunks_exact_mut(g.ow).enumerate() {
                let from = o * f.q_tiles + y * f.wp;
                let src = self.out.get(from..from + g.ow)?;
                if accumulate {
                    for (d, &s) in row.iter_mut().zip(src) {
                        *d += s;
                    }
                } else {
                    row.copy_from_slice(src);
                }
            }
        }
        Some(())
    }

    /// Copies one sample's output gradient `[O/g, oh, ow]` onto the padded width in
    /// `self.gy`: `rows` (at least O/g) planes of `pitch`, each starting after `front` zeros.
    /// The buffer is zeroed only when this layout changes, since the zeros are never
    /// overwritten.
    fn load_grad(&mut self, g: &ConvGeom, gy: &[T], rows: usize, front: usize, pitch: usize) {
        let key = (rows.max(g.og()), front, pitch);
        if self.gy_key != key {
            self.gy = vec![<T as Float>::ZERO; key.0 * pitch];
            self.gy_key = key;
        }
        let wp = self.flat.wp;
        for (o, plane) in gy.chunks_exact(g.p()).take(rows).enumerate() {
            for (y, row) in plane.chunks_exact(g.ow).enumerate() {
                let to = o * pitch + front + y * wp;
                if let Some(d) = self.gy.get_mut(to..to + g.ow) {
                    d.copy_from_slice(row);
                }
            }
        }
    }

    /// Input gradient of one sample's group: `gy_g` `[O/g, oh, ow]` and `w_g`
    /// `[O/g, C/g, kh, kw]` give `dx_g` `[C/g, H, W]` (overwritten).
    pub(crate) fn input_grad(
        &mut self,
        g: &ConvGeom,
        gy_g: &[T],
        w_g: &[T],
        dx_g: &mut [T],
    ) -> Result<()> {
        self.input_grad_inner(g, gy_g, w_g, dx_g)
            .ok_or_else(|| internal(g))
    }

    fn input_grad_inner(
        &mut self,
        g: &ConvGeom,
        gy_g: &[T],
        w_g: &[T],
        dx_g: &mut [T],
    ) -> Option<()> {
        let f = self.flat;
        let [ph, pw] = g.params.padding;
        let [dh, dw] = g.params.dilation;
        let (og, cg, khw) = (g.og(), g.cg(), g.kh * g.kw);
        // Padded position `pos` of input channel c gathers tap (o, ki, kj) from output
        // position `pos - ki*dh*wp - kj*dw`; `front` zeros stand for negative positions.
        let front = (g.kh - 1) * dh * f.wp + (g.kw - 1) * dw;
        let start = ph * f.wp + pw;
        let q_len = ((g.h - 1) * f.wp + g.w).div_ceil(TILE) * TILE;
        let pitch = front + (start + q_len).max(f.plane) + LANES;
        self.load_grad(g, gy_g, og, front, pitch);
        let mut offs = Vec::with_capacity(og * khw);
        for o in 0..og {
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    offs.push(o * pitch + front + start - ki * dh * f.wp - kj * dw);
                }
            }
        }
        // Weights as `[C/g, O/g*kh*kw]`.
        let mut wt = Vec::with_capacity(cg * og * khw);
        for c in 0..cg {
            for o in 0..og {
                let from = (o * cg + c) * khw;
                wt.extend_from_slice(w_g.get(from..from + khw)?);
            }
        }
        self.out.resize(cg * q_len, <T as Float>::ZERO);
        correlate(&self.gy, &offs, &wt, cg, &mut self.out, q_len, q_len)?;
        for (c, plane) in dx_g.chunks_exact_mut(g.h * g.w).enumerate() {
            for (y, row) in plane.chunks_exact_mut(g.w).enumerate() {
                let from = c * q_len + y * f.wp;
                row.copy_from_slice(self.out.get(from..from + g.w)?);
            }
        }
        Some(())
    }

    /// Adds the weight gradient of one sample's group (`x_g` `[C/g, H, W]`, `gy_g`
    /// `[O/g, oh, ow]`) to the lane accumulators `acc`, laid out by [`WgradAcc`].
    pub(crate) fn weight_grad(
        &mut self,
        g: &ConvGeom,
        x_g: &[T],
        gy_g: &[T],
        acc: &mut WgradAcc<T>,
    ) -> Result<()> {
        self.weight_grad_inner(g, x_g, gy_g, acc)
            .ok_or_else(|| internal(g))
    }

    fn weight_grad_inner(
        &mut self,
        g: &ConvGeom,
        x_g: &[T],
        gy_g: &[T],
        acc: &mut WgradAcc<T>,
    ) -> Option<()> {
        let f = self.flat;
        self.load_padded(g, x_g, g.cg())?;
        let q_len = f.q.div_ceil(LANES) * LANES;
        self.load_grad(g, gy_g, g.og(), 0, q_len);
        let offs = self.forward_offsets(g);
        let (gy, pad, kg) = (&self.gy, &self.pad, g.kg());
        dispatch(
            #[inline(always)]
            || {
                for (o, row) in acc.sums.chunks_exact_mut(kg).enumerate() {
                    let gr = gy.get(o * q_len..(o + 1) * q_len)?;
                    for (d, &off) in row.iter_mut().zip(&offs) {
                        *d += dot(gr, pad.get(off..off + q_len)?);
                    }
                }
                Some(())
            },
        )
    }
}

/// One group's weight gradient summed over a task's samples, `[O/g, C/g*kh*kw]`.
pub(crate) struct WgradAcc<T> {
    sums: Vec<T>,
}

impl<T: DirectScalar> WgradAcc<T> {
    /// Zeroed sums for the geometry's `O/g x C/g*kh*kw` gradient.
    pub(crate) fn new(g: &ConvGeom) -> WgradAcc<T> {
        WgradAcc {
            sums: vec![<T as Float>::ZERO; g.og() * g.kg()],
        }
    }

    /// Adds the sums into `dw_g` `[O/g, C/g*kh*kw]`.
    pub(crate) fn add_to(&self, dw_g: &mut [T]) {
        for (d, &s) in dw_g.iter_mut().zip(&self.sums) {
            *d += s;
        }
    }
}

fn internal(g: &ConvGeom) -> Error {
    Error::invalid(
        "conv2d",
        format!("direct kernel buffers do not match the geometry {g:?}"),
    )
}
