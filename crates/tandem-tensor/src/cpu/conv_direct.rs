//! Direct kernels for stride-1 `f32` convolutions on AVX-512: the products read the
//! zero-padded image in place instead of a column matrix.
//!
//! With stride 1, output `(y, x)` of a convolution reads the padded image at
//! `(c, y + ki*dh, x + kj*dw)`. Numbering the outputs over rows as wide as the padded image
//! (`i = y * wp + x`), the column-matrix row of tap `k = (c, ki, kj)` is the contiguous run of
//! the flattened padded image that starts at `off(k) = (c*hp + ki*dh)*wp + kj*dw`. So the
//! kernels need no im2col: a register tile of up to 8 output channels by up to 4 vectors of 16
//! positions loads its image vectors straight from the padded image for each tap and
//! multiplies them by broadcast weights. The vectors run either over the padded rows, where
//! the `wp - ow` positions past the end of each output row are computed and dropped when
//! stored, or one output row at a time, with the lanes past `ow` dropped; the weight gradient
//! runs over the padded rows with zeros in the output gradient there. [`worthwhile`] keeps
//! that waste bounded.
//!
//! The input gradient of a stride-1 convolution is itself a stride-1 convolution (of the
//! output gradient, padded by `(k-1)*d - p`, with the weight flipped and its channel axes
//! swapped), so it runs on the forward kernel.
//!
//! For LeNet-5's convolutions at batch 64 these kernels replace im2col + `gemm`, whose
//! products of 6 or 16 output channels by 25 or 150 taps are far from the `gemm` crate's
//! best shapes.

use super::conv::ConvGeom;
use super::par;
use super::simd::avx512 as available;
use crate::{Error, Result};

/// `f32` lanes of one AVX-512 vector.
const L: usize = 16;
/// Output channels per weight-gradient tile.
const MR: usize = 6;
/// Most vectors of positions per forward tile (24 accumulators with 6 channels; 3 with 8).
const NR: usize = 4;
/// Taps per weight-gradient tile (`MR * NK` accumulators).
const NK: usize = 4;
/// Tasks per pool thread for a parallel loop over the samples.
const TASKS_PER_THREAD: usize = 4;
/// Bytes of padded images and output gradients a weight-gradient task prepares at a time.
const WGRAD_CHUNK_BYTES: usize = 1 << 18;

/// Whether the direct kernels run `g` on this CPU, and beat im2col + `gemm` there: `f32`
/// stride-1 convolutions that are not pointwise (those need no column matrix anyway), on
/// AVX-512, with at most twice the useful positions computed per plane (the padded width is
/// the row length). For the input gradient the padding must not exceed the dilated kernel
/// extent minus one (else the transposed convolution would need negative padding).
pub(crate) fn worthwhile(g: &ConvGeom, input_grad: bool) -> bool {
    if !available() || g.params.stride != [1, 1] || g.kh * g.kw == 1 {
        return false;
    }
    // Empty planes (an input of height or width 0 that padding turns into outputs) have
    // nothing to tile; the general path handles them.
    if g.h * g.w * g.oh * g.ow == 0 {
        return false;
    }
    let plan = Plan::forward(g);
    if plan.slots.len() * L > 2 * g.oh * g.ow {
        return false;
    }
    if input_grad {
        let [dh, dw] = g.params.dilation;
        let [ph, pw] = g.params.padding;
        if ph > (g.kh - 1) * dh || pw > (g.kw - 1) * dw {
            return false;
        }
        if Plan::transposed(g).slots.len() * L > 2 * g.h * g.w {
            return false;
        }
    }
    true
}

/// One stride-1 convolution as the kernels see it: `groups` groups of `cin` input planes
/// `h x w`, padded to `hp x wp`, to `cout` output planes `oh x ow` each.
#[derive(Clone, Debug)]
struct Plan {
    groups: usize,
    cin: usize,
    h: usize,
    w: usize,
    ph: usize,
    pw: usize,
    hp: usize,
    wp: usize,
    cout: usize,
    /// Output channels per forward tile: 8, 6, 4 or 2, whichever pads `cout` least.
    mr: usize,
    /// `cout` rounded up to a multiple of `mr`.
    cout_pad: usize,
    oh: usize,
    ow: usize,
    /// Start of each tap's run in a group's padded image, `cin * kh * kw` of them.
    offs: Vec<usize>,
    /// Positions computed per output plane: `(oh - 1) * wp + ow` rounded up to [`L`].
    np: usize,
    /// The vectors of positions the forward kernel computes (see [`Slot`]).
    slots: Vec<Slot>,
    /// Whether `slots` run over the padded rows (outputs stored by compressing out the
    /// positions past each row's end) rather than one output row at a time.
    compress: bool,
    /// Elements of one group's padded image buffer: the image plus the slack the last tap
    /// reads past it (zeros).
    img_len: usize,
}

