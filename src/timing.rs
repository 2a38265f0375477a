//! Kernel timing at SDXL shapes and an estimate of seconds per UNet step (`sdxl selfcheck
//! --timing`, `engine.timing()`), needing no model.
//!
//! 1. Count: one UNet forward of the loaded model's config ([`StepModel`]; SDXL 1.0 base's when
//!    no model is loaded) at
//!    the requested size and batch runs on a dry twin of the device with the work count open
//!    (`gpu/work.rs`): per kernel family, the FLOPs (or bytes, for memory-bound families), calls,
//!    dispatches and the largest call's shape. Weights are empty dry tensors: milliseconds.
//! 2. Time: each family's largest call is run on the real device (GPU timestamps where granted,
//!    else wall clock less the measured round-trip latency), first shrunk along its rows (batch,
//!    then tokens / pixels) to a probe size, then at full size when the probe predicts that to
//!    be quick (on a GPU); on CPU drivers the full call's time is extrapolated from the probe.
//!    A tiny dispatch, once and 64 times in one scope, gives the per-dispatch overhead.
//! 3. Estimate: per family, `dispatches × overhead + work / rate`, rate = the timed call's work
//!    over its time less its own dispatch overhead. The sum is the GPU time of one UNet step;
//!    the sampler and CPU recording are not counted (a few percent on a real GPU).

use serde::Serialize;

use crate::gpu::work::{Family, FamilyWork, OpShape, WorkTally};
use crate::gpu::{now_seconds, DType, Gpu, Tensor};
use crate::model::unet::{Cond, UNet, UNetConfig};
use crate::ops::elementwise::{self as ew, Unary};
use crate::ops::{attention, conv, linear, norm};
use crate::tokenizer::CONTEXT_LEN;
use crate::weights::{Component, ComponentConfig, ModelConfig};
use crate::{Error, Result};

/// Dispatches in the overhead probe's batch (enough to average out one submit's latency).
const OVERHEAD_PROBE_DISPATCHES: usize = 64;
/// A timed call's rate uses at least this share of its time (the overhead is an estimate and
/// must not leave a zero or negative compute time).
const MIN_COMPUTE_SHARE: f64 = 0.25;
/// Without a hard cap, each family is first timed at a call of at most this many FLOPs (bytes
/// for memory-bound families), which takes milliseconds on a GPU and well under a second on a
/// CPU driver; the full call follows when it is predicted to take at most `full_call_s`.
const PROBE_FLOPS: f64 = 0.5e9;
const PROBE_BYTES: f64 = 16e6;
/// Rows of one matmul / attention workgroup tile: a capped call keeps at least this many.
const ROW_TILE: usize = 64;

/// What to time and how hard.
#[derive(Clone, Debug)]
pub struct TimingOptions {
    pub width: usize,
    pub height: usize,
    /// 2 for classifier-free guidance (conditional and unconditional in one batch).
    pub batch: usize,
    /// Largest FLOPs one timed call may do (larger calls are timed at fewer rows); None: full shape.
    pub max_flops: Option<f64>,
    /// Largest bytes one timed memory-bound call may move; None: full shape.
    pub max_bytes: Option<f64>,
    /// Seconds of repeated runs per family after the warm-up (at least one run is always taken).
    pub budget_s: f64,
    /// Without caps: a family's full call is timed when predicted to take at most this (else
    /// its time is extrapolated from the smaller probe call, as on CPU drivers).
    pub full_call_s: f64,
}

impl TimingOptions {
    /// The full-size default: SDXL at 1024×1024 with CFG, every family at its real shape.
    pub fn sdxl_1024() -> Self {
        TimingOptions {
            width: 1024,
            height: 1024,
            batch: 2,
            max_flops: None,
            max_bytes: None,
            budget_s: 0.2,
            full_call_s: 0.5,
        }
    }

    /// Every call capped at the probe size, one run each: the same short pass on any device (tests).
    pub fn capped() -> Self {
        TimingOptions { max_flops: Some(PROBE_FLOPS), max_bytes: Some(PROBE_BYTES), budget_s: 0.0, ..Self::sdxl_1024() }
    }
}

