//! CUDA C source generation: the `#define`s that instantiate a kernel family for a dtype, the
//! C expression of every unary and binary op, and the fused elementwise program generator
//! (one kernel for a chain of elementwise ops, for graph-mode fusion). Pure Rust: the generated
//! text is tested on machines without a GPU, and compiled by NVRTC on the device.

use crate::{BinaryOp, DType, Error, Result, UnaryOp};
use std::fmt::Write;

/// The shared header (types, offsets, half/bfloat16 conversions) put in front of every kernel.
pub const COMMON_HEADER: &str = include_str!("kernels/common.cuh");

/// `#define`s describing `dtype` under the macro prefix `p` (`A`, `O`, ...): `p_T` (storage
/// type), `p_C` (compute type), `p_LOAD(x)` / `p_STORE(x)` (storage <-> compute),
/// `p_TO_F64(x)` / `p_FROM_F64(v)` (exact conversions through double with Rust `as`
/// semantics), and `p_IS_FLOAT`.
pub fn dtype_defines(p: &str, dtype: DType) -> String {
    let (t, c, load, store, to64, from64, float) = match dtype {
        DType::F32 => (
            "float",
            "float",
            "(x)",
            "(x)",
            "((double)(x))",
            "((float)(v))",
            1,
        ),
        DType::F64 => ("double", "double", "(x)", "(x)", "(x)", "(v)", 1),
        DType::F16 => (
            "unsigned short",
            "float",
            "tdm_h2f(x)",
            "tdm_f2h(x)",
            "((double)tdm_h2f(x))",
            "tdm_d2h(v)",
            1,
        ),
        DType::BF16 => (
            "unsigned short",
            "float",
            "tdm_bf2f(x)",
            "tdm_f2bf(x)",
            "((double)tdm_bf2f(x))",
            "tdm_f2bf((float)(v))",
            1,
        ),
        DType::I64 => (
            "long long",
            "long long",
            "((long long)(x))",
            "((long long)(x))",
            "((double)(x))",
            "tdm_d2i64(v)",
            0,
        ),
        DType::I32 => (
            "int",
            "long long",
            "((long long)(x))",
            "((int)(x))",
            "((double)(x))",
            "tdm_d2i32(v)",
            0,
        ),
        DType::U8 => (
            "unsigned char",
            "long long",
            "((long long)(x))",
            "((unsigned char)(x))",
            "((double)(x))",
            "tdm_d2u8(v)",
            0,
        ),
        DType::Bool => (
            "unsigned char",
            "long long",
            "((long long)(x))",
            "((unsigned char)((x) != 0))",
            "((double)(x))",
            "((unsigned char)((v) != 0.0))",
            0,
        ),
    };
    format!(
        "#define {p}_T {t}\n#define {p}_C {c}\n#define {p}_LOAD(x) {load}\n#define {p}_STORE(x) {store}\n\
         #define {p}_TO_F64(x) {to64}\n#define {p}_FROM_F64(v) {from64}\n#define {p}_IS_FLOAT {float}\n"
    )
}

/// The unsigned integer type of `dtype`'s size (raw copies and fills move bits only).
pub fn raw_type(dtype: DType) -> &'static str {
    match dtype.size_in_bytes() {
        1 => "unsigned char",
        2 => "unsigned short",
        4 => "unsigned int",
        _ => "unsigned long long",
    }
}

fn math(name: &str, dtype: DType) -> String {
    if dtype == DType::F64 {
        name.to_string()
    } else {
        format!("{name}f")
    }
}