impl Plan {
    #[allow(clippy::too_many_arguments)]
    fn new(
        groups: usize,
        cin: usize,
        [h, w]: [usize; 2],
        [ph, pw]: [usize; 2],
        [kh, kw]: [usize; 2],
        [dh, dw]: [usize; 2],
        cout: usize,
    ) -> Plan {
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let (oh, ow) = (hp + 1 - (dh * (kh - 1) + 1), wp + 1 - (dw * (kw - 1) + 1));
        let mut offs = Vec::with_capacity(cin * kh * kw);
        for c in 0..cin {
            for ki in 0..kh {
                for kj in 0..kw {
                    offs.push((c * hp + ki * dh) * wp + kj * dw);
                }
            }
        }
        let np = ((oh - 1) * wp + ow).div_ceil(L) * L;
        // Vectors over the padded rows, or per output row (a vector's lanes past `ow`
        // masked off): whichever computes fewer vectors, per row on a tie (plain masked
        // stores instead of compressing ones).
        let per_row = ow.div_ceil(L);
        let compress = np / L < oh * per_row;
        let slots: Vec<Slot> = if compress {
            let end = (oh - 1) * wp + ow;
            (0..np / L)
                .map(|v| {
                    let i = v * L;
                    let mut mask = 0u16;
                    for l in 0..L {
                        if i + l < end && (i + l) % wp < ow {
                            mask |= 1 << l;
                        }
                    }
                    Slot {
                        pos: i,
                        start: (i / wp) * ow + (i % wp).min(ow),
                        mask,
                    }
                })
                .collect()
        } else {
            (0..oh)
                .flat_map(|y| {
                    (0..per_row).map(move |v| {
                        let x = v * L;
                        let n = (ow - x).min(L);
                        Slot {
                            pos: y * wp + x,
                            start: y * ow + x,
                            mask: if n == L { u16::MAX } else { (1u16 << n) - 1 },
                        }
                    })
                })
                .collect()
        };
        let max_pos = slots.iter().map(|s| s.pos).max().unwrap_or(0);
        let last = offs.last().copied().unwrap_or(0);
        // Fewest padded channels; among equals the taller tile.
        let mr = [8, 6, 4, 2]
            .into_iter()
            .min_by_key(|&m| (cout.div_ceil(m) * m, usize::MAX - m))
            .unwrap_or(MR);
        Plan {
            groups,
            cin,
            h,
            w,
            ph,
            pw,
            hp,
            wp,
            cout,
            mr,
            cout_pad: cout.div_ceil(mr) * mr,
            oh,
            ow,
            img_len: (cin * hp * wp).max(last + np).max(last + max_pos + L),
            slots,
            compress,
            offs,
            np,
        }
    }

    /// The forward convolution of `g` (stride 1).
    fn forward(g: &ConvGeom) -> Plan {
        let groups = g.params.groups;
        Plan::new(
            groups,
            g.c / groups,
            [g.h, g.w],
            g.params.padding,
            [g.kh, g.kw],
            g.params.dilation,
            g.o / groups,
        )
    }

    /// The input gradient of `g` as a convolution of the output gradient.
    fn transposed(g: &ConvGeom) -> Plan {
        let groups = g.params.groups;
        let [dh, dw] = g.params.dilation;
        let [ph, pw] = g.params.padding;
        Plan::new(
            groups,
            g.o / groups,
            [g.oh, g.ow],
            [(g.kh - 1) * dh - ph, (g.kw - 1) * dw - pw],
            [g.kh, g.kw],
            g.params.dilation,
            g.c / groups,
        )
    }

    /// Output-gradient rows per group in the weight gradient: `cout` rounded up to [`MR`].
    fn cout_wgrad(&self) -> usize {
        self.cout.div_ceil(MR) * MR
    }