/// One kernel family's line.
#[derive(Clone, Debug, Serialize)]
pub struct FamilyTiming {
    pub family: &'static str,
    /// The largest call of one UNet step, and the shape it was timed at (smaller under a cap).
    pub shape: String,
    pub timed_shape: String,
    /// Milliseconds of one call at `shape` (extrapolated from `timed_shape` when they differ).
    pub ms: f64,
    /// GFLOP/s or GB/s (`unit`) of the timed call, net of dispatch overhead.
    pub rate: f64,
    pub unit: &'static str,
    /// Per UNet step: calls, dispatches, GFLOP (or GB), and the estimated milliseconds.
    pub calls: u64,
    pub dispatches: u64,
    pub work: f64,
    pub step_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TimingReport {
    /// The UNet whose step was counted ([`StepModel::name`]; empty from [`estimate`] alone).
    pub model: String,
    pub adapter: String,
    pub compute_path: String,
    /// "gpu" (timestamp queries) or "wall".
    pub clock: &'static str,
    pub width: usize,
    pub height: usize,
    pub batch: usize,
    /// Some family was timed at a smaller call than its largest (a cap, or a slow device).
    pub capped: bool,
    /// GPU milliseconds one dispatch costs beyond its work (the overhead probe).
    pub dispatch_overhead_ms: f64,
    /// Per UNet step.
    pub unet_gflop: f64,
    pub dispatches: u64,
    pub families: Vec<FamilyTiming>,
    /// Estimated GPU seconds of one UNet step (one forward of the whole batch).
    pub step_seconds: f64,
    /// Seconds the timing pass took (count and timing).
    pub total_seconds: f64,
}

impl TimingReport {
    /// A plain-text table and the estimate.
    pub fn table(&self) -> String {
        let mut s = format!(
            "kernel timing on {} ({} path, {} clock{}): UNet step of {} at {}x{}, batch {}\n",
            self.adapter,
            self.compute_path,
            self.clock,
            if self.capped { ", calls capped" } else { "" },
            self.model,
            self.width,
            self.height,
            self.batch
        );
        s += &format!(
            "{:<12} {:<34} {:<30} {:>10} {:>10} {:<7} {:>6} {:>7} {:>10}\n",
            "family", "largest call", "timed at", "ms/call", "rate", "", "calls", "disp", "ms/step"
        );
        for f in &self.families {
            s += &format!(
                "{:<12} {:<34} {:<30} {:>10.3} {:>10.2} {:<7} {:>6} {:>7} {:>10.1}\n",
                f.family,
                f.shape,
                if f.timed_shape == f.shape { "(same)" } else { &f.timed_shape },
                f.ms,
                f.rate,
                f.unit,
                f.calls,
                f.dispatches,
                f.step_ms
            );
        }
        s += &format!(
            "{:.1} GFLOP and {} dispatches per step ({:.4} ms overhead each); estimated {:.2} s per UNet step at {}x{} (batch {}); timing took {:.1} s\n",
            self.unet_gflop,
            self.dispatches,
            self.dispatch_overhead_ms,
            self.step_seconds,
            self.width,
            self.height,
            self.batch,
            self.total_seconds
        );
        s
    }
}

fn act(gpu: &Gpu) -> DType {
    if gpu.f16 {
        DType::F16
    } else {
        DType::F32
    }
}

/// Count one UNet forward of `cfg` on latents `[batch, in, lh, lw]` (one prompt chunk of
/// context) on a dry twin of `gpu`; `vae_factor` gives the image size in the time ids.
pub async fn count_unet(
    gpu: &Gpu,
    cfg: &UNetConfig,
    batch: usize,
    (lh, lw): (usize, usize),
    vae_factor: usize,
) -> Result<WorkTally> {
    let twin = gpu.dry_twin();
    let weights = ComponentConfig::Unet(cfg.clone())
        .tensors(Component::Unet)
        .into_iter()
        .map(|(name, shape)| {
            Ok((format!("{}{name}", Component::Unet.prefix()), Tensor::empty_exact(&twin, &shape, DType::F16)?))
        })
        .collect::<Result<std::collections::HashMap<_, _>>>()?;
    let unet = UNet::new(cfg.clone(), &weights)?;
    let a = act(&twin);
    let x = Tensor::empty(&twin, &[batch, cfg.in_channels, lh, lw], DType::F32)?;
    let context = Tensor::empty(&twin, &[batch, CONTEXT_LEN, cfg.context_dim], a)?;
    let pooled = Tensor::empty(&twin, &[batch, cfg.pooled_dim], a)?;
    let timesteps = vec![999.0; batch];
    let (h, w) = ((lh * vae_factor) as f32, (lw * vae_factor) as f32);
    let time_ids = vec![[h, w, 0.0, 0.0, h, w]; batch];
    let cond = Cond { timesteps: &timesteps, context: &context, pooled: &pooled, time_ids: &time_ids };
    twin.begin_work_count();
    let r = unet.forward(&twin, &x, &cond);
    let tally = twin.end_work_count();
    r?;
    twin.queue_idle().await?;
    Ok(tally)
}

/// The UNet whose step is counted and estimated.
#[derive(Clone, Debug)]
pub struct StepModel {
    /// Shown in the report: the loaded model's name, or what stands in for it.
    pub name: String,
    pub unet: UNetConfig,
    /// Pixels per latent (the VAE's factor): image size → latent size.
    pub vae_factor: usize,
}

impl StepModel {
    /// SDXL 1.0 base, what the estimate is for when no model is loaded.
    pub fn sdxl_base() -> Self {
        let cfg = ModelConfig::sdxl_base();
        StepModel { name: "SDXL 1.0 base".into(), vae_factor: cfg.vae.factor(), unet: cfg.unet }
    }
}

/// The whole pass: count one UNet step of `model` at `opts`' size, then time its kernel families.
pub async fn run(gpu: &Gpu, opts: &TimingOptions, model: &StepModel) -> Result<TimingReport> {
    let t0 = now_seconds();
    let f = model.vae_factor;
    let tally = count_unet(gpu, &model.unet, opts.batch, (opts.height / f, opts.width / f), f).await?;
    let mut r = estimate(gpu, &tally, opts).await?;
    r.model = model.name.clone();
    r.total_seconds = now_seconds() - t0;
    Ok(r)
}

fn describe(s: &OpShape) -> String {
    let d = &s.dims;
    let dt = |t: DType| if t == DType::F16 { "f16" } else { "f32" };
    match s.family {
        Family::Linear => format!("{}x{} -> {} {}", d[0], d[1], d[2], dt(s.x)),
        Family::Conv3x3 | Family::ConvOther => {
            format!("{}x{}x{}x{} -> {} k{} s{} {}", d[0], d[1], d[2], d[3], d[4], d[5], d[6], dt(s.x))
        }
        Family::AttnSelf | Family::AttnCross => {
            format!("b{} h{} q{} k{} d{} {}", d[0], d[1], d[2], d[3], d[4], dt(s.x))
        }
        Family::GroupNorm => format!("{}x{}x{} g{} {}", d[0], d[1], d[2], d[3], dt(s.x)),
        Family::LayerNorm => format!("{}x{} {}", d[0], d[1], dt(s.x)),
        Family::Elementwise => format!("{} el {}", d[0], dt(s.y)),
    }
}

/// FLOPs (compute-bound) or bytes (memory-bound) of one call of shape `s`, as the ops count it;
/// only sizes the timed call (rates use the work the op reports while timed).
fn amount(s: &OpShape) -> f64 {
    let d = &s.dims;
    let (xs, ys) = (s.x.size() as f64, s.y.size() as f64);
    match s.family {
        Family::Linear => 2.0 * (d[0] * d[1] * d[2]) as f64,
        Family::Conv3x3 | Family::ConvOther => {
            let o = |n: usize| (n + d[7] + d[8]).saturating_sub(d[5]) / d[6] + 1;
            2.0 * (d[0] * d[4] * o(d[2]) * o(d[3])) as f64 * (d[1] * d[5] * d[5]) as f64
        }
        Family::AttnSelf | Family::AttnCross => 4.0 * (d[0] * d[2] * d[3]) as f64 * (d[1] * d[4]) as f64,
        Family::GroupNorm => 3.0 * (d[0] * d[1] * d[2]) as f64 * xs,
        Family::LayerNorm => 3.0 * (d[0] * d[1]) as f64 * xs,
        Family::Elementwise => d[0] as f64 * (xs + ys),
    }
}

/// `s` shrunk along its rows so that its work is at most `cap` (unchanged when it already is).
fn shrink(s: &OpShape, cap: Option<f64>) -> OpShape {
    let Some(cap) = cap else { return s.clone() };
    let mut t = s.clone();
    // Halve the row dimensions (batch first) until under the cap, keeping at least one output
    // tile of rows (64 for matmul rows, attention queries and conv pixels) and a conv window of
    // pixel rows, so the timed call runs the kernel as the full call does (fewer tiles only).
    let rows: &[usize] = match s.family {
        Family::Linear | Family::LayerNorm | Family::Elementwise => &[0],
        Family::Conv3x3 | Family::ConvOther => &[0, 2, 3],
        Family::AttnSelf | Family::AttnCross => &[0, 2],
        Family::GroupNorm => &[0, 2],
    };
    let conv = matches!(s.family, Family::Conv3x3 | Family::ConvOther);
    for &i in rows {
        loop {
            let half = t.dims[i] / 2;
            let floor_ok = match (s.family, i) {
                (Family::Linear, 0) | (Family::AttnSelf | Family::AttnCross, 2) => half >= ROW_TILE,
                // dims[5 - i]: the other spatial side (h for w, w for h).
                (_, 2 | 3) if conv => half >= t.dims[5].max(2) && half * t.dims[5 - i] >= ROW_TILE,
                _ => half >= 1,
            };
            if amount(&t) <= cap || !floor_ok {
                break;
            }
            t.dims[i] = half;
        }
    }
    t
}

fn filler(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    // Small, varied, finite values: contents do not change the timing.
    let v: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 2048.0).collect();
    Tensor::from_f32(gpu, shape, dtype, &v)
}

