//! Kernel-level op kinds shared by the kernels, the op IR (`tandem-ir`) and error messages.
//! Each kind has a stable snake_case name used in dispatch errors, graph dumps and (with the
//! `cuda` feature) kernel symbols.

/// Elementwise functions of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
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
    /// sin x
    Sin,
    /// cos x
    Cos,
    /// tanh x
    Tanh,
    /// 1/(1+e^-x)
    Sigmoid,
    /// max(x, 0)
    Relu,
    /// The error function.
    Erf,
    /// -1, 0 or 1.
    Sign,
    /// Round down.
    Floor,
    /// Round up.
    Ceil,
    /// Round half to even (like `torch.round`).
    Round,
    /// x*x
    Square,
    /// ln(1+x)
    Log1p,
    /// e^x - 1
    Expm1,
    /// Logical not (bool only).
    Not,
}

impl UnaryOp {
    /// Every unary op.
    pub const ALL: [UnaryOp; 21] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Relu,
        UnaryOp::Erf,
        UnaryOp::Sign,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Round,
        UnaryOp::Square,
        UnaryOp::Log1p,
        UnaryOp::Expm1,
        UnaryOp::Not,
    ];

    /// The op's name.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Erf => "erf",
            UnaryOp::Sign => "sign",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
            UnaryOp::Round => "round",
            UnaryOp::Square => "square",
            UnaryOp::Log1p => "log1p",
            UnaryOp::Expm1 => "expm1",
            UnaryOp::Not => "logical_not",
        }
    }

    /// True for ops defined on integers as well as floats (neg, abs, sign, square, relu; not
    /// for bool).
    pub fn supports_int(self) -> bool {
        matches!(
            self,
            UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign | UnaryOp::Square | UnaryOp::Relu
        )
    }
}

/// Elementwise functions of two tensors (with broadcasting) or of a tensor and a scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b (true division; integer tensors divide and truncate toward zero)
    Div,
    /// a ^ b
    Pow,
    /// max(a, b), NaN-propagating
    Maximum,
    /// min(a, b), NaN-propagating
    Minimum,
    /// a == b (bool result)
    Eq,
    /// a != b (bool result)
    Ne,
    /// a < b (bool result)
    Lt,
    /// a <= b (bool result)
    Le,
    /// a > b (bool result)
    Gt,
    /// a >= b (bool result)
    Ge,
    /// a && b (bool only)
    And,
    /// a || b (bool only)
    Or,
}

impl BinaryOp {
    /// Every binary op.
    pub const ALL: [BinaryOp; 15] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::And,
        BinaryOp::Or,
    ];

    /// The op's name.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
            BinaryOp::And => "logical_and",
            BinaryOp::Or => "logical_or",
        }
    }

    /// True for comparisons, whose result is bool.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }

    /// True for the logical ops, defined on bool only.
    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }
}

/// Reductions over a set of axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Arithmetic mean (float dtypes only).
    Mean,
    /// Maximum (NaN-propagating).
    Max,
    /// Minimum (NaN-propagating).
    Min,
    /// Product.
    Prod,
}

impl ReduceOp {
    /// The op's name.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Prod => "prod",
        }
    }
}

/// Index-of-extremum reductions along one axis (int64 result).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgReduceOp {
    /// Index of the largest element (first one on ties).
    ArgMax,
    /// Index of the smallest element (first one on ties).
    ArgMin,
}

impl ArgReduceOp {
    /// The op's name.
    pub fn name(self) -> &'static str {
        match self {
            ArgReduceOp::ArgMax => "argmax",
            ArgReduceOp::ArgMin => "argmin",
        }
    }
}

/// Geometry of a 2-D convolution over NCHW input and OIHW (out, in/groups, kh, kw) weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Stride (vertical, horizontal).
    pub stride: [usize; 2],
    /// Zero padding added on both sides (vertical, horizontal).
    pub padding: [usize; 2],
    /// Dilation (vertical, horizontal).
    pub dilation: [usize; 2],
    /// Number of groups (in and out channels must be divisible by it).
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Output spatial size for an input size and kernel size, or `None` when the
    /// (padded) input is smaller than the dilated kernel.
    pub fn out_size(&self, input: [usize; 2], kernel: [usize; 2]) -> Option<[usize; 2]> {
        let mut out = [0; 2];
        for i in 0..2 {
            let eff = self.dilation[i] * (kernel[i].max(1) - 1) + 1;
            let padded = input[i] + 2 * self.padding[i];
            if padded < eff || self.stride[i] == 0 {
                return None;
            }
            out[i] = (padded - eff) / self.stride[i] + 1;
        }
        Some(out)
    }
}

/// Geometry of a 2-D pooling window over NCHW input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pool2dParams {
    /// Window size (vertical, horizontal).
    pub kernel: [usize; 2],
    /// Stride (vertical, horizontal).
    pub stride: [usize; 2],
    /// Padding on both sides (vertical, horizontal); max pooling pads with -inf, average
    /// pooling with zeros.
    pub padding: [usize; 2],
    /// Dilation of the window (max pooling only; 1 for average pooling).
    pub dilation: [usize; 2],
    /// Use ceil instead of floor when computing the output size (PyTorch `ceil_mode`).
    pub ceil_mode: bool,
    /// Average pooling: divide by the full window size including padding (PyTorch's default)
    /// instead of by the number of real elements.
    pub count_include_pad: bool,
}

impl Pool2dParams {
    /// Window `k`, stride `s`, padding `p` in both directions, no dilation, floor mode,
    /// `count_include_pad = true`.
    pub fn square(k: usize, s: usize, p: usize) -> Self {
        Pool2dParams {
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: [1, 1],
            ceil_mode: false,
            count_include_pad: true,
        }
    }

    /// Output spatial size for an input size (PyTorch's formula, including the ceil-mode rule
    /// that the last window must start inside the input or left padding), or `None` if empty.
    pub fn out_size(&self, input: [usize; 2]) -> Option<[usize; 2]> {
        let mut out = [0; 2];
        for i in 0..2 {
            let eff = self.dilation[i] * (self.kernel[i].max(1) - 1) + 1;
            let padded = input[i] + 2 * self.padding[i];
            if padded < eff || self.stride[i] == 0 {
                return None;
            }
            let span = padded - eff;
            let mut o = if self.ceil_mode {
                span.div_ceil(self.stride[i]) + 1
            } else {
                span / self.stride[i] + 1
            };
            if self.ceil_mode && (o - 1) * self.stride[i] >= input[i] + self.padding[i] {
                o -= 1;
            }
            out[i] = o;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_out_size() {
        let p = Conv2dParams {
            padding: [2, 2],
            ..Default::default()
        };
        assert_eq!(p.out_size([28, 28], [5, 5]), Some([28, 28]));
        let p = Conv2dParams {
            stride: [2, 2],
            padding: [1, 1],
            dilation: [2, 2],
            groups: 1,
        };
        assert_eq!(p.out_size([7, 5], [3, 3]), Some([3, 2]));
        assert_eq!(Conv2dParams::default().out_size([2, 2], [3, 3]), None);
    }

    #[test]
    fn pool_out_size() {
        assert_eq!(
            Pool2dParams::square(2, 2, 0).out_size([28, 28]),
            Some([14, 14])
        );
        assert_eq!(Pool2dParams::square(3, 2, 1).out_size([7, 7]), Some([4, 4]));
        let mut p = Pool2dParams::square(2, 2, 0);
        p.ceil_mode = true;
        assert_eq!(p.out_size([5, 5]), Some([3, 3]));
    }
}
