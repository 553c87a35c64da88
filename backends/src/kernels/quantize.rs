//! `quantize` into packed codes: absmax per scale group, the scale and each quotient computed
//! with the IR's [`QuantRule`] (in f64, as the reference does), so that codes and scales are
//! bit-exact to the reference semantics; the codes are stored packed ([`PackedTensor`]).

use super::packed::{code_of, is_packed, PackedTensor};
use super::registry::{
    any_cpu, wrong_op, KernelEntry, KernelOut, KernelRun, TypedCx, TypedIn, TypedOut,
};
use super::R;
use fuselage_ir::ops::quantize::{scale_index_map, Granularity, QuantRule};
use fuselage_ir::{DType, Op, TensorType};

/// Float dtypes an f32 buffer holds exactly (the operand and the scale).
pub(crate) fn held_in_f32(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::BF16)
}

fn applies(op: &Op, operands: &[TensorType], results: &[TensorType]) -> Result<(), String> {
    let Op::Quantize(q) = op else {
        return Err(wrong_op(ENTRY.name, op));
    };
    match operands.first() {
        Some(x) if held_in_f32(x.dtype) => {}
        Some(x) => return Err(format!("operand 0 is {}", x.dtype)),
        None => return Err("no operand".into()),
    }
    match operands.get(1) {
        Some(s) if !held_in_f32(s.dtype) => return Err(format!("the given scale is {}", s.dtype)),
        _ => {}
    }
    if !is_packed(q.dtype) {
        return Err(format!("the target {} is not a packed dtype", q.dtype));
    }
    if !held_in_f32(q.scale_dtype) {
        return Err(format!(
            "the scale dtype {} is wider than f32",
            q.scale_dtype
        ));
    }
    if results.len() != 2 {
        return Err(format!("{} results, expected 2", results.len()));
    }
    Ok(())
}

/// How close to a half-integer a quotient `x·(1/S)` must come to be recomputed as `x/S`.
///
/// For f32 `x` and `S`, a quotient `x/S` that is not exactly a tie `k + ½` lies at least
/// 2^-25 from it (`2x − S(2k+1)` is a nonzero multiple of the coarser ulp of the two, over
/// `2S`), while `x·fl(1/S)` in f64 is within `|x/S|·2^-52 ≤ 2^-45` of `x/S` (`|x/S| ≤ 128`).
/// So the product rounds to the same integer as the quotient unless the quotient is a tie,
/// and every tie falls inside this band.
const TIE_BAND: f64 = 1.0 / (1u64 << 40) as f64;

/// The common W8A8 case in bulk: an integer rule onto i8 with one scale per row of `row_len`
/// values (per token; per tensor is one row). Each scale is the rule's, each code
/// `clamp(rne(x / S))` as the reference computes it in f64 (AVX2: the product with `1/S`,
/// divided exactly where it lands within [`TIE_BAND`] of a tie), so the result is bit-exact.
/// `None` (use [`quantize_packed`]) for a non-finite value, whose scale or code the general
/// path decides.
pub fn quantize_i8_rows(
    rule: &QuantRule,
    x: &[f32],
    row_len: usize,
) -> R<Option<(Vec<u8>, Vec<f32>)>> {
    let Some((lo, hi)) = rule.int_range() else {
        return Ok(None);
    };
    if row_len == 0 || !x.len().is_multiple_of(row_len) || lo < -128.0 || hi > 127.0 {
        return Ok(None);
    }
    let rows = x.len() / row_len;
    let mut scales = vec![0f32; rows];
    let mut codes = vec![0u8; x.len()];
    // Rows over the rayon workers when there is enough work (a batch of sequences).
    let one = |(row, (out, scale)): (&[f32], (&mut [u8], &mut f32))| -> R<bool> {
        let Some(absmax) = finite_absmax(row) else {
            return Ok(false);
        };
        let s = rule.scale(f64::from(absmax)).map_err(|e| e.0)?;
        quantize_row_i8(rule, row, s, lo, hi, out);
        *scale = s as f32;
        Ok(true)
    };
    let all_finite = if x.len() >= PARALLEL_MIN_VALUES {
        use rayon::prelude::*;
        x.par_chunks_exact(row_len)
            .zip(
                codes
                    .par_chunks_exact_mut(row_len)
                    .zip(scales.par_iter_mut()),
            )
            .map(one)
            .collect::<R<Vec<bool>>>()?
            .into_iter()
            .all(|ok| ok)
    } else {
        let mut ok = true;
        for r in x
            .chunks_exact(row_len)
            .zip(codes.chunks_exact_mut(row_len).zip(scales.iter_mut()))
        {
            ok &= one(r)?;
        }
        ok
    };
    Ok(all_finite.then_some((codes, scales)))
}