    fn taps(&self) -> usize {
        self.offs.len()
    }

    /// Copies the `cin` planes `h x w` of one group into the interior of the zero-padded
    /// image `img` (whose border and slack stay zero from allocation).
    fn pad_into(&self, x: &[f32], img: &mut [f32]) {
        for c in 0..self.cin {
            for y in 0..self.h {
                let from = (c * self.h + y) * self.w;
                let to = (c * self.hp + y + self.ph) * self.wp + self.pw;
                img[to..to + self.w].copy_from_slice(&x[from..from + self.w]);
            }
        }
    }

    /// Packs the weights as `[group][cout_pad / mr][tap][mr]` (zeros past `cout`), where
    /// `weight(group, out_channel, tap)` reads the convolution's weight.
    fn pack(&self, weight: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
        let k = self.taps();
        let mut packed = vec![0.0; self.groups * self.cout_pad * k];
        let mr = self.mr;
        for (i, v) in packed.iter_mut().enumerate() {
            let r = i % mr;
            let tap = (i / mr) % k;
            let block = i / (mr * k);
            let (grp, o) = (
                block / (self.cout_pad / mr),
                (block % (self.cout_pad / mr)) * mr + r,
            );
            if o < self.cout {
                *v = weight(grp, o, tap);
            }
        }
        packed
    }
}

/// Forward convolution (stride 1) into the contiguous `[N, O, oh, ow]` output `out`, plus
/// `bias`, then relu when `relu` is set (each sample right after its tiles). The caller checked the buffer lengths against `g` and [`worthwhile`].
pub(crate) fn forward(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeom,
    out: &mut [f32],
    relu: bool,
) -> Result<()> {
    let plan = Plan::forward(g);
    let k = plan.taps();
    let packed = plan.pack(|grp, o, tap| weight[(grp * plan.cout + o) * k + tap]);
    let in_sample = g.c * g.h * g.w;
    run_forward(
        &plan,
        &packed,
        g.n,
        out,
        |s| &x[s * in_sample..(s + 1) * in_sample],
        bias,
        relu,
    )
}

/// Input gradient (stride 1) into the contiguous `[N, C, H, W]` `dx`, as the forward
/// convolution of `grad_out` with the flipped, channel-swapped weight.
pub(crate) fn input_grad(
    grad_out: &[f32],
    weight: &[f32],
    g: &ConvGeom,
    dx: &mut [f32],
) -> Result<()> {
    let plan = Plan::transposed(g);
    let (og, cg, kh, kw) = (g.o / g.params.groups, g.c / g.params.groups, g.kh, g.kw);
    // Tap `(o, ki, kj)` of input channel `c` reads `weight[o, c, kh-1-ki, kw-1-kj]`.
    let packed = plan.pack(|grp, c, tap| {
        let (o, kk) = (tap / (kh * kw), tap % (kh * kw));
        let (ki, kj) = (kk / kw, kk % kw);
        weight[(((grp * og + o) * cg + c) * kh + (kh - 1 - ki)) * kw + (kw - 1 - kj)]
    });
    let out_sample = g.o * g.oh * g.ow;
    run_forward(
        &plan,
        &packed,
        g.n,
        dx,
        |s| &grad_out[s * out_sample..(s + 1) * out_sample],
        None,
        false,
    )
}

/// Tasks for a loop over `n` samples doing `work` multiply-adds: one below 2^16 (or with one
/// thread), else several per pool thread: they are claimed one by one, so a helper thread
/// that wakes late takes fewer of them instead of holding up the whole op.
fn sample_tasks(n: usize, work: usize) -> usize {
    let threads = rayon::current_num_threads();
    if n >= 2 && threads > 1 && work >= 1 << 16 {
        (threads * TASKS_PER_THREAD).min(n)
    } else {
        1
    }
}