/// Inputs for one call of `s`, allocated once; `call` records it.
struct Call {
    shape: OpShape,
    t: Vec<Tensor>,
}

impl Call {
    fn new(gpu: &Gpu, s: &OpShape) -> Result<Call> {
        let d = &s.dims;
        let h = DType::F16;
        let t = match s.family {
            Family::Linear => {
                vec![filler(gpu, &[d[0], d[1]], s.x)?, filler(gpu, &[d[2], d[1]], h)?, filler(gpu, &[d[2]], h)?]
            }
            Family::Conv3x3 | Family::ConvOther => vec![
                filler(gpu, &[d[0], d[1], d[2], d[3]], s.x)?,
                filler(gpu, &[d[4], d[1], d[5], d[5]], h)?,
                filler(gpu, &[d[4]], h)?,
            ],
            Family::AttnSelf | Family::AttnCross => {
                let c = d[1] * d[4];
                vec![
                    filler(gpu, &[d[0], d[2], c], s.x)?,
                    filler(gpu, &[d[0], d[3], c], s.x)?,
                    filler(gpu, &[d[0], d[3], c], s.x)?,
                ]
            }
            Family::GroupNorm => {
                vec![filler(gpu, &[d[0], d[1], d[2]], s.x)?, filler(gpu, &[d[1]], h)?, filler(gpu, &[d[1]], h)?]
            }
            Family::LayerNorm => {
                vec![filler(gpu, &[d[0], d[1]], s.x)?, filler(gpu, &[d[1]], h)?, filler(gpu, &[d[1]], h)?]
            }
            Family::Elementwise => vec![filler(gpu, &[d[0]], s.x)?],
        };
        Ok(Call { shape: s.clone(), t })
    }

