//! Adapter and device acquisition (native Vulkan, browser WebGPU), the pending encoder, the
//! pipeline cache and the uniform arena.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::pool::{BufferPool, MemoryStats};
use super::registry::Variant;
use super::Binding;
use crate::{Error, Result};

/// How to acquire the device.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Use f32 arithmetic even when shader-f16 exists (CLI `--f32`, env `SDXL_F32=1`).
    pub force_f32: bool,
}

impl GpuOptions {
    /// Options with the `SDXL_F32` environment switch applied (native only; no env on the web).
    pub fn from_env() -> Self {
        let force_f32 = std::env::var("SDXL_F32").map(|v| !v.is_empty() && v != "0").unwrap_or(false);
        GpuOptions { force_f32 }
    }
}

/// The limits the engine relies on, as granted.
#[derive(Clone, Debug, Serialize)]
pub struct LimitsInfo {
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_uniform_buffer_binding_size: u64,
    pub max_storage_buffers_per_shader_stage: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_size_x: u32,
    pub max_compute_workgroup_size_y: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub min_storage_buffer_offset_alignment: u32,
    pub min_uniform_buffer_offset_alignment: u32,
}

/// What was found and granted; `sdxl info` prints this.
#[derive(Clone, Debug, Serialize)]
pub struct GpuInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    /// Available on the adapter and granted.
    pub shader_f16: bool,
    pub subgroup: bool,
    pub timestamp_query: bool,
    /// The compute path in use: "f16" (f16 arithmetic) or "f32".
    pub compute_path: String,
    pub limits: LimitsInfo,
}

/// The engine's handle on one GPU device.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: GpuInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// f16 arithmetic in kernels (shader-f16 present and not forced off).
    pub f16: bool,
    pub(crate) pool: BufferPool,
    /// Shared with dry twins: a dry run compiles the same pipelines the real run uses.
    pipelines: Arc<Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>>,
    /// Dry: tensors are accounted but never allocated, dispatches and copies are skipped and
    /// readbacks return zeros (see `dry_twin`).
    dry: bool,
    pending: Mutex<Pending>,
    /// First uncaptured device error (validation, out of memory), surfaced by `check()`.
    error: Arc<Mutex<Option<String>>>,
    lost: Arc<Mutex<Option<String>>>,
    /// Open benchmark timing scope (see `gpu/timing.rs`); None in normal runs.
    pub(crate) timer: Mutex<Option<super::timing::TimerState>>,
    /// Open work count (see `gpu/work.rs`); None in normal runs.
    pub(crate) work: Mutex<Option<super::work::WorkTally>>,
}

/// Work recorded since the last submit, and the uniform bytes it refers to.
struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    uniforms: Vec<u8>,
    uniform_buf: wgpu::Buffer,
    dispatches: u32,
}

/// One uniform arena per submit: every dispatch's parameters live at their own offset, because
/// `queue.write_buffer` lands before the whole submit and would overwrite a reused buffer.
const UNIFORM_ARENA: u64 = 64 * 1024;
/// Submit at least this often so a long model step keeps the GPU busy while we record.
const MAX_DISPATCHES_PER_SUBMIT: u32 = 256;

