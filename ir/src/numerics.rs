//! Exact codecs for the low-precision number formats.
//!
//! One definition shared by passes, kernels and the reference interpreter. Every float format is
//! described by a [`FloatFormat`] (mantissa bits, exponent bias, largest finite value, whether it
//! has infinities/NaN) and rounded by one routine, [`FloatFormat::round`], which works directly on
//! `f64` so that there is no double rounding through `f32`.
//!
//! Rounding is round-to-nearest, ties-to-even on the target mantissa. The OCP 8-bit and 4-bit
//! formats *saturate*: a finite input never becomes infinite or NaN, it clamps to ±max. IEEE
//! half and bfloat16 follow IEEE 754 (overflow past max + ½ulp becomes ±∞), which is what every
//! framework does for them. The value grids are those of `shared/reference/techniques.md` §0.3 and
//! are tested exhaustively in this module's tests.

/// A binary floating-point format, enough to round and to encode/decode it exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FloatFormat {
    /// Human name, e.g. `"f8e4m3fn"`.
    pub name: &'static str,
    /// Number of exponent bits.
    pub exp_bits: u32,
    /// Number of explicit mantissa bits.
    pub man_bits: u32,
    /// Exponent bias.
    pub bias: i32,
    /// Largest finite magnitude.
    pub max: f64,
    /// Whether the format has ±∞ (IEEE-like top exponent).
    pub has_inf: bool,
    /// Whether the format has a NaN encoding.
    pub has_nan: bool,
    /// Whether finite inputs beyond the range clamp to ±max (true) or overflow to ±∞ (false).
    pub saturate: bool,
}

/// IEEE binary16.
pub const F16: FloatFormat = FloatFormat {
    name: "f16",
    exp_bits: 5,
    man_bits: 10,
    bias: 15,
    max: 65504.0,
    has_inf: true,
    has_nan: true,
    saturate: false,
};

/// bfloat16 (8 exponent bits, 7 mantissa bits).
pub const BF16: FloatFormat = FloatFormat {
    name: "bf16",
    exp_bits: 8,
    man_bits: 7,
    bias: 127,
    // (2 - 2^-7) * 2^127
    max: 3.3895313892515355e38,
    has_inf: true,
    has_nan: true,
    saturate: false,
};

/// OCP FP8 E4M3 ("fn": no infinities, S.1111.111 is NaN), max 448.
pub const F8E4M3FN: FloatFormat = FloatFormat {
    name: "f8e4m3fn",
    exp_bits: 4,
    man_bits: 3,
    bias: 7,
    max: 448.0,
    has_inf: false,
    has_nan: true,
    saturate: true,
};

/// OCP FP8 E5M2 (IEEE-like), max 57344. Saturating conversion.
pub const F8E5M2: FloatFormat = FloatFormat {
    name: "f8e5m2",
    exp_bits: 5,
    man_bits: 2,
    bias: 15,
    max: 57344.0,
    has_inf: true,
    has_nan: true,
    saturate: true,
};

/// OCP MX FP4 E2M1: no Inf, no NaN, max 6.
pub const F4E2M1: FloatFormat = FloatFormat {
    name: "f4e2m1",
    exp_bits: 2,
    man_bits: 1,
    bias: 1,
    max: 6.0,
    has_inf: false,
    has_nan: false,
    saturate: true,
};

/// Round half to even on an `f64` that is already an integer or a half-integer away from one.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round(); // half away from zero
    if (x - x.trunc()).abs() == 0.5 {
        // tie: pick the even neighbour
        let t = x.trunc();
        if (t / 2.0).fract() == 0.0 {
            t
        } else {
            r
        }
    } else {
        r
    }
}

/// `2^e` for any exponent in f64 range, exactly.
fn pow2(e: i32) -> f64 {
    libm::ldexp(1.0, e)
}

/// Exponent `e` with `2^e <= a < 2^(e+1)` for finite positive `a`, exactly.
fn exponent_of(a: f64) -> i32 {
    let (_, e) = libm::frexp(a); // a = m * 2^e, m in [0.5, 1)
    e - 1
}

impl FloatFormat {
    /// Exponent of the smallest normal number.
    pub fn min_normal_exp(&self) -> i32 {
        1 - self.bias
    }

    /// Smallest positive normal value.
    pub fn min_normal(&self) -> f64 {
        pow2(self.min_normal_exp())
    }

    /// Smallest positive subnormal value.
    pub fn min_subnormal(&self) -> f64 {
        pow2(self.min_normal_exp() - self.man_bits as i32)
    }

    /// Total bits of one encoded value (sign + exponent + mantissa).
    pub fn bits(&self) -> u32 {
        1 + self.exp_bits + self.man_bits
    }