    fn record(&self, gpu: &Gpu) -> Result<()> {
        let (d, t, s) = (&self.shape.dims, &self.t, &self.shape);
        match s.family {
            Family::Linear => linear::linear(gpu, &t[0], &t[1], Some(&t[2]), s.y).map(drop),
            Family::Conv3x3 | Family::ConvOther => {
                conv::conv2d_padded(gpu, &t[0], &t[1], Some(&t[2]), d[6], (d[7], d[8]), s.y).map(drop)
            }
            Family::AttnSelf | Family::AttnCross => {
                attention::attention(gpu, &t[0], &t[1], &t[2], d[1], false).map(drop)
            }
            Family::GroupNorm => norm::group_norm(gpu, &t[0], d[3], &t[1], &t[2], 1e-5, d[4] != 0).map(drop),
            Family::LayerNorm => norm::layer_norm(gpu, &t[0], &t[1], &t[2], 1e-5).map(drop),
            Family::Elementwise => ew::unary(gpu, &t[0], Unary::Silu, s.y).map(drop),
        }
    }
}

/// Seconds `f` takes (GPU timestamps, else wall clock to queue idle), and the clock used.
async fn time_once(gpu: &Gpu, f: impl FnOnce() -> Result<()>) -> Result<(f64, &'static str)> {
    gpu.queue_idle().await?;
    let t0 = now_seconds();
    let ts = gpu.begin_timing();
    let r = f();
    let secs = if ts { gpu.end_timing().await? } else { None };
    r?;
    match secs {
        Some(s) => Ok((s, "gpu")),
        None => {
            gpu.queue_idle().await?;
            Ok((now_seconds() - t0, "wall"))
        }
    }
}

