//! Direct (im2col-free) kernels for stride-1 convolutions with few channels per group, such
//! as LeNet's 1->6 and 6->16 5x5 layers.
//!
//! The trick: copy one group's image into a zero-padded `[C/g, hp, wp]` buffer and number the
//! output positions on the padded width, `q = y * wp + x`. With stride 1, tap `(c, ki, kj)` of
//! output `q` reads padded element `c*hp*wp + ki*dh*wp + kj*dw + q`, so for every tap the
//! inputs of consecutive outputs are consecutive: the convolution is a sum of shifted,
//! scaled copies of one buffer ([`correlate`]), computed in register tiles of 32 outputs by
//! up to 8 output channels. The positions with `x >= ow` are computed and thrown away (the
//! price of the layout: 12% for LeNet's conv1, 28% for conv2), but nothing is packed or laid
//! out as columns, and the whole working set of one sample stays in L1.
//!
//! The input gradient is the same correlation run backwards (zero-padded output gradient,
//! negative tap offsets, weights transposed), the weight gradient a set of dot products
//! between output-gradient rows and shifted input rows ([`dot_block`]).

use super::super::matmul::GemmScalar;
use super::super::simd::dispatch;
use super::ConvGeom;
use crate::{Error, Float, Result};

/// Outputs per register tile.
const TILE: usize = 32;
/// Lanes of the weight-gradient accumulators.
const LANES: usize = 16;
/// Output-channel and tap blocks of the weight gradient.
const WG_O: usize = 4;
const WG_T: usize = 4;

/// Scalars of the convolution kernels: `f32` and `f64` (the half types are computed in `f32`
/// by the tensor ops), with a fused multiply-add.
pub trait DirectScalar: GemmScalar + Float {
    /// `a * b + c`, fused.
    fn fma(a: Self, b: Self, c: Self) -> Self;
}
impl DirectScalar for f32 {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}
impl DirectScalar for f64 {
    #[inline(always)]
    fn fma(a: f64, b: f64, c: f64) -> f64 {
        a.mul_add(b, c)
    }
}

/// `a * b + c`: fused where the CPU has FMA (`mul_add` without the instruction is a slow
/// library call), separately otherwise.
#[inline(always)]
fn madd<T: DirectScalar, const FUSED: bool>(a: T, b: T, c: T) -> T {
    if FUSED {
        T::fma(a, b, c)
    } else {
        a * b + c
    }
}

fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

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

/// `out[m * pitch + q] = sum over t of wts[t * M + m] * src[offs[t] + q]` for `m < M` and
/// `q < q_len`, with `q_len` a multiple of [`TILE`]; `wts` holds the `M` weights of each tap
/// next to each other. Fails (instead of panicking) if a read or write would leave a slice.
fn correlate_block<T: DirectScalar, const M: usize, const FUSED: bool>(
    src: &[T],
    offs: &[usize],
    wts: &[T],
    out: &mut [T],
    pitch: usize,
    q_len: usize,
) -> Option<()> {
    for q0 in (0..q_len).step_by(TILE) {
        let mut acc = [[<T as Float>::ZERO; TILE]; M];
        for (&off, w) in offs.iter().zip(wts.chunks_exact(M)) {
            let w: &[T; M] = w.try_into().ok()?;
            let x: &[T; TILE] = src.get(off + q0..off + q0 + TILE)?.try_into().ok()?;
            for (a, &wv) in acc.iter_mut().zip(w) {
                for (a, &xv) in a.iter_mut().zip(x) {
                    *a = madd::<T, FUSED>(wv, xv, *a);
                }
            }
        }
        for (m, a) in acc.iter().enumerate() {
            out.get_mut(m * pitch + q0..m * pitch + q0 + TILE)?
                .copy_from_slice(a);
        }
    }
    Some(())
}

/// [`correlate_block`] for any number of rows `m_total` (blocks of up to 8): `wts` is
/// `[m_total, taps]` row-major and is repacked per block into `packed`.
#[allow(clippy::too_many_arguments)]
fn correlate<T: DirectScalar>(
    src: &[T],
    offs: &[usize],
    wts: &[T],
    m_total: usize,
    out: &mut [T],
    pitch: usize,
    q_len: usize,
    packed: &mut Vec<T>,
    fused: bool,
) -> Option<()> {
    let taps = offs.len();
    let mut m0 = 0;
    while m0 < m_total {
        let mb = (m_total - m0).min(8);
        packed.clear();
        for t in 0..taps {
            for m in m0..m0 + mb {
                packed.push(*wts.get(m * taps + t)?);
            }
        }
        let out = out.get_mut(m0 * pitch..)?;
        macro_rules! run {
            ($($n:literal)*) => {
                match (mb, fused) {
                    $(
                        ($n, true) => dispatch(
                            #[inline(always)]
                            || correlate_block::<T, $n, true>(src, offs, packed, out, pitch, q_len),
                        ),
                        ($n, false) => dispatch(
                            #[inline(always)]
                            || correlate_block::<T, $n, false>(src, offs, packed, out, pitch, q_len),
                        ),
                    )*
                    _ => None,
                }?
            };
        }
        run!(1 2 3 4 5 6 7 8);
        m0 += mb;
    }
    Some(())
}