    /// Round `x` to the nearest value of this format (ties to even), with this format's
    /// overflow rule. NaN stays NaN where the format has one; in a format without NaN it maps
    /// to +0 (documented choice: there is no value that could represent it).
    pub fn round(&self, x: f64) -> f64 {
        if x.is_nan() {
            return if self.has_nan { f64::NAN } else { 0.0 };
        }
        if x.is_infinite() {
            if self.has_inf && !self.saturate {
                return x;
            }
            return self.max.copysign(x);
        }
        let a = x.abs();
        if a == 0.0 {
            return x;
        }
        let e = exponent_of(a).max(self.min_normal_exp());
        let quantum = pow2(e - self.man_bits as i32);
        let r = round_half_even(a / quantum) * quantum;
        let r = if r > self.max {
            if self.saturate {
                self.max
            } else {
                f64::INFINITY
            }
        } else {
            r
        };
        r.copysign(x)
    }

    /// Whether `x` is exactly a value of this format.
    pub fn is_representable(&self, x: f64) -> bool {
        if x.is_nan() {
            return self.has_nan;
        }
        if x.is_infinite() {
            return self.has_inf;
        }
        self.round(x) == x
    }

    /// Decode an encoded value (the low [`bits`](Self::bits) bits of `code`).
    pub fn decode(&self, code: u32) -> f64 {
        let m_mask = (1u32 << self.man_bits) - 1;
        let e_mask = (1u32 << self.exp_bits) - 1;
        let sign = if (code >> (self.exp_bits + self.man_bits)) & 1 == 1 {
            -1.0
        } else {
            1.0
        };
        let e = (code >> self.man_bits) & e_mask;
        let m = code & m_mask;
        if self.has_inf && e == e_mask {
            // IEEE-like top exponent
            return if m == 0 {
                sign * f64::INFINITY
            } else {
                f64::NAN
            };
        }
        if !self.has_inf && self.has_nan && e == e_mask && m == m_mask {
            // E4M3FN: S.1111.111 is NaN
            return f64::NAN;
        }
        let frac = m as f64 / pow2(self.man_bits as i32);
        if e == 0 {
            sign * frac * pow2(self.min_normal_exp())
        } else {
            sign * (1.0 + frac) * pow2(e as i32 - self.bias)
        }
    }

    /// Encode `x` after rounding it with [`round`](Self::round). The canonical NaN is all ones
    /// in exponent and mantissa.
    pub fn encode(&self, x: f64) -> u32 {
        let v = self.round(x);
        let sign_bit = 1u32 << (self.exp_bits + self.man_bits);
        let e_mask = (1u32 << self.exp_bits) - 1;
        let m_mask = (1u32 << self.man_bits) - 1;
        if v.is_nan() {
            return (e_mask << self.man_bits) | m_mask;
        }
        let s = if v.is_sign_negative() { sign_bit } else { 0 };
        if v.is_infinite() {
            return s | (e_mask << self.man_bits);
        }
        let a = v.abs();
        if a == 0.0 {
            return s;
        }
        if a < self.min_normal() {
            let m = (a / self.min_subnormal()) as u32;
            return s | m;
        }
        let e = exponent_of(a);
        let m = ((a / pow2(e) - 1.0) * pow2(self.man_bits as i32)) as u32;
        s | (((e + self.bias) as u32) << self.man_bits) | m
    }
}

/// Round to the nearest integer (ties to even) and saturate into `[lo, hi]`. NaN maps to 0.
pub fn round_int_saturating(x: f64, lo: f64, hi: f64) -> f64 {
    if x.is_nan() {
        return 0.0;
    }
    round_half_even(x).clamp(lo, hi)
}