/// Below this many values a quantization runs on the calling thread.
const PARALLEL_MIN_VALUES: usize = 1 << 16;

/// The largest `|v|` of `row`, or `None` when a value is NaN or infinite.
fn finite_absmax(row: &[f32]) -> Option<f32> {
    let mut done = 0;
    let mut absmax = 0f32;
    #[cfg(target_arch = "x86_64")]
    if super::cpu::CpuFeatures::get().avx2 {
        // SAFETY: AVX2 is present.
        let (m, n) = unsafe { finite_absmax_avx2(row) }?;
        (absmax, done) = (m, n);
    }
    for &v in &row[done..] {
        if !v.is_finite() {
            return None;
        }
        absmax = absmax.max(v.abs());
    }
    Some(absmax)
}

/// [`finite_absmax`] over the whole groups of 8: `(absmax, values read)`.
///
/// # Safety
/// AVX2 on this CPU.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn finite_absmax_avx2(row: &[f32]) -> Option<(f32, usize)> {
    use std::arch::x86_64::*;
    let n = row.len() / 8 * 8;
    let sign = _mm256_set1_ps(-0.0);
    let big = _mm256_set1_ps(f32::MAX);
    let (mut m, mut bad) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in (0..n).step_by(8) {
        let a = _mm256_andnot_ps(sign, unsafe { _mm256_loadu_ps(row.as_ptr().add(i)) });
        // Not `a <= MAX`: NaN (unordered) or infinity.
        bad = _mm256_or_ps(bad, _mm256_cmp_ps::<_CMP_NLE_UQ>(a, big));
        m = _mm256_max_ps(m, a);
    }
    if _mm256_movemask_ps(bad) != 0 {
        return None;
    }
    let mut lanes = [0f32; 8];
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
    Some((lanes.iter().fold(0f32, |a, &b| a.max(b)), n))
}

/// `out[i] = clamp(rne(row[i] / s), lo, hi)` as i8 codes.
fn quantize_row_i8(rule: &QuantRule, row: &[f32], s: f64, lo: f64, hi: f64, out: &mut [u8]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::cpu::CpuFeatures::get().avx2 {
        // SAFETY: AVX2 is present; `row` and `out` have the same length.
        done = unsafe { quantize_row_i8_avx2(row, s, lo, hi, out) };
    }
    for (o, &v) in out[done..].iter_mut().zip(&row[done..]) {
        *o = rule.quantize(f64::from(v), s) as i8 as u8;
    }
}

/// The whole groups of 8 of [`quantize_row_i8`]; returns how many values it wrote.
///
/// # Safety
/// AVX2 on this CPU; `out.len() == row.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_row_i8_avx2(row: &[f32], s: f64, lo: f64, hi: f64, out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let n = row.len() / 8 * 8;
    let (sv, lov, hiv) = (_mm256_set1_pd(s), _mm256_set1_pd(lo), _mm256_set1_pd(hi));
    let inv = _mm256_set1_pd(1.0 / s);
    let (half, near, sign) = (
        _mm256_set1_pd(0.5),
        _mm256_set1_pd(TIE_BAND),
        _mm256_set1_pd(-0.0),
    );
    for i in (0..n).step_by(8) {
        unsafe {
            let q = |off: usize| {
                let x = _mm256_cvtps_pd(_mm_loadu_ps(row.as_ptr().add(i + off)));
                // x·(1/S) rounds like x/S except at an exact tie (module docs of
                // `quantize_i8_rows`); a quotient that close to one is divided exactly.
                let r = _mm256_mul_pd(x, inv);
                let mut q = _mm256_round_pd::<RNE>(r);
                let off_tie = _mm256_andnot_pd(
                    sign,
                    _mm256_sub_pd(_mm256_andnot_pd(sign, _mm256_sub_pd(r, q)), half),
                );
                if _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_LT_OQ>(off_tie, near)) != 0 {
                    q = _mm256_round_pd::<RNE>(_mm256_div_pd(x, sv));
                }
                _mm256_cvtpd_epi32(_mm256_min_pd(_mm256_max_pd(q, lov), hiv))
            };
            let words = _mm_packs_epi32(q(0), q(4));
            let bytes = _mm_packs_epi16(words, words);
            _mm_storel_epi64(out.as_mut_ptr().add(i) as *mut __m128i, bytes);
        }
    }
    n
}

