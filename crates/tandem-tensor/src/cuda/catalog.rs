//! Every kernel source the backend can generate, for checking that they all compile (NVRTC
//! works without a GPU, so this runs wherever `libnvrtc` loads).

use super::source::{raw_type, FusedProgram, FusedStep};
use super::{conv, elementwise, index, optim, pool, reduce};
use crate::{ArgReduceOp, BinaryOp, DType, Error, ReduceOp, Result, UnaryOp};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// (name, source) of every kernel module instantiation.
pub(crate) fn all_sources() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    let floats = [DType::F32, DType::F64, DType::F16, DType::BF16];
    let mut raws: Vec<&str> = DType::ALL.iter().map(|&d| raw_type(d)).collect();
    raws.dedup();
    for raw in &raws {
        v.push((format!("copy:{raw}"), elementwise::raw_source(raw)));
        v.push((format!("copy_into:{raw}"), index::copy_into_source(raw)));
        v.push((format!("im2col:{raw}"), conv::im2col_source(raw)));
        for it in ["long long", "int"] {
            v.push((format!("gather:{raw}:{it}"), index::gather_source(raw, it)));
        }
    }
    for d in DType::ALL {
        for to in DType::ALL {
            v.push((format!("cast:{d}:{to}"), elementwise::cast_source(d, to)));
        }
        for op in UnaryOp::ALL {
            if let Some(s) = elementwise::unary_source(op, d) {
                v.push((format!("unary:{}:{d}", op.name()), s));
            }
        }
        for op in BinaryOp::ALL {
            if let Some(s) = elementwise::binary_source(op, d) {
                v.push((format!("binary:{}:{d}", op.name()), s));
            }
        }
        for op in [
            ReduceOp::Sum,
            ReduceOp::Mean,
            ReduceOp::Max,
            ReduceOp::Min,
            ReduceOp::Prod,
        ] {
            if op != ReduceOp::Mean || d.is_float() {
                v.push((
                    format!("reduce:{}:{d}", op.name()),
                    reduce::reduce_source(op, d),
                ));
            }
        }
        for op in [ArgReduceOp::ArgMax, ArgReduceOp::ArgMin] {
            v.push((
                format!("argreduce:{}:{d}", op.name()),
                reduce::argreduce_source(op, d),
            ));
        }
        for it in ["long long", "int"] {
            if let Some(s) = index::scatter_source(d, it) {
                v.push((format!("scatter_add:{d}:{it}"), s));
            }
        }
    }
    for d in floats {
        v.push((format!("softmax:{d}"), reduce::row_source(d, "SOFTMAX")));
        v.push((format!("xent:{d}"), reduce::row_source(d, "XENT")));
        v.push((format!("col2im:{d}"), conv::col2im_source(d)));
    }
    // A representative fused program per dtype family: relu(a * b + 0.5) > c.
    for d in [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I64,
        DType::I32,
    ] {
        let relu_or_abs = if d.is_float() {
            UnaryOp::Relu
        } else {
            UnaryOp::Abs
        };
        let p = FusedProgram {
            dtype: d,
            num_inputs: 3,
            steps: vec![
                FusedStep::Input(0),
                FusedStep::Input(1),
                FusedStep::Binary(BinaryOp::Mul, 0, 1),
                FusedStep::Const(0.5),
                FusedStep::Binary(BinaryOp::Add, 2, 3),
                FusedStep::Unary(relu_or_abs, 4),
                FusedStep::Input(2),
                FusedStep::Binary(BinaryOp::Gt, 5, 6),
            ],
        };
        if let Ok(s) = p.source() {
            v.push((format!("fused:{d}"), s));
        }
    }
    for d in [DType::F32, DType::F64] {
        v.push((format!("optim:{d}"), optim::optim_source(d)));
        v.push((format!("pool:{d}"), pool::pool_source(d)));
    }
    v
}

/// Compiles every kernel source with NVRTC for `arch` (e.g. `compute_90`) and returns how many
/// were compiled; the first failure is an error carrying NVRTC's log. Needs `libnvrtc`, not a
/// GPU.
pub fn compile_all_kernels(arch: &str) -> Result<usize> {
    const OP: &str = "compile_all_kernels";
    if !super::nvrtc_present() {
        return Err(Error::invalid(
            OP,
            "the NVRTC library (libnvrtc) could not be loaded",
        ));
    }
    let sources = all_sources();
    for (name, src) in &sources {
        let opts = CompileOptions {
            options: vec![format!("--gpu-architecture={arch}")],
            ..Default::default()
        };
        catch_unwind(AssertUnwindSafe(|| compile_ptx_with_opts(src, opts)))
            .map_err(|_| Error::invalid(OP, "NVRTC could not be loaded"))?
            .map_err(|e| Error::invalid(OP, format!("kernel `{name}` does not compile: {e}")))?;
    }
    Ok(sources.len())
}
