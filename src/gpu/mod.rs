//! GPU runtime: device acquisition, tensors, buffer pool, pipeline cache, readback.
//!
//! Work is recorded into one pending command encoder and submitted on `flush()` (or implicitly
//! before uploads and readbacks), so a model step costs a handful of submits, not one per op.

mod device;
mod pool;
pub mod registry;
mod tensor;
mod timing;
pub mod work;

pub use device::{Gpu, GpuInfo, GpuOptions, LimitsInfo};
pub use pool::MemoryStats;
pub use registry::{Def, Variant};
pub use tensor::{DType, Tensor};
pub use timing::now_seconds;

/// A buffer (or part of one) bound to a shader's storage slot.
pub struct Binding<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    /// `None`: to the end of the buffer.
    pub size: Option<u64>,
}

impl<'a> Binding<'a> {
    pub fn whole(t: &'a Tensor) -> Self {
        Binding { buffer: t.buffer(), offset: 0, size: Some(t.byte_len_padded()) }
    }
    /// Bytes `offset..offset+size` of the tensor; offset must respect
    /// `min_storage_buffer_offset_alignment` (checked by wgpu).
    pub fn range(t: &'a Tensor, offset: u64, size: u64) -> Self {
        Binding { buffer: t.buffer(), offset, size: Some(size) }
    }
}

/// Split `n` workgroups into an (x, y) grid that respects the per-dimension limit (65,535 on
/// WebGPU). Kernels recover the linear index as `wid.x + wid.y * num_workgroups.x` and must
/// ignore indices ≥ n.
pub fn grid(n: u32, max_per_dim: u32) -> [u32; 3] {
    if n <= max_per_dim {
        [n.max(1), 1, 1]
    } else {
        let y = n.div_ceil(max_per_dim);
        [n.div_ceil(y), y, 1]
    }
}

#[cfg(test)]
mod tests {
    use super::grid;

    #[test]
    fn grid_covers_and_respects_limit() {
        for n in [1u32, 7, 65_535, 65_536, 1 << 20, 3_000_001] {
            let [x, y, _] = grid(n, 65_535);
            assert!(x <= 65_535 && y <= 65_535, "n={n}: {x}x{y}");
            assert!(x as u64 * y as u64 >= n as u64, "n={n}: {x}x{y} too small");
        }
    }
}