/// Codes and scales of `x` (row-major, `shape`) for the rule, with scales of `scale_shape`.
pub fn quantize_packed(
    rule: &QuantRule,
    target: DType,
    x: &[f32],
    shape: &[usize],
    scale_shape: &[usize],
) -> R<(PackedTensor, Vec<f32>)> {
    let map = scale_index_map(shape, scale_shape);
    let mut absmax = vec![0f32; scale_shape.iter().product()];
    for (&v, &s) in x.iter().zip(&map) {
        // f32 `max` ignores NaN, the reference's f64 `max` too.
        absmax[s] = absmax[s].max(v.abs());
    }
    let scales = absmax
        .iter()
        .map(|&a| rule.scale(f64::from(a)).map_err(|e| e.0))
        .collect::<R<Vec<f64>>>()?;
    let codes: Vec<u8> = x
        .iter()
        .zip(&map)
        .map(|(&v, &si)| code_of(target, rule.quantize(f64::from(v), scales[si])))
        .collect();
    let q = PackedTensor::from_codes(target, shape, &codes)?;
    Ok((q, scales.into_iter().map(|s| s as f32).collect()))
}

/// Codes of `x` with given (static or folded) scales. One scale per feature (the last axis:
/// feature-wise quantization) takes the product with the reciprocal and divides exactly only
/// near a tie ([`TIE_BAND`]); any other layout goes element by element through the scale map.
fn quantize_given(
    rule: &QuantRule,
    target: DType,
    x: &[f32],
    shape: &[usize],
    scale_shape: &[usize],
    scales: &[f32],
) -> R<PackedTensor> {
    let s64: Vec<f64> = scales.iter().map(|&s| f64::from(s)).collect();
    fuselage_ir::ops::quantize::check_given_scales(&s64).map_err(|e| e.0)?;
    let last = shape.last().copied().unwrap_or(1);
    let per_feature = !shape.is_empty()
        && scale_shape.last() == Some(&last)
        && scale_shape[..scale_shape.len() - 1].iter().all(|&d| d == 1);
    let codes: Vec<u8> = match rule.int_range() {
        Some((lo, hi)) if per_feature && last > 0 => {
            let inv: Vec<f64> = s64.iter().map(|s| 1.0 / s).collect();
            let mut codes = vec![0u8; x.len()];
            for (row, out) in x.chunks_exact(last).zip(codes.chunks_exact_mut(last)) {
                for (k, (o, &v)) in out.iter_mut().zip(row).enumerate() {
                    let v = f64::from(v);
                    let r = v * inv[k];
                    let mut q = r.round_ties_even();
                    if ((r - q).abs() - 0.5).abs() < TIE_BAND || !r.is_finite() {
                        q = rule.quantize(v, s64[k]);
                    }
                    *o = code_of(target, q.clamp(lo, hi));
                }
            }
            codes
        }
        _ => {
            let map = scale_index_map(shape, scale_shape);
            x.iter()
                .zip(&map)
                .map(|(&v, &si)| code_of(target, rule.quantize(f64::from(v), s64[si])))
                .collect()
        }
    };
    PackedTensor::from_codes(target, shape, &codes)
}

