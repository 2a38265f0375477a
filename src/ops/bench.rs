//! `sdxl bench kernels`: times each kernel at real SDXL shapes, with GFLOP/s and percent of the
//! device's FMA peak measured by `ops::peak` in the same run. Native only (wall clock).
//!
//! Adding rows from another op file (the API other kernels use):
//! ```text
//! #[cfg(not(target_arch = "wasm32"))]
//! pub fn bench_rows(b: &mut crate::ops::bench::Bench) -> crate::Result<()> {
//!     if !b.wants("attention") { return Ok(()); }          // honour `--only`, skip setup
//!     let q = /* inputs, allocated once */;
//!     let flops = 4.0 * (n * n * d * heads) as f64;          // 2 FLOPs per multiply-add
//!     b.time_op("attention", "self 4096 tok x 10 h x 64", flops, || {
//!         let _out = attention(b_gpu, &q, &k, &v)?;            // record the op; no sync needed
//!         Ok(())
//!     })
//! }
//! ```
//! then list the function in `SUITES` below. `time_op` runs the closure once as warm-up (compiles
//! pipelines), then repeats it until `Bench::budget_s` seconds have been measured; each run is
//! timed on the GPU with per-dispatch timestamp queries where TIMESTAMP_QUERY is granted
//! (`gpu/timing.rs`, GPU time only), else by wall clock around the op plus a sync. Borrow the
//! device as `let gpu = b.gpu;` before calling `time_op` (the closure must not borrow `b`).

use std::time::Instant;

use serde::Serialize;

use crate::gpu::Gpu;
use crate::Result;

/// The benchmark suites, run in order after the peak measurement.
pub const SUITES: &[fn(&mut Bench) -> Result<()>] =
    &[super::linear::bench_rows, super::conv::bench_rows, super::attention::bench_rows, super::norm::bench_rows];

/// One line of the table / one object of the JSON list.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub kernel: String,
    pub shape: String,
    /// Median time of one run of the op, milliseconds.
    pub ms: f64,
    pub gflops: f64,
    /// Against this run's measured FMA peak of the compute path (f16 peak on the f16 path).
    pub pct_of_peak: f64,
    /// Timed runs (after the warm-up).
    pub iters: u32,
    /// "gpu-timestamps" or "wall".
    pub timing: &'static str,
}

pub struct Bench<'a> {
    pub gpu: &'a Gpu,
    /// Seconds of measured runs per row (the first run always counts when it alone is longer).
    pub budget_s: f64,
    /// Fewer, shorter runs (`--quick`).
    pub quick: bool,
    /// Only rows whose kernel name contains one of these (empty: all).
    pub only: Vec<String>,
    pub peak_gflops: Option<f64>,
    pub rows: Vec<Row>,
}

impl<'a> Bench<'a> {
    pub fn new(gpu: &'a Gpu, quick: bool, only: Vec<String>) -> Self {
        Bench { gpu, budget_s: if quick { 0.5 } else { 2.0 }, quick, only, peak_gflops: None, rows: Vec::new() }
    }

