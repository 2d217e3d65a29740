//! Fusion passes: elementwise chains into one pass over memory, and matmul + bias (+ relu)
//! into one kernel.
//!
//! [`ElementwiseFusion`] finds groups of elementwise nodes (float32 or float64, same output
//! shape, intermediate values used only inside the group and never fetched) and replaces each
//! group by one [`PlanOp::Kernel`] running a [`FusedElementwise`] program: a small register
//! machine evaluated block by block over the output, so every input is read once and the
//! output is written once, with no intermediate tensors. Every instruction computes in the
//! tensor's own dtype with the same scalar functions as the unfused kernels, so fused and
//! unfused plans give the same numbers.
//!
//! [`MatMulBiasFusion`] rewrites `add(matmul(x, w), b)` with `b` of shape `[N]` (optionally
//! followed by `relu`) into a [`MatMulBias`] kernel: one gemm into the output buffer, then
//! bias and activation in the same pass over it while it is still in cache.

use crate::passes::Pass;
use crate::plan::{Kernel, PlanGraph, PlanNode, PlanOp};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tandem_ir::Op;
use tandem_tensor::cpu::math;
use tandem_tensor::cpu::simd::{dispatch, PARALLEL_THRESHOLD};
use tandem_tensor::layout::broadcast_shapes;
use tandem_tensor::{BinaryOp, DType, Element, Error, Result, Tensor, UnaryOp};

#[cfg(feature = "cuda")]
#[path = "fusion_cuda.rs"]
mod cuda;

/// Fewest elements per block of the register machine.
const BLOCK: usize = 256;
/// Most elements per block of the register machine.
const MAX_BLOCK: usize = 4096;
/// Bytes the registers of one block may take (they stay in the L1 cache).
const REGISTER_BYTES: usize = 24 * 1024;

/// Elements per block for `registers` registers of `size`-byte elements: as many as fit in
/// [`REGISTER_BYTES`] (a multiple of [`BLOCK`], at least [`BLOCK`]), so that short programs
/// (a long chain of adds needs three registers) pay the per-instruction dispatch once per
/// several thousand elements.
fn block_len(registers: usize, size: usize) -> usize {
    let fit = REGISTER_BYTES / (registers.max(1) * size.max(1));
    (fit / BLOCK * BLOCK).clamp(BLOCK, MAX_BLOCK)
}

/// A unary function the fused kernel supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedUnary {
    /// -x
    Neg,
    /// |x|
    Abs,
    /// e^x
    Exp,
    /// ln x
    Log,
    /// sqrt x
    Sqrt,
    /// 1/sqrt x
    Rsqrt,
    /// 1/x
    Recip,
    /// tanh x
    Tanh,
    /// 1/(1+e^-x)
    Sigmoid,
    /// max(x, 0) (NaN stays NaN)
    Relu,
    /// x*x
    Square,
}

impl FusedUnary {
    fn of(op: UnaryOp) -> Option<FusedUnary> {
        Some(match op {
            UnaryOp::Neg => FusedUnary::Neg,
            UnaryOp::Abs => FusedUnary::Abs,
            UnaryOp::Exp => FusedUnary::Exp,
            UnaryOp::Log => FusedUnary::Log,
            UnaryOp::Sqrt => FusedUnary::Sqrt,
            UnaryOp::Rsqrt => FusedUnary::Rsqrt,
            UnaryOp::Recip => FusedUnary::Recip,
            UnaryOp::Tanh => FusedUnary::Tanh,
            UnaryOp::Sigmoid => FusedUnary::Sigmoid,
            UnaryOp::Relu => FusedUnary::Relu,
            UnaryOp::Square => FusedUnary::Square,
            _ => return None,
        })
    }
}

/// A binary function the fused kernel supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedBinary {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b
    Div,
    /// NaN-propagating maximum
    Maximum,
    /// NaN-propagating minimum
    Minimum,
}

impl FusedBinary {
    fn of(op: BinaryOp) -> Option<FusedBinary> {
        Some(match op {
            BinaryOp::Add => FusedBinary::Add,
            BinaryOp::Sub => FusedBinary::Sub,
            BinaryOp::Mul => FusedBinary::Mul,
            BinaryOp::Div => FusedBinary::Div,
            BinaryOp::Maximum => FusedBinary::Maximum,
            BinaryOp::Minimum => FusedBinary::Minimum,
            _ => return None,
        })
    }
}

/// One instruction of a fused program. Registers `0..inputs` are loaded with the kernel's
/// inputs at the start of each block (an input register may be reused once its input is
/// read for the last time); each instruction writes register `dst`, never one it reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Instr {
    /// `dst = f(src)`
    Unary {
        /// Function.
        f: FusedUnary,
        /// Source register.
        src: usize,
        /// Destination register.
        dst: usize,
    },
    /// `dst = f(a, b)`
    Binary {
        /// Function.
        f: FusedBinary,
        /// Left register.
        a: usize,
        /// Right register.
        b: usize,
        /// Destination register.
        dst: usize,
    },
    /// `dst = f(src, value)`, or `f(value, src)` when `left`.
    Scalar {
        /// Function.
        f: FusedBinary,
        /// Source register.
        src: usize,
        /// The constant (rounded to the dtype like the unfused kernel does).
        value: f64,
        /// Whether the constant is the left operand.
        left: bool,
        /// Destination register.
        dst: usize,
    },
}

