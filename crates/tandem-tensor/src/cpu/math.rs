//! Elementary functions for the kernels.
//!
//! The `f32` versions are branch-free (every "branch" is a select), use only adds, multiplies,
//! divides, comparisons and bit operations, and are `#[inline(always)]`, so a loop that calls
//! them vectorizes like a loop of plain arithmetic (no libm call in the hot path). They follow
//! the classic pattern: reduce the argument with a few exact steps, evaluate a short polynomial
//! (coefficients fitted for this file with Chebyshev interpolation), rebuild the result from
//! bits. Accuracy is about one to two units in the last place (ULP) over the whole range,
//! including subnormal results, overflow to infinity and NaN, which the tests check against
//! the `f64` functions of the standard library.
//!
//! No `mul_add`: without FMA hardware it is a slow library call, and plain arithmetic keeps the
//! results identical on every instruction set. The `f64` kernels use the standard library,
//! except [`erf_f64`], which the standard library lacks.

// Coefficients are written with the digits they were fitted with; the compiler rounds them to
// the nearest `f32`.
#![allow(clippy::excessive_precision)]

/// 1.5 * 2^23: adding it to a float of magnitude below 2^22 rounds to an integer, which then
/// sits in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// ln 2 split in two: `LN2_HI` has 9 trailing zero bits, so `n * LN2_HI` is exact for |n| < 512.
const LN2_HI: f32 = 0.693_145_751_953_125;
const LN2_LO: f32 = 1.428_606_765_330_187e-6;
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// Bits of sqrt(1/2): ln splits its argument into 2^e * m with m in [sqrt(1/2), sqrt(2)).
const SQRT_HALF_BITS: i32 = 0x3f35_04f3;

/// (e^r - 1 - r) / r^2 on |r| <= ln(2)/2, constant term first.
const EXP_POLY: [f32; 5] = [
    0.5,
    0.166_665_733_819_008_45,
    0.041_666_550_110_305_12,
    0.008_363_773_874_405_574,
    0.001_392_692_661_402_190_7,
];
/// R(z)/z where ln(1+f) = 2s + s*R(s^2), s = f/(2+f), for z = s^2 <= 0.0295.
const LN_POLY: [f32; 3] = [
    0.666_666_856_032_735_6,
    0.399_885_509_889_357_56,
    0.295_903_173_571_603_95,
];
/// (tanh(x) - x) / x^3 as a polynomial in u = x^2, for |x| < 0.625.
const TANH_POLY: [f32; 6] = [
    -0.333_333_331_721_403_6,
    0.133_333_035_569_157_4,
    -0.053_959_259_577_204_544,
    0.021_768_918_651_028_21,
    -0.008_343_945_515_839_153,
    0.002_292_744_816_178_142,
];
/// Below this magnitude tanh uses its odd polynomial; above, 1 - 2/(e^{2|x|} + 1).
const TANH_SMALL: f32 = 0.625;
/// erf(x)/x as a polynomial in u = x^2, for |x| < 1.
const ERF_POLY: [f32; 7] = [
    1.128_379_165_848_350_9,
    -0.376_126_266_667_203_34,
    0.112_835_947_151_602_18,
    -0.026_854_212_010_626_412,
    0.005_189_087_423_433_974,
    -0.000_801_686_428_716_587,
    0.000_078_758_750_626_854_88,
];
/// x * e^{x^2} * erfc(x) as a polynomial in t = 1/x, for 1 <= x <= 4.
const ERFC_POLY: [f32; 9] = [
    0.563_952_922_109_636_1,
    0.003_545_956_083_213_115,
    -0.301_125_413_361_710_2,
    0.025_275_283_183_417_006,
    0.602_970_920_320_559_4,
    -0.957_364_335_198_203_2,
    0.741_848_742_638_803_3,
    -0.304_521_319_066_849,
    0.053_000_840_152_966_63,
];

