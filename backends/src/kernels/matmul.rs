//! Batched matmul with numpy batch broadcasting, on strided operands.

use super::packed_gemm::{prepare_rhs, PackedMatrix, Rhs};
use super::registry::{all_f32, any_cpu, operand, wrong_op, KernelEntry, KernelOut, KernelRun};
use super::registry::{Preparation, PreparedRun};
use super::{broadcast, broadcast_strides, offset_of, Mat, View, R};
use fuselage_ir::Op;
use rayon::prelude::*;

/// `a[..., M, K] · b[..., K, N]` with batch broadcasting; operands are read in place through
/// their strides. Returns the row-major data and shape.
pub fn batched_matmul(a: &View<'_>, b: &View<'_>) -> R<(Vec<f32>, Vec<usize>)> {
    matmul_with(a, MatRhs::View(b))
}

/// [`batched_matmul`] with a 2-D right operand packed at lowering time.
pub fn matmul_packed(a: &View<'_>, b: &PackedMatrix) -> R<(Vec<f32>, Vec<usize>)> {
    matmul_with(a, MatRhs::Packed(b))
}

/// The right operand of a matmul.
enum MatRhs<'v, 'a> {
    View(&'v View<'a>),
    Packed(&'v PackedMatrix),
}

fn matmul_with(a: &View<'_>, rhs: MatRhs<'_, '_>) -> R<(Vec<f32>, Vec<usize>)> {
    let (shape_b, strides_b, data_b): (Vec<usize>, Vec<usize>, &[f32]) = match &rhs {
        MatRhs::View(b) => (b.shape.clone(), b.strides.clone(), b.data),
        MatRhs::Packed(p) => (vec![p.rows(), p.cols()], vec![p.cols(), 1], &[]),
    };
    let packed = match rhs {
        MatRhs::Packed(p) => Some(p),
        MatRhs::View(_) => None,
    };
    let (sa, sb) = (&a.shape, &shape_b);
    let (ra, rb) = (sa.len(), sb.len());
    if ra < 2 || rb < 2 || sa[ra - 1] != sb[rb - 2] {
        return Err(format!("matmul: shapes {sa:?} · {sb:?} do not contract"));
    }
    let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
    let batch = broadcast(&sa[..ra - 2], &sb[..rb - 2])?;
    let nb: usize = batch.iter().product();
    let mut shape = batch.clone();
    shape.extend([m, n]);
    let mut out = super::buffer::zeroed(nb * m * n);
    if m * n == 0 {
        return Ok((out, shape));
    }
    let a_rows_fold = rb == 2 && {
        // The batch of `a` folds into its rows when its rows are evenly spaced across batches.
        let mut expect = a.strides[ra - 2] * m;
        let mut ok = true;
        for i in (0..ra - 2).rev() {
            if sa[i] != 1 && a.strides[i] != expect {
                ok = false;
            }
            expect *= sa[i];
        }
        ok
    };
    if a_rows_fold {
        // One GEMM with the batch folded into the rows.
        let am = Mat {
            data: a.data,
            off: 0,
            rs: a.strides[ra - 2],
            cs: a.strides[ra - 1],
        };
        let bm = match packed {
            Some(p) => Rhs::Packed(p),
            None => Rhs::Strided(Mat {
                data: data_b,
                off: 0,
                rs: strides_b[0],
                cs: strides_b[1],
            }),
        };
        bm.product(nb * m, k, n, am, &mut out, n, false, true)?;
        return Ok((out, shape));
    }
    let ast = broadcast_strides(&sa[..ra - 2], &a.strides[..ra - 2], &batch)?;
    let bst = broadcast_strides(&sb[..rb - 2], &strides_b[..rb - 2], &batch)?;
    let one = |i: usize, c: &mut [f32], parallel: bool| -> R<()> {
        let am = Mat {
            data: a.data,
            off: offset_of(i, &batch, &ast),
            rs: a.strides[ra - 2],
            cs: a.strides[ra - 1],
        };
        let bm = match packed {
            Some(p) => Rhs::Packed(p),
            None => Rhs::Strided(Mat {
                data: data_b,
                off: offset_of(i, &batch, &bst),
                rs: strides_b[rb - 2],
                cs: strides_b[rb - 1],
            }),
        };
        bm.product(m, k, n, am, c, n, false, parallel)
    };
    if nb >= super::threads() && nb > 1 {
        out.par_chunks_mut(m * n)
            .enumerate()
            .try_for_each(|(i, c)| one(i, c, false))?;
    } else {
        for (i, c) in out.chunks_mut(m * n).enumerate() {
            one(i, c, true)?;
        }
    }
    Ok((out, shape))
}

/// The registry entry of [`batched_matmul`].
pub(crate) const ENTRY: KernelEntry = KernelEntry {
    name: "matmul-f32-gemm",
    op: "matmul",
    signature: "float, float -> float",
    doc: "Batched matmul with numpy batch broadcasting on the GEMM, operands read through their strides (a constant 2-D right operand packed once at lowering); 1 to 4 rows against a row-major right operand (a decode step) stream it once without packing.",
    applies: |_, operands, results| all_f32(operands, results),
    cost: 10,
    requires: "any",
    guard: any_cpu,
    prepare: Some(Preparation {
        doc: "a constant 2-D right operand, packed into the micro-kernel's panels (the program keeps only that form)",
        prepare: |_, operands| prepare_rhs(operands),
        run: PreparedRun::F32(|op, v, prepared| {
            const NAME: &str = "matmul-f32-gemm";
            match op {
                Op::MatMul(_) => Ok(KernelOut::row_major(matmul_packed(
                    operand(NAME, v, 0)?,
                    prepared.get::<PackedMatrix>(NAME)?,
                )?)),
                other => Err(wrong_op(NAME, other)),
            }
        }),
    }),
    run: KernelRun::F32(|op, v| {
        const NAME: &str = "matmul-f32-gemm";
        match op {
            Op::MatMul(_) => Ok(KernelOut::row_major(batched_matmul(
                operand(NAME, v, 0)?,
                operand(NAME, v, 1)?,
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
        fn batched_matmul_broadcasts(b1 in 1usize..3, b2 in 1usize..4, m in 1usize..6, k in 1usize..6, n in 1usize..6) {
            // a: [b1, 1, m, k], b: [b2, k, n] → [b1, b2, m, n]
            let a = data(b1 * m * k, 3);
            let bb = data(b2 * k * n, 4);
            let (c, s) = batched_matmul(&View::contiguous(&a, &[b1, 1, m, k]).unwrap(),
                                        &View::contiguous(&bb, &[b2, k, n]).unwrap()).unwrap();
            prop_assert_eq!(s, vec![b1, b2, m, n]);
            for i in 0..b1 {
                for j in 0..b2 {
                    let r = naive_mm(m, k, n, &a[i * m * k..(i + 1) * m * k], &bb[j * k * n..(j + 1) * k * n]);
                    let o = (i * b2 + j) * m * n;
                    close(&c[o..o + m * n], &r, 1e-5);
                }
            }
        }

        #[test]
        fn transposed_operands_are_read_in_place(nb in 1usize..4, m in 1usize..7, k in 1usize..7, n in 1usize..7) {
            // a stored [nb, k, m] and read transposed; b a plain 2-D matrix stored [n, k], transposed.
            let at = data(nb * k * m, 5);
            let bt = data(n * k, 6);
            let av = View::new(&at, &[nb, m, k], &[k * m, 1, m]).unwrap();
            let bv = View::new(&bt, &[k, n], &[1, k]).unwrap();
            let (c, s) = batched_matmul(&av, &bv).unwrap();
            prop_assert_eq!(s, vec![nb, m, n]);
            let bc = bv.to_contiguous();
            for i in 0..nb {
                let ai: Vec<f32> = (0..m * k).map(|x| at[i * k * m + (x % k) * m + x / k]).collect();
                close(&c[i * m * n..(i + 1) * m * n], &naive_mm(m, k, n, &ai, &bc), 1e-5);
            }
        }
    }

    #[test]
    fn shapes_that_do_not_contract_are_errors() {
        let d = [0f32; 6];
        let v = View::contiguous(&d, &[2, 3]).unwrap();
        assert!(batched_matmul(&v, &v).is_err());
    }
}