/// Adds `acc[o][t][lane] += sum over q of gy[o * pitch + q] * src[offs[t] + q]` for one block
/// of [`WG_O`] gradient rows and [`WG_T`] taps, `q < q_len` (a multiple of [`LANES`]).
#[inline(always)]
fn dot_block<T: DirectScalar, const FUSED: bool>(
    gy: &[T],
    pitch: usize,
    src: &[T],
    offs: &[usize; WG_T],
    q_len: usize,
    acc: &mut [[[T; LANES]; WG_T]; WG_O],
) -> Option<()> {
    let mut a = *acc;
    for q0 in (0..q_len).step_by(LANES) {
        let mut gv = [[<T as Float>::ZERO; LANES]; WG_O];
        for (o, g) in gv.iter_mut().enumerate() {
            *g = gy
                .get(o * pitch + q0..o * pitch + q0 + LANES)?
                .try_into()
                .ok()?;
        }
        for (t, &off) in offs.iter().enumerate() {
            let x: &[T; LANES] = src.get(off + q0..off + q0 + LANES)?.try_into().ok()?;
            for (ao, g) in a.iter_mut().zip(&gv) {
                for ((l, &gl), &xl) in ao[t].iter_mut().zip(g).zip(x) {
                    *l = madd::<T, FUSED>(gl, xl, *l);
                }
            }
        }
    }
    *acc = a;
    Some(())
}

/// Per-task buffers of the direct kernels; the zero padding of `pad` and `gy` is written once
/// and never overwritten.
pub(crate) struct Direct<T> {
    flat: Flat,
    pad: Vec<T>,
    gy: Vec<T>,
    gy_key: (usize, usize, usize),
    out: Vec<T>,
    packed: Vec<T>,
    fused: bool,
}

impl<T: DirectScalar> Direct<T> {
    pub(crate) fn new(g: &ConvGeom) -> Direct<T> {
        Direct {
            flat: Flat::new(g),
            pad: Vec::new(),
            gy: Vec::new(),
            gy_key: (0, 0, 0),
            out: Vec::new(),
            packed: Vec::new(),
            fused: has_fma(),
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
            &mut self.packed,
            self.fused,
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
        correlate(
            &self.gy,
            &offs,
            &wt,
            cg,
            &mut self.out,
            q_len,
            q_len,
            &mut self.packed,
            self.fused,
        )?;
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
        let rows = acc.o_blocks * WG_O;
        // Rows past O/g stay zero.
        self.load_grad(g, gy_g, rows, 0, q_len);
        let mut offs = self.forward_offsets(g);
        offs.resize(acc.t_blocks * WG_T, 0);
        let fused = self.fused;
        for ob in 0..acc.o_blocks {
            let gy = self.gy.get(ob * WG_O * q_len..)?;
            for (tb, to) in offs.chunks_exact(WG_T).enumerate() {
                let to: &[usize; WG_T] = to.try_into().ok()?;
                let a = acc.blocks.get_mut(ob * acc.t_blocks + tb)?;
                let pad = &self.pad;
                if fused {
                    dispatch(
                        #[inline(always)]
                        || dot_block::<T, true>(gy, q_len, pad, to, q_len, a),
                    )?;
                } else {
                    dispatch(
                        #[inline(always)]
                        || dot_block::<T, false>(gy, q_len, pad, to, q_len, a),
                    )?;
                }
            }
        }
        Some(())
    }
}

/// Lane-wise partial sums of one group's weight gradient: blocks of [`WG_O`] output channels
/// by [`WG_T`] taps, each a vector of [`LANES`] partial sums.
pub(crate) struct WgradAcc<T> {
    o_blocks: usize,
    t_blocks: usize,
    blocks: Vec<[[[T; LANES]; WG_T]; WG_O]>,
}

impl<T: DirectScalar> WgradAcc<T> {
    /// Zeroed sums for the geometry's `O/g x C/g*kh*kw` gradient.
    pub(crate) fn new(g: &ConvGeom) -> WgradAcc<T> {
        let (o_blocks, t_blocks) = (g.og().div_ceil(WG_O), g.kg().div_ceil(WG_T));
        WgradAcc {
            o_blocks,
            t_blocks,
            blocks: vec![[[[<T as Float>::ZERO; LANES]; WG_T]; WG_O]; o_blocks * t_blocks],
        }
    }

    /// Adds the sums into `dw_g` `[O/g, C/g*kh*kw]`.
    pub(crate) fn add_to(&self, g: &ConvGeom, dw_g: &mut [T]) {
        let kg = g.kg();
        for (o, row) in dw_g.chunks_exact_mut(kg).enumerate() {
            for (t, d) in row.iter_mut().enumerate() {
                if let Some(b) = self.blocks.get((o / WG_O) * self.t_blocks + t / WG_T) {
                    let lanes = &b[o % WG_O][t % WG_T];
                    let mut s = <T as Float>::ZERO;
                    for &l in lanes {
                        s += l;
                    }
                    *d += s;
                }
            }
        }
    }
}

fn internal(g: &ConvGeom) -> Error {
    Error::invalid(
        "conv2d",
        format!("direct kernel buffers do not match the geometry {g:?}"),
    )
}
