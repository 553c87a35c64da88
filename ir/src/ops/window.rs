//! Helpers shared by the N-D window ops ([`conv`](super::conv),
//! [`conv_transpose`](super::conv_transpose), [`pool`](super::pool)): per-axis attributes in
//! ONNX layout (empty = the default for every spatial axis; pads as `[begin…, end…]`), output
//! sizes as [`Dim`] expressions, and row-major index arithmetic over spatial shapes.

use crate::error::OpError;
use crate::types::Dim;

/// Per-spatial-axis window attributes, validated and expanded to the spatial rank.
#[derive(Clone, Debug, PartialEq)]
pub struct Spatial {
    /// Strides (>= 1).
    pub strides: Vec<u64>,
    /// Padding before each axis.
    pub begin: Vec<u64>,
    /// Padding after each axis.
    pub end: Vec<u64>,
    /// Dilations (>= 1).
    pub dilations: Vec<u64>,
}

/// `v` expanded to `r` entries: empty means `default` everywhere, otherwise it must have `r`
/// entries, each at least `min`.
pub fn per_axis(
    op: &str,
    what: &str,
    v: &[u64],
    r: usize,
    default: u64,
    min: u64,
) -> Result<Vec<u64>, OpError> {
    if v.is_empty() {
        return Ok(vec![default; r]);
    }
    if v.len() != r {
        crate::bail!("{op}: {what} needs one entry per spatial axis ({r}), found {v:?}");
    }
    if let Some(bad) = v.iter().find(|&&x| x < min) {
        crate::bail!("{op}: every entry of {what} must be >= {min}, found {bad} in {v:?}");
    }
    Ok(v.to_vec())
}

impl Spatial {
    /// Validate `strides`, `pads` (`[begin…, end…]`) and `dilations` for `r` spatial axes.
    pub fn new(
        op: &str,
        r: usize,
        strides: &[u64],
        pads: &[u64],
        dilations: &[u64],
    ) -> Result<Spatial, OpError> {
        if r == 0 {
            crate::bail!("{op} needs at least one spatial axis (operand rank >= 3)");
        }
        let strides = per_axis(op, "strides", strides, r, 1, 1)?;
        let dilations = per_axis(op, "dilations", dilations, r, 1, 1)?;
        let (begin, end) = if pads.is_empty() {
            (vec![0; r], vec![0; r])
        } else if pads.len() == 2 * r {
            (pads[..r].to_vec(), pads[r..].to_vec())
        } else {
            crate::bail!(
                "{op}: pads needs 2 entries per spatial axis ([begin…, end…], {} in all), found {pads:?}",
                2 * r
            );
        };
        for &p in begin.iter().chain(&end) {
            if p > i64::MAX as u64 / 4 {
                crate::bail!("{op}: pad {p} is out of range");
            }
        }
        for &s in strides.iter().chain(&dilations) {
            if s > i64::MAX as u64 / 4 {
                crate::bail!("{op}: stride or dilation {s} is out of range");
            }
        }
        Ok(Spatial {
            strides,
            begin,
            end,
            dilations,
        })
    }

    /// The span `d·(k−1) + 1` of a kernel of `k` cells on axis `i`.
    pub fn span(&self, op: &str, i: usize, k: u64) -> Result<u64, OpError> {
        if k == 0 {
            crate::bail!("{op}: kernel size on spatial axis {i} must be >= 1, found 0");
        }
        (k - 1)
            .checked_mul(self.dilations[i])
            .and_then(|v| v.checked_add(1))
            .filter(|&v| v <= i64::MAX as u64 / 4)
            .ok_or_else(|| OpError::new(format!("{op}: kernel span on axis {i} overflows")))
    }

    /// Number of windows along axis `i` of an input of size `n` (see [`window_count`]).
    pub fn count(&self, op: &str, i: usize, n: u64, span: u64, ceil: bool) -> Result<u64, OpError> {
        window_count(
            op,
            i,
            n,
            self.begin[i],
            self.end[i],
            span,
            self.strides[i],
            ceil,
        )
    }

    /// [`Spatial::count`] as a dim: an expression when `n` is symbolic.
    pub fn count_dim(
        &self,
        op: &str,
        i: usize,
        n: &Dim,
        span: u64,
        ceil: bool,
    ) -> Result<Dim, OpError> {
        if let Some(v) = n.fixed() {
            return Ok(Dim::from(self.count(op, i, v, span, ceil)?));
        }
        let (b, e, s) = (self.begin[i] as i64, self.end[i] as i64, self.strides[i]);
        let de = |e: crate::dim::DimError| OpError::new(format!("{op}: spatial axis {i}: {e}"));
        let num = n.add(&Dim::from_i64(b + e - span as i64)).map_err(de)?;
        let last = if ceil {
            // The last window must start inside the input or the begin padding.
            let starts = n
                .add(&Dim::from_i64(b - 1))
                .map_err(de)?
                .div_floor(s)
                .map_err(de)?;
            num.div_ceil(s).map_err(de)?.minimum(&starts).map_err(de)?
        } else {
            num.div_floor(s).map_err(de)?
        };
        last.add(&Dim::from_i64(1)).map_err(de)
    }
}