/// Float types the fused kernel computes in, with the same scalar math as the unfused
/// unary and binary kernels.
trait Lane: Element + Copy + Send + Sync + PartialOrd + std::fmt::Debug {
    const ZERO: Self;
    fn un(f: FusedUnary, x: Self) -> Self;
    fn bin(f: FusedBinary, a: Self, b: Self) -> Self;
}

macro_rules! lane {
    ($t:ty, $exp:expr, $ln:expr, $tanh:expr, $sigmoid:expr) => {
        impl Lane for $t {
            const ZERO: $t = 0.0;
            #[inline(always)]
            fn un(f: FusedUnary, x: $t) -> $t {
                match f {
                    FusedUnary::Neg => -x,
                    FusedUnary::Abs => x.abs(),
                    FusedUnary::Exp => $exp(x),
                    FusedUnary::Log => $ln(x),
                    FusedUnary::Sqrt => x.sqrt(),
                    FusedUnary::Rsqrt => 1.0 / x.sqrt(),
                    FusedUnary::Recip => 1.0 / x,
                    FusedUnary::Tanh => $tanh(x),
                    FusedUnary::Sigmoid => $sigmoid(x),
                    FusedUnary::Relu => {
                        if x < 0.0 {
                            0.0
                        } else {
                            x
                        }
                    }
                    FusedUnary::Square => x * x,
                }
            }
            #[inline(always)]
            fn bin(f: FusedBinary, a: $t, b: $t) -> $t {
                match f {
                    FusedBinary::Add => a + b,
                    FusedBinary::Sub => a - b,
                    FusedBinary::Mul => a * b,
                    FusedBinary::Div => a / b,
                    FusedBinary::Maximum => {
                        if a > b || a.is_nan() {
                            a
                        } else {
                            b
                        }
                    }
                    FusedBinary::Minimum => {
                        if a < b || a.is_nan() {
                            a
                        } else {
                            b
                        }
                    }
                }
            }
        }
    };
}

fn sigmoid_f64(x: f64) -> f64 {
    let e = (-x.abs()).exp();
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else if x < 0.0 {
        e / (1.0 + e)
    } else {
        x
    }
}

lane!(
    f32,
    math::exp_f32,
    math::ln_f32,
    math::tanh_f32,
    math::sigmoid_f32
);
lane!(f64, f64::exp, f64::ln, f64::tanh, sigmoid_f64);

#[inline(always)]
fn apply_un<T: Lane>(f: FusedUnary, src: &[T], dst: &mut [T]) {
    macro_rules! each {
        ($g:expr) => {
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = $g(x);
            }
        };
    }
    // One loop per function, so each loop vectorizes.
    match f {
        FusedUnary::Neg => each!(|x| T::un(FusedUnary::Neg, x)),
        FusedUnary::Abs => each!(|x| T::un(FusedUnary::Abs, x)),
        FusedUnary::Exp => each!(|x| T::un(FusedUnary::Exp, x)),
        FusedUnary::Log => each!(|x| T::un(FusedUnary::Log, x)),
        FusedUnary::Sqrt => each!(|x| T::un(FusedUnary::Sqrt, x)),
        FusedUnary::Rsqrt => each!(|x| T::un(FusedUnary::Rsqrt, x)),
        FusedUnary::Recip => each!(|x| T::un(FusedUnary::Recip, x)),
        FusedUnary::Tanh => each!(|x| T::un(FusedUnary::Tanh, x)),
        FusedUnary::Sigmoid => each!(|x| T::un(FusedUnary::Sigmoid, x)),
        FusedUnary::Relu => each!(|x| T::un(FusedUnary::Relu, x)),
        FusedUnary::Square => each!(|x| T::un(FusedUnary::Square, x)),
    }
}

/// Expands `$then!($($pre,)* g)` once per binary op, `g` being that op as a closure (a
/// constant op per arm, so that each arm's loop is compiled, and vectorized, for its op).
macro_rules! by_binary {
    ($f:expr, $then:ident $(, $pre:expr)*) => {
        match $f {
            FusedBinary::Add => $then!($($pre,)* |x, y| T::bin(FusedBinary::Add, x, y)),
            FusedBinary::Sub => $then!($($pre,)* |x, y| T::bin(FusedBinary::Sub, x, y)),
            FusedBinary::Mul => $then!($($pre,)* |x, y| T::bin(FusedBinary::Mul, x, y)),
            FusedBinary::Div => $then!($($pre,)* |x, y| T::bin(FusedBinary::Div, x, y)),
            FusedBinary::Maximum => $then!($($pre,)* |x, y| T::bin(FusedBinary::Maximum, x, y)),
            FusedBinary::Minimum => $then!($($pre,)* |x, y| T::bin(FusedBinary::Minimum, x, y)),
        }
    };
}

#[inline(always)]
fn apply_bin<T: Lane>(f: FusedBinary, a: &[T], b: &[T], dst: &mut [T]) {
    macro_rules! each {
        ($g:expr) => {
            for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                *d = $g(x, y);
            }
        };
    }
    by_binary!(f, each);
}