/// Runs the forward kernel of `plan` over `n` samples (`input(s)` is sample `s`), in
/// parallel over the samples when there is enough work.
fn run_forward<'a>(
    plan: &Plan,
    packed: &[f32],
    n: usize,
    out: &mut [f32],
    input: impl Fn(usize) -> &'a [f32] + Sync,
    bias: Option<&[f32]>,
    relu: bool,
) -> Result<()> {
    let plane = plan.oh * plan.ow;
    let out_sample = plan.groups * plan.cout * plane;
    let in_sample = plan.groups * plan.cin * plan.h * plan.w;
    let bias_ok = bias.is_none_or(|b| b.len() == plan.groups * plan.cout);
    if out.len() != n * out_sample || (n > 0 && input(0).len() != in_sample) || !bias_ok {
        return Err(Error::invalid(
            "conv2d",
            format!("direct kernel buffers do not match the geometry {plan:?}"),
        ));
    }
    if out_sample == 0 {
        return Ok(());
    }
    // Bias per output channel, padded to whole tiles with zeros.
    let mut bias_pad = vec![0.0f32; plan.groups * plan.cout_pad];
    if let Some(b) = bias {
        for grp in 0..plan.groups {
            bias_pad[grp * plan.cout_pad..][..plan.cout]
                .copy_from_slice(&b[grp * plan.cout..(grp + 1) * plan.cout]);
        }
    }
    let tasks = sample_tasks(n, n * out_sample * plan.taps());
    let per_task = n.div_ceil(tasks);
    par::for_each_chunk(out, per_task * out_sample, |t, chunk| {
        let mut img = vec![0.0f32; plan.img_len];
        for (i, out_n) in chunk.chunks_exact_mut(out_sample).enumerate() {
            let x_n = input(t * per_task + i);
            for grp in 0..plan.groups {
                let cin_len = plan.cin * plan.h * plan.w;
                plan.pad_into(&x_n[grp * cin_len..(grp + 1) * cin_len], &mut img);
                let block = plan.cout_pad * plan.taps();
                let out_g = &mut out_n[grp * plan.cout * plane..(grp + 1) * plan.cout * plane];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `img` holds `img_len >= off + np` elements for every tap offset,
                // the packed weights `cout_pad * taps` per group and the biases `cout_pad`,
                // `out_g` `cout` planes of `oh * ow`, which the plan's slots address;
                // `available()` found AVX-512 (checked by `worthwhile`).
                unsafe {
                    forward_tiles(
                        plan,
                        &img,
                        &packed[grp * block..(grp + 1) * block],
                        &bias_pad[grp * plan.cout_pad..(grp + 1) * plan.cout_pad],
                        out_g,
                    );
                }
            }
            if relu {
                super::conv::relu_in_place(out_n);
            }
        }
    });
    Ok(())
}

/// All register tiles of one group: output `o` at position `i` is
/// `bias[o] + sum over taps of w[o, tap] * img[off(tap) + i]`, stored (without the positions
/// past each row's end) into the `[cout, oh * ow]` planes `out`.
///
/// # Safety
/// The CPU has AVX-512F; `img.len() >= off + np` for every offset of `plan`,
/// `w.len() == cout_pad * taps`, `bias.len() == cout_pad`, `out.len() == cout * oh * ow`,
/// and `img.len() >= off + pos + L` for every offset and slot of `plan`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn forward_tiles(plan: &Plan, img: &[f32], w: &[f32], bias: &[f32], out: &mut [f32]) {
    let k = plan.taps();
    let plane = plan.oh * plan.ow;
    debug_assert!(plan.offs.iter().all(|&o| o + plan.np <= img.len()));
    debug_assert!(plan
        .slots
        .iter()
        .all(|s| plan.offs.iter().all(|&o| o + s.pos + L <= img.len())));
    debug_assert_eq!(w.len(), plan.cout_pad * k);
    debug_assert_eq!(out.len(), plan.cout * plane);
    let vectors = plan.slots.len();
    let mr = plan.mr;
    let nr_max = if mr == 8 { 3 } else { NR };
    let mut v = 0;
    while v < vectors {
        let nr = (vectors - v).min(nr_max);
        for ob in 0..plan.cout_pad / mr {
            let tile = Tile {
                src: img.as_ptr(),
                offs: &plan.offs,
                w: w[ob * k * mr..].as_ptr(),
                bias: bias[ob * mr..].as_ptr(),
                dst: out.as_mut_ptr().wrapping_add(ob * mr * plane),
                plane,
                rows: (plan.cout - ob * mr).min(mr),
                slots: &plan.slots[v..v + nr],
                compress: plan.compress,
            };
            // SAFETY: tile `(ob, v..v + nr)` reads `img[off + pos .. off + pos + L]` for its
            // slots' positions, weights `ob * k * mr ..+ k * mr` of `w`, biases
            // `ob * mr ..+ mr`, and writes the masked positions of its `rows` valid channel
            // planes of `out` (the function's contract); the CPU has AVX-512F (likewise).
            unsafe {
                match (mr, nr) {
                    (8, 3) => forward_tile::<8, 3>(&tile),
                    (8, 2) => forward_tile::<8, 2>(&tile),
                    (8, _) => forward_tile::<8, 1>(&tile),
                    (6, 4) => forward_tile::<6, 4>(&tile),
                    (6, 3) => forward_tile::<6, 3>(&tile),
                    (6, 2) => forward_tile::<6, 2>(&tile),
                    (6, _) => forward_tile::<6, 1>(&tile),
                    (4, 4) => forward_tile::<4, 4>(&tile),
                    (4, 3) => forward_tile::<4, 3>(&tile),
                    (4, 2) => forward_tile::<4, 2>(&tile),
                    (4, _) => forward_tile::<4, 1>(&tile),
                    (_, 4) => forward_tile::<2, 4>(&tile),
                    (_, 3) => forward_tile::<2, 3>(&tile),
                    (_, 2) => forward_tile::<2, 2>(&tile),
                    (_, _) => forward_tile::<2, 1>(&tile),
                }
            }
        }
        v += nr;
    }
}