/// Horner evaluation of `c[0] + c[1] x + c[2] x^2 + ...` (unrolled by the compiler).
#[inline(always)]
fn poly<const N: usize>(x: f32, c: &[f32; N]) -> f32 {
    let mut acc = c[N - 1];
    for i in (0..N - 1).rev() {
        acc = acc * x + c[i];
    }
    acc
}

/// 2^n as a float, for n in [-126, 127] (built from the exponent bits).
#[inline(always)]
fn pow2i(n: i32) -> f32 {
    f32::from_bits((n.wrapping_add(127) << 23) as u32)
}

/// Splits `x` (|x| < 2^21) into `n * ln 2 + r` with integer `n` and |r| <= ln(2)/2 (about).
#[inline(always)]
fn reduce_ln2(x: f32) -> (i32, f32, f32) {
    let shifted = x * LOG2_E + ROUND_MAGIC;
    let nf = shifted - ROUND_MAGIC;
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let r = (x - nf * LN2_HI) - nf * LN2_LO;
    (n, nf, r)
}

/// e^x in `f32`: about 1 ULP, exact infinities, subnormal results, NaN in, NaN out.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // Past these bounds the result is infinity or zero; clamping keeps the bit tricks valid.
    // (Comparisons with NaN are false, so NaN passes through.)
    let xc = if x > 89.0 { 89.0 } else { x };
    let xc = if xc < -104.0 { -104.0 } else { xc };
    let (n, _, r) = reduce_ln2(xc);
    let p = 1.0 + (r + r * r * poly(r, &EXP_POLY));
    // Scale in two steps so that neither factor leaves the normal range: the product rounds
    // once, also when the result is subnormal, and overflows to infinity when it should.
    let half = n >> 1;
    p * pow2i(half) * pow2i(n - half)
}

/// Natural logarithm in `f32`: about 1 ULP; ln 0 = -inf, ln of a negative number or NaN = NaN.
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    // Subnormal inputs are scaled into the normal range first.
    let tiny = x < f32::MIN_POSITIVE;
    let xs = if tiny { x * 8_388_608.0 } else { x };
    let bias = if tiny { 23 } else { 0 };
    let bits = xs.to_bits() as i32;
    let e = bits.wrapping_sub(SQRT_HALF_BITS) >> 23;
    let m = f32::from_bits(bits.wrapping_sub(e << 23) as u32);
    // ln(m) = ln(1+f) = f - hfsq + s*(hfsq + R): f is exact, the rest is a small correction.
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let big_r = z * poly(z, &LN_POLY);
    let hfsq = 0.5 * f * f;
    let ln_m = f - (hfsq - s * (hfsq + big_r));
    let ef = (e - bias) as f32;
    let out = ef * LN2_HI + (ln_m + ef * LN2_LO);
    let out = if x == f32::INFINITY { x } else { out };
    let out = if x == 0.0 { f32::NEG_INFINITY } else { out };
    if x >= 0.0 {
        out
    } else {
        f32::NAN
    }
}

/// e^x - 1 in `f32`, accurate near 0 (about 1 ULP).
#[inline(always)]
pub fn expm1_f32(x: f32) -> f32 {
    // x = n ln2 + r, e^x - 1 = 2^n (e^r - 1) + (2^n - 1), where both parts are accurate.
    let xc = if x > 30.0 { 30.0 } else { x };
    let xc = if xc < -30.0 { -30.0 } else { xc };
    let (n, _, r) = reduce_ln2(xc);
    let em1 = r + r * r * poly(r, &EXP_POLY);
    let t = pow2i(n);
    let mid = t * em1 + (t - 1.0);
    if x > 30.0 {
        exp_f32(x) - 1.0
    } else {
        mid
    }
}

/// ln(1 + x) in `f32`, accurate near 0 (about 1 ULP).
#[inline(always)]
pub fn log1p_f32(x: f32) -> f32 {
    let u = 1.0 + x;
    // The rounding error of 1 + x, corrected to first order.
    let correction = (x - (u - 1.0)) / u;
    let out = ln_f32(u) + correction;
    let out = if x == f32::INFINITY { x } else { out };
    if u == 0.0 {
        f32::NEG_INFINITY
    } else {
        out
    }
}