#[inline(always)]
fn apply_scalar<T: Lane>(f: FusedBinary, src: &[T], v: T, left: bool, dst: &mut [T]) {
    macro_rules! each {
        ($g:expr) => {
            if left {
                for (d, &x) in dst.iter_mut().zip(src) {
                    *d = $g(v, x);
                }
            } else {
                for (d, &x) in dst.iter_mut().zip(src) {
                    *d = $g(x, v);
                }
            }
        };
    }
    by_binary!(f, each);
}

/// `dst = f2(f1(a, b), o)` (or `f2(o, f1(a, b))` when `!left`) in one pass: two binary
/// instructions whose intermediate register is dead afterwards, run without storing the
/// intermediate (the same operations in the same order, so the same numbers).
/// With `a = None` the left operand of `f1` is `dst` itself (the pair writes the register
/// its first instruction reads, as a chain `y = y + x` does).
#[inline(always)]
fn apply_pair<T: Lane>(
    f1: FusedBinary,
    f2: FusedBinary,
    left: bool,
    a: Option<&[T]>,
    b: &[T],
    o: &[T],
    dst: &mut [T],
) {
    macro_rules! each {
        ($g1:expr, $g2:expr) => {
            match a {
                Some(a) => {
                    for (((d, &x), &y), &z) in dst.iter_mut().zip(a).zip(b).zip(o) {
                        let t = $g1(x, y);
                        *d = if left { $g2(t, z) } else { $g2(z, t) };
                    }
                }
                None => {
                    for ((d, &y), &z) in dst.iter_mut().zip(b).zip(o) {
                        let t = $g1(*d, y);
                        *d = if left { $g2(t, z) } else { $g2(z, t) };
                    }
                }
            }
        };
    }
    macro_rules! second {
        ($g1:expr) => {
            by_binary!(f2, each, $g1)
        };
    }
    by_binary!(f1, second);
}

/// One step of a fused program's evaluation: an instruction, or two binary instructions run
/// as one pass (see [`apply_pair`]).
#[derive(Clone, Copy, Debug)]
enum Step {
    One(Instr),
    Pair {
        f1: FusedBinary,
        a: usize,
        b: usize,
        f2: FusedBinary,
        other: usize,
        left: bool,
        dst: usize,
    },
}

#[cfg(test)]
impl Step {
    /// Whether a pair writes the register its first instruction reads on the left.
    fn in_place(&self) -> bool {
        matches!(*self, Step::Pair { a, dst, .. } if a == dst)
    }
}

/// Pairs each binary instruction with the next one when the next reads its result as one
/// operand, that result is dead afterwards (overwritten before any later read, and not the
/// output) and the registers do not overlap; everything else runs as it is.
fn schedule(program: &[Instr], output: usize) -> Vec<Step> {
    let dead_after = |reg: usize, from: usize| {
        for ins in &program[from..] {
            let (reads, writes) = match *ins {
                Instr::Unary { src, dst, .. } | Instr::Scalar { src, dst, .. } => {
                    (src == reg, dst == reg)
                }
                Instr::Binary { a, b, dst, .. } => (a == reg || b == reg, dst == reg),
            };
            if reads {
                return false;
            }
            if writes {
                return true;
            }
        }
        reg != output
    };
    let mut steps = Vec::with_capacity(program.len());
    let mut i = 0;
    while i < program.len() {
        if let (
            Instr::Binary {
                f: f1,
                a,
                b,
                dst: d1,
            },
            Some(&Instr::Binary {
                f: f2,
                a: x,
                b: y,
                dst: d2,
            }),
        ) = (program[i], program.get(i + 1))
        {
            let (left, other) = if x == d1 { (true, y) } else { (false, x) };
            let uses_once = (x == d1) != (y == d1);
            // The pair may write `a` in place (one element at a time, read before written),
            // but no other register it reads.
            let distinct = d2 != d1 && d2 != b && d2 != other && a != b;
            if uses_once && distinct && dead_after(d1, i + 2) {
                steps.push(Step::Pair {
                    f1,
                    a,
                    b,
                    f2,
                    other,
                    left,
                    dst: d2,
                });
                i += 2;
                continue;
            }
        }
        steps.push(Step::One(program[i]));
        i += 1;
    }
    steps
}

/// A fused elementwise kernel: inputs broadcast to a common shape, a register program, one
/// output register.
#[derive(Clone, Debug)]
pub struct FusedElementwise {
    name: String,
    dtype: DType,
    inputs: usize,
    registers: usize,
    program: Vec<Instr>,
    steps: Vec<Step>,
    output: usize,
}

/// An input of one run, viewed through its broadcast layout.
struct Source<'a, T> {
    data: &'a [T],
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
    contiguous: bool,
}

