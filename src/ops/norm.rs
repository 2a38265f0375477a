//! Group norm, layer norm and softmax (`shaders/norm.wgsl`): per-group statistics in f32 (sliced
//! over many workgroups, merged with Chan's formula), then an elementwise apply. Every pass
//! windows its bindings, so activations above the binding limit work.

use super::elementwise::{check_u32, spans, units_per_window, whole, window};
use crate::gpu::work::{self, Family, OpShape, Work};
use crate::gpu::{grid, DType, Gpu, Tensor, Variant};
use crate::{Error, Result};

/// Elements one statistics workgroup reduces (256 threads × 64).
const SLICE: u64 = 16384;

fn variant(f16: bool, x: DType, w: DType, y: DType) -> Variant {
    Variant::new("norm", f16)
        .with_const("X_HALF", x == DType::F16)
        .with_const("X2_HALF", w == DType::F16)
        .with_const("Y_HALF", y == DType::F16)
}

pub fn variants(f16: bool) -> Vec<Variant> {
    let mut v = Vec::new();
    for x in [DType::F16, DType::F32] {
        for w in [DType::F16, DType::F32] {
            for y in [DType::F16, DType::F32] {
                v.push(variant(f16, x, w, y));
            }
        }
    }
    v
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StatsP {
    n_units: u32,
    u0: u32,
    start0: u32,
    x0: u32,
    group_len: u32,
    slice_len: u32,
    spg: u32,
    _p: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FinP {
    groups: u32,
    spg: u32,
    eps: f32,
    _p: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ApplyP {
    n: u32,
    y0: u32,
    x0: u32,
    e0: u32,
    group_len: u32,
    inner: u32,
    c: u32,
    silu: u32,
}

/// (mean, 1/sqrt(var + eps)) of `groups` contiguous groups of `group_len` elements of x, as an
/// F32 tensor [groups, 2].
fn group_stats(gpu: &Gpu, x: &Tensor, groups: u64, group_len: u64, eps: f32, what: &str) -> Result<Tensor> {
    // A slice must fit one binding window too (only matters under tiny test limits).
    let max_slice = SLICE.min(units_per_window(gpu, x.dtype().size() as u64, what)?);
    let spg = group_len.div_ceil(max_slice);
    let slice_len = group_len.div_ceil(spg);
    let units = groups * spg;
    let part = Tensor::empty(gpu, &[units as usize * 3], DType::F32)?;
    let stats = Tensor::empty(gpu, &[groups as usize * 2], DType::F32)?;
    let pipe = gpu.pipeline(&variant(gpu.f16, x.dtype(), DType::F32, DType::F32), "stats")?;
    let start = |u: u64| (u / spg) * group_len + (u % spg) * slice_len;
    let end = |u: u64| start(u) + slice_len.min(group_len - (u % spg) * slice_len);
    let per = units_per_window(gpu, slice_len * x.dtype().size() as u64, what)?;
    let maxd = gpu.limits.max_compute_workgroups_per_dimension;
    let pw = whole(gpu, &part, what)?;
    for (u0, u1) in spans(units, per) {
        let xw = window(gpu, x, start(u0), end(u1 - 1), what)?;
        let p = StatsP {
            n_units: (u1 - u0) as u32,
            u0: u0 as u32,
            start0: start(u0) as u32,
            x0: xw.local(start(u0)),
            group_len: group_len as u32,
            slice_len: slice_len as u32,
            spg: spg as u32,
            _p: 0,
        };
        gpu.dispatch(&pipe, &[xw.binding, pw.bind()], &p, grid((u1 - u0) as u32, maxd))?;
    }
    let fin = gpu.pipeline(&variant(gpu.f16, x.dtype(), DType::F32, DType::F32), "finalize")?;
    let p = FinP { groups: groups as u32, spg: spg as u32, eps, _p: 0 };
    let sw = whole(gpu, &stats, what)?;
    gpu.dispatch(&fin, &[pw.binding, sw.binding], &p, grid((groups as u32).div_ceil(64), maxd))?;
    Ok(stats)
}

/// y = (x - mean_g) · rstd_g · gamma[c] + beta[c] (then SiLU), windowed like the unary ops.
#[allow(clippy::too_many_arguments)]
fn apply(
    gpu: &Gpu,
    x: &Tensor,
    stats: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    group_len: u64,
    inner: u64,
    silu: bool,
    what: &str,
) -> Result<Tensor> {
    let y = Tensor::empty(gpu, x.shape(), x.dtype())?;
    let pipe = gpu.pipeline(&variant(gpu.f16, x.dtype(), gamma.dtype(), y.dtype()), "apply")?;
    let per = units_per_window(gpu, x.dtype().size() as u64, what)? & !1;
    let n = x.numel() as u64;
    for (c0, c1) in spans(n, per.max(2)) {
        let xw = window(gpu, x, c0, c1, what)?;
        let yw = window(gpu, &y, c0, c1, what)?;
        let p = ApplyP {
            n: (c1 - c0) as u32,
            y0: yw.local(c0),
            x0: xw.local(c0),
            e0: c0 as u32,
            group_len: group_len as u32,
            inner: inner as u32,
            c: gamma.numel() as u32,
            silu: silu as u32,
        };
        let pairs = (p.y0 + p.n).div_ceil(2) - p.y0 / 2;
        let wg = grid(pairs.div_ceil(256), gpu.limits.max_compute_workgroups_per_dimension);
        let bindings = [
            xw.binding,
            whole(gpu, stats, what)?.binding,
            whole(gpu, gamma, what)?.binding,
            whole(gpu, beta, what)?.binding,
            yw.binding,
        ];
        gpu.dispatch(&pipe, &bindings, &p, wg)?;
    }
    Ok(y)
}

fn check_affine(gamma: &Tensor, beta: &Tensor, c: usize, what: &str) -> Result<()> {
    if gamma.shape() != [c] || beta.shape() != [c] || gamma.dtype() != beta.dtype() {
        return Err(Error::Input(format!(
            "{what}: gamma {:?} {:?} and beta {:?} {:?} must both be [{c}] of one dtype",
            gamma.shape(),
            gamma.dtype(),
            beta.shape(),
            beta.dtype()
        )));
    }
    Ok(())
}

/// Group norm over x [B, C, ...] with `groups` groups of C/groups channels, affine per channel,
/// then SiLU if `silu` (the ResNet block's norm + act). Output has x's dtype.
pub fn group_norm(
    gpu: &Gpu,
    x: &Tensor,
    groups: usize,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    silu: bool,
) -> Result<Tensor> {
    let what = "group_norm";
    let s = x.shape();
    if s.len() < 2 || groups == 0 || !s[1].is_multiple_of(groups) {
        return Err(Error::Input(format!("{what}: x {s:?} must be [B, C, ...] with C divisible by {groups} groups")));
    }
    check_affine(gamma, beta, s[1], what)?;
    check_u32(x, what)?;
    let inner = s[2..].iter().product::<usize>() as u64;
    let group_len = (s[1] / groups) as u64 * inner;
    if group_len == 0 {
        return Err(Error::Input(format!("{what}: empty groups in {s:?}")));
    }
    // Statistics read x, the apply pass reads it again and writes y.
    gpu.tally(|| Work {
        shape: OpShape {
            family: Family::GroupNorm,
            dims: vec![s[0], s[1], inner as usize, groups, silu as usize],
            x: x.dtype(),
            y: x.dtype(),
        },
        flops: 0.0,
        bytes: 3.0 * work::bytes_of(x.numel(), x.dtype()),
    });
    let stats = group_stats(gpu, x, (s[0] * groups) as u64, group_len, eps, what)?;
    apply(gpu, x, &stats, gamma, beta, group_len, inner, silu, what)
}

/// Layer norm over the last dimension of x [.., C], affine. Output has x's dtype.
pub fn layer_norm(gpu: &Gpu, x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    let what = "layer_norm";
    let c = *x.shape().last().ok_or_else(|| Error::Input(format!("{what}: scalar input")))?;
    if c == 0 {
        return Err(Error::Input(format!("{what}: empty last dimension in {:?}", x.shape())));
    }
    check_affine(gamma, beta, c, what)?;
    check_u32(x, what)?;
    let rows = (x.numel() / c) as u64;
    gpu.tally(|| Work {
        shape: OpShape { family: Family::LayerNorm, dims: vec![rows as usize, c], x: x.dtype(), y: x.dtype() },
        flops: 0.0,
        bytes: 3.0 * work::bytes_of(x.numel(), x.dtype()),
    });
    let stats = group_stats(gpu, x, rows, c as u64, eps, what)?;
    apply(gpu, x, &stats, gamma, beta, c as u64, 1, false, what)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SmP {
    rows: u32,
    len: u32,
    x0: u32,
    r0: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SmApplyP {
    n: u32,
    y0: u32,
    x0: u32,
    e0: u32,
    len: u32,
    _p: [u32; 3],
}

/// Softmax over the last dimension, in x's dtype (statistics in f32).
pub fn softmax(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let what = "softmax";
    let len = *x.shape().last().ok_or_else(|| Error::Input(format!("{what}: scalar input")))? as u64;
    if len == 0 {
        return Err(Error::Input(format!("{what}: empty last dimension in {:?}", x.shape())));
    }
    check_u32(x, what)?;
    let rows = x.numel() as u64 / len;
    let stats = Tensor::empty(gpu, &[rows as usize * 2], DType::F32)?;
    let maxd = gpu.limits.max_compute_workgroups_per_dimension;
    let es = x.dtype().size() as u64;
    let sw = whole(gpu, &stats, what)?;
    let pipe = gpu.pipeline(&variant(gpu.f16, x.dtype(), DType::F32, DType::F32), "sm_stats")?;
    for (r0, r1) in spans(rows, units_per_window(gpu, len * es, what)?) {
        let xw = window(gpu, x, r0 * len, r1 * len, what)?;
        let p = SmP { rows: (r1 - r0) as u32, len: len as u32, x0: xw.local(r0 * len), r0: r0 as u32 };
        gpu.dispatch(&pipe, &[xw.binding, sw.bind()], &p, grid((r1 - r0) as u32, maxd))?;
    }
    let y = Tensor::empty(gpu, x.shape(), x.dtype())?;
    let pipe = gpu.pipeline(&variant(gpu.f16, x.dtype(), DType::F32, y.dtype()), "sm_apply")?;
    let per = units_per_window(gpu, es, what)? & !1;
    for (c0, c1) in spans(rows * len, per.max(2)) {
        let xw = window(gpu, x, c0, c1, what)?;
        let yw = window(gpu, &y, c0, c1, what)?;
        let p = SmApplyP {
            n: (c1 - c0) as u32,
            y0: yw.local(c0),
            x0: xw.local(c0),
            e0: c0 as u32,
            len: len as u32,
            _p: [0; 3],
        };
        let pairs = (p.y0 + p.n).div_ceil(2) - p.y0 / 2;
        gpu.dispatch(&pipe, &[xw.binding, sw.bind(), yw.binding], &p, grid(pairs.div_ceil(256), maxd))?;
    }
    Ok(y)
}

/// Benchmark rows (`sdxl bench kernels`): the UNet's first-level group norm (F16 activations) and
/// a transformer layer norm. FLOPs counted per element: statistics 4 (shift, add, fma), apply 4
/// (shift, scale, fma), SiLU 4 (neg, exp, add, div) — these kernels are bandwidth bound, so the
/// ms column is the one to read.
#[cfg(not(target_arch = "wasm32"))]
pub fn bench_rows(b: &mut crate::ops::bench::Bench) -> Result<()> {
    let gpu = b.gpu;
    let pattern = |n: usize| -> Vec<f32> { (0..n).map(|i| ((i * 31 + 7) % 251) as f32 / 64.0 - 2.0).collect() };
    if b.wants("group_norm") {
        let x = Tensor::from_f32(gpu, &[1, 320, 128, 128], DType::F16, &pattern(320 * 128 * 128))?;
        let g = Tensor::from_f32(gpu, &[320], DType::F16, &vec![1.0; 320])?;
        let be = Tensor::from_f32(gpu, &[320], DType::F16, &vec![0.0; 320])?;
        let n = (320 * 128 * 128) as f64;
        for silu in [true, false] {
            let shape = if silu { "320 ch 128x128 +silu" } else { "320 ch 128x128" };
            let flops = n * if silu { 12.0 } else { 8.0 };
            b.time_op("group_norm", shape, flops, || {
                let _y = group_norm(gpu, &x, 32, &g, &be, 1e-5, silu)?;
                Ok(())
            })?;
        }
    }
    if b.wants("layer_norm") {
        let x = Tensor::from_f32(gpu, &[1, 4096, 640], DType::F16, &pattern(4096 * 640))?;
        let g = Tensor::from_f32(gpu, &[640], DType::F16, &vec![1.0; 640])?;
        let be = Tensor::from_f32(gpu, &[640], DType::F16, &vec![0.0; 640])?;
        b.time_op("layer_norm", "4096 tok x 640", 8.0 * 4096.0 * 640.0, || {
            let _y = layer_norm(gpu, &x, &g, &be, 1e-5)?;
            Ok(())
        })?;
    }
    Ok(())
}
