//! Rounding f32 data onto a narrower dtype in place: the last step of every f32 kernel and burn
//! operation whose result is bf16/f16 (or an integer, f8, f4 value held in f32).

use fuselage_ir::DType;
use rayon::prelude::*;

/// Elements per parallel chunk (below this, one thread rounds it all).
const CHUNK: usize = 1 << 15;

/// Round every element of `data` onto `dtype` exactly as [`DType::round`] does. bf16 rounds on
/// the f32 bits, f16 through the `half` crate's conversion (both round to nearest even, like
/// the IR's codecs, many times faster than the generic f64 path); other dtypes through
/// [`DType::round`]. f32 and f64 leave the data as it is.
pub fn round_in_place(dtype: DType, data: &mut [f32]) {
    match dtype {
        DType::F32 | DType::F64 => {}
        DType::BF16 => apply(data, bf16_round),
        DType::F16 => apply(data, |x| half::f16::from_f32(x).to_f32()),
        _ => apply(data, |x| dtype.round(f64::from(x)) as f32),
    }
}

/// `f` over every element, in parallel chunks; generic so that `f` is inlined (and the bf16
/// loop vectorized) rather than called through a pointer per element.
fn apply<F: Fn(f32) -> f32 + Sync>(data: &mut [f32], f: F) {
    if data.len() <= CHUNK {
        data.iter_mut().for_each(|x| *x = f(*x));
        return;
    }
    data.par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|x| *x = f(*x)));
}

/// Round to the nearest bf16 (ties to even) on the f32 bits, branch-free so that the loop
/// vectorizes: add half a bf16 unit (less one, plus the kept lowest bit) and clear the low 16
/// bits. A carry into the exponent is the correct rounding up, overflow included (to ±inf);
/// NaN is kept (quieted, as `half` does).
fn bf16_round(x: f32) -> f32 {
    let b = x.to_bits();
    let r = b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000;
    if x.is_nan() {
        f32::from_bits((b | 0x0040_0000) & 0xffff_0000)
    } else {
        f32::from_bits(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f32 bit pattern on a stride (normals, subnormals, halfway cases, overflow, ±inf,
    /// NaN) rounds as the IR's reference rounding does.
    #[test]
    fn half_conversions_round_as_the_reference() {
        for dtype in [DType::BF16, DType::F16] {
            let mut xs: Vec<f32> = (0..=u32::MAX).step_by(4099).map(f32::from_bits).collect();
            // Exact halfway points of both formats, and the edges of their ranges.
            xs.extend([
                1.0 + 2f32.powi(-8),
                1.0 + 3.0 * 2f32.powi(-8),
                1.0 + 2f32.powi(-11),
                65504.0,
                65520.0,
                65519.99,
                3.3895314e38,
                f32::MAX,
                f32::MIN_POSITIVE,
                2f32.powi(-24),
                2f32.powi(-25),
                f32::INFINITY,
                f32::NEG_INFINITY,
            ]);
            let mut got = xs.clone();
            round_in_place(dtype, &mut got);
            for (x, g) in xs.iter().zip(&got) {
                let want = dtype.round(f64::from(*x)) as f32;
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "{dtype}: {x:e} ({:#x}) rounds to {g:e}, reference {want:e}",
                    x.to_bits()
                );
            }
        }
    }

    #[test]
    fn other_dtypes_use_the_reference_rounding() {
        let mut v = vec![1.4f32, 2.5, -7.9, 300.0];
        round_in_place(DType::I8, &mut v);
        assert_eq!(v, vec![1.0, 2.0, -8.0, 127.0]);
        let mut w = vec![0.1f32];
        round_in_place(DType::F32, &mut w);
        assert_eq!(w, vec![0.1]);
    }
}