impl<T: Copy> Source<'_, T> {
    /// Copies elements `start..start + dst.len()` (row-major over the output shape).
    #[inline(always)]
    fn load(&self, start: usize, dst: &mut [T]) -> Result<()> {
        let oob = || Error::Graph("fused kernel: input view out of bounds".into());
        if self.contiguous {
            let at = self.offset + start;
            let src = self.data.get(at..at + dst.len()).ok_or_else(oob)?;
            dst.copy_from_slice(src);
            return Ok(());
        }
        let rank = self.shape.len();
        if rank == 0 {
            let v = *self.data.get(self.offset).ok_or_else(oob)?;
            dst.fill(v);
            return Ok(());
        }
        // Multi-index of `start`, then walk rows of the innermost dimension.
        let mut idx = vec![0usize; rank];
        let mut rem = start;
        for a in (0..rank).rev() {
            let d = self.shape[a].max(1);
            idx[a] = rem % d;
            rem /= d;
        }
        let inner = self.shape[rank - 1];
        let inner_stride = self.strides[rank - 1];
        let mut done = 0;
        while done < dst.len() {
            let base: usize = self.offset
                + idx
                    .iter()
                    .zip(&self.strides)
                    .map(|(&i, &s)| i * s)
                    .sum::<usize>();
            let run = (inner - idx[rank - 1]).min(dst.len() - done);
            let out = &mut dst[done..done + run];
            if inner_stride == 0 {
                out.fill(*self.data.get(base).ok_or_else(oob)?);
            } else {
                let last = base + (run - 1) * inner_stride;
                if last >= self.data.len() {
                    return Err(oob());
                }
                for (j, o) in out.iter_mut().enumerate() {
                    *o = self.data[base + j * inner_stride];
                }
            }
            done += run;
            // Carry into the outer dimensions.
            idx[rank - 1] += run;
            let mut a = rank - 1;
            while a > 0 && idx[a] >= self.shape[a] {
                idx[a] = 0;
                idx[a - 1] += 1;
                a -= 1;
            }
        }
        Ok(())
    }
}

impl FusedElementwise {
    /// A kernel running `program` over `inputs` inputs of `dtype` (f32 or f64) with
    /// `registers` registers; the result is register `output`. Fails if a register index is
    /// out of range or the dtype is not f32/f64.
    pub fn new(
        name: impl Into<String>,
        dtype: DType,
        inputs: usize,
        registers: usize,
        program: Vec<Instr>,
        output: usize,
    ) -> Result<FusedElementwise> {
        let name = name.into();
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(Error::Graph(format!(
                "{name}: fused kernels compute in f32 or f64, not {dtype}"
            )));
        }
        let ok = |r: usize| r < registers;
        let valid = ok(output)
            && inputs <= registers
            && program.iter().all(|i| match *i {
                Instr::Unary { src, dst, .. } | Instr::Scalar { src, dst, .. } => {
                    ok(src) && ok(dst) && src != dst
                }
                Instr::Binary { a, b, dst, .. } => {
                    ok(a) && ok(b) && ok(dst) && a != dst && b != dst
                }
            });
        if !valid {
            return Err(Error::Graph(format!(
                "{name}: fused program uses a register outside 0..{registers} or reads the register it writes"
            )));
        }
        Ok(FusedElementwise {
            name,
            dtype,
            inputs,
            registers,
            steps: schedule(&program, output),
            program,
            output,
        })
    }

    /// The program.
    pub fn program(&self) -> &[Instr] {
        &self.program
    }

    fn run_typed<T: Lane>(&self, inputs: &[&Tensor], out: Option<Tensor>) -> Result<Tensor> {
        let mut shape: Vec<usize> = Vec::new();
        for t in inputs {
            shape = broadcast_shapes("fused_elementwise", &shape, t.shape())?.to_vec();
        }
        let mut views = Vec::with_capacity(inputs.len());
        for t in inputs {
            views.push(t.expand(&shape)?);
        }
        let mut sources = Vec::with_capacity(views.len());
        for v in &views {
            let (storage, layout) = v.cpu("fused_elementwise")?;
            sources.push(Source {
                data: storage.as_slice::<T>()?,
                offset: layout.offset(),
                shape: layout.shape().to_vec(),
                strides: layout.strides().to_vec(),
                contiguous: layout.is_contiguous(),
            });
        }
        let n: usize = shape.iter().product();
        let mut result = match out {
            Some(t) if t.shape() == shape.as_slice() && t.dtype() == self.dtype => t,
            _ => Tensor::zeros(&shape, self.dtype),
        };
        let dst = result.make_mut::<T>()?;
        let run_range = |chunk: &mut [T], start: usize| -> Result<()> {
            dispatch(
                #[inline(always)]
                || self.eval_range(&sources, chunk, start),
            )
        };
        if n >= PARALLEL_THRESHOLD {
            let block = block_len(self.registers, std::mem::size_of::<T>());
            let per = n.div_ceil(rayon::current_num_threads().max(1)).max(block);
            let per = per.div_ceil(block) * block;
            tandem_tensor::cpu::par::try_for_each_chunk(dst, per, |i, c| run_range(c, i * per))?;
        } else {
            run_range(dst, 0)?;
        }
        Ok(result)
    }

    #[inline(always)]
    fn eval_range<T: Lane>(
        &self,
        sources: &[Source<'_, T>],
        dst: &mut [T],
        start: usize,
    ) -> Result<()> {
        let block = block_len(self.registers, std::mem::size_of::<T>());
        let len = dst.len().min(block);
        let mut regs = vec![T::ZERO; self.registers * len];
        let mut done = 0;
        while done < dst.len() {
            let m = (dst.len() - done).min(block);
            for (k, s) in sources.iter().enumerate() {
                s.load(start + done, &mut regs[k * len..k * len + m])?;
            }
            for step in &self.steps {
                let ins = match *step {
                    Step::One(ins) => ins,
                    Step::Pair {
                        f1,
                        a,
                        b,
                        f2,
                        other,
                        left,
                        dst: d,
                    } => {
                        let (lo, o, hi) = parts(&mut regs, d, len);
                        let x = (a != d).then(|| &reg(lo, hi, a, d, len)[..m]);
                        let y = reg(lo, hi, b, d, len);
                        let z = reg(lo, hi, other, d, len);
                        apply_pair(f1, f2, left, x, &y[..m], &z[..m], &mut o[..m]);
                        continue;
                    }
                };
                match ins {
                    Instr::Unary { f, src, dst: d } => {
                        let (lo, o, hi) = parts(&mut regs, d, len);
                        let s = reg(lo, hi, src, d, len);
                        apply_un(f, &s[..m], &mut o[..m]);
                    }
                    Instr::Binary { f, a, b, dst: d } => {
                        let (lo, o, hi) = parts(&mut regs, d, len);
                        let (x, y) = (reg(lo, hi, a, d, len), reg(lo, hi, b, d, len));
                        apply_bin(f, &x[..m], &y[..m], &mut o[..m]);
                    }
                    Instr::Scalar {
                        f,
                        src,
                        value,
                        left,
                        dst: d,
                    } => {
                        let (lo, o, hi) = parts(&mut regs, d, len);
                        let s = reg(lo, hi, src, d, len);
                        apply_scalar(
                            f,
                            &s[..m],
                            <T as Element>::from_f64(value),
                            left,
                            &mut o[..m],
                        );
                    }
                }
            }
            let r = self.output * len;
            dst[done..done + m].copy_from_slice(&regs[r..r + m]);
            done += m;
        }
        Ok(())
    }
}

