//! Buffer pool: freed tensors return their buffer here and the next tensor of the same size
//! class takes it, so a denoising loop allocates nothing after its first step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(crate) const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
struct Inner {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    cached_bytes: u64,
    live_bytes: u64,
}

#[derive(Clone, Default)]
pub(crate) struct BufferPool(Arc<Mutex<Inner>>);

/// A buffer on loan from the pool; going out of scope gives it back.
pub(crate) struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    pool: BufferPool,
    /// Exact-size buffers (weights) are destroyed on drop instead of cached.
    pooled: bool,
}

impl PooledBuffer {
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            let mut p = self.pool.lock();
            p.live_bytes -= self.class;
            if self.pooled {
                p.cached_bytes += self.class;
                p.free.entry(self.class).or_default().push(b);
            } else {
                b.destroy();
            }
        }
    }
}

/// Size classes: powers of two up to 1 MiB, then whole MiB, so similar activations share buffers
/// while big ones waste at most 1 MiB.
pub(crate) fn size_class(bytes: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let b = bytes.max(16);
    if b <= MIB {
        b.next_power_of_two()
    } else {
        b.next_multiple_of(MIB)
    }
}

fn create(device: &wgpu::Device, size: u64) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor { label: None, size, usage: USAGE, mapped_at_creation: false })
}

impl BufferPool {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A storage buffer of at least `bytes` bytes (contents undefined).
    pub(crate) fn get(&self, device: &wgpu::Device, bytes: u64) -> PooledBuffer {
        let class = size_class(bytes);
        let reused = {
            let mut p = self.lock();
            let b = p.free.get_mut(&class).and_then(|v| v.pop());
            if b.is_some() {
                p.cached_bytes -= class;
            }
            p.live_bytes += class;
            b
        };
        let buffer = reused.unwrap_or_else(|| create(device, class));
        PooledBuffer { buffer: Some(buffer), class, pool: self.clone(), pooled: true }
    }

    /// A buffer of exactly `bytes` (rounded to 4) that never enters the pool: for weights, which
    /// live as long as the model, so size-class rounding would only waste memory (~600 MiB for
    /// SDXL) and a freed weight should go straight back to the driver.
    pub(crate) fn get_exact(&self, device: &wgpu::Device, bytes: u64) -> PooledBuffer {
        let size = bytes.max(4).next_multiple_of(4);
        self.lock().live_bytes += size;
        PooledBuffer { buffer: Some(create(device, size)), class: size, pool: self.clone(), pooled: false }
    }

    /// Destroy every cached (unused) buffer, e.g. between the UNet and the VAE.
    pub(crate) fn trim(&self) {
        let mut p = self.lock();
        for (_, v) in p.free.drain() {
            for b in v {
                b.destroy();
            }
        }
        p.cached_bytes = 0;
    }

    /// (bytes lent out, bytes cached for reuse).
    pub(crate) fn stats(&self) -> (u64, u64) {
        let p = self.lock();
        (p.live_bytes, p.cached_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes() {
        assert_eq!(size_class(0), 16);
        assert_eq!(size_class(17), 32);
        assert_eq!(size_class(1 << 20), 1 << 20);
        assert_eq!(size_class((1 << 20) + 1), 2 << 20);
        assert_eq!(size_class(512 << 20), 512 << 20);
    }
}