fn run(op: &Op, _cx: &TypedCx<'_>, v: &[TypedIn<'_>]) -> R<Vec<TypedOut>> {
    let Op::Quantize(q) = op else {
        return Err(wrong_op(ENTRY.name, op));
    };
    let Some(TypedIn::F32(x)) = v.first() else {
        return Err(format!("{}: operand 0 must be an f32 tensor", ENTRY.name));
    };
    let rule = q.rule().map_err(|e| e.0)?;
    let sshape = q
        .granularity
        .scale_shape("quantize", &x.shape)
        .map_err(|e| e.0)?;
    let xs = x.to_contiguous();
    if let Some(given) = v.get(1) {
        let TypedIn::F32(given) = given else {
            return Err(format!(
                "{}: the given scale must be a float tensor",
                ENTRY.name
            ));
        };
        if given.shape != sshape {
            return Err(format!(
                "{}: the given scale is {:?}, expected {sshape:?}",
                ENTRY.name, given.shape
            ));
        }
        let scales = given.to_contiguous().into_owned();
        let codes = quantize_given(&rule, q.dtype, &xs, &x.shape, &sshape, &scales)?;
        return Ok(vec![
            TypedOut::Packed(codes),
            TypedOut::F32(KernelOut::row_major((scales, sshape))),
        ]);
    }
    let rows: usize = sshape.iter().product();
    let row_major_rows = matches!(
        q.granularity,
        Granularity::PerTensor | Granularity::PerToken
    );
    let fast = if q.dtype == DType::I8 && row_major_rows && rows > 0 {
        quantize_i8_rows(&rule, &xs, xs.len() / rows)?
    } else {
        None
    };
    let (codes, scales) = match fast {
        Some((codes, scales)) => (
            PackedTensor::from_codes(DType::I8, &x.shape, &codes)?,
            scales,
        ),
        None => quantize_packed(&rule, q.dtype, &xs, &x.shape, &sshape)?,
    };
    Ok(vec![
        TypedOut::Packed(codes),
        TypedOut::F32(KernelOut::row_major((scales, sshape))),
    ])
}

/// Quantize into packed codes.
pub static ENTRY: KernelEntry = KernelEntry {
    name: "quantize-packed",
    op: "quantize",
    signature: "f32/bf16/f16[, given scale] -> i8/i4/f8e4m3fn/f8e5m2/f4e2m1 (packed), f32/bf16/f16",
    doc: "Symmetric quantization per tensor, token, channel or group into packed codes (two \
          per byte for i4/f4e2m1), bit-exact to the reference codecs.",
    applies,
    cost: 1,
    requires: "any",
    guard: any_cpu,
    prepare: None,
    run: KernelRun::Typed(run),
};

#[cfg(test)]
mod tests {
    use super::*;
    use fuselage_ir::ops::quantize::{Convention, Quantize};
    use proptest::prelude::*;

    fn rule(convention: Convention) -> QuantRule {
        Quantize {
            dtype: DType::I8,
            granularity: Granularity::PerToken,
            convention,
            scale_dtype: DType::F32,
        }
        .rule()
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The bulk path (AVX2 where present) equals the general path code for code, ties
        /// (values at k + ½ scales) and ragged row lengths included.
        #[test]
        fn bulk_i8_rows_equal_the_general_path(
            rows in 1usize..5,
            row_len in 1usize..40,
            seed in any::<u64>(),
            deepspeed in any::<bool>(),
            ties in any::<bool>(),
        ) {
            let r = rule(if deepspeed { Convention::Deepspeed } else { Convention::Paper });
            let mut x = seed | 1;
            let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
            let data: Vec<f32> = (0..rows * row_len)
                .map(|i| {
                    if ties && i % row_len != 0 {
                        // The first value fixes the scale at exactly 123/16, whose f64
                        // reciprocal moves most ties k + ½ off the tie, so these quotients are
                        // all ties that only an exact division rounds right (half to even).
                        ((next() % 254) as f32 - 127.0) * 7.6875 + 3.84375
                    } else if ties {
                        if deepspeed { 984.0 } else { 976.3125 }
                    } else {
                        ((next() % 20001) as f32 - 10000.0) * 1e-3
                    }
                })
                .collect();
            let (codes, scales) = quantize_i8_rows(&r, &data, row_len).unwrap().unwrap();
            let (want, want_scales) = quantize_packed(
                &r, DType::I8, &data, &[rows, row_len], &[rows, 1],
            ).unwrap();
            prop_assert_eq!(&codes[..], want.bytes());
            prop_assert_eq!(scales, want_scales);
        }
    }

