//! The values a lowered program holds in its registers: a float tensor on the backend's device
//! (f32 storage, also of f16/bf16 values and of i16/u16, which f32 holds exactly), a packed
//! low-precision tensor ([`PackedTensor`]: i8/u8, i4, f8e4m3fn/f8e5m2, f4e2m1) in host memory,
//! or an exact host tensor of a dtype f32 cannot hold (i32/u32/i64/u64 beyond 2^24, f64).
//!
//! Every value of a packed dtype is held packed. An op with a packed kernel (quantize,
//! dequantize, cast, data movement) takes it as it is; any other op reads it decoded to f32 —
//! a *widening*, counted in [`RunStats::packed_widened`](super::RunStats::packed_widened).
//!
//! Every value of an exact-held dtype ([`is_exact_held`]) is held exactly. An op reads it as
//! f32 on the device only when every element is an f32 value (token ids, positions, masks);
//! otherwise, or when the op's result is such a dtype and computing it in f32 could round, the
//! op runs on the reference semantics (see `Program::exec_values`).

use super::{download, download_f32, upload, upload_f32};
use crate::kernels::packed::{is_packed, PackedTensor};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorMetadata;
use fuselage_ir::{DType, Tensor};
use std::sync::Arc;

/// Whether values of `dtype` are held exactly on the host rather than as f32 on the device:
/// the integers f32 cannot hold beyond 2^24, and f64.
pub(crate) fn is_exact_held(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::I32 | DType::U32 | DType::I64 | DType::U64 | DType::F64
    )
}

/// One register's value.
pub(crate) enum Value<B: Backend> {
    /// A float tensor on the device.
    Float(FloatTensor<B>),
    /// Packed codes in host memory (shared: a constant is not copied per run).
    Packed(Arc<PackedTensor>),
    /// An exact host tensor of an exact-held dtype ([`is_exact_held`]).
    Exact(Arc<Tensor>),
}

impl<B: Backend> Clone for Value<B> {
    fn clone(&self) -> Self {
        match self {
            Value::Float(t) => Value::Float(t.clone()),
            Value::Packed(p) => Value::Packed(p.clone()),
            Value::Exact(t) => Value::Exact(t.clone()),
        }
    }
}

impl<B: Backend> Value<B> {
    /// A host tensor as a value: packed for a packed dtype, on the device otherwise.
    pub(crate) fn upload(t: &Tensor, device: &B::Device) -> Result<Value<B>, String> {
        if is_packed(t.dtype()) {
            return Ok(Value::Packed(Arc::new(PackedTensor::from_tensor(t)?)));
        }
        if is_exact_held(t.dtype()) {
            return Ok(Value::Exact(Arc::new(t.clone())));
        }
        Ok(Value::Float(upload::<B>(t, device)))
    }

    /// A device result of `dtype`: packed (rounded onto the dtype) when the dtype is packed,
    /// an exact host tensor (rounded onto the dtype, saturating) when it is exact-held.
    pub(crate) fn from_float(t: FloatTensor<B>, dtype: DType) -> Result<Value<B>, String> {
        if !is_packed(dtype) && !is_exact_held(dtype) {
            return Ok(Value::Float(t));
        }
        let (v, shape) = download_f32::<B>(t)?;
        Self::from_host_f32(v, &shape, dtype)
    }

    /// Host f32 values of a packed or exact-held dtype as a value.
    fn from_host_f32(v: Vec<f32>, shape: &[usize], dtype: DType) -> Result<Value<B>, String> {
        if is_exact_held(dtype) {
            let t = Tensor::new(
                dtype,
                shape.to_vec(),
                v.into_iter().map(f64::from).collect(),
            )
            .map_err(|e| e.to_string())?;
            return Ok(Value::Exact(Arc::new(t)));
        }
        let p = PackedTensor::encode(dtype, shape, v.into_iter().map(f64::from))?;
        Ok(Value::Packed(Arc::new(p)))
    }

    /// Row-major f32 values of `shape` as a value of `dtype`.
    pub(crate) fn from_f32(
        data: Vec<f32>,
        shape: &[usize],
        dtype: DType,
        device: &B::Device,
    ) -> Result<Value<B>, String> {
        if is_packed(dtype) || is_exact_held(dtype) {
            return Self::from_host_f32(data, shape, dtype);
        }
        Ok(Value::Float(upload_f32::<B>(data, shape, device)))
    }

    /// The value as a host tensor of `dtype`.
    pub(crate) fn download(self, dtype: DType) -> Result<Tensor, String> {
        match self {
            Value::Float(t) => download::<B>(t, dtype),
            Value::Packed(p) => p.to_tensor(),
            Value::Exact(t) => Ok(Arc::unwrap_or_clone(t)),
        }
    }

    /// The value as a device float tensor; decoding a packed value adds one to `widened`. An
    /// exact value is read as f32 (exact only where [`Value::is_f32_exact`] holds: callers
    /// check it first).
    pub(crate) fn into_float(self, device: &B::Device, widened: &mut u64) -> FloatTensor<B> {
        match self {
            Value::Float(t) => t,
            Value::Packed(p) => {
                *widened += 1;
                upload_f32::<B>(p.decode_f32(), p.shape(), device)
            }
            Value::Exact(t) => upload::<B>(&t, device),
        }
    }

    /// Whether reading the value as f32 loses nothing: always for a device float or packed
    /// value; for an exact value, when every element is an f32 value (integers below 2^24 in
    /// magnitude, f64 values that are f32 values).
    pub(crate) fn is_f32_exact(&self) -> bool {
        match self {
            Value::Float(_) | Value::Packed(_) => true,
            Value::Exact(t) => t
                .data()
                .iter()
                .all(|&v| (v as f32) as f64 == v || v.is_nan()),
        }
    }

    /// The float tensor, when the value is one.
    pub(crate) fn as_float(&self) -> Option<&FloatTensor<B>> {
        match self {
            Value::Float(t) => Some(t),
            Value::Packed(_) | Value::Exact(_) => None,
        }
    }

    /// The concrete shape.
    pub(crate) fn shape(&self) -> Vec<usize> {
        match self {
            Value::Float(t) => t.shape().to_vec(),
            Value::Packed(p) => p.shape().to_vec(),
            Value::Exact(t) => t.shape().to_vec(),
        }
    }

    /// Bytes the value occupies (f32: 4 per element; packed: its packed bytes; exact: its
    /// dtype's storage size).
    pub(crate) fn storage_bytes(&self) -> u64 {
        match self {
            Value::Float(t) => t.shape().num_elements() as u64 * 4,
            Value::Packed(p) => p.bytes().len() as u64,
            Value::Exact(t) => t.dtype().storage_bytes(t.data().len()) as u64,
        }
    }
}