impl Gpu {
    /// Acquire an adapter and device, requesting what the engine needs up to what is offered.
    pub async fn new(opts: GpuOptions) -> Result<Gpu> {
        #[cfg(not(target_arch = "wasm32"))]
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::VULKAN);
        #[cfg(target_arch = "wasm32")]
        let backends = wgpu::Backends::BROWSER_WEBGPU;
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Gpu(format!("no GPU adapter found ({e}); WebGPU / Vulkan is required")))?;
        Self::from_adapter(adapter, opts).await
    }

    /// Blocking constructor for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: GpuOptions) -> Result<Gpu> {
        pollster::block_on(Self::new(opts))
    }

    async fn from_adapter(adapter: wgpu::Adapter, opts: GpuOptions) -> Result<Gpu> {
        let offered = adapter.limits();
        let afeat = adapter.features();
        let mut wanted = wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY;
        if cfg!(not(target_arch = "wasm32")) {
            wanted |= wgpu::Features::SUBGROUP;
        }
        let features = afeat & wanted;

        // Start from WebGPU's defaults and raise what the engine uses to what the adapter has.
        let limits = wgpu::Limits {
            max_buffer_size: offered.max_buffer_size,
            max_storage_buffer_binding_size: offered.max_storage_buffer_binding_size,
            max_uniform_buffer_binding_size: offered.max_uniform_buffer_binding_size,
            max_storage_buffers_per_shader_stage: offered.max_storage_buffers_per_shader_stage,
            max_compute_workgroup_storage_size: offered.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: offered.max_compute_invocations_per_workgroup,
            max_compute_workgroup_size_x: offered.max_compute_workgroup_size_x,
            max_compute_workgroup_size_y: offered.max_compute_workgroup_size_y,
            max_compute_workgroup_size_z: offered.max_compute_workgroup_size_z,
            max_compute_workgroups_per_dimension: offered.max_compute_workgroups_per_dimension,
            max_bind_groups: offered.max_bind_groups.min(4),
            max_bindings_per_bind_group: offered.max_bindings_per_bind_group,
            min_storage_buffer_offset_alignment: offered.min_storage_buffer_offset_alignment,
            min_uniform_buffer_offset_alignment: offered.min_uniform_buffer_offset_alignment,
            ..wgpu::Limits::default()
        };

        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("sdxl-web"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("the adapter refused a device: {e}")))?;

        let error = Arc::new(Mutex::new(None::<String>));
        let e2 = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = e2.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let lost = Arc::new(Mutex::new(None::<String>));
        let l2 = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            *l2.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{reason:?}: {msg}"));
        });

        let granted = device.limits();
        let gfeat = device.features();
        let ai = adapter.get_info();
        let shader_f16 = gfeat.contains(wgpu::Features::SHADER_F16);
        let f16 = shader_f16 && !opts.force_f32;
        let info = GpuInfo {
            // Browsers hide the adapter name unless asked; say so rather than print nothing.
            name: if ai.name.is_empty() { "WebGPU adapter (name not exposed)".into() } else { ai.name.clone() },
            backend: format!("{:?}", ai.backend),
            device_type: format!("{:?}", ai.device_type),
            driver: ai.driver.clone(),
            driver_info: ai.driver_info.clone(),
            shader_f16,
            subgroup: gfeat.contains(wgpu::Features::SUBGROUP),
            timestamp_query: gfeat.contains(wgpu::Features::TIMESTAMP_QUERY),
            compute_path: if f16 { "f16" } else { "f32" }.into(),
            limits: LimitsInfo {
                max_buffer_size: granted.max_buffer_size,
                max_storage_buffer_binding_size: granted.max_storage_buffer_binding_size,
                max_uniform_buffer_binding_size: granted.max_uniform_buffer_binding_size,
                max_storage_buffers_per_shader_stage: granted.max_storage_buffers_per_shader_stage,
                max_compute_workgroup_storage_size: granted.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: granted.max_compute_invocations_per_workgroup,
                max_compute_workgroup_size_x: granted.max_compute_workgroup_size_x,
                max_compute_workgroup_size_y: granted.max_compute_workgroup_size_y,
                max_compute_workgroups_per_dimension: granted.max_compute_workgroups_per_dimension,
                min_storage_buffer_offset_alignment: granted.min_storage_buffer_offset_alignment,
                min_uniform_buffer_offset_alignment: granted.min_uniform_buffer_offset_alignment,
            },
        };
        let uniform_buf = Self::new_uniform_arena(&device);
        let pool = BufferPool::new();
        // One uniform arena is always allocated (a fresh one per submit replaces the last).
        pool.begin_transient(UNIFORM_ARENA);
        Ok(Gpu {
            pool,
            dry: false,
            pipelines: Arc::new(Mutex::new(HashMap::new())),
            pending: Mutex::new(Pending { encoder: None, uniforms: Vec::new(), uniform_buf, dispatches: 0 }),
            device,
            queue,
            info,
            limits: granted,
            features: gfeat,
            f16,
            error,
            lost,
            timer: Mutex::new(None),
            work: Mutex::new(None),
        })
    }

    /// A dry twin of this device: same adapter, limits, features and compute path, its own
    /// (empty) memory accounting, no allocations. Running a generation on it records exactly the
    /// allocation sequence (and so the peak) of the real run, in milliseconds, at any size: what
    /// `--dry-run` reports and what the memory planner measures its candidate plans with.
    pub fn dry_twin(&self) -> Gpu {
        let dummy = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dry-run dummy"),
            size: 4,
            usage: super::pool::USAGE,
            mapped_at_creation: false,
        });
        let pool = BufferPool::dry(dummy);
        pool.begin_transient(UNIFORM_ARENA);
        Gpu {
            device: self.device.clone(),
            queue: self.queue.clone(),
            info: self.info.clone(),
            limits: self.limits.clone(),
            features: self.features,
            f16: self.f16,
            pool,
            pipelines: self.pipelines.clone(),
            dry: true,
            pending: Mutex::new(Pending {
                encoder: None,
                uniforms: Vec::new(),
                uniform_buf: self.pending.lock().unwrap_or_else(|p| p.into_inner()).uniform_buf.clone(),
                dispatches: 0,
            }),
            error: Arc::new(Mutex::new(None)),
            lost: self.lost.clone(),
            timer: Mutex::new(None),
            work: Mutex::new(None),
        }
    }

    /// Whether this is a dry twin (nothing runs; memory is only accounted).
    pub fn is_dry(&self) -> bool {
        self.dry
    }

    fn new_uniform_arena(device: &wgpu::Device) -> wgpu::Buffer {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("uniform arena"),
            size: UNIFORM_ARENA,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Why the device was lost, if it was (the page offers a reload then).
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first device error or loss since start, as an `Error`.
    pub fn check(&self) -> Result<()> {
        if let Some(m) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(Error::Gpu(format!("the GPU device was lost ({m})")));
        }
        if let Some(m) = self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let lower = m.to_ascii_lowercase();
            if ["out of memory", "not enough memory", "outofmemory"].iter().any(|k| lower.contains(k)) {
                return Err(Error::Gpu(format!(
                    "out of GPU memory ({m}); the device has less free memory than the budget planned for: lower --gpu-memory (web setting gpu_memory)"
                )));
            }
            return Err(Error::Gpu(m));
        }
        Ok(())
    }

    /// A cached compute pipeline for `variant`'s entry point, compiled on first use.
    pub fn pipeline(&self, variant: &Variant, entry: &str) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = format!("{}::{entry}", variant.key());
        if let Some(p) = self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        if variant.f16 && !self.info.shader_f16 {
            return Err(Error::Gpu(format!("{key} needs shader-f16, which this device lacks")));
        }
        let src = variant.source().map_err(Error::Gpu)?;
        let desc = wgpu::ShaderModuleDescriptor { label: Some(&key), source: wgpu::ShaderSource::Wgsl(src.into()) };
        // Natively, kernels listed in `registry::TRUSTED` skip wgpu's injected bounds checks
        // (~40% on some paths); they keep every index in range themselves. The web always checks.
        #[cfg(not(target_arch = "wasm32"))]
        let module = if super::registry::TRUSTED.contains(&variant.shader) && std::env::var_os("SDXL_CHECKED").is_none()
        {
            // SAFETY: these shaders bound every access by their own logic, covered by the op tests
            // (`SDXL_CHECKED=1` restores wgpu's checks for debugging).
            unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
        } else {
            self.device.create_shader_module(desc)
        };
        #[cfg(target_arch = "wasm32")]
        let module = self.device.create_shader_module(desc);
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&key),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        self.check().map_err(|e| Error::Gpu(format!("compiling {key}: {e}")))?;
        let p = Arc::new(pipeline);
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).insert(key, p.clone());
        Ok(p)
    }

    /// Record one dispatch: `storage` buffers at bindings 0..n of group 0, then `params` (a Pod
    /// struct, may be empty) as a uniform at binding n.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        pipeline: &wgpu::ComputePipeline,
        storage: &[Binding<'_>],
        params: &P,
        workgroups: [u32; 3],
    ) -> Result<()> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::Gpu(format!("dispatch {workgroups:?} exceeds {max} workgroups per dimension")));
        }
        self.tally_dispatch();
        if self.dry {
            return Ok(());
        }
        let bytes = bytemuck::bytes_of(params);
        let timed = self.timer.lock().unwrap_or_else(|p| p.into_inner()).as_mut().and_then(|t| t.next_pass());
        let align = self.limits.min_uniform_buffer_offset_alignment.max(16) as usize;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !bytes.is_empty() && pending.uniforms.len().next_multiple_of(align) + bytes.len() > UNIFORM_ARENA as usize {
            drop(pending);
            self.flush();
            pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        }
        let uoff = pending.uniforms.len().next_multiple_of(align);
        let layout = pipeline.get_bind_group_layout(0);
        let mut entries: Vec<wgpu::BindGroupEntry> = storage
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b.buffer,
                    offset: b.offset,
                    size: b.size.and_then(wgpu::BufferSize::new),
                }),
            })
            .collect();
        if !bytes.is_empty() {
            pending.uniforms.resize(uoff, 0);
            pending.uniforms.extend_from_slice(bytes);
            // Uniform structs are padded to 16 bytes in WGSL.
            let padded = bytes.len().next_multiple_of(16);
            pending.uniforms.resize(uoff + padded, 0);
            entries.push(wgpu::BindGroupEntry {
                binding: storage.len() as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &pending.uniform_buf,
                    offset: uoff as u64,
                    size: wgpu::BufferSize::new(padded as u64),
                }),
            });
        }
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let encoder = pending
            .encoder
            .get_or_insert_with(|| self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }));
        {
            let timestamp_writes = timed.as_ref().map(|(set, i)| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(*i),
                end_of_pass_write_index: Some(*i + 1),
            });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        }
        pending.dispatches += 1;
        let full = pending.dispatches >= MAX_DISPATCHES_PER_SUBMIT;
        drop(pending);
        if full {
            self.flush();
        }
        Ok(())
    }

    /// Run `f` with the pending encoder (for copies, clears and timestamp queries); skipped on a
    /// dry twin.
    pub fn with_encoder(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) {
        if self.dry {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let encoder = pending
            .encoder
            .get_or_insert_with(|| self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }));
        f(encoder)
    }

    /// Submit everything recorded so far.
    pub fn flush(&self) {
        if self.dry {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(encoder) = pending.encoder.take() else { return };
        if !pending.uniforms.is_empty() {
            self.queue.write_buffer(&pending.uniform_buf, 0, &pending.uniforms);
            pending.uniforms.clear();
            // The next submit gets a fresh arena: this one is still read by the GPU.
            pending.uniform_buf = Self::new_uniform_arena(&self.device);
        }
        pending.dispatches = 0;
        self.queue.submit([encoder.finish()]);
    }

    /// Upload bytes to a buffer after everything already recorded (flushes first, because a
    /// queue write lands before the next submit's commands).
    /// The staging copy wgpu makes is counted while the call runs (uploads that stay queued
    /// longer, the weight loader's, are counted by their owner).
    pub fn write_buffer(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) {
        let n = data.len() as u64;
        self.room_for(n);
        self.pool.begin_transient(n);
        if !self.dry {
            self.flush();
            self.queue.write_buffer(buffer, offset, data);
        }
        self.pool.end_transient(n);
    }

    /// Wait until the GPU is idle (native); a no-op on the web, where readback awaits instead.
    pub fn sync(&self) -> Result<()> {
        if self.dry {
            return Ok(());
        }
        self.flush();
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        self.check()
    }

    /// Resolves when the GPU has finished everything submitted so far (natively: waits).
    pub async fn queue_idle(&self) -> Result<()> {
        if self.dry {
            return Ok(());
        }
        self.flush();
        #[cfg(not(target_arch = "wasm32"))]
        return self.sync();
        #[cfg(target_arch = "wasm32")]
        {
            self.queue.submit([]);
            let (tx, rx) = futures_channel::oneshot::channel();
            self.queue.on_submitted_work_done(move || {
                let _ = tx.send(());
            });
            let _ = rx.await;
            self.check()
        }
    }

    /// Read `size` bytes at `offset` of `buffer` back to the host.
    /// The staging buffer is counted while it exists; a dry twin returns zeros.
    pub async fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        let padded = size.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        self.room_for(padded.max(4));
        self.pool.begin_transient(padded.max(4));
        let r =
            if self.dry { Ok(vec![0; size as usize]) } else { self.read_staged(buffer, offset, size, padded).await };
        self.pool.end_transient(padded.max(4));
        r
    }

    async fn read_staged(&self, buffer: &wgpu::Buffer, offset: u64, size: u64, padded: u64) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: padded.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.with_encoder(|e| e.copy_buffer_to_buffer(buffer, offset, &staging, 0, padded));
        self.flush();
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for readback: {e}")))?;
        rx.await
            .map_err(|_| Error::Gpu("readback was dropped (device lost?)".into()))?
            .map_err(|e| Error::Gpu(format!("mapping readback buffer: {e}")))?;
        self.check()?;
        let data = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("reading mapped readback buffer: {e}")))?;
            view[..size as usize].to_vec()
        };
        staging.unmap();
        Ok(data)
    }
}

