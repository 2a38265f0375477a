//! GPU timing for the benchmark: while a timing scope is open, every dispatch gets its own
//! begin/end timestamp (ComputePassTimestampWrites), and closing the scope sums the per-pass GPU
//! time. Needs TIMESTAMP_QUERY; callers fall back to wall clock when `begin_timing` says no.

use super::Gpu;
use crate::{Error, Result};

/// Wall-clock seconds since an arbitrary origin (stage timings; `Instant` panics on wasm32).
pub fn now_seconds() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now() / 1000.0
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
    }
}

/// Passes one scope can time: two queries each, and wgpu caps a query set at 4,096 queries.
const MAX_TIMED_PASSES: u32 = 2048;

pub(crate) struct TimerState {
    set: wgpu::QuerySet,
    used: u32,
    overflowed: bool,
}

impl TimerState {
    /// The query set and first query index for the next pass, or None once the set is full.
    pub(crate) fn next_pass(&mut self) -> Option<(wgpu::QuerySet, u32)> {
        if self.used >= MAX_TIMED_PASSES {
            self.overflowed = true;
            return None;
        }
        let i = self.used;
        self.used += 1;
        Some((self.set.clone(), 2 * i))
    }
}

impl Gpu {
    /// Whether dispatches can be timed on the GPU (TIMESTAMP_QUERY granted).
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Open a timing scope; false (and nothing happens) without TIMESTAMP_QUERY. Work recorded
    /// before the call is submitted first so it is not counted.
    pub fn begin_timing(&self) -> bool {
        if !self.has_timestamps() {
            return false;
        }
        self.flush();
        let set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bench timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * MAX_TIMED_PASSES,
        });
        *self.timer.lock().unwrap_or_else(|p| p.into_inner()) = Some(TimerState { set, used: 0, overflowed: false });
        true
    }

    /// Close the scope: GPU seconds summed over the passes dispatched inside it. None when no
    /// scope was open or it held more passes than one query set can time.
    pub async fn end_timing(&self) -> Result<Option<f64>> {
        let Some(state) = self.timer.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(None);
        };
        if state.overflowed {
            return Ok(None);
        }
        if state.used == 0 {
            return Ok(Some(0.0));
        }
        let bytes = 16 * state.used as u64;
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamp resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.with_encoder(|e| e.resolve_query_set(&state.set, 0..2 * state.used, &resolve, 0));
        let raw = self.read_bytes(&resolve, 0, bytes).await?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&raw);
        let period_ns = self.queue.get_timestamp_period() as f64;
        let mut total = 0u64;
        for pair in ticks.chunks_exact(2) {
            if pair[1] < pair[0] {
                return Err(Error::Gpu(format!("timestamps went backwards ({} then {})", pair[0], pair[1])));
            }
            total += pair[1] - pair[0];
        }
        Ok(Some(total as f64 * period_ns * 1e-9))
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn end_timing_blocking(&self) -> Result<Option<f64>> {
        pollster::block_on(self.end_timing())
    }
}