/// The C expression of `op` applied to the variable `x` (of `dtype`'s compute type), or
/// `None` when the op is not defined for the dtype (the same rules as the CPU kernels).
pub fn unary_expr(op: UnaryOp, dtype: DType, x: &str) -> Option<String> {
    let c = if dtype == DType::F64 {
        "double"
    } else {
        "float"
    };
    if dtype.is_float() {
        let f = |n: &str| format!("{}({x})", math(n, dtype));
        return Some(match op {
            UnaryOp::Neg => format!("(-({x}))"),
            UnaryOp::Abs => f("fabs"),
            UnaryOp::Exp => f("exp"),
            UnaryOp::Log => f("log"),
            UnaryOp::Sqrt => f("sqrt"),
            UnaryOp::Rsqrt => format!("(({c})1 / {})", f("sqrt")),
            UnaryOp::Recip => format!("(({c})1 / ({x}))"),
            UnaryOp::Sin => f("sin"),
            UnaryOp::Cos => f("cos"),
            UnaryOp::Tanh => f("tanh"),
            UnaryOp::Sigmoid => format!("(({c})1 / (({c})1 + {}(-({x}))))", math("exp", dtype)),
            UnaryOp::Relu => format!("(({x}) < ({c})0 ? ({c})0 : ({x}))"),
            UnaryOp::Erf => f("erf"),
            UnaryOp::Sign => {
                format!("(({x}) > ({c})0 ? ({c})1 : (({x}) < ({c})0 ? ({c})-1 : ({x})))")
            }
            UnaryOp::Floor => f("floor"),
            UnaryOp::Ceil => f("ceil"),
            UnaryOp::Round => f("rint"),
            UnaryOp::Square => format!("(({x}) * ({x}))"),
            UnaryOp::Log1p => f("log1p"),
            UnaryOp::Expm1 => f("expm1"),
            UnaryOp::Not => return None,
        });
    }
    let u = "unsigned long long";
    match dtype {
        DType::Bool => (op == UnaryOp::Not).then(|| format!("((long long)(({x}) == 0))")),
        _ => Some(match op {
            UnaryOp::Neg => format!("((long long)(0ull - ({u})({x})))"),
            UnaryOp::Abs => format!("(({x}) < 0 ? (long long)(0ull - ({u})({x})) : ({x}))"),
            UnaryOp::Sign => format!("((long long)(({x}) > 0) - (long long)(({x}) < 0))"),
            UnaryOp::Square => format!("((long long)(({u})({x}) * ({u})({x})))"),
            UnaryOp::Relu => format!("(({x}) < 0 ? 0LL : ({x}))"),
            _ => return None,
        }),
    }
}

/// The C expression of `op` on the variables `a` and `b` (of `dtype`'s compute type), or
/// `None` when the op is not defined for the dtype. Comparisons give 0/1.
pub fn binary_expr(op: BinaryOp, dtype: DType, a: &str, b: &str) -> Option<String> {
    let cmp = |sym: &str| format!("(({a}) {sym} ({b}))");
    if dtype == DType::Bool {
        return Some(match op {
            BinaryOp::Eq => format!("((({a}) != 0) == (({b}) != 0))"),
            BinaryOp::Ne => format!("((({a}) != 0) != (({b}) != 0))"),
            BinaryOp::Lt => format!("(({a}) == 0 && ({b}) != 0)"),
            BinaryOp::Le => format!("(({a}) == 0 || ({b}) != 0)"),
            BinaryOp::Gt => format!("(({a}) != 0 && ({b}) == 0)"),
            BinaryOp::Ge => format!("(({a}) != 0 || ({b}) == 0)"),
            BinaryOp::And | BinaryOp::Minimum => format!("(({a}) != 0 && ({b}) != 0)"),
            BinaryOp::Or | BinaryOp::Maximum => format!("(({a}) != 0 || ({b}) != 0)"),
            _ => return None,
        });
    }
    let common = match op {
        BinaryOp::Eq => Some(cmp("==")),
        BinaryOp::Ne => Some(cmp("!=")),
        BinaryOp::Lt => Some(cmp("<")),
        BinaryOp::Le => Some(cmp("<=")),
        BinaryOp::Gt => Some(cmp(">")),
        BinaryOp::Ge => Some(cmp(">=")),
        BinaryOp::And | BinaryOp::Or => return None,
        _ => None,
    };
    if common.is_some() {
        return common;
    }
    if dtype.is_float() {
        return Some(match op {
            BinaryOp::Add => cmp("+"),
            BinaryOp::Sub => cmp("-"),
            BinaryOp::Mul => cmp("*"),
            BinaryOp::Div => cmp("/"),
            BinaryOp::Pow => format!("{}({a}, {b})", math("pow", dtype)),
            // NaN-propagating: a + b is NaN when either is.
            BinaryOp::Maximum => {
                format!("((({a}) != ({a}) || ({b}) != ({b})) ? (({a}) + ({b})) : (({a}) > ({b}) ? ({a}) : ({b})))")
            }
            BinaryOp::Minimum => {
                format!("((({a}) != ({a}) || ({b}) != ({b})) ? (({a}) + ({b})) : (({a}) < ({b}) ? ({a}) : ({b})))")
            }
            _ => return None,
        });
    }
    let u = "unsigned long long";
    Some(match op {
        BinaryOp::Add => format!("((long long)(({u})({a}) + ({u})({b})))"),
        BinaryOp::Sub => format!("((long long)(({u})({a}) - ({u})({b})))"),
        BinaryOp::Mul => format!("((long long)(({u})({a}) * ({u})({b})))"),
        BinaryOp::Div => format!(
            "(({b}) == 0 ? 0LL : (({b}) == -1 ? (long long)(0ull - ({u})({a})) : ({a}) / ({b})))"
        ),
        BinaryOp::Pow => format!("tdm_ipow({a}, {b})"),
        BinaryOp::Maximum => format!("(({a}) > ({b}) ? ({a}) : ({b}))"),
        BinaryOp::Minimum => format!("(({a}) < ({b}) ? ({a}) : ({b}))"),
        _ => return None,
    })
}