impl Gpu {
    /// Free buffers cached by the pool (memory goes back to the driver). Pending work is submitted
    /// first: recorded commands may still use buffers freed into the cache.
    pub fn trim_pool(&self) {
        self.flush();
        self.pool.trim();
    }

    /// Under a memory limit, free cached buffers before `need` new bytes would exceed it.
    pub(crate) fn room_for(&self, need: u64) {
        if self.pool.must_evict(need) {
            self.flush();
            self.pool.make_room(need);
        }
    }

    /// (bytes held by live tensors, bytes cached for reuse).
    pub fn memory_stats(&self) -> (u64, u64) {
        let m = self.pool.stats();
        (m.live, m.cached)
    }

    /// Every counter, with the peak since the last `reset_peak`.
    pub fn memory(&self) -> MemoryStats {
        self.pool.stats()
    }

    /// Start a new peak measurement (a stage's) from the current total.
    pub fn reset_peak(&self) {
        self.pool.reset_peak()
    }

    /// With a limit, the pool frees cached buffers before a new allocation would exceed it, so
    /// reuse never costs budget (live tensors are the planner's business).
    pub fn set_memory_limit(&self, limit: Option<u64>) {
        self.pool.set_limit(limit)
    }

    /// Count `bytes` of staging that stays queued beyond one call (the weight loader's uploads,
    /// submitted and waited for every window), until `end_staging`.
    pub fn begin_staging(&self, bytes: u64) {
        self.room_for(bytes);
        self.pool.begin_transient(bytes)
    }

    pub fn end_staging(&self, bytes: u64) {
        self.pool.end_transient(bytes)
    }
}