/// One register tile of [`forward_tiles`].
struct Tile<'a> {
    /// The padded image.
    src: *const f32,
    /// Tap offsets into `src`.
    offs: &'a [usize],
    /// `[tap][M]` weights of the tile's channels.
    w: *const f32,
    /// `M` biases.
    bias: *const f32,
    /// The output plane of the tile's first channel.
    dst: *mut f32,
    /// Elements per output plane.
    plane: usize,
    /// Channels of the tile that exist (the rest are padding).
    rows: usize,
    /// The tile's vectors of positions.
    slots: &'a [Slot],
    /// Whether a vector's output lanes are compressed together on store (else they are a
    /// prefix of the vector).
    compress: bool,
}

/// One vector of 16 positions of an output plane, numbered over the padded rows.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Position of the first lane (`y * wp + x`).
    pos: usize,
    /// Output index `y * ow + x` of the first output lane.
    start: usize,
    /// The lanes that are outputs.
    mask: u16,
}

/// One `M x N` tile of [`forward_tiles`]: `M` output channels by `N` vectors of positions.
///
/// # Safety
/// The CPU has AVX-512F; `src + off + pos .. + L` is readable for every `off` in `offs` and
/// slot, `w` holds `offs.len() * M` floats and `bias` `M`, and for `r < rows` the output lanes
/// of each slot stored from `dst + r * plane + start` stay inside that plane.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn forward_tile<const M: usize, const N: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    // SAFETY: every pointer stays inside the ranges of the contract above.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); N]; M];
        for (r, row) in acc.iter_mut().enumerate() {
            *row = [_mm512_set1_ps(*t.bias.add(r)); N];
        }
        let src: [*const f32; N] = std::array::from_fn(|j| t.src.add(t.slots[j].pos));
        for (k, &off) in t.offs.iter().enumerate() {
            let mut b = [_mm512_setzero_ps(); N];
            for (bj, p) in b.iter_mut().zip(&src) {
                *bj = _mm512_loadu_ps(p.add(off));
            }
            let wk = t.w.add(k * M);
            for (r, row) in acc.iter_mut().enumerate() {
                let wr = _mm512_set1_ps(*wk.add(r));
                for (a, &bj) in row.iter_mut().zip(&b) {
                    *a = _mm512_fmadd_ps(wr, bj, *a);
                }
            }
        }
        for (r, row) in acc.iter().enumerate().take(t.rows) {
            let dst = t.dst.add(r * t.plane);
            for (a, slot) in row.iter().zip(t.slots) {
                if t.compress {
                    _mm512_mask_compressstoreu_ps(dst.add(slot.start).cast(), slot.mask, *a);
                } else {
                    _mm512_mask_storeu_ps(dst.add(slot.start), slot.mask, *a);
                }
            }
        }
    }
}