/// Splits the registers around `dst`: (registers below, `dst`, registers above).
#[inline(always)]
fn parts<T>(regs: &mut [T], dst: usize, len: usize) -> (&[T], &mut [T], &[T]) {
    let (lo, rest) = regs.split_at_mut(dst * len);
    let (d, hi) = rest.split_at_mut(len);
    (lo, d, hi)
}

/// Register `r` (never `dst`) from the two sides of [`parts`].
#[inline(always)]
fn reg<'a, T>(lo: &'a [T], hi: &'a [T], r: usize, dst: usize, len: usize) -> &'a [T] {
    if r < dst {
        &lo[r * len..(r + 1) * len]
    } else {
        &hi[(r - dst - 1) * len..(r - dst) * len]
    }
}

impl Kernel for FusedElementwise {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(&self, inputs: &[&Tensor], out: Option<Tensor>) -> Result<Tensor> {
        if inputs.len() != self.inputs {
            return Err(Error::Graph(format!(
                "{}: expects {} inputs, got {}",
                self.name,
                self.inputs,
                inputs.len()
            )));
        }
        if let Some(t) = inputs.iter().find(|t| t.dtype() != self.dtype) {
            return Err(Error::DTypeMismatch {
                op: "fused_elementwise",
                expected: self.dtype.name().to_string(),
                got: t.dtype(),
            });
        }
        #[cfg(feature = "cuda")]
        if inputs.iter().any(|t| t.device().is_cuda()) {
            return cuda::run_fused(self, inputs);
        }
        match self.dtype {
            DType::F32 => self.run_typed::<f32>(inputs, out),
            _ => self.run_typed::<f64>(inputs, out),
        }
    }
}

/// What one fusable node computes.
#[derive(Clone, Copy, Debug)]
enum Elem {
    Un(FusedUnary),
    Bin(FusedBinary),
    Sc(FusedBinary, f64, bool),
}

/// The elementwise function of a node the fused kernel can run, if any: a supported op on
/// f32 or f64 inputs of the output's dtype, with no control inputs.
fn elem_of(plan: &PlanGraph, node: &PlanNode) -> Option<Elem> {
    if !node.control.is_empty() || !matches!(node.info.dtype, DType::F32 | DType::F64) {
        return None;
    }
    let same_dtype = node.inputs.iter().all(|&i| {
        plan.node(i)
            .is_some_and(|n| n.info.dtype == node.info.dtype)
    });
    if !same_dtype {
        return None;
    }
    let PlanOp::Op(op) = &node.op else {
        return None;
    };
    match op {
        Op::Unary(u) if node.inputs.len() == 1 => FusedUnary::of(*u).map(Elem::Un),
        Op::Binary(b) if node.inputs.len() == 2 => FusedBinary::of(*b).map(Elem::Bin),
        Op::Scalar {
            op,
            value,
            scalar_on_left,
        } if node.inputs.len() == 1 => {
            FusedBinary::of(*op).map(|f| Elem::Sc(f, *value, *scalar_on_left))
        }
        _ => None,
    }
}

/// Who reads each node: data users, and whether it is fetched or a control dependency.
pub(crate) struct Uses {
    users: HashMap<usize, Vec<usize>>,
    pub(crate) pinned: HashSet<usize>,
}

impl Uses {
    pub(crate) fn of(plan: &PlanGraph) -> Uses {
        let mut users: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut pinned: HashSet<usize> = plan.outputs.iter().copied().collect();
        for id in plan.live() {
            if let Some(n) = plan.node(id) {
                for &i in &n.inputs {
                    users.entry(i).or_default().push(id);
                }
                pinned.extend(n.control.iter().copied());
            }
        }
        Uses { users, pinned }
    }