    /// Whether `--only` selects this kernel name.
    pub fn wants(&self, kernel: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| kernel.contains(o.as_str()))
    }

    /// Seconds one run of `op` takes on the GPU (timestamps) or by wall clock, and which.
    fn run_once(&self, op: &mut impl FnMut() -> Result<()>) -> Result<(f64, &'static str)> {
        self.gpu.sync()?;
        let timed = self.gpu.begin_timing();
        let t0 = Instant::now();
        op()?;
        self.gpu.sync()?;
        let wall = t0.elapsed().as_secs_f64();
        if timed {
            if let Some(s) = self.gpu.end_timing_blocking()? {
                return Ok((s, "gpu-timestamps"));
            }
        }
        Ok((wall, "wall"))
    }

    /// Time `op` (see the module comment) and add its row; `flops` is the work of one run.
    pub fn time_op(&mut self, kernel: &str, shape: &str, flops: f64, mut op: impl FnMut() -> Result<()>) -> Result<()> {
        if !self.wants(kernel) {
            return Ok(());
        }
        eprint!("  {kernel:<14} {shape:<34} ");
        let (first, how) = self.run_once(&mut op)?;
        let mut samples = Vec::new();
        // GPU timestamps exclude pipeline compilation, so a long first run is a fair sample.
        if how == "gpu-timestamps" && first >= self.budget_s {
            samples.push(first);
        }
        let mut how = how;
        let max_iters = if self.quick { 3 } else { 50 };
        while samples.is_empty() || (samples.iter().sum::<f64>() < self.budget_s && samples.len() < max_iters) {
            let (s, h) = self.run_once(&mut op)?;
            samples.push(s);
            how = h;
        }
        samples.sort_by(f64::total_cmp);
        let secs = samples[samples.len() / 2];
        let gflops = flops / secs * 1e-9;
        let pct = self.peak_gflops.map_or(100.0, |p| 100.0 * gflops / p);
        eprintln!("{:>10.3} ms {:>9.2} GFLOP/s", secs * 1e3, gflops);
        self.rows.push(Row {
            kernel: kernel.into(),
            shape: shape.into(),
            ms: secs * 1e3,
            gflops,
            pct_of_peak: pct,
            iters: samples.len() as u32,
            timing: how,
        });
        Ok(())
    }

    /// Measure the FMA peak of `half` (f16) or f32 arithmetic; adds a row named `name`.
    pub fn peak(&mut self, name: &str, half: bool) -> Result<f64> {
        let gpu = self.gpu;
        let groups = 4096u32.min(gpu.limits.max_compute_workgroups_per_dimension);
        let out = super::peak::out_tensor(gpu, groups)?;
        // Size one dispatch to ~0.1 s so launch overhead is noise on any device.
        let mut rounds = 64u32;
        loop {
            let (s, _) = self.run_once(&mut || super::peak::dispatch(gpu, &out, half, groups, rounds).map(|_| ()))?;
            if s >= 0.05 || rounds >= 1 << 22 {
                break;
            }
            rounds = (rounds as f64 * (0.1 / s.max(1e-6)).min(16.0)) as u32;
        }
        let flops = groups as f64 * 256.0 * rounds as f64 * 64.0;
        let shape = format!("{} vec4 FMA chains, {groups}x256 thr x {rounds}", if half { "f16" } else { "f32" });
        self.time_op(name, &shape, flops, || super::peak::dispatch(gpu, &out, half, groups, rounds).map(|_| ()))?;
        let row = self.rows.last_mut().expect("peak row just added");
        row.pct_of_peak = 100.0;
        Ok(row.gflops)
    }

    /// The whole benchmark: peak(s), then every suite.
    pub fn run(&mut self) -> Result<()> {
        let only = std::mem::take(&mut self.only);
        if self.gpu.f16 {
            self.peak_gflops = Some(self.peak("peak_fma", true)?);
            self.peak("peak_fma_f32", false)?;
        } else {
            self.peak_gflops = Some(self.peak("peak_fma", false)?);
        }
        self.only = only;
        for suite in SUITES {
            suite(self)?;
        }
        Ok(())
    }

    /// The table as printed by `sdxl bench kernels`.
    pub fn table(&self) -> String {
        let naive = self.rows.iter().find(|r| r.kernel == "naive_matmul").map(|r| r.gflops);
        let mut s = format!(
            "{:<14} {:<36} {:>11} {:>10} {:>7} {:>8} {:>5}  {}\n",
            "kernel", "shape", "ms", "GFLOP/s", "% peak", "x naive", "iters", "timing"
        );
        for r in &self.rows {
            let x = match naive {
                Some(n) if !r.kernel.starts_with("peak") => format!("{:.2}", r.gflops / n),
                _ => "-".into(),
            };
            s += &format!(
                "{:<14} {:<36} {:>11.3} {:>10.2} {:>7.2} {:>8} {:>5}  {}\n",
                r.kernel, r.shape, r.ms, r.gflops, r.pct_of_peak, x, r.iters, r.timing
            );
        }
        s
    }
}