/// One step of a fused elementwise program. Steps refer to earlier steps by index.
#[derive(Clone, Debug, PartialEq)]
pub enum FusedStep {
    /// Loads input `k` (a full-size contiguous tensor, or a one-element tensor broadcast to
    /// every position).
    Input(usize),
    /// A constant, converted to the program's compute type.
    Const(f64),
    /// A unary op of an earlier step.
    Unary(UnaryOp, usize),
    /// A binary op of two earlier steps.
    Binary(BinaryOp, usize, usize),
}

/// A chain of elementwise ops over `num_inputs` tensors of one dtype, computed in registers
/// by one generated kernel; the value of the last step is written out (bool when the last
/// step is a comparison, otherwise `dtype`).
#[derive(Clone, Debug, PartialEq)]
pub struct FusedProgram {
    /// The dtype of every input.
    pub dtype: DType,
    /// Number of input tensors.
    pub num_inputs: usize,
    /// The steps, in evaluation order.
    pub steps: Vec<FusedStep>,
}

/// Most inputs of a fused kernel (a bit mask in one 64-bit argument marks broadcast ones).
pub const MAX_FUSED_INPUTS: usize = 32;

impl FusedProgram {
    /// The dtype of the result.
    pub fn out_dtype(&self) -> DType {
        match self.steps.last() {
            Some(FusedStep::Binary(op, _, _)) if op.is_comparison() => DType::Bool,
            _ => self.dtype,
        }
    }

    fn bad(&self, msg: impl Into<String>) -> Error {
        Error::invalid("fused_elementwise", msg)
    }

