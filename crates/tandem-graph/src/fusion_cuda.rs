//! The fusion kernels on CUDA tensors: a [`FusedElementwise`] program becomes one generated
//! kernel (`tandem_tensor::cuda::fused_elementwise`). [`MatMulBias`] on CUDA tensors runs as
//! its ops (a cuBLAS product, then the broadcast add and relu), through
//! `tandem_ir::fused::matmul_bias`.

use super::{FusedBinary, FusedElementwise, FusedUnary, Instr};
use tandem_tensor::cuda::{fused_elementwise, FusedProgram, FusedStep};
use tandem_tensor::layout::broadcast_shapes;
use tandem_tensor::{BinaryOp, Result, Tensor, UnaryOp};

fn unary(f: FusedUnary) -> UnaryOp {
    match f {
        FusedUnary::Neg => UnaryOp::Neg,
        FusedUnary::Abs => UnaryOp::Abs,
        FusedUnary::Exp => UnaryOp::Exp,
        FusedUnary::Log => UnaryOp::Log,
        FusedUnary::Sqrt => UnaryOp::Sqrt,
        FusedUnary::Rsqrt => UnaryOp::Rsqrt,
        FusedUnary::Recip => UnaryOp::Recip,
        FusedUnary::Tanh => UnaryOp::Tanh,
        FusedUnary::Sigmoid => UnaryOp::Sigmoid,
        FusedUnary::Relu => UnaryOp::Relu,
        FusedUnary::Square => UnaryOp::Square,
    }
}

fn binary(f: FusedBinary) -> BinaryOp {
    match f {
        FusedBinary::Add => BinaryOp::Add,
        FusedBinary::Sub => BinaryOp::Sub,
        FusedBinary::Mul => BinaryOp::Mul,
        FusedBinary::Div => BinaryOp::Div,
        FusedBinary::Maximum => BinaryOp::Maximum,
        FusedBinary::Minimum => BinaryOp::Minimum,
    }
}

/// The register program as a chain of steps: every register holds the index of the step
/// that last wrote it; the chain ends at the step of the output register.
pub(super) fn to_program(k: &FusedElementwise) -> FusedProgram {
    let mut steps: Vec<FusedStep> = (0..k.inputs).map(FusedStep::Input).collect();
    if k.registers > k.inputs {
        // Registers above the inputs start at zero, as in the CPU kernel.
        steps.push(FusedStep::Const(0.0));
    }
    let mut reg: Vec<usize> = (0..k.registers).map(|r| r.min(k.inputs)).collect();
    for ins in &k.program {
        match *ins {
            Instr::Unary { f, src, dst } => {
                steps.push(FusedStep::Unary(unary(f), reg[src]));
                reg[dst] = steps.len() - 1;
            }
            Instr::Binary { f, a, b, dst } => {
                steps.push(FusedStep::Binary(binary(f), reg[a], reg[b]));
                reg[dst] = steps.len() - 1;
            }
            Instr::Scalar {
                f,
                src,
                value,
                left,
                dst,
            } => {
                steps.push(FusedStep::Const(value));
                let c = steps.len() - 1;
                let (a, b) = if left { (c, reg[src]) } else { (reg[src], c) };
                steps.push(FusedStep::Binary(binary(f), a, b));
                reg[dst] = steps.len() - 1;
            }
        }
    }
    // Later steps cannot feed the output (steps only read earlier ones): drop them.
    steps.truncate(reg[k.output] + 1);
    FusedProgram {
        dtype: k.dtype,
        num_inputs: k.inputs,
        steps,
    }
}

/// Runs a fused program on CUDA inputs (checked by the caller: count and dtype). Inputs that
/// are neither full-size nor one element are broadcast (materialized) first.
pub(super) fn run_fused(k: &FusedElementwise, inputs: &[&Tensor]) -> Result<Tensor> {
    let mut shape: Vec<usize> = Vec::new();
    for t in inputs {
        shape = broadcast_shapes("fused_elementwise", &shape, t.shape())?.to_vec();
    }
    let n: usize = shape.iter().product();
    let mut held = Vec::with_capacity(inputs.len());
    for t in inputs {
        if t.shape() == shape.as_slice() || (t.numel() == 1 && n != 1) {
            held.push((*t).clone());
        } else {
            held.push(t.expand(&shape)?.contiguous()?);
        }
    }
    let refs: Vec<&Tensor> = held.iter().collect();
    let out = fused_elementwise(&to_program(k), &refs)?;
    if out.shape() == shape.as_slice() {
        Ok(out)
    } else {
        out.reshape(&shape.iter().map(|&d| d as isize).collect::<Vec<_>>())
    }
}