    /// True when every read of `id` is a data input of a node in `group`.
    pub(crate) fn only_inside(&self, id: usize, group: &HashSet<usize>) -> bool {
        !self.pinned.contains(&id)
            && self
                .users
                .get(&id)
                .is_some_and(|u| u.iter().all(|x| group.contains(x)))
    }
    /// Like [`Uses::only_inside`], but reads of `id` for its shape only (see
    /// [`shape_only_use`]) are allowed outside the group too.
    fn only_inside_but_shapes(&self, plan: &PlanGraph, id: usize, group: &HashSet<usize>) -> bool {
        !self.pinned.contains(&id)
            && self.users.get(&id).is_some_and(|u| {
                u.iter()
                    .all(|&x| group.contains(&x) || shape_only_use(plan, x, id))
            })
    }

    /// The readers of `id` that read its data (not only its shape).
    pub(crate) fn data_users(&self, plan: &PlanGraph, id: usize) -> Vec<usize> {
        self.users.get(&id).map_or_else(Vec::new, |u| {
            u.iter()
                .copied()
                .filter(|&x| !shape_only_use(plan, x, id))
                .collect()
        })
    }
}

/// Whether node `user` reads `id` for its shape only: the last input of `sum_to_like`,
/// `reshape_like` and `expand_like` (when `id` is not also the first), or the input of
/// `dim_size` and `full_like`. Such a read may move to any node of the same shape and dtype.
fn shape_only_use(plan: &PlanGraph, user: usize, id: usize) -> bool {
    let Some(n) = plan.node(user) else {
        return false;
    };
    match &n.op {
        PlanOp::Op(Op::SumToLike | Op::ReshapeLike | Op::ExpandLike) => {
            matches!(n.inputs.as_slice(), &[a, b] if a != id && b == id)
        }
        PlanOp::Op(Op::DimSize { .. } | Op::FullLike { .. }) => n.inputs.as_slice() == [id],
        _ => false,
    }
}

/// Makes the shape-only reads of `old` (see [`shape_only_use`]) read `new` instead.
pub(crate) fn move_shape_uses(plan: &mut PlanGraph, uses: &Uses, old: usize, new: usize) {
    let readers: Vec<usize> = uses.users.get(&old).cloned().unwrap_or_default();
    for u in readers {
        if !shape_only_use(plan, u, old) {
            continue;
        }
        if let Some(Some(n)) = plan.nodes.get_mut(u) {
            for i in n.inputs.iter_mut().filter(|i| **i == old) {
                *i = new;
            }
        }
    }
}

/// Live nodes in a topological order (inputs first).
fn topo_order(plan: &PlanGraph) -> Vec<usize> {
    let n = plan.nodes.len();
    let mut state = vec![0u8; n];
    let mut order = Vec::new();
    for root in plan.live() {
        let mut stack = vec![(root, false)];
        while let Some((id, expanded)) = stack.pop() {
            if expanded {
                if state[id] != 2 {
                    state[id] = 2;
                    order.push(id);
                }
                continue;
            }
            if state.get(id).is_none_or(|&s| s != 0) {
                continue;
            }
            state[id] = 1;
            stack.push((id, true));
            if let Some(node) = plan.node(id) {
                for &d in node.inputs.iter().chain(&node.control) {
                    if state.get(d) == Some(&0) {
                        stack.push((d, false));
                    }
                }
            }
        }
    }
    order
}

/// Fuses groups of elementwise nodes (see the [module docs](self)) into [`FusedElementwise`]
/// kernels.
#[derive(Clone, Copy, Debug, Default)]
pub struct ElementwiseFusion;

impl Pass for ElementwiseFusion {
    fn name(&self) -> &str {
        "elementwise_fusion"
    }

    fn run(&self, plan: &mut PlanGraph) -> Result<bool> {
        let order = topo_order(plan);
        let mut position = vec![usize::MAX; plan.nodes.len()];
        for (p, &id) in order.iter().enumerate() {
            position[id] = p;
        }
        let uses = Uses::of(plan);
        let mut taken: HashSet<usize> = HashSet::new();
        let mut changed = false;
        for &root in order.iter().rev() {
            if taken.contains(&root) {
                continue;
            }
            let Some(rnode) = plan.node(root) else {
                continue;
            };
            if elem_of(plan, rnode).is_none() {
                continue;
            }
            let info = rnode.info.clone();
            let mut group: HashSet<usize> = HashSet::from([root]);
            let mut pending: Vec<usize> = rnode.inputs.clone();
            loop {
                let mut grew = false;
                let mut next = Vec::new();
                for &i in &pending {
                    if group.contains(&i) || taken.contains(&i) {
                        continue;
                    }
                    let Some(n) = plan.node(i) else { continue };
                    let fits = n.info == info && elem_of(plan, n).is_some();
                    if fits && uses.only_inside(i, &group) {
                        group.insert(i);
                        next.extend(n.inputs.iter().copied());
                        grew = true;
                    } else if fits {
                        // Another user may join the group later.
                        next.push(i);
                    }
                }
                pending = next;
                pending.sort_unstable();
                pending.dedup();
                if !grew {
                    break;
                }
            }
            if group.len() < 2 {
                continue;
            }
            let mut members: Vec<usize> = group.iter().copied().collect();
            members.sort_by_key(|&m| position[m]);
            let kernel = build_program(plan, &members, root)?;
            let Some((kernel, leaves)) = kernel else {
                continue;
            };
            let new = plan.add(PlanNode {
                name: rnode_name(plan, root),
                op: PlanOp::Kernel(Arc::new(kernel)),
                inputs: leaves,
                control: vec![],
                info: info.clone(),
            });
            plan.replace_uses(root, new);
            for &m in &members {
                plan.remove(m);
                taken.insert(m);
            }
            changed = true;
        }
        Ok(changed)
    }
}