/// Median seconds of `f` after one warm-up run (pipeline compilation), within `budget_s`.
async fn time_median(gpu: &Gpu, budget_s: f64, f: &dyn Fn() -> Result<()>) -> Result<(f64, &'static str)> {
    time_once(gpu, f).await?;
    let mut samples = Vec::new();
    let mut clock = "wall";
    while samples.is_empty() || (samples.iter().sum::<f64>() < budget_s && samples.len() < 20) {
        let (s, c) = time_once(gpu, f).await?;
        samples.push(s);
        clock = c;
    }
    samples.sort_by(f64::total_cmp);
    Ok((samples[samples.len() / 2], clock))
}

struct Measured {
    /// Work per second net of dispatch overhead.
    rate: f64,
    /// Dispatches per call.
    per_call: f64,
    /// Seconds per call (less the submit latency under wall clock).
    total: f64,
}

/// Time one call of shape `s`.
async fn measure(gpu: &Gpu, s: &OpShape, budget_s: f64, fixed: f64, overhead: f64) -> Result<Measured> {
    let call = Call::new(gpu, s)?;
    gpu.begin_work_count();
    let counted = time_median(gpu, budget_s, &|| call.record(gpu)).await;
    let own = gpu.end_work_count();
    let (secs, _) = counted?;
    // The count saw the warm-up and every timed run: the same dispatches each time. A capped
    // self-attention (fewer queries than keys) counts as cross-attention: take the op's family
    // by its kind and work, not by name.
    let fw: FamilyWork = own
        .families
        .iter()
        .filter(|(f, _)| f.memory_bound() == s.family.memory_bound())
        .max_by(|a, b| a.1.amount(*a.0).total_cmp(&b.1.amount(*b.0)))
        .map(|(_, w)| w.clone())
        .unwrap_or_default();
    let per_call = fw.dispatches as f64 / fw.calls.max(1) as f64;
    // The work as the op itself reported it (the same accounting as the step's count).
    let work = fw.amount(s.family) / fw.calls.max(1) as f64;
    if work <= 0.0 {
        return Err(Error::Gpu(format!("timing {}: the op reported no work", s.family.name())));
    }
    let total = (secs - fixed).max(secs * MIN_COMPUTE_SHARE);
    let net = (total - per_call * overhead).max(total * MIN_COMPUTE_SHARE);
    Ok(Measured { rate: work / net, per_call, total })
}

