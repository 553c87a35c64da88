//! `bitwise`: and, or, xor, not and shifts of integers, on the two's-complement bit patterns of
//! the operand dtype.

use super::util::{binary_map, expect_arity, expect_int, infer_binary, unary_map};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Which operation a [`Bitwise`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BitwiseKind {
    /// `a & b`.
    And,
    /// `a | b`.
    Or,
    /// `a ^ b`.
    Xor,
    /// `!a` (one operand).
    Not,
    /// `a << b`, bits shifted out are lost (ONNX `BitShift` LEFT).
    Shl,
    /// `a >> b`: logical for unsigned dtypes (ONNX `BitShift` RIGHT), arithmetic for signed
    /// ones (numpy `right_shift`).
    Shr,
}

/// Bitwise operations on integer dtypes (bool and floats are rejected), element-wise with numpy
/// broadcasting; `not` takes one operand, the others two of the same dtype. The result has the
/// operand dtype.
///
/// Each value is taken as the two's-complement bit pattern of its dtype's width
/// ([`DType::bits`]; signedness from [`DType::int_range`]), so any integer dtype works and
/// results wrap exactly as the dtype does (`shl` of `i8` 64 by 1 is -128). Shifts take the
/// amount per element from `b`: an amount `>= ` the bit width, or negative, shifts everything out
/// (`shl` gives 0, `shr` gives 0, or -1 for a negative signed value: numpy's rules). Values are
/// exact while they fit f64's 53-bit mantissa (the reference holds integers in f64).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bitwise {
    /// The operation.
    pub kind: BitwiseKind,
}

/// Width in bits and signedness of an integer dtype.
fn format_of(d: DType) -> Result<(u32, bool), OpError> {
    match d.int_range() {
        Some((lo, _)) if d.is_int() => Ok((d.bits() as u32, lo < 0.0)),
        _ => crate::bail!("bitwise needs an integer dtype, found {d}"),
    }
}

fn mask(w: u32) -> u64 {
    if w >= 64 {
        u64::MAX
    } else {
        (1u64 << w) - 1
    }
}

/// The low `w` bits of the two's-complement pattern of an integer value.
fn to_bits(v: f64, w: u32) -> u64 {
    let p = if v < 0.0 { v as i64 as u64 } else { v as u64 };
    p & mask(w)
}

/// `p`'s low `w` bits sign-extended to i64 (`w` in 1..=64).
fn sign_extend(p: u64, w: u32) -> i64 {
    let s = 64 - w.clamp(1, 64);
    ((p << s) as i64) >> s
}

/// The value of a `w`-bit pattern.
fn from_bits(p: u64, w: u32, signed: bool) -> f64 {
    if signed {
        sign_extend(p, w) as f64
    } else {
        (p & mask(w)) as f64
    }
}

impl BitwiseKind {
    /// Apply to one pair of values of a dtype `w` bits wide (`b` is ignored by `not`).
    fn apply(self, a: f64, b: f64, w: u32, signed: bool) -> f64 {
        let (pa, pb) = (to_bits(a, w), to_bits(b, w));
        // Shift amounts: in range, or "everything shifted out".
        let amount = (b >= 0.0 && b < f64::from(w)).then_some(b as u32);
        let p = match self {
            BitwiseKind::And => pa & pb,
            BitwiseKind::Or => pa | pb,
            BitwiseKind::Xor => pa ^ pb,
            BitwiseKind::Not => !pa,
            BitwiseKind::Shl => amount.map_or(0, |s| pa << s),
            BitwiseKind::Shr if signed => (sign_extend(pa, w) >> amount.unwrap_or(63)) as u64,
            BitwiseKind::Shr => amount.map_or(0, |s| pa >> s),
        };
        from_bits(p & mask(w), w, signed)
    }
}