fn rnode_name(plan: &PlanGraph, id: usize) -> String {
    plan.node(id).map_or_else(String::new, |n| n.name.clone())
}

/// The register program of a group (members in topological order, `root` last): leaves are
/// the inputs from outside the group, in first-use order. `None` when a member is not
/// fusable after all.
fn build_program(
    plan: &PlanGraph,
    members: &[usize],
    root: usize,
) -> Result<Option<(FusedElementwise, Vec<usize>)>> {
    let inside: HashSet<usize> = members.iter().copied().collect();
    let mut leaves: Vec<usize> = Vec::new();
    let mut reg_of: HashMap<usize, usize> = HashMap::new();
    for &m in members {
        let Some(n) = plan.node(m) else {
            return Ok(None);
        };
        for &i in &n.inputs {
            if !inside.contains(&i) && !reg_of.contains_key(&i) {
                reg_of.insert(i, leaves.len());
                leaves.push(i);
            }
        }
    }
    // Last reader (member index) of each value, for register reuse.
    let mut last_read: HashMap<usize, usize> = HashMap::new();
    for (k, &m) in members.iter().enumerate() {
        if let Some(n) = plan.node(m) {
            for &i in &n.inputs {
                last_read.insert(i, k);
            }
        }
    }
    let mut free: Vec<usize> = Vec::new();
    let mut registers = leaves.len();
    let mut program = Vec::with_capacity(members.len());
    let mut names: Vec<String> = Vec::new();
    for (k, &m) in members.iter().enumerate() {
        let Some(n) = plan.node(m) else {
            return Ok(None);
        };
        let Some(e) = elem_of(plan, n) else {
            return Ok(None);
        };
        let dst = free.pop().unwrap_or_else(|| {
            registers += 1;
            registers - 1
        });
        let r = |i: usize| reg_of.get(&i).copied();
        let ins = match (e, n.inputs.as_slice()) {
            (Elem::Un(f), &[x]) => r(x).map(|src| Instr::Unary { f, src, dst }),
            (Elem::Sc(f, value, left), &[x]) => r(x).map(|src| Instr::Scalar {
                f,
                src,
                value,
                left,
                dst,
            }),
            (Elem::Bin(f), &[a, b]) => r(a).zip(r(b)).map(|(a, b)| Instr::Binary { f, a, b, dst }),
            _ => None,
        };
        let Some(ins) = ins else {
            return Ok(None);
        };
        program.push(ins);
        names.push(n.op.name());
        reg_of.insert(m, dst);
        // Registers whose value is read for the last time here become free (inputs are
        // reloaded per block, so their registers may be reused too).
        let mut seen = HashSet::new();
        for &i in &n.inputs {
            if seen.insert(i) && last_read.get(&i) == Some(&k) && i != root {
                if let Some(&reg) = reg_of.get(&i) {
                    free.push(reg);
                }
            }
        }
    }
    let output = reg_of
        .get(&root)
        .copied()
        .ok_or_else(|| Error::Graph("elementwise fusion: root not in group".into()))?;
    let dtype = plan
        .node(root)
        .map(|n| n.info.dtype)
        .ok_or_else(|| Error::Graph("elementwise fusion: root removed".into()))?;
    let name = fused_name(&names);
    let kernel = FusedElementwise::new(name, dtype, leaves.len(), registers, program, output)?;
    Ok(Some((kernel, leaves)))
}

fn fused_name(ops: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ops.len() && parts.len() < 6 {
        let mut j = i;
        while j < ops.len() && ops[j] == ops[i] {
            j += 1;
        }
        parts.push(if j - i > 1 {
            format!("{}x{}", ops[i], j - i)
        } else {
            ops[i].clone()
        });
        i = j;
    }
    if i < ops.len() {
        parts.push("...".into());
    }
    format!("fused({})", parts.join(","))
}

/// `relu?(x @ w + b)` for 2-D `x [M, K]`, `w [K, N]` and `b [N]`: the kernel of
/// [`tandem_ir::fused::matmul_bias`] (one gemm into the output, then bias and activation in the
/// same pass over each row; f32 and f64 on the host, the ops otherwise), which eager mode's
/// linear layers run too.
#[derive(Clone, Debug)]
pub struct MatMulBias {
    relu: bool,
}

impl MatMulBias {
    /// The kernel, with or without a relu after the bias.
    pub fn new(relu: bool) -> MatMulBias {
        MatMulBias { relu }
    }
}

impl Kernel for MatMulBias {
    fn name(&self) -> &str {
        if self.relu {
            "matmul_bias_relu"
        } else {
            "matmul_bias"
        }
    }

    fn run(&self, inputs: &[&Tensor], out: Option<Tensor>) -> Result<Tensor> {
        let &[x, w, b] = inputs else {
            return Err(Error::Graph(format!(
                "{}: expects 3 inputs, got {}",
                self.name(),
                inputs.len()
            )));
        };
        tandem_ir::fused::matmul_bias(x, w, b, self.relu, out)
    }
}