/// Number of windows of `span` cells, `stride` apart, over an axis of `n` cells padded by
/// `begin` and `end`: `⌊(n + begin + end − span)/stride⌋ + 1`, or with `ceil` (ONNX and PyTorch
/// `ceil_mode`) `⌈(n + begin + end − span)/stride⌉ + 1` less the windows that would start past
/// the input and the begin padding. An error when there is no window.
#[allow(clippy::too_many_arguments)]
pub fn window_count(
    op: &str,
    axis: usize,
    n: u64,
    begin: u64,
    end: u64,
    span: u64,
    stride: u64,
    ceil: bool,
) -> Result<u64, OpError> {
    let (n, b, e, k, s) = (
        n as i128,
        begin as i128,
        end as i128,
        span as i128,
        stride.max(1) as i128,
    );
    let num = n + b + e - k;
    let last = if ceil {
        let c = -(-num).div_euclid(s);
        c.min((n + b - 1).div_euclid(s))
    } else {
        num.div_euclid(s)
    };
    let out = last + 1;
    if out <= 0 {
        crate::bail!(
            "{op}: spatial axis {axis} of size {n} padded by ({begin}, {end}) has no room for a window of span {span}"
        );
    }
    u64::try_from(out).map_err(|_| OpError::new(format!("{op}: output size {out} overflows")))
}

/// Element count of a result shape, or an error when it does not fit in memory addresses.
pub fn result_numel(op: &str, shape: &[usize]) -> Result<usize, OpError> {
    crate::tensor::checked_numel(shape)
        .filter(|&n| n <= isize::MAX as usize / 8)
        .ok_or_else(|| OpError::new(format!("{op}: result shape {shape:?} is too large")))
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Advance a multi-index over `shape` in row-major order; false after the last one.
pub fn next_index(idx: &mut [usize], shape: &[usize]) -> bool {
    for ax in (0..shape.len()).rev() {
        idx[ax] += 1;
        if idx[ax] < shape[ax] {
            return true;
        }
        idx[ax] = 0;
    }
    false
}

/// Fixed sizes of `dims`, or an error naming what needed them.
pub fn fixed_all(op: &str, what: &str, dims: &[Dim]) -> Result<Vec<u64>, OpError> {
    dims.iter()
        .map(|d| {
            d.fixed()
                .ok_or_else(|| OpError::new(format!("{op} needs a fixed {what}, found {d}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Naive count by enumeration: floor mode counts the windows that fit in the padded axis;
    /// ceil mode counts the windows that start at a multiple of the stride inside the input or
    /// the begin padding and whose start is at most `⌈(L − span)/s⌉·s` (ONNX's ceil rule).
    fn naive(n: u64, b: u64, e: u64, span: u64, s: u64, ceil: bool) -> i64 {
        let (l, span, s) = ((n + b + e) as i64, span as i64, s as i64);
        let ceil_last = (l - span + s - 1).div_euclid(s); // ⌈(l − span)/s⌉
        (0..64i64)
            .filter(|t| {
                if ceil {
                    *t <= ceil_last && t * s < (n + b) as i64
                } else {
                    t * s + span <= l
                }
            })
            .count() as i64
    }

    #[test]
    fn window_counts_match_enumeration_and_symbolic_dims() {
        for n in 0..12u64 {
            for b in 0..3 {
                for e in 0..3 {
                    for span in 1..5 {
                        for s in 1..4 {
                            for ceil in [false, true] {
                                let got = window_count("t", 0, n, b, e, span, s, ceil);
                                let want = naive(n, b, e, span, s, ceil);
                                match got {
                                    Ok(v) => {
                                        assert_eq!(v as i64, want, "{n} {b} {e} {span} {s} {ceil}")
                                    }
                                    Err(_) => {
                                        assert!(want <= 0, "{n} {b} {e} {span} {s} {ceil}: {want}")
                                    }
                                }
                                let sp = Spatial::new("t", 1, &[s], &[b, e], &[]).unwrap();
                                let d = sp.count_dim("t", 0, &Dim::sym("H"), span, ceil).unwrap();
                                let bind = HashMap::from([("H".to_string(), n)]);
                                if want > 0 {
                                    assert_eq!(d.eval(&bind).unwrap(), want, "{d} at H={n}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn attributes_are_validated() {
        let e = Spatial::new("t", 2, &[1], &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("one entry per spatial axis (2)"), "{e}");
        let e = Spatial::new("t", 2, &[], &[1, 1, 1], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[begin…, end…]"), "{e}");
        let e = Spatial::new("t", 1, &[0], &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains(">= 1"), "{e}");
        let e = Spatial::new("t", 0, &[], &[], &[]).unwrap_err().to_string();
        assert!(e.contains("at least one spatial axis"), "{e}");
        let s = Spatial::new("t", 2, &[], &[1, 2, 3, 4], &[2, 1]).unwrap();
        assert_eq!((s.begin, s.end), (vec![1, 2], vec![3, 4]));
        assert_eq!(s.strides, vec![1, 1]);
    }
}