/// Weight gradient (stride 1): the contiguous `[O, C/groups, kh, kw]` sum over the batch of
/// `grad_out[o, i] * x_padded[off(tap) + i]`. With `db_out` (`[O]`), also the bias gradient,
/// `grad_out` summed per output channel over the batch and the positions, taken while the
/// output gradient's rows are copied for the products (each row summed in `f32`, the rows of a
/// task in `f64`, the tasks in order). The caller checked the lengths and [`worthwhile`].
pub(crate) fn weight_grad(
    x: &[f32],
    grad_out: &[f32],
    g: &ConvGeom,
    dw_out: &mut [f32],
    mut db_out: Option<&mut [f32]>,
) -> Result<()> {
    let plan = Plan::forward(g);
    let k = plan.taps();
    let k_pad = k.div_ceil(NK) * NK;
    let w_len = g.o * k;
    let in_sample = g.c * g.h * g.w;
    let out_sample = g.o * g.oh * g.ow;
    let b_len = if db_out.is_some() { g.o } else { 0 };
    if x.len() != g.n * in_sample
        || grad_out.len() != g.n * out_sample
        || dw_out.len() != w_len
        || db_out.as_ref().is_some_and(|db| db.len() != b_len)
    {
        return Err(Error::invalid(
            "conv2d_weight_grad",
            format!("direct kernel buffers do not match the geometry {g:?}"),
        ));
    }
    // Tap offsets padded to whole tiles (the extra taps read offset 0 and are dropped).
    let mut offs = plan.offs.clone();
    offs.resize(k_pad, 0);
    // Per sample: the padded images of all groups, then the output gradients of all groups
    // as `[cout_pad, np]` rows with zeros past each row's `ow` outputs.
    let img_all = plan.groups * plan.img_len;
    let go_all = plan.groups * plan.cout_wgrad() * plan.np;
    let per_sample = img_all + go_all;
    let chunk = (WGRAD_CHUNK_BYTES / (4 * per_sample)).clamp(1, g.n.max(1));
    let tasks = sample_tasks(g.n, g.work());
    let per_task = g.n.div_ceil(tasks).max(1);
    // Per task: its share of the weight gradient, then of the bias gradient.
    let part_len = w_len + b_len;
    let mut partials = vec![0.0f32; tasks * part_len];
    if w_len == 0 {
        return Ok(());
    }
    let plane = g.oh * g.ow;
    par::for_each_chunk(&mut partials, part_len, |t, part| {
        let (dw, db) = part.split_at_mut(w_len);
        let mut sums = vec![0.0f64; db.len()];
        let range = (t * per_task).min(g.n)..((t + 1) * per_task).min(g.n);
        let mut buf = vec![0.0f32; chunk.min(range.len().max(1)) * per_sample];
        let mut first = range.start;
        while first < range.end {
            let count = chunk.min(range.end - first);
            for (i, sample) in buf.chunks_exact_mut(per_sample).take(count).enumerate() {
                let s = first + i;
                let (imgs, gos) = sample.split_at_mut(img_all);
                let x_n = &x[s * in_sample..(s + 1) * in_sample];
                let go_n = &grad_out[s * out_sample..(s + 1) * out_sample];
                let cin_len = plan.cin * plan.h * plan.w;
                for grp in 0..plan.groups {
                    let img = &mut imgs[grp * plan.img_len..(grp + 1) * plan.img_len];
                    plan.pad_into(&x_n[grp * cin_len..(grp + 1) * cin_len], img);
                    for o in 0..plan.cout {
                        let oc = grp * plan.cout + o;
                        let row = &mut gos[(grp * plan.cout_wgrad() + o) * plan.np..][..plan.np];
                        for (y, src) in go_n[oc * plane..(oc + 1) * plane]
                            .chunks_exact(plan.ow)
                            .enumerate()
                        {
                            row[y * plan.wp..y * plan.wp + plan.ow].copy_from_slice(src);
                            if let Some(sum) = sums.get_mut(oc) {
                                *sum += f64::from(src.iter().sum::<f32>());
                            }
                        }
                    }
                }
            }
            for grp in 0..plan.groups {
                // SAFETY: every sample block of `buf` holds the images (`img_len` each,
                // `>= off + np` for every offset, the padded offsets being 0) and the
                // `[cout_pad, np]` gradient rows of all groups; `dw` holds `O * taps`;
                // `available()` found AVX-512 (checked by `worthwhile`).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    weight_grad_tiles(&plan, &offs, &buf, per_sample, count, grp, dw);
                }
            }
            first += count;
        }
        for (d, &s) in db.iter_mut().zip(&sums) {
            *d = s as f32;
        }
    });
    let mut parts = partials.chunks_exact(part_len);
    if let Some(first) = parts.next() {
        dw_out.copy_from_slice(&first[..w_len]);
        if let Some(db) = db_out.as_deref_mut() {
            db.copy_from_slice(&first[w_len..]);
        }
    }
    for part in parts {
        let (dw, db) = part.split_at(w_len);
        for (d, &v) in dw_out.iter_mut().zip(dw) {
            *d += v;
        }
        if let Some(db_out) = db_out.as_deref_mut() {
            for (d, &v) in db_out.iter_mut().zip(db) {
                *d += v;
            }
        }
    }
    Ok(())
}

