//! Zero-copy access to CPU-backend tensors for the native kernels.
//!
//! On the CPU backend a burn float tensor is a burn-ndarray `NdArrayTensor`: an ndarray array
//! (possibly a strided view: burn's transpose and expand do not copy). The kernels read it in
//! place as a [`View`] and their results become burn tensors without a copy. On any other
//! backend (or storage) the tensor is downloaded instead.

use super::{download_f32, upload_f32};
use crate::kernels::buffer::BufferPool;
use crate::kernels::View;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn_ndarray::NdArrayTensor;
use std::any::Any;

/// An operand held for a kernel: the backend's own array, or a host copy.
pub(crate) enum Held<'a> {
    /// burn-ndarray's f32 array, read in place.
    Array(ndarray::ArrayViewD<'a, f32>),
    /// Downloaded (other backends, other storage, negative strides).
    Owned(Vec<f32>, Vec<usize>),
}

/// Hold `t` for reading by a kernel.
pub(crate) fn hold<B: Backend>(t: &FloatTensor<B>) -> Result<Held<'_>, String> {
    if let Some(NdArrayTensor::F32(storage)) = (t as &dyn Any).downcast_ref::<NdArrayTensor>() {
        let a = storage.view();
        if a.strides().iter().all(|&s| s >= 0) {
            return Ok(Held::Array(a));
        }
        let shape = a.shape().to_vec();
        return Ok(Held::Owned(a.iter().copied().collect(), shape));
    }
    let (v, s) = download_f32::<B>(t.clone())?;
    Ok(Held::Owned(v, s))
}

/// Row-major elements and shape of a tensor read back to the host.
pub(crate) type HostF32 = (Vec<f32>, Vec<usize>);

/// The elements of a CPU-backend f32 tensor in row-major order (whole rows copied), `None` for
/// other backends and storage.
pub(crate) fn read_cpu<B: Backend>(t: &FloatTensor<B>) -> Option<Result<HostF32, String>> {
    let NdArrayTensor::F32(storage) = (t as &dyn Any).downcast_ref::<NdArrayTensor>()? else {
        return None;
    };
    let a = storage.view();
    if a.strides().iter().any(|&s| s < 0) {
        return None;
    }
    let held = Held::Array(a);
    Some(
        held.view()
            .map(|v| (v.to_contiguous().into_owned(), v.shape.clone())),
    )
}

impl Held<'_> {
    /// The operand as a kernel view.
    pub(crate) fn view(&self) -> Result<View<'_>, String> {
        match self {
            Held::Owned(v, s) => View::contiguous(v, s),
            Held::Array(a) => {
                let shape = a.shape();
                let strides: Vec<usize> = a.strides().iter().map(|&s| s as usize).collect();
                let span = if shape.contains(&0) {
                    0
                } else {
                    1 + shape
                        .iter()
                        .zip(&strides)
                        .map(|(d, s)| (d - 1) * s)
                        .sum::<usize>()
                };
                // SAFETY: an ndarray view with non-negative strides reaches exactly the elements
                // `ptr + Σ i·stride` for in-range indices, all inside the one allocation it
                // views; `span` is one past the largest of them, so the slice covers only
                // memory of that allocation, and it borrows `self`, which keeps it alive.
                let data = unsafe { std::slice::from_raw_parts(a.as_ptr(), span) };
                View::new(data, shape, &strides)
            }
        }
    }
}

/// A kernel's result as a tensor of backend `B` (no copy on the CPU backend): `data` holds
/// `shape` row-major, or laid out by `strides` when given (a permutation of a row-major
/// layout, as [`attention`](crate::kernels::attention) returns).
pub(crate) fn from_host<B: Backend>(
    data: Vec<f32>,
    shape: &[usize],
    strides: Option<&[usize]>,
    device: &B::Device,
) -> Result<FloatTensor<B>, String> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(format!(
            "kernel produced {} elements for shape {shape:?}",
            data.len()
        ));
    }
    if std::any::TypeId::of::<FloatTensor<B>>() == std::any::TypeId::of::<NdArrayTensor>() {
        use ndarray::ShapeBuilder;
        let a = match strides {
            None => ndarray::ArcArray::from_shape_vec(ndarray::IxDyn(shape), data),
            Some(st) => ndarray::ArcArray::from_shape_vec(
                ndarray::IxDyn(shape).strides(ndarray::IxDyn(st)),
                data,
            ),
        }
        .map_err(|e| format!("kernel result {shape:?}: {e}"))?;
        let t: Box<dyn Any> = Box::new(NdArrayTensor::from(a));
        return t
            .downcast::<FloatTensor<B>>()
            .map(|t| *t)
            .map_err(|_| "internal: CPU tensor type mismatch".to_string());
    }
    let data = match strides {
        Some(st) => View::new(&data, shape, st)?.to_contiguous().into_owned(),
        None => data,
    };
    Ok(upload_f32::<B>(data, shape, device))
}

/// Give the f32 storage of `t` to `pool` when `t` is a CPU-backend tensor that owns its buffer
/// and that nothing else references (no view of it is alive); otherwise just drop it.
pub(crate) fn reclaim<B: Backend>(t: FloatTensor<B>, pool: &BufferPool) {
    let boxed: Box<dyn Any> = Box::new(t);
    let Ok(t) = boxed.downcast::<NdArrayTensor>() else {
        return;
    };
    let NdArrayTensor::F32(storage) = *t else {
        return;
    };
    if !(storage.is_owned() && storage.is_unique()) {
        return;
    }
    if let Ok(a) = storage.into_shared().try_into_owned_nocopy() {
        let (v, _offset) = a.into_raw_vec_and_offset();
        pool.give(v);
    }
}

/// Round `t` onto `dtype` in place when it is a CPU-backend tensor that owns its contiguous
/// buffer alone (`Ok(Ok(rounded))`); otherwise hands it back unchanged (`Ok(Err(t))`) for the
/// download-round-upload path.
pub(crate) fn round_owned_cpu<B: Backend>(
    t: FloatTensor<B>,
    dtype: fuselage_ir::DType,
) -> Result<Result<FloatTensor<B>, FloatTensor<B>>, String> {
    if std::any::TypeId::of::<FloatTensor<B>>() != std::any::TypeId::of::<NdArrayTensor>() {
        return Ok(Err(t));
    }
    let back = |b: Box<dyn Any>| -> Result<FloatTensor<B>, String> {
        b.downcast::<FloatTensor<B>>()
            .map(|t| *t)
            .map_err(|_| "internal: CPU tensor type mismatch".to_string())
    };
    let boxed: Box<dyn Any> = Box::new(t);
    let mut nd = match boxed.downcast::<NdArrayTensor>() {
        Ok(nd) => nd,
        Err(b) => return back(b).map(Err),
    };
    let rounded = match nd.as_mut() {
        NdArrayTensor::F32(storage) if storage.is_owned() && storage.is_unique() => {
            match storage.ensure_owned().as_slice_memory_order_mut() {
                Some(v) => {
                    crate::kernels::round::round_in_place(dtype, v);
                    true
                }
                None => false,
            }
        }
        _ => false,
    };
    let t = back(nd)?;
    Ok(if rounded { Ok(t) } else { Err(t) })
}
