//! Buffer pool and memory accounting. Freed tensors return their buffer here and the next tensor
//! of the same size class takes it, so a denoising loop allocates nothing after its first step.
//!
//! Every byte the engine asks the driver for is counted here: pooled activations (lent out or
//! cached), exact-size weights, and transient staging (uploads, readbacks, the uniform arena).
//! The peak of (live + cached + transient) is what `--json` reports as `peak_gpu_bytes`.
//!
//! A *dry* pool hands out one shared dummy buffer instead of real ones, with identical
//! accounting: `--dry-run` and the planner replay the allocation sequence of a generation at any
//! size in milliseconds and get exactly the peak the real run will have.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub(crate) const USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

/// Counters, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryStats {
    /// Held by live tensors (activations and weights).
    pub live: u64,
    /// Freed activations kept by the pool for reuse.
    pub cached: u64,
    /// Staging in flight right now (uploads, readbacks).
    pub transient: u64,
    /// The highest live + cached + transient since the last `reset_peak`.
    pub peak: u64,
}

impl MemoryStats {
    pub fn total(&self) -> u64 {
        self.live + self.cached + self.transient
    }
}

#[derive(Default)]
struct Inner {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    stats: MemoryStats,
    /// When set, cached buffers are released before a new buffer would push the total past it.
    limit: Option<u64>,
}

impl Inner {
    fn bump_peak(&mut self) {
        self.stats.peak = self.stats.peak.max(self.stats.total());
    }
    /// Destroy cached buffers, largest first, until `need` more bytes fit under the limit.
    fn make_room(&mut self, need: u64) {
        let Some(limit) = self.limit else { return };
        if self.stats.total() + need <= limit {
            return;
        }
        let mut classes: Vec<u64> = self.free.keys().copied().collect();
        classes.sort_unstable_by(|a, b| b.cmp(a));
        for c in classes {
            while self.stats.total() + need > limit {
                // Dropped, not destroyed: wgpu frees it once submitted work no longer uses it.
                let Some(_) = self.free.get_mut(&c).and_then(|v| v.pop()) else { break };
                self.stats.cached -= c;
            }
        }
        self.free.retain(|_, v| !v.is_empty());
    }
}

#[derive(Clone, Default)]
pub(crate) struct BufferPool {
    inner: Arc<Mutex<Inner>>,
    /// Dry pools lend clones of this buffer and never allocate.
    dummy: Option<wgpu::Buffer>,
}

/// A buffer on loan from the pool; going out of scope gives it back.
pub(crate) struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    pool: BufferPool,
    /// Exact-size buffers (weights) go back to the driver on drop instead of into the cache.
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
            p.stats.live -= self.class;
            if self.pooled {
                p.stats.cached += self.class;
                p.free.entry(self.class).or_default().push(b);
            } else {
                // Not `destroy()`: recorded, unsubmitted commands may still use a released weight
                // (text encoders dropped right after encoding); wgpu frees it after them.
                drop(b);
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

impl BufferPool {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A pool that accounts like a real one but lends `dummy` (see the module docs).
    pub(crate) fn dry(dummy: wgpu::Buffer) -> Self {
        BufferPool { inner: Arc::default(), dummy: Some(dummy) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn create(&self, device: &wgpu::Device, size: u64) -> wgpu::Buffer {
        match &self.dummy {
            Some(d) => d.clone(),
            None => device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage: USAGE,
                mapped_at_creation: false,
            }),
        }
    }

    /// A storage buffer of at least `bytes` bytes (contents undefined).
    pub(crate) fn get(&self, device: &wgpu::Device, bytes: u64) -> PooledBuffer {
        let class = size_class(bytes);
        let reused = {
            let mut p = self.lock();
            let b = p.free.get_mut(&class).and_then(|v| v.pop());
            if b.is_some() {
                p.stats.cached -= class;
            }
            p.stats.live += class;
            p.bump_peak();
            b
        };
        let buffer = reused.unwrap_or_else(|| self.create(device, class));
        PooledBuffer { buffer: Some(buffer), class, pool: self.clone(), pooled: true }
    }

    /// A buffer of exactly `bytes` (rounded to 4) that never enters the pool: for weights, which
    /// live as long as the model, so size-class rounding would only waste memory (~600 MiB for
    /// SDXL) and a freed weight should go straight back to the driver.
    pub(crate) fn get_exact(&self, device: &wgpu::Device, bytes: u64) -> PooledBuffer {
        let size = bytes.max(4).next_multiple_of(4);
        {
            let mut p = self.lock();
            p.stats.live += size;
            p.bump_peak();
        }
        PooledBuffer { buffer: Some(self.create(device, size)), class: size, pool: self.clone(), pooled: false }
    }

    /// Staging of `bytes` that exists from now until `end_transient(bytes)`.
    pub(crate) fn begin_transient(&self, bytes: u64) {
        let mut p = self.lock();
        p.stats.transient += bytes;
        p.bump_peak();
    }

    pub(crate) fn end_transient(&self, bytes: u64) {
        let mut p = self.lock();
        p.stats.transient = p.stats.transient.saturating_sub(bytes);
    }

    /// Destroy every cached (unused) buffer, e.g. between the UNet and the VAE.
    pub(crate) fn trim(&self) {
        let mut p = self.lock();
        // Dropped: wgpu frees each buffer once submitted work is done with it.
        p.free.clear();
        p.stats.cached = 0;
    }

    /// Whether allocating `need` new bytes would first free cached buffers (see `make_room`).
    /// The caller submits pending work first, so the memory can really be returned.
    pub(crate) fn must_evict(&self, need: u64) -> bool {
        let p = self.lock();
        p.limit.is_some_and(|l| p.stats.total() + need > l) && p.stats.cached > 0
    }

    /// Free cached buffers, largest first, until `need` more bytes fit under the limit.
    pub(crate) fn make_room(&self, need: u64) {
        self.lock().make_room(need)
    }

    /// Bytes a new allocation of `bytes` takes: its size class when pooled, else exact.
    pub(crate) fn footprint(&self, bytes: u64, pooled: bool) -> u64 {
        if pooled {
            if self.lock().free.get(&size_class(bytes)).is_some_and(|v| !v.is_empty()) {
                return 0; // reused from the cache
            }
            size_class(bytes)
        } else {
            bytes.max(4).next_multiple_of(4)
        }
    }

    pub(crate) fn set_limit(&self, limit: Option<u64>) {
        self.lock().limit = limit;
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        self.lock().stats
    }

    /// Start a new peak measurement from the current total.
    pub(crate) fn reset_peak(&self) {
        let mut p = self.lock();
        p.stats.peak = p.stats.total();
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
