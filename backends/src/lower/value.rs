//! The values a lowered program holds in its registers: a float tensor on the backend's device
//! (f32 storage, also of f16/bf16 values and of the wider integers), or a packed low-precision
//! tensor ([`PackedTensor`]: i8/u8, i4, f8e4m3fn/f8e5m2, f4e2m1) in host memory.
//!
//! Every value of a packed dtype is held packed. An op with a packed kernel (quantize,
//! dequantize, cast, data movement) takes it as it is; any other op reads it decoded to f32 —
//! a *widening*, counted in [`RunStats::packed_widened`](super::RunStats::packed_widened).

use super::{download, download_f32, upload, upload_f32};
use crate::kernels::packed::{is_packed, PackedTensor};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorMetadata;
use fuselage_ir::{DType, Tensor};
use std::sync::Arc;

/// One register's value.
pub(crate) enum Value<B: Backend> {
    /// A float tensor on the device.
    Float(FloatTensor<B>),
    /// Packed codes in host memory (shared: a constant is not copied per run).
    Packed(Arc<PackedTensor>),
}

impl<B: Backend> Clone for Value<B> {
    fn clone(&self) -> Self {
        match self {
            Value::Float(t) => Value::Float(t.clone()),
            Value::Packed(p) => Value::Packed(p.clone()),
        }
    }
}

impl<B: Backend> Value<B> {
    /// A host tensor as a value: packed for a packed dtype, on the device otherwise.
    pub(crate) fn upload(t: &Tensor, device: &B::Device) -> Result<Value<B>, String> {
        if is_packed(t.dtype()) {
            return Ok(Value::Packed(Arc::new(PackedTensor::from_tensor(t)?)));
        }
        Ok(Value::Float(upload::<B>(t, device)))
    }

    /// A device result of `dtype`: packed (rounded onto the dtype) when the dtype is packed.
    pub(crate) fn from_float(t: FloatTensor<B>, dtype: DType) -> Result<Value<B>, String> {
        if !is_packed(dtype) {
            return Ok(Value::Float(t));
        }
        let (v, shape) = download_f32::<B>(t)?;
        let p = PackedTensor::encode(dtype, &shape, v.into_iter().map(f64::from))?;
        Ok(Value::Packed(Arc::new(p)))
    }

    /// Row-major f32 values of `shape` as a value of `dtype`.
    pub(crate) fn from_f32(
        data: Vec<f32>,
        shape: &[usize],
        dtype: DType,
        device: &B::Device,
    ) -> Result<Value<B>, String> {
        if is_packed(dtype) {
            let p = PackedTensor::encode(dtype, shape, data.into_iter().map(f64::from))?;
            return Ok(Value::Packed(Arc::new(p)));
        }
        Ok(Value::Float(upload_f32::<B>(data, shape, device)))
    }

    /// The value as a host tensor of `dtype`.
    pub(crate) fn download(self, dtype: DType) -> Result<Tensor, String> {
        match self {
            Value::Float(t) => download::<B>(t, dtype),
            Value::Packed(p) => p.to_tensor(),
        }
    }

    /// The value as a device float tensor; decoding a packed value adds one to `widened`.
    pub(crate) fn into_float(self, device: &B::Device, widened: &mut u64) -> FloatTensor<B> {
        match self {
            Value::Float(t) => t,
            Value::Packed(p) => {
                *widened += 1;
                upload_f32::<B>(p.decode_f32(), p.shape(), device)
            }
        }
    }

    /// The float tensor, when the value is one.
    pub(crate) fn as_float(&self) -> Option<&FloatTensor<B>> {
        match self {
            Value::Float(t) => Some(t),
            Value::Packed(_) => None,
        }
    }

    /// The concrete shape.
    pub(crate) fn shape(&self) -> Vec<usize> {
        match self {
            Value::Float(t) => t.shape().to_vec(),
            Value::Packed(p) => p.shape().to_vec(),
        }
    }

    /// Bytes the value occupies (f32: 4 per element; packed: its packed bytes).
    pub(crate) fn storage_bytes(&self) -> u64 {
        match self {
            Value::Float(t) => t.shape().num_elements() as u64 * 4,
            Value::Packed(p) => p.bytes().len() as u64,
        }
    }
}