impl OpSpec for Bitwise {
    const NAME: &'static str = "bitwise";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        let op = format!("bitwise {:?}", self.kind).to_lowercase();
        let out = if self.kind == BitwiseKind::Not {
            expect_arity(&op, inputs, 1)?;
            inputs[0].clone()
        } else {
            infer_binary(&op, inputs, false)?
        };
        expect_int(&op, "operand", &out)?;
        Ok(vec![out])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let k = self.kind;
        let x = inputs
            .first()
            .ok_or_else(|| OpError::new("bitwise needs operands"))?;
        let (w, signed) = format_of(x.dtype())?;
        let out = if k == BitwiseKind::Not {
            expect_arity(Self::NAME, inputs, 1)?;
            unary_map(x, x.dtype(), |a| k.apply(a, 0.0, w, signed))?
        } else {
            expect_arity(Self::NAME, inputs, 2)?;
            binary_map(Self::NAME, x, inputs[1], x.dtype(), |a, b| {
                k.apply(a, b, w, signed)
            })?
        };
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::BitwiseKind;
    use crate::dtype::DType;
    use crate::ops::testing::{
        at_broadcast, broadcast_partner, check_exact, eval_op, indices, rand_tensor,
    };
    use crate::ops::{bitwise::Bitwise, InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    fn bw(kind: BitwiseKind) -> Op {
        Op::Bitwise(Bitwise { kind })
    }

    fn t(dt: DType, v: &[f64]) -> Tensor {
        Tensor::new(dt, vec![v.len()], v.to_vec()).unwrap()
    }

    /// Naive reference in i128 arithmetic: bits by repeated halving, shifts by multiplying and
    /// floor-dividing by powers of two, wrapping by `rem_euclid`.
    fn naive(k: BitwiseKind, a: f64, b: f64, dt: DType) -> f64 {
        let w = dt.bits() as u32;
        let signed = dt.int_range().unwrap().0 < 0.0;
        let m: i128 = 1i128 << w;
        let unsigned = |v: f64| (v as i128).rem_euclid(m);
        let value = |u: i128| {
            if signed && u >= m / 2 {
                u - m
            } else {
                u
            }
        };
        let bit = |u: i128, i: u32| (u / (1i128 << i)) % 2;
        let (ua, ub) = (unsigned(a), unsigned(b));
        let combine = |f: &dyn Fn(i128, i128) -> i128| {
            (0..w).map(|i| f(bit(ua, i), bit(ub, i)) << i).sum::<i128>()
        };
        let out_of_range = b < 0.0 || b >= f64::from(w);
        let r = match k {
            BitwiseKind::And => combine(&|x, y| x * y),
            BitwiseKind::Or => combine(&|x, y| x.max(y)),
            BitwiseKind::Xor => combine(&|x, y| (x + y) % 2),
            BitwiseKind::Not => m - 1 - ua,
            BitwiseKind::Shl if out_of_range => 0,
            BitwiseKind::Shl => (ua * (1i128 << (b as u32))).rem_euclid(m),
            BitwiseKind::Shr if signed => {
                let s = if out_of_range { w } else { b as u32 };
                (a as i128).div_euclid(1i128 << s).rem_euclid(m)
            }
            BitwiseKind::Shr if out_of_range => 0,
            BitwiseKind::Shr => ua / (1i128 << (b as u32)),
        };
        value(r) as f64
    }

    const INTS: [DType; 5] = [DType::I64, DType::I32, DType::I8, DType::U8, DType::I4];

    proptest! {
        #[test]
        fn matches_naive_bit_arithmetic(
            shape in prop::collection::vec(1usize..4, 0..4),
            drop in 0usize..3,
            ones in 0u32..8,
            kind in prop::sample::select(vec![BitwiseKind::And, BitwiseKind::Or,
                BitwiseKind::Xor, BitwiseKind::Not, BitwiseKind::Shl, BitwiseKind::Shr]),
            dt in prop::sample::select(INTS.to_vec()),
            big: bool,
            seed in 0u64..1000,
        ) {
            let mut a = rand_tensor(dt, shape.clone(), seed);
            if big && dt == DType::I64 {
                // Large magnitudes, still exact in f64.
                let d: Vec<f64> = a.data().iter().map(|v| v * 2f64.powi(45) + 3.0).collect();
                a = Tensor::new(dt, shape.clone(), d).unwrap();
            }
            let b = rand_tensor(dt, broadcast_partner(&shape, drop, ones), seed + 1);
            let w = dt.bits() as f64;
            let (lo, hi) = dt.int_range().unwrap();
            let b = if matches!(kind, BitwiseKind::Shl | BitwiseKind::Shr) {
                // Shift amounts around the width, including negative ones for signed dtypes.
                let d = b.data().iter().map(|v| (v.rem_euclid(w + 5.0) - 2.0).clamp(lo, hi)).collect();
                Tensor::new(dt, b.shape().to_vec(), d).unwrap()
            } else {
                b
            };
            let inputs = if kind == BitwiseKind::Not { vec![a.clone()] } else { vec![a.clone(), b.clone()] };
            let out = eval_op(bw(kind), &inputs).unwrap();
            // `b` broadcasts into `a`'s shape, so the result has `a`'s shape.
            let out_shape = shape.clone();
            let want: Vec<f64> = indices(&out_shape)
                .iter()
                .map(|i| {
                    let y = if kind == BitwiseKind::Not { 0.0 } else { at_broadcast(&b, i) };
                    naive(kind, a.at(i), y, dt)
                })
                .collect();
            check_exact(&out[0], dt, &out_shape, &want).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn wrapping_and_shift_examples() {
        let run = |k, dt, a: &[f64], b: &[f64]| {
            let mut ins = vec![t(dt, a)];
            if k != BitwiseKind::Not {
                ins.push(t(dt, b));
            }
            eval_op(bw(k), &ins).unwrap()[0].data().to_vec()
        };
        use BitwiseKind::*;
        assert_eq!(
            run(Shl, DType::I8, &[64.0, 1.0, -1.0], &[1.0, 7.0, 7.0]),
            [-128.0, -128.0, -128.0]
        );
        assert_eq!(
            run(Shl, DType::U8, &[255.0, 1.0], &[1.0, 8.0]),
            [254.0, 0.0]
        );
        assert_eq!(
            run(Shr, DType::U8, &[255.0, 255.0, 16.0], &[7.0, 8.0, 2.0]),
            [1.0, 0.0, 4.0]
        );
        assert_eq!(
            run(
                Shr,
                DType::I8,
                &[-128.0, -1.0, 100.0, -5.0],
                &[7.0, 20.0, 9.0, -1.0]
            ),
            [-1.0, -1.0, 0.0, -1.0]
        );
        assert_eq!(run(Shr, DType::I32, &[-8.0], &[1.0]), [-4.0]);
        assert_eq!(run(Not, DType::U8, &[0.0, 200.0], &[]), [255.0, 55.0]);
        assert_eq!(
            run(Not, DType::I4, &[0.0, 7.0, -8.0], &[]),
            [-1.0, -8.0, 7.0]
        );
        assert_eq!(
            run(And, DType::I32, &[-1.0, 12.0], &[7.0, 10.0]),
            [7.0, 8.0]
        );
        assert_eq!(
            run(Or, DType::I8, &[-128.0, 5.0], &[1.0, 3.0]),
            [-127.0, 7.0]
        );
        assert_eq!(run(Xor, DType::I64, &[-1.0, 6.0], &[0.0, 3.0]), [-1.0, 5.0]);
        // i64 patterns above 2^32 and near 2^53 are exact.
        let big = 2f64.powi(52) + 2f64.powi(33) + 5.0;
        assert_eq!(
            run(And, DType::I64, &[big], &[2f64.powi(33) + 4.0]),
            [2f64.powi(33) + 4.0]
        );
        assert_eq!(run(Xor, DType::I64, &[big], &[-1.0]), [-big - 1.0]);
        assert_eq!(
            run(Shr, DType::I64, &[-big], &[33.0]),
            [-(2f64.powi(19)) - 2.0]
        );
        assert_eq!(run(Shl, DType::I64, &[1.0], &[63.0]), [i64::MIN as f64]);
        assert_eq!(run(Shl, DType::I64, &[3.0], &[64.0]), [0.0]);
    }

    #[test]
    fn errors_and_types() {
        let f = t(DType::F32, &[1.0]);
        let e = eval_op(bw(BitwiseKind::And), &[f.clone(), f.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bitwise and expects an integer operand, found f32[1]"),
            "{e}"
        );
        let b = t(DType::Bool, &[1.0]);
        let e = eval_op(bw(BitwiseKind::Not), &[b]).unwrap_err().to_string();
        assert!(e.contains("integer") && e.contains("bool[1]"), "{e}");
        let i = t(DType::I32, &[1.0]);
        let e = eval_op(bw(BitwiseKind::Not), &[i.clone(), i.clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes 1 operand, found 2"), "{e}");
        let e = eval_op(bw(BitwiseKind::Shl), std::slice::from_ref(&i))
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes 2 operands, found 1"), "{e}");
        let e = eval_op(bw(BitwiseKind::Or), &[i, t(DType::I64, &[1.0])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("share a dtype"), "{e}");
        let m = crate::module::Module::new();
        let a = TensorType::new(DType::U8, vec![Dim::from("B"), Dim::from(1u64)]);
        let c = TensorType::new(DType::U8, vec![Dim::from(3u64)]);
        let out = Bitwise {
            kind: BitwiseKind::Shr,
        }
        .infer(&InferCx { module: &m }, &[a, c])
        .unwrap();
        assert_eq!(out[0].to_string(), "u8[B,3]");
        let op = Op::from_attrs("bitwise", serde_json::json!({"kind": "shl"})).unwrap();
        assert_eq!(op, bw(BitwiseKind::Shl));
    }
}
