//! PyTorch-style printing.
//!
//! `format!("{t}")` prints a tensor the way PyTorch's `repr` does, followed by its shape and
//! dtype (and device when not on the CPU):
//!
//! ```
//! use tandem_tensor::Tensor;
//! let t = Tensor::from_vec(vec![1.0f32, -2.5, 3.0, 4.0], &[2, 2]).unwrap();
//! assert_eq!(
//!     t.to_string(),
//!     "tensor([[ 1.0000, -2.5000],\n        [ 3.0000,  4.0000]], shape=[2, 2], dtype=float32)"
//! );
//! ```
//!
//! The rules follow PyTorch's defaults (precision 4, summarize above 1000 elements showing 3
//! items at each edge, 80-column lines):
//! - One number format for the whole tensor, chosen from its finite non-zero values: when
//!   they are all integers, `1.` style (scientific if the largest is above 1e8 or the ratio of
//!   largest to smallest magnitude is above 1000); otherwise fixed with `precision` decimals,
//!   or scientific (`1.0000e-05`) when the ratio is above 1000, the largest is above 1e8 or the
//!   smallest is below 1e-4. NaN and infinities print as `nan`, `inf`, `-inf`.
//! - Every element is right-aligned to the widest finite one; integers and bools (`True`,
//!   `False`) print plainly, also aligned.
//! - Rows wrap at 80 columns; nested dimensions are separated by `,` plus one newline per
//!   remaining dimension; summarized dimensions show `...` between their edge items.
//! - The `shape=..., dtype=...` suffixes move to a new line when they would pass 80 columns.

use crate::{CpuStorage, Device, Result, Tensor};
use std::fmt;

/// PyTorch's line width for printing.
const LINE_WIDTH: usize = 80;
/// The opening of every printed tensor; nested lines are indented by its length.
const PREFIX: &str = "tensor(";

/// One element, converted for printing without losing integer precision.
#[derive(Clone, Copy, Debug)]
enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
}

fn read_value(s: &CpuStorage, p: usize) -> Value {
    match s {
        CpuStorage::F32(v) => Value::Float(v[p] as f64),
        CpuStorage::F64(v) => Value::Float(v[p]),
        CpuStorage::F16(v) => Value::Float(v[p].to_f64()),
        CpuStorage::BF16(v) => Value::Float(v[p].to_f64()),
        CpuStorage::I64(v) => Value::Int(v[p]),
        CpuStorage::I32(v) => Value::Int(v[p] as i64),
        CpuStorage::U8(v) => Value::Int(v[p] as i64),
        CpuStorage::Bool(v) => Value::Bool(v[p]),
    }
}

/// `nan`, `inf` or `-inf` for a non-finite value (as Python prints them).
fn non_finite(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("nan".into())
    } else if v.is_infinite() {
        Some(if v > 0.0 { "inf" } else { "-inf" }.into())
    } else {
        None
    }
}

/// Fixed notation with `precision` decimals (Python's `{:.Nf}`; both round half to even on the
/// exact binary value).
fn fixed(v: f64, precision: usize) -> String {
    non_finite(v).unwrap_or_else(|| format!("{v:.precision$}"))
}

