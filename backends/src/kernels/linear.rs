//! `linear`: `x[..., K] · w[K, N] + bias[N]` with the bias fused into the GEMM's output.

use super::packed_gemm::{prepare_rhs, PackedMatrix, Rhs};
use super::registry::{all_f32, any_cpu, operand, wrong_op, KernelEntry, KernelOut, KernelRun};
use super::registry::{Preparation, PreparedRun};
use super::{Mat, View, R};
use fuselage_ir::Op;

/// `x[..., K] · w[K, N] + bias[N]`; `w` is read in place through its strides (a transposed
/// weight is not copied), `x` is gathered to row-major first when it is not. Returns the data
/// and shape.
pub fn linear(x: &View<'_>, w: &View<'_>, bias: Option<&View<'_>>) -> R<(Vec<f32>, Vec<usize>)> {
    if w.shape.len() != 2 {
        return Err(format!(
            "linear: shapes {:?} · {:?} do not contract",
            x.shape, w.shape
        ));
    }
    linear_with(x, Rhs::Strided(w.matrix()), w.shape[0], w.shape[1], bias)
}

/// [`linear()`] with a weight packed at lowering time.
pub fn linear_packed(
    x: &View<'_>,
    w: &PackedMatrix,
    bias: Option<&View<'_>>,
) -> R<(Vec<f32>, Vec<usize>)> {
    linear_with(x, Rhs::Packed(w), w.rows(), w.cols(), bias)
}

/// `x · w[k, n] + bias`.
fn linear_with(
    x: &View<'_>,
    w: Rhs<'_>,
    k: usize,
    n: usize,
    bias: Option<&View<'_>>,
) -> R<(Vec<f32>, Vec<usize>)> {
    let sx = &x.shape;
    if sx.is_empty() || sx[sx.len() - 1] != k {
        return Err(format!(
            "linear: shapes {sx:?} · [{k}, {n}] do not contract"
        ));
    }
    let rows: usize = sx[..sx.len() - 1].iter().product();
    // Every element is written: bias rows copied in, or the GEMM without accumulation.
    let mut out = super::buffer::for_overwrite(rows * n);
    let accumulate = match bias {
        Some(b) if b.numel() == n && b.shape.len() == 1 => {
            let bc = b.to_contiguous();
            for r in out.chunks_mut(n.max(1)) {
                r.copy_from_slice(&bc);
            }
            true
        }
        Some(b) => {
            return Err(format!(
                "linear: bias has shape {:?}, expected [{n}]",
                b.shape
            ))
        }
        None => false,
    };
    let xc = x.to_contiguous();
    w.product(
        rows,
        k,
        n,
        Mat::row_major(&xc, k),
        &mut out,
        n,
        accumulate,
        true,
    )?;
    let mut shape = sx[..sx.len() - 1].to_vec();
    shape.push(n);
    Ok((out, shape))
}

/// The registry entry of [`linear()`].
pub(crate) const ENTRY: KernelEntry = KernelEntry {
    name: "linear-f32-gemm",
    op: "linear",
    signature: "float, float[, float] -> float",
    doc: "`x·w + bias` on the GEMM with the bias fused into the output; a constant weight is packed once at lowering, any other read in place through its strides (1 to 4 rows against a row-major weight stream it once without packing).",
    applies: |_, operands, results| all_f32(operands, results),
    cost: 10,
    requires: "any",
    guard: any_cpu,
    prepare: Some(Preparation {
        doc: "a constant weight, packed into the micro-kernel's panels (the program keeps only that form)",
        prepare: |_, operands| prepare_rhs(operands),
        run: PreparedRun::F32(|op, v, prepared| {
            const NAME: &str = "linear-f32-gemm";
            match op {
                Op::Linear(_) => Ok(KernelOut::row_major(linear_packed(
                    operand(NAME, v, 0)?,
                    prepared.get::<PackedMatrix>(NAME)?,
                    v.get(1),
                )?)),
                other => Err(wrong_op(NAME, other)),
            }
        }),
    }),
    run: KernelRun::F32(|op, v| {
        const NAME: &str = "linear-f32-gemm";
        match op {
            Op::Linear(_) => Ok(KernelOut::row_major(linear(
                operand(NAME, v, 0)?,
                operand(NAME, v, 1)?,
                v.get(2),
            )?)),
            other => Err(wrong_op(NAME, other)),
        }
    }),
};

#[cfg(test)]
mod tests {
    use super::super::testing::{close, data, naive_mm};
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn linear_matches_naive(rows in 1usize..20, k in 1usize..20, n in 1usize..20, bias in any::<bool>(), wt in any::<bool>()) {
            let x = data(rows * k, 5);
            let w = data(k * n, 6);
            let bv = data(n, 7);
            // With `wt` the weight is stored [n, k] (as HF stores it) and read transposed.
            let wv = if wt { View::new(&w, &[k, n], &[1, k]).unwrap() } else { View::contiguous(&w, &[k, n]).unwrap() };
            let b = View::contiguous(&bv, &[n]).unwrap();
            let (c, s) = linear(&View::contiguous(&x, &[rows, k]).unwrap(), &wv, bias.then_some(&b)).unwrap();
            prop_assert_eq!(s, vec![rows, n]);
            let mut r = naive_mm(rows, k, n, &x, &wv.to_contiguous());
            if bias {
                for i in 0..rows { for j in 0..n { r[i * n + j] += bv[j] as f64; } }
            }
            close(&c, &r, 1e-5);
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let d = [0f32; 6];
        let x = View::contiguous(&d, &[2, 3]).unwrap();
        let w = View::contiguous(&d, &[3, 2]).unwrap();
        let b = View::contiguous(&d[..3], &[3]).unwrap();
        assert!(linear(&x, &w, Some(&b)).is_err());
        assert!(linear(&x, &x, None).is_err());
    }
}