/// Hyperbolic tangent in `f32`: about 1 ULP, exactly +-1 for large |x|, never NaN for finite x.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let u = x * x;
    let small = x + x * u * poly(u, &TANH_POLY);
    let a = x.abs();
    // e^{2a} overflows to infinity for large a, which gives exactly 1.
    let big = (1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0)).copysign(x);
    if a < TANH_SMALL {
        small
    } else {
        big
    }
}

/// The logistic function 1 / (1 + e^-x) in `f32`, accurate (relative) on both tails.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    // e = e^{-|x|} never overflows; for x < 0 the result is e / (1 + e).
    let e = exp_f32(-x.abs());
    let d = 1.0 + e;
    if x >= 0.0 {
        1.0 / d
    } else if x < 0.0 {
        e / d
    } else {
        x
    }
}

/// The error function in `f32` (within 2.5 ULP).
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let small = x * poly(x * x, &ERF_POLY);
    let a = x.abs();
    // For |x| >= 4, erfc < 2e-8 and erf rounds to 1; clamping keeps the polynomial in range.
    let ac = if a > 4.0 { 4.0 } else { a };
    let t = 1.0 / ac;
    let erfc = exp_f32(-(ac * ac)) * t * poly(t, &ERFC_POLY);
    let big = (1.0 - erfc).copysign(x);
    let out = if a < 1.0 { small } else { big };
    if x.is_nan() {
        x
    } else {
        out
    }
}

