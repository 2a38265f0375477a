//! Tensors: a shape, an element type and a (pooled) GPU buffer. Row-major, contiguous.
//!
//! F16 tensors are stored as IEEE halves, two per u32 word as WGSL reads them (`unpack_h2`);
//! buffers are padded to whole words.

use std::sync::Arc;

use super::pool::PooledBuffer;
use super::Gpu;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F16,
    F32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            DType::F32 => 4,
        }
    }
}

#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    dtype: DType,
    buf: Arc<PooledBuffer>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.shape, self.dtype)
    }
}

impl Tensor {
    /// An uninitialised tensor (contents are whatever the pooled buffer held).
    pub fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Self::alloc(gpu, shape, dtype, true)
    }

    /// An uninitialised tensor in a buffer of exactly its size, outside the pool (weights).
    pub fn empty_exact(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Self::alloc(gpu, shape, dtype, false)
    }

    // wgpu's web types are !Send; wasm32 is single-threaded, so the Arc is only an Rc there.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    fn alloc(gpu: &Gpu, shape: &[usize], dtype: DType, pooled: bool) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let bytes = (n as u64 * dtype.size() as u64).next_multiple_of(4);
        if bytes > gpu.limits.max_buffer_size {
            return Err(Error::Gpu(format!(
                "tensor {shape:?} {dtype:?} needs {} MiB, over this device's max_buffer_size of {} MiB",
                bytes >> 20,
                gpu.limits.max_buffer_size >> 20
            )));
        }
        gpu.room_for(gpu.pool.footprint(bytes, pooled));
        let buf = if pooled { gpu.pool.get(&gpu.device, bytes) } else { gpu.pool.get_exact(&gpu.device, bytes) };
        Ok(Tensor { shape: shape.to_vec(), dtype, buf: Arc::new(buf) })
    }

    /// A tensor filled with zeros (cleared on the GPU, in order with recorded work).
    pub fn zeros(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let t = Self::empty(gpu, shape, dtype)?;
        let len = t.byte_len_padded();
        gpu.with_encoder(|e| e.clear_buffer(t.buffer(), 0, Some(len)));
        Ok(t)
    }

    /// Upload host values, converting to `dtype` (f16: round to nearest even).
    pub fn from_f32(gpu: &Gpu, shape: &[usize], dtype: DType, data: &[f32]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(Error::Input(format!("{} values given for shape {shape:?} ({n} elements)", data.len())));
        }
        let bytes: Vec<u8> = match dtype {
            DType::F32 => bytemuck::cast_slice(data).to_vec(),
            DType::F16 => {
                let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
                bytemuck::cast_slice(&h).to_vec()
            }
        };
        Self::from_bytes(gpu, shape, dtype, &bytes)
    }

    /// Upload raw little-endian bytes of `dtype`.
    pub fn from_bytes(gpu: &Gpu, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if bytes.len() != n * dtype.size() {
            return Err(Error::Input(format!(
                "{} bytes given for {shape:?} {dtype:?} ({} expected)",
                bytes.len(),
                n * dtype.size()
            )));
        }
        let t = Self::empty(gpu, shape, dtype)?;
        if bytes.len().is_multiple_of(4) {
            gpu.write_buffer(t.buffer(), 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            gpu.write_buffer(t.buffer(), 0, &padded);
        }
        Ok(t)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn byte_len(&self) -> u64 {
        self.numel() as u64 * self.dtype.size() as u64
    }
    /// Bytes the data occupies rounded up to whole u32 words (what kernels bind).
    pub fn byte_len_padded(&self) -> u64 {
        self.byte_len().next_multiple_of(4).max(4)
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }

    /// The same buffer seen with another shape of equal element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::Input(format!("cannot reshape {:?} to {shape:?}", self.shape)));
        }
        Ok(Tensor { shape: shape.to_vec(), dtype: self.dtype, buf: self.buf.clone() })
    }

    /// Read back as f32 (awaits the GPU; on native, polls the device).
    pub async fn to_vec_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = gpu.read_bytes(self.buffer(), 0, self.byte_len()).await?;
        Ok(match self.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(&bytes),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&bytes).iter().map(|h| h.to_f32()).collect(),
        })
    }

    /// Raw bytes as stored (f16 bit patterns for F16 tensors).
    pub async fn to_bytes(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        gpu.read_bytes(self.buffer(), 0, self.byte_len()).await
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec_f32_blocking(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        pollster::block_on(self.to_vec_f32(gpu))
    }
}