/// Time each family of `tally` on `gpu` and estimate the step.
pub async fn estimate(gpu: &Gpu, tally: &WorkTally, opts: &TimingOptions) -> Result<TimingReport> {
    let t0 = now_seconds();
    if gpu.is_dry() {
        return Err(Error::Gpu("timing needs a real device, not a dry twin".into()));
    }
    // Overhead probe: a 256-element SiLU once (round-trip latency + one dispatch) and 64 times.
    let probe = filler(gpu, &[256], act(gpu))?;
    let one = || ew::unary(gpu, &probe, Unary::Silu, act(gpu)).map(drop);
    let (latency, clock) = time_median(gpu, opts.budget_s, &one).await?;
    let many = || (0..OVERHEAD_PROBE_DISPATCHES).try_for_each(|_| one());
    let (batch, _) = time_median(gpu, opts.budget_s, &many).await?;
    let overhead = ((batch - latency) / (OVERHEAD_PROBE_DISPATCHES - 1) as f64).max(0.0);
    // Under wall clock every measurement includes one submit's latency; GPU timestamps do not.
    let fixed = if clock == "wall" { (latency - overhead).max(0.0) } else { 0.0 };

    let mut families = Vec::new();
    let mut step = 0.0;
    for (&fam, w) in &tally.families {
        let Some(full) = &w.largest else { continue };
        let (cap, probe_cap) =
            if fam.memory_bound() { (opts.max_bytes, PROBE_BYTES) } else { (opts.max_flops, PROBE_FLOPS) };
        let mut timed = shrink(full, Some(cap.unwrap_or(probe_cap)));
        let mut m = measure(gpu, &timed, opts.budget_s, fixed, overhead).await?;
        // Without a hard cap, time the full call too when the probe says it is quick.
        if cap.is_none() && timed.dims != full.dims {
            let predicted = m.per_call * overhead + w.largest_work / m.rate;
            if predicted <= opts.full_call_s {
                timed = full.clone();
                m = measure(gpu, &timed, opts.budget_s, fixed, overhead).await?;
            }
        }
        let (rate, per_call, total) = (m.rate, m.per_call, m.total);
        let ms =
            if timed.dims == full.dims { total * 1e3 } else { (per_call * overhead + w.largest_work / rate) * 1e3 };
        let step_s = w.dispatches as f64 * overhead + w.amount(fam) / rate;
        step += step_s;
        families.push(FamilyTiming {
            family: fam.name(),
            shape: describe(full),
            timed_shape: describe(&timed),
            ms,
            rate: rate * 1e-9,
            unit: if fam.memory_bound() { "GB/s" } else { "GFLOP/s" },
            calls: w.calls,
            dispatches: w.dispatches,
            work: w.amount(fam) * 1e-9,
            step_ms: step_s * 1e3,
        });
    }
    // Dispatches of ops outside the families (embeddings): overhead only.
    let counted: u64 = tally.families.values().map(|w| w.dispatches).sum();
    step += tally.dispatches.saturating_sub(counted) as f64 * overhead;
    Ok(TimingReport {
        model: String::new(),
        adapter: gpu.info.name.clone(),
        compute_path: gpu.info.compute_path.clone(),
        clock,
        width: opts.width,
        height: opts.height,
        batch: opts.batch,
        capped: families.iter().any(|f| f.timed_shape != f.shape),
        dispatch_overhead_ms: overhead * 1e3,
        unet_gflop: tally.flops() * 1e-9,
        dispatches: tally.dispatches,
        families,
        step_seconds: step,
        total_seconds: now_seconds() - t0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(family: Family, dims: &[usize]) -> OpShape {
        OpShape { family, dims: dims.to_vec(), x: DType::F16, y: DType::F16 }
    }

    #[test]
    fn shrink_keeps_the_kernel_shape_and_meets_the_cap() {
        // SDXL's largest linear: 8192 rows × 640 → 5120 (53.7 GFLOP) down to the 64-row tile floor.
        let l = shape(Family::Linear, &[8192, 640, 5120]);
        assert_eq!(amount(&l), 2.0 * 8192.0 * 640.0 * 5120.0);
        assert_eq!(shrink(&l, Some(PROBE_FLOPS)).dims, vec![64, 640, 5120]);
        assert_eq!(shrink(&l, None).dims, l.dims);
        // Self-attention: batch, then queries; keys stay at 4096 (the kernel's inner loop length).
        let a = shape(Family::AttnSelf, &[2, 10, 4096, 4096, 64]);
        let s = shrink(&a, Some(PROBE_FLOPS));
        assert_eq!((s.dims[0], s.dims[3], s.dims[4]), (1, 4096, 64));
        assert!(s.dims[2] >= ROW_TILE);
        // A 3×3 conv keeps at least 3 pixel rows; a small enough call is left alone.
        let c = shape(Family::Conv3x3, &[2, 1280, 64, 64, 1280, 3, 1, 1, 1]);
        let s = shrink(&c, Some(PROBE_FLOPS));
        assert_eq!(s.dims, vec![1, 1280, 4, 16, 1280, 3, 1, 1, 1], "64 pixels, 3+ rows: 1.9 GFLOP, over the cap");
        let e = shape(Family::Elementwise, &[1000]);
        assert_eq!(shrink(&e, Some(PROBE_BYTES)).dims, vec![1000]);
        assert!(amount(&shrink(&shape(Family::GroupNorm, &[2, 960, 16384, 32, 1]), Some(PROBE_BYTES))) <= PROBE_BYTES);
    }
}