/// The error function in `f64` (a few ULP): a positive series below 2.5, a continued fraction
/// for the complement above. Not branch-free; the standard library has no `erf`.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= 6.0 {
        return 1.0f64.copysign(x);
    }
    // e^{-a^2} with a^2 split in two, so its rounding error does not reach the result.
    let hi = a * a;
    let lo = a.mul_add(a, -hi);
    let gauss = (-hi).exp() * (1.0 - lo);
    let two_over_sqrt_pi = std::f64::consts::FRAC_2_SQRT_PI;
    let value = if a < 2.5 {
        // erf(a) = 2/sqrt(pi) e^{-a^2} sum_n (2a^2)^n a / (1*3*...*(2n+1)), all terms positive.
        let mut term = a;
        let mut sum = a;
        let mut n = 0.0;
        while term > sum * 1e-17 {
            n += 1.0;
            term *= 2.0 * hi / (2.0 * n + 1.0);
            sum += term;
        }
        two_over_sqrt_pi * gauss * sum
    } else {
        // erfc(a) = e^{-a^2} / (sqrt(pi) (a + (1/2)/(a + 1/(a + (3/2)/(a + ...))))).
        let mut f = a;
        for k in (1..=60).rev() {
            f = a + (k as f64 * 0.5) / f;
        }
        1.0 - gauss * two_over_sqrt_pi * 0.5 / f
    };
    value.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units of the last place of `want` (as f32), with subnormals counted on the
    /// fixed subnormal spacing.
    fn ulps(got: f32, want: f64) -> f64 {
        if want.is_nan() {
            return if got.is_nan() { 0.0 } else { f64::INFINITY };
        }
        let w = want as f32;
        if w.is_infinite() || got.is_infinite() {
            // Exact only if both round to the same infinity.
            return if got == w { 0.0 } else { f64::INFINITY };
        }
        let a = w.abs().max(f32::MIN_POSITIVE);
        let ulp = (f32::from_bits(a.to_bits() + 1) - a) as f64;
        (got as f64 - want).abs() / ulp
    }

    /// Inputs covering every binade: random bit patterns, plus edge cases.
    fn inputs(lo: f32, hi: f32) -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            1e-40,
            1.0,
            -1.0,
            0.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            88.72,
            88.7228,
            88.723,
            89.0,
            -87.33,
            -87.34,
            -88.7,
            -103.9,
            -103.98,
            -104.0,
            -110.0,
            1e-7,
            -1e-7,
            0.625,
            -0.625,
            0.99999,
            1.00001,
            3.9,
            4.0,
            4.1,
            1e30,
            -1e30,
            f32::MAX,
            -f32::MAX,
        ];
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            v.push(f32::from_bits((state >> 32) as u32));
            // Uniform values in the interesting range too.
            let u = (state & 0xff_ffff) as f32 / 16_777_216.0;
            v.push(lo + (hi - lo) * u);
        }
        v
    }

    fn check(
        name: &str,
        f: fn(f32) -> f32,
        reference: fn(f64) -> f64,
        max_ulps: f64,
        lo: f32,
        hi: f32,
    ) {
        let mut worst = (0.0, 0.0f32);
        for x in inputs(lo, hi) {
            let got = f(x);
            let want = reference(x as f64);
            let e = ulps(got, want);
            if e.is_nan() || e > worst.0 {
                worst = (e, x);
            }
        }
        eprintln!("{name}: worst {} ulps at {:e}", worst.0, worst.1);
        assert!(
            worst.0 <= max_ulps,
            "{name}: {} ulps at x = {:e} (got {:e}, want {:e})",
            worst.0,
            worst.1,
            f(worst.1),
            reference(worst.1 as f64)
        );
    }

    #[test]
    fn exp_is_accurate() {
        check("exp", exp_f32, f64::exp, 1.5, -110.0, 90.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(89.0), f32::INFINITY);
        assert!(exp_f32(88.72).is_finite());
        assert!(exp_f32(-100.0) > 0.0);
    }

    #[test]
    fn ln_is_accurate() {
        check("ln", ln_f32, f64::ln, 1.5, 0.0, 10.0);
        assert_eq!(ln_f32(1.0), 0.0);
        assert_eq!(ln_f32(0.0), f32::NEG_INFINITY);
        assert!(ln_f32(-1.0).is_nan());
        assert_eq!(ln_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(ln_f32(1e-45), (1e-45f32 as f64).ln() as f32);
    }

    #[test]
    fn expm1_and_log1p_are_accurate() {
        check("expm1", expm1_f32, f64::exp_m1, 2.0, -2.0, 2.0);
        check("log1p", log1p_f32, f64::ln_1p, 2.0, -1.0, 2.0);
        assert_eq!(expm1_f32(1e-30), 1e-30);
        assert_eq!(log1p_f32(-1.0), f32::NEG_INFINITY);
        assert!(log1p_f32(-2.0).is_nan());
    }

    #[test]
    fn tanh_and_sigmoid_are_accurate_and_stable() {
        check("tanh", tanh_f32, f64::tanh, 2.0, -5.0, 5.0);
        check(
            "sigmoid",
            sigmoid_f32,
            |x| 1.0 / (1.0 + (-x).exp()),
            2.5,
            -30.0,
            30.0,
        );
        for x in [1e4f32, -1e4, 1e30, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(tanh_f32(x), x.signum());
            assert!(sigmoid_f32(x).is_finite());
        }
        assert_eq!(sigmoid_f32(1e4), 1.0);
        assert_eq!(sigmoid_f32(-1e4), 0.0);
    }

    #[test]
    fn erf_matches_known_values() {
        // Values from a 30-digit evaluation.
        let known = [
            (0.001, 0.001_128_378_790_969_236_4),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (2.49, 0.999_570_712_132_266_1),
            (2.5, 0.999_593_047_982_555),
            (2.51, 0.999_614_294_518_275_7),
            (3.0, 0.999_977_909_503_001_4),
            (4.0, 0.999_999_984_582_742_1),
            (5.5, 0.999_999_999_999_992_6),
        ];
        for (x, want) in known {
            for s in [1.0, -1.0] {
                let got = erf_f64(s * x);
                assert!(
                    (got - s * want).abs() <= 4.0 * f64::EPSILON * want,
                    "erf({}) = {got}",
                    s * x
                );
            }
        }
        assert!(erf_f64(f64::NAN).is_nan());
        assert_eq!(erf_f64(f64::INFINITY), 1.0);
        check("erf", erf_f32, erf_f64, 2.5, -5.0, 5.0);
    }
}
