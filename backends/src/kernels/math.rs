//! Vectorizable f32 approximations of `exp`, `erf` and `tanh` for the elementwise kernels.
//!
//! `f32::exp` and `libm::erff` are scalar calls that stop LLVM from vectorizing the loops they
//! sit in; these are straight-line polynomials (no calls, no branches but selects) so that the
//! `multiversion!` bodies compile to AVX-512/AVX2 code. Each is checked
//! against the f64 function in the tests below.

/// `e^x` in f32 for all `x`: a few ulp on `[-86.6, 88.7]`, `+inf` above, and flushed to `0`
/// below `-86.6` (where `e^x < 2.7e-38`, the bottom of the normal range).
///
/// `e^x = 2^n · e^r` with `n = ⌊x·log₂e + ½⌋`, `r = x − n·ln 2` (Cody–Waite split of ln 2) and
/// `e^r` from Cephes' `expf` polynomial; `2^n` is assembled from its exponent bits as
/// `2·2^(n−1)` so that `n = 128` does not overflow early.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    let xc = x.clamp(-86.6, 88.72283);
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let er = p * r * r + r + 1.0;
    // 2^(n−1) from its exponent bits without a float→int cast (Rust's saturating `as` does not
    // vectorize): n − 1 + 127 ∈ [1, 254] is an integer-valued float, and adding 2^23 puts it in
    // the low mantissa bits.
    let biased = ((n + 126.0) + 8_388_608.0).to_bits() & 0xff;
    let scale = f32::from_bits(biased << 23);
    let y = (er * 2.0) * scale;
    // NaN propagates through `er`; the comparisons are false for it.
    let y = if x < -86.6 { 0.0 } else { y };
    if x > 88.72283 {
        f32::INFINITY
    } else {
        y
    }
}

/// `erf x` in f32, absolute error below 1e-6 (the rational approximation Eigen and XLA use for
/// f32: odd degree-13 numerator over even degree-8 denominator), exactly ±1 for `|x| > 3.92`
/// where f32 `erf` rounds to ±1 (so that `1 + erf x` is exactly 0 in the far negative tail).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let saturated = if x < 0.0 { -1.0 } else { 1.0 };
    let far = x.abs() > 3.92;
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_1e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_2e-3;
    q = x2 * q + -1.426_474e-2;
    if far {
        saturated
    } else {
        p / q
    }
}

/// `tanh x` in f32 through `exp`: `1 − 2/(e^{2x} + 1)`, with the odd Taylor polynomial (to
/// `x¹¹`) for `|x| < 0.3` where that form cancels.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let big = 1.0 - 2.0 / (exp(2.0 * x) + 1.0);
    let x2 = x * x;
    let small = x
        * (1.0
            + x2 * (-1.0 / 3.0
                + x2 * (2.0 / 15.0
                    + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0 + x2 * (-1382.0 / 155_925.0))))));
    if x.abs() < 0.3 {
        small
    } else {
        big
    }
}

/// Lanes of the reductions below: enough independent accumulators for one AVX-512 register.
const LANES: usize = 16;

/// `Σ x` with `LANES` independent partial sums (strict f32 addition does not reassociate,
/// so a plain `+=` loop would not vectorize).
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for &v in tail {
        s += v;
    }
    s
}

/// `Σ (x − c)²` with `LANES` partial sums.
#[inline(always)]
pub fn sum_sq_dev(x: &[f32], c: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for ch in chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            let d = v - c;
            *a += d * d;
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for &v in tail {
        s += (v - c) * (v - c);
    }
    s
}

/// `max x` (`−∞` for an empty slice) with `LANES` partial maxima.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    let mut m = acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for &v in tail {
        m = m.max(v);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-200_000..=200_000).map(|i| i as f32 * 1e-4)
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst = 0f64;
        for x in (-8660..=8872).map(|i| i as f32 * 0.01) {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 4.0 * f32::EPSILON as f64, "worst rel error {worst}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn erf_is_within_1e_6() {
        let worst = grid()
            .map(|x| (erf(x) as f64 - libm::erf(x as f64)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "worst abs error {worst}");
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn reductions_match_sequential_ones() {
        for n in [0usize, 1, 15, 16, 17, 100, 1000] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 101) as f32 * 0.01 - 0.5)
                .collect();
            let s: f64 = x.iter().map(|&v| v as f64).sum();
            assert!((sum(&x) as f64 - s).abs() < 1e-4, "{n}");
            let q: f64 = x.iter().map(|&v| (v as f64 - 0.25).powi(2)).sum();
            assert!((sum_sq_dev(&x, 0.25) as f64 - q).abs() < 1e-4, "{n}");
            let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            assert_eq!(max(&x), m);
        }
    }

    #[test]
    fn tanh_is_close() {
        let worst = grid()
            .map(|x| {
                let w = (x as f64).tanh();
                (tanh(x) as f64 - w).abs() / (w.abs().max(1e-30))
            })
            .fold(0.0, f64::max);
        assert!(worst < 8.0 * f32::EPSILON as f64, "worst rel error {worst}");
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
    }
}