/// Scientific notation with `precision` decimals and an exponent of at least two digits with
/// its sign (Python's `{:.Ne}`, e.g. `1.0000e+10`).
fn scientific(v: f64, precision: usize) -> String {
    if let Some(s) = non_finite(v) {
        return s;
    }
    let s = format!("{v:.precision$e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// The number format shared by all elements of one printed tensor.
struct Formatter {
    floating: bool,
    int_mode: bool,
    sci_mode: bool,
    max_width: usize,
    precision: usize,
}

impl Formatter {
    /// Chooses the format from the values that will be printed.
    fn new(values: &[Value], floating: bool, precision: usize) -> Formatter {
        let mut f = Formatter {
            floating,
            int_mode: true,
            sci_mode: false,
            max_width: 1,
            precision,
        };
        if !floating {
            for &v in values {
                f.max_width = f.max_width.max(plain(v).len());
            }
            return f;
        }
        let finite: Vec<f64> = values
            .iter()
            .filter_map(|&v| match v {
                Value::Float(x) if x.is_finite() && x != 0.0 => Some(x),
                _ => None,
            })
            .collect();
        if finite.is_empty() {
            return f;
        }
        let min = finite.iter().fold(f64::INFINITY, |m, x| m.min(x.abs()));
        let max = finite.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        f.int_mode = finite.iter().all(|x| *x == x.ceil());
        let widest = |fmt: &dyn Fn(f64) -> String, extra: usize| {
            finite
                .iter()
                .map(|&x| fmt(x).len() + extra)
                .max()
                .unwrap_or(1)
        };
        let big_range = max / min > 1000.0 || max > 1.0e8;
        if f.int_mode {
            if big_range {
                f.sci_mode = true;
                f.max_width = f.max_width.max(widest(&|x| scientific(x, precision), 0));
            } else {
                // Room for the trailing "." that marks a float.
                f.max_width = f.max_width.max(widest(&|x| format!("{x:.0}"), 1));
            }
        } else if big_range || min < 1.0e-4 {
            f.sci_mode = true;
            f.max_width = f.max_width.max(widest(&|x| scientific(x, precision), 0));
        } else {
            f.max_width = f.max_width.max(widest(&|x| fixed(x, precision), 0));
        }
        f
    }

    /// One element, right-aligned to the common width.
    fn format(&self, v: Value) -> String {
        let s = match v {
            Value::Float(x) if self.floating => {
                if self.sci_mode {
                    scientific(x, self.precision)
                } else if self.int_mode {
                    non_finite(x).unwrap_or_else(|| format!("{x:.0}."))
                } else {
                    fixed(x, self.precision)
                }
            }
            other => plain(other),
        };
        format!("{s:>width$}", width = self.max_width)
    }
}

/// Integers and bools as Python prints them.
fn plain(v: Value) -> String {
    match v {
        Value::Float(x) => non_finite(x).unwrap_or_else(|| x.to_string()),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => if b { "True" } else { "False" }.to_string(),
    }
}

/// What to print: for each dimension the indices shown and whether `...` stands for the rest,
/// and the shown values in row-major order.
struct Printer {
    shape: Vec<usize>,
    shown: Vec<Vec<usize>>,
    elided: Vec<bool>,
    edge_items: usize,
    formatter: Formatter,
}

impl Printer {
    fn new(
        host: &Tensor,
        precision: usize,
        edge_items: usize,
        threshold: usize,
    ) -> Result<(Printer, Vec<Value>)> {
        let shape = host.shape().to_vec();
        let summarize = host.numel() > threshold;
        let mut shown = Vec::with_capacity(shape.len());
        let mut elided = Vec::with_capacity(shape.len());
        for &size in &shape {
            if summarize && size > edge_items.saturating_mul(2) {
                shown.push((0..edge_items).chain(size - edge_items..size).collect());
                elided.push(true);
            } else {
                shown.push((0..size).collect());
                elided.push(false);
            }
        }
        let (storage, layout) = host.cpu("display")?;
        let mut values = Vec::new();
        let count: usize = shown.iter().map(Vec::len).product();
        let mut at = vec![0usize; shape.len()];
        let mut index = vec![0usize; shape.len()];
        for _ in 0..count {
            for (d, i) in index.iter_mut().enumerate() {
                *i = shown[d][at[d]];
            }
            values.push(read_value(storage, layout.position(&index)));
            for d in (0..shape.len()).rev() {
                at[d] += 1;
                if at[d] < shown[d].len() {
                    break;
                }
                at[d] = 0;
            }
        }
        let formatter = Formatter::new(&values, host.dtype().is_float(), precision);
        let printer = Printer {
            shape,
            shown,
            elided,
            edge_items,
            formatter,
        };
        Ok((printer, values))
    }

    /// Prints dimension `dim` onward, taking values from `values` in order.
    fn render(
        &self,
        dim: usize,
        indent: usize,
        values: &mut impl Iterator<Item = Value>,
    ) -> String {
        let rank = self.shape.len();
        if rank == 0 {
            return values
                .next()
                .map(|v| self.formatter.format(v))
                .unwrap_or_default();
        }
        let count = self.shown[dim].len();
        let elided = self.elided[dim];
        if dim + 1 == rank {
            let mut items: Vec<String> = Vec::with_capacity(count + 1);
            for k in 0..count {
                if elided && k == self.edge_items {
                    items.push(" ...".into());
                }
                items.push(
                    values
                        .next()
                        .map(|v| self.formatter.format(v))
                        .unwrap_or_default(),
                );
            }
            if elided && self.edge_items == 0 {
                items.push("...".into());
            }
            let element = self.formatter.max_width + 2;
            let per_line = (LINE_WIDTH.saturating_sub(indent) / element).max(1);
            let lines: Vec<String> = items.chunks(per_line).map(|c| c.join(", ")).collect();
            let sep = format!(",\n{}", " ".repeat(indent + 1));
            return format!("[{}]", lines.join(&sep));
        }
        let mut slices: Vec<String> = Vec::with_capacity(count + 1);
        for k in 0..count {
            if elided && k == self.edge_items {
                slices.push("...".into());
            }
            slices.push(self.render(dim + 1, indent + 1, values));
        }
        if elided && self.edge_items == 0 {
            slices.push("...".into());
        }
        let sep = format!(",{}{}", "\n".repeat(rank - dim - 1), " ".repeat(indent + 1));
        format!("[{}]", slices.join(&sep))
    }
}

/// Appends `, suffix` items, moving one to a new line (indented) when it would pass the
/// line width, as PyTorch does.
fn add_suffixes(body: String, suffixes: &[String]) -> String {
    let mut out = body;
    let mut last_line = match out.rfind('\n') {
        Some(i) => out.len() - i + 1,
        None => out.len() + 2,
    };
    for suffix in suffixes {
        if last_line + suffix.len() + 2 > LINE_WIDTH {
            out.push_str(",\n");
            out.push_str(&" ".repeat(PREFIX.len()));
            last_line = PREFIX.len() + suffix.len();
        } else {
            out.push_str(", ");
            last_line += suffix.len() + 2;
        }
        out.push_str(suffix);
    }
    out.push(')');
    out
}

fn tensor_body(
    t: &Tensor,
    precision: usize,
    edge_items: usize,
    threshold: usize,
) -> Result<String> {
    if t.numel() == 0 {
        return Ok("[]".into());
    }
    let host = t.to_device(Device::Cpu)?;
    let (printer, values) = Printer::new(&host, precision, edge_items, threshold)?;
    Ok(printer.render(0, PREFIX.len(), &mut values.into_iter()))
}

impl Tensor {
    /// Prints like [`Display`](fmt::Display) with custom options: `precision` decimals,
    /// `edge_items` items at each end of a summarized dimension, and summarization when the
    /// tensor has more than `threshold` elements (PyTorch's `set_printoptions`; `Display` uses
    /// 4, 3 and 1000). With `edge_items == 0` a summarized dimension prints as `...` alone.
    ///
    /// ```
    /// use tandem_tensor::{DType, Tensor};
    /// let t = Tensor::arange(0.0, 10.0, 1.0, DType::I64).unwrap();
    /// assert_eq!(t.fmt_with(4, 2, 5), "tensor([0, 1,  ..., 8, 9], shape=[10], dtype=int64)");
    /// ```
    pub fn fmt_with(&self, precision: usize, edge_items: usize, threshold: usize) -> String {
        let body = tensor_body(self, precision, edge_items, threshold)
            .unwrap_or_else(|e| format!("<cannot print: {e}>"));
        let mut suffixes = vec![
            format!("shape={:?}", self.shape()),
            format!("dtype={}", self.dtype()),
        ];
        if self.device() != Device::Cpu {
            suffixes.push(format!("device={}", self.device()));
        }
        add_suffixes(format!("{PREFIX}{body}"), &suffixes)
    }
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fmt_with(4, 3, 1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    fn f32s(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(v, shape).unwrap()
    }

    #[test]
    fn fixed_point_matrix() {
        let t = f32s(&[1.0, -2.5, 3.0, 4.0], &[2, 2]);
        assert_eq!(
            t.to_string(),
            "tensor([[ 1.0000, -2.5000],\n        [ 3.0000,  4.0000]], shape=[2, 2], dtype=float32)"
        );
        let t = f32s(&[-1.5, 0.25], &[2]);
        assert_eq!(
            t.to_string(),
            "tensor([-1.5000,  0.2500], shape=[2], dtype=float32)"
        );
        // The same values through a transposed view.
        let t = f32s(&[1.0, 3.0, -2.5, 4.0], &[2, 2]).t().unwrap();
        assert!(t.to_string().starts_with("tensor([[ 1.0000, -2.5000],\n"));
    }

    #[test]
    fn integer_valued_floats_scalars_and_empty() {
        assert_eq!(
            Tensor::scalar(7.0f32).to_string(),
            "tensor(7., shape=[], dtype=float32)"
        );
        assert_eq!(
            Tensor::scalar(5i64).to_string(),
            "tensor(5, shape=[], dtype=int64)"
        );
        assert_eq!(
            Tensor::zeros(&[0], DType::F32).to_string(),
            "tensor([], shape=[0], dtype=float32)"
        );
        assert_eq!(
            Tensor::zeros(&[2, 0, 3], DType::I64).to_string(),
            "tensor([], shape=[2, 0, 3], dtype=int64)"
        );
        assert_eq!(
            f32s(&[0.0, 0.0], &[2]).to_string(),
            "tensor([0., 0.], shape=[2], dtype=float32)"
        );
        assert_eq!(
            f32s(&[-0.0, 1.0, 20.0], &[3]).to_string(),
            "tensor([-0.,  1., 20.], shape=[3], dtype=float32)"
        );
    }

    #[test]
    fn scientific_notation() {
        let t = Tensor::from_vec(vec![1e10f64, 1.0], &[2]).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([1.0000e+10, 1.0000e+00], shape=[2], dtype=float64)"
        );
        let t = f32s(&[0.0001, 1.0], &[2]);
        assert_eq!(
            t.to_string(),
            "tensor([1.0000e-04, 1.0000e+00], shape=[2], dtype=float32)"
        );
        let t = Tensor::from_vec(vec![1e-5f64, -2.5e-6], &[2]).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([ 1.0000e-05, -2.5000e-06], shape=[2], dtype=float64)"
        );
        let t = Tensor::from_vec(vec![123456789.0f64], &[1]).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([1.2346e+08], shape=[1], dtype=float64)"
        );
        assert_eq!(scientific(1e100, 4), "1.0000e+100");
        assert_eq!(scientific(0.0, 2), "0.00e+00");
    }

    #[test]
    fn nan_and_infinities() {
        let t = f32s(&[1.0, f32::NAN, f32::INFINITY], &[3]);
        assert_eq!(
            t.to_string(),
            "tensor([1., nan, inf], shape=[3], dtype=float32)"
        );
        let t = f32s(&[1.5, f32::NAN, f32::NEG_INFINITY], &[3]);
        assert_eq!(
            t.to_string(),
            "tensor([1.5000,    nan,   -inf], shape=[3], dtype=float32)"
        );
        let t = f32s(&[f32::NAN], &[1]);
        assert_eq!(t.to_string(), "tensor([nan], shape=[1], dtype=float32)");
    }

    #[test]
    fn ints_and_bools() {
        let t = Tensor::from_vec(vec![true, false], &[2]).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([ True, False], shape=[2], dtype=bool)"
        );
        let t = Tensor::from_vec(vec![-5i32, 10, 300], &[3]).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([ -5,  10, 300], shape=[3], dtype=int32)"
        );
        let t = Tensor::from_vec(vec![i64::MAX], &[1]).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([9223372036854775807], shape=[1], dtype=int64)"
        );
        let t = Tensor::arange(0.0, 8.0, 1.0, DType::U8)
            .unwrap()
            .reshape(&[2, 2, 2])
            .unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([[[0, 1],\n         [2, 3]],\n\n        [[4, 5],\n         [6, 7]]], shape=[2, 2, 2], dtype=uint8)"
        );
    }

    #[test]
    fn line_wrapping_and_suffix_wrapping() {
        let t = Tensor::arange(0.0, 30.0, 1.0, DType::F32).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.,\n        \
             14., 15., 16., 17., 18., 19., 20., 21., 22., 23., 24., 25., 26., 27.,\n        \
             28., 29.], shape=[30], dtype=float32)"
        );
        let t = Tensor::arange(0.0, 14.0, 1.0, DType::F32).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.],\n       \
             shape=[14], dtype=float32)"
        );
    }

    #[test]
    fn summarization() {
        let t = Tensor::arange(0.0, 2000.0, 1.0, DType::I64).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([   0,    1,    2,  ..., 1997, 1998, 1999], shape=[2000], dtype=int64)"
        );
        let t = Tensor::zeros(&[2000, 2000], DType::F32);
        let row = "[0., 0., 0.,  ..., 0., 0., 0.]";
        let expect = format!(
            "tensor([{row},\n        {row},\n        {row},\n        ...,\n        {row},\n        {row},\n        {row}], shape=[2000, 2000], dtype=float32)"
        );
        assert_eq!(t.to_string(), expect);
        let t = Tensor::ones(&[2, 1000], DType::F64);
        let row = "[1., 1., 1.,  ..., 1., 1., 1.]";
        assert_eq!(
            t.to_string(),
            format!("tensor([{row},\n        {row}], shape=[2, 1000], dtype=float64)")
        );
        // Only the shown values choose the format: the hidden middle value 1e9 does not.
        let mut v = vec![1.5f32; 1001];
        v[500] = 1e9;
        let t = f32s(&v, &[1001]);
        assert!(t
            .to_string()
            .starts_with("tensor([1.5000, 1.5000, 1.5000,  ..., 1.5000,"));
    }

    #[test]
    fn custom_options() {
        let t = Tensor::arange(0.0, 10.0, 1.0, DType::I64).unwrap();
        assert_eq!(
            t.fmt_with(4, 1, 5),
            "tensor([0,  ..., 9], shape=[10], dtype=int64)"
        );
        assert_eq!(
            t.fmt_with(4, 0, 5),
            "tensor([...], shape=[10], dtype=int64)"
        );
        let t = f32s(&[1.12345], &[1]);
        assert_eq!(
            t.fmt_with(2, 3, 1000),
            "tensor([1.12], shape=[1], dtype=float32)"
        );
        let t = Tensor::arange(0.0, 27.0, 1.0, DType::I32)
            .unwrap()
            .reshape(&[3, 3, 3])
            .unwrap();
        assert_eq!(
            t.fmt_with(4, 1, 10),
            "tensor([[[ 0,  ...,  2],\n         ...,\n         [ 6,  ...,  8]],\n\n        ...,\n\n        \
             [[18,  ..., 20],\n         ...,\n         [24,  ..., 26]]], shape=[3, 3, 3], dtype=int32)"
        );
    }

    #[test]
    fn half_precision_values() {
        let t = Tensor::from_vec(
            vec![crate::bf16::from_f32(0.1), crate::bf16::from_f32(2.0)],
            &[2],
        )
        .unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([0.1001, 2.0000], shape=[2], dtype=bfloat16)"
        );
        let t = Tensor::from_vec(vec![crate::f16::from_f32(3.0)], &[1]).unwrap();
        assert_eq!(t.to_string(), "tensor([3.], shape=[1], dtype=float16)");
    }
}