/// Convert to an integer type the way `as` casts do in C/numpy/ONNX for in-range values:
/// truncate toward zero, then saturate into `[lo, hi]`. NaN maps to 0.
pub fn trunc_int_saturating(x: f64, lo: f64, hi: f64) -> f64 {
    if x.is_nan() {
        return 0.0;
    }
    x.trunc().clamp(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positive_finite_nonzero(f: &FloatFormat) -> Vec<f64> {
        let n = 1u32 << (f.bits() - 1);
        let mut v: Vec<f64> = (0..n)
            .map(|c| f.decode(c))
            .filter(|x| x.is_finite() && *x > 0.0)
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    }

    #[test]
    fn e2m1_grid_is_exactly_the_ocp_grid() {
        assert_eq!(
            positive_finite_nonzero(&F4E2M1),
            vec![0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
        );
        assert_eq!(F4E2M1.min_normal(), 1.0);
        assert_eq!(F4E2M1.min_subnormal(), 0.5);
    }

    #[test]
    fn e4m3fn_grid_counts_and_extremes() {
        let v = positive_finite_nonzero(&F8E4M3FN);
        assert_eq!(v.len(), 126);
        assert_eq!(*v.last().unwrap(), 448.0);
        assert_eq!(v[0], 2f64.powi(-9));
        assert_eq!(F8E4M3FN.min_normal(), 2f64.powi(-6));
        assert!(F8E4M3FN.decode(0x7F).is_nan());
        assert!(F8E4M3FN.decode(0xFF).is_nan());
        assert_eq!(F8E4M3FN.decode(0x7E), 448.0);
    }

    #[test]
    fn e5m2_grid_counts_and_extremes() {
        let v = positive_finite_nonzero(&F8E5M2);
        assert_eq!(v.len(), 123);
        assert_eq!(*v.last().unwrap(), 57344.0);
        assert_eq!(v[0], 2f64.powi(-16));
        assert_eq!(F8E5M2.min_normal(), 2f64.powi(-14));
        assert_eq!(F8E5M2.decode(0x7C), f64::INFINITY);
    }

    /// Every code decodes to a value that rounds to itself and encodes back to the same code.
    #[test]
    fn every_code_round_trips_in_every_format() {
        for f in [F16, BF16, F8E4M3FN, F8E5M2, F4E2M1] {
            for c in 0..(1u32 << f.bits()) {
                let x = f.decode(c);
                if x.is_nan() {
                    assert!(f.round(x).is_nan(), "{} code {c:#x}", f.name);
                    continue;
                }
                if x.is_infinite() {
                    continue;
                }
                assert_eq!(f.round(x).to_bits(), x.to_bits(), "{} code {c:#x}", f.name);
                assert_eq!(f.encode(x), c, "{} code {c:#x} value {x}", f.name);
            }
        }
    }

    /// Midpoints between neighbours round to the neighbour with an even mantissa; points just
    /// off the midpoint round to the nearer one; nothing finite becomes NaN.
    #[test]
    fn midpoints_round_to_even_exhaustively() {
        for f in [F16, BF16, F8E4M3FN, F8E5M2, F4E2M1] {
            let mut v = positive_finite_nonzero(&f);
            v.insert(0, 0.0);
            for w in v.windows(2) {
                let (lo, hi) = (w[0], w[1]);
                let mid = (lo + hi) / 2.0;
                let even = if f.encode(lo) & 1 == 0 { lo } else { hi };
                assert_eq!(f.round(mid), even, "{} mid of {lo},{hi}", f.name);
                assert_eq!(f.round(-mid), -even, "{} -mid of {lo},{hi}", f.name);
                let eps = (hi - lo) * 1e-6;
                assert_eq!(f.round(mid - eps), lo);
                assert_eq!(f.round(mid + eps), hi);
            }
        }
    }

    #[test]
    fn saturation_and_no_nan_from_finite() {
        for f in [F8E4M3FN, F8E5M2, F4E2M1] {
            for x in [f.max * 1.01, f.max * 1e6, 1e300, f64::MAX] {
                assert_eq!(f.round(x), f.max, "{}", f.name);
                assert_eq!(f.round(-x), -f.max, "{}", f.name);
            }
        }
        // 464 is the midpoint between 448 and the (absent) 480: saturates, never NaN.
        assert_eq!(F8E4M3FN.round(464.0), 448.0);
        assert_eq!(F8E4M3FN.round(479.0), 448.0);
        // IEEE half overflows past max + half an ulp.
        assert_eq!(F16.round(65519.0), 65504.0);
        assert_eq!(F16.round(65520.0), f64::INFINITY);
        // Values below half the smallest subnormal flush to signed zero.
        assert_eq!(F8E4M3FN.round(2f64.powi(-11)), 0.0);
        assert!(F8E4M3FN.round(-(2f64.powi(-11))).is_sign_negative());
        assert_eq!(F4E2M1.round(0.25), 0.0);
        assert_eq!(F4E2M1.round(0.26), 0.5);
        assert_eq!(F4E2M1.round(2.5), 2.0);
        assert_eq!(F4E2M1.round(5.0), 4.0);
    }

    #[test]
    fn half_and_bfloat_agree_with_the_half_crate_on_f32_inputs() {
        // half's f32 conversions are RNE; for f32 inputs there is no double rounding issue.
        let mut s: u32 = 12345;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let x = f32::from_bits(s);
            if !x.is_finite() {
                continue;
            }
            let h = half::f16::from_f32(x).to_f64();
            let b = half::bf16::from_f32(x).to_f64();
            assert_eq!(F16.round(x as f64).to_bits(), h.to_bits(), "f16 {x:e}");
            assert_eq!(BF16.round(x as f64).to_bits(), b.to_bits(), "bf16 {x:e}");
        }
    }

    #[test]
    fn fp4_times_power_of_two_is_exact_in_e4m3_for_k_in_window() {
        for c in 0..16u32 {
            let v = F4E2M1.decode(c);
            for k in -8..=6 {
                let x = v * 2f64.powi(k);
                assert!(F8E4M3FN.is_representable(x), "{v} * 2^{k}");
            }
        }
    }

    #[test]
    fn integer_rounding() {
        assert_eq!(round_int_saturating(2.5, -128.0, 127.0), 2.0);
        assert_eq!(round_int_saturating(3.5, -128.0, 127.0), 4.0);
        assert_eq!(round_int_saturating(-2.5, -128.0, 127.0), -2.0);
        assert_eq!(round_int_saturating(300.0, -128.0, 127.0), 127.0);
        assert_eq!(round_int_saturating(f64::NAN, -8.0, 7.0), 0.0);
        assert_eq!(trunc_int_saturating(-2.7, -128.0, 127.0), -2.0);
    }
}