/// Rewrites `add(matmul(x, w), b)` (either operand order) with `x`, `w` 2-D and `b` of shape
/// `[N]`, optionally followed by `relu`, into one [`MatMulBias`] kernel. The matmul (and the
/// add, when a relu is fused) must have no other reader.
#[derive(Clone, Copy, Debug, Default)]
pub struct MatMulBiasFusion;

/// The inputs `[x, w, b]` when `add` is a fusable `matmul + bias`.
fn matmul_bias_inputs(plan: &PlanGraph, uses: &Uses, add: usize) -> Option<(usize, [usize; 3])> {
    let node = plan.node(add)?;
    if !matches!(node.op, PlanOp::Op(Op::Binary(BinaryOp::Add))) || !node.control.is_empty() {
        return None;
    }
    if !matches!(node.info.dtype, DType::F32 | DType::F64) || node.info.shape.len() != 2 {
        return None;
    }
    let n_dim = *node.info.shape.get(1)?;
    let &[p, q] = node.inputs.as_slice() else {
        return None;
    };
    for (mm, b) in [(p, q), (q, p)] {
        let mnode = plan.node(mm)?;
        let bnode = plan.node(b)?;
        let is_mm = matches!(mnode.op, PlanOp::Op(Op::MatMul)) && mnode.control.is_empty();
        let bias_ok = bnode.info.shape.len() == 1
            && bnode.info.shape.first() == Some(&n_dim)
            && n_dim.is_some()
            && bnode.info.dtype == node.info.dtype;
        let group = HashSet::from([add]);
        if is_mm
            && bias_ok
            && mnode.info == node.info
            && uses.only_inside_but_shapes(plan, mm, &group)
        {
            if let &[x, w] = mnode.inputs.as_slice() {
                let two_d = |i: usize| plan.node(i).is_some_and(|n| n.info.shape.len() == 2);
                if two_d(x) && two_d(w) {
                    return Some((mm, [x, w, b]));
                }
            }
        }
    }
    None
}

impl Pass for MatMulBiasFusion {
    fn name(&self) -> &str {
        "matmul_bias_fusion"
    }

    fn run(&self, plan: &mut PlanGraph) -> Result<bool> {
        let mut changed = false;
        // Rewrites only remove the matched nodes, so the readers of other nodes stay valid.
        let uses = Uses::of(plan);
        for add in plan.live() {
            let Some((mm, inputs)) = matmul_bias_inputs(plan, &uses, add) else {
                continue;
            };
            // A relu that is the add's only data reader joins the kernel.
            let relu = match uses.data_users(plan, add).as_slice() {
                &[r] if !uses.pinned.contains(&add) => plan
                    .node(r)
                    .filter(|n| {
                        matches!(n.op, PlanOp::Op(Op::Unary(UnaryOp::Relu))) && n.control.is_empty()
                    })
                    .map(|_| r),
                _ => None,
            };
            let last = relu.unwrap_or(add);
            let Some(lnode) = plan.node(last) else {
                continue;
            };
            let new = plan.add(PlanNode {
                name: lnode.name.clone(),
                op: PlanOp::Kernel(Arc::new(MatMulBias::new(relu.is_some()))),
                inputs: inputs.to_vec(),
                control: vec![],
                info: lnode.info.clone(),
            });
            // The kernel's output has the matmul's (and the add's) shape and dtype.
            move_shape_uses(plan, &uses, mm, new);
            if relu.is_some() {
                move_shape_uses(plan, &uses, add, new);
            }
            plan.replace_uses(last, new);
            plan.remove(last);
            plan.remove(mm);
            if relu.is_some() {
                plan.remove(add);
            }
            changed = true;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(a: usize, b: usize, dst: usize) -> Instr {
        Instr::Binary {
            f: FusedBinary::Add,
            a,
            b,
            dst,
        }
    }

    #[test]
    fn dead_intermediates_pair_and_live_ones_do_not() {
        // y1 = y0 + x; y2 = y1 + x; y1 = y2 + x; y2 = y1 + x (a chain of adds: x in 0).
        let chain = [add(1, 0, 2), add(2, 0, 3), add(3, 0, 2), add(2, 0, 3)];
        let steps = schedule(&chain, 3);
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert!(!steps[0].in_place() && steps[1].in_place());
        assert!(matches!(
            steps[0],
            Step::Pair {
                a: 1,
                b: 0,
                other: 0,
                left: true,
                dst: 3,
                ..
            }
        ));
        // The register allocation of a real chain: the pair writes its left input in place.
        let reuse = [add(1, 0, 2), add(2, 0, 1), add(1, 0, 2), add(2, 0, 1)];
        let steps = schedule(&reuse, 1);
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert!(steps[0].in_place() && steps[1].in_place());
        // The intermediate (2) is read again by the third instruction: no pair there.
        let live = [add(1, 0, 2), add(0, 2, 3), add(2, 3, 1)];
        let steps = schedule(&live, 1);
        assert!(matches!(steps[0], Step::One(_)), "{steps:?}");
        // The intermediate is the output: no pair.
        let out = [add(1, 0, 2), add(2, 0, 3)];
        assert!(matches!(schedule(&out, 2)[0], Step::One(_)));
        // Right operand position is kept.
        let right = [add(1, 0, 2), add(0, 2, 3)];
        assert!(matches!(
            schedule(&right, 3)[0],
            Step::Pair { left: false, .. }
        ));
    }
}