    /// Checks step references, input indices and that every op is defined for the dtype.
    pub fn validate(&self) -> Result<()> {
        if self.steps.is_empty() {
            return Err(self.bad("a fused program needs at least one step"));
        }
        if self.num_inputs > MAX_FUSED_INPUTS {
            return Err(self.bad(format!(
                "{} inputs; a fused kernel takes at most {MAX_FUSED_INPUTS}",
                self.num_inputs
            )));
        }
        for (i, s) in self.steps.iter().enumerate() {
            let earlier = |j: usize| -> Result<()> {
                if j >= i {
                    return Err(self.bad(format!(
                        "step {i} uses step {j}, which is not an earlier step"
                    )));
                }
                Ok(())
            };
            match *s {
                FusedStep::Input(k) if k >= self.num_inputs => {
                    return Err(self.bad(format!("step {i} loads input {k} of {}", self.num_inputs)))
                }
                FusedStep::Input(_) | FusedStep::Const(_) => {}
                FusedStep::Unary(op, j) => {
                    earlier(j)?;
                    if unary_expr(op, self.dtype, "x").is_none() {
                        return Err(Error::UnsupportedDType {
                            op: op.name(),
                            dtype: self.dtype,
                            device: crate::Device::Cuda(0),
                        });
                    }
                }
                FusedStep::Binary(op, j, k) => {
                    earlier(j)?;
                    earlier(k)?;
                    if binary_expr(op, self.dtype, "a", "b").is_none() {
                        return Err(Error::UnsupportedDType {
                            op: op.name(),
                            dtype: self.dtype,
                            device: crate::Device::Cuda(0),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The kernel's name: `tdm_fused_` and a hash of the program, so different programs
    /// never collide in one module cache.
    pub fn kernel_name(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{self:?}").hash(&mut h);
        format!("tdm_fused_{:016x}", h.finish())
    }

    /// The complete CUDA C source (header included) of the kernel
    /// `kernel_name()(O_T* out, const A_T* in0, ..., unsigned long long broadcast_mask, long long n)`:
    /// bit `k` of `broadcast_mask` set means input `k` has one element.
    pub fn source(&self) -> Result<String> {
        self.validate()?;
        let mut s = String::new();
        s.push_str(&dtype_defines("A", self.dtype));
        s.push_str(&dtype_defines("O", self.out_dtype()));
        s.push_str(COMMON_HEADER);
        let _ = write!(
            s,
            "\nextern \"C\" __global__ void {}(O_T* out",
            self.kernel_name()
        );
        for k in 0..self.num_inputs {
            let _ = write!(s, ", const A_T* in{k}");
        }
        s.push_str(", unsigned long long broadcast_mask, long long n) {\n");
        s.push_str("    TDM_GRID_STRIDE(i, n) {\n");
        for (i, step) in self.steps.iter().enumerate() {
            let expr = match *step {
                FusedStep::Input(k) => {
                    format!("A_LOAD(in{k}[((broadcast_mask >> {k}) & 1ull) ? 0 : i])")
                }
                FusedStep::Const(v) => format!("(A_C)({})", c_double(v)),
                FusedStep::Unary(op, j) => {
                    unary_expr(op, self.dtype, &format!("v{j}")).unwrap_or_default()
                }
                FusedStep::Binary(op, j, k) => {
                    binary_expr(op, self.dtype, &format!("v{j}"), &format!("v{k}"))
                        .unwrap_or_default()
                }
            };
            let _ = writeln!(s, "        A_C v{i} = (A_C)({expr});");
        }
        let _ = writeln!(s, "        out[i] = O_STORE(v{});", self.steps.len() - 1);
        s.push_str("    }\n}\n");
        Ok(s)
    }
}

/// A double literal in C (NaN and infinities spelled through their bits).
pub fn c_double(v: f64) -> String {
    if v.is_nan() {
        "tdm_nan_d()".into()
    } else if v.is_infinite() {
        let bits = if v > 0.0 {
            "0x7ff0000000000000LL"
        } else {
            "(long long)0xfff0000000000000ULL"
        };
        format!("__longlong_as_double({bits})")
    } else {
        format!("{v:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_defines_name_the_storage_and_compute_types() {
        let d = dtype_defines("A", DType::F16);
        assert!(d.contains("#define A_T unsigned short"), "{d}");
        assert!(d.contains("#define A_C float"));
        assert!(d.contains("#define A_LOAD(x) tdm_h2f(x)"));
        let d = dtype_defines("O", DType::Bool);
        assert!(
            d.contains("#define O_STORE(x) ((unsigned char)((x) != 0))"),
            "{d}"
        );
        assert!(dtype_defines("A", DType::F64).contains("#define A_C double"));
        assert_eq!(raw_type(DType::BF16), "unsigned short");
        assert_eq!(raw_type(DType::I64), "unsigned long long");
    }

    #[test]
    fn op_expressions_follow_the_cpu_dtype_rules() {
        for op in UnaryOp::ALL {
            assert_eq!(
                unary_expr(op, DType::F32, "x").is_some(),
                op != UnaryOp::Not,
                "{op:?} on f32"
            );
            assert_eq!(
                unary_expr(op, DType::I32, "x").is_some(),
                op.supports_int(),
                "{op:?} on i32"
            );
            assert_eq!(
                unary_expr(op, DType::Bool, "x").is_some(),
                op == UnaryOp::Not,
                "{op:?} on bool"
            );
        }
        assert_eq!(
            unary_expr(UnaryOp::Exp, DType::F32, "x").unwrap(),
            "expf(x)"
        );
        assert_eq!(unary_expr(UnaryOp::Exp, DType::F64, "x").unwrap(), "exp(x)");
        for op in BinaryOp::ALL {
            assert_eq!(
                binary_expr(op, DType::F32, "a", "b").is_some(),
                !op.is_logical()
            );
            assert_eq!(
                binary_expr(op, DType::I64, "a", "b").is_some(),
                !op.is_logical()
            );
        }
        assert!(binary_expr(BinaryOp::Add, DType::Bool, "a", "b").is_none());
        assert!(binary_expr(BinaryOp::And, DType::Bool, "a", "b").is_some());
        assert!(binary_expr(BinaryOp::Div, DType::I64, "a", "b")
            .unwrap()
            .contains("== 0 ? 0LL"));
    }

    #[test]
    fn fused_program_source() {
        // relu(x * w + b) > 0.5
        let p = FusedProgram {
            dtype: DType::F32,
            num_inputs: 3,
            steps: vec![
                FusedStep::Input(0),
                FusedStep::Input(1),
                FusedStep::Binary(BinaryOp::Mul, 0, 1),
                FusedStep::Input(2),
                FusedStep::Binary(BinaryOp::Add, 2, 3),
                FusedStep::Unary(UnaryOp::Relu, 4),
                FusedStep::Const(0.5),
                FusedStep::Binary(BinaryOp::Gt, 5, 6),
            ],
        };
        assert_eq!(p.out_dtype(), DType::Bool);
        let s = p.source().unwrap();
        let name = p.kernel_name();
        assert!(name.starts_with("tdm_fused_"));
        assert!(s.contains(&format!(
            "extern \"C\" __global__ void {name}(O_T* out, const A_T* in0, const A_T* in1, const A_T* in2, unsigned long long broadcast_mask, long long n)"
        )), "{s}");
        assert!(s.contains("A_C v2 = (A_C)(((v0) * (v1)));"), "{s}");
        assert!(
            s.contains("A_C v5 = (A_C)(((v4) < (float)0 ? (float)0 : (v4)));"),
            "{s}"
        );
        assert!(s.contains("A_C v6 = (A_C)((A_C)(5e-1));"), "{s}");
        assert!(s.contains("out[i] = O_STORE(v7);"), "{s}");
        assert!(s.contains("#define O_T unsigned char"), "{s}");
        assert!(s.contains("struct Strided"), "the header is included");
        assert_eq!(s.matches('{').count(), s.matches('}').count());
        // A different program gets a different name.
        let mut q = p.clone();
        q.steps[6] = FusedStep::Const(0.25);
        assert_ne!(q.kernel_name(), name);
    }

    #[test]
    fn fused_program_errors() {
        let bad_ref = FusedProgram {
            dtype: DType::F32,
            num_inputs: 1,
            steps: vec![FusedStep::Unary(UnaryOp::Exp, 0)],
        };
        assert!(bad_ref
            .source()
            .unwrap_err()
            .to_string()
            .contains("earlier"));
        let bad_input = FusedProgram {
            dtype: DType::F32,
            num_inputs: 1,
            steps: vec![FusedStep::Input(1)],
        };
        assert!(bad_input.validate().is_err());
        let bad_dtype = FusedProgram {
            dtype: DType::I64,
            num_inputs: 1,
            steps: vec![FusedStep::Input(0), FusedStep::Unary(UnaryOp::Exp, 0)],
        };
        assert!(matches!(
            bad_dtype.validate().unwrap_err(),
            Error::UnsupportedDType { .. }
        ));
        let empty = FusedProgram {
            dtype: DType::F32,
            num_inputs: 0,
            steps: vec![],
        };
        assert!(empty.validate().is_err());
        assert_eq!(
            c_double(f64::INFINITY),
            "__longlong_as_double(0x7ff0000000000000LL)"
        );
        assert_eq!(c_double(2.0), "2e0");
    }
}