    #[test]
    fn rows_over_workers_equal_the_general_path() {
        // Above PARALLEL_MIN_VALUES: the rows go over the rayon workers.
        let (rows, k) = (300usize, 256usize);
        let r = rule(Convention::Paper);
        let data: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) * 1e-2 * (1 + i / k % 5) as f32)
            .collect();
        let (codes, scales) = quantize_i8_rows(&r, &data, k).unwrap().unwrap();
        let (want, want_scales) =
            quantize_packed(&r, DType::I8, &data, &[rows, k], &[rows, 1]).unwrap();
        assert_eq!(&codes[..], want.bytes());
        assert_eq!(scales, want_scales);
        let mut bad = data.clone();
        bad[rows * k - 1] = f32::NAN;
        assert!(quantize_i8_rows(&r, &bad, k).unwrap().is_none());
    }

    #[test]
    fn non_finite_values_take_the_general_path() {
        let r = rule(Convention::Paper);
        for bad in [f32::NAN, f32::INFINITY] {
            let x = [1.0, bad, 2.0];
            assert!(quantize_i8_rows(&r, &x, 3).unwrap().is_none());
        }
        let zeros = [0f32; 9];
        let (codes, scales) = quantize_i8_rows(&r, &zeros, 9).unwrap().unwrap();
        assert_eq!((codes, scales), (vec![0u8; 9], vec![1.0]));
    }
}

#[cfg(test)]
mod given_scale_tests {
    use super::*;
    use fuselage_ir::ops::quantize::{Convention, Quantize};
    use fuselage_ir::ops::testing::eval_op;
    use fuselage_ir::Tensor;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        /// Feature-wise given scales (the fast path) and per-token given scales (the general
        /// path) give the reference op's codes, saturation and ties included.
        #[test]
        fn given_scales_match_the_reference(
            rows in 1usize..4,
            k in 1usize..20,
            seed in any::<u64>(),
            per_feature in any::<bool>(),
        ) {
            let mut st = seed | 1;
            let mut next = || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; st };
            // Scales 123/16 · 2^-j make exact ties; values up to ±2000 saturate some codes.
            let sshape = if per_feature { vec![1, k] } else { vec![rows, 1] };
            let n_scales: usize = sshape.iter().product();
            let scales: Vec<f32> = (0..n_scales)
                .map(|_| 7.6875 / (1 << (next() % 4)) as f32)
                .collect();
            let x: Vec<f32> = (0..rows * k)
                .map(|i| {
                    let s = if per_feature { scales[i % k] } else { scales[i / k] };
                    if next() % 2 == 0 {
                        ((next() % 301) as f32 - 150.0) * s + 0.5 * s
                    } else {
                        ((next() % 4001) as f32 - 2000.0) * 0.37
                    }
                })
                .collect();
            let op = Quantize {
                dtype: DType::I8,
                granularity: if per_feature {
                    Granularity::PerChannel { axis: -1 }
                } else {
                    Granularity::PerToken
                },
                convention: Convention::Paper,
                scale_dtype: DType::F32,
            };
            let rule = op.rule().unwrap();
            let codes = quantize_given(&rule, DType::I8, &x, &[rows, k], &sshape, &scales).unwrap();
            let xt = Tensor::from_f32(vec![rows, k], &x).unwrap();
            let st = Tensor::from_f32(sshape.clone(), &scales).unwrap();
            let want = eval_op(fuselage_ir::Op::Quantize(op), &[xt, st]).unwrap();
            let want: Vec<u8> = want[0].data().iter().map(|&v| v as i8 as u8).collect();
            prop_assert_eq!(codes.bytes(), &want[..]);
        }
    }

    #[test]
    fn bad_given_scales_are_errors() {
        let op = Quantize {
            dtype: DType::I8,
            granularity: Granularity::PerChannel { axis: -1 },
            convention: Convention::Paper,
            scale_dtype: DType::F32,
        };
        let rule = op.rule().unwrap();
        let e = quantize_given(
            &rule,
            DType::I8,
            &[1.0, 2.0],
            &[1, 2],
            &[1, 2],
            &[1.0, f32::NAN],
        )
        .unwrap_err();
        assert!(e.contains("positive and finite"), "{e}");
    }
}