/// Adds one group's weight gradient over `count` prepared samples (see [`weight_grad`]) to
/// `dw` (`[O, taps]`).
///
/// # Safety
/// The CPU has AVX-512F; `buf` holds `count` sample blocks of `per_sample` elements laid out
/// as [`weight_grad`] prepares them; `offs` is a multiple of [`NK`] long with every offset
/// `+ np` inside one image; `dw.len() == groups * cout * plan.taps()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn weight_grad_tiles(
    plan: &Plan,
    offs: &[usize],
    buf: &[f32],
    per_sample: usize,
    count: usize,
    grp: usize,
    dw: &mut [f32],
) {
    use std::arch::x86_64::*;
    let k = plan.taps();
    let img_all = plan.groups * plan.img_len;
    let vectors = plan.np / L;
    // SAFETY: sample `s` of `buf` starts at `s * per_sample`; its group image holds every tap
    // offset `+ np`, its gradient rows `ob * MR ..+ MR` of this group `np` each (the contract).
    unsafe {
        for ob in 0..plan.cout_wgrad() / MR {
            for kb in 0..offs.len() / NK {
                let mut acc = [[_mm512_setzero_ps(); NK]; MR];
                let o_taps: [usize; NK] = std::array::from_fn(|q| offs[kb * NK + q]);
                for s in 0..count {
                    let base = buf.as_ptr().add(s * per_sample);
                    let img = base.add(grp * plan.img_len);
                    let go = base.add(img_all + (grp * plan.cout_wgrad() + ob * MR) * plan.np);
                    for v in 0..vectors {
                        let i = v * L;
                        let mut b = [_mm512_setzero_ps(); NK];
                        for (bq, &off) in b.iter_mut().zip(&o_taps) {
                            *bq = _mm512_loadu_ps(img.add(off + i));
                        }
                        for (r, row) in acc.iter_mut().enumerate() {
                            let gr = _mm512_loadu_ps(go.add(r * plan.np + i));
                            for (a, &bq) in row.iter_mut().zip(&b) {
                                *a = _mm512_fmadd_ps(gr, bq, *a);
                            }
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate() {
                    let o = ob * MR + r;
                    if o >= plan.cout {
                        continue;
                    }
                    for (q, a) in row.iter().enumerate() {
                        let tap = kb * NK + q;
                        if tap < k {
                            dw[(grp * plan.cout + o) * k + tap] += _mm512_reduce_add_ps(*a);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Conv2dParams;

    fn fill(n: usize, k: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * k) % 97) as f32 - 48.0) / 31.0)
            .collect()
    }

    /// The direct kernels agree with im2col + `gemm` (the general path) on LeNet-5's
    /// convolutions and on padded, dilated, grouped, odd-sized ones, for the output, the input
    /// gradient and the weight gradient, on 1 and 2 threads.
    #[test]
    fn direct_kernels_match_im2col() {
        if !available() {
            return;
        }
        let conv = |padding, dilation, groups| Conv2dParams {
            stride: [1, 1],
            padding,
            dilation,
            groups,
        };
        let cases = [
            (
                [64usize, 1, 28, 28],
                [6usize, 1, 5, 5],
                conv([2, 2], [1, 1], 1),
            ),
            ([64, 6, 14, 14], [16, 6, 5, 5], conv([0, 0], [1, 1], 1)),
            ([3, 4, 11, 9], [6, 2, 3, 2], conv([1, 1], [2, 1], 2)),
            ([5, 3, 7, 19], [13, 3, 3, 3], conv([1, 0], [1, 1], 1)),
            ([2, 5, 6, 6], [7, 5, 2, 3], conv([1, 2], [1, 1], 1)),
            ([1, 2, 33, 17], [3, 2, 4, 4], conv([3, 3], [1, 1], 1)),
        ];
        for (input, wshape, params) in cases {
            let g = ConvGeom::new("conv2d", &input, &wshape, &params).unwrap();
            let x = fill(input.iter().product(), 13);
            let w = fill(wshape.iter().product(), 7);
            let b = fill(g.o, 5);
            let go = fill(g.output_shape().iter().product(), 11);
            for threads in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let close = |a: &[f32], b: &[f32], what: &str| {
                        assert_eq!(a.len(), b.len());
                        for (i, (x, y)) in a.iter().zip(b).enumerate() {
                            assert!(
                                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                                "{what} {input:?} {wshape:?} [{i}]: {x} vs {y}"
                            );
                        }
                    };
                    assert!(worthwhile(&g, false), "{input:?} {wshape:?}");
                    // Outputs start as NaN: every element must be written.
                    let mut y = vec![f32::NAN; go.len()];
                    forward(&x, &w, Some(&b), &g, &mut y, false).unwrap();
                    let y_ref =
                        super::super::conv::im2col_conv2d(&x, &w, Some(&b), &g, false).unwrap();
                    close(&y, &y_ref, "forward");
                    // With relu: the same outputs, negative ones zero (bit for bit).
                    let mut y_relu = vec![f32::NAN; go.len()];
                    forward(&x, &w, Some(&b), &g, &mut y_relu, true).unwrap();
                    let want: Vec<u32> = y
                        .iter()
                        .map(|&v| if v < 0.0 { 0.0f32 } else { v }.to_bits())
                        .collect();
                    let got: Vec<u32> = y_relu.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want, "forward + relu {input:?} {wshape:?}");
                    let mut dw = vec![f32::NAN; w.len()];
                    weight_grad(&x, &go, &g, &mut dw, None).unwrap();
                    let dw_ref = super::super::conv::im2col_weight_grad(&x, &go, &g).unwrap();
                    close(&dw, &dw_ref, "weight grad");
                    if worthwhile(&g, true) {
                        let mut dx = vec![f32::NAN; x.len()];
                        input_grad(&go, &w, &g, &mut dx).unwrap();
                        let dx_ref = super::super::conv::im2col_input_grad(&go, &w, &g).unwrap();
                        close(&dx, &dx_ref, "input grad");
                    }
                });
            }
        }
    }

    /// Convolutions the direct kernels leave to im2col: strided, pointwise, a padding wider
    /// than the kernel (input gradient only), and a plane much narrower than its padding.
    #[test]
    fn worthwhile_rejects_what_it_cannot_run_well() {
        if !available() {
            return;
        }
        let p = |stride, padding| Conv2dParams {
            stride,
            padding,
            ..Default::default()
        };
        let geom = |input: [usize; 4], w: [usize; 4], params| {
            ConvGeom::new("conv2d", &input, &w, &params).unwrap()
        };
        assert!(!worthwhile(
            &geom([1, 3, 8, 8], [4, 3, 3, 3], p([2, 2], [1, 1])),
            false
        ));
        assert!(!worthwhile(
            &geom([1, 3, 8, 8], [4, 3, 1, 1], p([1, 1], [0, 0])),
            false
        ));
        let wide_pad = geom([1, 3, 8, 8], [4, 3, 3, 3], p([1, 1], [3, 3]));
        assert!(worthwhile(&wide_pad, false) && !worthwhile(&wide_pad, true));
        assert!(!worthwhile(
            &geom([1, 3, 1, 1], [4, 3, 3, 3], p([1, 1], [1, 1])),
            false
        ));
        // A zero-height input that padding gives two output rows.
        let empty = geom([1, 3, 0, 8], [4, 3, 3, 3], p([1, 1], [2, 2]));
        assert!(!worthwhile(&empty, false) && !worthwhile(&empty, true));
        let dx = super::super::conv::conv2d_input_grad(&[0.5f32; 80], &[1.0; 108], &empty);
        assert!(dx.is_ok_and(|dx| dx.is_empty()));
    }
}
